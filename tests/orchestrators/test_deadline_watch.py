"""The deadline watch on the local engine: a report that makes a run late announces it at once."""

from __future__ import annotations

from datetime import timedelta

from tests.notifications import published
from tower.runs.plan import build_plan
from tower.timestamps import iso, utcnow

from .conftest import run_plan, sim_catalog


def _at_risk(engine, run_id: str) -> list[dict]:
    assert engine.runtime.notifier.drain(10)
    return [m for m in published(engine.runtime.home)
            if m["type"] == "tower.run.at_risk" and m["data"]["run_id"] == run_id]


def test_a_service_that_ends_late_puts_its_run_at_risk_by_its_report(engine, monkeypatch):
    # on time when it opens (0.75 s + 3 s of expected path against 6 s); `slow` takes 3.75 s, so at
    # its report 3 s are still expected and the run is predicted past its deadline: only that report
    # can say so before the deadline (no reconcile comes within a minute, and `then` ends it early)
    monkeypatch.setattr(engine.runtime.deadlines, "every", 0.0)  # every report is checked
    catalog = sim_catalog({"slow": {"duration": 3.75, "expected": 0.75},
                           "then": {"duration": 0.1, "expected": 3.0, "deps": ["slow"]}})
    plan = build_plan(catalog, "p", run_id=f"late-{utcnow():%H%M%S%f}")
    deadline = utcnow() + timedelta(seconds=6)
    plan["deadline"] = iso(deadline)
    result = run_plan(engine, plan)
    assert result["status"] == "succeeded"
    [warning] = _at_risk(engine, plan["run_id"])
    data = warning["data"]
    assert data["deadline"] == iso(deadline) and data["critical_path"] == ["then"]
    assert data["slack_s"] < 0
