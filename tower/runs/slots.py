"""Platform slots shared by every run: a platform's `max_concurrency` holds across runs and hosts.

Each limited platform has one *pool* in the same store as the run ledger (a row in SQLite, an
entity in Table Storage), changed in short conditional writes (a version, an ETag) like the ledger:

    limit    the platform's max_concurrency (as the last run to change the pool planned it)
    holders  {"<run id>\\n<service>": since}: one slot each; the key makes a grant idempotent
    waiting  {run id: {priority, started, services: {name: [remaining path, since]}}}: each run's
             most urgent ready services (at most `limit` of them: no more can be granted at once)
    seen     {run id: ledger version}: the newest state of each run synced in. Syncs run outside
             the run's lock, so one made from an older state may arrive late; it is ignored (it
             would release a slot granted since to a service it did not know was ready)

A run never takes a slot itself. After each change of its ledger that touched a shared platform
(`Scheduler.touched`), the ledger *syncs* the run into the pool (`sync`): its holders that no longer
run are released, its waiters replaced, and the free slots granted to the most urgent waiters of
any run. The ledger then marks the granted services running in their own runs and dispatches them
(`tower.runs.ledger._share`), so the report that frees a slot starts the next service at once, whichever
run it belongs to. The pool is the authority: a holder whose service is still pending was granted
and not yet taken (a crash in between) and is taken by the next sync of its run or by a reconcile;
one whose service ended, or whose run is gone, is released by it. So slots are never leaked and
never held twice for one service.

Most urgent: the highest pipeline `priority`, aged by one level per `AGING` waited (so a low
priority run is overtaken, never starved); then the longest remaining path in its own run (as within
a run); then the older run; then the run id and plan order (ties are broken the same way on every
host). What-if runs (`tower run --simulate`) share pools of their own (`what-if/<platform>`), never
the real platform's slots.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any, Protocol

from tower.errors import LedgerConflict
from tower.stores import SqliteStore
from tower.timestamps import iso, parse_iso

GONE = 2**62  # the version of a run gone from the ledger: nothing of it is newer
AGING = timedelta(minutes=10)  # a waiting service gains one priority level per AGING waited
WHAT_IF = "what-if/"
SYNC_ATTEMPTS = 50


def pool_of(platform: str, simulated: bool) -> str:
    return (WHAT_IF if simulated else "") + platform


def platform_of(pool: str) -> str:
    return pool.removeprefix(WHAT_IF)


def holder_key(run_id: str, service: str) -> str:
    return f"{run_id}\n{service}"


def holder_of(key: str) -> tuple[str, str]:
    run_id, _, service = key.partition("\n")
    return run_id, service


class SlotStore(Protocol):
    def read(self, pool: str) -> tuple[Any, dict]:
        """(a tag for `write`, the pool's state); an empty state if there is none yet."""

    def write(self, pool: str, tag: Any, state: dict) -> bool:
        """Store `state` if the pool is unchanged since `read` gave `tag`; False (nothing written) if not."""


def empty() -> dict:
    return {"limit": None, "holders": {}, "waiting": {}, "seen": {}}


def offer(scheduler, platform: str) -> dict:
    """What a run tells a pool after a change: its running and ready services on the platform and
    its most urgent waiters (`Scheduler.waiting_for`)."""
    plan = scheduler.plan
    limit = scheduler.limits[platform]
    queue = scheduler.ready[platform]  # a holder still ready was granted and is about to be taken
    return {"run": plan["run_id"], "limit": limit, "priority": int(plan.get("priority") or 0),
            "started": iso(scheduler.started),
            "running": scheduler.running_on(platform),
            "ready": {entry[2] for entry in queue},
            "waiting": scheduler.waiting_for(platform, limit)}


def apply(state: dict, run: dict, now: datetime) -> list[tuple[str, str]]:
    """Sync one run into the pool's state (see the module docstring) and grant the free slots;
    returns the grants (run id, service): this run's earlier grants it has not taken, then the new
    ones, most urgent first."""
    run_id = run["run"]
    seen = state.setdefault("seen", {})
    if run["version"] < seen.get(run_id, 0):  # a newer state of this run was synced first: moot
        return grant(state, now)
    seen[run_id] = run["version"]
    keep = set(run["running"])
    ready = run["ready"]
    holders = state["holders"]
    granted = []  # granted before and not taken yet (its run's change was lost): take it now
    for key in [key for key in holders if holder_of(key)[0] == run_id]:
        service = holder_of(key)[1]
        if service in ready:
            granted.append((run_id, service))
        elif service not in keep:
            del holders[key]
    if run.get("limit"):
        state["limit"] = run["limit"]
    known = state["waiting"].get(run_id, {}).get("services", {})
    waiting = {name: [path, known.get(name, [path, iso(now)])[1]] for name, path in run["waiting"]
               if holder_key(run_id, name) not in holders}
    if waiting:
        state["waiting"][run_id] = {"priority": run["priority"], "started": run["started"], "services": waiting}
    else:
        state["waiting"].pop(run_id, None)
    grants = granted + grant(state, now)
    if run_id not in state["waiting"] and not any(holder_of(key)[0] == run_id for key in holders):
        del seen[run_id]  # a run that neither holds nor waits is forgotten
    return grants


def urgency(entry: Mapping[str, Any], run_id: str, name: str, now: datetime) -> tuple:
    """Sort key, most urgent first (see the module docstring)."""
    path, since = entry["services"][name]
    aged = int(max((now - parse_iso(since)).total_seconds(), 0) // AGING.total_seconds())
    return -(entry["priority"] + aged), -path, entry["started"], run_id, name


def grant(state: dict, now: datetime) -> list[tuple[str, str]]:
    free = (state["limit"] or 0) - len(state["holders"])
    if free <= 0:
        return []
    candidates = sorted((urgency(entry, run_id, name, now), run_id, name)
                        for run_id, entry in state["waiting"].items() for name in entry["services"])
    grants = [(run_id, name) for _, run_id, name in candidates[:free]]
    for run_id, name in grants:
        state["holders"][holder_key(run_id, name)] = iso(now)
        entry = state["waiting"][run_id]
        del entry["services"][name]
        if not entry["services"]:
            del state["waiting"][run_id]
    return grants


def sync(store: SlotStore, pool: str, run: dict, now: datetime) -> list[tuple[str, str]]:
    """`apply` in a conditional write, again on a conflict."""
    for _ in range(SYNC_ATTEMPTS):
        tag, state = store.read(pool)
        before = json.dumps(state, sort_keys=True)
        grants = apply(state, run, now)
        if json.dumps(state, sort_keys=True) == before or store.write(pool, tag, state):
            return grants
    raise LedgerConflict(
        f"platform slots {pool!r}: the pool kept changing under this host ({SYNC_ATTEMPTS} tries)")


def holding(store: SlotStore, pool: str) -> dict:
    """Who holds a pool's slots, for status: {limit, busy, held_by: {run id: slots}}."""
    state = store.read(pool)[1]
    held_by: dict[str, int] = {}
    for key in state["holders"]:
        run_id = holder_of(key)[0]
        held_by[run_id] = held_by.get(run_id, 0) + 1
    return {"limit": state["limit"], "busy": len(state["holders"]), "held_by": held_by}


def runs_in(state: dict) -> set[str]:
    """Every run that holds or waits for a slot of this pool."""
    return {holder_of(key)[0] for key in state["holders"]} | set(state["waiting"])


# --- stores -------------------------------------------------------------------------------------

class SqliteSlots(SqliteStore):
    """Pools in the local ledger's SQLite file (`slots` table), beside the runs."""

    SCHEMA = ("CREATE TABLE IF NOT EXISTS slots (pool TEXT PRIMARY KEY, version INTEGER NOT NULL,"
              " state TEXT NOT NULL)",)

    def read(self, pool):
        row = self._connect().execute(
            "SELECT version, state FROM slots WHERE pool = ?", (pool,)).fetchone()
        return (row[0], json.loads(row[1])) if row else (0, empty())

    def write(self, pool, tag, state) -> bool:
        with self._connect() as db:
            if tag == 0:
                return bool(db.execute("INSERT OR IGNORE INTO slots VALUES (?, 1, ?)",
                                       (pool, json.dumps(state))).rowcount)
            return bool(db.execute("UPDATE slots SET version = version + 1, state = ? WHERE pool = ? AND version = ?",
                                   (json.dumps(state), pool, tag)).rowcount)


SLOTS_PARTITION = "~slots"  # `ledger_table.partition_key` writes ~ only before two hex digits: no run's


class TableSlots:
    """Pools in the ledger's table: partition `~slots`, one entity per pool (RowKey: the pool, key-safe),
    its state packed like the ledger's JSON, written with ETag conditions."""

    def __init__(self, table):
        self.table = table

    def read(self, pool):
        from azure.core.exceptions import ResourceNotFoundError

        from tower.runs.ledger_table import partition_key, unpack

        try:
            entity = self.table.get_entity(SLOTS_PARTITION, partition_key(pool))
        except ResourceNotFoundError:
            return None, empty()
        return entity.metadata["etag"], unpack(entity, "state")

    def write(self, pool, tag, state) -> bool:
        from azure.core import MatchConditions
        from azure.core.exceptions import HttpResponseError, ResourceExistsError
        from azure.data.tables import UpdateMode

        from tower.runs.ledger_table import pack, partition_key

        entity = {"PartitionKey": SLOTS_PARTITION, "RowKey": partition_key(pool), **pack("state", state)}
        try:
            if tag is None:
                self.table.create_entity(entity)
            else:
                self.table.update_entity(entity, mode=UpdateMode.REPLACE, etag=tag,
                                         match_condition=MatchConditions.IfNotModified)
        except ResourceExistsError:
            return False
        except HttpResponseError as exc:
            if exc.status_code == 412:
                return False
            raise
        return True
