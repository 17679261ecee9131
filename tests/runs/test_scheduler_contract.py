"""The scheduler's outputs, exactly: what the ledger stores, the custom status says, the run result
returns and the activity boundary carries. Each test names the rule it holds; most were written to
kill a mutant that the behaviour tests in test_scheduler.py let survive (see tests/MUTATION.md)."""

from dataclasses import replace
from datetime import datetime, timedelta, timezone

import pytest

from tower.contracts import ServiceResult
from tower.platforms.base import Status
from tower.runs.scheduler import (
    Scheduler,
    expand_status,
)
from tower.states import RemoteState, RunState, ServiceState

T0 = datetime(2024, 6, 1, 12, 0, tzinfo=timezone.utc)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def stamp(seconds: float) -> str:
    return (T0 + timedelta(seconds=seconds)).isoformat().replace("+00:00", "Z")


def make_plan(deps: dict, expected: dict | None = None, platform_of: dict | None = None,
              limits: dict | None = None) -> dict:
    expected, platform_of, limits = expected or {}, platform_of or {}, limits or {}
    return {
        "run_id": "r1", "pipeline": "nightly",
        "services": {name: {"deps": list(d), "expected": expected.get(name, 1.0),
                            "platform": platform_of.get(name, "main")} for name, d in deps.items()},
        "platforms": {p: {"type": "sim", "max_concurrency": limits.get(p), "settings": {}}
                      for p in set(platform_of.values()) | {"main"}},
    }


def record(status=ServiceState.PENDING, **fields) -> dict:
    base = {"status": status, "attempts": 0, "started": None, "finished": None, "remote_id": None, "url": None,
            "error": None, "output": None, "dispatcher": None}
    return {**base, **fields}


# --- dispatch and release ---------------------------------------------------------------------


def test_a_skipped_dependency_releases_its_dependents():
    s = Scheduler(make_plan({"a": [], "b": ["a"], "c": ["b"]}), T0)
    assert s.take_ready(at(0)) == ["a"]
    s.finish("a", ServiceResult("a", ServiceState.SKIPPED, attempts=0), at(1))
    assert s.take_ready(at(1)) == ["b"]
    assert s.records["b"].status == ServiceState.RUNNING and s.records["c"].status == ServiceState.PENDING
    s.finish("b", ServiceResult("b", ServiceState.SUCCEEDED, attempts=1), at(2))
    assert s.take_ready(at(2)) == ["c"]
    s.finish("c", ServiceResult("c", ServiceState.SUCCEEDED, attempts=1), at(3))
    assert s.done and s.status is RunState.SUCCEEDED


def test_finish_keeps_what_the_service_reported_and_frees_its_slot():
    s = Scheduler(make_plan({"a": [], "b": []}, limits={"main": 1}), T0)
    assert s.take_ready(at(0)) == ["a"]
    assert s.records["a"].started == stamp(0)
    s.finish("a", ServiceResult("a", ServiceState.SUCCEEDED, attempts=2, started=stamp(0.5), finished=stamp(9),
                                remote_id="run-7", url="https://x/run/7", error=None, output="42 rows"), at(10))
    assert s.take_changes()["a"] == record(ServiceState.SUCCEEDED, attempts=2, started=stamp(0.5), finished=stamp(9),
                                           remote_id="run-7", url="https://x/run/7", output="42 rows")
    assert s.take_ready(at(10)) == ["b"]  # the slot a held is free again
    assert s.running_since == {"b": at(10)}
    s.finish("b", ServiceResult("b", ServiceState.FAILED), at(11))  # a result that says little: the scheduler fills in
    assert s.take_changes()["b"] == record(ServiceState.FAILED, attempts=0, started=stamp(10), finished=stamp(11),
                                           error="ended 'failed' without an error message")


