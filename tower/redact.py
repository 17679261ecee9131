"""Mask secret setting values in text that leaves the process (logs, error replies, stored failures)."""

from __future__ import annotations

import os
from collections.abc import Mapping

SECRET_WORDS = ("SECRET", "PASSWORD", "TOKEN", "KEY", "CONNECTION")


def redact(text: str, env: Mapping[str, str] | None = None) -> str:
    """Mask the values of secret-looking settings, so an error message cannot carry them out."""
    env = os.environ if env is None else env
    for name, value in env.items():
        if len(value) >= 6 and any(word in name.upper() for word in SECRET_WORDS):
            text = text.replace(value, "***")
    return text
