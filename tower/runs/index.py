"""The runs index: one row per run, kept by Tower, so that listing runs and "has this run id been
used?" never depend on Durable instance queries (docs/architecture.md, "Runs index").

Durable cannot answer either question in Azure: an instance query returns one page of 100
instances in instance-id order (service runs among them, oldest first), with every input; and a
start on a finished instance id *replaces* it, while a purged id looks unused. The index answers
both from Tower's own store, and survives the purge of the instances it describes.

    start_once(index, row, start, exists) -> bool   claim the id, then start; RunExists if used
    run_ended(index, result)                        the run's end (from `run_result`)
    link_repair(index, original, repair, again)     the original run points to its repair
    RunsIndex.list(pipeline, status, since, limit, continuation) -> (rows, next continuation)

Two stores: SQLite locally (``$TOWER_HOME/runs.db``) and Azure Table Storage in Azure
(``TOWER_RUNS_TABLE_URL``, managed identity). `index_from_environment()` picks one.

A row's life: ``starting`` (claimed; `start` not yet known to have worked) -> ``running`` ->
succeeded / failed / cancelled. A claim whose start failed is deleted; one whose claimer died
before it knew (the process was killed) is taken over by the next start of that id, when Durable
has no instance of it: so a claim can never leave a run that can never start.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import asdict, dataclass, field, fields, replace
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Protocol

from tower.errors import LedgerConflict, RunExists
from tower.states import ENDED_RUNTIMES, RunState, run_state_of_ended
from tower.stores import SqliteStore, Table, location
from tower.timestamps import iso, parse_iso

log = logging.getLogger("tower.runs")

UNFINISHED = (RunState.STARTING, RunState.RUNNING)
TRIGGERS = ("schedule", "event", "api", "cli", "repair")
DEFAULT_LIMIT, MAX_LIMIT = 20, 1000
CHANGE_ATTEMPTS = 20


@dataclass(frozen=True)
class RunRow:
    """One run in the index. Times are ISO-8601 UTC text; `counts` is services per state (set at the
    end); `tag` is the store's version of the row (compared on change, never shown)."""

    run_id: str
    pipeline: str
    trigger: str
    params_digest: str
    status: str
    started: str
    finished: str | None = None
    counts: dict[str, int] = field(default_factory=dict)
    repair_of: str | None = None
    repaired_by: str | None = None
    purged: bool = False  # its details (Durable instances, ledger, history) are gone: this row is a tombstone
    tag: Any = field(default=None, compare=False, repr=False)

    @property
    def listing_key(self) -> str:
        """Newest first when sorted ascending: inverted start time (ms), then the run id."""
        return f"{10**13 - int(parse_iso(self.started).timestamp() * 1000):013d}~{self.run_id}"

    def to_json(self) -> dict:
        return {k: v for k, v in asdict(self).items() if k != "tag"}


