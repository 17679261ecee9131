"""The simulator: a platform that only pretends to run, for demos, benchmarks and what-if runs.

Spec fields (all optional):
    duration       seconds the "work" takes (float, default 0)
    fail_attempts  the first N attempts fail with a retryable error (default 0)
    outcome        ``succeed`` (default) or ``fail`` (a non-retryable failure, after `duration`)
    jitter         the work ends at `duration` x (1 + u), u uniform in [-jitter, +jitter], seeded by
                   the submission's idempotency key (default 0: exactly at `duration`): u is
                   jitter x (2f - 1), f the first 12 hex digits of SHA-256 of ``jitter/<key>`` read as
                   a fraction of 16^12, so one key always draws the same u
    blind          true: a poll does not tell when the work will end (no `poll_after`), as a real
                   platform does not (default false: it does, so a demo polls once more, at the end)

Settings: ``time_scale`` multiplies every duration (default 1), so a catalog of hour-long
services simulates in seconds.

Nothing runs anywhere, so the adapter keeps no state across processes: the handle carries the
start time and the planned end, and `poll` reads the outcome off the wall clock (the adapter's
`clock`); from the planned end on, the work is done. `poll_after` is the time left, so an
orchestrator polls exactly once more, when the work is due to finish (unless the spec is `blind`).
The remote id is ``sim-`` and the first 16 hex digits of SHA-256 of the idempotency key: one key,
one remote run, as a real platform's idempotent submit gives. Every poll is counted per remote id
(`SimAdapter.poll_counts`): a real platform's API calls.
Cancelling stops nothing remote (there is nothing); it is recorded on the adapter so a later poll
reports ``cancelled`` and tests can see which handles were cancelled. Both records are the
adapter's: the process's one sim adapter (kept by `tower.platforms.Platforms`) holds the process's.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Callable
from typing import Any

from tower.catalog.fields import SIM_OUTCOMES
from tower.errors import NonRetryableError
from tower.platforms.base import Handle, Status, Submission
from tower.states import RemoteState


def jittered(duration: float, jitter: float, key: str) -> float:
    """`duration` x (1 + u), u uniform in [-jitter, jitter] and fixed by `key` (repeatable)."""
    unit = int(hashlib.sha256(f"jitter/{key}".encode()).hexdigest()[:12], 16) / float(16 ** 12)
    return max(duration * (1 + jitter * (2 * unit - 1)), 0.0)


def _number(spec: dict, field: str, default: float, service: str) -> float:
    value = spec.get(field, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
        raise NonRetryableError(
            f"service {service!r}: sim field {field!r} must be a number >= 0, got {value!r}",
            platform="sim",
        )
    return float(value)


class SimAdapter:
    """Simulated work whose duration and outcome come from the service's spec."""

    def __init__(self, settings: dict[str, Any] | None = None, *, clock: Callable[[], float] = time.time):
        """`clock`: the wall clock in epoch seconds (a test passes its own, to poll at an exact time)."""
        settings = settings or {}
        self.clock = clock
        self.time_scale = _number(settings, "time_scale", 1.0, "(platform settings)")
        self._lock = threading.Lock()
        self._cancelled: set[str] = set()
        self._polls: dict[str, int] = {}

    def poll_counts(self) -> dict[str, int]:
        """Polls (platform API calls) per remote id, by this adapter."""
        with self._lock:
            return dict(self._polls)

    def cancelled_remote_ids(self) -> frozenset[str]:
        """The remote ids cancelled through this adapter (what a real platform would have been told)."""
        with self._lock:
            return frozenset(self._cancelled)

    def submit(self, submission: Submission) -> Handle:
        spec, service = submission.spec, submission.service
        duration = jittered(_number(spec, "duration", 0.0, service) * self.time_scale,
                            _number(spec, "jitter", 0.0, service), submission.idempotency_key)
        fail_attempts = int(_number(spec, "fail_attempts", 0, service))
        outcome = spec.get("outcome", "succeed")
        if outcome not in SIM_OUTCOMES:
            raise NonRetryableError(
                f"service {service!r}: sim field 'outcome' must be one of {SIM_OUTCOMES}, got {outcome!r}",
                platform="sim",
            )
        if submission.attempt <= fail_attempts:
            result = {"state": RemoteState.FAILED, "retryable": True,
                      "message": f"simulated failure of attempt {submission.attempt} of {fail_attempts}"}
        elif outcome == "fail":
            result = {"state": RemoteState.FAILED, "retryable": False, "message": "simulated failure (outcome: fail)"}
        else:
            result = {"state": RemoteState.SUCCEEDED, "retryable": False, "message": ""}
        started_at = self.clock()
        digest = hashlib.sha256(submission.idempotency_key.encode()).hexdigest()[:16]
        return Handle(
            remote_id=f"sim-{digest}",
            data={"started_at": started_at, "ends_at": started_at + duration, "blind": bool(spec.get("blind")),
                  **result},
        )

    def poll(self, handle: Handle) -> Status:
        with self._lock:
            self._polls[handle.remote_id] = self._polls.get(handle.remote_id, 0) + 1
            if handle.remote_id in self._cancelled:
                return Status(RemoteState.CANCELLED, message="cancelled (simulated)")
        remaining = handle.data["ends_at"] - self.clock()
        if remaining > 0:
            return Status(RemoteState.RUNNING, poll_after=None if handle.data.get("blind") else remaining)
        return Status(handle.data["state"], message=handle.data["message"],
                      retryable=handle.data["retryable"])

    def cancel(self, handle: Handle) -> None:
        with self._lock:
            self._cancelled.add(handle.remote_id)
