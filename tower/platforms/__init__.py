"""Platform adapters, imported lazily: the CLI must not pay for databricks-sdk or the Snowflake
connector unless a service of that platform actually runs.

``adapter_for(platform_type, settings)`` is the one way to get an adapter: it checks the resolved
settings once (required fields present, numbers numeric) so each adapter can take them as given.
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

# What a service's `retries:` retries, per platform type (the adapters set `retryable` on a terminal
# Status accordingly); README and `tower plan` say it. Never retried anywhere: configuration,
# authentication, permission and not-found errors.
RETRIED_FAILURES = {
    "databricks": "runs that end FAILED, TIMEDOUT or INTERNAL_ERROR; throttling and unreachable workspaces",
    "snowflake": "failed statements, except compilation, missing-object and privilege errors; lost connections",
    "http": "202 jobs that report a failure value; 5xx and 429 beyond the retry budget; unreachable services",
    "command": "non-zero exits and killed processes",
    "sim": "the failures of `fail_attempts`",
}
NEVER_RETRIED = "configuration, authentication, permission and not-found errors (and 4xx answers)"

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
    return getattr(importlib.import_module(module_name), class_name)(checked_settings(platform_type, settings))


def checked_settings(platform_type: str, settings: dict[str, Any]) -> dict[str, Any]:
    """Resolved settings, checked where a ``${VAR}`` could not be at validation: required fields
    set (an empty ``${X:-}`` counts as missing), number settings numeric (text from the environment
    becomes int or float; empty text means unset, so the adapter's default applies)."""
    # Here, not at the top: importing tower.catalog loads the YAML loader, and tower.platforms.base
    # (imported by the orchestrators) must stay cheap.
    from tower.catalog.fields import NUMBER_SETTINGS, PLATFORM_REQUIRED

    settings = dict(settings)
    missing = [" or ".join(group) for group in PLATFORM_REQUIRED.get(platform_type, ())
               if all(settings.get(name) in (None, "") for name in group)]
    if missing:
        raise ConfigError(f"{platform_type} platform: missing {', '.join(missing)} in the platform settings")
    for name in sorted(NUMBER_SETTINGS & settings.keys()):
        value = settings[name]
        if isinstance(value, str) and not value.strip():
            del settings[name]
            continue
        settings[name] = _number(platform_type, name, value)
    auth = settings.get("auth")
    if platform_type == "http" and auth and not (isinstance(auth, dict) and auth.get("audience")):
        raise ConfigError("http platform: 'auth' needs an 'audience' (the app id URI of the service)")
    return settings


def _number(platform_type: str, name: str, value: Any) -> int | float:
    """A number setting as a number >= 0; never echoes the value (a mistaken ${VAR} may hold a secret)."""
    number: Any = value
    if isinstance(value, str):
        text = value.strip()
        try:
            number = int(text)
        except ValueError:
            try:
                number = float(text)
            except ValueError:
                number = None
    if isinstance(number, bool) or not isinstance(number, (int, float)) or not number >= 0:
        raise ConfigError(f"{platform_type} platform: setting '{name}' must be a number >= 0")
    return number
