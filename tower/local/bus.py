"""A local Service Bus on SQLite: no broker runs here, yet trigger code must see real redeliveries.

It keeps the Service Bus semantics the app relies on: queues and topics by name (a topic copies each
message to its subscriptions, addressed ``topic/Subscriptions/name``), peek-lock receive, a delivery
count raised on every lock, abandon → redelivery, and a message moved to the dead-letter store once
its delivery count reaches ``max_deliveries`` (10, the Service Bus default). Messages survive a
restart of the process; several processes may share the file (``tower events send`` while
``tower serve`` runs).

It is no kinder than Service Bus: a message dead-lettered for its delivery count carries the reason
``MaxDeliveryCountExceeded`` and a generic description, never the function's error (the Functions
host abandons a failed message without a reason; Service Bus writes its own). Dead letters can be
sent back to their queue (redrive, as Service Bus Explorer does: a new copy with the same id, body
and properties, delivery count 0) or purged.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from tower.errors import EngineError

DEFAULT_MAX_DELIVERIES = 10  # Service Bus MaxDeliveryCount default
DEFAULT_LOCK_SECONDS = 60.0  # Service Bus LockDuration default
MAX_DELIVERY_REASON = "MaxDeliveryCountExceeded"  # the reason Service Bus writes on its DLQ messages


def max_delivery_description(count: int) -> str:
    """Service Bus's own description of such a dead letter: generic, nothing of the function's error."""
    return f"Message could not be consumed after {count} delivery attempts."

_SCHEMA = """
CREATE TABLE IF NOT EXISTS messages (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    entity TEXT NOT NULL,
    message_id TEXT NOT NULL,
    body BLOB NOT NULL,
    content_type TEXT,
    application_properties TEXT NOT NULL,
    enqueued_at REAL NOT NULL,
    delivery_count INTEGER NOT NULL DEFAULT 0,
    locked_until REAL NOT NULL DEFAULT 0,
    lock_token TEXT,
    dead_lettered INTEGER NOT NULL DEFAULT 0,
    dead_letter_reason TEXT,
    dead_letter_description TEXT
);
CREATE INDEX IF NOT EXISTS messages_ready ON messages (entity, dead_lettered, locked_until);
CREATE TABLE IF NOT EXISTS subscriptions (
    topic TEXT NOT NULL,
    name TEXT NOT NULL,
    PRIMARY KEY (topic, name)
);
CREATE TABLE IF NOT EXISTS subscription_rules (
    topic TEXT NOT NULL,
    name TEXT NOT NULL,
    match TEXT NOT NULL,
    forward_to TEXT,
    PRIMARY KEY (topic, name)
);
"""


def subscription_path(topic: str, subscription: str) -> str:
    """The entity path Service Bus gives a topic subscription."""
    return f"{topic}/Subscriptions/{subscription}"


@dataclass(frozen=True)
class Message:
    """A message as a receiver sees it: locked (``lock_token``) or, in the dead-letter store, not."""

    seq: int
    entity: str
    message_id: str
    body: bytes
    content_type: str | None
    application_properties: dict[str, Any] = field(default_factory=dict)
    enqueued_at: float = 0.0
    delivery_count: int = 0
    lock_token: str | None = None
    dead_letter_reason: str | None = None
    dead_letter_description: str | None = None


class LocalBus:
    """Queues, topics and a dead-letter store in one SQLite file. Thread-safe; process-safe."""

    def __init__(
        self,
        path: str | Path,
        *,
        max_deliveries: int = DEFAULT_MAX_DELIVERIES,
        lock_seconds: float = DEFAULT_LOCK_SECONDS,
    ):
        if max_deliveries < 1:
            raise ValueError("max_deliveries must be at least 1")
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.max_deliveries = max_deliveries
        self.lock_seconds = lock_seconds
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, timeout=10, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA busy_timeout=10000")
        self._db.executescript(_SCHEMA)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # ------------------------------------------------------------------ sending

    def add_subscription(self, topic: str, subscription: str, *, match: dict[str, Any] | None = None,
                         forward_to: str | None = None) -> str:
        """Create a topic subscription (idempotent); messages sent from now on reach it.

        As a Service Bus subscription can: `match` keeps only messages whose application properties
        equal these values (a correlation filter), and `forward_to` auto-forwards them to that queue
        instead of keeping them (the same message id, body and properties)."""
        with self._transaction():
            self._db.execute(
                "INSERT OR IGNORE INTO subscriptions (topic, name) VALUES (?, ?)", (topic, subscription)
            )
            if match or forward_to:
                self._db.execute(
                    "INSERT OR REPLACE INTO subscription_rules (topic, name, match, forward_to) VALUES (?, ?, ?, ?)",
                    (topic, subscription, json.dumps(match or {}), forward_to),
                )
        return subscription_path(topic, subscription)

    def send(
        self,
        entity: str,
        body: bytes | str,
        *,
        message_id: str | None = None,
        application_properties: dict[str, Any] | None = None,
        content_type: str | None = None,
    ) -> str:
        """Enqueue on a queue, or on every subscription of a topic; returns the message id.

        A name with subscriptions is a topic; any other name is a queue (created on first use).
        """
        if not entity:
            raise ValueError("a queue or topic name is required")
        data = body.encode() if isinstance(body, str) else bytes(body)
        message_id = message_id or uuid.uuid4().hex
        props = json.dumps(application_properties or {})
        with self._transaction():
            targets = self._targets(entity, application_properties or {})
            self._db.executemany(
                "INSERT INTO messages (entity, message_id, body, content_type, application_properties,"
                " enqueued_at) VALUES (?, ?, ?, ?, ?, ?)",
                [(t, message_id, data, content_type, props, time.time()) for t in targets],
            )
        return message_id

    # ------------------------------------------------------------------ receiving (peek-lock)

    def receive(self, entity: str, *, max_messages: int = 1) -> list[Message]:
        """Lock up to ``max_messages`` available messages (oldest first), raising their delivery count.

        A message whose lock expired is available again; one that already had ``max_deliveries``
        deliveries is dead-lettered instead of delivered once more.
        """
        now = time.time()
        out: list[Message] = []
        ready = "entity = ? AND dead_lettered = 0 AND locked_until <= ?"
        with self._transaction():
            self._move_to_dead_letters(  # the lock expired on the last allowed delivery
                MAX_DELIVERY_REASON, max_delivery_description(self.max_deliveries),
                f"{ready} AND delivery_count >= ?", entity, now, self.max_deliveries,
            )
            rows = self._db.execute(
                f"SELECT {_COLUMNS} FROM messages WHERE {ready} ORDER BY seq LIMIT ?", (entity, now, max_messages)
            ).fetchall()
            for message in map(_message, rows):
                locked = replace(message, delivery_count=message.delivery_count + 1, lock_token=uuid.uuid4().hex)
                self._db.execute(
                    "UPDATE messages SET delivery_count = ?, locked_until = ?, lock_token = ? WHERE seq = ?",
                    (locked.delivery_count, now + self.lock_seconds, locked.lock_token, locked.seq),
                )
                out.append(locked)
        return out

    def complete(self, message: Message) -> None:
        """Settle: the message is done and removed."""
        with self._transaction():
            self._locked(message)
            self._db.execute("DELETE FROM messages WHERE seq = ?", (message.seq,))

    def abandon(self, message: Message) -> bool:
        """Give the message back for redelivery; returns False when it went to the dead letters
        (with Service Bus's reason and description: the function's error is not kept)."""
        with self._transaction():
            self._locked(message)
            count = self._db.execute(
                "SELECT delivery_count FROM messages WHERE seq = ?", (message.seq,)
            ).fetchone()[0]
            if count >= self.max_deliveries:
                self._move_to_dead_letters(MAX_DELIVERY_REASON, max_delivery_description(count), "seq = ?", message.seq)
                return False
            self._db.execute(
                "UPDATE messages SET locked_until = 0, lock_token = NULL WHERE seq = ?", (message.seq,)
            )
            return True

    def dead_letter(self, message: Message, reason: str, description: str = "") -> None:
        """Move a locked message to the dead-letter store at once (a poison message)."""
        with self._transaction():
            self._locked(message)
            self._move_to_dead_letters(reason, description, "seq = ?", message.seq)

    # ------------------------------------------------------------------ inspection

    def dead_letters(self, entity: str | None = None) -> list[Message]:
        """Dead-lettered messages, oldest first, for one entity or all of them."""
        return self._select("dead_lettered = 1", entity)

    def active(self, entity: str | None = None) -> list[Message]:
        """Messages still waiting for (or in) delivery."""
        return self._select("dead_lettered = 0", entity)

    # ------------------------------------------------------------------ dead-letter maintenance

    def redrive(self, entity: str | None = None, message_ids: list[str] | None = None) -> list[Message]:
        """Send dead letters back to the entity they died on (all, or those of `entity` / with these
        message ids): each becomes a new message with its id, body and properties, delivery count 0.
        Returns the redriven dead letters."""
        with self._transaction():
            dead = self._dead(entity, message_ids)
            self._db.executemany(
                "INSERT INTO messages (entity, message_id, body, content_type, application_properties,"
                " enqueued_at) VALUES (?, ?, ?, ?, ?, ?)",
                [(m.entity, m.message_id, m.body, m.content_type, json.dumps(m.application_properties), time.time())
                 for m in dead],
            )
            self._db.executemany("DELETE FROM messages WHERE seq = ?", [(m.seq,) for m in dead])
        return dead

    def purge_dead_letters(self, entity: str | None = None, message_ids: list[str] | None = None) -> list[Message]:
        """Delete dead letters (all, or those of `entity` / with these message ids); returns them."""
        with self._transaction():
            dead = self._dead(entity, message_ids)
            self._db.executemany("DELETE FROM messages WHERE seq = ?", [(m.seq,) for m in dead])
        return dead

    def _dead(self, entity: str | None, message_ids: list[str] | None) -> list[Message]:
        sql, args = f"SELECT {_COLUMNS} FROM messages WHERE dead_lettered = 1", []
        if entity is not None:
            sql, args = sql + " AND entity = ?", [entity]
        if message_ids is not None:
            sql += f" AND message_id IN ({', '.join('?' * len(message_ids))})"
            args += list(message_ids)
        return [_message(row) for row in self._db.execute(sql + " ORDER BY seq", args)]

    # ------------------------------------------------------------------ internals

    @contextmanager
    def _transaction(self):
        """One IMMEDIATE transaction: other processes wait instead of racing for the same message."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def _targets(self, entity: str, props: dict[str, Any]) -> list[str]:
        """Where a message sent to `entity` goes: each subscription whose filter it passes (or the
        queue it forwards to), or `entity` itself when it is a queue."""
        subs = self._db.execute(
            "SELECT s.name, r.match, r.forward_to FROM subscriptions s LEFT JOIN subscription_rules r"
            " ON r.topic = s.topic AND r.name = s.name WHERE s.topic = ?", (entity,)).fetchall()
        if not subs:
            return [entity]
        targets = []
        for name, match, forward_to in subs:
            if all(props.get(k) == v for k, v in json.loads(match or "{}").items()):
                targets.append(forward_to or subscription_path(entity, name))
        return targets

    def _select(self, where: str, entity: str | None) -> list[Message]:
        sql = f"SELECT {_COLUMNS} FROM messages WHERE {where}"
        args: tuple = ()
        if entity is not None:
            sql += " AND entity = ?"
            args = (entity,)
        with self._lock:
            return [_message(row) for row in self._db.execute(sql + " ORDER BY seq", args)]

    def _locked(self, message: Message) -> None:
        row = self._db.execute("SELECT lock_token FROM messages WHERE seq = ?", (message.seq,)).fetchone()
        if row is None or row[0] is None or row[0] != message.lock_token:
            raise LockLost(f"message {message.message_id} on {message.entity}: the lock was lost or expired")

    def _move_to_dead_letters(self, reason: str, description: str, where: str, *args) -> None:
        """Dead-letter the messages ``where`` (an SQL condition on its ``args``) selects."""
        self._db.execute(
            "UPDATE messages SET dead_lettered = 1, locked_until = 0, lock_token = NULL,"
            f" dead_letter_reason = ?, dead_letter_description = ? WHERE {where}",
            (reason, description[:4096], *args),
        )


_COLUMNS = (
    "seq, entity, message_id, body, content_type, application_properties, enqueued_at,"
    " delivery_count, lock_token, dead_letter_reason, dead_letter_description"
)


def _message(row: tuple) -> Message:
    """A ``Message`` from a row of ``_COLUMNS``."""
    return Message(
        seq=row[0],
        entity=row[1],
        message_id=row[2],
        body=bytes(row[3]),
        content_type=row[4],
        application_properties=json.loads(row[5]),
        enqueued_at=row[6],
        delivery_count=row[7],
        lock_token=row[8],
        dead_letter_reason=row[9],
        dead_letter_description=row[10],
    )


class LockLost(EngineError):
    """Settling a message whose lock expired or was never held (as Service Bus's MessageLockLostError)."""
