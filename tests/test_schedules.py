"""due_runs: time zones, daylight saving in Europe/London, and the catch-up policies."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from tower.catalog.model import Schedule
from tower.errors import ConfigError
from tower.runs.plan import MAX_INSTANCE_ID
from tower.schedules import TICK_GRACE, due_runs, scheduled_run_id

UTC = timezone.utc


def utc(*args) -> datetime:
    return datetime(*args, tzinfo=UTC)


def london(cron: str, catchup: str = "all") -> Schedule:
    return Schedule(cron=cron, timezone="Europe/London", catchup=catchup)


def test_a_nightly_run_is_due_in_the_tick_after_its_local_time():
    nightly = london("0 2 * * *")  # 02:00 London = 01:00 UTC in summer
    assert due_runs(nightly, utc(2026, 7, 1, 0, 59), utc(2026, 7, 1, 1, 0)) == [utc(2026, 7, 1, 1, 0)]
    assert due_runs(nightly, utc(2026, 7, 1, 1, 0), utc(2026, 7, 1, 1, 1)) == []  # (last, now]: once


def test_winter_and_summer_follow_the_zone():
    nightly = london("0 2 * * *")
    assert due_runs(nightly, utc(2026, 1, 15), utc(2026, 1, 16)) == [utc(2026, 1, 15, 2, 0)]
    assert due_runs(nightly, utc(2026, 6, 15), utc(2026, 6, 16)) == [utc(2026, 6, 15, 1, 0)]


def test_spring_forward_a_missing_local_time_runs_once_shifted_by_the_gap():
    # 2026-03-29: London clocks go 01:00 GMT -> 02:00 BST; 01:30 does not exist.
    at_0130 = london("30 1 * * *")
    runs = due_runs(at_0130, utc(2026, 3, 28, 12), utc(2026, 3, 29, 12))
    assert runs == [utc(2026, 3, 29, 1, 30)]  # = 02:30 BST


def test_spring_forward_quarter_hours_keep_running_every_fifteen_real_minutes():
    quarter = london("*/15 * * * *")
    runs = due_runs(quarter, utc(2026, 3, 29, 0, 40), utc(2026, 3, 29, 1, 50))
    assert runs == [utc(2026, 3, 29, 0, 45)] + [utc(2026, 3, 29, 1, m) for m in (0, 15, 30, 45)]


def test_fall_back_a_repeated_local_time_runs_once_at_its_first_occurrence():
    # 2026-10-25: London clocks go 02:00 BST -> 01:00 GMT; 01:30 happens twice.
    at_0130 = london("30 1 * * *")
    runs = due_runs(at_0130, utc(2026, 10, 24, 12), utc(2026, 10, 25, 12))
    assert runs == [utc(2026, 10, 25, 0, 30)]  # 01:30 BST, not also 01:30 GMT (= 01:30 UTC)


def test_fall_back_ticks_during_the_second_pass_start_nothing_again():
    at_0130 = london("30 1 * * *")
    ticks = [utc(2026, 10, 25, 0, 0) + timedelta(minutes=m) for m in range(0, 180)]
    runs = [r for last, now in zip(ticks, ticks[1:], strict=False) for r in due_runs(at_0130, last, now)]
    assert runs == [utc(2026, 10, 25, 0, 30)]


def test_catchup_all_latest_none_after_an_outage():
    hourly = "0 * * * *"
    last, now = utc(2026, 7, 1, 0, 0, 30), utc(2026, 7, 1, 5, 0, 20)
    expected = [utc(2026, 7, 1, h) for h in range(1, 6)]
    assert due_runs(Schedule(hourly, "UTC", "all"), last, now) == expected
    assert due_runs(Schedule(hourly, "UTC", "latest"), last, now) == expected[-1:]
    assert due_runs(Schedule(hourly, "UTC", "none"), last, now) == expected[-1:]  # 20 s ago: in grace
    late = now + TICK_GRACE + timedelta(seconds=1)
    assert due_runs(Schedule(hourly, "UTC", "none"), last, late) == []


def test_catchup_all_is_bounded():
    every_minute = Schedule("* * * * *", "UTC", "all")
    runs = due_runs(every_minute, utc(2026, 1, 1), utc(2026, 1, 10))
    assert len(runs) == 1000 and runs[-1] == utc(2026, 1, 10)


def test_bad_zone_and_naive_datetimes_are_refused():
    with pytest.raises(ConfigError, match="Mars/Olympus"):
        due_runs(Schedule("0 * * * *", "Mars/Olympus"), utc(2026, 1, 1), utc(2026, 1, 2))
    with pytest.raises(ValueError, match="aware"):
        due_runs(Schedule("0 * * * *"), datetime(2026, 1, 1), utc(2026, 1, 2))


def test_scheduled_run_ids_are_stable_valid_instance_ids():
    when = utc(2026, 3, 29, 1, 30)
    assert scheduled_run_id("nightly", when) == "run~nightly@20260329T013000Z"
    assert scheduled_run_id("nightly", when.astimezone(timezone(timedelta(hours=1)))) == "run~nightly@20260329T013000Z"
    long_id = scheduled_run_id("p" * 200, when)
    assert len(long_id) == MAX_INSTANCE_ID and long_id.endswith("@20260329T013000Z")
    assert long_id != scheduled_run_id("p" * 199 + "q", when)


def test_next_due_agrees_with_due_runs_across_the_spring_forward_gap():
    from tower.schedules import next_due

    nightly = london("30 1 * * *")  # 01:30 London does not exist on 2026-03-29
    after = utc(2026, 3, 27, 12, 0)
    upcoming = next_due(nightly, after, 3)
    assert upcoming == [utc(2026, 3, 28, 1, 30), utc(2026, 3, 29, 1, 30), utc(2026, 3, 30, 0, 30)]
    assert due_runs(nightly, after, upcoming[-1]) == upcoming
