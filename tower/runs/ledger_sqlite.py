"""The run ledger's local store: one SQLite file (``$TOWER_HOME/ledger.db``, WAL), shared by threads
and processes. `tower.runs.ledger` holds the dispatch API over it; `tower.runs.ledger_table` is the
same store on Azure Table Storage."""

from __future__ import annotations

import functools
import json
import time
from collections.abc import Sequence

from tower.errors import ServiceNotInLedger
from tower.runs import slots
from tower.runs.ledger import Dispatches, SchedulerCache, Snapshot
from tower.stores import SqliteStore


class SqliteRunLedger(SqliteStore):
    """The local ledger: one SQLite file (WAL), shared by threads and processes. Each record keeps
    the version that last wrote it (`written`), so a host can read just what changed."""

    SCHEMA = (
        "CREATE TABLE IF NOT EXISTS runs (run_id TEXT PRIMARY KEY, version INTEGER NOT NULL,"
        " core TEXT NOT NULL, meta TEXT NOT NULL, created REAL NOT NULL)",
        "CREATE TABLE IF NOT EXISTS run_services (run_id TEXT NOT NULL, position INTEGER NOT NULL,"
        " name TEXT NOT NULL, input TEXT NOT NULL, record TEXT NOT NULL, written INTEGER NOT NULL,"
        " PRIMARY KEY (run_id, name))",
        "CREATE INDEX IF NOT EXISTS run_services_written ON run_services (run_id, written)",
        "CREATE TABLE IF NOT EXISTS run_plans (run_id TEXT PRIMARY KEY, head TEXT NOT NULL)",
    )

    def __init__(self, path, *, dispatches: Dispatches | None = None):
        super().__init__(path)
        self.schedulers = SchedulerCache()
        self.dispatches = dispatches or Dispatches()

    def create(self, run_id, core, meta, inputs, records, head=None) -> bool:
        with self._connect() as db:  # one transaction: the run is stored whole or not at all
            inserted = db.execute("INSERT OR IGNORE INTO runs VALUES (?, 1, ?, ?, ?)",
                                  (run_id, json.dumps(core), json.dumps(meta), time.time())).rowcount
            if inserted:
                db.execute("INSERT INTO run_plans VALUES (?, ?)", (run_id, json.dumps(head or {})))
                db.executemany("INSERT INTO run_services VALUES (?, ?, ?, ?, ?, 1)",
                               [(run_id, i, name, json.dumps(inputs[name]), json.dumps(records[name]))
                                for i, name in enumerate(core["services"])])
        return bool(inserted)

    def version(self, run_id):
        row = self._connect().execute("SELECT version FROM runs WHERE run_id = ?", (run_id,)).fetchone()
        return row[0] if row else None

    def meta(self, run_id):
        row = self._connect().execute("SELECT meta FROM runs WHERE run_id = ?", (run_id,)).fetchone()
        return json.loads(row[0]) if row else None

    def load(self, run_id, since=None):
        db = self._connect()
        db.execute("BEGIN")  # one read transaction (a WAL snapshot): the records belong to the version
        try:
            row = db.execute("SELECT version, core, meta FROM runs WHERE run_id = ?", (run_id,)).fetchone()
            if row is None:
                return None
            records = {name: json.loads(record) for name, record in db.execute(
                "SELECT name, record FROM run_services WHERE run_id = ? AND written >= ?", (run_id, since or 0))}
        finally:
            db.commit()
        return Snapshot(row[0], None if since is not None else json.loads(row[1]), json.loads(row[2]), records)

    def save(self, run_id, version, meta, records) -> bool:
        with self._connect() as db:
            updated = db.execute("UPDATE runs SET version = version + 1, meta = ? WHERE run_id = ? AND version = ?",
                                 (json.dumps(meta), run_id, version)).rowcount
            if not updated:
                return False
            db.executemany("UPDATE run_services SET record = ?, written = ? WHERE run_id = ? AND name = ?",
                           [(json.dumps(record), version + 1, run_id, name) for name, record in records.items()])
        return True

    def service_inputs(self, run_id, names):
        db, inputs = self._connect(), {}
        for at in range(0, len(names), SQLITE_CHUNK):
            chunk = list(names[at:at + SQLITE_CHUNK])
            rows = db.execute(f"SELECT name, input FROM run_services WHERE run_id = ? AND name IN "
                              f"({', '.join('?' * len(chunk))})", (run_id, *chunk)).fetchall()
            inputs.update((name, json.loads(text)) for name, text in rows)
        missing = [name for name in names if name not in inputs]
        if missing:
            raise ServiceNotInLedger(f"run {run_id!r} has no service {missing[0]!r} in the run ledger")
        return inputs

    @functools.cached_property
    def _slots(self) -> slots.SqliteSlots:
        return slots.SqliteSlots(self.path)

    def slots(self) -> slots.SqliteSlots:
        return self._slots

    def delete_runs(self, run_ids: Sequence[str]) -> int:
        """Delete these runs (retention: tower.runs.index.purge); returns how many there were."""
        deleted = 0
        with self._connect() as db:
            for at in range(0, len(run_ids), SQLITE_CHUNK):
                chunk = list(run_ids[at:at + SQLITE_CHUNK])
                marks = ", ".join("?" * len(chunk))
                db.execute(f"DELETE FROM run_services WHERE run_id IN ({marks})", chunk)
                db.execute(f"DELETE FROM run_plans WHERE run_id IN ({marks})", chunk)
                deleted += db.execute(f"DELETE FROM runs WHERE run_id IN ({marks})", chunk).rowcount
        return deleted

    def stored_plan(self, run_id, inputs=True):
        db = self._connect()
        db.execute("BEGIN")
        try:
            row = db.execute("SELECT core, head FROM runs LEFT JOIN run_plans USING (run_id) WHERE run_id = ?",
                             (run_id,)).fetchone()
            if row is None:
                return None
            jobs = {name: json.loads(text) for name, text in db.execute(
                "SELECT name, input FROM run_services WHERE run_id = ?", (run_id,))} if inputs else {}
        finally:
            db.commit()
        return json.loads(row[0]), json.loads(row[1] or "{}"), jobs


SQLITE_CHUNK = 500  # names per IN (...) query, well under SQLite's limit on parameters


