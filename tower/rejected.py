"""Rejected events: Service Bus messages the events trigger completed without acting on, and why.

A message that can never work (undecodable, no event type, an unknown pipeline, params a pipeline
refuses) is not left to fail: the Functions host would abandon it and Service Bus would deliver it
`maxDeliveryCount` times (10 by default) before dead-lettering it with a generic
`MaxDeliveryCountExceeded` reason, never Tower's. Python functions cannot dead-letter a message
with a reason of their own either (that needs the pre-release SDK-type binding with
`auto_complete_messages=False`). So the trigger completes it, logs the reason at error level, and
keeps it here with the reason and its original body and properties, so that `tower events rejected`
and `GET /api/events/rejected` can show it and `tower events redrive` can send it again after a fix.

SQLite under $TOWER_HOME locally (``rejected.db``); in Azure the Table at ``TOWER_REJECTED_TABLE_URL``
(required there, like the ledger's: `tower.stores.location`). One row per (queue, message id): a
message rejected again replaces its row. Rows are few (bad messages, not traffic); `tower events
purge --rejected` removes them.
"""

from __future__ import annotations

import base64
import hashlib
import json
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

from tower.stores import SqliteStore, Table, location
from tower.timestamps import iso

SETTING = "TOWER_REJECTED_TABLE_URL"
FILENAME = "rejected.db"
PARTITION = "rejected"  # one partition: a handful of rows, listed whole
MAX_TABLE_BODY = 64_000  # bytes of a body kept in a Table (a binary property holds 64 KiB; a Service
# Bus message up to 256 KB on Standard): a longer one is cut and marked, and cannot be redriven
MAX_REASON = 4_000


@dataclass(frozen=True)
class RejectedEvent:
    """One rejected message: where it came from, what it held, and why it was refused."""

    queue: str
    message_id: str
    reason: str
    body: bytes
    application_properties: Mapping[str, Any] = field(default_factory=dict)
    content_type: str | None = None
    event_type: str | None = None
    delivery_count: int = 1
    rejected_at: float = 0.0
    truncated: bool = False  # the body was cut to fit the store: it cannot be redriven as it was

    def to_json(self) -> dict:
        """The API's and `tower events rejected --json`'s view: the body as text (base64 if binary)."""
        try:
            body, encoding = self.body.decode("utf-8"), "utf-8"
        except UnicodeDecodeError:
            body, encoding = base64.b64encode(self.body).decode(), "base64"
        return {
            "id": self.message_id, "queue": self.queue, "type": self.event_type, "reason": self.reason,
            "rejected": iso(self.rejected_at), "deliveries": self.delivery_count,
            "body": body, "body_encoding": encoding, "body_truncated": self.truncated,
            "application_properties": dict(self.application_properties), "content_type": self.content_type,
        }


class RejectedStore(Protocol):
    def add(self, event: RejectedEvent) -> None: ...

    def list(self, queue: str | None = None, limit: int | None = None) -> list[RejectedEvent]:
        """Newest first."""
        ...

    def remove(self, queue: str, message_id: str) -> bool:
        """True if it was there."""
        ...


def _row(event: RejectedEvent) -> dict:
    row = asdict(event)
    row["rejected_at"] = event.rejected_at or time.time()
    row["reason"] = event.reason[:MAX_REASON]
    row["application_properties"] = json.dumps(dict(event.application_properties), default=str)
    return row


def _event(row: Mapping[str, Any]) -> RejectedEvent:
    return RejectedEvent(
        queue=row["queue"], message_id=row["message_id"], reason=row["reason"], body=bytes(row["body"]),
        application_properties=json.loads(row.get("application_properties") or "{}"),
        content_type=row.get("content_type"), event_type=row.get("event_type"),
        delivery_count=int(row.get("delivery_count") or 1), rejected_at=float(row["rejected_at"]),
        truncated=bool(row.get("truncated")),
    )


_COLUMNS = ("queue", "message_id", "reason", "body", "application_properties", "content_type", "event_type",
            "delivery_count", "rejected_at", "truncated")


