"""What every trigger shares: the catalog (the runtime keeps it, loaded again when the file changes)
and starting a run exactly once per instance id."""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime, timezone

import app_runtime
from tower.durable_errors import instance_exists
from tower.errors import RunExists
from tower.names import PIPELINE_RUN

log = logging.getLogger("tower.triggers")


def catalog():
    """The catalog at $TOWER_CATALOG (else ./catalog.yaml); CatalogError if it is invalid."""
    from tower.paths import catalog_path

    return app_runtime.current().catalog(catalog_path())


async def start_once(client, catalog, pipeline: str, run_id: str, *, trigger: str, params=None,
                     selectors=None) -> bool:
    """Start `pipeline` as run `run_id` unless that id was used; True if started, False (logged) if
    not. A repeated tick, a redelivered message, a catch-up after a purge all land here."""
    try:
        await start_new_run(client, catalog, pipeline, run_id, trigger=trigger, params=params, selectors=selectors)
    except RunExists as exc:
        log.info("%s: %s", pipeline, exc)
        return False
    return True


async def start_new_run(client, catalog, pipeline: str, run_id: str, *, trigger: str, params=None, selectors=None) -> dict:
    """Plan the run (bad input fails here, before anything is claimed), claim its id in the runs
    index, then start `pipeline_run`; returns the plan. RunExists if the id was used.

    The runs index decides, not Durable: the extension would *replace* a finished instance with
    the same id, and a purged one looks unused (tower.runs.index.start_once)."""
    from tower.runner import plan_run
    from tower.runs.index import row_for
    from tower.runs.index import start_once as claim_and_start

    runtime = app_runtime.current()
    plan = await asyncio.to_thread(lambda: plan_run(catalog, pipeline, params=params, selectors=selectors,
                                                    run_id=run_id, history=runtime.history))
    index = await asyncio.to_thread(lambda: runtime.runs_index)
    row = row_for(plan, trigger, datetime.now(timezone.utc))
    await claim_and_start(index, row, lambda: start_pipeline_run(client, plan), lambda: instance_exists(client, run_id))
    log.info("%s: started run %s (%s)", pipeline, run_id, trigger)
    return plan


async def start_pipeline_run(client, plan: dict) -> None:
    from tower.runner import store_run  # the plan goes to the run ledger; pipeline_run gets a reference

    await client.start_new(PIPELINE_RUN, plan["run_id"],
                           await asyncio.to_thread(lambda: store_run(plan, app_runtime.current().ledger)))
