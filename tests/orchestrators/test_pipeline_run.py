"""pipeline_run and service_run on the local engine, with the simulator as the platform."""

import json
import sqlite3
import time
from datetime import datetime, timedelta, timezone

import pytest

from tests.faults import ends
from tower import names
from tower.runner import store_run
from tower.runs.history import SqliteRunHistory
from tower.runs.ledger import ledger_from_environment, live_status
from tower.runs.plan import build_plan, service_instance_id
from tower.timestamps import parse_iso

from .conftest import result_of, run, run_plan, scheduled, sim_adapter, sim_catalog, statuses, times


def test_diamond_runs_in_dependency_order_and_records_history(engine):
    catalog = sim_catalog({"a": {"duration": 0.02}, "b": {"deps": ["a"], "duration": 0.05},
                           "c": {"deps": ["a"], "duration": 0.02}, "d": {"deps": ["b", "c"], "duration": 0.01}})
    result = run(engine, catalog)
    assert result["status"] == "succeeded" and result["summary"] == ""
    assert statuses(result) == dict.fromkeys("abcd", "succeeded")
    assert times(result, "b")[0] >= times(result, "a")[1] and times(result, "c")[0] >= times(result, "a")[1]
    assert times(result, "d")[0] >= max(times(result, "b")[1], times(result, "c")[1])
    assert result["services"]["a"]["remote_id"].startswith("sim-")
    assert result["services"]["a"]["attempts"] == 1
    recorded = SqliteRunHistory(engine.home / "history.db").attempts(result["run_id"])
    assert sorted(r.service for r in recorded) == ["a", "b", "c", "d"]
    assert all(r.status == "succeeded" and r.duration >= 0 for r in recorded)


def test_fan_out_fan_in_runs_the_fan_in_parallel(engine):
    middle = {f"m{i}": {"deps": ["root"], "duration": 0.2} for i in range(8)}
    catalog = sim_catalog({"root": {"duration": 0.0}, **middle, "sink": {"deps": list(middle), "duration": 0.0}})
    result = run(engine, catalog)
    assert result["status"] == "succeeded"
    starts = [times(result, name)[0] for name in middle]
    ends = [times(result, name)[1] for name in middle]
    assert max(starts) < min(ends)  # all eight ran at once
    assert times(result, "sink")[0] >= max(ends)


def test_a_failure_stops_its_downstream_and_lets_other_branches_finish(engine):
    catalog = sim_catalog({
        "bad": {"duration": 0.01, "outcome": "fail", "retries": 2},
        "after_bad": {"deps": ["bad"]}, "further": {"deps": ["after_bad"]},
        "good": {"duration": 0.1}, "after_good": {"deps": ["good"], "duration": 0.01},
    })
    result = run(engine, catalog)
    assert result["status"] == "failed"
    assert statuses(result) == {"bad": "failed", "after_bad": "upstream_failed", "further": "upstream_failed",
                                "good": "succeeded", "after_good": "succeeded"}
    assert result["services"]["bad"]["attempts"] == 1  # non-retryable: not retried despite retries: 2
    assert "simulated failure" in result["services"]["bad"]["error"]
    assert result["services"]["further"]["error"] == "upstream 'bad' failed"
    assert "bad: simulated failure" in result["summary"] and "2 service(s) not run" in result["summary"]


def test_retryable_failures_are_retried_with_backoff_until_success(engine):
    catalog = sim_catalog({"flaky": {"duration": 0.01, "fail_attempts": 2, "retries": 2, "backoff": 0.1,
                                     "max_backoff": 0.15}})
    started = time.monotonic()
    result = run(engine, catalog)
    assert result["services"]["flaky"]["status"] == "succeeded"
    assert result["services"]["flaky"]["attempts"] == 3
    assert result["services"]["flaky"]["error"] is None  # the failed attempts' error is not kept
    assert time.monotonic() - started >= 0.25  # backoff 0.1 then 0.15 (capped), via durable timers


