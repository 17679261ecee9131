"""What a test reads of the run notifications Tower published on the local bus (`tower events tail`)."""

from __future__ import annotations

import json
from pathlib import Path

from tower import notify
from tower.events import local_bus_path
from tower.local.bus import LocalBus, subscription_path


def published(home: str | Path) -> list[dict]:
    """The notifications on the tail subscription of the local bus under `home`, oldest first: each
    message's body, with its `id` (the message id) and `props` (its application properties)."""
    bus = LocalBus(local_bus_path(home))
    try:
        messages = bus.active(subscription_path(notify.NOTIFICATIONS_TOPIC, notify.TAIL_SUBSCRIPTION))
    finally:
        bus.close()
    return [{"id": m.message_id, "props": m.application_properties, **json.loads(m.body)} for m in messages]
