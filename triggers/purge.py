"""The daily purge: what finished runs leave behind goes once they are TOWER_RETENTION_DAYS old
(default 30): finished Durable instances, ledger and history rows; the runs index keeps a tombstone
of each run a while longer, so a late redelivery or catch-up cannot start a purged run again
(`tower.runs.index.purge` says what goes in which order, and why).

Nothing else purges in Azure: the Azure Storage backend keeps every instance forever (and instance
queries slow down as it grows); the Durable Task Scheduler purges on its own retention policy,
which must be at least as long as Tower's (docs/architecture.md, "Retention").
"""

from __future__ import annotations

from datetime import datetime, timezone

import azure.durable_functions as df
import azure.functions as func

import app_runtime
from tower.names import PURGE
from triggers.common import log

bp = df.Blueprint()
SCHEDULE = "0 17 3 * * *"  # NCRONTAB: 03:17 UTC every day, off the hour when schedules crowd
EPOCH = datetime(2000, 1, 1, tzinfo=timezone.utc)  # the extension requires createdTimeFrom


class DurableClientSide:
    """The purge's view of Durable through the app's client (tower.runs.index.DurableSide)."""

    def __init__(self, client):
        self.client = client

    async def runtime(self, instance_id: str) -> str | None:
        status = await self.client.get_status(instance_id)
        runtime = getattr(status, "runtime_status", None) if status else None
        return getattr(runtime, "value", runtime)

    async def purge(self, created_before: datetime) -> int:
        from azure.durable_functions.models.OrchestrationRuntimeStatus import OrchestrationRuntimeStatus as S

        result = await self.client.purge_instance_history_by(
            created_time_from=EPOCH, created_time_to=created_before,
            runtime_status=[S.Completed, S.Failed, S.Terminated])
        return int(getattr(result, "instances_deleted", 0) or 0)


async def purge_now(client, now: datetime) -> dict[str, int]:
    """Purge what is older than the retention, in this environment's stores."""
    from tower.runs.index import purge, retention_days

    return await purge(app_runtime.current().runs_index, app_runtime.current().ledger, app_runtime.current().history,
                       DurableClientSide(client), now, retention_days(), push=app_runtime.current().push_keys)


@bp.function_name(PURGE)
@bp.timer_trigger(schedule=SCHEDULE, arg_name="timer", run_on_startup=False)
@bp.durable_client_input(client_name="client")
async def purge_timer(timer: func.TimerRequest, client: df.DurableOrchestrationClient) -> None:
    report = await purge_now(client, datetime.now(timezone.utc))
    log.info("purge: %s", report)
