"""service_run polls by the service's expected end (tower.polling) when the platform gives no hint:
one poll opens the window in which the end is likely and watches the work across it."""

from __future__ import annotations

from datetime import datetime

from tests.orchestrators.conftest import run_plan, scheduled, sim_catalog
from tower import names
from tower.plan import build_plan, service_instance_id
from tower.platforms import sim
from tower.platforms.base import Submission
from tower.timestamps import parse_iso

SCALE = 0.01    # 300 s of work in 3 s


def _plan(recent: dict | None, jitter: float = 0.004) -> dict:
    catalog = sim_catalog({"load": {"duration": 300.0}, "report": {"deps": ["load"], "duration": 0.0}})
    plan = build_plan(catalog, "p", run_id=f"expect-{datetime.now():%H%M%S%f}", simulate=True, time_scale=SCALE,
                      recent=recent)
    for service in plan["services"].values():
        service["spec"].update(blind=True, jitter=jitter)   # a real platform: no hint of the end
    return plan


def _remote_end(plan: dict, result: dict, name: str) -> float:
    """When the simulated work really ended (its start plus its jittered duration)."""
    key = Submission(plan["run_id"], name, 1, {}, {}).idempotency_key
    duration = sim.jittered(plan["services"][name]["spec"]["duration"] * SCALE, 0.004, key)
    return parse_iso(result["services"][name]["started"]).timestamp() + duration


def test_with_history_a_few_polls_see_the_end_at_once(engine):
    plan = _plan({"load": [300.0, 301.0, 299.0, 300.5, 299.5]})
    result = run_plan(engine, plan)
    assert result["status"] == "succeeded"
    load = service_instance_id(plan["run_id"], "load")
    polls = scheduled(engine, load).count(names.POLL_SERVICE)
    # the first look; halfway to the window at 146, 219 and 256 s; the one that opens it (292 s) and watches
    assert polls <= 5
    knew = parse_iso(result["services"]["load"]["finished"]).timestamp()
    assert knew - _remote_end(plan, result, "load") < 0.05        # 5 s in Azure terms
    assert parse_iso(result["services"]["report"]["started"]).timestamp() - knew < 0.05


def test_without_history_or_estimate_it_keeps_the_growing_interval(engine):
    plan = _plan(None)
    plan["services"]["load"]["expect"] = None
    result = run_plan(engine, plan)
    assert result["status"] == "succeeded"
    polls = scheduled(engine, service_instance_id(plan["run_id"], "load")).count(names.POLL_SERVICE)
    assert polls >= 8                         # 0.01 s, x1.5, up to 0.6 s, over 3 s
