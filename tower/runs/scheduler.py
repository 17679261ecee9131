"""The pipeline's scheduling state machine, pure and deterministic, so `pipeline_run` stays a thin
loop around it and every rule here is unit-testable without Durable.

Rules: a service is ready when every dependency succeeded (or was skipped); ready services take a
free slot of their platform, longest remaining path first (file order breaks ties); a failure
marks everything downstream ``upstream_failed`` while independent branches go on; a cancel marks
what has not started ``cancelled`` and names what is running, so the caller can stop it.

Also here: the compact custom status (`compact_status`, read back with `expand_status`), the run's
outcome (`result`).
"""

from __future__ import annotations

import heapq
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from tower import deadlines, graph
from tower.contracts import ServiceResult
from tower.states import DONE_FOR_DEPENDENTS, FINISHED_STATES, HOLDS_BACK_DEPENDENTS, RunState, ServiceState
from tower.timestamps import iso, parse_iso

# One letter per service state, in plan order: the status of 300 services in 300 characters.
STATE_CODES = {ServiceState.PENDING: "p", ServiceState.RUNNING: "r", ServiceState.SUCCEEDED: "s",
               ServiceState.FAILED: "f", ServiceState.UPSTREAM_FAILED: "u", ServiceState.CANCELLED: "c",
               ServiceState.SKIPPED: "k"}
CODE_STATES = {code: state for state, code in STATE_CODES.items()}
STATUS_ERRORS_SHOWN = 10  # failed services whose error the custom status carries
STATUS_ERROR_CHARS = 160
STATUS_RUNNING_SHOWN = 50  # running services whose start the custom status carries (longest-running first)
RESULT_FAILED_SHOWN = 20  # failed services a run's result names, with their errors
RESULT_ERROR_CHARS = 1000  # of each error


@dataclass
class ServiceRecord:
    """What the scheduler knows about one service of the run (mutable: it is the run's state)."""

    # A ServiceState, or its word as read back (equal to it). The default is the word: a class attribute
    # of a mutable type (an enum) stops Python 3.11 from specialising every record attribute read.
    status: str = ServiceState.PENDING.value
    attempts: int = 0
    started: str | None = None
    finished: str | None = None
    remote_id: str | None = None
    url: str | None = None
    error: str | None = None
    output: str | None = None
    dispatcher: str | None = None  # the process that took it off the ready queue (`tower.runs.ledger`)


