"""The scheduling state machine, without Durable: dispatch order, limits, failures, cancel, status."""

import json
from datetime import datetime, timedelta, timezone

import pytest

from tower.contracts import ServiceResult
from tower.runs.scheduler import (
    Scheduler,
    expand_status,
)
from tower.states import RunState, ServiceState

T0 = datetime(2024, 6, 1, 12, 0, tzinfo=timezone.utc)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def make_plan(deps: dict, expected: dict | None = None, platform_of: dict | None = None,
              limits: dict | None = None) -> dict:
    expected = expected or {}
    platform_of = platform_of or {}
    limits = limits or {}
    platforms = {p: {"type": "sim", "max_concurrency": limits.get(p), "settings": {}}
                 for p in set(platform_of.values()) | {"main"}}
    return {
        "run_id": "r1", "pipeline": "p",
        "services": {name: {"deps": list(d), "expected": expected.get(name, 1.0),
                            "platform": platform_of.get(name, "main")} for name, d in deps.items()},
        "platforms": platforms,
    }


def ok(name: str, started=None, finished=None) -> ServiceResult:
    return ServiceResult(name, ServiceState.SUCCEEDED, attempts=1, started=started, finished=finished)


DIAMOND = {"a": [], "b": ["a"], "c": ["a"], "d": ["b", "c"]}


def test_diamond_starts_each_service_when_its_last_dependency_succeeds():
    s = Scheduler(make_plan(DIAMOND), T0)
    assert s.take_ready(at(0)) == ["a"]
    assert s.take_ready(at(0)) == []
    s.finish("a", ok("a"), at(1))
    assert sorted(s.take_ready(at(1))) == ["b", "c"]
    s.finish("b", ok("b"), at(2))
    assert s.take_ready(at(2)) == []  # d still waits for c
    s.finish("c", ok("c"), at(3))
    assert s.take_ready(at(3)) == ["d"]
    s.finish("d", ok("d"), at(4))
    assert s.done and s.status is RunState.SUCCEEDED


def test_limit_gives_free_slots_to_the_longest_remaining_path_first():
    deps = {"short": [], "long": [], "mid": [], "after_long": ["long"]}
    expected = {"short": 1, "long": 5, "mid": 3, "after_long": 5}
    s = Scheduler(make_plan(deps, expected, limits={"main": 1}), T0)
    assert s.take_ready(at(0)) == ["long"]
    s.finish("long", ok("long"), at(5))
    assert s.take_ready(at(5)) == ["after_long"]  # remaining path 5 beats mid (3) and short (1)
    s.finish("after_long", ok("after_long"), at(10))
    assert s.take_ready(at(10)) == ["mid"]
    s.finish("mid", ok("mid"), at(13))
    assert s.take_ready(at(13)) == ["short"]


def test_limits_are_per_platform():
    deps = {n: [] for n in ("x1", "x2", "x3", "y1", "y2")}
    platform_of = {"x1": "x", "x2": "x", "x3": "x", "y1": "y", "y2": "y"}
    s = Scheduler(make_plan(deps, platform_of=platform_of, limits={"x": 2}), T0)
    started = s.take_ready(at(0))
    assert sorted(started) == ["x1", "x2", "y1", "y2"]
    s.finish("y1", ok("y1"), at(1))
    assert s.take_ready(at(1)) == []
    s.finish("x2", ok("x2"), at(2))
    assert s.take_ready(at(2)) == ["x3"]


def test_failure_marks_downstream_and_lets_independent_branches_go_on():
    deps = {"a": [], "b": ["a"], "c": ["b"], "x": [], "y": ["x"]}
    s = Scheduler(make_plan(deps), T0)
    assert s.take_ready(at(0)) == ["a", "x"]
    s.finish("a", ServiceResult("a", ServiceState.FAILED, attempts=3, error="boom"), at(1))
    assert s.records["b"].status == ServiceState.UPSTREAM_FAILED and s.records["c"].status == ServiceState.UPSTREAM_FAILED
    assert s.records["c"].error == "upstream 'a' failed"
    assert not s.done
    s.finish("x", ok("x"), at(2))
    assert s.take_ready(at(2)) == ["y"]
    s.finish("y", ok("y"), at(3))
    assert s.done and s.status is RunState.FAILED
    result = s.result(at(3))
    assert "a: boom" in result["summary"] and "2 service(s) not run" in result["summary"]
    assert result["failed"] == {"a": "boom"} and result["counts"][ServiceState.SUCCEEDED] == 2
    assert s.records["a"].attempts == 3


