"""Activities that keep a run's ledger (`tower.runs.ledger`) and act on what it decides: submit the
services that became ready and start their service runs, stop running ones on cancel, wake
`pipeline_run` when all ended.

They run in the Functions host with a Durable client, because a Python orchestrator cannot start
another top-level orchestration or raise an event on one. Each is idempotent (activities run at
least once): the ledger ignores a repeated change, and a service run the ledger has running is
started again only if its instance does not exist (see `act`). Ledger and history calls block, so
they run off the event loop that every async activity shares. Each takes its `func.Context`, so
that what it logs from other threads and tasks names its invocation (`tower.logcontext`).
"""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import Future
from dataclasses import replace

import azure.durable_functions as df
import azure.functions as func

import app_runtime
from activities import remote
from tower import durable_errors, logcontext, names, telemetry
from tower.contracts import RunRequest, ServiceJob, ServiceReport, ServiceResult, StepSummary
from tower.errors import InstanceExists, InstanceGone, InstanceNotFound, RunNotInLedger
from tower.redact import redact
from tower.runs.index import run_ended
from tower.runs.ledger import (
    Step,
    cancel_run,
    finish_service,
    open_run,
    plan_outline,
    reconcile_run,
    run_result,
    run_services,
)
from tower.states import ENDED_RUNTIMES, RuntimeStatus, ServiceState
from tower.timestamps import parse_iso, utcnow

bp = df.Blueprint()
log = logging.getLogger("tower.activities")

# Waits before an event is tried again when its instance does not exist yet: a service run started
# just before a cancel may not be created when the signal goes out (~2 s in all).
SIGNAL_RETRY_DELAYS = (0.1, 0.2, 0.4, 0.6, 0.7)
START_RETRY_DELAYS = (0.5, 2.0, 5.0)  # seconds between tries to start a service run submitted at dispatch
# Durable client calls (lookups, signals) one activity has in flight at once: the SDK's one aiohttp
# session per worker allows 30 connections, shared with every other activity in that worker.
CLIENT_CALLS = 16


async def act(client: df.DurableOrchestrationClient, run_id: str, step: Step) -> StepSummary:
    """Do what `step` asks; returns its summary for the orchestrator (`more`: ask the ledger again
    from there, see `Step`).

    `start`: submit each service's first attempt (`remote.submit_all`) and start its service run
    with the handle, all side by side, the most urgent first in line; every dispatch settles before
    an error is raised, so a retry of this activity never submits beside a submit still in flight.
    `ensure`: look each up, `CLIENT_CALLS` at a time; start it if it does not exist (a report died
    before starting it; its service run then submits with the same idempotency key) unless its
    dispatch may still be submitting (`step.dispatching`, kept by the ledger for every host); report
    it if it ended without its end reaching the ledger (its report failed, or it was terminated);
    never start an ended one again, which would run the service twice. `stop`: send `cancel`,
    `CLIENT_CALLS` at a time. `done`: wake pipeline_run.
    """
    done, status = step.done, step.status
    submitted = remote.submit_all(step.start)
    outcomes = await asyncio.gather(
        *(_dispatch(client, run_id, iid, job, submitted[iid]) for iid, job in step.start.items()),
        return_exceptions=True)
    failed = [(iid, outcome) for iid, outcome in zip(step.start, outcomes, strict=True) if isinstance(outcome, BaseException)]
    for iid, error in failed:  # each by name: the activity fails with the first alone
        log.warning("run %s: could not start service run %s: %s", run_id, iid, redact(str(error)))
    if failed:
        raise failed[0][1]
    started = sum(outcomes)
    calls = asyncio.Semaphore(CLIENT_CALLS)
    ensured = await asyncio.gather(*(_ensure(client, run_id, iid, job, iid in step.dispatching, calls)
                                     for iid, job in step.ensure.items()))
    for later in ensured:
        if isinstance(later, Step):
            summary = await act(client, run_id, later)
            started, done, status = started + summary.started, summary.done, summary.status
        else:
            started += later
    if step.stop:
        await raise_events(client, step.stop, names.CANCEL_EVENT, calls=calls)
    if step.done:
        await raise_events(client, [run_id], names.RUN_FINISHED_EVENT, retry_delays=())
    return StepSummary(started, len(step.stop), done, status, step.more)


