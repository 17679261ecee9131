"""Calls to the remote platforms, shared by the service activities and the ledger activities (which
submit a service's first attempt the moment it is dispatched): adapters kept per process, platform
calls off the event loop, failures classified for the orchestrator, and short watches.

Registers no functions.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterator
from concurrent.futures import Future
from contextlib import contextmanager

import app_runtime
from tower import logcontext, push, telemetry
from tower.catalog.env import resolve
from tower.contracts import FirstAttempt, Observed, PlatformEntry, ServiceJob
from tower.errors import ActivityFailure, ConfigError, NonRetryableError, PlatformError
from tower.platforms import Platforms
from tower.platforms.base import TERMINAL_STATES, Handle, Status, Submission
from tower.redact import redact
from tower.runs.ledger import is_cancelled
from tower.timestamps import iso

log = logging.getLogger("tower.activities")
log.addFilter(logcontext.RunFields())


@contextmanager
def classified(platform: PlatformEntry) -> Iterator[None]:
    """Turn Tower's own errors into an `ActivityFailure` the orchestrator reads back as the same
    PlatformError (tower.errors); a setting that cannot be read is a NonRetryableError."""
    try:
        yield
    except PlatformError as exc:
        named = exc if exc.platform else PlatformError.of(str(exc), retryable=exc.retryable,
                                                          platform=platform.name)
        raise ActivityFailure(named) from None
    except ConfigError as exc:
        raise ActivityFailure(NonRetryableError(str(exc), platform=platform.name)) from None


def adapter(platform: PlatformEntry, platforms: Platforms | None = None):
    """The adapter for a plan's platform entry, its ``${VAR}`` settings read now, at use, from
    `platforms` (default: the runtime's, `app_runtime`), which keeps one per type and resolved
    settings, so their clients (HTTP session, Databricks workspace client) serve every activity."""
    settings = resolve(platform.settings, where=f"platform {platform.name or platform.type!r}")
    return (platforms or app_runtime.current().platforms).adapter(platform.type, settings)


def submission(data: dict) -> Submission:
    """The submission of a request, its ``${VAR}`` spec fields read now (the plan keeps them unread:
    it is stored in the run's history)."""
    return Submission.from_json({**data, "spec": resolve(data["spec"], where=f"service {data['service']!r}")})


def observed(status: Status) -> Observed:
    """A status with the moment it was read: a `poll_after` hint counts from then, not from
    whenever the orchestrator gets to it."""
    return Observed.of(status, iso(time.time()))


LINGER_FIRST_LOOK = 0.05  # seconds to the first look again when the platform gives no hint (then x2)
CANCEL_CHECK = 5.0  # seconds: a watch this long or longer asks `stopped` (the run's cancel flag) this often


def linger(platform_adapter, handle: Handle, status: Status, budget: float, every: float | None = None,
           stopped=None) -> Status:
    """Watch just-started work here while its end is due within `budget` seconds: sub-second work
    (many SQL statements) then needs no durable timer, and its dependents start a timer and two
    orchestrator episodes sooner. The platform's `poll_after` sets the next look; without one, looks
    are `every` seconds apart (tower.polling's window of the expected end), else 0.05 s, doubling.
    Work not done within the budget is left to durable timers. A long watch (up to a minute) asks
    `stopped()` every `CANCEL_CHECK` seconds and returns early when it says so: `service_run` awaits
    the activity that lost a race to a cancel (its outcome may hold a handle), so a cancel would
    otherwise wait for the watch to end."""
    now = time.monotonic()
    deadline, check = now + budget, now + CANCEL_CHECK
    pause_without_hint = every or LINGER_FIRST_LOOK
    while status.state not in TERMINAL_STATES:
        pause = max(status.poll_after if status.poll_after is not None else pause_without_hint, 0.001)
        wake = time.monotonic() + pause
        if wake > deadline:
            break
        while stopped is not None and check < wake:
            time.sleep(max(check - time.monotonic(), 0.0))
            if stopped():
                return status
            check += CANCEL_CHECK
        time.sleep(max(wake - time.monotonic(), 0.0))
        pause_without_hint *= 1 if every else 2
        status = platform_adapter.poll(handle)
    return status


def first_attempt(job: ServiceJob) -> FirstAttempt | None:
    """Submit a just-dispatched service's first attempt, before its `service_run` exists: its
    `FirstAttempt` for its input, so the work starts one orchestration start and one activity sooner
    (in Azure, two queue hops). None when the run was cancelled meanwhile (the flag is read right
    before the submit) or the submit failed: `service_run` then submits itself, with the same
    idempotency key (so nothing runs twice), after reading the flag, and classifies any failure.
    Blocks: call it on a platform thread."""
    logcontext.about(job.run_id, job.service)
    at = iso(time.time())
    try:
        runtime = app_runtime.current()
        if is_cancelled(runtime.ledger, job.run_id):
            return None
        about = {"run_id": job.run_id, "service": job.service, "attempt": 1}
        handle = telemetry.traced(adapter(job.platform, runtime.platforms), job.platform, about).submit(
            submission(with_callback(job.platform, job.submission(1).to_json(), runtime.push_keys)))
        pushable(job.platform, job.run_id, job.service, handle, runtime.push_keys)
    except Exception as exc:  # service_run submits again and reports the failure properly
        log.info("%s/%s: submit at dispatch failed, service_run submits: %s", job.run_id, job.service,
                 redact(str(exc)))
        return None
    return FirstAttempt(handle, at)


def with_callback(platform: PlatformEntry, submission_json: dict, keys) -> dict:
    """A submission to an HTTP service with a callback URL the service may call when done, its
    token noted in `keys` (tower.push)."""
    if platform.type != push.HTTP or submission_json.get("callback"):
        return submission_json
    return {**submission_json, "callback": push.callback_for(keys, submission_json["run_id"],
                                                             submission_json["service"])}


def pushable(platform: PlatformEntry, run_id: str, service: str, handle: Handle, keys) -> None:
    """After a submit: note the remote run in `keys` for push completion where the platform can push
    (`tower.push`; a Databricks job's webhook notification names its run id)."""
    if platform.type == push.DATABRICKS:
        push.remember(keys, push.DATABRICKS, handle.remote_id, run_id, service)


def submit_all(jobs: dict[str, ServiceJob]) -> dict[str, Future]:
    """Submits at dispatch of `jobs` (instance id -> job, most urgent first in line) on the platform
    pool, side by side, each reading the run's cancel flag first (a busy pool may start them late)."""
    return {instance_id: on_pool(first_attempt, job) for instance_id, job in jobs.items()}


def on_pool(fn, *args) -> Future:
    """``fn(*args)`` on the runtime's platform pool (`tower.runtime.Runtime.platform_threads`: platform
    SDKs block, and the worker's event loop is shared by every async activity), logging as the
    invocation, run and service it was handed out by (`tower.logcontext.carried`)."""
    return app_runtime.current().platform_threads.submit(logcontext.carried(fn), *args)


async def call(platform: PlatformEntry, fn, about: dict | None = None):
    """``fn(adapter)`` with the platform's adapter, on the platform pool, Tower's errors classified;
    with telemetry on, its platform calls are dependency spans of the service attempt `about`
    ({run_id, service, attempt}, see `telemetry.about`)."""

    def classified_fn():
        with classified(platform):
            return fn(telemetry.traced(adapter(platform), platform, about))

    return await asyncio.wrap_future(on_pool(classified_fn))


async def off_loop(fn, *args):
    """``fn(*args)`` (a blocking ledger or history call) on a thread of its own, logging as the
    invocation, run and service that asked (`asyncio.to_thread` carries no invocation id)."""
    return await asyncio.to_thread(logcontext.carried(fn), *args)