def params_digest(params: dict | None) -> str:
    """Tells runs with the same params apart without storing their values (a param may be secret)."""
    text = json.dumps(params or {}, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def row_for(plan: dict, trigger: str, now: datetime, repair_of: str | None = None) -> RunRow:
    """The claim of a new run of `plan`."""
    return RunRow(run_id=plan["run_id"], pipeline=plan["pipeline"], trigger=trigger,
                  params_digest=params_digest(plan.get("params")), status=RunState.STARTING, started=iso(now),
                  repair_of=repair_of)


class RunsIndex(Protocol):
    location: str

    def get(self, run_id: str) -> RunRow | None: ...

    def insert(self, row: RunRow) -> RunRow | None:
        """Store `row` if its run id is unused (a conditional insert): None; else the existing row."""

    def replace(self, old: RunRow, new: RunRow) -> bool:
        """Store `new` if the row is still `old` (its tag); False, and nothing written, if not."""

    def delete(self, row: RunRow) -> bool:
        """Delete the row if it is still `row` (its tag)."""

    def list(self, *, pipeline: str | None = None, status: str | None = None, since: datetime | None = None,
             limit: int = DEFAULT_LIMIT, continuation: str | None = None) -> tuple[list[RunRow], str | None]:
        """Runs newest first (by start) with these filters; the continuation, when more may follow,
        is passed back to read the next page."""

    def delete_before(self, cutoff: datetime) -> int:
        """Delete the rows of runs that started before `cutoff` and are no longer running."""


# --- what the callers do ------------------------------------------------------------------------

async def start_once(index: RunsIndex, row: RunRow, start: Callable[[], Awaitable[Any]],
                     exists: Callable[[], Awaitable[bool]], to_thread=None) -> bool:
    """Claim `row.run_id` in the index, then `start()` the run; True when this call started it.

    RunExists if the id was used (running, ended, or purged: the row outlives the instance). A
    claim still ``starting`` was left by a starter that died or is starting it right now: when
    Durable has an instance (`exists()`), that start worked and this one is a duplicate; when not,
    this call takes the claim over and starts. If `start()` fails, the claim is deleted, so a retry
    starts the run; unless the instance exists after all. Then, when this call made the claim and
    nobody took it over, nobody else can have started the run: the start took effect and only its
    reply was lost (True). Else a twin started it (a claim taken over may have had a live starter)."""
    import asyncio

    to_thread = to_thread or asyncio.to_thread
    existing = await to_thread(index.insert, row)
    made_here = existing is None
    if existing is not None:
        if existing.status != RunState.STARTING:
            raise RunExists(existing)
        if await exists():  # its starter died after the start worked
            await to_thread(mark_running, index, row.run_id)
            raise RunExists(existing)
        log.warning("run %s: claimed at %s but no instance yet (its starter died, or is starting it right now): "
                    "starting it", row.run_id, existing.started)
        if not await to_thread(index.replace, existing, replace(row, repaired_by=existing.repaired_by)):
            raise RunExists(await to_thread(index.get, row.run_id) or existing)
    try:
        await _sent(start, row.run_id)
    except Exception:
        if await exists():
            claim = await to_thread(index.get, row.run_id)
            await to_thread(mark_running, index, row.run_id)
            if made_here and claim is not None and replace(claim, status=row.status) == row:  # still ours
                log.warning("run %s: its start took effect, only the reply was lost", row.run_id)
                return True
            raise RunExists(await to_thread(index.get, row.run_id) or row) from None
        await to_thread(release, index, row)
        raise
    await to_thread(mark_running, index, row.run_id)
    return True


async def _sent(start: Callable[[], Awaitable[Any]], run_id: str) -> None:
    """`start()`, once more if it failed before its request left (durable_errors.never_sent): Durable
    never saw it, so this cannot start the run twice, and the caller need not fail for another call's
    trouble."""
    from tower.durable_errors import never_sent

    try:
        await start()
    except Exception as exc:
        if not never_sent(exc):
            raise
        log.warning("run %s: its start never reached Durable (%s): starting it again", run_id, exc)
        await start()


def change(index: RunsIndex, run_id: str, edit: Callable[[RunRow], RunRow | None]) -> RunRow | None:
    """Apply `edit` to the run's row (optimistic: read, edit, replace if unchanged, else again);
    returns the row as stored, None if there is none. `edit` returns None to change nothing."""
    for _ in range(CHANGE_ATTEMPTS):
        row = index.get(run_id)
        if row is None:
            return None
        new = edit(row)
        if new is None or new == row:
            return row
        if index.replace(row, new):
            return new
    raise LedgerConflict(
        f"run {run_id!r}: the runs index kept changing under this host ({CHANGE_ATTEMPTS} tries)")


def mark_running(index: RunsIndex, run_id: str) -> None:
    """starting -> running (the start is known to have worked); anything else stays."""
    change(index, run_id, lambda row: replace(row, status=RunState.RUNNING) if row.status == RunState.STARTING else None)


def release(index: RunsIndex, claim: RunRow) -> None:
    """Delete a claim whose start failed, so that a retry can start the run; only this claim (not
    one another starter took over since: its start time differs)."""
    row = index.get(claim.run_id)
    if row is not None and row.status == RunState.STARTING and row.started == claim.started:
        index.delete(row)


def record_end(index: RunsIndex, run_id: str, pipeline: str, status: str, finished: str | None,
               counts: dict[str, int], started: str | None = None) -> RunRow:
    """The run ended: its status, end time and counts (a row is made if the run had none)."""
    row = RunRow(run_id=run_id, pipeline=pipeline, trigger="unknown", params_digest="", status=status,
                 started=started or finished or iso(datetime.now(timezone.utc)), finished=finished, counts=counts)
    while True:
        updated = change(index, run_id, lambda old: replace(old, status=status, finished=finished, counts=counts))
        if updated is not None:
            return updated
        if index.insert(row) is None:  # else it was made in between: change that one
            return row


def run_ended(index: RunsIndex, result: dict) -> None:
    """Record a run result (`run_result`'s) in the index."""
    counts = result.get("counts")
    if not isinstance(counts, dict):
        counts = {}
        for service in (result.get("services") or {}).values():
            counts[service.get("status")] = counts.get(service.get("status"), 0) + 1
    record_end(index, result["run_id"], result.get("pipeline") or "", result["status"],
               result.get("finished"), {str(k): int(v) for k, v in counts.items()}, result.get("started"))


def link_repair(index: RunsIndex, original: str, repair: str, again: bool = False) -> str | None:
    """Make `original` point to its `repair` (before the repair starts); returns the repair it
    pointed to before. RunExists names the run that repaired it already, unless `again`; a link to
    a repair that never started (its claim was released) does not count."""
    before: list[str | None] = []

    def edit(row: RunRow) -> RunRow | None:
        if row.repaired_by and not again and index.get(row.repaired_by) is not None:
            raise RunExists(row, f"run {original} was already repaired by {row.repaired_by} (see `tower status "
                                 f"{row.repaired_by}`; `--again` repairs {original} once more)")
        before[:] = [row.repaired_by]
        return replace(row, repaired_by=repair)

    if change(index, original, edit) is None:
        raise RunExists(None, f"run {original} is not in the runs index")
    return before[0] if before else None


def unlink_repair(index: RunsIndex, original: str, repair: str, previous: str | None) -> None:
    """Undo `link_repair` when the repair could not start."""
    change(index, original, lambda row: replace(row, repaired_by=previous) if row.repaired_by == repair else None)


def parse_since(text: str, now: datetime | None = None) -> datetime:
    """`since` as people write it: an ISO time (``2026-12-01``, ``2026-12-01T06:00Z``) or an age
    (``7d``, ``12h``: that long ago). UsageError otherwise."""
    from tower.catalog.durations import HELP, parse_duration
    from tower.errors import UsageError

    try:
        when = parse_iso(text.strip())
    except ValueError:
        try:
            return (now or datetime.now(timezone.utc)) - timedelta(seconds=parse_duration(text))
        except ValueError:
            raise UsageError(f"since: expected an ISO time (2026-12-01T06:00Z) or an age ({HELP}), "
                             f"got {text!r}") from None
    return when if when.tzinfo else when.replace(tzinfo=timezone.utc)


def list_query(params: dict[str, str]) -> dict[str, Any]:
    """The keyword arguments of `RunsIndex.list` from query parameters (the API's); UsageError names
    the bad one. Unknown parameters are refused, so a misspelt filter is not silently ignored."""
    import re

    from tower.errors import UsageError

    known = ("pipeline", "status", "since", "limit", "continuation")
    unknown = sorted(set(params) - set(known) - {"code"})  # `code`: the function key, as Azure takes it
    if unknown:
        raise UsageError(f"unknown query parameter {unknown[0]!r} (known: {', '.join(known)})")
    statuses = tuple(RunState)
    if params.get("status") and params["status"] not in statuses:
        raise UsageError(f"status: {params['status']!r} is not a run status (one of {', '.join(statuses)})")
    query: dict[str, Any] = {"pipeline": params.get("pipeline") or None, "status": params.get("status") or None}
    if params.get("since"):
        query["since"] = parse_since(params["since"])
    text = params.get("limit") or str(DEFAULT_LIMIT)
    if not text.isdigit() or not 1 <= int(text) <= MAX_LIMIT:
        raise UsageError(f"limit: expected a whole number from 1 to {MAX_LIMIT}, got {text!r}")
    query["limit"] = int(text)
    continuation = params.get("continuation") or None
    if continuation is not None and not re.fullmatch(r"\d{13}~.+", continuation):
        raise UsageError(f"continuation: {continuation!r} is not a token this API returned")
    query["continuation"] = continuation
    return query


# --- SQLite --------------------------------------------------------------------------------------

_COLUMNS = [f.name for f in fields(RunRow) if f.name != "tag"]


class SqliteRunsIndex(SqliteStore):
    """The local index: one SQLite file (WAL); `version` is the row's tag."""

    SCHEMA = (
        "CREATE TABLE IF NOT EXISTS runs (run_id TEXT PRIMARY KEY, pipeline TEXT NOT NULL,"
        " trigger TEXT NOT NULL, params_digest TEXT NOT NULL, status TEXT NOT NULL,"
        " started TEXT NOT NULL, finished TEXT, counts TEXT NOT NULL, repair_of TEXT,"
        " repaired_by TEXT, purged INTEGER NOT NULL, listing_key TEXT NOT NULL, version INTEGER NOT NULL)",
        "CREATE INDEX IF NOT EXISTS runs_newest_first ON runs (listing_key)",
    )

    @staticmethod
    def _values(row: RunRow) -> list:
        values = asdict(row)
        return [json.dumps(values[c]) if c == "counts" else values[c] for c in _COLUMNS] + [row.listing_key]

    @staticmethod
    def _row(values) -> RunRow:
        data = dict(zip([*_COLUMNS, "version"], values, strict=True))
        data["counts"], data["purged"] = json.loads(data["counts"]), bool(data["purged"])
        return RunRow(**{k: v for k, v in data.items() if k != "version"}, tag=data["version"])

    def get(self, run_id):
        found = self._connect().execute(f"SELECT {', '.join(_COLUMNS)}, version FROM runs WHERE run_id = ?",
                                        (run_id,)).fetchone()
        return self._row(found) if found else None

    def insert(self, row):
        with self._connect() as db:
            inserted = db.execute(f"INSERT OR IGNORE INTO runs ({', '.join(_COLUMNS)}, listing_key, version)"
                                  f" VALUES ({', '.join('?' * (len(_COLUMNS) + 1))}, 1)", self._values(row)).rowcount
        return None if inserted else self.get(row.run_id)

    def replace(self, old, new):
        assignments = ", ".join(f"{c} = ?" for c in [*_COLUMNS, "listing_key"])
        with self._connect() as db:
            return bool(db.execute(f"UPDATE runs SET {assignments}, version = version + 1"
                                   " WHERE run_id = ? AND version = ?",
                                   [*self._values(new), old.run_id, old.tag]).rowcount)

    def delete(self, row):
        with self._connect() as db:
            return bool(db.execute("DELETE FROM runs WHERE run_id = ? AND version = ?", (row.run_id, row.tag)).rowcount)

    def list(self, *, pipeline=None, status=None, since=None, limit=DEFAULT_LIMIT, continuation=None):
        where, args = ["listing_key > ?"], [continuation or ""]
        if since is not None:
            where.append("listing_key < ?")
            args.append(_since_key(since))
        for column, value in (("pipeline", pipeline), ("status", status)):
            if value:
                where.append(f"{column} = ?")
                args.append(value)
        found = self._connect().execute(
            f"SELECT {', '.join(_COLUMNS)}, version FROM runs WHERE {' AND '.join(where)}"
            " ORDER BY listing_key LIMIT ?", (*args, limit + 1)).fetchall()
        rows = [self._row(values) for values in found[:limit]]
        return rows, (rows[-1].listing_key if len(found) > limit else None)

    def delete_before(self, cutoff):
        with self._connect() as db:
            return db.execute("DELETE FROM runs WHERE listing_key > ? AND status NOT IN (?, ?)",
                              (_since_key(cutoff), *UNFINISHED)).rowcount


def _since_key(since: datetime) -> str:
    """Listing keys of runs started at `since` or later sort before this one."""
    return f"{10**13 - int(since.timestamp() * 1000):013d}~\uffff"  # after any run id (UTF-16 order, as Azure compares)


# --- Azure Table Storage -------------------------------------------------------------------------

ID_ROW = "run"
MONTH_PREFIX = "~m"  # never the start of a key-safe run id ("~" is followed by two hex digits there)


def month_partition(when: datetime) -> str:
    return f"{MONTH_PREFIX}{when.astimezone(timezone.utc):%Y-%m}"


class TableRunsIndex:
    """Azure Table Storage. Two entities per run, both holding the whole row:

        PartitionKey = the key-safe run id, RowKey "run"       the claim: a conditional insert on the id
        PartitionKey = "~m<yyyy-mm>" (start month, UTC),
        RowKey = listing key (inverted start time, run id)     the listing copy

    so "start once" is an insert that fails with 409 on a used id, and listing newest first is a
    keyed range read of the current month's partition, then the one before (a month, not a day: a
    quiet app's listing needs a few queries, not one per empty day; writes go to the current
    partition either way). The id entity is the truth; its listing copy is written after it (an
    upsert, so a copy lost to a crash comes back with the next change of the run). Filters on
    pipeline and status are applied by the server within the month's range."""

    def __init__(self, table_url: str, credential: Any = None):
        self._table = Table(table_url, credential)
        self.location = table_url

    @property
    def table(self):
        return self._table.ready()

    @staticmethod
    def _entity(row: RunRow, partition: str, row_key: str) -> dict:
        entity = {k: v for k, v in row.to_json().items() if v is not None}
        entity["counts"] = json.dumps(row.counts)
        return {**entity, "PartitionKey": partition, "RowKey": row_key}

    @staticmethod
    def _row(entity) -> RunRow:
        data = {name: entity.get(name) for name in _COLUMNS}
        data["counts"], data["purged"] = json.loads(data["counts"] or "{}"), bool(data["purged"])
        return RunRow(**data, tag=entity.metadata.get("etag"))

    def _id_entity(self, row: RunRow) -> dict:
        from tower.runs.ledger_table import partition_key

        return self._entity(row, partition_key(row.run_id), ID_ROW)

    def _copy(self, row: RunRow) -> None:
        self.table.upsert_entity(self._entity(row, month_partition(parse_iso(row.started)), row.listing_key),
                                 mode=_mode("REPLACE"))

    def get(self, run_id):
        from azure.core.exceptions import ResourceNotFoundError

        from tower.runs.ledger_table import partition_key

        try:
            return self._row(self.table.get_entity(partition_key(run_id), ID_ROW))
        except ResourceNotFoundError:
            return None

    def insert(self, row):
        from azure.core.exceptions import ResourceExistsError

        try:
            self.table.create_entity(self._id_entity(row))
        except ResourceExistsError:
            existing = self.get(row.run_id)
            return existing if existing is not None else self.insert(row)
        self._copy(row)
        return None

    def replace(self, old, new):
        from azure.core import MatchConditions
        from azure.core.exceptions import HttpResponseError

        try:
            self.table.update_entity(self._id_entity(new), mode=_mode("REPLACE"), etag=old.tag,
                                     match_condition=MatchConditions.IfNotModified)
        except HttpResponseError as exc:
            if exc.status_code in (404, 412):
                return False
            raise
        if old.listing_key != new.listing_key:
            self._delete_copy(old)
        self._copy(new)
        return True

    def delete(self, row):
        from azure.core import MatchConditions
        from azure.core.exceptions import HttpResponseError

        try:
            self.table.delete_entity(self._id_entity(row)["PartitionKey"], ID_ROW, etag=row.tag,
                                     match_condition=MatchConditions.IfNotModified)
        except HttpResponseError as exc:
            if exc.status_code in (404, 412):
                return False
            raise
        self._delete_copy(row)
        return True

    def _delete_copy(self, row: RunRow) -> None:
        self.table.delete_entity(month_partition(parse_iso(row.started)), row.listing_key)  # absent: no error

    def list(self, *, pipeline=None, status=None, since=None, limit=DEFAULT_LIMIT, continuation=None):
        now = datetime.now(timezone.utc)
        month = _month_of_key(continuation) if continuation else now
        floor = since or now - timedelta(days=tombstone_days())  # older rows are purged
        rows: list[RunRow] = []
        extra, args = "", {"after": continuation or "", "until": _since_key(floor)}
        for name, value in (("pipeline", pipeline), ("status", status)):
            if value:
                extra += f" and {name} eq @{name}"
                args[name] = value
        while len(rows) <= limit and _month_start(month) >= _month_start(floor):
            args["pk"] = month_partition(month)
            query = "PartitionKey eq @pk and RowKey gt @after and RowKey lt @until" + extra
            for entity in self.table.query_entities(query, parameters=args, results_per_page=min(limit + 1, 1000)):
                rows.append(self._row(entity))
                if len(rows) > limit:
                    break
            month = _month_start(month) - timedelta(seconds=1)
        page = rows[:limit]
        return page, (page[-1].listing_key if len(rows) > limit else None)

    def delete_before(self, cutoff):
        """Walks back month partitions from the cutoff's (three years at most: the daily purge leaves
        only a day's worth behind each time); the claim decides, its copy may be a change behind."""
        deleted, month = 0, cutoff
        while month > cutoff - timedelta(days=3 * 366):
            old = self.table.query_entities("PartitionKey eq @pk and RowKey gt @key", select=["run_id", "RowKey"],
                                            parameters={"pk": month_partition(month), "key": _since_key(cutoff)})
            for entity in old:
                current = self.get(entity["run_id"])
                if current is None:
                    self.table.delete_entity(month_partition(month), entity["RowKey"])
                elif current.status not in UNFINISHED:
                    deleted += self.delete(current)
            month = _month_start(month) - timedelta(seconds=1)
        return deleted


def _mode(name: str):
    from azure.data.tables import UpdateMode

    return getattr(UpdateMode, name)


def _month_start(when: datetime) -> datetime:
    return when.astimezone(timezone.utc).replace(day=1, hour=0, minute=0, second=0, microsecond=0)


def _month_of_key(listing_key: str) -> datetime:
    millis = 10**13 - int(listing_key.split("~", 1)[0])
    return datetime.fromtimestamp(millis / 1000, tz=timezone.utc)


# --- retention -----------------------------------------------------------------------------------

DEFAULT_RETENTION_DAYS = 30
# A start of a purged run's id can still arrive this long after the run: a Service Bus message
# lives at most its queue's defaultMessageTimeToLive (deploy it at P14D or less), and a publisher's
# resend is caught by duplicate detection for 7 days at most. A schedule's catch-up covers only
# times after the previous tick, never a run that ran. So an index row outlives its run's details
# by this much.
TOMBSTONE_EXTRA_DAYS = 14


def retention_days() -> int:
    """TOWER_RETENTION_DAYS (default 30): how long runs' details (Durable instances, ledger, history) stay."""
    import os

    from tower.errors import ConfigError

    text = os.environ.get("TOWER_RETENTION_DAYS") or str(DEFAULT_RETENTION_DAYS)
    try:
        days = int(text)
    except ValueError:
        days = 0
    if days < 1:
        raise ConfigError(f"TOWER_RETENTION_DAYS: expected a whole number of days >= 1, got {text!r}")
    return days


def tombstone_days(retention: int | None = None) -> int:
    """How long the index keeps a run's row: its details' retention plus the redelivery window."""
    return (retention or retention_days()) + TOMBSTONE_EXTRA_DAYS


# A claim older than this whose run has no instance is a start that never happened (its starter
# died between the claim and the start, and nothing retried): the purge frees its id.
STALE_CLAIM = timedelta(hours=1)


class DurableSide(Protocol):
    """What the purge needs of the Durable backend (the app's client in Azure, the local store here)."""

    async def runtime(self, instance_id: str) -> str | None:
        """The instance's runtime status ("Running", "Completed"...), None if there is no instance."""

    async def purge(self, created_before: datetime) -> int:
        """Delete the finished (Completed, Failed, Terminated) instances created before this time."""


async def purge(index: RunsIndex, ledger, history, durable: DurableSide, now: datetime, retention: int,
                to_thread=None, push=None) -> dict[str, int]:
    """Delete what runs leave behind once they are `retention` days old; returns what it deleted.

    1. Runs the index still has starting or running are settled first: an orchestration that ended
       without `run_result` (failed or terminated), or that Durable no longer has (a new task hub),
       gets its end; a claim whose start never happened is freed. Those left really run.
    2. Durable instances (pipeline and service runs) that are finished and were created before the
       cutoff and before the oldest running run started: so no service run of a running run goes
       (its ledger record may still need it, activities.runs.act's `ensure`).
    3. Ledger and history rows of runs that started before the cutoff.
    4. Index rows `TOMBSTONE_EXTRA_DAYS` older still: until then a late start of a purged run's id
       (a redelivered message, a catch-up) finds its row and starts nothing.
    5. With `push` (tower.push's keys), the keys written before the cutoff.
    """
    import asyncio

    to_thread = to_thread or asyncio.to_thread
    cutoff = now - timedelta(days=retention)
    floor, settled = cutoff, 0
    for row in await to_thread(lambda: list(unfinished(index))):
        runtime = await durable.runtime(row.run_id)
        if runtime in ENDED_RUNTIMES:
            await to_thread(record_end, index, row.run_id, row.pipeline, run_state_of_ended(runtime), iso(now),
                            row.counts)
            settled += 1
        elif runtime is None and row.status == RunState.STARTING and parse_iso(row.started) < now - STALE_CLAIM:
            await to_thread(release, index, row)
            settled += 1
        elif runtime is None and parse_iso(row.started) < now - STALE_CLAIM:  # e.g. a new task hub
            log.warning("run %s: the index has it running but Durable has no such instance: recorded as failed",
                        row.run_id)
            await to_thread(record_end, index, row.run_id, row.pipeline, RunState.FAILED, iso(now), row.counts)
            settled += 1
        else:
            floor = min(floor, parse_iso(row.started))
    instances = await durable.purge(floor)
    old = await to_thread(lambda: [row.run_id for row in _started_before(index, cutoff)
                                   if not row.purged and row.status not in UNFINISHED])
    runs = await to_thread(ledger.delete_runs, old)
    for run_id in old:
        await to_thread(change, index, run_id, lambda row: replace(row, purged=True))
    attempts = await to_thread(history.delete_before, cutoff)
    rows = await to_thread(index.delete_before, now - timedelta(days=retention + TOMBSTONE_EXTRA_DAYS))
    report = {"settled": settled, "instances": instances, "ledger_runs": runs, "history_rows": attempts,
              "index_rows": rows}
    if push is not None:
        report["push_keys"] = await to_thread(push.delete_before, cutoff)
    log.info("purge of what is older than %s (%d days): %s", iso(cutoff), retention, report)
    return report


def _started_before(index: RunsIndex, cutoff: datetime) -> Iterable[RunRow]:
    """The runs the index has that started before `cutoff`, newest first (tombstones included)."""
    continuation = _since_key(cutoff)
    while continuation is not None:
        rows, continuation = index.list(limit=MAX_LIMIT, continuation=continuation)
        yield from rows


def index_from_environment(home: str | Path | None = None) -> RunsIndex:
    """A new index: TOWER_RUNS_TABLE_URL set -> Azure Table Storage; else SQLite in `home` (default
    $TOWER_HOME) (required in Azure: `tower.stores.location`). A process keeps one
    (`tower.runtime.Runtime.runs_index`)."""
    kind, where = location("TOWER_RUNS_TABLE_URL", "runs.db", home)
    return TableRunsIndex(where) if kind == "table" else SqliteRunsIndex(where)


def unfinished(index: RunsIndex) -> Iterable[RunRow]:
    """Every run the index has starting or running (for the purge)."""
    for status in UNFINISHED:
        continuation = None
        while True:
            rows, continuation = index.list(status=status, limit=MAX_LIMIT, continuation=continuation)
            yield from rows
            if continuation is None:
                break