async def _ensure(client: df.DurableOrchestrationClient, run_id: str, instance_id: str, job: ServiceJob,
                  dispatching: bool, calls: asyncio.Semaphore) -> int | Step:
    """One service the ledger has running (see `act`): 1 if its missing service run was started,
    the ledger's next step if its service run had ended unreported, else 0."""
    logcontext.about(run_id, job.service)  # this task's lines name the service
    async with calls:
        instance = await client.get_status(instance_id)
    runtime = _runtime(instance)
    if runtime is None and not dispatching:
        async with calls:
            return await _start(client, run_id, instance_id, job)
    if runtime not in ENDED_RUNTIMES:
        return 0
    log.warning("run %s: service run %s ended %s without its end reaching the ledger; recording it",
                run_id, instance_id, runtime)
    if runtime == RuntimeStatus.COMPLETED and isinstance(instance.output, dict):
        result = ServiceResult.from_json(instance.output)
    else:
        result = ServiceResult(job.service, ServiceState.FAILED,
                               error=f"its service run ended {runtime.lower()}: {instance.output or 'no reason given'}")
    result = _redacted(result)
    later = await remote.off_loop(finish_service, app_runtime.current().ledger, run_id, job.service, result, utcnow())
    telemetry.service_finished(run_id, job.pipeline, result)
    return later


def _runtime(instance) -> str | None:
    """An instance's runtime status as text (None: no such instance)."""
    runtime = getattr(instance, "runtime_status", None) if instance else None
    return getattr(runtime, "value", runtime)


async def _dispatch(client: df.DurableOrchestrationClient, run_id: str, instance_id: str, job: ServiceJob,
                    submit: Future) -> int:
    """Start a ready service's run with the handle of its first attempt, once `submit` is done.
    A start that fails is tried again here, after each of `START_RETRY_DELAYS`: only this call
    has the handle (a later start would submit again and, if the run was cancelled meanwhile,
    leave the work submitted here running). A failed start may have taken effect with only its reply
    lost, so the instance is looked up first: a service run that already ended would otherwise be
    replaced (a start overrides an ended instance) and watch its work a second time."""
    try:
        first = await asyncio.wrap_future(submit)
        for delay in (*START_RETRY_DELAYS, None):
            try:
                return await _start(client, run_id, instance_id, job.with_first(first))
            except Exception as exc:
                if delay is None:
                    raise
                log.warning("run %s: starting service run %s failed, trying again: %s", run_id, instance_id,
                            redact(str(exc)))
                await asyncio.sleep(delay)
                if await _started(client, instance_id):
                    log.info("run %s: service run %s was started; only the reply was lost", run_id, instance_id)
                    return 1
    finally:
        app_runtime.current().ledger.dispatches.settled([instance_id])


async def _started(client: df.DurableOrchestrationClient, instance_id: str) -> bool:
    """Did a failed start take effect? No when the lookup fails as well: the start is tried again."""
    try:
        return await durable_errors.instance_exists(client, instance_id)
    except Exception:
        return False


async def _start(client: df.DurableOrchestrationClient, run_id: str, instance_id: str, job: ServiceJob) -> int:
    try:
        with durable_errors.translated():
            await client.start_new(names.SERVICE_RUN, instance_id, job.to_json())
    except InstanceExists:
        log.info("run %s: service run %s already started", run_id, instance_id)
        return 0
    return 1


