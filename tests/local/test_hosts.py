"""Several engines over one home cooperate as the Azure Storage backend's workers do: one holds the
orchestration lease (one owner per instance at a time), every one takes activity work items (one
owner per item), and a stopped or dead one's share is taken over. (Before, a second engine on the
same home processed the same messages: "Non-Deterministic workflow detected", duplicate results.)"""

from __future__ import annotations

import json
import os
import signal
import time
from collections import Counter

import pytest

from tests.local.apps import durable_app as app_module
from tests.local.hosts import host_process
from tower.local.engine import Engine

APP = "tests.local.apps.durable_app:make_app"


def stamps(path) -> Counter:
    """{(i, pid): count} of the 'stamp' activity's side effects."""
    if not path.exists():
        return Counter()
    return Counter(tuple(int(x) for x in line.split()) for line in path.read_text().splitlines())


def job(side, steps=3, fan=6, secs=0.05) -> str:
    return json.dumps({"file": str(side), "steps": steps, "fan": fan, "secs": secs})


def expected(steps=3, fan=6) -> int:
    return sum(range(steps)) + sum(range(100, 100 + fan))


def test_two_engines_in_one_process_split_the_work_and_each_item_runs_once(tmp_path):
    home, side = tmp_path / "home", tmp_path / "side.txt"
    app_module.reset()
    lines = []
    first = Engine(app_module.make_app(), home, max_activities=1).start()
    second = Engine(app_module.make_app(), home, log=lines.append).start()
    try:
        assert first.is_leader and not second.is_leader
        assert f"run by the engine of pid {os.getpid()}" in second.follower_line()
        assert any("this one runs activities" in line for line in lines)
        ids = [first.start_new("stamped", f"a-{n}", job(side)) for n in range(3)]
        ids += [second.start_new("stamped", f"b-{n}", job(side)) for n in range(3)]   # either may start
        for iid in ids:
            status = second.wait(iid, 60)
            assert (status["runtimeStatus"], status["output"]) == ("Completed", expected())
        assert first.stats["episodes"] > 0 and second.stats["episodes"] == 0   # one orchestration owner
        assert first.stats["activities"] > 0 and second.stats["activities"] > 0   # work items: both
        seen = Counter(i for (i, _pid), n in stamps(side).items() for _ in range(n))
        assert seen == Counter({i: 6 for i in [*range(3), *range(100, 106)]})   # each item once per run
        second.stop()                  # it wrote engine.json last: the one still running names itself
        _until(lambda: (home / "engine.json").exists(), timeout=5)
        first.stop()
        assert not (home / "engine.json").exists()
    finally:
        second.stop()
        first.stop()


def test_when_the_lease_holder_stops_the_other_engine_takes_over(tmp_path):
    home = tmp_path / "home"
    app_module.reset()
    first = Engine(app_module.make_app(), home).start()
    second = Engine(app_module.make_app(), home).start()
    try:
        first.start_new("waiter", "w", None)
        _until(lambda: (first.status("w") or {}).get("runtimeStatus") == "Running")
        first.stop()
        _until(lambda: second.is_leader, timeout=5)
        second.raise_event("w", "go", json.dumps("after"))
        assert second.wait("w", 10)["output"] == "after"
    finally:
        second.stop()
        first.stop()


def test_an_engine_that_lost_the_lease_commits_nothing(tmp_path):
    """The fence: an episode is committed only while its engine holds the lease."""
    home = tmp_path / "home"
    app_module.reset()
    lines = []
    engine = Engine(app_module.make_app(), home, log=lines.append).start()
    try:
        engine.start_new("waiter", "w", None)
        _until(lambda: (engine.status("w") or {}).get("runtimeStatus") == "Running")
        with engine.store.tx() as db:     # another host takes the lease (alive, far from expiry)
            db.execute("INSERT INTO hosts VALUES ('thief', 'elsewhere', 1, 'now', 'test', ?)", (time.time() + 600,))
            db.execute("UPDATE leases SET owner='thief', expires=?", (time.time() + 600,))
        engine.raise_event("w", "go", json.dumps("x"))
        _until(lambda: not engine.is_leader)
        time.sleep(0.3)
        assert engine.status("w")["runtimeStatus"] == "Running"           # the event waits for the owner
        assert any("another engine took the orchestration lease" in line for line in lines)
    finally:
        engine.stop()