def test_take_changes_returns_each_changed_record_once():
    s = Scheduler(make_plan({"a": [], "b": ["a"]}), T0)
    assert s.take_changes() == {}
    s.take_ready(at(0))
    assert s.take_changes() == {"a": record(ServiceState.RUNNING, started=stamp(0))}
    assert s.take_changes() == {}
    s.finish("a", ServiceResult("a", ServiceState.FAILED, attempts=1, error="boom"), at(1))
    assert s.take_changes() == {
        "a": record(ServiceState.FAILED, attempts=1, started=stamp(0), finished=stamp(1), error="boom"),
        "b": record(ServiceState.UPSTREAM_FAILED, finished=stamp(1), error="upstream 'a' failed"),
    }


def test_a_service_cancelled_on_its_platform_holds_back_its_dependents():
    s = Scheduler(make_plan({"a": [], "b": ["a"], "c": ["b"]}), T0)
    s.take_ready(at(0))
    s.finish("a", ServiceResult("a", ServiceState.CANCELLED, attempts=1, error="cancelled on the platform"), at(3))
    assert s.records["c"].error == "upstream 'a' was cancelled"
    assert (s.records["b"].status, s.records["b"].finished) == (ServiceState.UPSTREAM_FAILED, stamp(3))
    assert s.done and s.status is RunState.FAILED


# --- cancel -----------------------------------------------------------------------------------


def test_cancel_marks_pending_services_and_waits_for_every_running_one():
    s = Scheduler(make_plan({"a": [], "b": [], "c": [], "d": ["a"]}, limits={"main": 2}), T0)
    assert s.cancel_requested is False
    assert s.take_ready(at(0)) == ["a", "b"]
    s.take_changes()
    assert s.cancel(at(5)) == ["a", "b"]
    assert s.cancel_requested is True
    assert s.take_changes() == {name: record(ServiceState.CANCELLED, finished=stamp(5), error="run cancelled")
                                for name in ("c", "d")}
    s.finish("a", ServiceResult("a", ServiceState.SUCCEEDED, attempts=1), at(6))
    assert not s.done  # b still runs
    assert s.take_ready(at(6)) == []
    s.finish("b", ServiceResult("b", ServiceState.CANCELLED, attempts=1, error="cancelled"), at(7))
    assert s.done and s.status is RunState.CANCELLED
    assert s.result(at(7))["summary"] == "run cancelled"


# --- restore from stored records ---------------------------------------------------------------


def test_restore_rebuilds_slots_queues_and_what_is_still_awaited():
    plan = make_plan({"a": [], "b": ["a"], "c": [], "d": [], "e": ["c"]}, {"c": 10, "d": 1},
                     limits={"main": 2})
    records = {"a": record(ServiceState.SUCCEEDED, attempts=1), "c": record(ServiceState.RUNNING, started=stamp(2))}
    s = Scheduler.restore(plan, T0, records, now=at(4))
    assert s.take_changes() == {}  # nothing implied that the records did not say
    assert (s.unfinished, s.busy, s.running_since) == (4, {"main": 1}, {"c": at(2)})
    assert s.waiting == {"a": 0, "b": 0, "c": 0, "d": 0, "e": 1}
    assert s.take_ready(at(4)) == ["b"]  # one slot left: b (released by a) before d, in file order
    s.finish("c", ServiceResult("c", ServiceState.SUCCEEDED, attempts=1), at(12))
    assert s.take_ready(at(12)) == ["d"]  # d and e (released by c) tie at 1 s: file order
    assert s.eta(at(12)) == at(13)  # d and e, 1 s each, over 2 slots (b is overdue: 0 s left)


def test_restore_applies_what_a_partial_save_implied():
    plan = make_plan({"a": [], "b": ["a"], "c": ["b"], "x": []})
    records = {"a": record(ServiceState.FAILED, attempts=1, error="boom"), "x": record(ServiceState.RUNNING, started="bad-and-ignored")}
    with pytest.raises(ValueError):
        Scheduler.restore(plan, T0, records, now=at(9))
    records["x"] = record(ServiceState.RUNNING)  # a running record without its start: the run's start stands in
    s = Scheduler.restore(plan, T0, records, now=at(9))
    assert s.compact_status(at(9))["started"] == stamp(0) and s.compact_status(at(9))["running"] == {"x": 0.0}
    assert s.take_changes() == {"b": record(ServiceState.UPSTREAM_FAILED, finished=stamp(9), error="upstream 'a' failed"),
                                "c": record(ServiceState.UPSTREAM_FAILED, finished=stamp(9), error="upstream 'a' failed")}
    assert s.running_since == {"x": T0} and s.unfinished == 1


