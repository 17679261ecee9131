"""What every trigger shares: the catalog (loaded once per process, again when the file changes)
and starting a run exactly once per instance id."""

from __future__ import annotations

import logging

from tower.names import PIPELINE_RUN

log = logging.getLogger("tower.triggers")
_cache: dict[str, tuple[float, object]] = {}


def catalog():
    """The catalog at $TOWER_CATALOG (else ./catalog.yaml); CatalogError if it is invalid."""
    from tower.catalog import load_catalog
    from tower.paths import catalog_path

    path = catalog_path()
    key = str(path.resolve())
    mtime = path.stat().st_mtime if path.exists() else -1.0
    cached = _cache.get(key)
    if cached is None or cached[0] != mtime:
        _cache[key] = (mtime, load_catalog(path))
    return _cache[key][1]


async def start_once(client, catalog, pipeline: str, run_id: str, *, params=None, selectors=None) -> bool:
    """Start `pipeline` as instance `run_id` unless that instance already exists; True if started.

    Checked first because the extension would *replace* a finished instance with the same id.
    """
    from tower.runner import plan_run

    existing = await client.get_status(run_id)
    if existing and existing.runtime_status is not None:
        log.info("%s: run %s exists already (%s): not started again", pipeline, run_id, existing.runtime_status.value)
        return False
    plan = plan_run(catalog, pipeline, params=params, selectors=selectors, run_id=run_id)
    await client.start_new(PIPELINE_RUN, run_id, plan)
    log.info("%s: started run %s", pipeline, run_id)
    return True