def test_retries_exhausted_end_in_failure_with_the_last_error(engine):
    catalog = sim_catalog({"flaky": {"fail_attempts": 5, "retries": 1}, "next": {"deps": ["flaky"]}})
    result = run(engine, catalog)
    flaky = result["services"]["flaky"]
    assert flaky["status"] == "failed" and flaky["attempts"] == 2
    assert flaky["error"] == "simulated failure of attempt 2 of 5 (gave up after 2 attempts)"
    assert result["services"]["next"]["status"] == "upstream_failed"
    own = engine.status(service_instance_id(result["run_id"], "flaky"))["output"]  # the service run's own result
    assert (own["status"], own["error"]) == ("failed", flaky["error"])


def test_a_non_retryable_submit_error_is_not_retried_and_keeps_its_message(engine):
    catalog = sim_catalog({"broken": {"spec": {"duration": -1}, "retries": 3}})
    result = run(engine, catalog)
    broken = result["services"]["broken"]
    assert broken["status"] == "failed" and broken["attempts"] == 1
    assert broken["error"] == "service 'broken': sim field 'duration' must be a number >= 0, got -1"


def test_a_missing_secret_fails_the_service_with_a_clear_message_and_no_value(engine, monkeypatch):
    monkeypatch.delenv("TOWER_TEST_UNSET_TOKEN", raising=False)
    catalog = sim_catalog({"s": {"retries": 2}})
    plan = build_plan(catalog, "p", run_id="secret-run")
    plan["platforms"]["sim"]["settings"] = {"time_scale": "${TOWER_TEST_UNSET_TOKEN}"}
    result = run_plan(engine, plan)
    error = result["services"]["s"]["error"]
    assert result["services"]["s"]["attempts"] == 1
    assert "platform 'sim'" in error and "TOWER_TEST_UNSET_TOKEN is not set" in error


def test_a_timeout_cancels_the_remote_run_and_fails_the_service(engine):
    catalog = sim_catalog({"slow": {"duration": 30, "timeout": 0.3, "retries": 2}, "after": {"deps": ["slow"]}})
    started = time.monotonic()
    result = run(engine, catalog)
    slow = result["services"]["slow"]
    assert time.monotonic() - started < 5
    assert slow["status"] == "failed" and slow["error"] == "timed out after 0.3s"
    assert slow["remote_id"] in sim_adapter(engine).cancelled_remote_ids()
    assert result["services"]["after"]["status"] == "upstream_failed"


def _live(engine, run_id: str) -> dict | None:
    """The run's per-service state, as the status readers see it (from the run ledger)."""
    return live_status(ledger_from_environment(engine.home), run_id, datetime.now(timezone.utc))


def _wait_for(engine, run_id: str, predicate, timeout: float = 10) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = _live(engine, run_id)
        if status and predicate(status):
            return status
        time.sleep(0.01)
    raise AssertionError(f"condition not reached; last status {status}")


def test_cancel_stops_running_services_remotely_and_cancels_the_rest(engine):
    catalog = sim_catalog({"long": {"duration": 30}, "other": {"duration": 30},
                           "after": {"deps": ["long"]}, "quick": {"duration": 0.0}})
    plan = build_plan(catalog, "p", run_id="cancel-run")
    engine.start_new(names.PIPELINE_RUN, plan["run_id"], json.dumps(store_run(plan)))
    _wait_for(engine, plan["run_id"], lambda s: s["counts"].get("succeeded") == 1 and s["counts"].get("running") == 2)
    engine.raise_event(plan["run_id"], names.CANCEL_EVENT, json.dumps({"by": "test"}))
    result = result_of(engine, plan["run_id"], 10)
    assert result["status"] == "cancelled"
    assert statuses(result) == {"long": "cancelled", "other": "cancelled", "after": "cancelled",
                                "quick": "succeeded"}
    assert {result["services"][n]["remote_id"] for n in ("long", "other")} <= sim_adapter(engine).cancelled_remote_ids()
    assert result["services"]["after"]["attempts"] == 0
    for name in ("long", "other"):  # what each service run showed while it ran (`tower status` reads it)
        shown = engine.status(plan["services"][name]["iid"])["customStatus"]
        assert shown == {"s": "cancelled", "a": 1, "rid": result["services"][name]["remote_id"], "url": None}


