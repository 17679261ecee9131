"""The schedule tick: one timer, every minute, starts every pipeline run whose cron fell due.

Per-pipeline crons with IANA time zones and catch-up live in `tower.schedules`; the tick only asks
which times passed since the previous tick (the host's schedule monitor records it in
`schedule_status["Last"]`) and starts each as `<pipeline>@<UTC time>`, which makes a repeated or
overlapping tick harmless.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import azure.durable_functions as df
import azure.functions as func

import app_runtime
from tower import telemetry
from tower.redact import redact
from tower.timestamps import parse_iso
from triggers.common import catalog, log, start_once

bp = df.Blueprint()
TICK = "0 * * * * *"  # NCRONTAB: second 0 of every minute
TICK_INTERVAL = timedelta(minutes=1)


def last_tick(timer: func.TimerRequest, now: datetime) -> datetime:
    """The previous tick from the schedule monitor, else one interval ago (never later than that)."""
    status = getattr(timer, "schedule_status", None) or {}
    try:
        last = parse_iso(str(status.get("Last") or ""))
    except ValueError:
        last = None
    if last is None:
        return now - TICK_INTERVAL
    if last.tzinfo is None:
        last = last.replace(tzinfo=timezone.utc)
    return min(last, now - TICK_INTERVAL)


async def tick(client, timer, now: datetime) -> list[str]:
    """Start every due scheduled run; returns the run ids started."""
    from tower.schedules import due_runs, scheduled_run_id

    cat = catalog()
    since = last_tick(timer, now)
    started = []
    for name, pipeline in cat.pipelines.items():
        if pipeline.schedule is None:
            continue
        for when in due_runs(pipeline.schedule, since, now):
            run_id = scheduled_run_id(name, when)
            if await start_once(client, cat, name, run_id, trigger="schedule"):
                started.append(run_id)
    return started


@bp.function_name("schedule_tick")
@bp.timer_trigger(schedule=TICK, arg_name="timer", run_on_startup=False)
@bp.durable_client_input(client_name="client")
async def schedule_tick(timer: func.TimerRequest, client: df.DurableOrchestrationClient) -> None:
    now = datetime.now(timezone.utc)
    if timer.past_due:
        log.warning("schedule tick is past due: catching up per each pipeline's policy")
    try:  # notifications a failed send left in the outbox (tower.notify)
        app_runtime.current().notifier.retry_pending()
    except Exception as exc:  # the outbox cannot even be opened: the next tick tries again
        log.warning("notifications: the outbox is unreachable: %s", redact(str(exc)))
    started = await tick(client, timer, now)
    telemetry.schedule_tick(now, len(started))
