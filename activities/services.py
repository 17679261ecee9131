"""Activities of a service run: thin calls into `tower.platforms` and the run-history store.

Each one does a short piece of I/O and returns small JSON. A platform failure is raised with its
classification inside the message (`tower.scheduler.failure_message`), because the Durable SDK
hands the orchestrator nothing but the message; anything unclassified propagates untouched (it is a
bug or an outage the host should report) and counts as non-retryable.
"""

from __future__ import annotations

import functools
import json
import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager

import azure.durable_functions as df

from tower import names
from tower.catalog.env import resolve
from tower.errors import ConfigError, PlatformError, TowerError
from tower.platforms.base import Handle, Status, Submission
from tower.scheduler import failure_message
from tower.timestamps import iso

bp = df.Blueprint()
log = logging.getLogger("tower.activities")


class ServiceActivityError(TowerError):
    """A classified failure on its way to `service_run`; its message is machine-readable JSON."""


@contextmanager
def _classified(platform: dict) -> Iterator[None]:
    """Turn Tower's own errors into a classified activity failure the orchestrator can read."""
    try:
        yield
    except PlatformError as exc:
        payload = exc.to_payload()
        payload["platform"] = payload.get("platform") or platform.get("name", "")
        raise ServiceActivityError(failure_message(payload)) from None
    except ConfigError as exc:
        raise ServiceActivityError(
            failure_message({"error": str(exc), "retryable": False, "platform": platform.get("name", "")})
        ) from None


def _adapter(platform: dict):
    """The adapter for a plan's platform entry, its ``${VAR}`` settings read now, at use.

    Adapters are kept per process for the same type and resolved settings, so their clients
    (HTTP session, Databricks workspace client) serve every activity; stand-ins registered in
    ``tower.platforms.OVERRIDES`` are asked each time.
    """
    from tower.platforms import OVERRIDES, adapter_for

    where = f"platform {platform.get('name', platform['type'])!r}"
    settings = resolve(platform.get("settings") or {}, where=where)
    if platform["type"] in OVERRIDES:
        return adapter_for(platform["type"], settings)
    return _cached_adapter(platform["type"], json.dumps(settings, sort_keys=True))


@functools.lru_cache(maxsize=64)
def _cached_adapter(platform_type: str, settings_json: str):
    from tower.platforms import adapter_for

    return adapter_for(platform_type, json.loads(settings_json))


def _submission(data: dict) -> Submission:
    """The submission of a request, its ``${VAR}`` spec fields read now (the plan keeps them unread:
    it is stored in the run's history)."""
    return Submission.from_json({**data, "spec": resolve(data["spec"], where=f"service {data['service']!r}")})


def _observed(status: Status) -> dict:
    """A status as JSON with the moment it was read: a `poll_after` hint counts from then, not from
    whenever the orchestrator gets to it."""
    return {**status.to_json(), "observed_at": iso(time.time())}


@bp.function_name(names.SUBMIT_SERVICE)
@bp.activity_trigger(input_name="request")
def submit_service(request: dict) -> dict:
    """Start one attempt and take a first look: {handle, status}. request: {platform, submission}."""
    with _classified(request["platform"]):
        adapter = _adapter(request["platform"])
        submission = _submission(request["submission"])
        handle = adapter.submit(submission)
        status = adapter.poll(handle)
    return {"handle": handle.to_json(), "status": _observed(status)}


@bp.function_name(names.POLL_SERVICE)
@bp.activity_trigger(input_name="request")
def poll_service(request: dict) -> dict:
    """Where the remote work is now: a Status as JSON. request: {platform, handle}."""
    with _classified(request["platform"]):
        status = _adapter(request["platform"]).poll(Handle.from_json(request["handle"]))
    return _observed(status)


@bp.function_name(names.CANCEL_SERVICE)
@bp.activity_trigger(input_name="request")
def cancel_service(request: dict) -> bool:
    """Stop the remote work (idempotent). request: {platform, handle}."""
    with _classified(request["platform"]):
        _adapter(request["platform"]).cancel(Handle.from_json(request["handle"]))
    return True
