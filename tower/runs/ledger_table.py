"""The run ledger in Azure Table Storage: the `RunLedger` Tower uses in Azure (``TOWER_LEDGER_TABLE_URL``).

One partition per run, so every change of a run is an entity group transaction in one partition
(each service entity keeps the version that last wrote it, `written`, so a host whose cached state
is a few versions old reads only what changed):

    PartitionKey  run id, key-safe (Table keys refuse / \\ # ? and control characters)
    RowKey "run"  version, meta (JSON), core (JSON), head (JSON: the rest of the plan), run_id,
                  created, services (count)
    RowKey "svc-000042"  one entity per service, keyed by its position in the core: name, position,
                  input (JSON), record (JSON)

"run" sorts before every "svc-" row, so a partition query reads the run entity first; `load` then
checks the run entity's ETag again, so records read across several pages belong to that version.

The run entity also lists the rows written lately (``recent``: {from, written: {position: version}},
complete for every version from `from` on), so a host a few versions behind reads just those rows
by key: `written` is no key, and a query filtered on it would read the whole partition. Reads
select the properties they use: a load never downloads the services' inputs.

Table Storage limits string properties to 64 KiB and entities to 1 MiB. JSON is therefore stored in
numbered properties (``core_n`` = how many, ``core_0``, ``core_1``...): as text when it fits one
property, else zlib-compressed in binary parts, which keeps the core of a 5,000-service run (about
1 MB of JSON, 2 MB as UTF-16 text) in one entity.
"""

from __future__ import annotations

import json
import threading
import time
import zlib
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from tower import logcontext
from tower.errors import LedgerConflict, RecordTooLarge, RunNotInLedger, ServiceNotInLedger
from tower.runs.ledger import Dispatches, SchedulerCache, Snapshot
from tower.stores import Table

RUN_ROW = "run"
TEXT_PART = 32_000  # characters: a string property holds 32K UTF-16 units, and our JSON is ASCII
BINARY_PART = 64_000  # bytes: a binary property holds 64 KiB
MAX_ENTITY = 1024 * 1024  # bytes, as Table Storage counts them
MAX_BATCH_OPERATIONS = 100
MAX_BATCH_SIZE = 2_500_000  # `stored_size` per transaction; its JSON request (4 MiB at most) is no bigger
READ_ATTEMPTS = 5
CACHED_ETAGS = 256  # runs whose last ETag and row keys this object keeps
RECENT_ROWS = 1000  # rows the run entity lists as written lately (about 12 KB of JSON at most)
INPUT_READS = 8  # point reads of service inputs at once (the requests transport pools 10 per host)


def partition_key(run_id: str) -> str:
    """The run id with what Table keys refuse (and ``%``, and the escape ``~`` itself) written ``~XX``:
    readable for ordinary ids, and two run ids never share a partition."""
    return "".join(f"~{ord(ch):02X}" if ch in "/\\#?%~" or ord(ch) < 0x20 or 0x7F <= ord(ch) <= 0x9F else ch
                   for ch in run_id)


def service_row(position: int) -> str:
    return f"svc-{position:06d}"


def pack(prefix: str, value: Any) -> dict[str, Any]:
    """`value` as JSON in properties ``{prefix}_n``, ``{prefix}_0``...: text when it fits one property,
    else compressed binary parts."""
    text = json.dumps(value, separators=(",", ":"))  # ASCII: one UTF-16 unit per character
    if len(text) <= TEXT_PART:
        parts: list[str] | list[bytes] = [text]
    else:
        data = zlib.compress(text.encode())
        parts = [data[i:i + BINARY_PART] for i in range(0, len(data), BINARY_PART)]
    return {f"{prefix}_n": len(parts), **{f"{prefix}_{i}": part for i, part in enumerate(parts)}}


