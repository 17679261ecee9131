"""The events trigger: a Service Bus message starts every pipeline listening for its event type.

The run's instance id comes from the message id, so a redelivered (or resent) message finds its run
already there and starts nothing twice. A message that can never work (no event type, bad params)
fails, is retried by Service Bus and ends in the dead-letter queue with the reason.
"""

from __future__ import annotations

import fnmatch

import azure.durable_functions as df
import azure.functions as func

from tower.events import EVENTS_QUEUE, SERVICE_BUS_CONNECTION
from triggers.common import catalog, log, start_once

bp = df.Blueprint()


def listeners(cat, event_type: str) -> list[str]:
    """Pipelines whose `on_event` names this type (shell-style patterns such as `files.*` allowed)."""
    return [
        name
        for name, pipeline in cat.pipelines.items()
        if any(fnmatch.fnmatchcase(event_type, pattern) for pattern in pipeline.on_event)
    ]


def run_params(cat, pipeline: str, data) -> dict:
    """The event data's fields that the pipeline or its services declare as params; others are ignored."""
    if not isinstance(data, dict):
        return {}
    known = set(cat.pipelines[pipeline].params)
    for service in cat.services.values():
        known |= set(service.params)
    return {k: v for k, v in data.items() if k in known}


async def handle(client, message: func.ServiceBusMessage) -> list[str]:
    """Start the runs an event asks for; returns the run ids started."""
    from tower.events import decode_event, event_run_id

    event_type, data = decode_event(message.get_body(), message.application_properties)
    cat = catalog()
    started = []
    names = listeners(cat, event_type)
    if not names:
        log.info("event %s (%s): no pipeline listens for it", event_type, message.message_id)
    for name in names:
        run_id = event_run_id(name, message.message_id)
        if await start_once(client, cat, name, run_id, params=run_params(cat, name, data)):
            started.append(run_id)
    return started


@bp.function_name("on_event")
@bp.service_bus_queue_trigger(arg_name="message", queue_name=EVENTS_QUEUE, connection=SERVICE_BUS_CONNECTION)
@bp.durable_client_input(client_name="client")
async def on_event(message: func.ServiceBusMessage, client: df.DurableOrchestrationClient) -> None:
    await handle(client, message)
