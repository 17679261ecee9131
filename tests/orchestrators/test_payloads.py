"""No Durable message grows with the run: the plan lives in the run ledger, `pipeline_run` gets a
reference and returns a summary, each service run gets its own service's input.

The Durable Task Scheduler refuses any message over 1 MiB (no offload for Python); Azure Storage
moves those over 45 KB to blobs and reads them back at every replay. Sizes are measured from what
the local engine stored: every orchestration input and output, activity input and result, and
event payload of the run.
"""

import json
import sqlite3
from pathlib import Path

import pytest

from benchmarks.dags import zero_duration_dag
from tower import names
from tower.catalog.model import Catalog, Pipeline, Platform, Service
from tower.local import history as h
from tower.runner import store_run
from tower.runs.plan import build_plan

from .conftest import result_of, scheduled

MAX_PAYLOAD = 64 * 1024


def durable_payloads(home: Path, plan: dict) -> dict[str, int]:
    """The largest payload, in bytes, of each kind the engine stored for this run and its service
    runs: "<function> input" / "<function> output" (orchestrations and activities) and
    "event <name>"."""
    ours = {plan["run_id"], *(svc["iid"] for svc in plan["services"].values())}
    db = sqlite3.connect(f"file:{home / 'state.db'}?mode=ro", uri=True)
    try:
        functions = {iid: name for iid, name in db.execute("SELECT id, name FROM instances") if iid in ours}
        events = [(iid, text) for iid, text in db.execute("SELECT instance_id, event FROM history ORDER BY instance_id, seq")
                  if iid in ours]
    finally:
        db.close()
    sizes: dict[str, int] = {}
    scheduled: dict[tuple[str, int], str] = {}

    def note(kind: str, payload) -> None:
        if payload is not None:
            sizes[kind] = max(sizes.get(kind, 0), len(str(payload).encode()))

    for instance_id, text in events:
        event = json.loads(text)
        kind = event["EventType"]
        if kind == h.EXECUTION_STARTED:
            note(f"{functions[instance_id]} input", event.get("Input"))
        elif kind == h.EXECUTION_COMPLETED:
            note(f"{functions[instance_id]} output", event.get("Result"))
        elif kind == h.TASK_SCHEDULED:
            scheduled[(instance_id, event["EventId"])] = event["Name"]
            note(f"{event['Name']} input", event.get("Input"))
        elif kind == h.TASK_COMPLETED:
            note(f"{scheduled[(instance_id, event['TaskScheduledId'])]} output", event.get("Result"))
        elif kind == h.EVENT_RAISED:
            note(f"event {event['Name']}", event.get("Input"))
    return sizes


def generated_plan(n: int, run_id: str) -> dict:
    """A simulated plan of `n` zero-duration services on a seeded random DAG (benchmarks/dags.py)."""
    deps, _ = zero_duration_dag(n, 7)
    services = {name: Service(name, "sim", depends_on=tuple(deps[name]), expected_duration=0.0,
                              spec={"duration": 0.0}) for name in deps}
    catalog = Catalog("<generated>", {"sim": Platform("sim", "sim")}, services, {"p": Pipeline("p")})
    return build_plan(catalog, "p", run_id=run_id, simulate=True, time_scale=0.001)


@pytest.mark.slow
def test_a_1000_service_run_sends_no_payload_that_grows_with_it(engine):
    plan = generated_plan(1000, "payloads-1000")
    assert len(json.dumps(plan)) > 200_000  # what pipeline_run, open_run and the result each carried before
    engine.start_new(names.PIPELINE_RUN, plan["run_id"], json.dumps(store_run(plan)))
    result = result_of(engine, plan["run_id"], timeout=120)
    assert result["status"] == "succeeded" and result["counts"]["succeeded"] == 1000
    assert len(result["services"]) == 1000  # the ledger has every service's record

    sizes = durable_payloads(Path(engine.home), plan)
    assert sizes["pipeline_run input"] < 200 and sizes[f"{names.OPEN_RUN} input"] < 200
    assert sizes["pipeline_run output"] < 2_000 and sizes[f"{names.RUN_RESULT} output"] < 2_000
    assert sizes["service_run input"] < 2_000  # one service's job (with its first attempt's handle)
    too_big = {kind: size for kind, size in sizes.items() if size > MAX_PAYLOAD}
    assert not too_big, f"payloads over 64 KB: {too_big}"


def test_a_run_whose_plan_is_not_in_the_ledger_fails_at_once_with_a_clear_error(engine):
    engine.start_new(names.PIPELINE_RUN, "never-stored", json.dumps({"run_id": "never-stored", "pipeline": "p"}))
    status = engine.wait("never-stored", 5)  # not after ten tries of open_run: no retry brings a plan
    assert status["runtimeStatus"] == "Failed"
    assert "run 'never-stored' has no plan in the run ledger" in str(status["output"])
    assert scheduled(engine, "never-stored") == [names.OPEN_RUN]


@pytest.mark.slow
def test_a_5000_service_run_succeeds_on_the_durable_task_scheduler_profile(tmp_path, monkeypatch):
    """Its 1 MiB message limit refused the 1.1 MB plan such a run used to start with."""
    from tower.local.driver import run_app
    from tower.local.engine import DURABLE_TASK_SCHEDULER, Engine

    monkeypatch.setenv("TOWER_HOME", str(tmp_path))  # the activities' ledger is this run's
    plan = generated_plan(5000, "payloads-5000")
    assert len(json.dumps(plan)) > 1024 * 1024
    with Engine(run_app(), tmp_path, activity_workers=16, backend=DURABLE_TASK_SCHEDULER) as engine:
        engine.start_new(names.PIPELINE_RUN, plan["run_id"], json.dumps(store_run(plan)))
        result = result_of(engine, plan["run_id"], timeout=300)
        stats = dict(engine.stats)
    assert result["status"] == "succeeded" and result["counts"]["succeeded"] == 5000
    assert stats["max_payload_bytes"] <= MAX_PAYLOAD and stats["payloads_over_45kb"] == 0, stats