def test_a_cancel_wider_than_one_step_is_made_by_several_activity_calls(engine, monkeypatch):
    from tower.runs import ledger

    monkeypatch.setattr(ledger, "STEP_SERVICES", 2)
    catalog = sim_catalog({f"long{i}": {"duration": 30} for i in range(5)})
    plan = build_plan(catalog, "p", run_id="cancel-wide-run")
    engine.start_new(names.PIPELINE_RUN, plan["run_id"], json.dumps(store_run(plan)))
    _wait_for(engine, plan["run_id"], lambda s: s["counts"].get("running") == 5)

    def looked(iid: str) -> bool:  # its first look is over: it no longer stops itself on the cancel flag
        try:
            return any(e["EventType"] == 5 for e in engine.history(iid))
        except Exception:  # noqa: BLE001 - not started yet
            return False

    deadline = time.monotonic() + 10
    while not all(looked(svc["iid"]) for svc in plan["services"].values()):
        assert time.monotonic() < deadline, "the service runs never took their first look"
        time.sleep(0.01)
    engine.raise_event(plan["run_id"], names.CANCEL_EVENT, json.dumps({"by": "test"}))
    result = result_of(engine, plan["run_id"], 10)
    assert statuses(result) == {f"long{i}": "cancelled" for i in range(5)}
    assert {s["remote_id"] for s in result["services"].values()} <= sim_adapter(engine).cancelled_remote_ids()
    history = engine.history(plan["run_id"])
    asked = {e["EventId"]: json.loads(e["Input"]) for e in history if e["EventType"] == 4 and e["Name"] == names.CANCEL_RUN}
    answers = [(asked[e["TaskScheduledId"]], json.loads(e["Result"])) for e in history
               if e["EventType"] == 5 and e["TaskScheduledId"] in asked]
    assert [answer["stopping"] for _, answer in answers] == [2, 2, 1]  # a page per call, each going on
    assert [request.get("after") for request, _ in answers] == [None, *(a["more"] for _, a in answers[:-1])]
    assert answers[-1][1]["more"] is None


def test_concurrency_limits_are_never_exceeded(engine):
    catalog = sim_catalog({f"x{i}": {"duration": 0.05, "platform": "x"} for i in range(8)}
                          | {f"y{i}": {"duration": 0.05, "platform": "y"} for i in range(3)},
                          limits={"x": 2})
    result = run(engine, catalog)
    events = []
    for name in result["services"]:
        start, end = times(result, name)
        events += [(start, 1, name[0]), (end, -1, name[0])]
    running = {"x": 0, "y": 0}
    peak = {"x": 0, "y": 0}
    for _, delta, platform in sorted(events, key=lambda e: (e[0], e[1])):  # ends before starts at a tie
        running[platform] += delta
        peak[platform] = max(peak[platform], running[platform])
    assert peak == {"x": 2, "y": 3}


def test_under_a_limit_the_longest_remaining_path_goes_first(engine):
    catalog = sim_catalog({
        "short1": {"duration": 0.02}, "short2": {"duration": 0.02},
        "head": {"duration": 0.02}, "tail": {"deps": ["head"], "duration": 0.02, "expected": 5.0},
    }, limits={"sim": 1})
    result = run(engine, catalog)
    order = sorted(result["services"], key=lambda n: times(result, n)[0])
    assert order == ["head", "tail", "short1", "short2"]


def test_params_reach_the_platform(engine):
    from tower.platforms.base import FunctionAdapter, Handle, Status

    seen = []

    def submit(submission):
        seen.append((submission.service, submission.attempt, submission.params, submission.idempotency_key))
        return Handle(remote_id=f"rec-{submission.service}")

    recording = FunctionAdapter(submit=submit, poll=lambda handle: Status("succeeded"))
    with engine.runtime.platforms.overridden("recording", recording):
        catalog = sim_catalog({"a": {"platform": "rec", "type": "recording", "params": {"table": "orders"}}},
                              params={"date": "today", "env": "dev"})
        result = run(engine, catalog, params=["date=2024-06-01"])
    assert result["status"] == "succeeded"
    assert seen == [("a", 1, {"date": "2024-06-01", "env": "dev", "table": "orders"},
                     f"{result['run_id']}/a/1")]


