"""service_run polls by the service's expected end (tower.polling) when the platform gives no hint:
one poll opens the window in which the end is likely and watches the work across it."""

from __future__ import annotations

import json
import time
from datetime import datetime

from tests.orchestrators.conftest import result_of, run_plan, scheduled, sim_adapter, sim_catalog
from tower import names
from tower.platforms import sim
from tower.platforms.base import Submission
from tower.runner import store_run
from tower.runs.plan import build_plan, service_instance_id
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


class _PollsFail:
    """Starts work fine; every poll fails with a retryable error (an outage of the platform's API)."""

    def submit(self, submission):
        from tower.platforms.base import Handle
        return Handle(remote_id=f"down-{submission.attempt}")

    def poll(self, handle):
        from tower.errors import RetryableError
        raise RetryableError("status endpoint answered 503 Service Unavailable", platform="down")

    def cancel(self, handle):
        pass


def test_a_failing_poll_in_the_window_is_tried_again_on_the_growing_interval_not_at_once(engine):
    with engine.runtime.platforms.overridden("down", _PollsFail()):
        catalog = sim_catalog({"load": {"platform": "api", "type": "down"}})
        plan = build_plan(catalog, "p", run_id=f"down-{datetime.now():%H%M%S%f}")
        # the window 0.5-1.5 s, its looks 0.25 s apart, each by a poll that starts at once
        plan["services"]["load"]["expect"] = {"median": 1.0, "spread": 0.2}
        plan["platforms"]["api"]["poll"].update(first=0.2, factor=1.5, scale=0.01)
        result = run_plan(engine, plan)
    load = result["services"]["load"]
    assert load["status"] == "failed" and "503" in load["error"]
    # five failed polls in a row: after the first, 0.2 + 0.3 + 0.45 + 0.675 s of backoff (polls
    # in the window one after the other would have failed the service at about 0.5 s)
    took = (parse_iso(load["finished"]) - parse_iso(load["started"])).total_seconds()
    assert took >= 1.6


def test_a_cancel_is_seen_by_a_poll_that_watches_the_work_long_before_its_watch_ends(engine):
    """service_run awaits the activity that lost the race to a cancel, so a watching poll must notice
    the cancel itself (it reads the run's cancel flag every few seconds) rather than watch its minute out."""
    catalog = sim_catalog({"load": {"duration": 300.0}})
    plan = build_plan(catalog, "p", run_id=f"watch-cancel-{datetime.now():%H%M%S%f}")
    plan["services"]["load"]["spec"].update(blind=True)
    plan["services"]["load"]["expect"] = {"median": 40.0, "spread": 16.0}   # window 0-80 s: watch at once
    plan["platforms"]["sim"]["poll"].update(first=1.0, factor=1.5, max=60.0, scale=1.0)
    load = service_instance_id(plan["run_id"], "load")
    engine.start_new(names.PIPELINE_RUN, plan["run_id"], json.dumps(store_run(plan)))
    watching = time.monotonic() + 30
    while scheduled(engine, load).count(names.POLL_SERVICE) < 2:   # the first look, then the watch
        assert time.monotonic() < watching, "the watching poll was never scheduled"
        time.sleep(0.05)
    time.sleep(0.5)                                    # the poll now watches, for 60 s (WATCH_MAX)
    cancelled = time.monotonic()
    engine.raise_event(plan["run_id"], names.CANCEL_EVENT, None)
    result = result_of(engine, plan["run_id"], 90)
    seen = time.monotonic() - cancelled
    assert result["services"]["load"]["status"] == "cancelled", result["services"]["load"]
    assert seen < 30.0, f"the cancel waited {seen:.1f} s for the watch"   # the watch had ~59 s to go
    assert result["services"]["load"]["remote_id"] in sim_adapter(engine).cancelled_remote_ids()  # the work was stopped
