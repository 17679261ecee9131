"""Activities of a service run: thin calls into `tower.platforms` (submit, poll, cancel).

Each one does a short piece of I/O and returns small JSON. Submit and poll also report a service
they see succeed to the run ledger at once (`activities.runs.report_service`). A platform failure
is raised with its classification inside the message (`tower.scheduler.failure_message`), because
the Durable SDK hands the orchestrator nothing but the message; anything unclassified propagates
untouched (it is a bug or an outage the host should report) and counts as non-retryable.
"""

from __future__ import annotations

import logging

import azure.durable_functions as df

from activities import remote, runs
from tower import names
from tower.ledger import is_cancelled, ledger_from_environment
from tower.platforms.base import CANCELLED, SKIPPED, SUCCEEDED, Handle, Status
from tower.redact import redact
from tower.scheduler import settled
from tower.timestamps import iso, parse_iso, utcnow

bp = df.Blueprint()
log = logging.getLogger("tower.activities")


@bp.function_name(names.SUBMIT_SERVICE)
@bp.activity_trigger(input_name="request")
@bp.durable_client_input(client_name="client")
async def submit_service(request: dict, client: df.DurableOrchestrationClient) -> dict:
    """Start one attempt and watch it until `watch_until` (see `linger`): {handle, status}; the
    handle is None when the run was cancelled before the submit (nothing is started then).
    request: {platform, submission, watch_until?, report?} (see `_report_if_done`)."""

    def submit(adapter):
        if _cancelled(request):
            return None, Status(CANCELLED, message="run cancelled before it was submitted")
        handle = adapter.submit(remote.submission(request["submission"]))
        return handle, remote.linger(adapter, handle, adapter.poll(handle), _budget(request))

    handle, status = await remote.call(request["platform"], submit)
    if handle is None:
        return {"handle": None, "status": status.to_json()}
    observed = remote.observed(status)
    await _report_if_done(client, request, observed, remote_id=handle.remote_id, url=handle.url)
    return {"handle": handle.to_json(), "status": observed}


@bp.function_name(names.POLL_SERVICE)
@bp.activity_trigger(input_name="request")
@bp.durable_client_input(client_name="client")
async def poll_service(request: dict, client: df.DurableOrchestrationClient) -> dict:
    """Where the remote work is now: a Status as JSON. request: {platform, handle, first?,
    watch_until?, report?}. The first look at work submitted at dispatch (`first`) reads the run's
    cancel flag before anything else, like a submit: a cancel that came while the service run was
    being started, and found no instance to tell, still stops the work. `watch_until`: watch the
    work until then (see `linger`)."""
    handle = Handle.from_json(request["handle"])

    def poll(adapter):
        if request.get("first") and _cancelled(request):
            adapter.cancel(handle)
            return Status(CANCELLED, message="run cancelled while the service was starting")
        return remote.linger(adapter, handle, adapter.poll(handle), _budget(request))

    status = await remote.call(request["platform"], poll)
    observed = remote.observed(status)
    await _report_if_done(client, request, observed)
    return observed


def _cancelled(request: dict) -> bool:
    """Has the run of this request been cancelled? (Read from the run ledger.)"""
    report = request.get("report")
    return bool(report) and is_cancelled(ledger_from_environment(), report["run_id"])


def _budget(request: dict) -> float:
    """Seconds left to watch the work here (`remote.linger`), until the request's `watch_until`."""
    until = parse_iso(request.get("watch_until"))
    return (until - utcnow()).total_seconds() if until else 0.0


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

    await remote.call(request["platform"], lambda adapter: adapter.cancel(Handle.from_json(request["handle"])))
    return True
