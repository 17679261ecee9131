"""SQLite persistence for the local engine: instances, histories, the inbox, pending activity work.

Everything that changes an instance goes through the `inbox` table: starts, activity results,
timers (a message with a due time), external events, terminate/suspend/resume, sub-orchestration
results. The engine consumes messages and commits an episode's effects (new history events,
instance row, consumed messages, new work, new messages) in one transaction, so a crash at any
point loses or duplicates nothing. `inbox.seq` is AUTOINCREMENT: ids never go back, and SQLite's
single writer commits them in order, so a reader can poll `seq > high_water_mark` cheaply, even
for messages other processes write (the CLI's `tower cancel`, another engine's client calls).

Engines sharing the file register in `hosts` (heartbeat), one of them holds the `orchestrations`
row of `leases`, and each `work` item records the host that took it (`owner`, NULL while waiting).
"""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tower.errors import EngineError, InstanceNotFound
from tower.local import history as h

SCHEMA = """
CREATE TABLE IF NOT EXISTS instances (
    id TEXT PRIMARY KEY, name TEXT NOT NULL, execution_id TEXT NOT NULL, status TEXT NOT NULL,
    input TEXT, output TEXT, custom_status TEXT, parent TEXT,
    created TEXT NOT NULL, updated TEXT NOT NULL,
    episodes INTEGER NOT NULL DEFAULT 0, handle_cpu REAL NOT NULL DEFAULT 0,
    history_events INTEGER NOT NULL DEFAULT 0);
CREATE INDEX IF NOT EXISTS instances_created ON instances(created);
CREATE TABLE IF NOT EXISTS history (
    instance_id TEXT NOT NULL, seq INTEGER NOT NULL, event TEXT NOT NULL,
    PRIMARY KEY (instance_id, seq)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS inbox (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, instance_id TEXT NOT NULL, execution_id TEXT,
    kind TEXT NOT NULL, body TEXT, due TEXT, task_id INTEGER);
CREATE INDEX IF NOT EXISTS inbox_instance ON inbox(instance_id);
CREATE TABLE IF NOT EXISTS work (
    instance_id TEXT NOT NULL, execution_id TEXT NOT NULL, task_id INTEGER NOT NULL,
    name TEXT NOT NULL, input TEXT, owner TEXT, PRIMARY KEY (instance_id, execution_id, task_id)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS hosts (
    id TEXT PRIMARY KEY, machine TEXT NOT NULL, pid INTEGER NOT NULL, started TEXT NOT NULL,
    command TEXT NOT NULL, heartbeat REAL NOT NULL);
CREATE TABLE IF NOT EXISTS leases (name TEXT PRIMARY KEY, owner TEXT NOT NULL, expires REAL NOT NULL);
"""
# Work items not yet taken by any host (an index over the few that wait, not the many that run).
UNCLAIMED_INDEX = "CREATE INDEX IF NOT EXISTS work_unclaimed ON work(instance_id) WHERE owner IS NULL"

# Inbox message kinds
START, EVENT, TIMER, TERMINATE, SUSPEND, RESUME = "start", "event", "timer", "terminate", "suspend", "resume"


@dataclass(frozen=True)
class Message:
    seq: int
    instance_id: str
    execution_id: str | None
    kind: str
    body: dict
    due: str | None
    task_id: int | None