def test_env_references_in_a_service_spec_reach_the_platform_resolved(engine, monkeypatch):
    from tower.platforms.base import FunctionAdapter, Handle, Status

    monkeypatch.setenv("TOWER_TEST_API_KEY", "k-123")
    seen = []

    def submit(submission):
        seen.append(submission.spec)
        return Handle(remote_id="rec-1")

    recording = FunctionAdapter(submit=submit, poll=lambda handle: Status("succeeded"))
    with engine.runtime.platforms.overridden("recording", recording):
        catalog = sim_catalog({"a": {"platform": "rec", "type": "recording",
                                     "spec": {"headers": {"X-Api-Key": "${TOWER_TEST_API_KEY}"}}}})
        plan = build_plan(catalog, "p", run_id="spec-env-run")
        result = run_plan(engine, plan)
    assert result["status"] == "succeeded"
    assert seen == [{"headers": {"X-Api-Key": "k-123"}}]
    assert plan["services"]["a"]["spec"]["headers"] == {"X-Api-Key": "${TOWER_TEST_API_KEY}"}  # as stored


def test_a_simulated_run_leaves_the_run_history_alone(engine):
    catalog = sim_catalog({"a": {"duration": 5.0}, "b": {"deps": ["a"], "duration": 5.0}})
    result = run(engine, catalog, simulate=True, time_scale=0.001)
    assert result["status"] == "succeeded"
    assert SqliteRunHistory(engine.home / "history.db").attempts(result["run_id"]) == []


def test_recent_runs_are_listed_newest_first_without_their_services(engine):
    from tower.runner import list_runs

    catalog = sim_catalog({"a": {"duration": 0.0}, "b": {"deps": ["a"], "duration": 0.0}})
    first, second = run(engine, catalog), run(engine, catalog)
    runs = list_runs(engine.home, limit=2)
    assert [info.run_id for info in runs] == [second["run_id"], first["run_id"]]
    assert all(info.pipeline == "p" and info.status == "succeeded" for info in runs)


def test_the_plan_is_frozen_when_the_run_starts(engine, tmp_path):
    from tower.catalog import load_catalog

    path = tmp_path / "catalog.yaml"
    path.write_text(
        "platforms:\n  sim: {type: sim}\n"
        "services:\n  first: {platform: sim, duration: 0.2}\n"
        "  second: {platform: sim, depends_on: [first], duration: 0.0}\n"
        "pipelines:\n  p: {services: ['*']}\n")
    plan = build_plan(load_catalog(path), "p", run_id="frozen-run")
    engine.start_new(names.PIPELINE_RUN, plan["run_id"], json.dumps(store_run(plan)))
    path.write_text(  # the catalog changes under the running run: a service goes, another fails
        "platforms:\n  sim: {type: sim}\n"
        "services:\n  first: {platform: sim, duration: 0.0, outcome: fail}\n"
        "pipelines:\n  p: {services: ['*']}\n")
    assert list(load_catalog(path).services) == ["first"]
    result = result_of(engine, plan["run_id"], 10)
    assert result["status"] == "succeeded" and list(result["services"]) == ["first", "second"]


def test_a_poll_hint_counts_from_when_the_platform_was_asked(engine):
    """The simulator says when it will be done (poll_after); the poll timer fires at that moment,
    not poll_after after the (later) episode that read the answer."""
    result = run(engine, sim_catalog({"only": {"duration": 0.8}}))  # longer than the submit lingers
    assert result["status"] == "succeeded"
    history = engine.history(service_instance_id(result['run_id'], "only"))
    # the first look (a poll: the work was submitted at dispatch) watched it, then said when to look again
    status = next(json.loads(e["Result"]) for e in history if e["EventType"] == 5)  # TaskCompleted
    fire_at = next(e["FireAt"] for e in history if e["EventType"] == 10)  # TimerCreated
    due = parse_iso(status["observed_at"]) + timedelta(seconds=status["poll_after"])
    assert abs((parse_iso(fire_at) - due).total_seconds()) < 50e-6


