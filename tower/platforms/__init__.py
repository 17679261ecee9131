"""Platform adapters, imported lazily: the CLI must not pay for databricks-sdk or the Snowflake
connector unless a service of that platform actually runs.

``adapter_for(platform_type, settings)`` is the one way to get an adapter.
"""

from __future__ import annotations

import importlib
from typing import Any

from tower.errors import ConfigError
from tower.platforms.base import Adapter

_ADAPTERS = {
    "sim": "tower.platforms.sim:SimAdapter",
    "command": "tower.platforms.command:CommandAdapter",
    "databricks": "tower.platforms.databricks:DatabricksAdapter",
    "snowflake": "tower.platforms.snowflake:SnowflakeAdapter",
    "http": "tower.platforms.http:HttpAdapter",
}

# Tests and embedders may put an adapter (or a factory) here to stand in for a platform type.
OVERRIDES: dict[str, Any] = {}


def adapter_for(platform_type: str, settings: dict[str, Any]) -> Adapter:
    """Build the adapter for a platform type from its resolved settings."""
    if platform_type in OVERRIDES:
        override = OVERRIDES[platform_type]
        return override(settings) if callable(override) and not hasattr(override, "submit") else override
    try:
        module_name, class_name = _ADAPTERS[platform_type].split(":")
    except KeyError:
        raise ConfigError(
            f"unknown platform type {platform_type!r} (use one of: {', '.join(_ADAPTERS)})"
        ) from None
    return getattr(importlib.import_module(module_name), class_name)(settings)
