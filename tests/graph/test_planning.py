"""Planning algorithms against DAGs small enough to compute by hand."""

import time

import pytest

from benchmarks.dags import random_dag, zero_duration_dag
from tower.graph import (
    critical_path,
    dependents,
    downstream,
    level_groups,
    levels,
    lower_bound,
    remaining_path,
    restrict,
    simulate,
    simulate_levels,
    topological_order,
    total_work,
    upstream,
)

# a(2) -> {b(3), c(5)} -> d(1)
DIAMOND = {"a": [], "b": ["a"], "c": ["a"], "d": ["b", "c"]}
DIAMOND_SECONDS = {"a": 2, "b": 3, "c": 5, "d": 1}
CHAIN = {"x": [], "y": ["x"], "z": ["y"]}
CHAIN_SECONDS = {"x": 1, "y": 2, "z": 3}
# r(1) -> x1..x4 (2 each) -> s(1)
FAN = {"r": [], "x1": ["r"], "x2": ["r"], "x3": ["r"], "x4": ["r"], "s": ["x1", "x2", "x3", "x4"]}
FAN_SECONDS = {"r": 1, "x1": 2, "x2": 2, "x3": 2, "x4": 2, "s": 1}
# two independent branches: a(3) -> b(1) and c(1) -> d(1)
BRANCHES = {"c": [], "d": ["c"], "a": [], "b": ["a"]}
BRANCHES_SECONDS = {"a": 3, "b": 1, "c": 1, "d": 1}


def one_platform(deps, platform="p"):
    return dict.fromkeys(deps, platform)


# --- structure -----------------------------------------------------------------------------------


def test_topological_order_is_stable_and_respects_dependencies():
    assert topological_order(DIAMOND) == ["a", "b", "c", "d"]
    assert topological_order(BRANCHES) == ["c", "d", "a", "b"]
    assert topological_order({"late": ["early"], "early": []}) == ["early", "late"]


def test_topological_order_rejects_a_cycle_by_name():
    with pytest.raises(ValueError, match="dependency cycle: b -> c -> b"):
        topological_order({"a": [], "b": ["a", "c"], "c": ["b"]})


def test_levels():
    assert levels(DIAMOND) == {"a": 0, "b": 1, "c": 1, "d": 2}
    assert levels(CHAIN) == {"x": 0, "y": 1, "z": 2}
    assert levels({"a": [], "b": ["a"], "c": ["a", "b"]}) == {"a": 0, "b": 1, "c": 2}
    assert level_groups(FAN) == [["r"], ["x1", "x2", "x3", "x4"], ["s"]]


def test_restrict_drops_dependencies_outside_the_selection():
    assert restrict(DIAMOND, {"b", "c", "d"}) == {"b": (), "c": (), "d": ("b", "c")}
    assert restrict({"a": ["ghost", "b", "b"], "b": []}, {"a", "b"}) == {"a": ("b",), "b": ()}


def test_downstream_and_upstream_exclude_the_names_given():
    assert downstream(DIAMOND, ["b"]) == {"d"}
    assert downstream(DIAMOND, ["a"]) == {"b", "c", "d"}
    assert downstream(DIAMOND, ["d", "unknown"]) == set()
    assert upstream(DIAMOND, ["d"]) == {"a", "b", "c"}
    assert upstream(BRANCHES, ["b", "d"]) == {"a", "c"}
    assert dependents(DIAMOND) == {"a": ["b", "c"], "b": ["d"], "c": ["d"], "d": []}


# --- critical path and bounds --------------------------------------------------------------------


def test_remaining_path_includes_own_duration():
    assert remaining_path(DIAMOND, DIAMOND_SECONDS) == {"a": 8, "b": 4, "c": 6, "d": 1}


@pytest.mark.parametrize(
    ("deps", "seconds", "path", "length"),
    [
        (DIAMOND, DIAMOND_SECONDS, ["a", "c", "d"], 8),
        (CHAIN, CHAIN_SECONDS, ["x", "y", "z"], 6),
        (FAN, FAN_SECONDS, ["r", "x1", "s"], 4),  # ties go to file order
        (BRANCHES, BRANCHES_SECONDS, ["a", "b"], 4),
        ({}, {}, [], 0.0),
    ],
)
def test_critical_path(deps, seconds, path, length):
    assert critical_path(deps, seconds) == (path, length)


