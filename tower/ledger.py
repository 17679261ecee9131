"""The run ledger: a run's dispatch state, kept outside any orchestration history.

Out-of-process orchestrators replay their whole history on every episode, so one orchestrator that
hears of every service costs O(N) per decision and O(N²) per run (ARCHITECTURE decision 8). Tower
therefore keeps the scheduler's state here, one record per service, and changes it in short
transactions from activities: `pipeline_run` opens the run, each `service_run` reports its end, and
the report starts whatever became ready. No history grows with the pipeline, while the rules stay
those of `tower.scheduler` (start-when-ready, per-platform limits, longest remaining path first,
failure and cancel policy).

    open_run(ledger, plan, now) -> Step            create the run, take the first ready services
    finish_service(ledger, run_id, name, result, now) -> Step   one service ended
    cancel_run(ledger, run_id, now) -> Step        stop dispatching; Step.stop names what runs
    run_result(ledger, run_id, finished) -> dict   the run result once every service ended
    live_status(ledger, run_id, now) -> dict       the compact status of a run (None if unknown)

Every change is idempotent, so an activity may run twice. Changes use optimistic concurrency (a
version per run), so several hosts may share one ledger; within a process the last state is kept
in memory and reused while the stored version says nobody else changed it.

Two stores: SQLite locally (``$TOWER_HOME/ledger.db``) and Azure Table Storage in Azure
(``TOWER_LEDGER_TABLE_URL``, managed identity). `ledger_from_environment()` picks one.
"""

from __future__ import annotations

import functools
import json
import os
import sqlite3
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol, TypeVar

from tower.errors import EngineError
from tower.paths import tower_home
from tower.scheduler import RUNNING, Scheduler
from tower.timestamps import iso, parse_iso

T = TypeVar("T")


@dataclass(frozen=True)
class Snapshot:
    """A run as stored: `core` is the slim plan the scheduler needs, `records` one dict per service."""

    version: int
    core: dict
    meta: dict
    records: dict[str, dict]


class RunLedger(Protocol):
    def create(self, run_id: str, core: dict, meta: dict, inputs: Mapping[str, dict],
               records: Mapping[str, dict]) -> bool:
        """Store a new run at version 1; False (and nothing written) if it exists."""

    def version(self, run_id: str) -> int | None: ...

    def load(self, run_id: str) -> Snapshot | None: ...

    def save(self, run_id: str, version: int, meta: dict, records: Mapping[str, dict]) -> bool:
        """Write changed records and meta if the run is still at `version` (then it is version + 1);
        False, and nothing written, if someone else changed it first."""

    def service_input(self, run_id: str, name: str) -> dict: ...


# --- the dispatch steps -------------------------------------------------------------------------

@dataclass
class Step:
    """What a change asks the caller to do: start these service runs (instance id -> input), stop
    these (instance ids), and whether the run has ended (`status` then says how)."""

    start: dict[str, dict] = field(default_factory=dict)
    stop: list[str] = field(default_factory=list)
    done: bool = False
    status: str = RUNNING
    simulated: bool = False

    def to_json(self) -> dict:
        return {"start": self.start, "stop": self.stop, "done": self.done, "status": self.status}


def core_of(plan: Mapping[str, Any]) -> dict:
    """The part of a frozen plan the scheduler reads: the graph, expectations and limits."""
    return {
        "run_id": plan["run_id"],
        "pipeline": plan["pipeline"],
        "simulated": bool(plan.get("simulated")),
        "platforms": {name: {"max_concurrency": p.get("max_concurrency")} for name, p in plan["platforms"].items()},
        "services": {name: {key: svc[key] for key in ("deps", "expected", "platform", "iid")}
                     for name, svc in plan["services"].items()},
    }


def open_run(ledger: RunLedger, plan: Mapping[str, Any], inputs: Mapping[str, dict], now: datetime) -> Step:
    """Create the run (once) and return the service runs to start: the first ready services, or,
    when it already existed, every service it had started (starting one twice is refused by the host)."""
    run_id = plan["run_id"]
    core = core_of(plan)
    with _lock:
        if ledger.version(run_id) is None:
            scheduler = Scheduler(core, now)
            scheduler.take_ready(now)
            if not any(record.status == RUNNING for record in scheduler.records.values()):
                raise EngineError(f"run {run_id}: no service can start (inconsistent plan)")
            records = {name: _record(scheduler, name) for name in scheduler.order}
            meta = {"started": iso(now), "cancel": False}
            if ledger.create(run_id, core, meta, inputs, records):
                scheduler.changed.clear()
                _remember(ledger, run_id, 1, scheduler)
    return _change(ledger, run_id, lambda scheduler: _running_step(ledger, scheduler))