class Store:
    """One SQLite file, a connection per thread, WAL mode, writes serialised inside the process."""

    def __init__(self, home: str | os.PathLike):
        self.home = Path(home)
        self.home.mkdir(parents=True, exist_ok=True)
        self.path = self.home / "state.db"
        self._local = threading.local()
        self._write_lock = threading.RLock()
        with self._write_lock:
            db = self._db()
            db.executescript(SCHEMA)
            if "owner" not in {r[1] for r in db.execute("PRAGMA table_info(work)")}:   # a home from before
                db.execute("ALTER TABLE work ADD COLUMN owner TEXT")
            db.execute(UNCLAIMED_INDEX)

    def _db(self) -> sqlite3.Connection:
        db = getattr(self._local, "db", None)
        if db is None:
            db = sqlite3.connect(self.path, timeout=30, isolation_level=None, check_same_thread=False)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")     # WAL + NORMAL: safe against a killed process
            db.execute("PRAGMA busy_timeout=30000")
            self._local.db = db
        return db

    @contextmanager
    def tx(self):
        """A short write transaction (BEGIN IMMEDIATE so two writers never deadlock on upgrade)."""
        with self._write_lock:
            db = self._db()
            db.execute("BEGIN IMMEDIATE")
            try:
                yield db
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")

    def read(self) -> sqlite3.Connection:
        return self._db()

    def close(self) -> None:
        db = getattr(self._local, "db", None)
        if db is not None:
            db.close()
            self._local.db = None

    # -- reads
    def instance_row(self, instance_id: str) -> dict | None:
        cur = self.read().execute("SELECT * FROM instances WHERE id = ?", (instance_id,))
        row = cur.fetchone()
        return dict(zip([c[0] for c in cur.description], row, strict=True)) if row else None

    def history(self, instance_id: str) -> list[dict]:
        rows = self.read().execute("SELECT event FROM history WHERE instance_id = ? ORDER BY seq",
                                   (instance_id,))
        return [json.loads(r[0]) for r in rows]

    def messages_after(self, seq: int) -> list[Message]:
        rows = self.read().execute(
            "SELECT seq, instance_id, execution_id, kind, body, due, task_id FROM inbox WHERE seq > ? "
            "ORDER BY seq", (seq,))
        return [Message(r[0], r[1], r[2], r[3], json.loads(r[4]) if r[4] else {}, r[5], r[6]) for r in rows]

    def unclaimed_work(self, limit: int) -> list[tuple[str, str, int, str, str | None]]:
        return list(self.read().execute(
            "SELECT instance_id, execution_id, task_id, name, input FROM work WHERE owner IS NULL "
            "ORDER BY instance_id, task_id LIMIT ?", (limit,)))

    def rows(self, *, runtime_status=None, created_from=None, created_to=None, prefix=None) -> list[dict]:
        where, args = _filters(runtime_status, created_from, created_to)
        if prefix:
            where.append("substr(id, 1, ?) = ?")
            args += [len(prefix), prefix]
        sql = "SELECT * FROM instances" + (" WHERE " + " AND ".join(where) if where else "") + " ORDER BY created"
        cur = self.read().execute(sql, args)
        names = [c[0] for c in cur.description]
        return [dict(zip(names, r, strict=True)) for r in cur]

    def page(self, *, runtime_status=None, created_from=None, created_to=None, prefix=None,
             after: str | None = None, top: int = 100, show_input: bool = True) -> tuple[list[dict], str | None]:
        """One page of an instance query, in instance-id order (the Azure Storage backend reads the
        Instances table, whose PartitionKey is the instance id, and Table Storage returns entities in
        key order): at most `top` rows with ids after `after`, and the last id when more remain."""
        where, args = _filters(runtime_status, created_from, created_to)
        if prefix:   # a key range, as the backend turns the prefix into a PartitionKey range
            where.append("id >= ? AND substr(id, 1, ?) = ?")
            args += [prefix, len(prefix), prefix]
        if after is not None:
            where.append("id > ?")
            args.append(after)
        columns = "*" if show_input else "id, name, status, NULL AS input, output, custom_status, created, updated"
        sql = (f"SELECT {columns} FROM instances" + (" WHERE " + " AND ".join(where) if where else "")
               + " ORDER BY id LIMIT ?")
        cur = self.read().execute(sql, [*args, top + 1])
        names = [c[0] for c in cur.description]
        rows = [dict(zip(names, r, strict=True)) for r in cur]
        more = len(rows) > top
        rows = rows[:top]
        return rows, (rows[-1]["id"] if more else None)

    # -- hosts over one home: heartbeats, the orchestration lease, work-item owners
    def beat(self, host_id: str, command: str, lease: str | None, lease_seconds: float, alive,
             sweep: bool = False) -> bool:
        """Record this host's heartbeat; drop dead hosts (stale heartbeat, or a process of this machine
        that is gone) with their leases, giving their work items back; then renew or take `lease` if
        it is free or expired. True when this host holds `lease` afterwards. `sweep` also frees work
        items of owners that are not registered at all (a home written before hosts were recorded)."""
        now = time.time()
        machine = socket.gethostname()
        with self.tx() as db:
            if not db.execute("UPDATE hosts SET heartbeat=? WHERE id=?", (now, host_id)).rowcount:
                db.execute("INSERT INTO hosts (id, machine, pid, started, command, heartbeat) VALUES (?,?,?,?,?,?)",
                           (host_id, machine, os.getpid(), h.fmt_time(h.utcnow()), command, now))
            dead = [hid for hid, m, pid, beat in db.execute(
                        "SELECT id, machine, pid, heartbeat FROM hosts WHERE id != ?", (host_id,))
                    if beat < now - lease_seconds or (m == machine and not alive(pid))]
            for hid in dead:
                db.execute("DELETE FROM hosts WHERE id=?", (hid,))
                db.execute("DELETE FROM leases WHERE owner=?", (hid,))
                db.execute("UPDATE work SET owner=NULL WHERE owner=?", (hid,))
            if sweep:
                db.execute("UPDATE work SET owner=NULL WHERE owner IS NOT NULL AND owner NOT IN (SELECT id FROM hosts)")
            if lease is None:
                return False
            row = db.execute("SELECT owner, expires FROM leases WHERE name=?", (lease,)).fetchone()
            if row is not None and row[0] != host_id and row[1] >= now:
                return False
            db.execute("INSERT OR REPLACE INTO leases (name, owner, expires) VALUES (?,?,?)",
                       (lease, host_id, now + lease_seconds))
            return True

    def holds(self, db: sqlite3.Connection, lease: str, host_id: str) -> bool:
        row = db.execute("SELECT owner FROM leases WHERE name=?", (lease,)).fetchone()
        return row is not None and row[0] == host_id

    def lease_holder(self, lease: str) -> dict | None:
        cur = self.read().execute("SELECT hosts.* FROM leases JOIN hosts ON hosts.id = leases.owner "
                                  "WHERE leases.name=?", (lease,))
        row = cur.fetchone()
        return dict(zip([c[0] for c in cur.description], row, strict=True)) if row else None

    def claim(self, host_id: str, items: list[tuple]) -> list[tuple]:
        """Take the given work items for `host_id`; those another host took first are left out."""
        with self.tx() as db:
            return [item for item in items if db.execute(
                "UPDATE work SET owner=? WHERE instance_id=? AND execution_id=? AND task_id=? AND owner IS NULL",
                (host_id, *item[:3])).rowcount]

    def leave(self, host_id: str) -> None:
        """A host stops: its lease and its unfinished work items go to the others at once."""
        with self.tx() as db:
            db.execute("DELETE FROM hosts WHERE id=?", (host_id,))
            db.execute("DELETE FROM leases WHERE owner=?", (host_id,))
            db.execute("UPDATE work SET owner=NULL WHERE owner=?", (host_id,))

    # -- writes
    def enqueue(self, db: sqlite3.Connection, instance_id: str, kind: str, body: dict | None = None, *,
                execution_id: str | None = None, due: str | None = None, task_id: int | None = None) -> int:
        cur = db.execute(
            "INSERT INTO inbox (instance_id, execution_id, kind, body, due, task_id) VALUES (?,?,?,?,?,?)",
            (instance_id, execution_id, kind, json.dumps(body) if body else None, due, task_id))
        return cur.lastrowid

    def enqueue_if_running(self, instance_id: str, kind: str, body: dict) -> None:
        """Enqueue a message for an unfinished instance, in its own transaction: InstanceNotFound for
        an unknown id, EngineError for a finished instance."""
        with self.tx() as db:
            row = db.execute("SELECT status FROM instances WHERE id = ?", (instance_id,)).fetchone()
            if row is None:
                raise InstanceNotFound(f"no orchestration instance with id '{instance_id}'")
            if row[0] in h.TERMINAL:
                raise EngineError(f"instance '{instance_id}' is {row[0]}: it no longer accepts {kind} requests")
            self.enqueue(db, instance_id, kind, body)

    def purge(self, db: sqlite3.Connection, instance_id: str) -> None:
        for table, column in (("instances", "id"), ("history", "instance_id"), ("inbox", "instance_id"),
                              ("work", "instance_id")):
            db.execute(f"DELETE FROM {table} WHERE {column} = ?", (instance_id,))