def unpack(entity: Mapping[str, Any], prefix: str) -> Any:
    """The value `pack` stored (parts beyond ``{prefix}_n``, left by a longer earlier value, are ignored)."""
    parts = [entity[f"{prefix}_{i}"] for i in range(int(entity[f"{prefix}_n"]))]
    if isinstance(parts[0], bytes):
        return json.loads(zlib.decompress(b"".join(parts)))
    return json.loads("".join(parts))


def packed_properties(*prefixes: str) -> list[str]:
    """Every property `pack` may write for these prefixes: the names a `select` lists to read them."""
    most = MAX_ENTITY // BINARY_PART + 1
    return [name for prefix in prefixes for name in (f"{prefix}_n", *(f"{prefix}_{i}" for i in range(most)))]


RUN_PROPERTIES = ["version", "meta", *packed_properties("core", "recent")]
RECORD_PROPERTIES = ["name", *packed_properties("record")]
INPUT_PROPERTIES = packed_properties("input")
RECENT_PROPERTIES = ["version", *packed_properties("recent")]
_UNKNOWN = object()  # a run's recent rows not read with its ETag


def recent_of(entity: Mapping[str, Any]) -> dict | None:
    """The run entity's list of rows written lately (None: a run stored before it kept one)."""
    if entity.get("recent_n") is None:
        return None
    recent = unpack(entity, "recent")
    return {"from": recent["from"], "written": {int(k): v for k, v in recent["written"].items()}}


def recent_after(recent: dict | None, version: int, positions: Sequence[int]) -> dict:
    """The list after a save that writes the rows at `positions` at `version`. Beyond `RECENT_ROWS`
    rows the oldest versions are dropped (then it is complete from the version after them)."""
    start, written = (recent["from"], dict(recent["written"])) if recent else (version, {})
    written.update(dict.fromkeys(positions, version))
    if len(written) > RECENT_ROWS:
        for oldest in sorted(set(written.values())):
            written = {p: v for p, v in written.items() if v != oldest}
            start = oldest + 1
            if len(written) <= RECENT_ROWS:
                break
    return {"from": start, "written": written}


def stored_size(entity: Mapping[str, Any]) -> int:
    """An entity's size against the 1 MiB limit: text as UTF-16 (as Azure counts it), binary as its
    base64 text (as Azurite counts it, from the request body), so what passes here fits both."""
    size = 4
    for key, value in entity.items():
        if key in ("PartitionKey", "RowKey"):
            size += _utf16(value)
        elif isinstance(value, str):
            size += 8 + _utf16(key) + 4 + _utf16(value)
        elif isinstance(value, bytes):
            size += 8 + _utf16(key) + 4 + (len(value) + 2) // 3 * 4
        else:
            size += 8 + _utf16(key) + 8
    return size


def _utf16(text: str) -> int:
    return len(text.encode("utf-16-le"))


def batches(operations: list[tuple]) -> list[list[tuple]]:
    """The operations, in order, cut into transactions Table Storage accepts (100 operations, 4 MiB)."""
    cut: list[list[tuple]] = []
    size = 0
    for operation in operations:
        entity_size = stored_size(operation[1])
        if not cut or len(cut[-1]) == MAX_BATCH_OPERATIONS or size + entity_size > MAX_BATCH_SIZE:
            cut.append([])
            size = 0
        cut[-1].append(operation)
        size += entity_size
    return cut


def _refused(error: Exception, status: int, code: str) -> bool:
    """Whether Table Storage refused the request for this reason: the HTTP status and the error code
    both, as Azure and Azurite send them (an insert in a transaction: a TableTransactionError, 409 and
    ``EntityAlreadyExists``; a stale ETag, in a transaction or not: 412 and ``UpdateConditionNotSatisfied``,
    a plain string from a transaction, a ``TableErrorCode`` (a str) from ``update_entity``; see
    azure-data-tables ``_base_client._batch_send`` and ``_error._decode_error``). Another 409 (the table
    being deleted, say) does not mean the entity is there."""
    return getattr(error, "status_code", None) == status and getattr(error, "error_code", None) == code


