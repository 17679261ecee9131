"""The schedule tick: one timer, every minute, starts every pipeline run whose cron fell due.

Per-pipeline crons with IANA time zones and catch-up live in `tower.schedules`; the tick only asks
which times passed since the previous tick (the host's schedule monitor records it in
`schedule_status["Last"]`) and starts each as `<pipeline>@<UTC time>`, which makes a repeated or
overlapping tick harmless.

A start that fails does not stop the others. The host moves `Last` even past a failed tick (its
TimerListener updates the schedule monitor whatever the invocation's outcome), so each tick also
looks `RETRY_WINDOW` back and starts a due run the runs index has no claim for.
"""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta, timezone

import azure.durable_functions as df
import azure.functions as func

import app_runtime
from tower import telemetry
from tower.errors import TowerError
from tower.redact import redact
from tower.timestamps import parse_iso
from triggers.common import catalog, log, start_once

bp = df.Blueprint()
TICK = "0 * * * * *"  # NCRONTAB: second 0 of every minute
TICK_INTERVAL = timedelta(minutes=1)
RETRY_WINDOW = timedelta(minutes=10)  # how long the ticks go on trying a due run whose start failed


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
    """Start every due scheduled run; returns the run ids started. When a start failed, raises once
    the others were tried (the invocation fails where the portal shows it); later ticks try it again."""
    from tower.schedules import due_runs, scheduled_run_id

    cat = catalog()
    since = last_tick(timer, now)
    index = await asyncio.to_thread(lambda: app_runtime.current().runs_index)
    started, failed = [], []
    for name, pipeline in cat.pipelines.items():
        if pipeline.schedule is None:
            continue
        for when in due_runs(pipeline.schedule, min(since, now - RETRY_WINDOW), now):
            run_id = scheduled_run_id(name, when)
            try:
                if await asyncio.to_thread(index.get, run_id) is not None:
                    continue    # claimed by an earlier tick (or by this one's twin)
                if await start_once(client, cat, name, run_id, trigger="schedule"):
                    started.append(run_id)
            except Exception as exc:
                log.error("%s: could not start scheduled run %s: %s", name, run_id, redact(str(exc)))
                failed.append(run_id)
    if failed:
        raise TowerError(f"{len(failed)} scheduled run(s) did not start: {', '.join(failed)} (the log says why); "
                         f"later ticks try again until {RETRY_WINDOW // TICK_INTERVAL} minutes after each was due, "
                         "as its pipeline's catch-up allows")
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
