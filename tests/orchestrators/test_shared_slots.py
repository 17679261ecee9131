"""Platform slots shared by overlapping runs, end to end on the local engine (real SDK, real
replay): the limit holds over every run (asserted from the recorded start and end times), on one
host and on two host processes over one TOWER_HOME; a cancelled run's slots go to the other run."""

import json
import time
import uuid
from datetime import datetime

import pytest

from tower import names
from tower.runner import store_run
from tower.runs.ledger import ledger_from_environment, run_services
from tower.runs.plan import build_plan
from tower.timestamps import utcnow

from .conftest import sim_catalog


def parse(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def peak(results: list[dict]) -> int:
    """The most services running at once over all runs, from their recorded start and end."""
    edges = sorted((parse(s[key]), step) for result in results for s in result["services"].values()
                   for key, step in (("started", 1), ("finished", -1)))
    running = most = 0
    for _, step in edges:  # at one instant an end sorts before a start (-1 < 1): touching is no overlap
        running += step
        most = max(most, running)
    return most


def catalog_of(platform: str, limit: int, width: int = 4, duration: float = 0.15):
    """Two layers of `width` services on `platform`, the second fed by the first."""
    services = {f"a{i}": {"platform": platform, "duration": duration} for i in range(width)}
    services.update({f"b{i}": {"platform": platform, "duration": duration, "deps": [f"a{i}"]} for i in range(width)})
    return sim_catalog(services, limits={platform: limit})


def start_runs(engine, catalog, count: int) -> list[dict]:
    plans = [build_plan(catalog, "p", run_id=f"slots-{uuid.uuid4().hex[:8]}") for _ in range(count)]
    for plan in plans:
        engine.start_new(names.PIPELINE_RUN, plan["run_id"], json.dumps(store_run(plan)))
    return plans


def results_of(engine, plans: list[dict], timeout: float = 60) -> list[dict]:
    results = []
    for plan in plans:
        status = engine.wait(plan["run_id"], timeout)
        assert status["runtimeStatus"] == "Completed", status
        results.append({**status["output"], "services": run_services(ledger_from_environment(), plan["run_id"],
                                                                     utcnow())})
    return results


def test_overlapping_runs_never_exceed_the_platforms_limit(engine):
    platform = f"lim{uuid.uuid4().hex[:6]}"
    results = results_of(engine, start_runs(engine, catalog_of(platform, limit=2), 3))
    assert [r["status"] for r in results] == ["succeeded"] * 3
    assert peak(results) == 2       # at the limit, never above, though each run alone would fill it
    pool = ledger_from_environment(engine.home).slots().read(platform)[1]
    assert pool["holders"] == {} and pool["waiting"] == {}


def test_a_cancelled_run_frees_its_slots_and_starts_the_other_runs_waiters(engine):
    platform = f"lim{uuid.uuid4().hex[:6]}"
    slow = sim_catalog({"long0": {"platform": platform, "duration": 20.0},
                        "long1": {"platform": platform, "duration": 20.0}}, limits={platform: 2})
    [first] = start_runs(engine, slow, 1)
    ledger = ledger_from_environment(engine.home)
    deadline = time.monotonic() + 20
    while len(ledger.slots().read(platform)[1]["holders"]) < 2:
        assert time.monotonic() < deadline, "the first run never took both slots"
        time.sleep(0.05)
    [second] = start_runs(engine, catalog_of(platform, limit=2, width=1, duration=0.05), 1)
    time.sleep(0.5)
    assert ledger.load(second["run_id"]).records["a0"]["status"] == "pending"   # waiting for a slot
    cancelled_at = time.time()
    engine.raise_event(first["run_id"], names.CANCEL_EVENT, None)
    cancelled, other = results_of(engine, [first, second])
    assert cancelled["status"] == "cancelled" and other["status"] == "succeeded"
    assert parse(other["services"]["a0"]["started"]) - cancelled_at < 5   # not after long0's 20 s


@pytest.mark.slow
def test_two_host_processes_over_one_home_share_the_limit(tmp_path, other_host, monkeypatch):
    from tower.local.driver import run_app
    from tower.local.engine import Engine

    home = tmp_path / "home"
    monkeypatch.setenv("TOWER_HOME", str(home))
    monkeypatch.delenv("TOWER_LEDGER_TABLE_URL", raising=False)
    monkeypatch.delenv("TOWER_HISTORY_TABLE_URL", raising=False)
    engine = Engine(run_app(), home, max_activities=1).start()   # the next work item goes to the other host
    try:
        other_host(home, activities_only=True, env={"TOWER_HOME": str(home)})
        platform = "shared"
        plans = start_runs(engine, catalog_of(platform, limit=3, width=6, duration=0.1), 3)
        results = results_of(engine, plans, timeout=120)
    finally:
        engine.stop()
    assert [r["status"] for r in results] == ["succeeded"] * 3
    assert peak(results) <= 3
    ledger = ledger_from_environment(home)
    dispatchers = {r["dispatcher"] for plan in plans for r in ledger.load(plan["run_id"]).records.values()}
    assert len(dispatchers) == 2, "every dispatch was made by one host process"
    assert ledger.slots().read(platform)[1]["holders"] == {}