def test_the_poll_that_sees_a_success_reports_it_and_starts_the_dependents(engine):
    result = run(engine, sim_catalog({"a": {"duration": 0.7}, "b": {"deps": ["a"], "duration": 0.0}}))
    assert statuses(result) == {"a": "succeeded", "b": "succeeded"}
    a, b = service_instance_id(result['run_id'], "a"), service_instance_id(result['run_id'], "b")
    # submitted at dispatch; the first look watched 0.5 s, the next saw the end: no separate report
    assert scheduled(engine, a) == [names.POLL_SERVICE, names.POLL_SERVICE]
    assert scheduled(engine, b) == [names.POLL_SERVICE]  # zero duration: the first look saw it end
    a_ended = next(e["Timestamp"] for e in engine.history(a) if e["EventType"] == 1)  # ExecutionCompleted
    b_began = next(e["Timestamp"] for e in engine.history(b) if e["EventType"] == 0)  # ExecutionStarted
    assert parse_iso(b_began) < parse_iso(a_ended)  # b started while a's orchestration was finishing
    assert result["services"]["a"]["remote_id"] and result["services"]["a"]["finished"] <= b_began


def test_work_that_ends_within_the_linger_budget_is_watched_by_the_submit(engine):
    result = run(engine, sim_catalog({"quick": {"duration": 0.2}, "slow": {"duration": 0.7}}))
    assert statuses(result) == {"quick": "succeeded", "slow": "succeeded"}
    kinds = {name: [e["EventType"] for e in engine.history(service_instance_id(result['run_id'], name))] for name in result["services"]}
    assert 10 not in kinds["quick"] and 10 in kinds["slow"]  # TimerCreated: only the slow one waits durably
    assert scheduled(engine, service_instance_id(result['run_id'], "quick")) == [names.POLL_SERVICE]
    started, finished = times(result, "quick")
    assert 0.2 <= (finished - started).total_seconds() < 0.4


def test_the_submit_never_lingers_past_the_deadline(engine):
    start = time.monotonic()
    result = run(engine, sim_catalog({"late": {"duration": 0.4, "timeout": 0.15}}))
    late = result["services"]["late"]
    assert late["status"] == "failed" and late["error"].startswith("timed out after")
    assert late["remote_id"] in sim_adapter(engine).cancelled_remote_ids()
    assert time.monotonic() - start < 0.4  # the submit gave up watching at the deadline


def test_when_the_early_report_fails_the_service_run_reports_with_retries(engine, ledger_faults):
    outage = ledger_faults.fail("save", sqlite3.OperationalError("database is locked"), when=ends("only"))
    result = run(engine, sim_catalog({"only": {"duration": 0.0}}))
    assert result["status"] == "succeeded" and (outage.failed, outage.seen) == (1, 2)  # the early report, then one
    assert scheduled(engine, service_instance_id(result['run_id'], "only")) == [names.POLL_SERVICE, names.REPORT_SERVICE]


def test_a_ready_service_starts_at_once_while_unrelated_work_runs(engine):
    """Shim safety: with the extension's one-at-a-time await of top-level actions, a naive task_any
    loop would hold `d` back until `c` finishes (~0.6 s); it must start when `b` finishes."""
    catalog = sim_catalog({
        "long": {"duration": 1.0}, "a": {"duration": 0.05}, "b": {"duration": 0.2},
        "c": {"deps": ["a"], "duration": 0.6}, "d": {"deps": ["b"], "duration": 0.01},
    })
    result = run(engine, catalog)
    gap = (times(result, "d")[0] - times(result, "b")[1]).total_seconds()
    assert 0 <= gap < 0.1, gap
    assert times(result, "d")[1] < times(result, "c")[1]


@pytest.mark.slow
def test_live_status_stays_small_for_300_services(engine):
    import random

    rng = random.Random(7)
    names_ = [f"service_{i:03d}" for i in range(300)]
    services = {name: {"duration": 0.0, "deps": [d for d in names_[:i] if rng.random() < 2 / max(i, 1)]}
                for i, name in enumerate(names_)}
    plan = build_plan(sim_catalog(services), "p", run_id="big-run")
    engine.start_new(names.PIPELINE_RUN, plan["run_id"], json.dumps(store_run(plan)))
    sizes = []
    while True:
        status = engine.status(plan["run_id"], show_input=False)
        live = _live(engine, plan["run_id"])
        if live:
            sizes.append(len(json.dumps(live).encode()))
        if status["runtimeStatus"] not in ("Pending", "Running"):
            break
        time.sleep(0.05)
    assert status["output"]["status"] == "succeeded"
    assert len(sizes) > 3 and max(sizes) < 2000, max(sizes)  # Azure allows 16 KB of UTF-16
