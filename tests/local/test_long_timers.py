"""Timers further away than the backend's maximum short timer become the SDK's LongTimerTask (a
chain of shorter timers), as the real host configures it; the engine takes the thresholds as
parameters so that a test can make "long" mean a second."""

from __future__ import annotations

import json
import time
from datetime import datetime, timedelta

import azure.durable_functions as df
import pytest
from azure.durable_functions.models.Task import LongTimerTask, TimerTask

from tower import names
from tower.local import history as h
from tower.local.driver import run_app
from tower.local.engine import Engine
from tower.runs.plan import build_plan, service_instance_id

SHORT = {"maximum_short_timer": timedelta(seconds=1), "long_timer_interval": timedelta(milliseconds=300)}


def _timer_app():
    app = df.DFApp()
    bp = df.Blueprint()

    @bp.orchestration_trigger(context_name="context")
    def long_wait(context: df.DurableOrchestrationContext):
        seconds = context.get_input()
        timer = context.create_timer(context.current_utc_datetime + timedelta(seconds=seconds))
        kind = "long" if isinstance(timer, LongTimerTask) else "short" if isinstance(timer, TimerTask) else "?"
        stop = context.wait_for_external_event("stop")
        winner = yield context.task_any([timer, stop])
        if winner is stop:
            timer.cancel()
        return {"kind": kind, "won": "stop" if winner is stop else "timer"}

    app.register_functions(bp)
    return app


def test_a_timer_beyond_the_maximum_short_timer_is_a_chain_of_short_ones(tmp_path, monkeypatch):
    monkeypatch.delenv("TOWER_LOCAL_BACKEND", raising=False)
    with Engine(_timer_app(), tmp_path / "home", **SHORT) as engine:
        started = time.monotonic()
        engine.start_new("long_wait", "long", json.dumps(1.5))
        engine.start_new("long_wait", "short", json.dumps(0.2))
        assert engine.wait("short", 10)["output"] == {"kind": "short", "won": "timer"}
        assert engine.wait("long", 10)["output"] == {"kind": "long", "won": "timer"}
        assert time.monotonic() - started >= 1.5
        created = [e for e in engine.history("long") if e["EventType"] == h.TIMER_CREATED]
        assert len(created) == 3       # 0.3 s, 0.3 s, then the last 0.9 s (under the 1 s maximum) at once
        engine.start_new("long_wait", "stopped", json.dumps(60))
        engine.raise_event("stopped", "stop", None)
        assert engine.wait("stopped", 5)["output"] == {"kind": "long", "won": "stop"}


def test_the_default_thresholds_are_azure_storages_and_the_scheduler_sends_none(tmp_path, monkeypatch):
    monkeypatch.delenv("TOWER_LOCAL_BACKEND", raising=False)
    with Engine(_timer_app(), tmp_path / "a") as engine:
        engine.start_new("long_wait", "week", json.dumps(7 * 86400))      # over 6 days: long
        engine.start_new("long_wait", "days", json.dumps(5 * 86400))      # under: one timer
        for iid in ("week", "days"):
            engine.raise_event(iid, "stop", None)
        assert engine.wait("week", 5)["output"]["kind"] == "long"
        assert engine.wait("days", 5)["output"]["kind"] == "short"
    monkeypatch.setenv("TOWER_LOCAL_BACKEND", "durableTaskScheduler")
    with Engine(_timer_app(), tmp_path / "b", **SHORT) as engine:
        engine.start_new("long_wait", "dts", json.dumps(60))
        engine.raise_event("dts", "stop", None)
        assert engine.wait("dts", 5)["output"]["kind"] == "short"


def test_a_cancel_beats_a_long_backoff_wait_at_once(tmp_path, monkeypatch):
    """pipeline's service run races its backoff wait against the cancel event; the wait is a
    LongTimerTask once the backoff is over the maximum short timer, and must lose all the same."""
    from tests.orchestrators.conftest import sim_catalog
    from tower.runner import store_run
    from tower.runs.ledger import ledger_from_environment, run_services
    from tower.timestamps import utcnow

    home = tmp_path / "home"
    monkeypatch.setenv("TOWER_HOME", str(home))
    monkeypatch.delenv("TOWER_HISTORY_TABLE_URL", raising=False)
    monkeypatch.delenv("TOWER_LEDGER_TABLE_URL", raising=False)
    monkeypatch.delenv("TOWER_LOCAL_BACKEND", raising=False)
    catalog = sim_catalog({"flaky": {"duration": 0.01, "fail_attempts": 5, "retries": 3, "backoff": 30.0,
                                     "max_backoff": 60.0}})
    plan = build_plan(catalog, "p", run_id=f"long-{datetime.now():%H%M%S%f}")
    with Engine(run_app(), home, **SHORT) as engine:
        engine.start_new(names.PIPELINE_RUN, plan["run_id"], json.dumps(store_run(plan, engine.runtime.ledger)))
        service = service_instance_id(plan["run_id"], "flaky")
        ledger = ledger_from_environment(home)
        deadline = time.monotonic() + 20
        while (_custom(engine, service) or {}).get("a") != 1:     # the first attempt failed: backoff
            assert time.monotonic() < deadline, "the service never reached its backoff wait"
            time.sleep(0.05)
        fired = len(_fired(engine, service))
        while len(_fired(engine, service)) < fired + 2:   # the 30 s wait is a chain of 0.3 s timers
            assert time.monotonic() < deadline, "the backoff wait is not a chain of short timers"
            time.sleep(0.05)
        assert ledger.load(plan["run_id"]).records["flaky"]["status"] == "running"
        cancelled_at = time.monotonic()
        engine.raise_event(plan["run_id"], names.CANCEL_EVENT, None)
        status = engine.wait(plan["run_id"], 15)
        assert time.monotonic() - cancelled_at < 10     # not the 30 s backoff
        assert status["output"]["status"] == "cancelled"
        assert run_services(ledger, plan["run_id"], utcnow())["flaky"]["status"] == "cancelled"


def _fired(engine, instance_id):
    return [e for e in engine.history(instance_id) if e["EventType"] == h.TIMER_FIRED]


def _custom(engine, instance_id):
    status = engine.status(instance_id, show_input=False)
    return status and status["customStatus"]


pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")
