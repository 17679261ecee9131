"""What each part of the catalog may contain: one table per part, read by the validator.

Adding a platform setting or a service field is a one-line change here (plus its use in the
adapter); the validator then accepts it, and "did you mean" suggestions know about it.
"""

from __future__ import annotations

import re

TOP_LEVEL = ("platforms", "services", "pipelines", "defaults")

# Platform settings by type, beside the common `type` and `max_concurrency`.
PLATFORM_COMMON = ("type", "max_concurrency")
PLATFORM_FIELDS: dict[str, tuple[str, ...]] = {
    "databricks": ("host", "token", "auth", "client_id", "azure_resource_id", "retry_timeout", "http_timeout"),
    "snowflake": (
        "account", "user", "password", "private_key", "private_key_passphrase", "warehouse", "database",
        "schema", "role", "host", "port", "protocol", "login_timeout", "network_timeout",
    ),
    "http": ("base_url", "headers", "auth", "timeout", "max_retries", "max_retry_wait"),
    "command": ("kill_grace",),
    "sim": ("time_scale",),
}
# Settings that are numbers (seconds, counts, factors); a ${VAR} reference is accepted too.
NUMBER_SETTINGS = frozenset(
    {"retry_timeout", "http_timeout", "login_timeout", "network_timeout", "timeout", "max_retries",
     "max_retry_wait", "kill_grace", "time_scale", "port"}
)
# Each entry is a group of alternatives: one of them must be set.
PLATFORM_REQUIRED: dict[str, tuple[tuple[str, ...], ...]] = {
    "databricks": (("host",),),
    "snowflake": (("account",), ("user",), ("password", "private_key")),
    "http": (("base_url",),),
    "command": (),
    "sim": (),
}

# Service fields every platform accepts; the rest go to Service.spec.
SERVICE_COMMON = ("platform", "depends_on", "timeout", "retries", "expected_duration", "tags", "params")
SERVICE_FIELDS: dict[str, tuple[str, ...]] = {
    "databricks": ("job_id", "job_parameters"),
    "snowflake": ("sql", "bind"),
    "http": (
        "path", "url", "method", "body", "headers", "status_path", "success_values", "failure_values",
        "cancelled_values", "cancel_path", "cancel_method",
    ),
    "command": ("run", "cwd", "env"),
    "sim": ("duration", "fail_attempts", "outcome", "jitter", "blind"),
}
SERVICE_REQUIRED: dict[str, tuple[tuple[str, ...], ...]] = {
    "databricks": (("job_id",),),
    "snowflake": (("sql",),),
    "http": (("path", "url"),),
    "command": (("run",),),
    "sim": (),
}
# `defaults` may set the fields that make sense for every service.
DEFAULTS_FIELDS = ("platform", "timeout", "retries", "expected_duration", "tags", "params")

RETRY_FIELDS = ("attempts", "backoff", "max_backoff")
PIPELINE_FIELDS = ("services", "schedule", "timezone", "on_event", "params", "deadline", "priority")
SCHEDULE_FIELDS = ("cron", "timezone", "catchup")
DEADLINE_FIELDS = ("time", "timezone")

HTTP_METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")
SIM_OUTCOMES = ("succeed", "fail")

# Settings that hold credentials: they must be ${VAR} references, never literals.
SECRET_FIELDS = frozenset(
    {"password", "private_key", "private_key_passphrase", "token", "client_secret", "azure_client_secret"}
)


def is_secret_header(name: str) -> bool:
    """Headers that carry credentials: Authorization, and any name with 'key' or 'token' in it."""
    lowered = name.lower()
    return lowered in ("authorization", "proxy-authorization", "cookie") or "key" in lowered or "token" in lowered


# Names of platforms, services and pipelines: usable in selectors, instance ids and URLs.
NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.\-]*")
NAME_HINT = "use letters, digits, '_', '-' and '.'"