@bp.function_name(names.OPEN_RUN)
@bp.activity_trigger(input_name="request")
@bp.durable_client_input(client_name="client")
async def open_run_activity(request: dict, client: df.DurableOrchestrationClient, context: func.Context) -> dict:
    """Start the run stored in the ledger (`tower.runs.ledger.store_plan`): its first services.
    request: a `RunRequest` with `started`. A run whose plan is not there answers a summary with
    only its `error` at once: no retry can bring a plan back, so the run fails with that error
    instead of after ten tries."""
    asked = RunRequest.from_json(request)
    run_id = asked.run_id
    logcontext.begin(context, run_id)
    runtime = app_runtime.current()
    ledger = runtime.ledger
    try:
        step = await remote.off_loop(open_run, ledger, run_id, parse_iso(asked.started))
    except RunNotInLedger:
        return StepSummary(error=f"run {run_id!r} has no plan in the run ledger ({ledger.location}): a run is "
                                 "started with its plan stored first (tower.runs.ledger.store_plan); start the "
                                 "run again").to_json()
    plan = await remote.off_loop(plan_outline, ledger, run_id)  # what the start's events need of it
    telemetry.run_started(plan, asked.started)
    await remote.off_loop(runtime.notifier.run_started, plan, asked.started)  # an outbox write: off the loop
    await remote.off_loop(runtime.deadlines.watch, run_id, utcnow())  # late from the start?
    return (await act(client, run_id, step)).to_json()


@bp.function_name(names.REPORT_SERVICE)
@bp.activity_trigger(input_name="request")
@bp.durable_client_input(client_name="client")
async def report_service_activity(request: dict, client: df.DurableOrchestrationClient,
                                  context: func.Context) -> dict:
    """A service run ended: keep its attempt in the run history (not for a what-if), record its end
    in the ledger, submit and start what became ready. request: a `ServiceReport`."""
    report = ServiceReport.from_json(request)
    logcontext.begin(context, report.run_id, report.service)
    return (await act(client, report.run_id, await remote.off_loop(record_report, report))).to_json()


def record_report(report: ServiceReport) -> Step:
    """The blocking part of a report: the history row, then the ledger change."""
    runtime, result = app_runtime.current(), _redacted(report.result)
    if not report.simulated and result.attempts:
        runtime.history.record(history_row(report, result))
    step = finish_service(runtime.ledger, report.run_id, result.service, result, utcnow())
    telemetry.service_finished(report.run_id, report.pipeline, result)
    runtime.notifier.service_failed(report.run_id, report.pipeline, result)
    runtime.deadlines.watch(report.run_id, utcnow())  # at risk now? (tower.deadlines)
    return step


def report_here(report: ServiceReport, client: df.DurableOrchestrationClient,
                loop: asyncio.AbstractEventLoop) -> Future:
    """A report from the platform thread that saw the service succeed (the submit and poll
    activities' early report): the ledger change right here, then `act` on the event loop submits
    what became ready and starts their service runs. Returns the future of `act`."""
    step = record_report(report)

    async def acting() -> StepSummary:
        logcontext.tag_task(asyncio.current_task())  # its lines name this invocation
        return await act(client, report.run_id, step)

    work = acting()
    try:
        return asyncio.run_coroutine_threadsafe(work, loop)
    except BaseException:  # no act will dispatch them: an `ensure` may start them again
        work.close()
        app_runtime.current().ledger.dispatches.settled(step.start)
        raise


@bp.function_name(names.RECONCILE_RUN)
@bp.activity_trigger(input_name="request")
@bp.durable_client_input(client_name="client")
async def reconcile_run_activity(request: dict, client: df.DurableOrchestrationClient, context: func.Context) -> dict:
    """Now and then while a run goes on: dispatch what is ready and check on what the ledger has
    running (see `act`), so a lost start or a lost report cannot hang the run. request: a
    `RunRequest`, its `after` the `more` of the call before (a run with more running than one step
    names)."""
    asked = RunRequest.from_json(request)
    logcontext.begin(context, asked.run_id)
    runtime = app_runtime.current()
    step = await remote.off_loop(reconcile_run, runtime.ledger, asked.run_id, utcnow(),
                                 -1 if asked.after is None else asked.after)
    await remote.off_loop(runtime.deadlines.watch, asked.run_id, utcnow())  # a long silence moves the end too
    return (await act(client, asked.run_id, step)).to_json()