@pytest.mark.slow
def test_tower_serve_and_a_second_engine_in_another_process_complete_runs_once(tmp_path):
    """Issue 12's case: a long-lived host and a second engine in another process on one home."""
    home, side = tmp_path / "home", tmp_path / "side.txt"
    app_module.reset()
    with host_process(home, APP, max_activities=2) as other:
        assert other.leader
        engine = Engine(app_module.make_app(), home).start()
        try:
            assert not engine.is_leader
            ids = [engine.start_new("stamped", f"r-{n}", job(side)) for n in range(4)]
            for iid in ids:
                status = engine.wait(iid, 60)
                assert (status["runtimeStatus"], status["output"]) == ("Completed", expected()), status
            seen = stamps(side)
            assert Counter(i for (i, _pid), n in seen.items() for _ in range(n)) == \
                Counter({i: 4 for i in [*range(3), *range(100, 106)]})
            assert {pid for _i, pid in seen} == {other.pid, os.getpid()}    # both processes ran activities
            assert "Non-Deterministic" not in other.stderr()
        finally:
            engine.stop()


@pytest.mark.slow
def test_a_killed_lease_holder_is_taken_over_at_once(tmp_path):
    home, side = tmp_path / "home", tmp_path / "side.txt"
    app_module.reset()
    engine = None
    with host_process(home, APP) as other:
        engine = Engine(app_module.make_app(), home).start()
        try:
            engine.start_new("stamped", "k", job(side, steps=6, fan=2, secs=0.1))
            _until(lambda: len(stamps(side)) >= 2, timeout=30)
            os.kill(other.pid, signal.SIGKILL)           # no goodbye: its lease and items are orphaned
            other.proc.wait(10)
            _until(lambda: engine.is_leader, timeout=5)   # a dead process is seen at the next heartbeat
            status = engine.wait("k", 60)
            assert (status["runtimeStatus"], status["output"]) == ("Completed", expected(6, 2))
        finally:
            engine.stop()


def test_an_activities_only_worker_process_runs_the_apps_activities(tmp_path, other_host):
    """The supported way to put per-process guards under test: a second worker process that never
    runs orchestrations and takes the work items the first host has no room for."""
    home, side = tmp_path / "home", tmp_path / "side.txt"
    app_module.reset()
    engine = Engine(app_module.make_app(), home, max_activities=1).start()
    try:
        worker = other_host(home, app=APP, activities_only=True)
        assert not worker.leader and engine.is_leader
        engine.start_new("stamped", "x", job(side, steps=1, fan=6, secs=0.2))
        assert engine.wait("x", 60)["output"] == expected(1, 6)
        assert worker.pid in {pid for _i, pid in stamps(side)}
    finally:
        engine.stop()


def _until(predicate, timeout=10.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.02)


@pytest.mark.slow
def test_tower_serve_and_tower_run_on_one_home_as_the_readme_lists_them(tmp_path):
    """Issue 12, as a user met it: `tower serve` running, then `tower run` (twice at once) in the
    same home. Each run succeeds once; neither process sees a non-deterministic replay."""
    import subprocess
    import sys
    import urllib.request

    from tests.local.test_host_serve import REPO, stop_serve
    from tests.ports import free_port

    catalog = REPO / "examples" / "refinery" / "catalog.yaml"
    env = {**os.environ, "TOWER_HOME": str(tmp_path / "home"), "TOWER_CATALOG": str(catalog)}
    env.pop("TOWER_HISTORY_TABLE_URL", None)
    env.pop("TOWER_LEDGER_TABLE_URL", None)
    port = free_port()
    serve = subprocess.Popen([sys.executable, "-m", "tower", "serve", "--port", str(port)], cwd=REPO, env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/runtime/webhooks/durabletask/instances",
                                       timeout=1).read()
                break
            except OSError:
                assert serve.poll() is None and time.monotonic() < deadline, "tower serve did not start"
                time.sleep(0.1)
        command = [sys.executable, "-m", "tower", "run", "nightly", "--simulate", "--time-scale", "0.002", "--json"]
        runs = [subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                 text=True) for _ in range(2)]
        outputs = [run.communicate(timeout=120) for run in runs]
    finally:
        code, serve_log = stop_serve(serve)
    for run, (out, err) in zip(runs, outputs, strict=True):
        assert run.returncode == 0, err
        result = json.loads(out)
        assert result["status"] == "succeeded", result
        assert all(s["attempts"] == 1 for s in result["services"].values()), result["services"]
        assert "Non-Deterministic" not in err
    assert code == 0 and "Non-Deterministic" not in serve_log and "duplicate" not in serve_log, serve_log
