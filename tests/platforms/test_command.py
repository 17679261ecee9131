import os
import sys
import time
from pathlib import Path

import pytest

from tower.errors import NonRetryableError
from tower.platforms import adapter_for
from tower.platforms.base import Handle, Submission
from tower.platforms.command import CommandAdapter
from tower.states import RemoteState


@pytest.fixture(autouse=True)
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("TOWER_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


def submission(run, attempt=1, params=None, **spec):
    return Submission(run_id="run-1", service="extract", attempt=attempt, spec={"run": run, **spec},
                      params=params or {})


def wait_done(adapter, handle, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = adapter.poll(handle)
        if status.done:
            return status
        time.sleep(0.02)
    raise AssertionError("command did not finish in time")


def pid_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    return stat.exists() and stat.read_text().rsplit(")", 1)[1].split()[0] != "Z"


def test_success_with_output_tail(home):
    adapter = CommandAdapter({})
    handle = adapter.submit(submission("echo hello; echo world"))
    status = wait_done(adapter, handle)
    assert status.state == RemoteState.SUCCEEDED
    assert status.output.endswith("hello\nworld")
    assert Path(handle.data["log"]).parent == home.resolve() / "commands"


def test_failure_reports_exit_code_and_output_tail():
    adapter = CommandAdapter({})
    status = wait_done(adapter, adapter.submit(submission("echo 'bad input row 7' >&2; exit 3")))
    assert (status.state, status.message, status.retryable) == (RemoteState.FAILED, "exit code 3: bad input row 7", True)
    assert "bad input row 7" in status.output


def test_a_failure_quotes_the_last_lines_of_stderr_with_secrets_masked(monkeypatch):
    monkeypatch.setenv("WAREHOUSE_PASSWORD", "s3cr3t-pw")
    adapter = CommandAdapter({})
    script = ("echo progress 1; echo progress 2; for n in 1 2 3 4; do echo line $n >&2; done; "
              "echo 'login as tower/s3cr3t-pw refused' >&2; exit 3")
    status = wait_done(adapter, adapter.submit(submission(script)))
    assert status.message == "exit code 3: line 3 | line 4 | login as tower/*** refused"
    assert "progress 2" in status.output and "login as tower" in status.output


def test_a_failure_without_stderr_quotes_stdout():
    adapter = CommandAdapter({})
    status = wait_done(adapter, adapter.submit(submission("echo 'no such table: orders'; exit 1")))
    assert status.message == "exit code 1: no such table: orders"


def test_argv_list_runs_without_a_shell():
    adapter = CommandAdapter({})
    status = wait_done(adapter, adapter.submit(submission([sys.executable, "-c", "print('a b; c')"])))
    assert (status.state, status.output) == (RemoteState.SUCCEEDED, "a b; c")


def test_params_arrive_as_environment_never_through_the_shell(tmp_path):
    marker = tmp_path / "pwned"
    hostile = f"x; touch {marker}"
    adapter = CommandAdapter({})
    handle = adapter.submit(
        submission('printf "%s|%s|%s|%s" "$TOWER_PARAM_RUN_DATE" "$TOWER_RUN_ID" "$TOWER_SERVICE" "$TOWER_ATTEMPT"',
                   attempt=2, params={"run-date": hostile})
    )
    status = wait_done(adapter, handle)
    assert status.output == f"{hostile}|run-1|extract|2"
    assert not marker.exists()


def test_cwd_and_env(tmp_path):
    adapter = CommandAdapter({})
    status = wait_done(adapter, adapter.submit(submission('echo "$(pwd) $GREETING"', cwd=str(tmp_path),
                                                          env={"GREETING": "hi"})))
    assert status.output == f"{tmp_path} hi"


def test_same_key_reattaches_to_the_same_process(tmp_path):
    adapter = CommandAdapter({})
    first = adapter.submit(submission("sleep 0.3; echo once >> count.txt", cwd=str(tmp_path)))
    again = CommandAdapter({}).submit(submission("sleep 0.3; echo once >> count.txt", cwd=str(tmp_path)))
    assert again.data["pid"] == first.data["pid"]
    assert wait_done(adapter, again).state == RemoteState.SUCCEEDED
    assert (tmp_path / "count.txt").read_text() == "once\n"
    other_attempt = adapter.submit(submission("true", attempt=2))
    assert other_attempt.data["pid"] != first.data["pid"]


def test_process_outlives_the_submitting_adapter_and_is_polled_from_json():
    handle = CommandAdapter({}).submit(submission("sleep 0.2; echo late"))
    restored = Handle.from_json(handle.to_json())
    adapter = CommandAdapter({})
    assert adapter.poll(restored).state == RemoteState.RUNNING
    status = wait_done(adapter, restored)
    assert (status.state, status.output) == (RemoteState.SUCCEEDED, "late")


def test_cancel_kills_the_whole_process_group(tmp_path):
    pid_file = tmp_path / "grandchild.pid"
    adapter = CommandAdapter({"kill_grace": 2})
    handle = adapter.submit(submission(f"sleep 30 & echo $! > {pid_file}; wait"))
    deadline = time.monotonic() + 5
    while not (pid_file.exists() and pid_file.read_text().strip()) and time.monotonic() < deadline:
        time.sleep(0.01)
    grandchild = int(pid_file.read_text())
    started = time.monotonic()
    adapter.cancel(handle)
    assert time.monotonic() - started < 2
    assert adapter.poll(handle).state == RemoteState.CANCELLED
    time.sleep(0.05)
    assert not pid_alive(grandchild)
    assert not pid_alive(handle.data["pid"])


def test_cancel_escalates_to_sigkill_when_term_is_ignored(tmp_path):
    ready = tmp_path / "ready"
    adapter = CommandAdapter({"kill_grace": 0.3})
    script = f"import signal, time, pathlib; signal.signal(signal.SIGTERM, signal.SIG_IGN); pathlib.Path({str(ready)!r}).touch(); time.sleep(30)"
    handle = adapter.submit(submission([sys.executable, "-c", script]))
    deadline = time.monotonic() + 5
    while not ready.exists() and time.monotonic() < deadline:
        time.sleep(0.01)
    adapter.cancel(handle)
    assert adapter.poll(handle).state == RemoteState.CANCELLED
    time.sleep(0.05)
    assert not pid_alive(handle.data["pid"])


@pytest.mark.parametrize(("run", "state"), [("true", RemoteState.SUCCEEDED), ("exit 3", RemoteState.FAILED)])
def test_cancel_after_the_end_keeps_the_outcome(run, state):
    adapter = CommandAdapter({})
    handle = adapter.submit(submission(run))
    assert wait_done(adapter, handle).state == state
    adapter.cancel(handle)
    assert adapter.poll(handle).state == state  # the end came first: a late cancel rewrites nothing
    assert adapter.poll(CommandAdapter({}).submit(submission(run))).state == state  # nor a re-attach's view


def test_a_clean_exit_that_beats_the_cancel_signal_is_a_success(tmp_path):
    go = tmp_path / "go"
    adapter = CommandAdapter({})
    handle = adapter.submit(submission(f"while [ ! -e {go} ]; do sleep 0.01; done"))
    # A cancel in another worker found it running and wrote its marker; the command then ended on its
    # own with exit 0 before the signal arrived.
    Path(handle.data["cancelled"]).touch()
    go.touch()
    assert wait_done(adapter, handle).state == RemoteState.SUCCEEDED


@pytest.mark.parametrize("spec", [{"run": ""}, {"run": []}, {"run": 5}, {"run": "true", "cwd": "/no/such/dir"}])
def test_bad_spec_is_a_clear_non_retryable_error(spec):
    with pytest.raises(NonRetryableError, match="service 'extract'"):
        CommandAdapter({}).submit(Submission(run_id="r", service="extract", attempt=1, spec=spec))


def test_registered_as_the_command_platform():
    assert isinstance(adapter_for("command", {}), CommandAdapter)
