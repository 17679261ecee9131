"""`tower serve` (the local Functions host) and `tower events send | dead-letters`."""

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
        help="send events to the app's Service Bus trigger; list dead letters",
        description="Send an event to Service Bus when ServiceBusConnection__fullyQualifiedNamespace is set "
        "(Microsoft Entra ID sign-in), else to the local bus that `tower serve` reads.",
    )
    actions = events.add_subparsers(dest="events_command", metavar="ACTION")
    send = actions.add_parser("send", help="send one event", description="Send one event: {type, data} with a message id.")
    send.add_argument("type", help="the event type, e.g. files.landed")
    send.add_argument("--data", default="null", metavar="JSON", help='the event data as JSON, e.g. \'{"date": "2026-11-24"}\'')
    send.add_argument("--id", dest="message_id", metavar="MESSAGE_ID", help="message id (default: a new one); resending an id starts no second run")
    send.add_argument("--queue", default=None, metavar="NAME", help="queue or topic (default: tower-events)")
    send.add_argument("--json", action="store_true", help="print {id, type, queue} as JSON on stdout")
    send.set_defaults(handler=send_command)
    dead = actions.add_parser("dead-letters", help="list the local bus's dead-lettered messages")
    dead.add_argument("--queue", default=None, metavar="NAME", help="only this queue or subscription")
    dead.add_argument("--json", action="store_true", help="print them as JSON on stdout")
    dead.set_defaults(handler=dead_letters_command)
    events.set_defaults(handler=lambda args: _usage(events))


def _usage(parser) -> int:
    parser.print_help(sys.stderr)
    return 2


def serve_command(args) -> int:
    from tower.local.host import serve

    if getattr(args, "catalog", None):  # the app reads its catalog from TOWER_CATALOG
        os.environ["TOWER_CATALOG"] = str(Path(args.catalog).resolve())
    if not 0 <= args.port <= 65535:
        raise UsageError(f"--port {args.port}: must be between 0 and 65535")
    return serve(args.app, home=tower_home().resolve(), host=args.host, port=args.port)


def send_command(args) -> int:
    from tower.events import EVENTS_QUEUE, publisher_from_settings

    try:
        data = json.loads(args.data)
    except ValueError as exc:
        raise UsageError(f"--data: not valid JSON ({exc}); e.g. --data '{{\"date\": \"2026-11-24\"}}'") from None
    queue = args.queue or EVENTS_QUEUE
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


def dead_letters_command(args) -> int:
    from tower.events import local_bus_path
    from tower.local.bus import LocalBus

    path = local_bus_path(tower_home())
    if not path.exists():
        messages = []
    else:
        bus = LocalBus(path)
        try:
            messages = bus.dead_letters(args.queue)
        finally:
            bus.close()
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