# -- for other processes (the CLI): no running engine needed --------------------------------------

def status_of(row: dict, store: Store, *, show_history=False, show_history_output=False,
              show_input=True) -> dict:
    """The status JSON of the HTTP management API (what DurableOrchestrationStatus.from_json reads)."""
    status = {
        "name": row["name"], "instanceId": row["id"], "runtimeStatus": row["status"],
        "input": _json(row["input"]) if show_input else None,
        "customStatus": _json(row["custom_status"]), "output": _json(row["output"]),
        "createdTime": row["created"], "lastUpdatedTime": row["updated"],
    }
    if show_history:
        status["historyEvents"] = public_history(store.history(row["id"]), show_history_output)
    return status


def public_history(events: list[dict], with_output: bool) -> list[dict]:
    """The condensed history the host's status API shows: scheduling events folded into results."""
    scheduled = {e["EventId"]: e for e in events if e["EventType"] in (h.TASK_SCHEDULED, h.SUB_CREATED)}
    shown = []
    for e in events:
        kind = e["EventType"]
        if kind in (h.ORCHESTRATOR_STARTED, h.ORCHESTRATOR_COMPLETED, h.TASK_SCHEDULED, h.SUB_CREATED):
            continue
        item = {"EventType": h.EVENT_TYPE_NAMES.get(kind, str(kind)), "Timestamp": e["Timestamp"]}
        if kind == h.EXECUTION_STARTED:
            item["FunctionName"] = e.get("Name")
            if with_output:
                item["Input"] = _json(e.get("Input"))
        elif kind in (h.TASK_COMPLETED, h.TASK_FAILED, h.SUB_COMPLETED, h.SUB_FAILED):
            origin = scheduled.get(e.get("TaskScheduledId"), {})
            item["FunctionName"] = origin.get("Name")
            item["ScheduledTime"] = origin.get("Timestamp")
            if kind in (h.SUB_COMPLETED, h.SUB_FAILED):
                item["InstanceId"] = origin.get("InstanceId")
            if kind in (h.TASK_FAILED, h.SUB_FAILED):
                item["Reason"], item["Details"] = e.get("Reason"), e.get("Details")
            elif with_output:
                item["Result"] = _json(e.get("Result"))
        elif kind in (h.TIMER_CREATED, h.TIMER_FIRED):
            item["FireAt"] = e.get("FireAt")
        elif kind == h.EVENT_RAISED:
            item["Name"] = e.get("Name")
            if with_output:
                item["Input"] = _json(e.get("Input"))
        elif kind == h.EXECUTION_COMPLETED:
            item["OrchestrationStatus"] = e.get("OrchestrationStatus")
            if with_output:
                item["Result"] = _json(e.get("Result"))
        elif kind in (h.EXECUTION_TERMINATED, h.EXECUTION_SUSPENDED, h.EXECUTION_RESUMED):
            item["Reason"] = e.get("Input")
        shown.append(item)
    return shown