def test_an_unknown_status_from_a_service_counts_as_failed():
    s = Scheduler(make_plan({"a": []}), T0)
    s.take_ready(at(0))
    s.finish("a", ServiceResult("a", "weird"), at(1))
    assert s.records["a"].status == ServiceState.FAILED and "weird" in s.records["a"].error


def test_cancel_marks_what_has_not_started_and_names_what_runs():
    deps = {"a": [], "b": [], "c": ["a"]}
    s = Scheduler(make_plan(deps, limits={"main": 1}), T0)
    assert s.take_ready(at(0)) == ["a"]
    assert s.cancel(at(1)) == ["a"]
    assert s.records["b"].status == ServiceState.CANCELLED and s.records["c"].status == ServiceState.CANCELLED
    assert s.take_ready(at(1)) == []
    s.finish("a", ServiceResult("a", ServiceState.CANCELLED, attempts=1, error="cancelled"), at(2))
    assert s.done and s.status is RunState.CANCELLED


def test_finishing_a_service_that_is_not_running_is_a_bug():
    s = Scheduler(make_plan({"a": []}), T0)
    with pytest.raises(ValueError, match="pending"):
        s.finish("a", ok("a"), at(1))


def test_eta_is_the_remaining_critical_path_or_the_work_over_the_slots():
    deps = {"a": [], "b": ["a"], "c": []}
    s = Scheduler(make_plan(deps, {"a": 10, "b": 20, "c": 5}), T0)
    s.take_ready(at(0))
    assert s.eta(at(4)) == at(4 + 6 + 20)  # a has 6 s left, then b
    limited = Scheduler(make_plan({n: [] for n in "abcd"}, {n: 10 for n in "abcd"}, limits={"main": 1}), T0)
    assert limited.eta(at(0)) == at(40)
    s.finish("a", ok("a"), at(10)); s.take_ready(at(10)); s.finish("c", ok("c"), at(10))  # noqa: E702
    s.finish("b", ok("b"), at(30))
    assert s.eta(at(30)) is None


def test_compact_status_stays_small_for_300_services_and_expands_back():
    names = [f"service_number_{i:03d}" for i in range(300)]
    deps = {name: ([names[i - 1]] if i % 3 else []) for i, name in enumerate(names)}
    plan = make_plan(deps)
    s = Scheduler(plan, T0)
    started = s.take_ready(at(0))
    for name in started[:50]:
        s.finish(name, ServiceResult(name, ServiceState.FAILED, attempts=2, error="x" * 1000), at(1))
    status = s.compact_status(at(1))
    size = len(json.dumps(status).encode())
    assert size < 4000, size  # one letter per service + running starts + 10 short errors
    view = expand_status(plan, status)
    assert view[names[0]]["status"] == ServiceState.FAILED and len(view[names[0]]["error"]) <= 160
    assert view[names[1]]["status"] == ServiceState.UPSTREAM_FAILED
    assert view[names[150]]["status"] == ServiceState.RUNNING and view[names[150]]["started"] == "2024-06-01T12:00:00Z"
    assert view[names[151]]["status"] == ServiceState.PENDING
    assert status["counts"] == {"running": 50, "failed": 50, "upstream_failed": 100, "pending": 100}


def test_compact_status_caps_what_it_says_about_running_services():
    names = [f"service_number_{i:04d}" for i in range(1000)]
    s = Scheduler(make_plan({name: [] for name in names}), T0)
    s.take_ready(at(0))
    status = s.compact_status(at(1))
    assert len(status["running"]) == 50 and status["counts"] == {"running": 1000}
    assert len(json.dumps(status)) < 3000
