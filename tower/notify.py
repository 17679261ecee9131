"""Run notifications: Tower tells the world what its runs do, on a Service Bus topic.

    tower.run.started     a run opened           {run_id, pipeline, trigger, started, services, params}
    tower.run.finished    a run ended            {run_id, pipeline, status, started, finished, duration_s,
                                                  counts, failed: [{service, error}], summary}
    tower.service.failed  a service failed (after its retries)  {run_id, pipeline, service, attempts, error, ...}
    tower.run.at_risk     a run is predicted to miss its deadline  (tower.deadlines)

Each is a message ``{"type": ..., "data": ...}`` with the application properties ``type``,
``pipeline`` and ``status`` (for subscription filters), sent to the topic ``TOWER_NOTIFICATIONS_TOPIC``
(``tower-notifications``): Service Bus with the app's identity when
``ServiceBusConnection__fullyQualifiedNamespace`` is set, else the local bus (tower.events picks).
Its message id is made of the run id and the event (and the service), so the topic's duplicate
detection drops a repeat (an activity that runs twice, a flush retried after a lost reply).

Publishing never fails or slows a run: `publish` keeps the message in an outbox (the runs store:
``runs.db`` locally, the ``~outbox`` partition of the runs table in Azure) and returns; a background
thread sends what the outbox holds and marks it sent. A send that fails is logged and left there for
the next `publish` or the schedule tick's `retry_pending` to send again. The outbox remembers each
message id for `OUTBOX_DAYS` (the topic's time to live), sent or not, so a notification whose cause
repeats (`tower.run.at_risk`, checked at every report) goes out once; one not sent by then is
dropped with a warning.

On the local bus, publishing also makes sure of two subscriptions (Service Bus has them only if
the template or an operator creates them, see README "Notifications"):

- ``tower-tail``: what `tower events tail` shows;
- ``tower-chain``: forwards each *succeeded* ``tower.run.finished`` to the events queue, so a
  pipeline's `on_event` can chain on another pipeline's end (triggers/events.py).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from tower.contracts import ServiceResult
from tower.errors import ConfigError
from tower.redact import redact
from tower.states import RunState, ServiceState
from tower.stores import SqliteStore
from tower.timestamps import iso, parse_iso

log = logging.getLogger("tower.notify")

TOPIC_SETTING = "TOWER_NOTIFICATIONS_TOPIC"
NOTIFICATIONS_TOPIC = "tower-notifications"
RUN_STARTED = "tower.run.started"
RUN_FINISHED = "tower.run.finished"
SERVICE_FAILED = "tower.service.failed"
RUN_AT_RISK = "tower.run.at_risk"
EVENT_TYPES = (RUN_STARTED, RUN_FINISHED, SERVICE_FAILED, RUN_AT_RISK)
TAIL_SUBSCRIPTION = "tower-tail"
CHAIN_SUBSCRIPTION = "tower-chain"
CHAIN_MATCH = {"type": RUN_FINISHED, "status": RunState.SUCCEEDED}
OUTBOX_PARTITION = "~outbox"
OUTBOX_DAYS = 7  # the topic's message time to live (bicep/modules/servicebus.bicep)
ERROR_CHARS = 2000
FAILED_SHOWN = 50
MAX_MESSAGE_ID = 128


def notifications_topic(env: Mapping[str, str] | None = None) -> str:
    env = os.environ if env is None else env
    return env.get(TOPIC_SETTING, "").strip() or NOTIFICATIONS_TOPIC


def message_id(run_id: str, event_type: str, service: str | None = None) -> str:
    """``<run id>|<event>[|<service>]``, or a hash of it past Service Bus's 128 characters: the same
    notification always gets the same id, so the topic drops a repeat."""
    text = "|".join([run_id, event_type] + ([service] if service else []))
    if len(text) <= MAX_MESSAGE_ID:
        return text
    return f"{text[:MAX_MESSAGE_ID - 41]}~{hashlib.sha256(text.encode()).hexdigest()[:40]}"


@dataclass(frozen=True)
class Notification:
    type: str
    data: dict
    message_id: str
    added: float = 0.0

    @property
    def properties(self) -> dict[str, str]:
        props = {"type": self.type, "pipeline": self.data.get("pipeline") or ""}
        if self.data.get("status"):
            props["status"] = self.data["status"]
        return props

    def body(self) -> bytes:
        return json.dumps({"type": self.type, "data": self.data}, separators=(",", ":"), default=str).encode()


def _error(text: Any) -> str | None:
    return redact(str(text))[:ERROR_CHARS] if text else None


# --- the events --------------------------------------------------------------------------------

def run_started(plan: Mapping[str, Any], started: str) -> Notification:
    from tower.telemetry import trigger_of

    run_id = plan["run_id"]
    return Notification(RUN_STARTED, {
        "run_id": run_id, "pipeline": plan["pipeline"], "trigger": trigger_of(run_id, plan),
        "started": iso(started), "services": len(plan.get("services") or {}),
        "params": plan.get("params") or {},
    }, message_id(run_id, RUN_STARTED))


def service_failed(run_id: str, pipeline: str | None, result: ServiceResult) -> Notification | None:
    """For a report of a service that failed (the report comes after its last retry); else None."""
    if result.status != ServiceState.FAILED:
        return None
    service = result.service
    return Notification(SERVICE_FAILED, {
        "run_id": run_id, "pipeline": pipeline, "service": service, "status": ServiceState.FAILED,
        "attempts": result.attempts or 1, "error": _error(result.error),
        "started": iso(result.started), "finished": iso(result.finished),
        "remote_id": result.remote_id, "url": result.url,
    }, message_id(run_id, SERVICE_FAILED, service))


def run_finished(result: Mapping[str, Any]) -> Notification:
    from tower.telemetry import trigger_of

    run_id = result["run_id"]
    services = result.get("services") or {}
    counts: dict[str, int] = {}
    for svc in services.values():
        counts[svc.get("status") or "unknown"] = counts.get(svc.get("status") or "unknown", 0) + 1
    failed = [{"service": name, "error": _error(svc.get("error"))}
              for name, svc in services.items() if svc.get("status") == ServiceState.FAILED]
    started, finished = parse_iso(result.get("started")), parse_iso(result.get("finished"))
    return Notification(RUN_FINISHED, {
        "run_id": run_id, "pipeline": result["pipeline"], "trigger": trigger_of(run_id), "status": result["status"],
        "started": iso(started), "finished": iso(finished),
        "duration_s": round((finished - started).total_seconds(), 3) if started and finished else None,
        "services": len(services), "counts": counts, "failed": failed[:FAILED_SHOWN],
        "failed_total": len(failed), "summary": _error(result.get("summary")),
    }, message_id(run_id, RUN_FINISHED))


# --- the outbox --------------------------------------------------------------------------------

class Outbox(Protocol):
    """Every notification of the last `OUTBOX_DAYS`, sent or not: `add` of a message id it has is a
    no-op, so a notification goes out once even when its cause repeats (each report of an at-risk run)."""

    def add(self, notification: Notification) -> None: ...
    def pending(self, limit: int = 100) -> list[Notification]: ...
    def mark_sent(self, notification: Notification, when: float) -> None: ...
    def remove(self, notification: Notification) -> None: ...
    def forget_sent(self, before: float) -> int: ...


class SqliteOutbox(SqliteStore):
    """The table ``outbox`` of a SQLite file (the runs index's)."""

    SCHEMA = ("CREATE TABLE IF NOT EXISTS outbox (message_id TEXT PRIMARY KEY, type TEXT NOT NULL,"
              " data TEXT NOT NULL, added REAL NOT NULL, sent REAL)",)

    def add(self, notification):
        with self._connect() as db:
            db.execute("INSERT OR IGNORE INTO outbox (message_id, type, data, added) VALUES (?, ?, ?, ?)",
                       (notification.message_id, notification.type, json.dumps(notification.data, default=str),
                        notification.added or time.time()))

    def pending(self, limit=100):
        rows = self._connect().execute(
            "SELECT message_id, type, data, added FROM outbox WHERE sent IS NULL ORDER BY added LIMIT ?",
            (limit,)).fetchall()
        return [Notification(t, json.loads(d), m, a) for m, t, d, a in rows]

    def mark_sent(self, notification, when):
        with self._connect() as db:
            db.execute("UPDATE outbox SET sent = ? WHERE message_id = ?", (when, notification.message_id))

    def remove(self, notification):
        with self._connect() as db:
            db.execute("DELETE FROM outbox WHERE message_id = ?", (notification.message_id,))

    def forget_sent(self, before):
        with self._connect() as db:
            return db.execute("DELETE FROM outbox WHERE sent IS NOT NULL AND sent < ?", (before,)).rowcount


class TableOutbox:
    """The partition ``~outbox`` of the runs table (no run's partition: those are key-escaped run
    ids, which never start with ``~o``, and month partitions ``~m...``)."""

    def __init__(self, table_url: str, credential: Any = None):
        from tower.stores import Table

        self._table = Table(table_url, credential)

    def add(self, notification):
        from azure.core.exceptions import ResourceExistsError

        from tower.runs.ledger_table import partition_key

        try:
            self._table.ready().create_entity({
                "PartitionKey": OUTBOX_PARTITION, "RowKey": partition_key(notification.message_id),
                "message_id": notification.message_id, "type": notification.type,
                "data": json.dumps(notification.data, default=str), "added": notification.added or time.time(),
                "sent": 0.0,
            })
        except ResourceExistsError:
            pass

    def pending(self, limit=100):
        entities = self._table.ready().query_entities(
            "PartitionKey eq @pk and sent eq 0.0", parameters={"pk": OUTBOX_PARTITION}, results_per_page=limit)
        found = []
        for entity in entities:
            found.append(Notification(entity["type"], json.loads(entity["data"]), entity["message_id"],
                                      float(entity["added"])))
            if len(found) >= limit:
                break
        return sorted(found, key=lambda n: n.added)

    def mark_sent(self, notification, when):
        from azure.data.tables import UpdateMode

        from tower.runs.ledger_table import partition_key

        self._table.ready().update_entity({"PartitionKey": OUTBOX_PARTITION,
                                           "RowKey": partition_key(notification.message_id), "sent": when},
                                          mode=UpdateMode.MERGE)

    def remove(self, notification):
        from tower.runs.ledger_table import partition_key

        self._table.ready().delete_entity(OUTBOX_PARTITION, partition_key(notification.message_id))

    def forget_sent(self, before):
        table = self._table.ready()
        old = table.query_entities("PartitionKey eq @pk and sent gt 0.0 and sent lt @before",
                                   parameters={"pk": OUTBOX_PARTITION, "before": before}, select=["RowKey"])
        count = 0
        for entity in old:
            table.delete_entity(OUTBOX_PARTITION, entity["RowKey"])
            count += 1
        return count


def outbox_from_environment(home: str | Path | None = None) -> Outbox:
    """A new outbox in the runs store: TOWER_RUNS_TABLE_URL in Azure, else ``runs.db`` under `home`
    (default $TOWER_HOME). A process keeps one (`tower.runtime.Runtime.outbox`)."""
    from tower.stores import location

    kind, where = location("TOWER_RUNS_TABLE_URL", "runs.db", home)
    return TableOutbox(where) if kind == "table" else SqliteOutbox(where)


# --- sending -----------------------------------------------------------------------------------

class Sender(Protocol):
    def send(self, notification: Notification) -> None: ...


class TopicSender:
    """Sends to the notifications topic through tower.events' publishers: Service Bus with the
    app's identity in Azure, the local bus (with its two subscriptions made sure of) elsewhere."""

    def __init__(self, env: Mapping[str, str] | None = None, home: str | Path | None = None):
        from tower.events import LocalBusPublisher, events_queue, publisher_from_settings

        env = os.environ if env is None else env
        self.topic = notifications_topic(env)
        self.publisher = publisher_from_settings(env, entity=self.topic, home=home)
        if isinstance(self.publisher, LocalBusPublisher):
            self.publisher.bus.add_subscription(self.topic, TAIL_SUBSCRIPTION)
            self.publisher.bus.add_subscription(self.topic, CHAIN_SUBSCRIPTION, match=CHAIN_MATCH,
                                                forward_to=events_queue(env))

    def send(self, notification: Notification) -> None:
        from tower.events import CONTENT_TYPE

        self.publisher.send_raw(notification.body(), message_id=notification.message_id,
                                application_properties=notification.properties, content_type=CONTENT_TYPE)


def flush(outbox: Outbox, sender: Sender | None, now: float | None = None) -> int:
    """Send what the outbox holds (oldest first) with `sender`; returns how many went. A failed send
    (or no sender: its settings are wrong) is logged and stays for the next flush (the rest wait
    too: the topic is likely down for all of them)."""
    now = time.time() if now is None else now
    outbox.forget_sent(now - OUTBOX_DAYS * 86400)
    sent = 0
    while True:
        batch = outbox.pending()
        if not batch:
            return sent
        for notification in batch:
            if now - notification.added > OUTBOX_DAYS * 86400:
                log.warning("notification %s (%s) dropped: not sent in %d days", notification.message_id,
                            notification.type, OUTBOX_DAYS)
                outbox.remove(notification)
                continue
            try:
                if sender is None:
                    raise ConfigError("no notification sender (see the warning about its settings)")
                sender.send(notification)
            except Exception as exc:
                log.warning("notification %s (%s) not sent, kept to send again: %s", notification.message_id,
                            notification.type, redact(str(exc)))
                return sent
            outbox.mark_sent(notification, now)
            sent += 1


IDLE_SECONDS = 60.0  # a notifier's flush thread ends after this long without work (a kick starts it again)


class Notifier:
    """Publishes one process's run notifications: each is kept in `outbox`, then sent by a background
    thread of this notifier's with `sender` (default: a `TopicSender` for `home`, built on first
    send), so no activity waits for a send. The runtime builds one (`tower.runtime.Runtime.notifier`);
    tests give it a sender of their own. The thread starts at the first kick and ends when idle, so
    a process with many runtimes (the tests) keeps no idle threads."""

    def __init__(self, outbox: Outbox, sender: Sender | None = None, *, home: str | Path | None = None):
        self.outbox = outbox
        self.home = home
        self._sender = sender
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._idle = threading.Event()
        self._idle.set()
        self._thread: threading.Thread | None = None

    def sender(self) -> Sender | None:
        """The sender, built once from the settings; None (logged) if they are wrong."""
        with self._lock:
            if self._sender is None:
                try:
                    self._sender = TopicSender(home=self.home)
                except Exception as exc:  # a bad setting: logged here, and by each flush that cannot send
                    log.warning("notifications: no sender: %s", redact(str(exc)))
            return self._sender

    def publish(self, notification: Notification | None) -> None:
        """Keep the notification in the outbox and have it sent in the background. Never raises: a
        notification must not fail a run (an outbox that cannot be written is logged, the send tried)."""
        if notification is None:
            return
        try:
            self.outbox.add(notification)
        except Exception as exc:
            log.warning("notification %s (%s): the outbox is unreachable (%s); sending it now, once",
                        notification.message_id, notification.type, redact(str(exc)))
            try:
                sender = self.sender()
                if sender is None:
                    raise ConfigError("no notification sender")
                sender.send(notification)
            except Exception as exc2:
                log.error("notification %s (%s) lost: %s", notification.message_id, notification.type,
                          redact(str(exc2)))
            return
        self.kick()

    def retry_pending(self) -> None:
        """Have the background thread send what the outbox still holds (the schedule tick, each minute)."""
        self.kick()

    def kick(self) -> None:
        with self._lock:
            self._idle.clear()
            self._wake.set()
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="tower-notify", daemon=True)
                self._thread.start()

    def _run(self) -> None:
        while True:
            if not self._wake.wait(IDLE_SECONDS):
                with self._lock:
                    if not self._wake.is_set():
                        self._thread = None
                        return
            self._wake.clear()
            try:
                flush(self.outbox, self.sender())
            except Exception as exc:  # the outbox itself is unreachable: the next kick tries again
                log.warning("notifications: flush failed: %s", redact(str(exc)))
            with self._lock:
                if not self._wake.is_set():
                    self._idle.set()

    def drain(self, timeout: float = 10.0) -> bool:
        """Wait until the background sends are done (the end of `tower run`, tests)."""
        return self._idle.wait(timeout)

    # --- the events, published; nothing they raise reaches the caller ----------------------------

    def run_started(self, plan: Mapping[str, Any], started: str) -> None:
        self._guarded(run_started, plan, started)

    def service_failed(self, run_id: str, pipeline: str | None, result: ServiceResult) -> None:
        self._guarded(service_failed, run_id, pipeline, result)

    def run_finished(self, result: Mapping[str, Any]) -> None:
        self._guarded(run_finished, result)

    def _guarded(self, build, *args) -> None:
        try:
            self.publish(build(*args))
        except Exception as exc:
            log.warning("notification %s: %s", build.__name__, redact(str(exc)))
