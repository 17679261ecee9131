"""`tower serve` (the local Functions host) and `tower events send | tail | dead-letters | rejected | redrive | purge`."""

from __future__ import annotations

import json
import os
import sys
from datetime import datetime, timezone
from pathlib import Path

from tower.cli.common import err, print_json, tower_home
from tower.errors import UsageError

DEFAULT_HOST, DEFAULT_PORT = "127.0.0.1", 7071  # as tower.local.host, without importing it here


def register(subparsers) -> None:
    serve = subparsers.add_parser(
        "serve",
        help="run the Functions app locally: HTTP, timers, events, durable engine",
        description="Run the app in function_app.py on Tower's local host: its HTTP functions at "
        "/api/<route>, the Durable management API, timer triggers, and Service Bus triggers fed from a "
        "local bus. Unfinished runs resume on start; Ctrl-C or SIGTERM stops cleanly. State lives in "
        "$TOWER_HOME (default ./.tower).",
    )
    serve.add_argument("--host", default=DEFAULT_HOST, help=f"address to listen on (default {DEFAULT_HOST})")
    serve.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"port (default {DEFAULT_PORT}; 0: any free)")
    serve.add_argument(
        "--app",
        default=".",
        metavar="PATH",
        help="function_app.py, or the directory holding it (default: the current directory)",
    )
    serve.set_defaults(handler=serve_command)

    events = subparsers.add_parser(
        "events",
        help="send events to the app's Service Bus trigger; show run notifications; list, redrive or purge what failed",
        description="Send an event to Service Bus when ServiceBusConnection__fullyQualifiedNamespace is set "
        "(Microsoft Entra ID sign-in), else to the local bus that `tower serve` reads. Messages the app "
        "rejected (they can never work: no event type, an unknown pipeline, bad params) are kept with the "
        "reason (`rejected`; in Azure the table at TOWER_REJECTED_TABLE_URL); messages that failed every "
        "delivery are the bus's dead letters (`dead-letters`, the local bus only).",
    )
    actions = events.add_subparsers(dest="events_command", metavar="ACTION")
    send = actions.add_parser("send", help="send one event", description="Send one event: {type, data} with a message id.")
    send.add_argument("type", help="the event type, e.g. files.landed")
    send.add_argument("--data", default="null", metavar="JSON", help='the event data as JSON, e.g. \'{"date": "2026-11-24"}\'')
    send.add_argument("--id", dest="message_id", metavar="MESSAGE_ID", help="message id (default: a new one); resending an id starts no second run")
    send.add_argument("--queue", default=None, metavar="NAME", help="queue or topic (default: $TOWER_EVENTS_QUEUE, else tower-events)")
    send.add_argument("--json", action="store_true", help="print {id, type, queue} as JSON on stdout")
    send.set_defaults(handler=send_command)
    dead = actions.add_parser("dead-letters", help="list the local bus's dead-lettered messages")
    dead.add_argument("--queue", default=None, metavar="NAME", help="only this queue or subscription")
    dead.add_argument("--json", action="store_true", help="print them as JSON on stdout")
    dead.set_defaults(handler=dead_letters_command)
    rejected = actions.add_parser("rejected", help="list the messages the app rejected, with the reason (newest first)")
    rejected.add_argument("--queue", default=None, metavar="NAME", help="only those received on this queue")
    rejected.add_argument("--limit", type=int, default=50, metavar="N", help="at most N (default 50)")
    rejected.add_argument("--json", action="store_true", help="print them as JSON on stdout (bodies included)")
    rejected.set_defaults(handler=rejected_command)
    for name, verb, what in (
        ("redrive", "send back to their queue", "each keeps its message id, body and properties"),
        ("purge", "delete", "for good"),
    ):
        action = actions.add_parser(
            name, help=f"{verb} the local bus's dead letters, or with --rejected the rejected messages",
            description=f"{verb.capitalize()} dead letters of the local bus (all, or those of --queue / --id), "
            f"or with --rejected the messages the app rejected ({what}). Redrive a rejected message once "
            "what made it fail is fixed (the catalog, the publisher); in Azure it goes to Service Bus.",
        )
        action.add_argument("--rejected", action="store_true", help="the rejected messages, not the dead letters")
        action.add_argument("--queue", default=None, metavar="NAME", help="only this queue or subscription")
        action.add_argument("--id", dest="ids", action="append", metavar="MESSAGE_ID", help="only this message (repeatable)")
        action.set_defaults(handler=redrive_command if name == "redrive" else purge_command)
    tail = actions.add_parser(
        "tail", help="show run notifications (tower.run.started, tower.run.finished...) from the local bus",
        description="Show the run notifications Tower published to the notifications topic "
        "($TOWER_NOTIFICATIONS_TOPIC, else tower-notifications) on the local bus, oldest first; --follow "
        "waits for more. In Azure, receive from a subscription of the topic instead (README, Notifications).")
    tail.add_argument("--follow", "-f", action="store_true", help="keep showing new ones until Ctrl-C")
    tail.add_argument("--limit", type=int, default=20, metavar="N", help="the last N first (default 20; 0: all)")
    tail.add_argument("--json", action="store_true", help="one JSON object a line: {id, type, data, enqueued}")
    tail.set_defaults(handler=tail_command)
    events.set_defaults(handler=lambda args: _usage(events))


