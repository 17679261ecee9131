"""Activities of a service run: thin calls into `tower.platforms` (submit, poll, cancel).

Each one does a short piece of I/O and returns small JSON. Submit and poll also report a service
they see succeed to the run ledger at once (`activities.runs.report_service`). A platform failure
is raised with its classification inside the message (`tower.scheduler.failure_message`), because
the Durable SDK hands the orchestrator nothing but the message; anything unclassified propagates
untouched (it is a bug or an outage the host should report) and counts as non-retryable.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

import azure.durable_functions as df

from activities import runs
from tower import names
from tower.catalog.env import resolve
from tower.errors import ConfigError, PlatformError, TowerError
from tower.ledger import is_cancelled, ledger_from_environment
from tower.platforms.base import CANCELLED, SKIPPED, SUCCEEDED, TERMINAL_STATES, Handle, Status, Submission
from tower.redact import redact
from tower.scheduler import failure_message, settled
from tower.timestamps import iso, parse_iso, utcnow

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
@bp.durable_client_input(client_name="client")
async def submit_service(request: dict, client: df.DurableOrchestrationClient) -> dict:
    """Start one attempt and watch it until `watch_until` (see `linger`): {handle, status}; the
    handle is None when the run was cancelled before the submit (nothing is started then).
    request: {platform, submission, watch_until?, report?} (see `_report_if_done`)."""

    report = request.get("report")

    def submit():
        if report and is_cancelled(ledger_from_environment(), report["run_id"]):
            return None, Status(CANCELLED, message="run cancelled before it was submitted")
        with _classified(request["platform"]):
            adapter = _adapter(request["platform"])
            handle = adapter.submit(_submission(request["submission"]))
            until = parse_iso(request.get("watch_until"))
            budget = (until - utcnow()).total_seconds() if until else 0.0
            return handle, linger(adapter, handle, adapter.poll(handle), budget)

    handle, status = await _platform_call(submit)
    if handle is None:
        return {"handle": None, "status": status.to_json()}
    observed = _observed(status)
    await _report_if_done(client, request, observed, remote_id=handle.remote_id, url=handle.url)
    return {"handle": handle.to_json(), "status": observed}


@bp.function_name(names.POLL_SERVICE)
@bp.activity_trigger(input_name="request")
@bp.durable_client_input(client_name="client")
async def poll_service(request: dict, client: df.DurableOrchestrationClient) -> dict:
    """Where the remote work is now: a Status as JSON. request: {platform, handle, report?}."""

    def poll():
        with _classified(request["platform"]):
            return _adapter(request["platform"]).poll(Handle.from_json(request["handle"]))

    observed = _observed(await _platform_call(poll))
    await _report_if_done(client, request, observed)
    return observed


LINGER_FIRST_LOOK = 0.05  # seconds to the first look again when the platform gives no hint (then x2)


def linger(adapter, handle: Handle, status: Status, budget: float) -> Status:
    """Watch just-submitted work here while its end is due within `budget` seconds: sub-second
    work (many SQL statements) then needs no durable timer, and its dependents start a timer and
    two orchestrator episodes sooner. The platform's `poll_after` sets the next look; without one,
    looks are 0.05 s apart, doubling. Work not done within the budget is left to durable timers."""
    deadline = time.monotonic() + budget
    pause_without_hint = LINGER_FIRST_LOOK
    while status.state not in TERMINAL_STATES:
        pause = max(status.poll_after if status.poll_after is not None else pause_without_hint, 0.001)
        if time.monotonic() + pause > deadline:
            break
        time.sleep(pause)
        pause_without_hint *= 2
        status = adapter.poll(handle)
    return status


async def _report_if_done(client, request: dict, observed: dict, **known) -> None:
    """When the work succeeded (or was skipped), report the service's end to the run ledger right
    here, so its dependents start one activity earlier than `service_run` could start them;
    `observed["reported"]` tells `service_run` not to report again. request["report"]: {run_id,
    pipeline, simulated, result} with the result so far. A report that fails is left to
    `service_run`, which reports with retries. A success seen after the service's deadline
    (`report["before"]`) is not reported here."""
    report = request.get("report")
    if not report or observed["state"] not in (SUCCEEDED, SKIPPED):
        return
    if report.get("before") and utcnow() > parse_iso(report["before"]):
        return  # past the deadline: service_run decides (it times the service out)
    result = settled({**report["result"], **{k: v for k, v in known.items() if v}}, observed, iso(utcnow()))
    try:
        await runs.report_service(client, {**report, "result": result})
    except Exception as exc:  # service_run reports again, with retries
        log.warning("%s/%s: early report failed, service_run will report: %s", report["run_id"],
                    result.get("service"), redact(str(exc)))
        return
    observed["reported"] = True


@bp.function_name(names.CANCEL_SERVICE)
@bp.activity_trigger(input_name="request")
async def cancel_service(request: dict) -> bool:
    """Stop the remote work (idempotent). request: {platform, handle}."""

    def cancel():
        with _classified(request["platform"]):
            _adapter(request["platform"]).cancel(Handle.from_json(request["handle"]))

    await _platform_call(cancel)
    return True


# Platform SDKs block (requests, the Snowflake connector, subprocesses): their calls run on this pool,
# never on the worker's event loop, which the async activities (they need the Durable client) share.
_PLATFORM_THREADS = ThreadPoolExecutor(max_workers=32, thread_name_prefix="tower-platform")


async def _platform_call(fn):
    return await asyncio.get_running_loop().run_in_executor(_PLATFORM_THREADS, fn)