class SqliteRejected(SqliteStore):
    SCHEMA = (
        "CREATE TABLE IF NOT EXISTS rejected (queue TEXT NOT NULL, message_id TEXT NOT NULL,"
        " reason TEXT NOT NULL, body BLOB NOT NULL, application_properties TEXT NOT NULL,"
        " content_type TEXT, event_type TEXT, delivery_count INTEGER NOT NULL,"
        " rejected_at REAL NOT NULL, truncated INTEGER NOT NULL DEFAULT 0, PRIMARY KEY (queue, message_id))",
    )

    def add(self, event: RejectedEvent) -> None:
        row = _row(event)
        with self._connect() as db:
            db.execute(f"INSERT OR REPLACE INTO rejected ({', '.join(_COLUMNS)}) VALUES ({', '.join('?' * len(_COLUMNS))})",
                       [row[c] for c in _COLUMNS])

    def list(self, queue: str | None = None, limit: int | None = None) -> list[RejectedEvent]:
        sql, args = f"SELECT {', '.join(_COLUMNS)} FROM rejected", []
        if queue is not None:
            sql, args = sql + " WHERE queue = ?", [queue]
        sql += " ORDER BY rejected_at DESC"
        if limit is not None:
            sql, args = sql + " LIMIT ?", [*args, max(limit, 0)]
        return [_event(dict(zip(_COLUMNS, r, strict=True))) for r in self._connect().execute(sql, args)]

    def remove(self, queue: str, message_id: str) -> bool:
        with self._connect() as db:
            return db.execute("DELETE FROM rejected WHERE queue = ? AND message_id = ?", (queue, message_id)).rowcount > 0


class TableRejected:
    """Azure Table Storage: one partition, row key a hash of (queue, message id) (message ids may hold
    characters a row key refuses); the body as a binary property, cut (and marked) to fit."""

    def __init__(self, table_url: str, credential: Any = None):
        self._table = Table(table_url, credential)

    @staticmethod
    def _key(queue: str, message_id: str) -> str:
        return hashlib.sha256(f"{queue}\0{message_id}".encode()).hexdigest()[:32]

    def add(self, event: RejectedEvent) -> None:
        row = _row(event)
        if len(row["body"]) > MAX_TABLE_BODY:
            row["body"], row["truncated"] = row["body"][:MAX_TABLE_BODY], True
        entity = {k: v for k, v in row.items() if v is not None}
        entity.update(PartitionKey=PARTITION, RowKey=self._key(event.queue, event.message_id))
        self._table.ready().upsert_entity(entity)

    def list(self, queue: str | None = None, limit: int | None = None) -> list[RejectedEvent]:
        filter_, params = "PartitionKey eq @pk", {"pk": PARTITION}
        if queue is not None:
            filter_, params = filter_ + " and queue eq @queue", {**params, "queue": queue}
        rows = self._table.ready().query_entities(filter_, parameters=params, select=list(_COLUMNS))
        events = sorted((_event(dict(e)) for e in rows), key=lambda e: e.rejected_at, reverse=True)
        return events if limit is None else events[: max(limit, 0)]

    def remove(self, queue: str, message_id: str) -> bool:
        from azure.core.exceptions import ResourceNotFoundError

        table, key = self._table.ready(), self._key(queue, message_id)
        try:
            table.get_entity(PARTITION, key, select=["RowKey"])
        except ResourceNotFoundError:
            return False
        table.delete_entity(PARTITION, key)
        return True


def rejected_from_environment(home: str | Path | None = None) -> RejectedStore:
    """A new store: TOWER_REJECTED_TABLE_URL set -> Azure Table Storage; else SQLite in `home` (default
    $TOWER_HOME); required in Azure (`tower.stores.location`). A process keeps one
    (`tower.runtime.Runtime.rejected`)."""
    kind, where = location(SETTING, FILENAME, home)
    return TableRejected(where) if kind == "table" else SqliteRejected(where)

