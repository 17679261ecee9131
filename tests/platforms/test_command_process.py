"""The command platform's process life beyond the happy path: its files, a process killed from
outside, a poll from another process, output that is not clean UTF-8, and a cancel whose SIGTERM
the work ignores."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.platforms.test_command import wait_done
from tower.errors import NonRetryableError
from tower.platforms import adapter_for
from tower.platforms.base import Handle, Status, Submission
from tower.platforms.command import CommandAdapter, file_key, output_files, param_env_name
from tower.states import RemoteState


@pytest.fixture(autouse=True)
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("TOWER_HOME", str(tmp_path / "home"))
    return (tmp_path / "home").resolve()


def submission(run, attempt=1, **spec):
    return Submission(run_id="run-1", service="extract", attempt=attempt, spec={"run": run, **spec})


def wait_for(path: Path, timeout=5.0) -> str:
    deadline = time.monotonic() + timeout
    while not (path.exists() and path.read_text().strip()):
        assert time.monotonic() < deadline, f"{path} was not written"
        time.sleep(0.01)
    return path.read_text().strip()


def wait_exists(path: Path, timeout=5.0) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert time.monotonic() < deadline, f"{path} was not created"
        time.sleep(0.01)


def a_zombie_or_gone(pid: int) -> str:
    stat = Path(f"/proc/{pid}/stat")
    if not stat.exists():
        return "gone"
    return "zombie" if stat.read_text().rsplit(")", 1)[1].split()[0] == "Z" else "alive"


def test_file_names_keep_the_key_readable_and_never_collide():
    assert file_key("Nightly-1/extract/1") == "Nightly-1_extract_1-43f38d97ba"   # names on disk: stable
    long = file_key("x" * 100 + "/s/1")
    assert long == "x" * 80 + "-c0f6ca46c9"
    assert file_key("a/b/1") != file_key("a:b/1")                  # same readable part, another digest


def test_a_param_name_becomes_an_upper_case_environment_name():
    assert param_env_name("Run-Date") == "TOWER_PARAM_RUN_DATE"
    assert param_env_name("region_2") == "TOWER_PARAM_REGION_2"


def test_an_attempt_leaves_its_documented_files_and_tower_logs_finds_them(home):
    adapter = CommandAdapter({})
    handle = adapter.submit(submission("echo out; echo err >&2"))
    assert wait_done(adapter, handle).state == RemoteState.SUCCEEDED
    key = file_key("run-1/extract/1")
    directory = home / "commands"
    assert sorted(p.name for p in directory.iterdir()) == [f"{key}.{s}" for s in ("err", "exit", "json", "lock", "log")]
    assert (directory / f"{key}.exit").read_text() == "0"
    assert json.loads((directory / f"{key}.json").read_text()) == handle.to_json()
    assert handle.remote_id == f"pid:{handle.data['pid']}"
    assert output_files(home, "run-1", "extract", 1) == [("stdout", Path(handle.data["log"])),
                                                        ("stderr", Path(handle.data["stderr"]))]
    assert Path(handle.data["log"]).read_text() == "out\n" and Path(handle.data["stderr"]).read_text() == "err\n"


def test_output_is_stdout_then_stderr_and_a_running_poll_shows_it_so_far(tmp_path):
    go = tmp_path / "go"
    adapter = CommandAdapter({})
    handle = adapter.submit(submission(f"echo started; while [ ! -e {go} ]; do sleep 0.01; done; echo oops >&2"))
    wait_for(Path(handle.data["log"]))
    assert (adapter.poll(handle).state, adapter.poll(handle).output) == (RemoteState.RUNNING, "started")
    go.touch()
    assert wait_done(adapter, handle).output == "started\noops"


def test_a_silent_failure_says_only_its_exit_code():
    adapter = CommandAdapter({})
    status = wait_done(adapter, adapter.submit(submission("exit 4")))
    assert (status.state, status.message, status.output, status.retryable) == (RemoteState.FAILED, "exit code 4", "", True)


def test_a_command_that_does_not_exist_is_named_in_the_failure():
    adapter = CommandAdapter({})
    status = wait_done(adapter, adapter.submit(submission(["no-such-command-xyz"])))
    assert status.message.startswith("exit code 127: tower-command: ")
    assert status.message.endswith("no-such-command-xyz: not found")


def test_output_that_is_not_utf8_is_shown_with_replacement_characters():
    adapter = CommandAdapter({})
    status = wait_done(adapter, adapter.submit(submission(r"printf 'caf\303 \377ok\n'")))
    assert (status.state, status.output) == (RemoteState.SUCCEEDED, "caf\ufffd \ufffdok")


def test_log_files_removed_under_a_run_read_as_no_output():
    adapter = CommandAdapter({})
    handle = adapter.submit(submission("echo gone; exit 2"))
    wait_done(adapter, handle)
    Path(handle.data["log"]).unlink()
    Path(handle.data["stderr"]).unlink()
    status = adapter.poll(handle)
    assert (status.state, status.message, status.output) == (RemoteState.FAILED, "exit code 2", "")


def _kill_from_outside(handle: Handle) -> None:
    os.killpg(handle.data["pgid"], signal.SIGKILL)


def test_a_process_killed_from_outside_fails_retryably_and_is_reaped(tmp_path):
    ready = tmp_path / "ready"
    adapter = CommandAdapter({})
    handle = adapter.submit(submission(f"echo working; echo last words >&2; touch {ready}; sleep 30"))
    wait_exists(ready)
    _kill_from_outside(handle)
    status = wait_done(adapter, handle)
    assert (status.state, status.retryable) == (RemoteState.FAILED, True)
    assert status.message == "the process ended without an exit code (killed?): last words"
    assert status.output == "working\nlast words"
    assert a_zombie_or_gone(handle.data["pid"]) == "gone"          # polled to its end: no zombie left
    adapter.cancel(handle)                                         # a cancel after that end changes nothing
    assert adapter.poll(handle).state == RemoteState.FAILED


POLL_ELSEWHERE = """
import json, sys
from tower.platforms.base import Handle
from tower.platforms.command import CommandAdapter
status = CommandAdapter({}).poll(Handle.from_json(json.loads(sys.argv[1])))
print(json.dumps([status.state, status.message]))
"""


def _poll_in_another_process(handle: Handle) -> list:
    done = subprocess.run([sys.executable, "-c", POLL_ELSEWHERE, json.dumps(handle.to_json())],
                          capture_output=True, text=True, timeout=30, check=True, env=os.environ)
    return json.loads(done.stdout)


def test_another_process_sees_the_work_running_then_killed_though_not_its_parent(tmp_path):
    ready = tmp_path / "ready"
    adapter = CommandAdapter({})
    handle = adapter.submit(submission(f"touch {ready}; sleep 30"))
    wait_exists(ready)
    assert _poll_in_another_process(handle) == [RemoteState.RUNNING, ""]
    _kill_from_outside(handle)
    deadline = time.monotonic() + 5
    while a_zombie_or_gone(handle.data["pid"]) == "alive":   # this process has not reaped it: a zombie
        assert time.monotonic() < deadline
        time.sleep(0.01)
    assert _poll_in_another_process(handle) == [RemoteState.FAILED, "the process ended without an exit code (killed?)"]
    assert adapter.poll(handle).state == RemoteState.FAILED


def test_a_cancel_kills_what_ignores_sigterm_within_the_kill_grace(tmp_path):
    pid_file = tmp_path / "worker.pid"
    adapter = adapter_for("command", {"kill_grace": 0.3})
    script = ("import os, signal, time, pathlib; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
              f"pathlib.Path({str(pid_file)!r}).write_text(str(os.getpid())); time.sleep(30)")
    handle = adapter.submit(submission([sys.executable, "-c", script]))
    worker = int(wait_for(pid_file))
    started = time.monotonic()
    adapter.cancel(handle)
    assert time.monotonic() - started < 3                    # 0.3 s of grace, then SIGKILL (the default is 5 s)
    status = adapter.poll(handle)
    assert (status.state, status.message) == (RemoteState.CANCELLED, "cancelled")
    deadline = time.monotonic() + 2
    while a_zombie_or_gone(worker) == "alive":                # the worker itself, not only its wrapper
        assert time.monotonic() < deadline, "the process that ignored SIGTERM outlived the cancel"
        time.sleep(0.01)


def test_a_cancelled_commands_output_is_kept(tmp_path):
    ready = tmp_path / "ready"
    adapter = CommandAdapter({"kill_grace": 1})
    handle = adapter.submit(submission(f"echo half way; touch {ready}; sleep 30"))
    wait_exists(ready)
    adapter.cancel(handle)
    assert adapter.poll(handle).output == "half way"


def test_the_kill_grace_defaults_to_five_seconds():
    assert adapter_for("command", {}).kill_grace == 5.0 and CommandAdapter().kill_grace == 5.0


@pytest.mark.parametrize(("spec", "message"), [
    ({"run": ""}, "service 'extract': command field 'run' must be a non-empty string or list of strings, got ''"),
    ({"run": "true", "env": ["A=1"]}, "service 'extract': command field 'env' must be a mapping"),
    ({"run": "true", "cwd": "/no/such/dir"}, "service 'extract': command cwd '/no/such/dir' is not a directory"),
])
def test_a_bad_spec_names_the_service_field_and_platform(spec, message):
    with pytest.raises(NonRetryableError) as raised:
        CommandAdapter({}).submit(Submission(run_id="r", service="extract", attempt=1, spec=spec))
    assert (str(raised.value), raised.value.platform) == (message, "command")


def test_a_handle_written_before_stderr_was_kept_apart_still_polls():
    adapter = CommandAdapter({})
    handle = adapter.submit(submission("echo out; echo err >&2; exit 5"))
    wait_done(adapter, handle)
    older = Handle(handle.remote_id, handle.url, {k: v for k, v in handle.data.items() if k != "stderr"})
    status = adapter.poll(older)                 # its stderr went to the log too: only the log is read
    assert (status.state, status.message, status.output) == (RemoteState.FAILED, "exit code 5: out", "out")


def test_a_cancel_from_an_adapter_that_did_not_start_the_work_does_not_wait_on_its_zombie(tmp_path):
    ready = tmp_path / "ready"
    starter = CommandAdapter({})
    handle = starter.submit(submission(f"touch {ready}; sleep 30"))
    wait_exists(ready)
    other = CommandAdapter({"kill_grace": 10})          # another worker of the host: not the wrapper's parent
    started = time.monotonic()
    other.cancel(handle)
    assert time.monotonic() - started < 5               # SIGTERM ended it; what is left is a zombie, not work
    assert a_zombie_or_gone(handle.data["pid"]) == "zombie"    # the starter has not reaped it yet
    assert other.poll(handle) == Status(RemoteState.CANCELLED, message="cancelled")
    assert starter.poll(handle).state == RemoteState.CANCELLED
    assert a_zombie_or_gone(handle.data["pid"]) == "gone"


def test_a_cancel_kills_what_ignores_sigterm_whatever_its_process_is_named(tmp_path):
    named = tmp_path / "etl (nightly)"                   # /proc/<pid>/stat shows it as "(etl (nightly))"
    named.symlink_to(shutil.which("sleep"))
    pid_file = tmp_path / "worker.pid"
    adapter = CommandAdapter({"kill_grace": 0.3})
    handle = adapter.submit(submission(f"trap '' TERM; echo $$ > {pid_file}; exec '{named}' 30"))
    worker = int(wait_for(pid_file))
    try:
        deadline = time.monotonic() + 5
        while Path(f"/proc/{worker}/comm").read_text().strip() != "etl (nightly)":
            assert time.monotonic() < deadline, "the worker was not started"
            time.sleep(0.01)
        adapter.cancel(handle)
        assert adapter.poll(handle).state == RemoteState.CANCELLED
        deadline = time.monotonic() + 2
        while a_zombie_or_gone(worker) == "alive":
            assert time.monotonic() < deadline, "the process that ignored SIGTERM outlived the cancel"
            time.sleep(0.01)
    finally:
        if a_zombie_or_gone(worker) == "alive":
            os.kill(worker, signal.SIGKILL)


def test_sigkill_comes_at_the_end_of_the_kill_grace_not_later(tmp_path):
    pid_file, cleaned = tmp_path / "worker.pid", tmp_path / "cleaned"
    adapter = CommandAdapter({"kill_grace": 0.2})
    # On SIGTERM it cleans up for 0.6 s: longer than the grace, so SIGKILL cuts the clean-up short.
    handle = adapter.submit(submission(f"trap 'sleep 0.6; touch {cleaned}; exit 0' TERM; echo $$ > {pid_file}; "
                                       "while true; do sleep 0.05; done"))
    worker = int(wait_for(pid_file))
    adapter.cancel(handle)
    deadline = time.monotonic() + 5
    while a_zombie_or_gone(worker) == "alive":
        assert time.monotonic() < deadline, "the worker outlived its SIGKILL"
        time.sleep(0.01)
    assert not cleaned.exists()
    assert adapter.poll(handle).state == RemoteState.CANCELLED


def test_a_finished_commands_exit_code_wins_over_a_pid_now_used_by_another_process():
    adapter = CommandAdapter({})
    handle = adapter.submit(submission("echo done"))
    wait_done(adapter, handle)
    # After a restart (a container's pids start over) its pid belongs to a living process: this one.
    reused = Handle(handle.remote_id, handle.url, {**handle.data, "pid": os.getpid()})
    assert CommandAdapter({}).poll(reused) == Status(RemoteState.SUCCEEDED, output="done")


def test_a_command_reads_no_input_not_the_hosts_stdin():
    typed, keyboard = os.pipe()                          # the host's stdin: a terminal, say, with a line typed
    os.write(keyboard, b"typed for the host\n")
    os.close(keyboard)
    saved = os.dup(0)
    os.dup2(typed, 0)
    try:
        adapter = CommandAdapter({})
        handle = adapter.submit(submission("cat; echo end"))
    finally:
        os.dup2(saved, 0)
        os.close(saved)
        os.close(typed)
    assert wait_done(adapter, handle).output == "end"


def test_a_command_does_not_hold_the_hosts_inheritable_descriptors(tmp_path):
    go = tmp_path / "go"
    reader, writer = os.pipe()                           # e.g. a pipe the host's own parent reads to its end
    os.set_inheritable(writer, True)
    adapter = CommandAdapter({})
    try:
        handle = adapter.submit(submission(f"while [ ! -e {go} ]; do sleep 0.01; done"))
        os.close(writer)
        os.set_blocking(reader, False)
        try:
            seen = os.read(reader, 1)
        except BlockingIOError:                          # a writer is still open: the command holds it
            seen = None
        assert seen == b""                               # its end is seen while the command still runs
    finally:
        go.touch()
        os.close(reader)
    assert wait_done(adapter, handle).state == RemoteState.SUCCEEDED
