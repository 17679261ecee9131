"""Deadlines that warn before they are missed.

A pipeline may declare when its data must be ready (``deadline: {time: "06:00", timezone:
Europe/London}``). A run's deadline is the first such wall-clock time after the run was started,
in that zone (`deadline_after`), frozen in its plan. While the run goes, its predicted end is
`Scheduler.forecast`: now + the longer of the remaining critical path (what has not finished, a
running service counted for its expected duration less the time it has run) and, per limited
platform, the work left over its slots; the same prediction `tower plan` makes before it starts,
with expected durations from run history. When the prediction passes the deadline the run is *at
risk*; `tower.run.at_risk` goes out once (tower.notify), naming the critical-path services that put
it there, while there is still time to act: never after the deadline itself (a repair keeps its
original run's deadline, long past: it shows as late, and warns nobody).

The check runs where the prediction changes: on each service report (cheap and deterministic: the
run's scheduler is already in memory) and on the reconcile timer of a running run, which covers long
silences (a service that runs well past its expected time moves the prediction without a report).
"""

from __future__ import annotations

import logging
import threading
import time as time_module
from collections.abc import Mapping
from datetime import date, datetime, time, timedelta, timezone
from typing import Any
from zoneinfo import ZoneInfo

from tower.timestamps import iso, parse_iso

CRITICAL_SHOWN = 10  # critical-path services named in a status or a notification
# A check walks what is left of the graph (about 7 ms for 1,000 services): a run's reports within
# this many seconds of its last check in this process are not checked again (the next report or
# reconcile after it is; a warning is minutes early, a few seconds do not matter).
CHECK_EVERY_S = 5.0
CHECKED_RUNS = 10_000  # runs whose last check a watch remembers (then it forgets them all)


def deadline_after(deadline, start: datetime) -> datetime:
    """The first `deadline.time` in `deadline.timezone` strictly after `start` (UTC). A wall time
    skipped by a clock change counts as the same instant shifted forward by the gap (zoneinfo's
    fold=0), a repeated one as its first occurrence, as schedules do (tower.schedules)."""
    zone = ZoneInfo(deadline.timezone)
    hour, minute = (int(part) for part in deadline.time.split(":"))
    local_day = start.astimezone(zone).date()
    for offset in range(0, 3):
        day = local_day + timedelta(days=offset)
        candidate = _instant(day, time(hour, minute), zone)
        if candidate > start:
            return candidate
    raise AssertionError("a time of day recurs within three days")  # unreachable


def _instant(day: date, at: time, zone: ZoneInfo) -> datetime:
    return datetime.combine(day, at, tzinfo=zone).astimezone(timezone.utc)


def plan_deadline(pipeline, start: datetime) -> dict:
    """What a plan keeps of its pipeline's deadline: ``{"deadline": ISO}``, or nothing."""
    if getattr(pipeline, "deadline", None) is None:
        return {}
    return {"deadline": iso(deadline_after(pipeline.deadline, start))}


def assess(deadline: Any, predicted_end: datetime | None, now: datetime, critical: list[str],
           finished: datetime | None = None) -> dict:
    """The deadline fields of a run: `deadline`, `predicted_end` (the finish itself once finished),
    `slack_s` (deadline - predicted end: negative means late), `at_risk` (a running run predicted
    to miss it), `missed` (a finished run that did), `critical_path` (what decides the end)."""
    deadline = parse_iso(deadline)
    if deadline is None:
        return {}
    end = finished or predicted_end or now
    slack = round((deadline - end).total_seconds(), 3)
    return {
        "deadline": iso(deadline),
        "predicted_end": iso(end),
        "slack_s": slack,
        "at_risk": finished is None and slack < 0,
        "missed": finished is not None and slack < 0,
        "critical_path": critical[:CRITICAL_SHOWN],
    }


def of_scheduler(scheduler, now: datetime) -> dict:
    """The deadline fields of a running run's scheduler (empty when its plan has no deadline)."""
    deadline = scheduler.plan.get("deadline")
    if not deadline:
        return {}
    end, critical = scheduler.forecast(now)
    return {**assess(deadline, end, now, critical), "pipeline": scheduler.plan.get("pipeline")}


def of_status(status: Mapping[str, Any] | None) -> dict:
    """The deadline fields a run status (the ledger's compact status) carries."""
    status = status or {}
    return {key: status[key] for key in ("deadline", "predicted_end", "slack_s", "at_risk", "missed",
                                         "critical_path") if key in status}