def test_restore_counts_every_running_service_against_its_platforms_slots():
    plan = make_plan({"a": [], "b": [], "c": []}, limits={"main": 2})
    s = Scheduler.restore(plan, T0, {"a": record(ServiceState.RUNNING, started=stamp(1)), "b": record(ServiceState.RUNNING, started=stamp(2))})
    assert s.busy == {"main": 2}
    assert s.take_ready(at(3)) == []  # both slots are taken
    s.finish("a", ServiceResult("a", ServiceState.SUCCEEDED, attempts=1), at(4))
    assert s.take_ready(at(4)) == ["c"]


def test_restore_after_a_cancel_marks_the_rest_cancelled_and_dispatches_nothing():
    plan = make_plan({"a": [], "b": [], "c": ["a"]})
    s = Scheduler.restore(plan, T0, {"a": record(ServiceState.RUNNING, started=stamp(1))}, cancel_requested=True)
    assert s.cancel_requested is True
    assert s.take_changes() == {name: record(ServiceState.CANCELLED, finished=stamp(0), error="run cancelled")
                                for name in ("b", "c")}
    assert s.take_ready(at(2)) == [] and s.unfinished == 1


# --- time left ----------------------------------------------------------------------------------


def test_eta_divides_a_limited_platforms_work_by_its_slots():
    s = Scheduler(make_plan({n: [] for n in "abcd"}, {n: 10 for n in "abcd"}, limits={"main": 2}), T0)
    assert s.eta(at(0)) == at(20)  # 40 s of work over 2 slots
    three = Scheduler(make_plan({n: [] for n in "abcdef"}, {n: 10 for n in "abcdef"}, limits={"main": 3}), T0)
    assert three.eta(at(0)) == at(20)


def test_eta_counts_an_overdue_service_as_done_any_moment():
    s = Scheduler(make_plan({"a": []}, {"a": 10}), T0)
    s.take_ready(at(0))
    assert s.eta(at(25)) == at(25)


# --- the custom status ---------------------------------------------------------------------------


def test_compact_status_exactly():
    deps = {"slow": [], "fast": [], "bad": [], "after_bad": ["bad"], "later": ["fast"]}
    s = Scheduler(make_plan(deps, {"slow": 100, "fast": 10, "bad": 1, "after_bad": 1, "later": 5}), T0)
    s.take_ready(at(0.1234))  # slow, fast, bad
    s.finish("bad", ServiceResult("bad", ServiceState.FAILED, attempts=1, error="e" * 200), at(1))
    s.finish("fast", ServiceResult("fast", ServiceState.SUCCEEDED, attempts=1), at(10))
    assert s.take_ready(at(12.3456)) == ["later"]
    assert s.compact_status(at(13)) == {
        "run_id": "r1",
        "status": ServiceState.RUNNING,
        "started": stamp(0),
        "eta": stamp(100.1234),  # slow's 100 s from its start
        "counts": {ServiceState.RUNNING: 2, ServiceState.SUCCEEDED: 1, ServiceState.FAILED: 1, ServiceState.UPSTREAM_FAILED: 1},
        "states": "rsfur",
        "running": {"slow": 0.12, "later": 12.35},
        "errors": {"bad": "e" * 160},
    }
    assert list(s.compact_status(at(13))["running"]) == ["slow", "later"]  # longest-running first


