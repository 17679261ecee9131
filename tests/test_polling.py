"""tower.polling: the poll schedule that follows a service's expected end."""

from __future__ import annotations

import pytest

from tower.polling import (
    FAR_MAX,
    LOOK_MIN,
    WATCH_MAX,
    Expectation,
    Poll,
    expectation_from_estimate,
    expectation_from_history,
    growing_polls,
    next_poll,
)
from tower.runs.plan import POLL_FACTOR, POLL_FIRST, POLL_MAX

GROWING = {"first": POLL_FIRST, "factor": POLL_FACTOR, "longest": POLL_MAX}
HOPS = 0.2     # seconds between two looks of back-to-back poll activities (queue hops, episodes)


def follow(expect: Expectation, end: float, **growing) -> tuple[int, int, float]:
    """Run the schedule against work that ends at `end`: (poll activities, platform looks,
    seconds from the end to the look that saw it)."""
    growing = growing or GROWING
    elapsed, polls, looks = 0.0, 0, 0
    while polls < 1000:
        poll = next_poll(elapsed, expect, **growing)
        assert poll.delay >= 0 and poll.watch >= 0
        elapsed += poll.delay + HOPS
        polls += 1
        moments = [elapsed]
        while poll.watch and moments[-1] + poll.look <= elapsed + poll.watch + 1e-9:
            moments.append(moments[-1] + poll.look)
        for moment in moments:
            looks += 1
            if moment >= end:
                return polls, looks, moment - end
        elapsed = moments[-1] + HOPS
    raise AssertionError("the schedule never looked after the end")


def test_history_gives_the_median_and_a_robust_spread():
    expect = expectation_from_history([1800, 1790, 1815, 1805, 1795, 9000, 1800, 1, 1])   # newest first
    assert expect.median == 1800                         # the last 7 only; one slow night does not move it
    # (the spread is the median absolute deviation x 1.4826, a sigma: here 5 x 1.4826 < 1 % of 1800)
    assert expect.spread == pytest.approx(18.0)          # never under 1 % of the median
    assert expectation_from_history([100, 90, 110, 95, 105, 100, 100]).spread == pytest.approx(1.4826 * 5)
    assert expectation_from_history([600] * 7).spread == pytest.approx(6.0)
    assert expectation_from_history([100]).spread == pytest.approx(10.0)       # one sample: +-10 %
    assert expectation_from_history([]) is None
    assert expectation_from_estimate(100).to_json() == {"median": 100.0, "spread": 20.0}
    assert expectation_from_estimate(None) is None


@pytest.mark.parametrize("offset", [-2.0, -1.0, 0.0, 1.0, 2.0])   # in spreads from the median
def test_a_30_minute_job_with_history_is_seen_within_seconds_in_at_most_20_polls(offset):
    expect = expectation_from_history([1800, 1790, 1815, 1805, 1795, 1810, 1785])
    end = expect.median + offset * expect.spread
    polls, looks, late = follow(expect, end)
    assert polls <= 20
    assert late <= 5.0
    assert looks <= growing_polls(end, POLL_FIRST, POLL_FACTOR, POLL_MAX) + 1   # no more API calls than before


def test_looks_in_the_window_come_from_one_poll_that_watches():
    expect = Expectation(1800.0, 20.0)
    start, end = expect.window()
    assert (start, end) == (1750.0, 1850.0)
    poll = next_poll(1760.0, expect, **GROWING)
    assert poll.delay == 0 and poll.watch == pytest.approx(min(90.0, WATCH_MAX))
    assert LOOK_MIN <= poll.look <= 5.0


def test_far_from_the_end_polls_are_few_but_never_more_than_ten_minutes_apart():
    expect = Expectation(7200.0, 72.0)
    assert next_poll(0.0, expect, **GROWING) == Poll(FAR_MAX, 0.0, next_poll(0.0, expect, **GROWING).look)
    polls, _, late = follow(expect, 900.0)            # an early failure
    assert late <= FAR_MAX and polls <= 2
    near = next_poll(expect.window()[0] - 50.0, expect, **GROWING)
    assert near.delay == pytest.approx(50.0) and near.watch > 0      # the next poll opens the window


def test_after_the_window_the_polls_back_off_to_the_longest_interval():
    expect = Expectation(600.0, 6.0)
    _, end = expect.window()
    delays = [next_poll(end + after, expect, **GROWING).delay for after in (0.0, 10.0, 60.0, 3600.0)]
    assert delays == sorted(delays) and delays[-1] == POLL_MAX
    assert all(next_poll(end + a, expect, **GROWING).watch == 0 for a in (0.0, 3600.0))


def test_a_wide_window_looks_by_timers_not_by_watching():
    expect = expectation_from_estimate(7200.0)          # no history: +-20 %, a window of 2 hours
    poll = next_poll(expect.window()[0] + 1, expect, **GROWING)
    assert poll.watch == 0 and poll.delay == poll.look > WATCH_MAX / 2
    _, looks, _ = follow(expect, 7200.0)
    assert looks <= growing_polls(7200.0, POLL_FIRST, POLL_FACTOR, POLL_MAX)


def test_a_simulated_run_scales_the_schedule():
    expect = Expectation(1800.0, 20.0)
    full = next_poll(100.0, expect, **GROWING)
    scaled = next_poll(1.0, Expectation(18.0, 0.2), first=0.01, factor=POLL_FACTOR, longest=0.6, scale=0.01)
    assert scaled.delay == pytest.approx(full.delay * 0.01)
    assert scaled.look == pytest.approx(full.look * 0.01)
