"""`pipeline_run` (one run of a frozen plan) and `service_run` (one service: watch, retry, done).

Both are deterministic generators: time comes from `context.current_utc_datetime`, there is no I/O,
and they log only when not replaying.

No history grows with the pipeline (docs/architecture.md, "Dispatch"): `pipeline_run` does not hear of each
service. It opens the run in the ledger (`tower.runs.ledger`), which starts the first services, and
waits for the end or a cancel. Each `service_run` is its own orchestration, started with its first
attempt already submitted; when it ends, it reports to the ledger, and that report submits and
starts the services that became ready, by the rules of `tower.runs.scheduler`. So a decision costs one
short transaction, not a replay of the whole run, and a dependent's work is submitted in the
activity that saw its last dependency end.

Shim safety (docs/architecture.md, "Dispatch"): no orchestrator holds one service behind another,
and a timer that lost a race is cancelled, so no top-level action waits behind a pending one.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from datetime import datetime, timedelta

import azure.durable_functions as df
from azure.durable_functions.models.Task import LongTimerTask, TaskState, TimerTask

from tower import names
from tower.catalog.durations import format_duration
from tower.contracts import (
    CancelRequest,
    Observed,
    PollRequest,
    RunReference,
    RunRequest,
    ServiceJob,
    ServiceReport,
    ServiceResult,
    StepSummary,
    SubmitOutcome,
    SubmitRequest,
)
from tower.errors import PlatformError, RunNotInLedger
from tower.platforms.base import Handle
from tower.polling import next_poll
from tower.states import TERMINAL_STATES, RemoteState, RunState, ServiceState
from tower.timestamps import iso, parse_iso

bp = df.Blueprint()
log = logging.getLogger("tower.orchestrators")

MAX_POLL_ERRORS = 5  # transient poll failures in a row before a service is given up on
# Ledger steps are short and idempotent: a store hiccup is tried again, 1 s apart, for ~10 s.
LEDGER_RETRY = df.RetryOptions(first_retry_interval_in_milliseconds=1000, max_number_of_attempts=10)
RECONCILE_FIRST, RECONCILE_MAX = 60.0, 1800.0  # seconds: pipeline_run checks a long run this often


def _failed(task) -> bool:
    return task.state is TaskState.FAILED


def _reported(task) -> bool:
    """Did this submit or poll activity report the service's success to the ledger itself?"""
    if _failed(task):  # its result is then the failure's text
        return False
    looked = task.result["status"] if "handle" in task.result else task.result   # a SubmitOutcome, or Observed
    return Observed.from_json(looked).reported


# --- pipeline_run ---------------------------------------------------------------------------------


@bp.function_name(names.PIPELINE_RUN)
@bp.orchestration_trigger(context_name="context")
def pipeline_run(context: df.DurableOrchestrationContext):
    """Open the run in the ledger, wait for its end (or a cancel), return the run's outcome.

    Its input is a reference to a plan stored in the ledger (`tower.runs.ledger.plan_reference`), and
    its output the outcome without a per-service list (`tower.runs.ledger.run_result`): no message of
    it grows with the run. While it waits it reconciles the run now and then (after 1 min,
    doubling up to 30 min), so that a start or a report lost to an outage, or a terminated
    service run, cannot hang the run."""
    reference = RunReference.from_json(context.get_input())
    run_id = reference.run_id
    started = context.current_utc_datetime
    finished = context.wait_for_external_event(names.RUN_FINISHED_EVENT)
    cancel = context.wait_for_external_event(names.CANCEL_EVENT)
    context.set_custom_status({"run_id": run_id, "status": RunState.RUNNING, "started": iso(started)})
    step = StepSummary.from_json((yield context.call_activity_with_retry(
        names.OPEN_RUN, LEDGER_RETRY, RunRequest(run_id, started=iso(started)).to_json())))
    if step.error:
        raise RunNotInLedger(step.error)
    if not context.is_replaying:
        log.info("run %s: %d service(s) started", run_id, step.started)
    pause = float(reference.reconcile_after or RECONCILE_FIRST)
    while not step.done:
        timer = context.create_timer(context.current_utc_datetime + timedelta(seconds=pause))
        winner = yield context.task_any([finished, timer] + ([] if cancel.is_completed else [cancel]))
        if winner is timer:
            step = yield from _in_steps(context, names.RECONCILE_RUN, run_id)
            pause = min(pause * 2, RECONCILE_MAX)
            continue
        timer.cancel()  # a timer left pending would hold later actions (shim safety)
        if winner is finished:
            break
        step = yield from _in_steps(context, names.CANCEL_RUN, run_id)
        if not context.is_replaying:
            log.info("run %s: cancel requested, stopping %d running service(s)", run_id, step.stopping)
    result = yield context.call_activity_with_retry(
        names.RUN_RESULT, LEDGER_RETRY, RunRequest(run_id, finished=iso(context.current_utc_datetime)).to_json())
    context.set_custom_status({"run_id": run_id, "status": result["status"], "started": result["started"]})
    if not context.is_replaying:
        log.info("run %s: %s", run_id, result["status"])
    return result