def _json(text: str | None):
    if text is None:
        return None
    try:
        return json.loads(text)
    except ValueError:
        return text


def read_status(home, instance_id: str, **options) -> dict | None:
    """Status of one instance straight from `<home>/state.db` (the engine may run elsewhere)."""
    store = Store(home)
    try:
        row = store.instance_row(instance_id)
        return status_of(row, store, **options) if row else None
    finally:
        store.close()


def read_list(home, *, runtime_status=None, created_from=None, created_to=None, prefix=None,
              name=None, limit=None, show_input=True) -> list[dict]:
    """Statuses straight from `<home>/state.db`, oldest first, filtered like the engine's list. Or, with
    `name` / `limit` / show_input=False (not combined with those filters): the newest `limit` instances
    of function `name`, newest first, their inputs left unread; all done in SQL."""
    store = Store(home)
    try:
        if name is None and limit is None and show_input:
            rows = store.rows(runtime_status=runtime_status, created_from=created_from, created_to=created_to,
                              prefix=prefix)
        elif runtime_status or created_from or created_to or prefix:
            raise TypeError("read_list: name/limit/show_input do not combine with the other filters")
        else:
            columns = "*" if show_input else "id, name, status, output, custom_status, created, updated"
            cur = store.read().execute(
                f"SELECT {columns} FROM instances WHERE ? IS NULL OR name = ? ORDER BY created DESC LIMIT ?",
                (name, name, -1 if limit is None else limit))
            names = [c[0] for c in cur.description]
            rows = [dict(zip(names, r, strict=True)) for r in cur]
        return [status_of(r, store, show_input=show_input) for r in rows]
    finally:
        store.close()


def event_raised(name: str, data_json: str | None) -> dict:
    """The inbox body of an external event (an EventRaised history event, stamped now)."""
    return {"EventType": h.EVENT_RAISED, "Name": name, "Input": data_json, "Timestamp": h.fmt_time(h.utcnow())}


def _enqueue_for_running(home, instance_id: str, kind: str, body: dict) -> None:
    store = Store(home)
    try:
        store.enqueue_if_running(instance_id, kind, body)
    finally:
        store.close()


def enqueue_event(home, instance_id: str, name: str, data_json: str | None = None) -> None:
    """Raise an external event through the inbox; a running engine sees it within ~100 ms."""
    _enqueue_for_running(home, instance_id, EVENT, event_raised(name, data_json))


def enqueue_terminate(home, instance_id: str, reason: str | None = None) -> None:
    _enqueue_for_running(home, instance_id, TERMINATE, {"reason": reason})


def _filters(runtime_status, created_from, created_to) -> tuple[list[str], list]:
    """The WHERE terms and arguments that instance queries share (status and created-time filters)."""
    where, args = [], []
    if runtime_status:
        where.append(f"status IN ({','.join('?' * len(runtime_status))})")
        args += list(runtime_status)
    if created_from:
        where.append("created >= ?")
        args.append(h.fmt_time(created_from))
    if created_to:
        where.append("created <= ?")
        args.append(h.fmt_time(created_to))
    return where, args
