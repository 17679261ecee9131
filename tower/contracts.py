"""The values that cross the activity boundary, typed: what an orchestrator hands an activity, what
the run ledger stores for a service run to start with, and what comes back.

On the wire they stay plain JSON dicts: the Durable SDK serialises activity inputs and outputs, and
an orchestrator replays its recorded history, which holds what older code wrote. So each contract
is a frozen dataclass whose ``to_json()`` writes exactly the shape the code wrote before it was
typed, and whose ``from_json()`` reads that shape back, with the keys older code left out taking
their old defaults. Code works with attributes, never ``job["..."]``.

They live here, beside neither side: the orchestrators (`orchestrators/`), the activities
(`activities/`) and the run ledger (`tower.runs.ledger`, which stores each `ServiceJob` when a run's
plan is stored) all import them, and this module imports only the value types it is built of
(`tower.platforms.base`, `tower.polling`, `tower.catalog.model`), so no import cycle can form.
`tower.runs.plan.service_job` builds a `ServiceJob` from a frozen plan.

    ServiceJob      one service of one run: the input of `service_run`, kept in the run ledger
    FirstAttempt    its attempt 1, submitted when it was dispatched (`activities.remote.first_attempt`)
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any

from tower.catalog.model import RetryPolicy
from tower.platforms.base import Handle, Submission
from tower.polling import Expectation


@dataclass(frozen=True)
class FirstAttempt:
    """Attempt 1 of a service, submitted at dispatch, before its `service_run` existed: the handle
    to poll, and when it was submitted (its deadline counts from then)."""

    handle: Handle
    at: str  # ISO time of the submit

    def to_json(self) -> dict:
        return {"handle": self.handle.to_json(), "at": self.at}

    @classmethod
    def from_json(cls, data: dict) -> FirstAttempt:
        return cls(Handle.from_json(data["handle"]), data["at"])


@dataclass(frozen=True)
class ServiceJob:
    """What one `service_run` gets: one service of a frozen plan with its platform entry.

    `platform` is the plan's platform entry with its name: {name, type, max_concurrency, settings
    (``${VAR}`` unread), poll: {first, factor, max, linger, scale}} (`tower.runs.plan`). `spec` and
    `params` keep their ``${VAR}`` references too: the activities read them at use."""

    run_id: str
    pipeline: str
    service: str
    platform: dict[str, Any]
    spec: dict[str, Any]
    params: dict[str, Any]
    timeout: float | None  # seconds from the first submit; None: no deadline
    retry: RetryPolicy
    simulated: bool = False
    expect: Expectation | None = None  # when an attempt is likely to end (tower.polling)
    first: FirstAttempt | None = None

    @property
    def poll(self) -> dict[str, Any]:
        """The platform's poll cadence: {first, factor, max, linger, scale}."""
        return self.platform["poll"]

    def submission(self, attempt: int) -> Submission:
        """One attempt as a platform submission: one shape, so that a submit at dispatch and one by
        `service_run` carry the same idempotency key."""
        return Submission(self.run_id, self.service, attempt, self.spec, self.params)

    def with_first(self, first: FirstAttempt | None) -> ServiceJob:
        return replace(self, first=first)

    def to_json(self) -> dict:
        data = {"run_id": self.run_id, "pipeline": self.pipeline, "service": self.service,
                "platform": self.platform, "spec": self.spec, "params": self.params, "timeout": self.timeout,
                "retry": asdict(self.retry), "simulated": self.simulated,
                "expect": None if self.expect is None else self.expect.to_json()}
        if self.first is not None:
            data["first"] = self.first.to_json()
        return data

    @classmethod
    def from_json(cls, data: dict) -> ServiceJob:
        expect, first = data.get("expect"), data.get("first")
        return cls(run_id=data["run_id"], pipeline=data["pipeline"], service=data["service"],
                   platform=data["platform"], spec=data["spec"], params=data["params"],
                   timeout=data.get("timeout"), retry=RetryPolicy(**data["retry"]),
                   simulated=bool(data.get("simulated", False)),
                   expect=Expectation(**expect) if expect else None,
                   first=FirstAttempt.from_json(first) if first else None)
