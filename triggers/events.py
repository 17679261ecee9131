"""The events trigger: a Service Bus message starts every pipeline listening for its event type.

The run's instance id comes from the message id, so a redelivered (or resent) message finds its run
already there and starts nothing twice; a twin delivered at the same moment that wins the race to
start it is the same duplicate, not a failure.

A message that can never work (undecodable, no event type, a ``tower.run.requested`` naming an
unknown pipeline, params a pipeline refuses) is completed, not failed: failing it would only have
Service Bus deliver it `maxDeliveryCount` times and dead-letter it with its own generic reason
(a Python function cannot dead-letter with a reason of its own). It is logged at error level with the
reason and kept in the rejected-events store (`tower.rejected`), listed by `GET /api/events/rejected`
and `tower events rejected`. Transient failures (storage or the Durable API unreachable, an invalid
catalog file, a missing setting) still raise, so Service Bus delivers the message again.

    GET /api/events/rejected[?limit=N&queue=Q]   rejected messages, newest first, with the reason
    POST /api/events   {"type", "data", "id"}   put an event on the events queue -> 202

``POST /api/events`` is the same in Azure and under `tower serve`: the app sends the message with
its own identity (*Azure Service Bus Data Sender* on the queue there; the local bus here), so a
caller with a function key needs no Service Bus role of its own.
"""

from __future__ import annotations

import asyncio
import fnmatch
import json
import time

import azure.durable_functions as df
import azure.functions as func

import app_runtime
from tower.errors import UsageError
from tower.events import QUEUE_BINDING, RUN_REQUESTED, SERVICE_BUS_CONNECTION
from triggers.common import catalog, log, start_once

bp = df.Blueprint()
REQUEST_FIELDS = ("pipeline", "params", "services")
DEFAULT_REJECTED_LIMIT = 50


def listeners(cat, event_type: str, data=None) -> list[str]:
    """Pipelines whose `on_event` names this type (shell-style patterns such as `files.*` allowed).

    A run notification (`tower.run.finished`...) is named ``<type>:<pipeline>`` (chain on one
    pipeline's end: ``tower.run.finished:load_orders``), and never starts the pipeline it is about:
    no run chains on itself, and a bare ``tower.run.finished`` cannot make two pipelines ping-pong."""
    about = data.get("pipeline") if event_type.startswith("tower.run.") and isinstance(data, dict) else None
    names = [f"{event_type}:{about}"] if isinstance(about, str) else [event_type]
    return [
        name
        for name, pipeline in cat.pipelines.items()
        if name != about and any(fnmatch.fnmatchcase(n, pattern) for n in names for pattern in pipeline.on_event)
    ]


def run_params(cat, pipeline: str, data) -> dict:
    """The event data's fields that the pipeline or its services declare as params; others are ignored."""
    if not isinstance(data, dict):
        return {}
    known = set(cat.pipelines[pipeline].params)
    for service in cat.services.values():
        known |= set(service.params)
    return {k: v for k, v in data.items() if k in known}


def requested_runs(cat, event_type: str, data) -> list[tuple[str, dict | None, list | None]]:
    """(pipeline, params, selectors) of each run an event asks for; UsageError when it can never work.

    ``tower.run.requested`` names one pipeline (``{"pipeline", "params", "services"}``), which
    starts whatever its `on_event` says; any other type starts every pipeline listening for it,
    with the data fields they declare as params."""
    if event_type != RUN_REQUESTED:
        return [(name, run_params(cat, name, data), None) for name in listeners(cat, event_type, data)]
    example = '{"pipeline": "<name>", "params": {...}, "services": ["selector", ...]}'
    if not isinstance(data, dict) or not isinstance(data.get("pipeline"), str):
        raise UsageError(f"{RUN_REQUESTED}: the data must be {example}")
    unknown = sorted(set(data) - set(REQUEST_FIELDS))
    if unknown:
        raise UsageError(f"{RUN_REQUESTED}: unknown field(s) {', '.join(unknown)}; expected {example}")
    pipeline, params, services = data["pipeline"], data.get("params"), data.get("services")
    if pipeline not in cat.pipelines:
        raise UsageError(f"{RUN_REQUESTED}: unknown pipeline {pipeline!r} (pipelines: {', '.join(cat.pipelines) or 'none'})")
    if params is not None and not isinstance(params, dict):
        raise UsageError(f"{RUN_REQUESTED}: params must be an object, got {type(params).__name__}")
    if services is not None and not (isinstance(services, list) and all(isinstance(s, str) for s in services)):
        raise UsageError(f"{RUN_REQUESTED}: services must be a list of selectors")
    return [(pipeline, params or None, services or None)]