def _in_steps(context: df.DurableOrchestrationContext, activity: str, run_id: str):
    """Call a reconcile or cancel activity until it has named every running service: each call
    handles a bounded page of them (`tower.runs.ledger.STEP_SERVICES`) and says where to go on (`more`).
    Returns the last summary, with `stopping` summed."""
    step = StepSummary.from_json((yield context.call_activity_with_retry(
        activity, LEDGER_RETRY, RunRequest(run_id).to_json())))
    stopping = step.stopping
    while step.more is not None:
        step = StepSummary.from_json((yield context.call_activity_with_retry(
            activity, LEDGER_RETRY, RunRequest(run_id, after=step.more).to_json())))
        stopping += step.stopping
    return replace(step, stopping=stopping)


# --- service_run ----------------------------------------------------------------------------------


class _Stop(Exception):
    """Cancel or deadline won a race: `reason` says which."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


class _ServiceRun:
    """The state of one `service_run` replay; its generator methods are driven by `service_run`."""

    def __init__(self, context: df.DurableOrchestrationContext, job: ServiceJob):
        self.context, self.job = context, job
        self.platform = job.platform
        self.first = job.first  # attempt 1, submitted when the service was dispatched
        self.began = parse_iso(self.first.at) if self.first else context.current_utc_datetime
        self.cancel_event = context.wait_for_external_event(names.CANCEL_EVENT)
        timeout = job.timeout
        self.deadline_at = self.began + timedelta(seconds=timeout) if timeout else None
        self.deadline = context.create_timer(self.deadline_at) if timeout else None
        self.result = ServiceResult(job.service, started=iso(self.began))  # replaced as the run goes on
        self.reported = False  # submit or poll already told the ledger the service succeeded
        self.pushed = context.wait_for_external_event(names.REMOTE_ENDED_EVENT)  # see wait_or_push
        self.previous = None  # the attempt that failed before this one: its submit reports it (telemetry)

    def now(self) -> datetime:
        return self.context.current_utc_datetime

    def race(self, work, wake=None):
        """Wait for `work` unless cancel or the deadline comes first (then raise _Stop), or `wake`
        (a push that the remote work ended: then a timer `work` is cancelled and `wake` returned).

        A timer that lost is cancelled; an activity that lost is still awaited, because its
        outcome (a handle) may be needed to cancel the remote work.
        """
        guards = [self.cancel_event] + ([self.deadline] if self.deadline else [])
        winner = yield self.context.task_any([work, *([wake] if wake is not None else []), *guards])
        if winner is work:
            return work
        if winner is wake:
            work.cancel()   # a timer left pending would hold later actions (shim safety)
            return wake
        if isinstance(work, (TimerTask, LongTimerTask)):   # over maximumShortTimerDuration: a LongTimerTask
            if not work.is_completed:
                work.cancel()
        else:
            if not work.is_completed:
                yield self.context.task_any([work])
            if _reported(work):  # it saw the work succeed and told the ledger: that stands
                return work
        raise _Stop("cancel" if winner is self.cancel_event else "deadline")

    def wait(self, seconds: float):
        yield from self.race(self.context.create_timer(self.now() + timedelta(seconds=max(seconds, 0.0))))

    def wait_or_push(self, seconds: float):
        """Wait until the next poll is due, or until a platform pushes that the remote work ended
        (`REMOTE_ENDED_EVENT`, tower.push): then poll at once. Each push is consumed once, so the
        next wait listens for the next one (a repeated or stale push costs one poll)."""
        timer = self.context.create_timer(self.now() + timedelta(seconds=max(seconds, 0.0)))
        if (yield from self.race(timer, self.pushed)) is self.pushed:
            self.pushed = self.context.wait_for_external_event(names.REMOTE_ENDED_EVENT)

    def watch_until(self, seconds: float = 0.0) -> str:
        """Until when a look may watch the work itself: the first look (a submit, or the first poll
        of work submitted at dispatch) for the platform's linger, a poll across the window of the
        expected end for `seconds`; never past the deadline (a success seen after it would
        contradict the timeout)."""
        seconds = max(seconds, self.job.poll.linger)
        until = self.now() + timedelta(seconds=seconds)
        return iso(min(until, self.deadline_at) if self.deadline_at else until)

    def report(self, first_look: bool = False) -> ServiceReport:
        """What REPORT_SERVICE gets, with the result so far; submit and poll get it too, so that they
        can report a success the moment they see it (then `reported` is set), but not after the
        deadline, except at the first look at work submitted at dispatch: the deadline counts from
        that submit, and a service run started late (queues, an outage) must not fail work that
        was done by then."""
        before = iso(self.deadline_at) if self.deadline_at and not first_look else None
        return ServiceReport(self.job.run_id, self.job.pipeline, self.result, self.job.simulated, before)

    def show(self) -> None:
        r = self.result
        self.context.set_custom_status({"s": r.status or ServiceState.RUNNING, "a": r.attempts,
                                        "rid": r.remote_id, "url": r.url})

    def attempt(self, number: int):
        """One attempt: submit (unless it was submitted at dispatch), then poll until terminal.
        Returns (the last Observed, or None with the PlatformError the attempt failed with)."""
        submitted = self.first if number == 1 else None
        self.result = replace(self.result, attempts=number,
                              attempt_started=submitted.at if submitted else iso(self.now()))
        handle = submit = None
        try:
            if submitted:
                handle, status = submitted.handle, Observed(RemoteState.RUNNING, poll_after=0.0)
            else:
                submit = self.context.call_activity(names.SUBMIT_SERVICE, SubmitRequest(
                    self.platform, self.job.submission(number), self.watch_until(), self.report(),
                    self.previous).to_json())
                yield from self.race(submit)
                if _failed(submit):
                    return None, PlatformError.from_activity_failure(submit.result)
                outcome = SubmitOutcome.from_json(submit.result)
                handle, status = outcome.handle, outcome.status
                if handle is None:  # the run was cancelled before the work was submitted
                    return status, None
            self.result = replace(self.result, remote_id=handle.remote_id, url=status.url or handle.url)
            self.show()
            poll = self.job.poll
            interval, factor, longest = poll.first, poll.factor, poll.max
            expect = self.job.expect
            submitted_at = parse_iso(self.result.attempt_started)
            errors = 0
            first_look = submitted is not None  # until one succeeds, polls read the cancel flag, as a submit does
            while status.state not in TERMINAL_STATES:
                delay, watch = status.poll_after, None
                if delay is None and expect is not None and not errors:   # dense looks where the end is likely
                    watch = next_poll((self.now() - submitted_at).total_seconds(), expect, first=interval,
                                      factor=factor, longest=longest, scale=poll.scale)
                    delay = watch.delay
                elif delay is None:
                    delay, interval = interval, min(interval * factor, longest)
                elif status.observed_at:  # the platform's hint counts from when it was asked
                    delay -= (self.now() - parse_iso(status.observed_at)).total_seconds()
                if delay > 0:
                    yield from self.wait_or_push(delay)
                first = {"first": True, "watch_until": self.watch_until()} if first_look else {}
                if watch is not None and watch.watch > 0:
                    first.update(watch_until=self.watch_until(watch.watch), look=watch.look)
                polled = self.context.call_activity(names.POLL_SERVICE, PollRequest(
                    self.platform, handle, self.report(first_look), **first).to_json())
                yield from self.race(polled)
                if _failed(polled):
                    failure = PlatformError.from_activity_failure(polled.result)
                    errors += 1
                    if not failure.retryable or errors >= MAX_POLL_ERRORS:
                        yield from self.cancel_remote(handle)
                        return None, failure
                    status = Observed(RemoteState.RUNNING)
                    continue
                errors, status, first_look = 0, Observed.from_json(polled.result), False
            return status, None
        except _Stop:
            if handle is None and submit is not None and submit.is_completed and not _failed(submit) \
                    and submit.result["handle"]:
                handle = SubmitOutcome.from_json(submit.result).handle
                self.result = replace(self.result, remote_id=handle.remote_id)
            if handle is not None:
                yield from self.cancel_remote(handle)
            raise

    def cancel_remote(self, handle: Handle):
        """Best effort: a failed cancel is noted in the error, never raised."""
        try:
            yield self.context.call_activity(names.CANCEL_SERVICE, CancelRequest(
                self.platform, handle, self.job.run_id, self.job.service, self.result.attempts).to_json())
        except Exception as exc:
            note = f"could not cancel remote run {handle.remote_id}: {PlatformError.from_activity_failure(exc)}"
            self.result = replace(self.result, output=note)
            if not self.context.is_replaying:
                log.warning("%s/%s: %s", self.job.run_id, self.job.service, note)

    def run(self):
        retry = self.job.retry
        retries = retry.retries
        try:
            number = 0
            while True:
                number += 1
                status, failure = yield from self.attempt(number)
                result = self.result
                if status is not None:
                    if status.state in (RemoteState.SUCCEEDED, RemoteState.SKIPPED):
                        self.result = result.settled(status, iso(self.now()))
                        self.reported = status.reported
                        break
                    result = self.result = replace(result, output=status.output or result.output,
                                                   url=status.url or result.url)
                    if status.state == RemoteState.CANCELLED:
                        self.result = replace(result, status=ServiceState.CANCELLED,
                                              error=status.message or "cancelled on the platform")
                        break
                    failure = PlatformError.of(status.message or f"ended {status.state}",
                                               retryable=status.retryable, platform=self.platform.name)
                if not failure.retryable or number > retries:
                    gave_up = failure.retryable and retries
                    self.result = replace(result, status=ServiceState.FAILED, error=f"{failure} (gave up after "
                                          f"{number} attempts)" if gave_up else str(failure))
                    break
                self.result = result = replace(result, error=str(failure))
                self.show()
                self.previous = {"attempt": number, "started": result.attempt_started, "finished": iso(self.now()),
                                 "error": result.error, "remote_id": result.remote_id, "url": result.url}
                yield from self.wait(retry.delay(number))
        except _Stop as stop:
            if stop.reason == "cancel":
                self.result = replace(self.result, status=ServiceState.CANCELLED, error="cancelled")
            else:
                self.result = replace(self.result, status=ServiceState.FAILED,
                                      error=f"timed out after {format_duration(self.job.timeout)}")
        if self.deadline is not None and not self.deadline.is_completed:
            self.deadline.cancel()
        self.result = result = replace(self.result, finished=iso(self.now()))
        self.show()
        if not self.context.is_replaying:
            log.info("%s/%s: %s after %d attempt(s)", self.job.run_id, self.job.service,
                     result.status, result.attempts)
        if not self.reported:
            try:
                yield self.context.call_activity_with_retry(names.REPORT_SERVICE, LEDGER_RETRY, self.report().to_json())
            except Exception as exc:  # the ledger is out of reach: pipeline_run's reconcile reads this result
                if not self.context.is_replaying:
                    log.error("%s/%s: could not report to the run ledger: %s", self.job.run_id,
                              self.job.service, PlatformError.from_activity_failure(exc))
        return result.to_json()


@bp.function_name(names.SERVICE_RUN)
@bp.orchestration_trigger(context_name="context")
def service_run(context: df.DurableOrchestrationContext):
    """One service of a run: submit, poll with durable timers, retry with backoff, honour the
    deadline and a `cancel` event, then report to the run's ledger (which starts what became ready).
    Returns a `ServiceResult` as JSON; a service's own
    failure is in that result, never raised, so the run always learns why."""
    return (yield from _ServiceRun(context, ServiceJob.from_json(context.get_input())).run())
