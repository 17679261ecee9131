"""Durations as people write them (``90s``, ``15m``, ``2h``, ``1h30m``, ``1d``) and as seconds.

Used by the catalog (timeouts, expected durations, backoffs) and by anything that prints a duration.
"""

from __future__ import annotations

import re

_UNITS = (("d", 86400), ("h", 3600), ("m", 60), ("s", 1))
_PATTERN = re.compile(r"(?:(?P<d>\d+(?:\.\d+)?)d)?(?:(?P<h>\d+(?:\.\d+)?)h)?(?:(?P<m>\d+(?:\.\d+)?)m)?(?:(?P<s>\d+(?:\.\d+)?)s)?")
_NUMBER = re.compile(r"\d+(?:\.\d+)?")
HELP = "write a number of seconds or units, e.g. 90s, 15m, 2h, 1h30m, 1d"


def parse_duration(value: str | int | float) -> float:
    """Seconds in a duration; ValueError with a message for a person when it is not one."""
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise ValueError(f"expected a duration, got {type(value).__name__} ({HELP})")
    if isinstance(value, (int, float)):
        if value < 0 or value != value or value == float("inf"):
            raise ValueError(f"invalid duration {value!r}: must be a finite number >= 0 ({HELP})")
        return float(value)
    text = value.strip().lower()
    if _NUMBER.fullmatch(text):
        return float(text)
    match = _PATTERN.fullmatch(text)
    if not text or not match or not any(match.groupdict().values()):
        raise ValueError(f"invalid duration {value!r} ({HELP})")
    return float(sum(float(match[unit]) * seconds for unit, seconds in _UNITS if match[unit]))


def format_duration(seconds: float) -> str:
    """Short form for display: 5400 -> "1h30m", 45 -> "45s", 2.5 -> "2.5s", 90061 -> "1d1h1m1s"."""
    if seconds < 0:
        return "-" + format_duration(-seconds)
    if seconds < 10 and seconds != int(seconds):
        return f"{seconds:.1f}".rstrip("0").rstrip(".") + "s"
    remaining = int(round(seconds))
    if remaining == 0:
        return "0s"
    parts = []
    for unit, size in _UNITS:
        count, remaining = divmod(remaining, size)
        if count:
            parts.append(f"{count}{unit}")
    return "".join(parts)