def finish_service(ledger: RunLedger, run_id: str, name: str, result: Mapping[str, Any], now: datetime) -> Step:
    """Record a service's end and take what became ready. A repeated report changes nothing and asks
    again for every running service to be started (the first report may have died half way)."""

    def change(scheduler: Scheduler) -> Step:
        if scheduler.records[name].status != RUNNING:
            return _running_step(ledger, scheduler)
        scheduler.finish(name, result, now)
        started = scheduler.take_ready(now)
        return _step(ledger, scheduler, start=started)

    return _change(ledger, run_id, change)


def cancel_run(ledger: RunLedger, run_id: str, now: datetime) -> Step:
    """Stop dispatching: what has not started is cancelled; `stop` names the running service runs."""

    def change(scheduler: Scheduler) -> Step:
        running = scheduler.cancel(now)
        return _step(ledger, scheduler, stop=[scheduler.plan["services"][n]["iid"] for n in running])

    return _change(ledger, run_id, change)


def run_result(ledger: RunLedger, run_id: str, finished: datetime) -> dict:
    """The run result (`Scheduler.result`), with each service's output."""
    return _change(ledger, run_id, lambda scheduler: scheduler.result(finished))


def live_status(ledger: RunLedger, run_id: str, now: datetime) -> dict | None:
    """The compact status of a run (`Scheduler.compact_status`), None if the ledger has no such run."""
    snapshot = ledger.load(run_id)
    if snapshot is None:
        return None
    return _restore(snapshot).compact_status(now)


def _record(scheduler: Scheduler, name: str) -> dict:
    return asdict(scheduler.records[name])


def _step(ledger: RunLedger, scheduler: Scheduler, start=(), stop=()) -> Step:
    run_id = scheduler.plan["run_id"]
    services = scheduler.plan["services"]
    return Step(start={services[n]["iid"]: ledger.service_input(run_id, n) for n in start}, stop=list(stop),
                done=scheduler.done, status=scheduler.status, simulated=bool(scheduler.plan.get("simulated")))


def _running_step(ledger: RunLedger, scheduler: Scheduler) -> Step:
    return _step(ledger, scheduler, start=[n for n in scheduler.order if scheduler.records[n].status == RUNNING])


# --- optimistic changes with an in-process cache ------------------------------------------------

_lock = threading.RLock()  # one change at a time per process; other processes are caught by versions
_cache: OrderedDict[tuple[int, str], tuple[int, Scheduler]] = OrderedDict()
CACHED_RUNS = 32
SAVE_ATTEMPTS = 20


def _restore(snapshot: Snapshot) -> Scheduler:
    started = parse_iso(snapshot.meta["started"])
    return Scheduler.restore(snapshot.core, started, snapshot.records, bool(snapshot.meta.get("cancel")))


def _remember(ledger: RunLedger, run_id: str, version: int, scheduler: Scheduler) -> None:
    key = (id(ledger), run_id)
    _cache[key] = (version, scheduler)
    _cache.move_to_end(key)
    while len(_cache) > CACHED_RUNS:
        _cache.popitem(last=False)


def _change(ledger: RunLedger, run_id: str, change: Callable[[Scheduler], T]) -> T:
    """Apply `change` to the run's scheduler and store what it changed; on a version conflict,
    reload and apply it again."""
    with _lock:
        for _ in range(SAVE_ATTEMPTS):
            cached = _cache.pop((id(ledger), run_id), None)
            version = ledger.version(run_id)
            if version is None:
                raise EngineError(f"run {run_id!r} is not in the run ledger")
            if cached is not None and cached[0] == version:
                scheduler = cached[1]
            else:
                snapshot = ledger.load(run_id)
                version, scheduler = snapshot.version, _restore(snapshot)
            was_cancelled = scheduler.cancel_requested
            outcome = change(scheduler)
            changes = scheduler.take_changes()
            if not changes and scheduler.cancel_requested == was_cancelled:
                _remember(ledger, run_id, version, scheduler)
                return outcome
            meta = {"started": iso(scheduler.started), "cancel": scheduler.cancel_requested}
            if ledger.save(run_id, version, meta, changes):
                _remember(ledger, run_id, version + 1, scheduler)
                return outcome
        raise EngineError(f"run {run_id!r}: the ledger kept changing under this host ({SAVE_ATTEMPTS} tries)")