async def handle(client, message: func.ServiceBusMessage) -> list[str]:
    """Start the runs an event asks for; returns the run ids started (duplicates are not).

    A message that can never work is rejected (kept with the reason, see the module's docstring)
    and the call returns normally, so the host completes it."""
    from tower.events import decode_event, event_run_id

    message_id = message.message_id or f"seq-{message.sequence_number}"
    try:
        event_type, data = decode_event(message.get_body(), message.application_properties)
    except UsageError as exc:
        await reject(message, message_id, None, str(exc))
        return []
    cat = catalog()  # CatalogError: the deployed catalog is broken, not the message; redelivered
    try:
        runs = requested_runs(cat, event_type, data)
    except UsageError as exc:
        await reject(message, message_id, event_type, str(exc))
        return []
    if not runs:
        log.info("event %s (%s): no pipeline listens for it", event_type, message_id)
    started, refused = [], []
    for pipeline, params, selectors in runs:
        run_id = event_run_id(pipeline, message_id)
        try:
            if await start_once(client, cat, pipeline, run_id, trigger="event", params=params, selectors=selectors):
                started.append(run_id)
        except UsageError as exc:  # the message's params or selectors: starting again cannot help
            refused.append(f"{pipeline}: {exc}")
    if refused:
        await reject(message, message_id, event_type, "; ".join(refused))
    return started


async def reject(message: func.ServiceBusMessage, message_id: str, event_type: str | None, reason: str) -> None:
    """Log at error level and keep the message with the reason; a failure to keep it raises (the
    message is then redelivered rather than lost)."""
    from tower.events import events_queue
    from tower.rejected import RejectedEvent

    queue = events_queue()
    log.error("event %s (message %s on %s) rejected, not retried: %s", event_type or "?", message_id, queue, reason)
    event = RejectedEvent(
        queue=queue, message_id=message_id, reason=reason, body=bytes(message.get_body()),
        application_properties=dict(message.application_properties or {}), content_type=message.content_type,
        event_type=event_type, delivery_count=message.delivery_count or 1, rejected_at=time.time(),
    )
    await asyncio.to_thread(lambda: app_runtime.current().rejected.add(event))


@bp.function_name("on_event")
@bp.service_bus_queue_trigger(arg_name="message", queue_name=QUEUE_BINDING, connection=SERVICE_BUS_CONNECTION)
@bp.durable_client_input(client_name="client")
async def on_event(message: func.ServiceBusMessage, client: df.DurableOrchestrationClient) -> None:
    await handle(client, message)


@bp.function_name("api_rejected_events")
@bp.route(route="events/rejected", methods=["GET"], auth_level=func.AuthLevel.FUNCTION)
async def list_rejected(req: func.HttpRequest) -> func.HttpResponse:

    try:
        limit = int(req.params.get("limit", DEFAULT_REJECTED_LIMIT))
    except ValueError:
        limit = 0
    if limit < 1:
        return _error(400, f"GET /api/events/rejected: limit: expected a whole number >= 1, got {req.params.get('limit')!r}")
    queue = req.params.get("queue") or None
    events = await asyncio.to_thread(lambda: app_runtime.current().rejected.list(queue, limit))
    return func.HttpResponse(json.dumps([e.to_json() for e in events]), mimetype="application/json")


def _publish(payload: dict) -> dict:
    """Send one event to the events queue, with the runtime's publisher (one AMQP link per process)."""
    publisher = app_runtime.current().events
    message_id = publisher.send(payload.get("type"), payload.get("data"), message_id=payload.get("id"))
    return {"id": message_id, "type": payload.get("type"), "sent_to": [publisher.entity]}


@bp.function_name("api_send_event")
@bp.route(route="events", methods=["POST"], auth_level=func.AuthLevel.FUNCTION)
async def send_event(req: func.HttpRequest) -> func.HttpResponse:
    example = '{"type": "files.landed", "data": {...}, "id": "optional message id"}'
    try:
        payload = json.loads(req.get_body() or b"null")
    except ValueError as exc:
        return _error(400, f"POST /api/events: body is not JSON ({exc}); expected {example}")
    if not isinstance(payload, dict):
        return _error(400, f"POST /api/events: expected {example}")
    unknown = sorted(set(payload) - {"type", "data", "id"})
    if unknown:
        return _error(400, f"POST /api/events: unknown field(s) {', '.join(unknown)}; expected {example}")
    if payload.get("id") is not None and not isinstance(payload["id"], str):
        return _error(400, f"POST /api/events: id must be a string, got {type(payload['id']).__name__}")
    try:
        reply = await asyncio.to_thread(_publish, payload)
    except UsageError as exc:
        return _error(400, f"POST /api/events: {exc}")
    return func.HttpResponse(json.dumps(reply), status_code=202, mimetype="application/json")


def _error(status: int, message: str) -> func.HttpResponse:
    return func.HttpResponse(json.dumps({"error": message}), status_code=status, mimetype="application/json")
