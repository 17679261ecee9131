"""The command line's rough edges a new user hit: options after the command, a closed pipe,
SIGTERM and a second Ctrl-C, the progress line at the end of a run."""

import io
import json
import os
import signal
import subprocess
import sys
import threading
import time

import pytest

from tests.cli.test_run_cmds import tower, tower_process, wait_for_running, work  # noqa: F401 (fixture)
from tower.cli.main import main
from tower.cli.render import Progress, progress_text


def test_global_options_are_accepted_after_the_command(work, capsys):  # noqa: F811
    other = work / "other.yaml"
    other.write_text("platforms: {p: {type: sim}}\nservices: {a: {platform: p}}\n")
    assert main(["validate", "--catalog", str(other)]) == 0
    assert capsys.readouterr().out.startswith("ok: 1 service")
    assert main(["--catalog", str(other), "validate"]) == 0
    capsys.readouterr()
    assert main(["validate"]) == 0  # without it, $TOWER_CATALOG as before
    assert "ok: 10 services" in capsys.readouterr().out
    assert main(["plan", "nightly", "--catalog", str(work / "catalog.yaml"), "--json"]) == 0


def test_a_closed_pipe_ends_quietly(work, capsys):  # noqa: F811
    assert main(["run", "nightly", "--simulate", "--time-scale", "0.01", "--json"]) == 0
    run_id = json.loads(capsys.readouterr().out)["run_id"]
    for argv in (["runs"], ["runs", "--json"], ["status", run_id], ["status", run_id, "--json"],
                 ["plan", "nightly", "--json"], ["graph", "nightly"]):
        process = tower_process(work, *argv)
        process.stdout.close()  # the reader (`head`) is gone before the first line is written
        _, err = process.communicate(timeout=30)
        assert "Traceback" not in err and "BrokenPipeError" not in err, (argv, err)
        assert process.returncode == 141, (argv, err)


@pytest.mark.slow
@pytest.mark.parametrize("signals, code", [((signal.SIGTERM,), 143), ((signal.SIGINT,), 130)])
def test_sigterm_cancels_a_run_as_ctrl_c_does(work, capsys, signals, code):  # noqa: F811
    runner = tower_process(work, "run", "long", "--json")
    try:
        run_id = wait_for_running(capsys, work)
        for sig in signals:
            runner.send_signal(sig)
        try:
            out, err = runner.communicate(timeout=30)
        except subprocess.TimeoutExpired:  # say where it hangs: faulthandler prints every thread on SIGABRT
            runner.send_signal(signal.SIGABRT)
            raise AssertionError(f"`tower run` still running 30 s after {signals}:\n{runner.communicate(timeout=10)[1][-8000:]}") from None
    finally:
        runner.kill()
    assert runner.returncode == code, err
    result = json.loads(out)
    assert result["run_id"] == run_id and result["status"] == "cancelled"
    assert result["services"]["slow"]["status"] == "cancelled"


STUBBORN = """\
platforms:
  sh: {type: command, kill_grace: 20}
services:
  stubborn: {platform: sh, run: "trap '' TERM; sleep 60"}
pipelines:
  p: {}
"""


@pytest.mark.slow
def test_a_second_ctrl_c_exits_at_once_with_one_line(tmp_path):
    """The first Ctrl-C starts a cancel that takes a while (the command ignores SIGTERM for its
    20 s grace); the second one, sent once the first is acknowledged, ends the command at once."""
    (tmp_path / "catalog.yaml").write_text(STUBBORN)
    runner = tower_process(tmp_path, "run", "p")
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(runner.stderr), daemon=True)
    reader.start()

    def wait_for_line(text):
        deadline = time.monotonic() + 30
        while not any(text in line for line in lines):
            assert time.monotonic() < deadline and runner.poll() is None, lines
            time.sleep(0.05)

    try:
        wait_for_line("1 running")
        runner.send_signal(signal.SIGINT)
        wait_for_line("cancelling")
        runner.send_signal(signal.SIGINT)
        runner.wait(timeout=10)  # not the 20 s the cancel would take
        reader.join(timeout=5)
    finally:
        runner.kill()
        for handle in (tmp_path / "home" / "commands").glob("*.json"):  # the command nobody waits for now
            try:
                os.killpg(json.loads(handle.read_text())["data"]["pgid"], signal.SIGKILL)
            except ProcessLookupError:
                pass
    assert runner.returncode == 130
    assert lines[-1].strip() == "interrupted", lines
    assert not any("Task was destroyed" in line or "Traceback" in line for line in lines)


def test_the_progress_line_never_says_0_of_0():
    final = {"run_id": "r", "status": "succeeded", "started": "2026-01-01T00:00:00Z"}
    stream = io.StringIO()
    with Progress("r", stream=stream, live=False) as progress:
        progress.update({"counts": {"running": 1, "pending": 1}, "started": "2026-01-01T00:00:00Z"})
        progress.update(final)
    assert stream.getvalue().count("\n") == 1 and "0/0" not in stream.getvalue()
    assert progress_text(final, None) == "succeeded"
    assert progress_text(None, None) == "starting…"


def test_runs_limit_0_is_refused(work, capsys):  # noqa: F811
    with pytest.raises(SystemExit) as exit:
        main(["runs", "--limit", "0"])
    assert exit.value.code == 2
    assert "--limit: expected a whole number from 1 to 1000, got '0'" in capsys.readouterr().err


def test_a_sigterm_between_the_start_and_the_follow_still_cancels_the_run(work, capsys, monkeypatch):  # noqa: F811
    from tower.cli import run_cmds
    from tower.cli.interrupts import Terminated

    def err(message):
        if message.startswith("started run"):
            raise Terminated()  # as if SIGTERM came the moment the run was started
        print(message, file=sys.stderr)

    monkeypatch.setattr(run_cmds, "err", err)
    code, out, err = tower(capsys, "run", "long", "--json")
    assert code == 143, err
    result = json.loads(out)
    assert result["status"] == "cancelled" and result["services"]["slow"]["status"] == "cancelled"