@bp.function_name(names.CANCEL_RUN)
@bp.activity_trigger(input_name="request")
@bp.durable_client_input(client_name="client")
async def cancel_run_activity(request: dict, client: df.DurableOrchestrationClient, context: func.Context) -> dict:
    """Stop dispatching, cancel what has not started, send `cancel` to what runs. request: a
    `RunRequest` (as for `reconcile_run_activity`)."""
    asked = RunRequest.from_json(request)
    logcontext.begin(context, asked.run_id)
    step = await remote.off_loop(cancel_run, app_runtime.current().ledger, asked.run_id, utcnow(),
                                 -1 if asked.after is None else asked.after)
    return (await act(client, asked.run_id, step)).to_json()


@bp.function_name(names.RUN_RESULT)
@bp.activity_trigger(input_name="request")
def run_result_activity(request: dict, context: func.Context) -> dict:
    """The run's outcome (`tower.runs.ledger.run_result`: counts and the first failures, never every
    service), read from the ledger once every service ended. request: a `RunRequest` with
    `finished`."""
    asked = RunRequest.from_json(request)
    logcontext.begin(context, asked.run_id)
    runtime, finished = app_runtime.current(), parse_iso(asked.finished)
    ledger = runtime.ledger
    result = run_result(ledger, asked.run_id, finished)
    whole = {**result, "services": run_services(ledger, asked.run_id, finished) or {}}  # for the counts
    telemetry.run_finished(whole)
    runtime.notifier.run_finished(whole)
    run_ended(runtime.runs_index, result)  # the runs index keeps the run's end (listings, and its id used for good)
    return result


def _redacted(result: ServiceResult) -> ServiceResult:
    """A result whose error and output can be shown to anyone who may read run status."""
    return replace(result, error=result.error and redact(result.error), output=result.output and redact(result.output))


def history_row(report: ServiceReport, result: ServiceResult) -> dict:
    """One finished service for the run-history store; its duration is its last attempt's."""
    return {
        "run_id": report.run_id,
        "pipeline": report.pipeline,
        "service": result.service,
        "status": result.status,
        "attempt": result.attempts or 1,
        "started": result.attempt_started or result.started,
        "finished": result.finished,
        "remote_id": result.remote_id,
        "error": result.error,
    }


async def raise_events(client, instances: list[str], event: str,
                       retry_delays: tuple[float, ...] = SIGNAL_RETRY_DELAYS,
                       calls: asyncio.Semaphore | None = None) -> list[str]:
    """Raise `event` on each instance, `calls` at a time (default `CLIENT_CALLS`); returns the ones
    reached. A finished instance is skipped; one not found is tried again after each of
    `retry_delays` (it may be about to start) before it is. A waiting retry holds no call slot."""
    calls = calls or asyncio.Semaphore(CLIENT_CALLS)

    async def signal(instance_id: str) -> bool:
        for delay in (*retry_delays, None):
            try:
                async with calls:
                    with durable_errors.translated():
                        await client.raise_event(instance_id, event, None)  # the event is the message
            except InstanceNotFound:
                if delay is not None:
                    await asyncio.sleep(delay)
                    continue
                log.info("signal %s: %s never started (or was purged)", event, instance_id)
                return False
            except InstanceGone:
                log.info("signal %s: %s already finished", event, instance_id)
                return False
            return True
        return False

    reached = await asyncio.gather(*(signal(instance_id) for instance_id in instances))
    return [instance_id for instance_id, ok in zip(instances, reached, strict=True) if ok]
