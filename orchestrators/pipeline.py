"""`pipeline_run` (one run of a frozen plan) and `service_run` (one service: submit, poll, done).

Both are deterministic generators: time comes from `context.current_utc_datetime`, there is no I/O,
and they log only when not replaying. The scheduling rules live in `tower.scheduler`; this module
is the Durable plumbing around them.

Shim safety (ARCHITECTURE decision 2): the Durable extension awaits the orchestrator's top-level
actions one after the other. Every yield that starts new work therefore carries a zero-delay timer,
so that action completes at once and a service that becomes ready is never held behind an earlier
`task_any`. In `service_run`, a timer that lost a race is cancelled for the same reason.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

import azure.durable_functions as df
from azure.durable_functions.models.Task import TaskState, TimerTask

from tower import names
from tower.catalog.durations import format_duration
from tower.catalog.model import RetryPolicy
from tower.platforms.base import CANCELLED as REMOTE_CANCELLED
from tower.platforms.base import SKIPPED as REMOTE_SKIPPED
from tower.platforms.base import SUCCEEDED as REMOTE_SUCCEEDED
from tower.platforms.base import TERMINAL_STATES
from tower.scheduler import CANCELLED, FAILED, Scheduler, failure_from
from tower.timestamps import iso, parse_iso

bp = df.Blueprint()
log = logging.getLogger("tower.orchestrators")

MAX_POLL_ERRORS = 5  # transient poll failures in a row before a service is given up on


def _failed(task) -> bool:
    return task.state is TaskState.FAILED


# --- pipeline_run ---------------------------------------------------------------------------------


def service_input(plan: dict, name: str) -> dict:
    """What `service_run` gets: one service of the plan with its platform entry."""
    service = plan["services"][name]
    platform = {"name": service["platform"], **plan["platforms"][service["platform"]]}
    return {
        "run_id": plan["run_id"],
        "pipeline": plan["pipeline"],
        "service": name,
        "platform": platform,
        "spec": service["spec"],
        "params": service["params"],
        "timeout": service["timeout"],
        "retry": service["retry"],
    }


def _history_row(name: str, result: dict) -> dict:
    """One finished service for the run-history store; its duration is its last attempt's."""
    return {
        "service": name,
        "status": result["status"],
        "attempt": result.get("attempts") or 1,
        "started": result.get("attempt_started") or result.get("started"),
        "finished": result.get("finished"),
        "remote_id": result.get("remote_id"),
        "error": result.get("error"),
    }


