"""`tower status` of a running run: the attempt and remote id of a service as soon as it is
submitted, and a run whose engine died says so instead of ticking an ETA."""

import json
import os
import signal
import time

import pytest

from tests.cli.test_run_cmds import tower, tower_process, wait_for_running, work  # noqa: F401 (fixture)


def wait_for(predicate, timeout=20.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError("timed out")


@pytest.mark.slow
def test_a_running_service_shows_its_attempt_and_remote_id_and_a_dead_engine_is_named(work, capsys):  # noqa: F811
    runner = tower_process(work, "run", "long", start_new_session=True)
    try:
        run_id = wait_for_running(capsys, work)

        def slow_submitted():
            _, out, _ = tower(capsys, "status", run_id, "--json")
            slow = json.loads(out)["services"].get("slow", {})  # the run may not show its services yet
            return slow if slow.get("remote_id") else None

        slow = wait_for(slow_submitted)
        assert slow["status"] == "running" and slow["attempts"] == 1 and slow["remote_id"].startswith("sim-")
        _, out, _ = tower(capsys, "status", run_id)
        assert "ETA" in out and "no engine attached" not in out
        os.killpg(runner.pid, signal.SIGKILL)
        runner.wait(timeout=10)
    finally:
        runner.kill()
    code, out, _ = tower(capsys, "status", run_id)
    assert code == 0
    headline = out.splitlines()[0]
    assert headline.endswith("running (no engine attached: `tower resume` continues it)") and "ETA" not in headline