def of_finished(plan: Mapping[str, Any] | None, result: Mapping[str, Any] | None) -> dict:
    """The deadline fields of a finished run: its finish against its deadline."""
    if not plan or not plan.get("deadline") or not result:
        return {}
    finished = parse_iso(result.get("finished"))
    if finished is None:
        return {}
    return assess(plan["deadline"], None, finished, [], finished=finished)


def at_risk_notification(run_id: str, pipeline: str, fields: Mapping[str, Any]):
    """`tower.run.at_risk` for a run whose deadline fields say so; None otherwise."""
    if not fields.get("at_risk"):
        return None
    from tower.notify import RUN_AT_RISK, Notification, message_id

    return Notification(RUN_AT_RISK, {"run_id": run_id, "pipeline": pipeline, "status": "at_risk",
                                      **{k: fields[k] for k in ("deadline", "predicted_end", "slack_s",
                                                                "critical_path")}},
                        message_id(run_id, RUN_AT_RISK))


class DeadlineWatch:
    """Checks running runs against their deadlines where the prediction changes, and announces a run
    at risk once. One per process (`tower.runtime.Runtime.deadlines`): it reads the schedulers the
    process's `ledger` object keeps (no I/O), publishes with its `notifier`, and remembers when it
    last checked each run, so a burst of reports checks a wide run once per `every` seconds."""

    def __init__(self, ledger, notifier, every: float = CHECK_EVERY_S):
        self.ledger = ledger
        self.notifier = notifier
        self.every = every
        self._lock = threading.Lock()
        self._checked: dict[str, float] = {}

    def watch(self, run_id: str, now: datetime) -> dict:
        """Check a running run against its deadline and announce it once when it is at risk; returns
        its deadline fields ({} when not checked now). Called right after the ledger change of a
        report or a reconcile, it looks at the scheduler that change left in the ledger object's
        cache: no store is read. Never raises (a deadline must not fail a run)."""
        with self._lock:
            if time_module.monotonic() - self._checked.get(run_id, float("-inf")) < self.every:
                return {}
        try:
            from tower.runs.ledger import cached_view

            # the scheduler this host's report or reconcile just changed: no I/O, nothing without a deadline
            status = cached_view(self.ledger, run_id, lambda s: of_scheduler(s, now)) or {}
            fields = of_status(status)
            if fields:  # a run with a deadline: not again for a few seconds
                with self._lock:
                    if len(self._checked) > CHECKED_RUNS:
                        self._checked.clear()
                    self._checked[run_id] = time_module.monotonic()
            if fields.get("at_risk") and now < parse_iso(fields["deadline"]):  # still time to act
                self.notifier.publish(at_risk_notification(run_id, status.get("pipeline") or "", fields))
            return fields
        except Exception as exc:
            from tower.redact import redact

            logging.getLogger("tower.deadlines").warning("run %s: deadline check failed: %s", run_id,
                                                         redact(str(exc)))
            return {}


def plan_slack(deadline, start: datetime, makespan_s: float) -> dict:
    """`tower plan`'s view: for a run started at `start` that takes `makespan_s`, its deadline and slack."""
    due = deadline_after(deadline, start)
    end = start + timedelta(seconds=makespan_s)
    return {"deadline": iso(due), "deadline_rule": f"{deadline.time} {deadline.timezone}",
            "predicted_end": iso(end), "slack_s": round((due - end).total_seconds(), 3)}


def of_run(info) -> dict:
    """The deadline fields of a run as `tower.runner.RunInfo` has it: live while it runs, its
    finish against its deadline once finished."""
    if not info.finished:
        return of_status(info.custom_status)
    return of_finished(info.plan, info.to_result())


def describe(fields: Mapping[str, Any], finished: bool) -> str | None:
    """One line for people: the deadline, the (predicted) end and the slack; None without a deadline."""
    if not fields.get("deadline"):
        return None
    from tower.catalog.durations import format_duration as fmt

    slack, end = fields["slack_s"], fields["predicted_end"]
    if finished:
        verdict = f"MISSED by {fmt(-slack)}" if slack < 0 else f"met, {fmt(slack)} to spare"
        return f"deadline {fields['deadline']}: finished {end}, {verdict}"
    if fields.get("at_risk"):
        path = ", ".join(fields.get("critical_path") or [])
        return f"deadline {fields['deadline']}: AT RISK, predicted end {end} ({fmt(-slack)} late; critical path: {path})"
    return f"deadline {fields['deadline']}: predicted end {end}, {fmt(slack)} to spare"