def test_missing_or_negative_duration_is_a_clear_error():
    with pytest.raises(ValueError, match="no expected duration for service 'd'"):
        critical_path(DIAMOND, {"a": 1, "b": 1, "c": 1})
    with pytest.raises(ValueError, match="negative expected duration for service 'a'"):
        remaining_path({"a": []}, {"a": -1})


def test_total_work():
    assert total_work(DIAMOND_SECONDS) == 11
    assert total_work({}) == 0


def test_lower_bound_is_critical_path_or_work_over_capacity():
    fan = one_platform(FAN)
    assert lower_bound(FAN, FAN_SECONDS, fan, {}) == 4
    assert lower_bound(FAN, FAN_SECONDS, fan, {"p": None}) == 4
    assert lower_bound(FAN, FAN_SECONDS, fan, {"p": 2}) == 5  # work 10 / 2
    assert lower_bound(FAN, FAN_SECONDS, fan, {"p": 4}) == 4  # 10 / 4 = 2.5 < CP


def test_lower_bound_takes_the_tightest_platform():
    platforms = {"r": "db", "x1": "db", "x2": "sf", "x3": "sf", "x4": "sf", "s": "sf"}
    # db work 3, sf work 7 -> 7 / 1 beats CP 4 and 3 / 1
    assert lower_bound(FAN, FAN_SECONDS, platforms, {"db": 1, "sf": 1}) == 7
    assert lower_bound(FAN, FAN_SECONDS, platforms, {"db": 1}) == 4


@pytest.mark.parametrize("limit", [0, -1, 1.5, True, "2"])
def test_bad_limits_are_rejected(limit):
    with pytest.raises(ValueError, match="concurrency limit of platform 'p'"):
        lower_bound(FAN, FAN_SECONDS, one_platform(FAN), {"p": limit})


# --- simulation ----------------------------------------------------------------------------------


def test_unlimited_start_when_ready_takes_the_critical_path():
    run = simulate(DIAMOND, DIAMOND_SECONDS, one_platform(DIAMOND), {})
    assert run.makespan == 8
    assert run.starts == {"a": 0, "b": 2, "c": 2, "d": 7}
    assert run.finishes == {"a": 2, "b": 5, "c": 7, "d": 8}


def test_fan_under_a_limit_of_two():
    run = simulate(FAN, FAN_SECONDS, one_platform(FAN), {"p": 2})
    assert run.starts == {"r": 0, "x1": 1, "x2": 1, "x3": 3, "x4": 3, "s": 5}
    assert run.makespan == 6


# c(2) -> d(2), and a(1), b(1) first in the file; all on one platform limited to 2
LURE = {"a": [], "b": [], "c": [], "d": ["c"]}
LURE_SECONDS = {"a": 1, "b": 1, "c": 2, "d": 2}


def test_critical_path_first_beats_fifo_under_a_limit_of_two():
    fifo = simulate(LURE, LURE_SECONDS, one_platform(LURE), {"p": 2}, priority="fifo")
    critical = simulate(LURE, LURE_SECONDS, one_platform(LURE), {"p": 2}, priority="critical")
    assert fifo.starts == {"a": 0, "b": 0, "c": 1, "d": 3}
    assert fifo.makespan == 5
    assert critical.starts == {"c": 0, "a": 0, "b": 1, "d": 2}
    assert critical.makespan == 4
    assert lower_bound(LURE, LURE_SECONDS, one_platform(LURE), {"p": 2}) == 4


def test_critical_path_first_beats_fifo_under_a_limit_of_one():
    # a, b, c (1 s each) share a platform limited to 1; d (3 s, after c) runs elsewhere, unlimited
    deps = {"a": [], "b": [], "c": [], "d": ["c"]}
    seconds = {"a": 1, "b": 1, "c": 1, "d": 3}
    platforms = {"a": "sf", "b": "sf", "c": "sf", "d": "db"}
    fifo = simulate(deps, seconds, platforms, {"sf": 1}, priority="fifo")
    critical = simulate(deps, seconds, platforms, {"sf": 1})
    assert (fifo.makespan, fifo.starts) == (6, {"a": 0, "b": 1, "c": 2, "d": 3})
    assert (critical.makespan, critical.starts) == (4, {"c": 0, "a": 1, "b": 2, "d": 1})
    assert lower_bound(deps, seconds, platforms, {"sf": 1}) == 4


def test_fifo_prefers_earlier_ready_over_file_order():
    # late (file-first) becomes ready at 2, early at 0; one slot
    deps = {"late": ["gate"], "gate": [], "early": [], "tail": []}
    seconds = {"late": 1, "gate": 2, "early": 1, "tail": 1}
    run = simulate(deps, seconds, dict.fromkeys(deps, "p"), {"p": 1}, priority="fifo")
    assert run.starts == {"gate": 0, "early": 2, "tail": 3, "late": 4}


