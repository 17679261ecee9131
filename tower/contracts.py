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
(`tower.platforms.base`, `tower.polling`, `tower.catalog.model`, `tower.states`), so no import
cycle can form.
`tower.runs.plan.service_job` builds a `ServiceJob` from a frozen plan.

    ServiceJob      one service of one run: the input of `service_run`, kept in the run ledger
    PlatformEntry   the plan's entry of a service's platform (its `PollSettings`): jobs and requests carry it
    FirstAttempt    its attempt 1, submitted when it was dispatched (`activities.remote.first_attempt`)
    ServiceResult   a service's end, or its result so far: `service_run`'s output, what the ledger takes
    ServiceReport   a service's end for the run ledger: REPORT_SERVICE's input, and carried by the
                    submit and poll requests so that they can report a success they see
    SubmitRequest   SUBMIT_SERVICE's input: start one attempt, watch it a little
    PollRequest     POLL_SERVICE's input: where is the work now
    CancelRequest   CANCEL_SERVICE's input: stop the work
    Observed        a Status as a submit or poll saw it (POLL_SERVICE's output), and when
    SubmitOutcome   SUBMIT_SERVICE's output: the handle (None: nothing submitted) and what it saw
    RunReference    `pipeline_run`'s input: which run (its plan is in the ledger, never in a message)
    RunRequest      the input of the run's ledger activities (open, reconcile, cancel, result)
    StepSummary     what a ledger activity did, for `pipeline_run` (counts, never names)

Still a plain dict: the run's outcome (`pipeline_run`'s output, `tower.runs.scheduler.Scheduler.result`),
and the plan itself (the scheduler reads it in its hot loops; `tower.runs.plan`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

from tower.catalog.model import RetryPolicy
from tower.platforms.base import Handle, Status, Submission
from tower.polling import Expectation
from tower.states import RunState, ServiceState


@dataclass(frozen=True)
class PollSettings:
    """A platform's poll cadence in a plan (`tower.runs.plan`): the first wait, its growth and cap
    (seconds), how long a first look may watch the work itself (`linger`), and `scale`, a simulated
    run's time scale (1 otherwise; `tower.polling`)."""

    first: float
    factor: float
    max: float
    linger: float = 0.0  # plans written before linger existed: no watching
    scale: float = 1.0

    def to_json(self) -> dict:
        return {"first": self.first, "factor": self.factor, "max": self.max, "linger": self.linger,
                "scale": self.scale}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> PollSettings:
        return cls(data["first"], data["factor"], data["max"], data.get("linger", 0.0), data.get("scale", 1.0))


@dataclass(frozen=True)
class PlatformEntry:
    """A service's platform as its run's plan has it, with its name: what the adapters are built
    from (`activities.remote.adapter`, its ``${VAR}`` settings read at use) and what telemetry
    names a platform call by. `poll`: None only in an entry built to reach an adapter (tests)."""

    name: str
    type: str
    max_concurrency: int | None = None
    settings: dict[str, Any] = field(default_factory=dict)  # ``${VAR}`` unread
    poll: PollSettings | None = None

    def to_json(self) -> dict:
        return {"name": self.name, "type": self.type, "max_concurrency": self.max_concurrency,
                "settings": self.settings, "poll": None if self.poll is None else self.poll.to_json()}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> PlatformEntry:
        poll = data.get("poll")
        return cls(data.get("name") or "", data["type"], data.get("max_concurrency"), data.get("settings") or {},
                   PollSettings.from_json(poll) if poll else None)


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

    `spec` and `params` keep their ``${VAR}`` references, as the platform's settings do: the
    activities read them at use."""

    run_id: str
    pipeline: str
    service: str
    platform: PlatformEntry
    spec: dict[str, Any]
    params: dict[str, Any]
    timeout: float | None  # seconds from the first submit; None: no deadline
    retry: RetryPolicy
    simulated: bool = False
    expect: Expectation | None = None  # when an attempt is likely to end (tower.polling)
    first: FirstAttempt | None = None

    @property
    def poll(self) -> PollSettings:
        """The platform's poll cadence (a plan's entries always have one)."""
        return self.platform.poll

    def submission(self, attempt: int) -> Submission:
        """One attempt as a platform submission: one shape, so that a submit at dispatch and one by
        `service_run` carry the same idempotency key."""
        return Submission(self.run_id, self.service, attempt, self.spec, self.params)

    def with_first(self, first: FirstAttempt | None) -> ServiceJob:
        return replace(self, first=first)

    def to_json(self) -> dict:
        data = {"run_id": self.run_id, "pipeline": self.pipeline, "service": self.service,
                "platform": self.platform.to_json(), "spec": self.spec, "params": self.params, "timeout": self.timeout,
                "retry": asdict(self.retry), "simulated": self.simulated,
                "expect": None if self.expect is None else self.expect.to_json()}
        if self.first is not None:
            data["first"] = self.first.to_json()
        return data

    @classmethod
    def from_json(cls, data: dict) -> ServiceJob:
        expect, first = data.get("expect"), data.get("first")
        return cls(run_id=data["run_id"], pipeline=data["pipeline"], service=data["service"],
                   platform=PlatformEntry.from_json(data["platform"]), spec=data["spec"], params=data["params"],
                   timeout=data.get("timeout"), retry=RetryPolicy(**data["retry"]),
                   simulated=bool(data.get("simulated", False)),
                   expect=Expectation(**expect) if expect else None,
                   first=FirstAttempt.from_json(first) if first else None)


@dataclass(frozen=True)
class ServiceResult:
    """A service's end, or its result so far: what `service_run` returns (and so what a recorded
    history holds as its output), what REPORT_SERVICE takes to the run ledger, and what telemetry
    and notifications read. `status` is None while it runs, then a `ServiceState` (a plain str once
    read back from JSON, equal to the member; a word that is no state is kept, and the scheduler
    counts it as failed)."""

    service: str
    status: str | None = None
    attempts: int = 0
    started: str | None = None  # ISO: the first attempt's submit
    attempt_started: str | None = None  # ISO: the last attempt's submit
    finished: str | None = None
    remote_id: str | None = None
    url: str | None = None
    error: str | None = None
    output: str | None = None

    def settled(self, status: Status, finished: str) -> ServiceResult:
        """The final result of a service whose attempt ended `succeeded` or `skipped` (`status`, a
        remote status): what `service_run` returns, and what the activity that saw the end reports to
        the run ledger. An earlier attempt's error is moot then."""
        return replace(self, status=ServiceState(status.state), error=None, output=status.output or self.output,
                       url=status.url or self.url, finished=finished)

    def to_json(self) -> dict:
        return {"service": self.service, "status": self.status, "attempts": self.attempts, "started": self.started,
                "attempt_started": self.attempt_started, "finished": self.finished, "remote_id": self.remote_id,
                "url": self.url, "error": self.error, "output": self.output}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ServiceResult:
        """Also what older code or a fallback left out (a result that says little: the scheduler
        fills in)."""
        get = data.get
        return cls(get("service") or "", get("status"), int(get("attempts") or 0), get("started"),
                   get("attempt_started"), get("finished"), get("remote_id"), get("url"), get("error"),
                   get("output"))