class Scheduler:
    """One run's dispatch state, built from a frozen plan. Callers pass the time (`now`)."""

    def __init__(self, plan: Mapping[str, Any], started: datetime):
        self.plan = plan
        self.started = started
        services = plan["services"]
        self.order = list(services)
        self.position = {name: i for i, name in enumerate(self.order)}
        self.deps = {name: tuple(svc["deps"]) for name, svc in services.items()}
        self.dependents = graph.dependents(self.deps)
        self.expected = {name: float(svc["expected"]) for name, svc in services.items()}
        self.priority = graph.remaining_path(self.deps, self.expected)
        self.platform_of = {name: svc["platform"] for name, svc in services.items()}
        self.limits = {name: p.get("max_concurrency") for name, p in plan["platforms"].items()}
        self.busy = dict.fromkeys(self.limits, 0)
        # Platforms whose slots are shared by every run (`tower.runs.slots`): taken only when granted.
        self.shared = {name for name, p in plan["platforms"].items() if p.get("shared") and p.get("max_concurrency")}
        self.touched: set[str] = set()  # shared platforms whose waiters or holders this run changed
        self.records = {name: ServiceRecord() for name in self.order}
        self.waiting = {name: len(deps) for name, deps in self.deps.items()}
        self.ready: dict[str, list[tuple[float, int, str]]] = {p: [] for p in self.limits}
        self.running_since: dict[str, datetime] = {}
        self.cancel_requested = False
        self.unfinished = len(self.order)
        self.changed: set[str] = set()  # services whose record changed since `take_changes`
        for name in self.order:
            if self.waiting[name] == 0:
                self._make_ready(name)

    @classmethod
    def restore(cls, plan: Mapping[str, Any], started: datetime, records: Mapping[str, Mapping[str, Any]],
                cancel_requested: bool = False, now: datetime | None = None) -> Scheduler:
        """A scheduler in the state its records describe: everything else (slots taken, dependencies
        still awaited, the ready queues) follows from them. What the records imply but do not say yet
        (a save that landed in parts) is applied now and counted as changed: a pending service behind
        a failed or cancelled one is `upstream_failed`, and after a cancel one not started is
        `cancelled`."""
        scheduler = cls(plan, started)
        scheduler.cancel_requested = cancel_requested
        scheduler.records = {name: ServiceRecord(**records[name]) if name in records else ServiceRecord()
                             for name in scheduler.order}
        now = now or started
        for name in graph.topological_order(scheduler.deps):  # upstream first: messages name the origin
            if scheduler.records[name].status in HOLDS_BACK_DEPENDENTS:
                scheduler._hold_back_downstream(name, now)
        if cancel_requested:
            scheduler._cancel_pending(now)
        scheduler.busy = dict.fromkeys(scheduler.limits, 0)
        scheduler.ready = {p: [] for p in scheduler.limits}
        scheduler.running_since = {}
        scheduler.unfinished = 0
        pending, running = ServiceState.PENDING, ServiceState.RUNNING  # once: a member lookup costs ~70 ns (3.11)
        for name in scheduler.order:
            record = scheduler.records[name]
            scheduler.waiting[name] = sum(
                scheduler.records[dep].status not in DONE_FOR_DEPENDENTS for dep in scheduler.deps[name])
            if record.status == running:
                scheduler.busy[scheduler.platform_of[name]] += 1
                scheduler.running_since[name] = parse_iso(record.started) or started
            if record.status not in FINISHED_STATES:
                scheduler.unfinished += 1
            if record.status == pending and scheduler.waiting[name] == 0 and not cancel_requested:
                scheduler._make_ready(name)
        return scheduler

    def take_changes(self) -> dict[str, dict]:
        """The records changed since the last call, as JSON, for a store that keeps the state. Their
        fields are scalars: a copy of each record's fields is `asdict` without a deepcopy per field."""
        changed = {name: vars(self.records[name]).copy() for name in self.changed}
        self.changed.clear()
        return changed

    # --- dispatch ----------------------------------------------------------------------------

    def _make_ready(self, name: str) -> None:
        platform = self.platform_of[name]
        heapq.heappush(self.ready[platform], (-self.priority[name], self.position[name], name))
        if platform in self.shared:
            self.touched.add(platform)

    def waiting_for(self, platform: str, most: int) -> list[tuple[str, float]]:
        """The `most` most urgent ready services of a shared platform, with their remaining path."""
        return [(name, -priority) for priority, _, name in heapq.nsmallest(most, self.ready[platform])]

    def running_on(self, platform: str) -> list[str]:
        return [name for name in self.running_since if self.platform_of[name] == platform]

    def take(self, names: list[str], now: datetime) -> list[str]:
        """Mark running, and return, those of `names` that are ready (slots granted to them)."""
        if self.cancel_requested:
            return []
        taken = []
        for platform, queue in self.ready.items():
            chosen = [entry for entry in queue if entry[2] in names]
            if chosen:
                queue[:] = [entry for entry in queue if entry[2] not in names]
                heapq.heapify(queue)
                self.busy[platform] += len(chosen)
                taken.extend(chosen)
        return self._start(taken, now)

    def take_ready(self, now: datetime) -> list[str]:
        """Mark running, and return, the ready services that fit a free slot of their platform,
        highest priority first."""
        if self.cancel_requested:
            return []
        taken = []
        for platform, queue in self.ready.items():
            if platform in self.shared:
                continue
            limit = self.limits[platform]
            while queue and (limit is None or self.busy[platform] < limit):
                entry = heapq.heappop(queue)
                self.busy[platform] += 1
                taken.append(entry)
        return self._start(taken, now)

    def _start(self, taken: list[tuple[float, int, str]], now: datetime) -> list[str]:
        """Mark the taken queue entries running, highest priority first; returns their names."""
        taken.sort()
        for _, _, name in taken:
            record = self.records[name]
            record.status, record.started = ServiceState.RUNNING, iso(now)
            self.running_since[name] = now
            self.changed.add(name)
        return [name for _, _, name in taken]

    def finish(self, name: str, result: ServiceResult, now: datetime) -> None:
        """Take a service's result (a `service_run` output) and release what it was holding back."""
        record = self.records[name]
        if record.status != ServiceState.RUNNING:
            raise ValueError(f"service {name!r} finished while {record.status}")
        self.busy[self.platform_of[name]] -= 1
        if self.platform_of[name] in self.shared:
            self.touched.add(self.platform_of[name])
        self.running_since.pop(name, None)
        self.unfinished -= 1
        self.changed.add(name)
        status = result.status
        record.status = status if status in FINISHED_STATES and status != ServiceState.UPSTREAM_FAILED else ServiceState.FAILED
        record.attempts = result.attempts
        record.started = result.started or record.started
        record.finished = result.finished or iso(now)
        record.remote_id, record.url = result.remote_id, result.url
        record.error, record.output = result.error, result.output
        if record.status == ServiceState.FAILED and not record.error:
            shown = str(status) if isinstance(status, str) else status  # a state's value, not its enum repr
            record.error = f"ended {shown!r} without an error message"
        if record.status in DONE_FOR_DEPENDENTS:
            for child in self.dependents[name]:
                self.waiting[child] -= 1
                if self.waiting[child] == 0 and self.records[child].status == ServiceState.PENDING:
                    self._make_ready(child)
        else:
            self._hold_back_downstream(name, now)

    def _hold_back_downstream(self, name: str, now: datetime) -> None:
        """Everything still pending downstream of `name` (failed, cancelled or held back itself)
        becomes `upstream_failed`."""
        reason = "was cancelled" if self.records[name].status == ServiceState.CANCELLED else "failed"
        stack = list(self.dependents[name])
        while stack:
            other = stack.pop()
            downstream = self.records[other]
            if downstream.status == ServiceState.PENDING:
                downstream.status = ServiceState.UPSTREAM_FAILED
                downstream.error = f"upstream {name!r} {reason}"
                downstream.finished = iso(now)
                self.unfinished -= 1
                self.changed.add(other)
                stack.extend(self.dependents[other])

    def cancel(self, now: datetime) -> list[str]:
        """Stop dispatching; mark every service not started `cancelled`; return the running ones."""
        self.cancel_requested = True
        self.touched |= self.shared
        self._cancel_pending(now)
        for queue in self.ready.values():
            queue.clear()
        return self.named(ServiceState.RUNNING)

    def _cancel_pending(self, now: datetime) -> None:
        for name, record in self.records.items():
            if record.status == ServiceState.PENDING:
                record.status, record.error, record.finished = ServiceState.CANCELLED, "run cancelled", iso(now)
                self.unfinished -= 1
                self.changed.add(name)

    # --- where the run is --------------------------------------------------------------------

    def named(self, state: ServiceState) -> list[str]:
        """The services in `state`, in plan order."""
        return [name for name in self.order if self.records[name].status == state]

    @property
    def done(self) -> bool:
        return self.unfinished == 0

    def counts(self) -> dict[str, int]:
        counts = dict.fromkeys(ServiceState, 0)
        for record in self.records.values():
            counts[record.status] += 1
        return {state: n for state, n in counts.items() if n}

    @property
    def status(self) -> RunState:
        """running, then succeeded / failed / cancelled once every service finished."""
        if not self.done:
            return RunState.RUNNING
        states = {record.status for record in self.records.values()}
        if states & {ServiceState.FAILED, ServiceState.UPSTREAM_FAILED}:
            return RunState.FAILED
        if ServiceState.CANCELLED in states:
            return RunState.CANCELLED
        return RunState.SUCCEEDED

    def eta(self, now: datetime) -> datetime | None:
        """Predicted finish: now + the longer of the remaining critical path of what is left and,
        per limited platform, the work left over its slots. None once the run is done."""
        return self.forecast(now)[0]

    def forecast(self, now: datetime) -> tuple[datetime | None, list[str]]:
        """`eta`, and the unfinished services on the remaining critical path (tower.deadlines)."""
        left = {}
        pending, running = ServiceState.PENDING, ServiceState.RUNNING  # once: a member lookup costs ~70 ns (3.11)
        for name in self.order:
            record = self.records[name]
            if record.status == pending:
                left[name] = self.expected[name]
            elif record.status == running:
                elapsed = (now - self.running_since[name]).total_seconds()
                left[name] = max(self.expected[name] - elapsed, 0.0)
        if not left:
            return None, []
        sub = graph.restrict(self.deps, left)
        path, seconds = graph.critical_path(sub, left)
        for platform, work in graph.work_by_platform(left, self.platform_of).items():
            if self.limits.get(platform):
                seconds = max(seconds, work / self.limits[platform])
        return now + timedelta(seconds=seconds), list(path)

    def compact_status(self, now: datetime) -> dict:
        """The custom status: a few hundred bytes plus one character per service.

        ``states`` has one letter per service in plan order (see STATE_CODES); ``running`` gives
        the start of the longest-running services (seconds since the run started); ``errors`` the
        first failures. Azure keeps at most 16 KB of UTF-16 custom status: this stays far below.
        """
        offset = self.started
        errors = {name: (self.records[name].error or "")[:STATUS_ERROR_CHARS]
                  for name in self.named(ServiceState.FAILED)[:STATUS_ERRORS_SHOWN]}
        return {
            "run_id": self.plan["run_id"],
            "status": self.status,
            "started": iso(self.started),
            "eta": iso(self.eta(now)),
            "counts": self.counts(),
            "states": "".join(STATE_CODES[self.records[name].status] for name in self.order),
            "running": {name: round((since - offset).total_seconds(), 2)
                        for name, since in sorted(self.running_since.items(), key=lambda item: item[1])
                        [:STATUS_RUNNING_SHOWN]},
            "errors": errors,
            **deadlines.of_scheduler(self, now),
        }

    def result(self, finished: datetime) -> dict:
        """The run's outcome, what `pipeline_run` returns: a few KB whatever the run's size (Durable
        carries it; each service's record stays in the run ledger). Counts per state, the first
        RESULT_FAILED_SHOWN failed services with their errors, and `summary`, the text printed
        under a run that did not succeed."""
        failed = self.named(ServiceState.FAILED)
        shown = {name: (self.records[name].error or "")[:RESULT_ERROR_CHARS] for name in failed[:RESULT_FAILED_SHOWN]}
        counts = self.counts()
        lines = [f"{name}: {error}" for name, error in shown.items()]
        if len(failed) > len(shown):
            lines.append(f"and {len(failed) - len(shown)} more failed service(s)")
        if counts.get(ServiceState.UPSTREAM_FAILED):
            lines.append(f"{counts[ServiceState.UPSTREAM_FAILED]} service(s) not run because an upstream service failed")
        if self.status == RunState.CANCELLED:
            lines.append("run cancelled")
        return {
            "run_id": self.plan["run_id"],
            "pipeline": self.plan["pipeline"],
            "status": self.status,
            "started": iso(self.started),
            "finished": iso(finished),
            "counts": counts,
            "failed": shown,
            "failed_not_shown": len(failed) - len(shown),
            "summary": "\n".join(lines),
        }


def expand_status(plan: Mapping[str, Any], custom_status: Mapping[str, Any]) -> dict[str, dict]:
    """Per-service view of a compact status: {name: {status, started?, error?}}, in plan order."""
    names = list(plan["services"])
    codes = custom_status.get("states") or ""
    started = parse_iso(custom_status.get("started"))
    running = custom_status.get("running") or {}
    errors = custom_status.get("errors") or {}
    view = {}
    for name, code in zip(names, codes, strict=False):
        entry: dict[str, Any] = {"status": CODE_STATES.get(code, ServiceState.PENDING)}
        if name in running and started is not None:
            entry["started"] = iso(started + timedelta(seconds=running[name]))
        if name in errors:
            entry["error"] = errors[name]
        view[name] = entry
    return view
