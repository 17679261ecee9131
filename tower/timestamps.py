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


def parse_iso(text: str | None) -> datetime | None:
    """The datetime of ISO text (Z or an offset); None for None or empty text."""
    if not text:
        return None
    return datetime.fromisoformat(text.replace("Z", "+00:00"))