@dataclass(frozen=True)
class ServiceReport:
    """A service's end, or its result so far, for the run ledger (`activities.runs.record_report`).

    `before`: an activity that sees the work succeed may
    report it only until then (ISO; the service's deadline), None: at any time."""

    run_id: str
    pipeline: str
    result: ServiceResult
    simulated: bool = False  # a what-if run: its attempts stay out of the run history
    before: str | None = None

    @property
    def service(self) -> str:
        return self.result.service

    def with_result(self, result: ServiceResult) -> ServiceReport:
        return replace(self, result=result)

    def to_json(self) -> dict:
        return {"run_id": self.run_id, "pipeline": self.pipeline, "simulated": self.simulated,
                "result": self.result.to_json(), "before": self.before}

    @classmethod
    def from_json(cls, data: dict) -> ServiceReport:
        return cls(run_id=data["run_id"], pipeline=data["pipeline"], result=ServiceResult.from_json(data["result"]),
                   simulated=bool(data.get("simulated", False)), before=data.get("before"))


@dataclass(frozen=True)
class SubmitRequest:
    """Start one attempt and watch it until `watch_until` (ISO; see `activities.remote.linger`).
    `previous`: the attempt that failed before this one, {attempt, started, finished, error,
    remote_id, url}, for telemetry."""

    platform: PlatformEntry  # `ServiceJob.platform`
    submission: Submission
    watch_until: str | None = None
    report: ServiceReport | None = None
    previous: dict[str, Any] | None = None

    def to_json(self) -> dict:
        return {"platform": self.platform.to_json(), "submission": self.submission.to_json(), "watch_until": self.watch_until,
                "report": None if self.report is None else self.report.to_json(), "previous": self.previous}

    @classmethod
    def from_json(cls, data: dict) -> SubmitRequest:
        report = data.get("report")
        return cls(platform=PlatformEntry.from_json(data["platform"]), submission=Submission.from_json(data["submission"]),
                   watch_until=data.get("watch_until"), report=ServiceReport.from_json(report) if report else None,
                   previous=data.get("previous"))


@dataclass(frozen=True)
class PollRequest:
    """Look at the work. `first`: the first look at work submitted at dispatch (it reads the run's
    cancel flag first, as a submit does); `watch_until`: watch it until then, a look every `look`
    seconds if given (`activities.remote.linger`)."""

    platform: PlatformEntry
    handle: Handle
    report: ServiceReport | None = None
    first: bool = False
    watch_until: str | None = None
    look: float | None = None

    def to_json(self) -> dict:
        data = {"platform": self.platform.to_json(), "handle": self.handle.to_json(),
                "report": None if self.report is None else self.report.to_json()}
        if self.first:
            data["first"] = True
        if self.watch_until is not None:
            data["watch_until"] = self.watch_until
        if self.look is not None:
            data["look"] = self.look
        return data

    @classmethod
    def from_json(cls, data: dict) -> PollRequest:
        report = data.get("report")
        return cls(platform=PlatformEntry.from_json(data["platform"]), handle=Handle.from_json(data["handle"]),
                   report=ServiceReport.from_json(report) if report else None, first=bool(data.get("first")),
                   watch_until=data.get("watch_until"), look=data.get("look"))


