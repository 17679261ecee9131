"""When pipelines fall due: each pipeline's cron in its own IANA time zone, evaluated by one tick.

Azure timer triggers cannot give every pipeline its own time zone on Linux, so one timer ticks every
minute and asks ``due_runs`` which scheduled times passed since the last tick. Pure: no clock, no I/O.

Daylight saving (a cron is matched against local wall-clock time):
- A wall time that does not exist (Europe/London 01:30 on the spring-forward day) runs once, shifted
  forward by the gap (at 02:30 BST = 01:30 UTC), as java.time and zoneinfo's fold=0 resolve it.
- A wall time that happens twice (01:30 on the autumn fall-back day) runs once, at its first
  occurrence (01:30 BST). So a sub-hourly cron has no runs during the repeated hour's second pass:
  every wall-clock time gets exactly one run, never two.
Catch-up (``Schedule.catchup``) decides what happens to times missed while nothing ticked:
``all`` runs each of them (at most ``MAX_CATCHUP``, the latest), ``latest`` only the most recent
one, ``none`` only those within ``TICK_GRACE`` of now.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

from tower.catalog.model import Schedule
from tower.errors import ConfigError
from tower.runs.plan import timed_run_id

MAX_CATCHUP = 1000  # runs started for one pipeline by one tick, at most
TICK_GRACE = timedelta(seconds=90)  # with catchup=none, how late a run may still start
_DST_MARGIN = timedelta(hours=3)  # larger than any DST shift: wall time vs UTC never differ more


def due_runs(schedule: Schedule, last_tick: datetime, now: datetime) -> list[datetime]:
    """Scheduled times (UTC, ascending) in ``(last_tick, now]`` that should run, per the catch-up policy."""
    from croniter import croniter

    if last_tick.tzinfo is None or now.tzinfo is None:
        raise ValueError("due_runs needs timezone-aware datetimes")
    try:
        zone = ZoneInfo(schedule.timezone)
    except (KeyError, ValueError):
        raise ConfigError(f"schedule time zone {schedule.timezone!r} is not an IANA time zone name") from None
    start = last_tick
    if schedule.catchup == "none":
        start = max(last_tick, now - TICK_GRACE)
    if start >= now:
        return []
    limit = 1 if schedule.catchup == "latest" else MAX_CATCHUP
    # Walk wall-clock matches backwards from a little after now; resolve each to an instant.
    lowest_wall = _wall(start, zone) - _DST_MARGIN
    walls = croniter(schedule.cron, _wall(now, zone) + _DST_MARGIN)
    found: set[datetime] = set()
    for _ in range(4 * MAX_CATCHUP + 1000):
        wall = walls.get_prev(datetime)
        if wall < lowest_wall:
            break
        instant = wall.replace(tzinfo=zone, fold=0).astimezone(timezone.utc)
        if start < instant <= now:
            found.add(instant)
            if len(found) >= limit + 8:  # a few extra: DST can reorder instants near a transition
                break
    return sorted(found)[-limit:]


def scheduled_run_id(pipeline: str, when: datetime) -> str:
    """The idempotent instance id of a scheduled run: ``run~<pipeline>@<UTC yyyymmddThhmmssZ>`` of
    the due time, the shape of runs started by hand without their random tail (tower.runs.plan)."""
    return timed_run_id(pipeline, when)


def _wall(moment: datetime, zone: ZoneInfo) -> datetime:
    return moment.astimezone(zone).replace(tzinfo=None)


def next_due(schedule: Schedule, after: datetime, count: int = 3) -> list[datetime]:
    """The next `count` scheduled times (UTC, ascending) after `after`, resolved as `due_runs` does
    (a skipped wall time shifted forward, a repeated one at its first occurrence): for display."""
    from croniter import croniter

    zone = ZoneInfo(schedule.timezone)
    walls = croniter(schedule.cron, _wall(after, zone) - _DST_MARGIN)
    found: set[datetime] = set()
    for _ in range(4 * count + 100):
        instant = walls.get_next(datetime).replace(tzinfo=zone, fold=0).astimezone(timezone.utc)
        if instant > after:
            found.add(instant)
            if len(found) >= count + 2:  # a few extra: DST can reorder instants near a transition
                break
    return sorted(found)[:count]
