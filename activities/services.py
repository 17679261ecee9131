"""Activities of a service run: thin calls into `tower.platforms` (submit, poll, cancel).

Each one does a short piece of I/O and returns small JSON. Submit and poll also report a service
they see succeed to the run ledger at once (`activities.runs.report_here`). A platform failure
is raised as an `ActivityFailure` (`remote.classified`), which `service_run` reads back as the same
PlatformError (tower.errors), because the Durable SDK hands the orchestrator nothing but the
message; anything unclassified propagates untouched (it is a bug or an outage the host should
report) and counts as non-retryable.
"""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import Future
from dataclasses import replace

import azure.durable_functions as df
import azure.functions as func

import app_runtime
from activities import remote, runs
from tower import logcontext, names, telemetry
from tower.contracts import CancelRequest, Observed, PollRequest, ServiceReport, SubmitOutcome, SubmitRequest
from tower.platforms.base import Status
from tower.redact import redact
from tower.runs.ledger import is_cancelled
from tower.states import RemoteState
from tower.timestamps import iso, parse_iso, utcnow

bp = df.Blueprint()
log = logging.getLogger("tower.activities")


@bp.function_name(names.SUBMIT_SERVICE)
@bp.activity_trigger(input_name="request")
@bp.durable_client_input(client_name="client")
async def submit_service(request: dict, client: df.DurableOrchestrationClient, context: func.Context) -> dict:
    """Start one attempt and watch it until `watch_until` (see `remote.linger`): {handle, status}; the
    handle is None when the run was cancelled before the submit (nothing is started then).
    request: a `SubmitRequest` (its report: see `_report_if_done`)."""
    _begin(context, request)
    asked, loop = SubmitRequest.from_json(request), asyncio.get_running_loop()
    telemetry.attempt_failed(asked)

    def submit(adapter):
        if _cancelled(asked.report):
            return None, Status(RemoteState.CANCELLED, message="run cancelled before it was submitted"), None
        keys = app_runtime.current().push_keys
        handle = adapter.submit(remote.submission(remote.with_callback(asked.platform, asked.submission.to_json(),
                                                                       keys)))
        remote.pushable(asked.platform, asked.submission.run_id, asked.submission.service, handle, keys)
        status = remote.linger(adapter, handle, adapter.poll(handle), _budget(asked.watch_until),
                               stopped=lambda: _cancelled(asked.report))
        return handle, status, _report_if_done(asked.report, status, client, loop, remote_id=handle.remote_id,
                                               url=handle.url)

    handle, status, acting = await remote.call(asked.platform, submit, telemetry.about(asked))
    if handle is None:
        return SubmitOutcome(None, Observed.of(status)).to_json()
    return SubmitOutcome(handle, await _reported(asked.report, remote.observed(status), acting)).to_json()


@bp.function_name(names.POLL_SERVICE)
@bp.activity_trigger(input_name="request")
@bp.durable_client_input(client_name="client")
async def poll_service(request: dict, client: df.DurableOrchestrationClient, context: func.Context) -> dict:
    """Where the remote work is now: a Status as JSON. request: a `PollRequest`. The first look
    at work submitted at dispatch (`first`) reads the run's
    cancel flag before anything else, like a submit: a cancel that came while the service run was
    being started, and found no instance to tell, still stops the work. `watch_until`: watch the
    work until then (see `remote.linger`), a look every `look` seconds if given, and stop watching
    early when the run's cancel flag is set (read every `remote.CANCEL_CHECK` seconds of a watch)."""
    _begin(context, request)
    asked, loop = PollRequest.from_json(request), asyncio.get_running_loop()
    handle = asked.handle

    def poll(adapter):
        if asked.first and _cancelled(asked.report):
            adapter.cancel(handle)
            return Status(RemoteState.CANCELLED, message="run cancelled while the service was starting"), None
        status = remote.linger(adapter, handle, adapter.poll(handle), _budget(asked.watch_until), asked.look,
                               stopped=lambda: _cancelled(asked.report))
        return status, _report_if_done(asked.report, status, client, loop)

    status, acting = await remote.call(asked.platform, poll, telemetry.about(asked))
    return (await _reported(asked.report, remote.observed(status), acting)).to_json()


def _begin(context: func.Context, request: dict) -> None:
    """Log as this invocation, of the request's run and service where it names them."""
    about = request.get("report") or request.get("submission") or request
    service = about.get("service") or (about.get("result") or {}).get("service")
    logcontext.begin(context, about.get("run_id"), service)


def _cancelled(report: ServiceReport | None) -> bool:
    """Has the run of this request (its report's) been cancelled? (Read from the run ledger.) A
    ledger that cannot be read now counts as "not cancelled": the flag is a safety net behind the
    cancel signal, and a store hiccup must not fail or stop healthy work."""
    if report is None:
        return False
    try:
        return is_cancelled(app_runtime.current().ledger, report.run_id)
    except Exception as exc:
        log.warning("%s: could not read the run's cancel flag, going on: %s", report.run_id, redact(str(exc)))
        return False


def _budget(watch_until: str | None) -> float:
    """Seconds left to watch the work here (`remote.linger`), until the request's `watch_until`."""
    until = parse_iso(watch_until)
    return (until - utcnow()).total_seconds() if until else 0.0


def _report_if_done(report: ServiceReport | None, status: Status, client, loop, **known) -> Future | None:
    """When the work succeeded (or was skipped), report the service's end to the run ledger right
    here, on the thread that saw it (`runs.report_here`): its dependents' work starts one
    orchestrator episode and one activity earlier than `service_run` could start it (in Azure, two
    queue hops). `report` has the result so far. Not after the service's deadline (`before`):
    `service_run` decides then (it times the service out). A report that fails is left to
    `service_run`, which reports with retries. Returns the future of the report's `act`, or None."""
    if report is None or status.state not in (RemoteState.SUCCEEDED, RemoteState.SKIPPED):
        return None
    if report.before and utcnow() > parse_iso(report.before):
        return None
    result = replace(report.result, **{k: v for k, v in known.items() if v}).settled(status, iso(utcnow()))
    try:
        return runs.report_here(report.with_result(result), client, loop)
    except Exception as exc:  # service_run reports again, with retries
        log.warning("%s/%s: early report failed, service_run will report: %s", report.run_id,
                    result.service, redact(str(exc)))
        return None


async def _reported(report: ServiceReport | None, observed: Observed, acting: Future | None) -> Observed:
    """Wait for what an early report started (`act`); `observed`, marked `reported` if it went
    through, which tells `service_run` not to report again. If it failed, `service_run` reports
    again (the repeated report starts the service runs that are missing)."""
    if acting is None:
        return observed
    try:
        await asyncio.wrap_future(acting)
    except Exception as exc:
        log.warning("%s: starting what an early report dispatched failed, service_run will report: %s",
                    report.run_id, redact(str(exc)))
        return observed
    return replace(observed, reported=True)


@bp.function_name(names.CANCEL_SERVICE)
@bp.activity_trigger(input_name="request")
async def cancel_service(request: dict, context: func.Context) -> bool:
    """Stop the remote work (idempotent). request: a `CancelRequest`."""
    _begin(context, request)
    asked = CancelRequest.from_json(request)
    await remote.call(asked.platform, lambda adapter: adapter.cancel(asked.handle), telemetry.about(asked))
    return True
