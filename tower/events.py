"""Sending events: one small interface, Service Bus in Azure and the local bus on a laptop.

An event is a JSON body ``{"type": ..., "data": ...}`` with the type repeated in the application
property ``type`` (so subscriptions can filter without reading bodies) and a message id that makes
it idempotent: the events trigger derives the run's instance id from it, so a redelivered or resent
message never starts a second run. It goes to the queue the app setting ``TOWER_EVENTS_QUEUE`` names
(``tower-events`` by default). ``tower.run.requested`` is Tower's own type: its data names a pipeline
to start (``{"pipeline", "params", "services"}``); any other type starts the pipelines whose
``on_event`` matches it. What the trigger does with a message that can never work: triggers/events.py.

In Azure the publisher authenticates with the app's managed identity (`tower.identity`) against the
namespace in ``ServiceBusConnection__fullyQualifiedNamespace``, the same identity-based setting the
Service Bus trigger's ``connection="ServiceBusConnection"`` reads. There is never a connection string.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol

from tower.errors import ConfigError, UsageError
from tower.paths import tower_home

QUEUE_SETTING = "TOWER_EVENTS_QUEUE"  # the app setting naming the queue the events trigger listens on
QUEUE_BINDING = f"%{QUEUE_SETTING}%"  # resolved from app settings by the Functions host (and `tower serve`)
EVENTS_QUEUE = "tower-events"  # its default (`tower serve`, `tower events send`, the Bicep template)
RUN_REQUESTED = "tower.run.requested"  # the one event type Tower itself defines: start a named pipeline
SERVICE_BUS_CONNECTION = "ServiceBusConnection"  # the trigger's `connection`: an app-setting prefix
NAMESPACE_SETTING = f"{SERVICE_BUS_CONNECTION}__fullyQualifiedNamespace"
CONTENT_TYPE = "application/json"
MAX_MESSAGE_ID = 128  # Service Bus limit on MessageId


def events_queue(env: Mapping[str, str] | None = None) -> str:
    """The events queue: ``TOWER_EVENTS_QUEUE``, else ``tower-events``."""
    env = os.environ if env is None else env
    return env.get(QUEUE_SETTING, "").strip() or EVENTS_QUEUE


class Publisher(Protocol):
    def send(self, event_type: str, data: Any = None, *, message_id: str | None = None) -> str:
        """Publish one event; returns its message id."""
        ...

    def send_raw(self, body: bytes, *, message_id: str, application_properties: Mapping[str, Any],
                 content_type: str | None) -> str:
        """Send a message as it was received (a redriven one): same id, body and properties."""
        ...


def encode_event(event_type: str, data: Any = None, message_id: str | None = None):
    """(message_id, body bytes, application_properties) for an event, or a UsageError saying why not."""
    if not isinstance(event_type, str) or not event_type.strip():
        raise UsageError("event type: a non-empty string is required (e.g. 'files.landed')")
    if message_id is not None and not (0 < len(message_id) <= MAX_MESSAGE_ID):
        raise UsageError(f"event message id: 1 to {MAX_MESSAGE_ID} characters, got {len(message_id)}")
    try:
        body = json.dumps({"type": event_type, "data": data}, separators=(",", ":")).encode()
    except (TypeError, ValueError) as exc:
        raise UsageError(f"event {event_type!r}: data is not JSON-serialisable ({exc})") from None
    return message_id or uuid.uuid4().hex, body, {"type": event_type}


def decode_event(body: bytes | str, application_properties: Mapping[str, Any] | None = None):
    """(event_type, data) from a received message: the ``type`` property wins over the body's.

    A body that is not a JSON object is taken as the data itself, so a plain message with a
    ``type`` property still works.
    """
    text = body.decode("utf-8", "replace") if isinstance(body, bytes | bytearray) else body
    try:
        payload = json.loads(text) if text.strip() else None
    except ValueError:
        payload = text
    props = dict(application_properties or {})
    event_type = props.get("type")
    if isinstance(event_type, bytes):
        event_type = event_type.decode()
    if isinstance(payload, dict) and "type" in payload:
        event_type = event_type or payload.get("type")
        data = payload.get("data")
    else:
        data = payload
    if not isinstance(event_type, str) or not event_type:
        raise UsageError(
            "event message: no event type (set the application property 'type' or send a JSON body "
            '{"type": ..., "data": ...})'
        )
    return event_type, data


class ServiceBusPublisher:
    """Publishes to a Service Bus queue or topic with Microsoft Entra ID (no keys, no connection string)."""

    def __init__(self, namespace: str, entity: str | None = None, *, credential=None):
        if not namespace or "://" in namespace or ";" in namespace:
            raise ConfigError(
                f"{NAMESPACE_SETTING}: expected a fully-qualified namespace such as "
                "'tower-dev.servicebus.windows.net' (connection strings are not supported)"
            )
        self.namespace = namespace
        self.entity = entity or events_queue()
        self._credential = credential
        self._client = None

    def send(self, event_type: str, data: Any = None, *, message_id: str | None = None) -> str:
        message_id, body, props = encode_event(event_type, data, message_id)
        return self.send_raw(body, message_id=message_id, application_properties=props, content_type=CONTENT_TYPE)

    def send_raw(self, body: bytes, *, message_id: str, application_properties: Mapping[str, Any],
                 content_type: str | None) -> str:
        from azure.servicebus import ServiceBusMessage

        message = ServiceBusMessage(
            body, message_id=message_id, application_properties=dict(application_properties), content_type=content_type
        )
        with self._servicebus().get_queue_sender(self.entity) as sender:  # a topic is addressed alike
            sender.send_messages(message)
        return message_id

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    def _servicebus(self):
        if self._client is None:
            from azure.servicebus import ServiceBusClient

            if self._credential is None:
                from tower.identity import azure_credential

                self._credential = azure_credential()
            self._client = ServiceBusClient(self.namespace, self._credential)
        return self._client


class LocalBusPublisher:
    """Publishes to the local SQLite bus that ``tower serve`` feeds its Service Bus triggers from."""

    def __init__(self, bus, entity: str | None = None):
        self.bus = bus
        self.entity = entity or events_queue()

    def send(self, event_type: str, data: Any = None, *, message_id: str | None = None) -> str:
        message_id, body, props = encode_event(event_type, data, message_id)
        return self.send_raw(body, message_id=message_id, application_properties=props, content_type=CONTENT_TYPE)

    def send_raw(self, body: bytes, *, message_id: str, application_properties: Mapping[str, Any],
                 content_type: str | None) -> str:
        return self.bus.send(self.entity, body, message_id=message_id,
                             application_properties=dict(application_properties), content_type=content_type)

    def close(self) -> None:
        self.bus.close()


def local_bus_path(home: str | Path) -> Path:
    return Path(home) / "bus.db"


def publisher_from_settings(
    env: Mapping[str, str] | None = None, *, entity: str | None = None, home: str | Path | None = None
) -> Publisher:
    """Service Bus when the namespace setting is present, else the local bus under $TOWER_HOME;
    to `entity`, else the events queue (``TOWER_EVENTS_QUEUE``)."""
    env = os.environ if env is None else env
    entity = entity or events_queue(env)
    namespace = env.get(NAMESPACE_SETTING, "").strip()
    if namespace:
        return ServiceBusPublisher(namespace, entity)
    from tower.local.bus import LocalBus

    home = home if home is not None else tower_home(env)
    return LocalBusPublisher(LocalBus(local_bus_path(home)), entity)


def event_run_id(pipeline: str, message_id: str) -> str:
    """The instance id of the run an event starts: ``run~<pipeline>:<message id>``, the message id
    rewritten and hashed when it holds what a URL would read differently (tower.runs.plan.fit_instance_id),
    so one message always maps to one run and a redelivery finds it."""
    from tower.runs.plan import RUN_PREFIX, fit_instance_id

    return fit_instance_id(RUN_PREFIX, f"{pipeline}:{message_id}")