def test_zero_durations_finish_instantly_in_order():
    deps = {"a": [], "b": ["a"], "c": ["b"]}
    run = simulate(deps, dict.fromkeys(deps, 0), one_platform(deps), {"p": 1})
    assert run.makespan == 0
    assert run.finishes == {"a": 0, "b": 0, "c": 0}


def test_unknown_priority_and_cycles_are_rejected():
    with pytest.raises(ValueError, match="unknown priority 'lifo'"):
        simulate(DIAMOND, DIAMOND_SECONDS, one_platform(DIAMOND), {}, priority="lifo")
    with pytest.raises(ValueError, match="dependency cycle: a -> b -> a"):
        simulate({"a": ["b"], "b": ["a"]}, {"a": 1, "b": 1}, {"a": "p", "b": "p"}, {})


def test_levels_wait_for_the_slowest_of_each_level():
    # level 0: a(1), c(3); level 1: b(1) after a. Start-when-ready: 3; levels: 3 + 1
    deps = {"a": [], "b": ["a"], "c": []}
    seconds = {"a": 1, "b": 1, "c": 3}
    assert simulate(deps, seconds, one_platform(deps), {}).makespan == 3
    assert simulate_levels(deps, seconds, one_platform(deps), {}) == 4
    assert simulate_levels(DIAMOND, DIAMOND_SECONDS, one_platform(DIAMOND), {}) == 8


def test_levels_schedule_within_a_level_under_a_limit():
    # level 1 of FAN: four 2 s jobs on 2 slots -> 4 s; 1 + 4 + 1
    assert simulate_levels(FAN, FAN_SECONDS, one_platform(FAN), {"p": 2}) == 6
    assert simulate_levels(FAN, FAN_SECONDS, one_platform(FAN), {"p": 1}) == 10


def test_simulations_stay_between_the_bounds_on_random_dags():
    for seed in range(5):
        deps, seconds = random_dag(40, seed)
        platforms = {name: ("db" if i % 3 else "sf") for i, name in enumerate(deps)}
        limits = {"db": 3, "sf": 1}
        bound = lower_bound(deps, seconds, platforms, limits)
        for priority in ("critical", "fifo"):
            run = simulate(deps, seconds, platforms, limits, priority=priority)
            assert bound - 1e-9 <= run.makespan <= total_work(seconds) + 1e-9
            for name, needs in deps.items():
                assert all(run.finishes[d] <= run.starts[name] + 1e-9 for d in needs)
                assert run.finishes[name] == pytest.approx(run.starts[name] + seconds[name])
            for platform, limit in limits.items():
                events = sorted(
                    (t, +1 if kind == "start" else -1)
                    for name in deps
                    if platforms[name] == platform
                    for kind, t in (("start", run.starts[name]), ("finish", run.finishes[name]))
                    if seconds[name] > 0
                )
                busy = peak = 0
                for _, delta in sorted(events, key=lambda e: (e[0], e[1])):
                    busy += delta
                    peak = max(peak, busy)
                assert peak <= limit


def test_the_benchmark_dag_reproduces_the_measured_shape():
    deps, seconds = random_dag(60, 20240601)
    path, length = critical_path(deps, seconds)
    assert length == pytest.approx(2.3)
    assert simulate(deps, seconds, one_platform(deps), {}).makespan == pytest.approx(2.3)
    assert simulate_levels(deps, seconds, one_platform(deps), {}) / length == pytest.approx(1.454, abs=1e-3)


def test_5000_services_plan_quickly():
    deps, seconds = zero_duration_dag(5000, 7)
    seconds = {name: (i % 7) / 10 for i, name in enumerate(deps)}
    platforms = {name: f"p{i % 3}" for i, name in enumerate(deps)}
    started = time.perf_counter()
    critical_path(deps, seconds)
    lower_bound(deps, seconds, platforms, {"p0": 4, "p1": None})
    run = simulate(deps, seconds, platforms, {"p0": 4, "p1": 16})
    simulate(deps, seconds, platforms, {"p0": 4}, priority="fifo")
    simulate_levels(deps, seconds, platforms, {"p0": 4})
    assert len(run.finishes) == 5000
    assert time.perf_counter() - started < 5.0  # ~0.5 s here; a quadratic slip would take minutes