@bp.function_name(names.PIPELINE_RUN)
@bp.orchestration_trigger(context_name="context")
def pipeline_run(context: df.DurableOrchestrationContext):
    """Run every service of the plan the moment its dependencies succeeded; returns the run result."""
    plan = context.get_input()
    scheduler = Scheduler(plan, context.current_utc_datetime)
    recording = not plan.get("simulated")  # a what-if must not teach real runs its durations
    cancel_event = context.wait_for_external_event(names.CANCEL_EVENT)
    watching_cancel = True
    running: dict[int, tuple[str, object]] = {}  # id(task) -> (service, task)
    to_record: list[dict] = []  # finished services for the run-history store
    bookkeeping: list = []  # cancel signals in flight, then the history write
    new_bookkeeping: list = []

    while not scheduler.done:
        now = context.current_utc_datetime
        started = scheduler.take_ready(now)
        for name in started:
            task = context.call_sub_orchestrator(
                names.SERVICE_RUN, service_input(plan, name), instance_id=plan["services"][name]["iid"]
            )
            running[id(task)] = (name, task)
        if not context.is_replaying:  # the status is only read at the end of an episode
            context.set_custom_status(scheduler.compact_status(now))
        if not running and not new_bookkeeping:
            raise RuntimeError(f"run {plan['run_id']}: services left that can never start (inconsistent plan)")

        waiting = [task for _, task in running.values()]
        if watching_cancel:
            waiting.append(cancel_event)
        if started or new_bookkeeping:
            waiting += [*new_bookkeeping, context.create_timer(now)]
            bookkeeping += new_bookkeeping
            new_bookkeeping = []
        winner = yield context.task_any(waiting)

        if winner is cancel_event:
            watching_cancel = False
            to_stop = scheduler.cancel(context.current_utc_datetime)
            if not context.is_replaying:
                log.info("run %s: cancel requested, stopping %d running service(s)", plan["run_id"], len(to_stop))
            if to_stop:
                signal = context.call_activity(names.SIGNAL_INSTANCES, {
                    "instances": [plan["services"][name]["iid"] for name in to_stop],
                    "event": names.CANCEL_EVENT})
                new_bookkeeping.append(signal)
            continue
        entry = running.pop(id(winner), None)
        if entry is None:
            continue  # the zero-delay timer, or bookkeeping
        name, task = entry
        if _failed(task):
            result = {"status": FAILED, "error": failure_from(task.result)["error"]}
        else:
            result = task.result
        scheduler.finish(name, result, context.current_utc_datetime)
        if recording and result.get("attempts"):
            to_record.append(_history_row(name, result))
        if not context.is_replaying:
            log.info("run %s: %s %s", plan["run_id"], name, scheduler.records[name].status)

    # History is written once, at the end: every activity completion would cost the parent one more
    # full replay. Signals still in flight are awaited too, so none is lost when the run ends.
    finished = context.current_utc_datetime
    record = None
    if to_record:
        record = context.call_activity(names.RECORD_SERVICE_RESULT, {
            "run_id": plan["run_id"], "pipeline": plan["pipeline"], "results": to_record})
        bookkeeping.append(record)
    outcome = scheduler.result(finished)
    context.set_custom_status(scheduler.compact_status(finished))
    try:
        yield context.task_all(bookkeeping)
    except Exception as exc:  # bookkeeping is a nicety: a store outage must not fail a finished run
        if not context.is_replaying:
            what = "record run history" if record is not None and _failed(record) else "deliver a cancel signal"
            log.warning("run %s: could not %s: %s", plan["run_id"], what, failure_from(exc)["error"])
    if not context.is_replaying:
        log.info("run %s: %s", plan["run_id"], outcome["status"])
    return outcome


# --- service_run ----------------------------------------------------------------------------------


