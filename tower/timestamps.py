"""One way to write and read times across Tower: ISO-8601 UTC with a trailing Z."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any


def iso(value: Any) -> str | None:
    """ISO-8601 UTC text for a datetime, an epoch number or ISO text; None stays None."""
    if value is None or value == "":
        return None
    if isinstance(value, (int, float)):
        value = datetime.fromtimestamp(value, timezone.utc)
    if isinstance(value, datetime):
        return value.astimezone(timezone.utc).isoformat().replace("+00:00", "Z")
    return str(value)


def parse_iso(value: Any) -> datetime | None:
    """The datetime of ISO text (Z or an offset), of an epoch number, or a datetime as is; None for
    None or empty text."""
    if value is None or value == "":
        return None
    if isinstance(value, datetime):
        return value
    if isinstance(value, (int, float)):
        return datetime.fromtimestamp(value, timezone.utc)
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def utcnow() -> datetime:
    """The wall clock, in UTC (activities and tools; orchestrators use their context's clock)."""
    return datetime.now(timezone.utc)