class TableRunLedger:
    """Azure Table Storage, reached with the app's identity (tower.identity) unless given another credential (tests
    pass Azurite's account key). The table is created on first use.

    Concurrency: `save` is conditional on the run entity's ETag at the version it was given (the ETag
    this object's last `create`, `save`, `version` or `load` saw, else read again). Only the first
    transaction of a save -- the version bump and up to 99 records -- is atomic; records beyond those
    follow in further transactions after it, so a host dying in between leaves a version whose later
    records are missing that change. Changes of more than 99 records are rare (a cancel, a failure cascade).

    `create` writes the run entity in the first transaction; a run too big for one transaction is
    written at version 0 ("being created", invisible to `version` and `load`) and raised to version 1
    once every service is stored, so a create that died half way is finished by the next one.
    Creates only insert, so a conflict tells a create that another got there first."""

    def __init__(self, table_url: str, credential: Any = None, *, dispatches: Dispatches | None = None):
        self._table = Table(table_url, credential)
        self.location = table_url
        self.dispatches = dispatches or Dispatches()
        self._lock = threading.Lock()
        self._etags: OrderedDict[str, tuple[int, str, Any]] = OrderedDict()  # run id -> (version, ETag, recent)
        self._rows: OrderedDict[str, dict[str, str]] = OrderedDict()  # run id -> {service: RowKey}
        self.schedulers = SchedulerCache()
        # Point reads of service inputs run on these threads, several at once; they wait on nothing
        # else. The pool is this object's, as its table client is: its threads start on first use.
        self._reads = ThreadPoolExecutor(max_workers=INPUT_READS, thread_name_prefix="tower-ledger-read")

    @property
    def table(self):
        return self._table.ready()

    # --- small caches ---------------------------------------------------------------------------

    def _keep(self, cache: OrderedDict, run_id: str, value: Any) -> None:
        with self._lock:
            cache[run_id] = value
            cache.move_to_end(run_id)
            while len(cache) > CACHED_ETAGS:
                cache.popitem(last=False)

    def _remember_etag(self, run_id: str, version: int, etag: str | None, recent: Any = _UNKNOWN) -> None:
        if etag:
            cached = self._etags.get(run_id)
            if recent is _UNKNOWN and cached is not None and cached[:2] == (version, etag):
                recent = cached[2]
            self._keep(self._etags, run_id, (version, etag, recent))
        else:
            self._forget_etag(run_id)

    def _forget_etag(self, run_id: str) -> None:
        with self._lock:
            self._etags.pop(run_id, None)

    def _remember_rows(self, run_id: str, core: Mapping[str, Any]) -> dict[str, str]:
        rows = {name: service_row(i) for i, name in enumerate(core["services"])}
        self._keep(self._rows, run_id, rows)
        return rows

    def _run_entity(self, run_id: str, select: list[str] | None = None):
        """The run entity (None if there is none), its ETag remembered for `save`."""
        from azure.core.exceptions import ResourceNotFoundError

        try:
            entity = self.table.get_entity(partition_key(run_id), RUN_ROW, select=select)
        except ResourceNotFoundError:
            return None
        recent = recent_of(entity) if select is None or "recent_n" in select else _UNKNOWN
        self._remember_etag(run_id, int(entity["version"]), entity.metadata.get("etag"), recent)
        return entity

    def _service_rows(self, run_id: str) -> dict[str, str]:
        rows = self._rows.get(run_id)
        if rows is None:
            entity = self._run_entity(run_id, select=RUN_PROPERTIES)
            if entity is None or int(entity["version"]) < 1:
                raise RunNotInLedger(f"run {run_id!r} is not in the run ledger ({self.table.table_name})")
            rows = self._remember_rows(run_id, unpack(entity, "core"))
        return rows

    # --- RunLedger ------------------------------------------------------------------------------

    def create(self, run_id: str, core: dict, meta: dict, inputs: Mapping[str, dict],
               records: Mapping[str, dict], head: dict | None = None) -> bool:
        from azure.core.exceptions import HttpResponseError

        existing = self._run_entity(run_id, select=["version"])
        if existing is not None and int(existing["version"]) >= 1:
            return False
        pk = partition_key(run_id)
        recent = {"from": 2, "written": {}}  # every row is written at version 1
        run = {"PartitionKey": pk, "RowKey": RUN_ROW, "run_id": run_id, "version": 1, "meta": json.dumps(meta),
               "created": time.time(), "services": len(core["services"]), **pack("core", core),
               **pack("recent", recent), **pack("head", head or {})}
        services = [{"PartitionKey": pk, "RowKey": service_row(i), "name": name, "position": i, "written": 1,
                     **pack("input", inputs[name]), **pack("record", records[name])}
                    for i, name in enumerate(core["services"])]
        self._check_size(run_id, run, "the core and head of the plan")
        for entity in services:
            self._check_size(run_id, entity, f"service {entity['name']!r} (input and record)")
        if existing is not None:  # version 0: a create died (or is) half way; store what is missing
            return self._finish_half_created(run_id, core, meta, services, existing.metadata["etag"])
        # Entities are only ever inserted, never replaced: a conflict means another create got there
        # first, and nothing a create writes can overwrite a later save.
        first, *rest = batches([("create", run), *(("create", entity) for entity in services)])
        if rest:
            run["version"] = 0  # readers see the run only once every service is stored
        try:
            replies = self.table.submit_transaction(first)
            for batch in rest:
                self.table.submit_transaction(batch)
        except HttpResponseError as error:
            if _refused(error, 409, "EntityAlreadyExists"):
                return False  # the run exists, or another create is finishing it
            raise
        if not rest:
            self._remember_etag(run_id, 1, replies[0].get("etag"), recent)
            self._remember_rows(run_id, core)
            return True
        return self._finish_create(run_id, core, meta, replies[0].get("etag"), recent)

    def _finish_half_created(self, run_id: str, core: dict, meta: dict, services: list[dict], etag: str) -> bool:
        """Insert the services a half-done create left out, then raise the run to version 1."""
        from azure.core.exceptions import HttpResponseError

        for _ in range(READ_ATTEMPTS):
            stored = {entity["RowKey"] for entity in self.table.query_entities(
                "PartitionKey eq @pk", parameters={"pk": partition_key(run_id)}, select=["RowKey"])}
            missing = [("create", entity) for entity in services if entity["RowKey"] not in stored]
            try:
                for batch in batches(missing):
                    self.table.submit_transaction(batch)
            except HttpResponseError as error:
                if _refused(error, 409, "EntityAlreadyExists"):
                    continue  # the first create is still writing: look again
                raise
            return self._finish_create(run_id, core, meta, etag)
        return False

    def _finish_create(self, run_id: str, core: dict, meta: dict, etag: str | None, recent: Any = _UNKNOWN) -> bool:
        """Raise a run being created to version 1, unless someone else changed it since `etag`
        (`recent`: the run entity's list of recent rows, when this create wrote it)."""
        from azure.core import MatchConditions
        from azure.core.exceptions import HttpResponseError
        from azure.data.tables import UpdateMode

        if etag is None:
            return False
        try:
            reply = self.table.update_entity(
                {"PartitionKey": partition_key(run_id), "RowKey": RUN_ROW, "version": 1, "meta": json.dumps(meta)},
                mode=UpdateMode.MERGE, etag=etag, match_condition=MatchConditions.IfNotModified)
        except HttpResponseError as error:
            if _refused(error, 412, "UpdateConditionNotSatisfied"):
                return False
            raise
        self._remember_etag(run_id, 1, reply.get("etag"), recent)
        self._remember_rows(run_id, core)
        return True

    def version(self, run_id: str) -> int | None:
        entity = self._run_entity(run_id, select=["version"])
        if entity is None or int(entity["version"]) < 1:
            return None
        return int(entity["version"])

    def meta(self, run_id: str) -> dict | None:
        entity = self._run_entity(run_id, select=["version", "meta"])
        if entity is None or int(entity["version"]) < 1:
            return None
        return json.loads(entity["meta"])

    def load(self, run_id: str, since: int | None = None) -> Snapshot | None:
        """The run; with `since`, only the service entities written at that version or later (read by
        key when the run entity lists them, see the module docstring). The run entity's ETag is read
        again at the end, so records read across pages belong to the version."""
        pk = partition_key(run_id)
        for _ in range(READ_ATTEMPTS):
            if since is None:
                run, services = None, []
                for entity in self.table.query_entities("PartitionKey eq @pk", parameters={"pk": pk},
                                                        select=["RowKey", *RUN_PROPERTIES, *RECORD_PROPERTIES]):
                    if entity["RowKey"] == RUN_ROW:
                        run = entity
                    else:
                        services.append(entity)
            else:
                run = self._run_entity(run_id, select=["meta", *RECENT_PROPERTIES])
                services = [] if run is None else self._written_since(run_id, recent_of(run), since)
            if run is None or int(run["version"]) < 1:
                return None
            seen = run.metadata.get("etag")
            again = self._run_entity(run_id, select=["version"])  # nobody saved while we read the pages
            if again is None or again.metadata.get("etag") != seen:
                continue
            core = None
            if since is None:
                core = unpack(run, "core")
                self._remember_rows(run_id, core)
            records = {entity["name"]: unpack(entity, "record") for entity in services}
            return Snapshot(int(run["version"]), core, json.loads(run["meta"]), records)
        raise LedgerConflict(f"run {run_id!r}: the run ledger kept changing while it was read "
                             f"({READ_ATTEMPTS} tries); retry the request")

    def _written_since(self, run_id: str, recent: dict | None, since: int) -> list:
        """The service entities written at `since` or later: point reads of the rows the run entity
        lists, several at once; a partition query when its list does not reach back that far."""
        pk = partition_key(run_id)
        if recent is None or since < recent["from"]:
            return list(self.table.query_entities("PartitionKey eq @pk and written ge @since",
                                                  parameters={"pk": pk, "since": since}, select=RECORD_PROPERTIES))
        rows = [service_row(p) for p, version in sorted(recent["written"].items()) if version >= since]
        return list(self._reads.map(logcontext.carried(
            lambda row: self.table.get_entity(pk, row, select=RECORD_PROPERTIES)), rows))

    def save(self, run_id: str, version: int, meta: dict, records: Mapping[str, dict]) -> bool:
        """See the class docstring: only the first transaction is atomic with the version bump."""
        from azure.core import MatchConditions
        from azure.core.exceptions import HttpResponseError
        from azure.data.tables import UpdateMode

        cached = self._etags.get(run_id)
        if cached is None or cached[0] != version or cached[2] is _UNKNOWN:
            self._run_entity(run_id, select=RECENT_PROPERTIES)
            cached = self._etags.get(run_id)
            if cached is None or cached[0] != version:
                return False
        _, etag, recent = cached
        rows = self._service_rows(run_id)
        unknown = sorted(set(records) - set(rows))
        if unknown:
            raise ServiceNotInLedger(
                f"run {run_id!r} has no service {unknown[0]!r} in the run ledger (save refused)")
        pk = partition_key(run_id)
        recent = recent_after(recent, version + 1, [int(rows[name][len("svc-"):]) for name in records])
        bump = {"PartitionKey": pk, "RowKey": RUN_ROW, "version": version + 1, "meta": json.dumps(meta),
                **pack("recent", recent)}
        updates = []
        for name, record in records.items():
            entity = {"PartitionKey": pk, "RowKey": rows[name], "written": version + 1, **pack("record", record)}
            self._check_size(run_id, entity, f"service {name!r} (record)")
            updates.append(("update", entity, {"mode": UpdateMode.MERGE}))
        first, *rest = batches([
            ("update", bump, {"mode": UpdateMode.MERGE, "etag": etag, "match_condition": MatchConditions.IfNotModified}),
            *updates])
        try:
            replies = self.table.submit_transaction(first)
        except HttpResponseError as error:
            if _refused(error, 412, "UpdateConditionNotSatisfied"):
                self._forget_etag(run_id)
                return False
            raise
        self._remember_etag(run_id, version + 1, replies[0].get("etag"), recent)
        for batch in rest:
            self.table.submit_transaction(batch)
        return True

    def service_inputs(self, run_id: str, names: Sequence[str]) -> dict[str, dict]:
        """Point reads, several at once (a filter on many row keys would scan the run's partition)."""
        from azure.core.exceptions import ResourceNotFoundError

        rows = self._service_rows(run_id)
        unknown = [name for name in names if name not in rows]
        if unknown:
            raise ServiceNotInLedger(f"run {run_id!r} has no service {unknown[0]!r} in the run ledger")
        pk = partition_key(run_id)

        def read(name: str) -> tuple[str, dict]:
            try:
                return name, unpack(self.table.get_entity(pk, rows[name], select=INPUT_PROPERTIES), "input")
            except ResourceNotFoundError:
                raise ServiceNotInLedger(f"run {run_id!r}: service {name!r} is missing from the run ledger "
                                         f"({self.table.table_name}, row {rows[name]}); start the run again") from None

        return dict(read(name) for name in names) if len(names) == 1 else dict(self._reads.map(logcontext.carried(read), names))

    def slots(self):
        """The shared platform slots, in this table's `~slots` partition (`tower.runs.slots.TableSlots`)."""
        from tower.runs.slots import TableSlots

        return TableSlots(self.table)

    def delete_runs(self, run_ids: Sequence[str]) -> int:
        """Delete these runs' partitions (retention: tower.runs.index.purge): a keyed read of each
        run's row keys, then batches of 100 deletes; returns how many runs were there."""
        deleted = 0
        for run_id in run_ids:
            pk = partition_key(run_id)
            keys = [{"PartitionKey": pk, "RowKey": e["RowKey"]} for e in self.table.query_entities(
                "PartitionKey eq @pk", parameters={"pk": pk}, select=["RowKey"])]
            for at in range(0, len(keys), MAX_BATCH_OPERATIONS):
                self.table.submit_transaction([("delete", key) for key in keys[at:at + MAX_BATCH_OPERATIONS]])
            deleted += bool(keys)
        return deleted

    def stored_plan(self, run_id: str, inputs: bool = True) -> tuple[dict, dict, dict[str, dict]] | None:
        """With `inputs`, one query of the run's partition (rare: `tower repair`); else the run
        entity alone."""
        if inputs:
            run, jobs = None, {}
            for entity in self.table.query_entities("PartitionKey eq @pk", parameters={"pk": partition_key(run_id)}):
                if entity["RowKey"] == RUN_ROW:
                    run = entity
                else:
                    jobs[entity["name"]] = unpack(entity, "input")
        else:
            run, jobs = self._run_entity(run_id), {}
        if run is None or int(run["version"]) < 1:
            return None
        return unpack(run, "core"), unpack(run, "head") if "head_n" in run else {}, jobs

    def _check_size(self, run_id: str, entity: Mapping[str, Any], what: str) -> None:
        size = stored_size(entity)
        if size > MAX_ENTITY:
            raise RecordTooLarge(f"run {run_id!r}, {what}: {size:,} bytes in Table Storage, over the 1 MiB one "
                                 "entity may hold; keep large data elsewhere and pass a reference to it")