def _usage(parser) -> int:
    parser.print_help(sys.stderr)
    return 2


def serve_command(args) -> int:
    from tower import telemetry
    from tower.events import EVENTS_QUEUE, QUEUE_SETTING
    from tower.local.host import serve

    telemetry.configure()  # when APPLICATIONINSIGHTS_CONNECTION_STRING is set (function_app.py asks too)

    if getattr(args, "catalog", None):  # the app reads its catalog from TOWER_CATALOG
        os.environ["TOWER_CATALOG"] = str(Path(args.catalog).resolve())
    # The app's events trigger listens on %TOWER_EVENTS_QUEUE%; the local host resolves it from the
    # environment as Azure does from app settings (and fails alike when it is missing), so the
    # default that local.settings.example.json gives Core Tools is given here.
    os.environ.setdefault(QUEUE_SETTING, EVENTS_QUEUE)
    if not 0 <= args.port <= 65535:
        raise UsageError(f"--port {args.port}: must be between 0 and 65535")
    return serve(args.app, home=tower_home().resolve(), host=args.host, port=args.port)


def send_command(args) -> int:
    from tower.events import events_queue, publisher_from_settings

    try:
        data = json.loads(args.data)
    except ValueError as exc:
        raise UsageError(f"--data: not valid JSON ({exc}); e.g. --data '{{\"date\": \"2026-11-24\"}}'") from None
    queue = args.queue or events_queue()
    publisher = publisher_from_settings(entity=queue, home=tower_home())
    try:
        message_id = publisher.send(args.type, data, message_id=args.message_id)
    finally:
        getattr(publisher, "close", lambda: None)()
    if args.json:
        print_json({"id": message_id, "type": args.type, "queue": queue})
    else:
        print(message_id)
    err(f"sent {args.type} to {queue} (message id {message_id})")
    return 0


def _with_local_bus(use, default):
    """`use(bus)` on the local bus under $TOWER_HOME, or `default` when there is none yet."""
    from tower.events import local_bus_path
    from tower.local.bus import LocalBus

    path = local_bus_path(tower_home())
    if not path.exists():
        return default
    bus = LocalBus(path)
    try:
        return use(bus)
    finally:
        bus.close()


def tail_command(args, poll_seconds: float = 0.5) -> int:
    import time

    from tower.events import NAMESPACE_SETTING, local_bus_path
    from tower.local.bus import LocalBus, subscription_path
    from tower.notify import TAIL_SUBSCRIPTION, notifications_topic

    if os.environ.get(NAMESPACE_SETTING) and not local_bus_path(tower_home()).exists():
        raise UsageError(f"{NAMESPACE_SETTING} is set: notifications go to Service Bus, not the local bus; "
                         f"receive them from a subscription of the topic {notifications_topic()}")
    if args.limit < 0:
        raise UsageError(f"--limit {args.limit}: expected 0 (all) or more")
    entity = subscription_path(notifications_topic(), TAIL_SUBSCRIPTION)
    bus = LocalBus(local_bus_path(tower_home()))
    last = 0
    try:
        shown = bus.active(entity)
        if args.limit:
            shown = shown[-args.limit:]
        if not shown and not args.follow:
            err(f"no notifications yet on {entity}")
        while True:
            for message in shown:
                _print_notification(message, args.json)
                last = message.seq
            if not args.follow:
                return 0
            time.sleep(poll_seconds)
            shown = [m for m in bus.active(entity) if m.seq > last]
    except KeyboardInterrupt:
        return 0
    finally:
        bus.close()