class _Stop(Exception):
    """Cancel or deadline won a race: `reason` says which."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


class _ServiceRun:
    """The state of one `service_run` replay; its generator methods are driven by `service_run`."""

    def __init__(self, context: df.DurableOrchestrationContext, job: dict):
        self.context, self.job = context, job
        self.platform = job["platform"]
        self.began = context.current_utc_datetime
        self.cancel_event = context.wait_for_external_event(names.CANCEL_EVENT)
        timeout = job.get("timeout")
        self.deadline = context.create_timer(self.began + timedelta(seconds=timeout)) if timeout else None
        self.result = {"service": job["service"], "status": None, "attempts": 0, "started": iso(self.began),
                       "attempt_started": None, "finished": None, "remote_id": None, "url": None,
                       "error": None, "output": None}

    def now(self) -> datetime:
        return self.context.current_utc_datetime

    def race(self, work):
        """Wait for `work` unless cancel or the deadline comes first (then raise _Stop).

        A timer that lost is cancelled; an activity that lost is still awaited, because its
        outcome (a handle) may be needed to cancel the remote work.
        """
        guards = [self.cancel_event] + ([self.deadline] if self.deadline else [])
        winner = yield self.context.task_any([work, *guards])
        if winner is work:
            return work
        if isinstance(work, TimerTask):
            if not work.is_completed:
                work.cancel()
        elif not work.is_completed:
            yield self.context.task_any([work])
        raise _Stop("cancel" if winner is self.cancel_event else "deadline")

    def wait(self, seconds: float):
        yield from self.race(self.context.create_timer(self.now() + timedelta(seconds=max(seconds, 0.0))))

    def request(self, **fields) -> dict:
        return {"platform": self.platform, **fields}

    def show(self) -> None:
        r = self.result
        self.context.set_custom_status({"s": r["status"] or "running", "a": r["attempts"],
                                        "rid": r["remote_id"], "url": r["url"]})

    def attempt(self, number: int):
        """One attempt: submit, then poll until terminal. Returns (status json, failure or None)."""
        self.result["attempts"], self.result["attempt_started"] = number, iso(self.now())
        submission = {"run_id": self.job["run_id"], "service": self.job["service"], "attempt": number,
                      "spec": self.job["spec"], "params": self.job["params"]}
        handle = None
        try:
            submit = self.context.call_activity(names.SUBMIT_SERVICE, self.request(submission=submission))
            yield from self.race(submit)
            if _failed(submit):
                return None, failure_from(submit.result)
            handle, status = submit.result["handle"], submit.result["status"]
            self.result["remote_id"] = handle["remote_id"]
            self.result["url"] = status.get("url") or handle.get("url")
            self.show()
            poll = self.job["platform"]["poll"]
            interval, factor, longest = poll["first"], poll["factor"], poll["max"]
            errors = 0
            while status["state"] not in TERMINAL_STATES:
                delay = status.get("poll_after")
                if delay is None:
                    delay, interval = interval, min(interval * factor, longest)
                elif status.get("observed_at"):  # the platform's hint counts from when it was asked
                    delay -= (self.now() - parse_iso(status["observed_at"])).total_seconds()
                yield from self.wait(delay)
                polled = self.context.call_activity(names.POLL_SERVICE, self.request(handle=handle))
                yield from self.race(polled)
                if _failed(polled):
                    failure = failure_from(polled.result)
                    errors += 1
                    if not failure["retryable"] or errors >= MAX_POLL_ERRORS:
                        yield from self.cancel_remote(handle)
                        return None, failure
                    status = {"state": "running", "poll_after": None}
                    continue
                errors, status = 0, polled.result
            return status, None
        except _Stop:
            if handle is None and submit.is_completed and not _failed(submit):
                handle = submit.result["handle"]
                self.result["remote_id"] = handle["remote_id"]
            if handle is not None:
                yield from self.cancel_remote(handle)
            raise

    def cancel_remote(self, handle: dict):
        """Best effort: a failed cancel is noted in the error, never raised."""
        try:
            yield self.context.call_activity(names.CANCEL_SERVICE, self.request(handle=handle))
        except Exception as exc:
            note = f"could not cancel remote run {handle.get('remote_id')}: {failure_from(exc)['error']}"
            self.result["output"] = note
            if not self.context.is_replaying:
                log.warning("%s/%s: %s", self.job["run_id"], self.job["service"], note)

    def run(self):
        retry = RetryPolicy(**self.job["retry"])
        retries = retry.retries
        result = self.result
        try:
            number = 0
            while True:
                number += 1
                status, failure = yield from self.attempt(number)
                if status is not None:
                    result["output"] = status.get("output") or result["output"]
                    result["url"] = status.get("url") or result["url"]
                    if status["state"] in (REMOTE_SUCCEEDED, REMOTE_SKIPPED):
                        result["status"], result["error"] = status["state"], None  # an earlier attempt's is moot
                        break
                    if status["state"] == REMOTE_CANCELLED:
                        result["status"] = CANCELLED
                        result["error"] = status.get("message") or "cancelled on the platform"
                        break
                    failure = {"error": status.get("message") or f"ended {status['state']}",
                               "retryable": bool(status.get("retryable"))}
                result["error"] = failure["error"]
                if not failure["retryable"] or number > retries:
                    result["status"] = FAILED
                    if failure["retryable"] and retries:
                        result["error"] = f"{failure['error']} (gave up after {number} attempts)"
                    break
                self.show()
                yield from self.wait(retry.delay(number))
        except _Stop as stop:
            if stop.reason == "cancel":
                result["status"], result["error"] = CANCELLED, "cancelled"
            else:
                result["status"] = FAILED
                result["error"] = f"timed out after {format_duration(self.job['timeout'])}"
        if self.deadline is not None and not self.deadline.is_completed:
            self.deadline.cancel()
        result["finished"] = iso(self.now())
        self.show()
        if not self.context.is_replaying:
            log.info("%s/%s: %s after %d attempt(s)", self.job["run_id"], self.job["service"],
                     result["status"], result["attempts"])
        return result


@bp.function_name(names.SERVICE_RUN)
@bp.orchestration_trigger(context_name="context")
def service_run(context: df.DurableOrchestrationContext):
    """One service of a run: submit, poll with durable timers, retry with backoff, honour the
    deadline and a `cancel` event. Returns {status, attempts, started, finished, remote_id, url,
    error, output}; it never fails, so the pipeline always learns why."""
    return (yield from _ServiceRun(context, context.get_input()).run())