@dataclass(frozen=True)
class CancelRequest:
    """Stop the work of one attempt (idempotent); run, service and attempt name it in logs and
    telemetry."""

    platform: PlatformEntry
    handle: Handle
    run_id: str
    service: str
    attempt: int

    def to_json(self) -> dict:
        return {"platform": self.platform.to_json(), "handle": self.handle.to_json(), "run_id": self.run_id,
                "service": self.service, "attempt": self.attempt}

    @classmethod
    def from_json(cls, data: dict) -> CancelRequest:
        return cls(platform=PlatformEntry.from_json(data["platform"]), handle=Handle.from_json(data["handle"]),
                   run_id=data["run_id"],
                   service=data["service"], attempt=data["attempt"])


@dataclass(frozen=True)
class RunReference:
    """`pipeline_run`'s input (`tower.runs.ledger.plan_reference`): which run, and how soon it first
    reconciles (seconds; None: `orchestrators.pipeline.RECONCILE_FIRST`, tests shorten it)."""

    run_id: str
    pipeline: str
    reconcile_after: float | None = None

    def to_json(self) -> dict:
        data: dict[str, Any] = {"run_id": self.run_id, "pipeline": self.pipeline}
        if self.reconcile_after:
            data["reconcile_after"] = self.reconcile_after
        return data

    @classmethod
    def from_json(cls, data: dict) -> RunReference:
        return cls(data["run_id"], data["pipeline"], data.get("reconcile_after") or None)


@dataclass(frozen=True)
class RunRequest:
    """The input of OPEN_RUN (`started`), RECONCILE_RUN and CANCEL_RUN (`after`: the `more` of the
    call before), RUN_RESULT (`finished`); times are ISO. What a call does not take is left out."""

    run_id: str
    started: str | None = None
    after: int | None = None
    finished: str | None = None

    def to_json(self) -> dict:
        data: dict[str, Any] = {"run_id": self.run_id}
        data.update((key, value) for key, value in (("started", self.started), ("after", self.after),
                                                     ("finished", self.finished)) if value is not None)
        return data

    @classmethod
    def from_json(cls, data: dict) -> RunRequest:
        return cls(data["run_id"], data.get("started"), data.get("after"), data.get("finished"))


@dataclass(frozen=True)
class StepSummary:
    """What a ledger activity did (`activities.runs.act`): service runs started, running ones told
    to stop, whether the run is done (and how), and where to go on (`more`: a plan position, see
    `tower.runs.ledger.Step`). `error`: OPEN_RUN found no plan for the run (then nothing else)."""

    started: int = 0
    stopping: int = 0
    done: bool = False
    status: str = RunState.RUNNING  # the run's status (`Scheduler.status`): how it ended, once done
    more: int | None = None
    error: str | None = None

    def to_json(self) -> dict:
        if self.error is not None:
            return {"error": self.error}
        return {"started": self.started, "stopping": self.stopping, "done": self.done, "status": self.status,
                "more": self.more}

    @classmethod
    def from_json(cls, data: dict) -> StepSummary:
        if data.get("error"):
            return cls(error=data["error"])
        return cls(data.get("started", 0), data.get("stopping", 0), bool(data.get("done")),
                   data.get("status", RunState.RUNNING), data.get("more"))


@dataclass(frozen=True)
class Observed(Status):
    """A Status as a submit or poll activity saw it: `observed_at` (ISO) is when, since a
    `poll_after` hint counts from then, not from whenever the orchestrator gets to it; `reported`:
    that activity already reported the service's success to the run ledger (`service_run` then
    does not)."""

    observed_at: str | None = None
    reported: bool = False

    @classmethod
    def of(cls, status: Status, observed_at: str | None = None) -> Observed:
        return cls(**{f.name: getattr(status, f.name) for f in fields(Status)}, observed_at=observed_at)

    def to_json(self) -> dict:
        data = asdict(self)
        if data["observed_at"] is None:
            del data["observed_at"]
        if not data["reported"]:
            del data["reported"]
        return data

    @classmethod
    def from_json(cls, data: dict) -> Observed:
        return cls(**data)


@dataclass(frozen=True)
class SubmitOutcome:
    """What a submit did: the handle of the work (None: the run was cancelled before, nothing was
    submitted) and the work's status when the submit's watch ended."""

    handle: Handle | None
    status: Observed

    def to_json(self) -> dict:
        return {"handle": None if self.handle is None else self.handle.to_json(), "status": self.status.to_json()}

    @classmethod
    def from_json(cls, data: dict) -> SubmitOutcome:
        handle = data.get("handle")
        return cls(Handle.from_json(handle) if handle else None, Observed.from_json(data["status"]))