def test_compact_status_shows_the_longest_running_and_the_first_ten_failures():
    names = [f"s{i:03d}" for i in range(80)]
    s = Scheduler(make_plan({name: [] for name in names}, limits={"main": 70}), T0)
    s.take_ready(at(0))
    for i, name in enumerate(reversed(names[:70])):  # restart them so the last names ran longest
        s.running_since[name] = at(i)
    for name in names[:12]:
        s.finish(name, ServiceResult(name, ServiceState.FAILED, attempts=1, error=f"{name} broke"), at(100))
    status = s.compact_status(at(100))
    assert list(status["errors"]) == names[:10]
    assert list(status["running"]) == list(reversed(names[12:70]))[:50]
    assert status["eta"] is not None and status["status"] == RunState.RUNNING


def test_a_failed_record_without_an_error_shows_an_empty_error():
    s = Scheduler.restore(make_plan({"a": []}), T0, {"a": record(ServiceState.FAILED)})
    assert s.compact_status(at(1))["errors"] == {"a": ""}
    assert s.compact_status(at(1))["eta"] is None  # done


def test_expand_status_reads_back_each_service():
    plan = make_plan({"a": [], "b": [], "c": [], "d": []})
    view = expand_status(plan, {"states": "rfzc", "started": stamp(0), "running": {"a": 2.5},
                                "errors": {"b": "boom"}})
    assert view == {"a": {"status": ServiceState.RUNNING, "started": stamp(2.5)}, "b": {"status": ServiceState.FAILED, "error": "boom"},
                    "c": {"status": ServiceState.PENDING}, "d": {"status": ServiceState.CANCELLED}}  # an unknown letter: pending
    assert expand_status(plan, {"states": "rs"}) == {"a": {"status": ServiceState.RUNNING}, "b": {"status": ServiceState.SUCCEEDED}}
    assert expand_status(plan, {}) == {}


# --- the run result ---------------------------------------------------------------------------


def test_result_exactly():
    s = Scheduler(make_plan({"a": [], "b": ["a"], "c": []}), T0)
    s.take_ready(at(0))
    s.finish("a", ServiceResult("a", ServiceState.FAILED, attempts=3, error="boom", remote_id="q1"), at(4))
    s.finish("c", ServiceResult("c", ServiceState.SUCCEEDED, attempts=1, output="ok"), at(5))
    assert s.result(at(6)) == {
        "run_id": "r1", "pipeline": "nightly", "status": ServiceState.FAILED, "started": stamp(0), "finished": stamp(6),
        "counts": {ServiceState.SUCCEEDED: 1, ServiceState.FAILED: 1, ServiceState.UPSTREAM_FAILED: 1}, "failed": {"a": "boom"}, "failed_not_shown": 0,
        "summary": "a: boom\n1 service(s) not run because an upstream service failed",
    }
    assert {name: vars(s.records[name]) for name in s.order} == {  # the records stay in the ledger
        "a": record(ServiceState.FAILED, attempts=3, started=stamp(0), finished=stamp(4), remote_id="q1", error="boom"),
        "b": record(ServiceState.UPSTREAM_FAILED, finished=stamp(4), error="upstream 'a' failed"),
        "c": record(ServiceState.SUCCEEDED, attempts=1, started=stamp(0), finished=stamp(5), output="ok"),
    }


def test_summary_of_a_clean_run_is_empty():
    s = Scheduler(make_plan({"a": []}), T0)
    s.take_ready(at(0))
    s.finish("a", ServiceResult("a", ServiceState.SUCCEEDED, attempts=1), at(1))
    assert s.result(at(1))["summary"] == ""


# --- a service's final result -------------------------------------------------------------------


def test_settled_takes_the_remote_end_and_clears_an_earlier_attempts_error():
    result = ServiceResult("a", ServiceState.RUNNING, 2, error="first attempt failed", output="old",
                           url="https://old", remote_id="q2")
    done = result.settled(Status(RemoteState.SUCCEEDED, output="3 rows", url="https://new"), stamp(9))
    assert done == replace(result, status=ServiceState.SUCCEEDED, error=None, output="3 rows", url="https://new",
                           finished=stamp(9))
    assert done.status is ServiceState.SUCCEEDED
    assert result.settled(Status(RemoteState.SKIPPED), stamp(9)) == replace(
        result, status=ServiceState.SKIPPED, error=None, finished=stamp(9))  # no output or url: the earlier ones