def _print_notification(message, as_json: bool) -> None:
    from tower.events import decode_event

    event_type, data = decode_event(message.body, message.application_properties)
    enqueued = datetime.fromtimestamp(message.enqueued_at, timezone.utc).isoformat(timespec="seconds")
    if as_json:
        print(json.dumps({"id": message.message_id, "type": event_type, "data": data, "enqueued": enqueued}),
              flush=True)
        return
    data = data if isinstance(data, dict) else {}
    what = " ".join(f"{key}={data[key]}" for key in ("service", "status", "duration_s", "predicted_end", "slack_s")
                    if data.get(key) is not None)
    print(f"{enqueued}\t{event_type}\t{data.get('run_id', '?')}\t{what}", flush=True)


def dead_letters_command(args) -> int:
    messages = _with_local_bus(lambda bus: bus.dead_letters(args.queue), [])
    rows = [
        {
            "id": m.message_id,
            "queue": m.entity,
            "deliveries": m.delivery_count,
            "reason": m.dead_letter_reason,
            "description": m.dead_letter_description,
            "enqueued": datetime.fromtimestamp(m.enqueued_at, timezone.utc).isoformat(timespec="seconds"),
            "body": m.body.decode("utf-8", "replace"),
        }
        for m in messages
    ]
    if args.json:
        print_json(rows)
        return 0
    if not rows:
        err("no dead-lettered messages")
        return 0
    for row in rows:
        print(f"{row['id']}\t{row['queue']}\t{row['deliveries']} deliveries\t{row['reason']}: {row['description']}")
    return 0


def rejected_command(args) -> int:
    from tower.rejected import rejected_from_environment

    events = rejected_from_environment(tower_home()).list(args.queue, args.limit)
    if args.json:
        print_json([e.to_json() for e in events])
        return 0
    if not events:
        err("no rejected messages")
        return 0
    for e in events:
        when = datetime.fromtimestamp(e.rejected_at, timezone.utc).isoformat(timespec="seconds")
        print(f"{e.message_id}\t{e.queue}\t{e.event_type or '?'}\t{when}\t{e.reason}")
    return 0


def _chosen_rejected(args):
    from tower.rejected import rejected_from_environment

    store = rejected_from_environment(tower_home())
    events = [e for e in store.list(args.queue) if not args.ids or e.message_id in args.ids]
    return store, events


def redrive_command(args) -> int:
    if not args.rejected:
        dead = _with_local_bus(lambda bus: bus.redrive(args.queue, args.ids), [])
        for m in dead:
            print(f"{m.message_id}\t{m.entity}")
        err(f"redriven: {_count(len(dead), 'dead letter')}")
        return 0
    from tower.events import publisher_from_settings

    store, events = _chosen_rejected(args)
    for cut in [e for e in events if e.truncated]:
        err(f"{cut.message_id}: not redriven, its body was too large to keep whole; send it again from its publisher")
    events = [e for e in events if not e.truncated]
    for event in reversed(events):  # oldest first: the order they were sent in
        publisher = publisher_from_settings(entity=event.queue, home=tower_home())
        try:
            publisher.send_raw(event.body, message_id=event.message_id,
                               application_properties=event.application_properties, content_type=event.content_type)
        finally:
            getattr(publisher, "close", lambda: None)()
        store.remove(event.queue, event.message_id)  # after the send: a failed send keeps it here
        print(f"{event.message_id}\t{event.queue}")
    err(f"redriven: {_count(len(events), 'rejected message')}")
    return 0


def purge_command(args) -> int:
    if args.rejected:
        store, events = _chosen_rejected(args)
        for event in events:
            store.remove(event.queue, event.message_id)
        err(f"purged: {_count(len(events), 'rejected message')}")
        return 0
    dead = _with_local_bus(lambda bus: bus.purge_dead_letters(args.queue, args.ids), [])
    err(f"purged: {_count(len(dead), 'dead letter')}")
    return 0


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"
