"""Platform adapters, imported lazily: the CLI must not pay for databricks-sdk or the Snowflake
connector unless a service of that platform actually runs.

``adapter_for(platform_type, settings)`` builds an adapter: it checks the resolved settings once
(required fields present, numbers numeric) so each adapter can take them as given. A process keeps
its adapters in one `Platforms` (the runtime's, `tower.runtime.Runtime.platforms`), so their clients
serve every activity.
"""

from __future__ import annotations

import importlib
import json
import threading
from collections import OrderedDict
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tower.errors import ConfigError
from tower.platforms._auth import Credentials
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

_WITH_CREDENTIALS = {"databricks", "http"}  # adapters that may fetch Entra tokens
_WITH_HOME = {"command"}  # adapters that keep files under the runtime's home
KEPT_ADAPTERS = 64  # adapters a registry keeps (one per platform type and resolved settings)


def adapter_for(platform_type: str, settings: dict[str, Any], *, credentials: Credentials | None = None,
                home: Path | None = None) -> Adapter:
    """Build the adapter for a platform type from its resolved settings; those that fetch Entra
    tokens use `credentials` (else credentials of their own), those that keep files keep them under
    `home` (else $TOWER_HOME, read when built)."""
    try:
        module_name, class_name = _ADAPTERS[platform_type].split(":")
    except KeyError:
        raise ConfigError(
            f"unknown platform type {platform_type!r} (use one of: {', '.join(_ADAPTERS)})"
        ) from None
    cls = getattr(importlib.import_module(module_name), class_name)
    checked = checked_settings(platform_type, settings)
    if platform_type in _WITH_CREDENTIALS:
        return cls(checked, credentials=credentials)
    return cls(checked, home=home) if platform_type in _WITH_HOME else cls(checked)


class Platforms:
    """The platform adapters of one process, the way an ``httpx.Client`` holds its transport: built
    once by the composition root (`tower.runtime.Runtime`) and handed to what calls platforms.

    `adapter` keeps one adapter per platform type and resolved settings, so its clients (an HTTP
    session, the Databricks workspace client, a Snowflake key) and its state (a command's child
    processes, the simulator's cancels and poll counts) serve every activity of the process; every
    adapter shares the registry's `credentials`, so one token cache serves every call, and a
    command's files go under the registry's `home` (the runtime's), so nothing reads $TOWER_HOME
    while a service is submitted.

    `overrides` stand in for platform types (tests, embedders): an adapter, or a factory
    ``settings -> adapter`` asked at each use (a factory may build a new one each time)."""

    def __init__(self, overrides: Mapping[str, Any] | None = None, *, credentials: Credentials | None = None,
                 home: str | Path | None = None):
        self._overrides = dict(overrides or {})
        self.credentials = credentials or Credentials()
        self.home = Path(home) if home is not None else None
        self._lock = threading.Lock()
        self._adapters: OrderedDict[tuple[str, str], Adapter] = OrderedDict()

    def adapter(self, platform_type: str, settings: Mapping[str, Any]) -> Adapter:
        """The adapter for a platform type and its resolved settings (ConfigError if they are wrong)."""
        stand_in = self._overrides.get(platform_type)
        if stand_in is not None:
            return stand_in(dict(settings)) if callable(stand_in) and not hasattr(stand_in, "submit") else stand_in
        key = (platform_type, json.dumps(settings, sort_keys=True))
        with self._lock:
            kept = self._adapters.get(key)
        if kept is None:  # built outside the lock: an SDK import may take a second
            built = adapter_for(platform_type, dict(settings), credentials=self.credentials, home=self.home)
            with self._lock:
                kept = self._adapters.setdefault(key, built)
        with self._lock:
            self._adapters.move_to_end(key)
            while len(self._adapters) > KEPT_ADAPTERS:
                self._adapters.popitem(last=False)
        return kept

    @contextmanager
    def overridden(self, platform_type: str, stand_in: Any) -> Iterator[Any]:
        """`stand_in` for `platform_type` while the block runs: a test's fake platform on an engine
        that is already running (a new engine takes ``Platforms(overrides=...)`` instead)."""
        with self._lock:
            before = self._overrides.get(platform_type)
            self._overrides[platform_type] = stand_in
        try:
            yield stand_in
        finally:
            with self._lock:
                if before is None:
                    self._overrides.pop(platform_type, None)
                else:
                    self._overrides[platform_type] = before


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