# --- SQLite -----------------------------------------------------------------------------------------

class SqliteRunLedger:
    """The local ledger: one SQLite file (WAL), shared by threads and processes."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()
        with self._connect() as db:
            db.execute("CREATE TABLE IF NOT EXISTS runs (run_id TEXT PRIMARY KEY, version INTEGER NOT NULL,"
                       " core TEXT NOT NULL, meta TEXT NOT NULL, created REAL NOT NULL)")
            db.execute("CREATE TABLE IF NOT EXISTS run_services (run_id TEXT NOT NULL, position INTEGER NOT NULL,"
                       " name TEXT NOT NULL, input TEXT NOT NULL, record TEXT NOT NULL,"
                       " PRIMARY KEY (run_id, name))")

    def _connect(self) -> sqlite3.Connection:
        db = getattr(self._local, "db", None)
        if db is None:
            db = sqlite3.connect(self.path, timeout=30)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            self._local.db = db
        return db

    def create(self, run_id, core, meta, inputs, records) -> bool:
        with self._connect() as db:
            inserted = db.execute("INSERT OR IGNORE INTO runs VALUES (?, 1, ?, ?, ?)",
                                  (run_id, json.dumps(core), json.dumps(meta), time.time())).rowcount
            if inserted:
                db.executemany("INSERT INTO run_services VALUES (?, ?, ?, ?, ?)",
                               [(run_id, i, name, json.dumps(inputs[name]), json.dumps(records[name]))
                                for i, name in enumerate(core["services"])])
        return bool(inserted)

    def version(self, run_id):
        row = self._connect().execute("SELECT version FROM runs WHERE run_id = ?", (run_id,)).fetchone()
        return row[0] if row else None

    def load(self, run_id):
        db = self._connect()
        with db:  # one read transaction: the records belong to the version
            row = db.execute("SELECT version, core, meta FROM runs WHERE run_id = ?", (run_id,)).fetchone()
            if row is None:
                return None
            records = {name: json.loads(record) for name, record in db.execute(
                "SELECT name, record FROM run_services WHERE run_id = ?", (run_id,))}
        return Snapshot(row[0], json.loads(row[1]), json.loads(row[2]), records)

    def save(self, run_id, version, meta, records) -> bool:
        with self._connect() as db:
            updated = db.execute("UPDATE runs SET version = version + 1, meta = ? WHERE run_id = ? AND version = ?",
                                 (json.dumps(meta), run_id, version)).rowcount
            if not updated:
                return False
            db.executemany("UPDATE run_services SET record = ? WHERE run_id = ? AND name = ?",
                           [(json.dumps(record), run_id, name) for name, record in records.items()])
        return True

    def service_input(self, run_id, name):
        row = self._connect().execute("SELECT input FROM run_services WHERE run_id = ? AND name = ?",
                                      (run_id, name)).fetchone()
        if row is None:
            raise EngineError(f"run {run_id!r} has no service {name!r} in the run ledger")
        return json.loads(row[0])


def ledger_from_environment(home: str | Path | None = None) -> RunLedger:
    """TOWER_LEDGER_TABLE_URL set -> Azure Table Storage; else SQLite in `home` (default $TOWER_HOME).
    One ledger per location and process."""
    table_url = os.environ.get("TOWER_LEDGER_TABLE_URL")
    if table_url:
        return _ledger("table", table_url)
    return _ledger("sqlite", str((Path(home) if home else tower_home()).absolute() / "ledger.db"))


@functools.lru_cache(maxsize=16)
def _ledger(kind: str, location: str) -> RunLedger:
    if kind == "table":
        from tower.ledger_table import TableRunLedger

        return TableRunLedger(location)
    return SqliteRunLedger(location)
