"""A service run that an operator terminates never reports to the ledger: `pipeline_run`'s reconcile
finds it ended and records the service failed, with the reason, so the run ends instead of hanging."""

from __future__ import annotations

import json
import logging
import time
import uuid

import pytest

from tower import logcontext, names, telemetry
from tower.runner import store_run
from tower.runs.plan import build_plan, service_instance_id
from tower.timestamps import parse_iso, utcnow

from .conftest import result_of, sim_catalog


@pytest.mark.parametrize(("reason", "error"), [
    ("stopped by an operator", "its service run ended terminated: stopped by an operator"),
    (None, "its service run ended terminated: no reason given"),
], ids=["with-a-reason", "without"])
def test_a_terminated_service_run_is_recorded_failed_by_the_reconcile_with_its_reason(engine, reason, error, caplog,
                                                                                     recorded):
    caplog.set_level(logging.INFO, logger="tower.activities")
    plan = build_plan(sim_catalog({"long": {"duration": 30}, "after": {"deps": ["long"]}}), "p",
                      run_id=f"terminated-{uuid.uuid4().hex[:6]}")
    plan["reconcile_after"] = 0.3  # reconcile soon, not after a minute
    engine.start_new(names.PIPELINE_RUN, plan["run_id"], json.dumps(store_run(plan)))
    instance = service_instance_id(plan["run_id"], "long")
    deadline = time.monotonic() + 10
    while (engine.status(instance) or {}).get("runtimeStatus") != "Running":
        assert time.monotonic() < deadline, "the service run did not start"
        time.sleep(0.02)
    engine.terminate(instance, reason)
    terminated = utcnow()
    result = result_of(engine, plan["run_id"], 15)
    assert result["status"] == "failed"
    long = result["services"]["long"]
    assert (long["status"], long["error"]) == ("failed", error)
    assert terminated <= parse_iso(long["finished"]) <= utcnow()  # recorded when the reconcile found it ended
    assert result["services"]["after"]["status"] == "upstream_failed"
    failed = [e["Name"] for e in engine.history(plan["run_id"]) if e["EventType"] == 6]  # TaskFailed
    assert failed == []  # the reconcile that found it recorded it, and acted on that, at the first try
    [told] = recorded.events(telemetry.SERVICE_FINISHED, plan["run_id"])  # and told telemetry, of this run
    assert (told["service"], told["status"], told["error_class"]) == ("long", "failed", "service_run")
    # the operator reads why in the reconcile's lines, which name the service it is about
    said = f"run {plan['run_id']}: service run {instance} ended Terminated without its end reaching the ledger; recording it"
    found = [r for r in caplog.records if r.getMessage() == said]
    assert [(r.levelname, getattr(r, logcontext.RUN_ID, None), getattr(r, logcontext.SERVICE, None))
            for r in found] == [("WARNING", plan["run_id"], "long")], caplog.text
