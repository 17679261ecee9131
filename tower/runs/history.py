"""Run history: one row per service attempt, and the expected durations it teaches the scheduler.

    RunHistory.record(result)               store one attempt's outcome (idempotent per run/service/attempt)
    RunHistory.record_many(results)         the same for several at once (one transaction in SQLite)
    RunHistory.expected_durations(services) median of each service's recent successful durations
    RunHistory.recent_durations(services)   those durations, newest first (their spread sets polling)
    RunHistory.attempts(run_id, services)   the attempts recorded for one run (of these services)

Two stores behind that interface: SQLite locally (``$TOWER_HOME/history.db``) and Azure Table
Storage in Azure (``TOWER_HISTORY_TABLE_URL``, reached with the app's managed identity).
``history_from_environment()`` picks one (a process keeps it: `tower.runtime.Runtime.history`).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, fields
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

from tower import logcontext
from tower.errors import ConfigError
from tower.states import ServiceState
from tower.stores import SqliteStore, Table, location
from tower.timestamps import iso, parse_iso

HISTORY_READS = 8  # Table queries one store runs at once (`TableRunHistory.attempts`)

RECENT = 7  # successful runs the median looks at: recent enough to follow drift, enough to ignore a blip


@dataclass(frozen=True)
class AttemptRecord:
    """One attempt of one service in one run. Times are ISO-8601 UTC strings."""

    run_id: str
    pipeline: str
    service: str
    status: str
    attempt: int
    started: str | None
    finished: str | None
    duration: float | None
    remote_id: str | None = None
    error: str | None = None

    @classmethod
    def from_result(cls, result: dict[str, Any]) -> AttemptRecord:
        """Accepts times as ISO strings or epoch seconds; derives the duration when missing."""
        started, finished = iso(result.get("started")), iso(result.get("finished"))
        duration = result.get("duration")
        if duration is None and started and finished:
            duration = (parse_iso(finished) - parse_iso(started)).total_seconds()
        error = result.get("error")
        return cls(
            run_id=str(result["run_id"]),
            pipeline=str(result.get("pipeline") or ""),
            service=str(result["service"]),
            status=str(result["status"]),
            attempt=int(result.get("attempt") or result.get("attempts") or 1),
            started=started,
            finished=finished,
            duration=None if duration is None else float(duration),
            remote_id=result.get("remote_id"),
            error=None if error is None else str(error)[:2000],
        )


def median_recent(durations: Iterable[float]) -> float:
    return float(statistics.median(list(durations)[:RECENT]))


class RunHistory(Protocol):
    def record(self, result: dict[str, Any]) -> None: ...

    def record_many(self, results: Iterable[dict[str, Any]]) -> None: ...

    def expected_durations(self, services: Iterable[str]) -> dict[str, float]: ...

    def recent_durations(self, services: Iterable[str]) -> dict[str, list[float]]: ...

    def attempts(self, run_id: str, services: Iterable[str] | None = None) -> list[AttemptRecord]:
        """The run's attempts. The Table store needs the run's `services` (its partitions)."""

    def delete_before(self, cutoff: datetime) -> int:
        """Delete attempts that finished (else were recorded) before `cutoff` (retention)."""


_COLUMNS = [f.name for f in fields(AttemptRecord)]


class SqliteRunHistory(SqliteStore):
    """The local store: one SQLite file, safe to share between threads and processes."""

    SCHEMA = (
        "CREATE TABLE IF NOT EXISTS attempts ("
        " run_id TEXT NOT NULL, pipeline TEXT, service TEXT NOT NULL, status TEXT NOT NULL,"
        " attempt INTEGER NOT NULL, started TEXT, finished TEXT, duration REAL,"
        " remote_id TEXT, error TEXT, recorded REAL NOT NULL,"
        " PRIMARY KEY (run_id, service, attempt))",
        "CREATE INDEX IF NOT EXISTS by_service ON attempts (service, status, recorded)",
    )

    def record(self, result: dict[str, Any]) -> None:
        self.record_many([result])

    def record_many(self, results: Iterable[dict[str, Any]]) -> None:
        rows = [asdict(AttemptRecord.from_result(result)) for result in results]
        recorded = time.time()
        with self._connect() as db:  # one transaction
            db.executemany(
                f"INSERT OR REPLACE INTO attempts ({', '.join(_COLUMNS)}, recorded)"
                f" VALUES ({', '.join('?' * len(_COLUMNS))}, ?)",
                [[row[c] for c in _COLUMNS] + [recorded] for row in rows],
            )

    def expected_durations(self, services: Iterable[str]) -> dict[str, float]:
        return {service: median_recent(d) for service, d in self.recent_durations(services).items()}

    def recent_durations(self, services: Iterable[str]) -> dict[str, list[float]]:
        """The last RECENT successful durations of each service that has any, newest first."""
        recent = {}
        db = self._connect()
        for service in services:
            rows = db.execute(
                "SELECT duration FROM attempts WHERE service = ? AND status = ? AND duration IS NOT NULL"
                " ORDER BY recorded DESC LIMIT ?",
                (service, ServiceState.SUCCEEDED, RECENT),
            ).fetchall()
            if rows:
                recent[service] = [float(r[0]) for r in rows]
        return recent

    def attempts(self, run_id: str, services: Iterable[str] | None = None) -> list[AttemptRecord]:
        rows = self._connect().execute(
            f"SELECT {', '.join(_COLUMNS)} FROM attempts WHERE run_id = ? ORDER BY started, service, attempt",
            (run_id,),
        ).fetchall()
        wanted = None if services is None else set(services)
        return [AttemptRecord(*row) for row in rows if wanted is None or row[2] in wanted]

    def delete_before(self, cutoff: datetime) -> int:
        with self._connect() as db:
            return db.execute("DELETE FROM attempts WHERE recorded < ?", (cutoff.timestamp(),)).rowcount


class TableRunHistory:
    """Azure Table Storage: partition = service, row key = newest first, so the recent successes
    of a service are one cheap partition query. Reached with the app's identity (tower.identity) unless given
    another credential (tests pass Azurite's account key)."""

    def __init__(self, table_url: str, credential: Any = None):
        self._table = Table(table_url, credential)
        # History queries run on these threads, several at once: as many as the connections one
        # Table client keeps (the requests transport pools 10 per host), so the reads share them,
        # none opened per read. The pool is this object's, as its client is; threads start on use.
        self._reads = ThreadPoolExecutor(max_workers=HISTORY_READS, thread_name_prefix="tower-history-read")

    @property
    def table(self):
        return self._table.ready()

    @staticmethod
    def _key(text: str) -> str:
        """Table keys refuse / \\ # ? and control characters."""
        return "".join("_" if ch in "/\\#?" or ord(ch) < 32 else ch for ch in text)

    def record(self, result: dict[str, Any]) -> None:
        row = AttemptRecord.from_result(result)
        finished = parse_iso(row.finished).timestamp() if row.finished else time.time()
        newest_first = f"{10**13 - int(finished * 1000):013d}"  # ms to 2286: sorts newest first
        entity = {k: v for k, v in asdict(row).items() if v is not None}
        entity.update(PartitionKey=self._key(row.service),
                      RowKey=self._key(f"{newest_first}_{row.run_id}_{row.attempt}"))
        self.table.upsert_entity(entity)

    def record_many(self, results: Iterable[dict[str, Any]]) -> None:
        for result in results:  # partitions are per service: a batch would hold one entity anyway
            self.record(result)

    def expected_durations(self, services: Iterable[str]) -> dict[str, float]:
        """One partition query per service, `HISTORY_READS` at a time: planning a 1,000-service run
        must not make 1,000 round trips one after another (the HTTP trigger has 230 s)."""
        return {service: median_recent(d) for service, d in self.recent_durations(services).items()}

    def recent_durations(self, services: Iterable[str]) -> dict[str, list[float]]:
        """The last RECENT successful durations of each service that has any, newest first (row
        keys sort newest first), read as expected_durations reads them."""
        found = self._reads.map(logcontext.carried(self._recent), list(services))
        return {service: durations for service, durations in found if durations}

    def _recent(self, service: str) -> tuple[str, list[float]]:
        entities = self.table.query_entities(
            "PartitionKey eq @pk and status eq @status",
            parameters={"pk": self._key(service), "status": ServiceState.SUCCEEDED},
            select=["duration"], results_per_page=RECENT,
        )
        durations = []
        for entity in entities:
            if entity.get("duration") is not None:
                durations.append(float(entity["duration"]))
            if len(durations) == RECENT:
                break
        return service, durations

    def attempts(self, run_id: str, services: Iterable[str] | None = None) -> list[AttemptRecord]:
        """A query in each service's partition (the table is keyed by service: a filter on the run
        alone would scan the whole table), `HISTORY_READS` at a time."""
        if services is None:
            raise ConfigError(f"run {run_id!r}: name its services to read its attempts from Table Storage "
                              "(the run history is partitioned by service)")

        def of(service: str) -> list[AttemptRecord]:
            entities = self.table.query_entities("PartitionKey eq @pk and run_id eq @run",
                                                 parameters={"pk": self._key(service), "run": run_id})
            return [AttemptRecord(**{c: e.get(c) for c in _COLUMNS}) for e in entities]

        records = [record for found in self._reads.map(logcontext.carried(of), list(services)) for record in found]
        return sorted(records, key=lambda r: (r.started or "", r.service, r.attempt))

    def delete_before(self, cutoff: datetime) -> int:
        """No PartitionKey in the filter: the server reads the whole table (once a day, small rows)."""
        old = self.table.query_entities("finished lt @cutoff", parameters={"cutoff": iso(cutoff)},
                                        select=["PartitionKey", "RowKey"])
        by_partition: dict[str, list[dict]] = {}
        for entity in old:
            by_partition.setdefault(entity["PartitionKey"], []).append(
                {"PartitionKey": entity["PartitionKey"], "RowKey": entity["RowKey"]})
        for keys in by_partition.values():
            for at in range(0, len(keys), 100):  # a transaction holds 100 operations of one partition
                self.table.submit_transaction([("delete", key) for key in keys[at:at + 100]])
        return sum(len(keys) for keys in by_partition.values())




def history_from_environment(home: str | Path | None = None) -> RunHistory:
    """A new store: TOWER_HISTORY_TABLE_URL set -> Azure Table Storage; else SQLite in `home` (default
    $TOWER_HOME) (required in Azure: `tower.stores.location`). Build one per process and pass it
    around (`tower.runtime.Runtime.history` does), so its credential, client and connections serve
    every call."""
    kind, where = location("TOWER_HISTORY_TABLE_URL", "history.db", home)
    return TableRunHistory(where) if kind == "table" else SqliteRunHistory(where)
