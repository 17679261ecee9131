"""The run ledger: a run's dispatch state, kept outside any orchestration history.

Out-of-process orchestrators replay their whole history on every episode, so one orchestrator that
hears of every service costs O(N) per decision and O(N²) per run (docs/architecture.md, "Dispatch"). Tower
therefore keeps the scheduler's state here, one record per service, and changes it in short
transactions from activities: `pipeline_run` opens the run, each `service_run` reports its end, and
the report starts whatever became ready. No history grows with the pipeline, while the rules stay
those of `tower.runs.scheduler` (start-when-ready, per-platform limits, longest remaining path first,
failure and cancel policy).

    store_plan(ledger, plan, now) -> dict          store a run's frozen plan (once); pipeline_run's input
    open_run(ledger, run_id, now) -> Step          take the first ready services of a stored run
    finish_service(ledger, run_id, name, result, now) -> Step   one service ended
    reconcile_run(ledger, run_id, now) -> Step     dispatch what is ready, name what should run
    cancel_run(ledger, run_id, now) -> Step        stop dispatching; Step.stop names what runs
    is_cancelled(ledger, run_id) -> bool           was a cancel asked for (read before work starts)
    run_result(ledger, run_id, finished) -> dict   the run's outcome in a few KB (no per-service list)
    run_services(ledger, run_id, now) -> dict      every service's record (None if unknown)
    load_plan(ledger, run_id) -> dict              the frozen plan, as it was stored
    plan_outline(ledger, run_id) -> dict           the plan without the services' specs and params
    live_status(ledger, run_id, now) -> dict       the compact status of a run (None if unknown)

The plan is stored here, once, before `pipeline_run` starts: no Durable message carries it (the
Durable Task Scheduler refuses messages over 1 MiB, Azure Storage offloads those over 45 KB to blobs
and downloads them again at every replay and status read). `pipeline_run` gets a reference
(`plan_reference`), and each service run only its own service's input.

Every change is idempotent, so an activity may run twice. Changes use optimistic concurrency (a
version per run), so several hosts may share one ledger. A ledger object keeps each run's last
state in memory (`SchedulerCache`; a process has one ledger object, `tower.runtime.Runtime.ledger`):
reused as is while the stored version says nobody else changed it, else brought up to date with
only the records written since, so a change reads and writes O(its services), not O(N).

A limited platform's slots are shared by every run (`tower.runs.slots`): a change that touched one is
followed by a sync of the run into the platform's pool, whose grants are taken in their own runs
and dispatched with the change's step (`_share`).

Two stores: SQLite locally (``$TOWER_HOME/ledger.db``) and Azure Table Storage in Azure
(``TOWER_LEDGER_TABLE_URL``, managed identity). `ledger_from_environment()` picks one; a process
keeps one ledger object (`tower.runtime.Runtime.ledger`), whose `SchedulerCache` is its memory.
"""

from __future__ import annotations

import json
import os
import re
import socket
import threading
import uuid
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Protocol, TypeVar

from tower.contracts import RunReference, ServiceJob, ServiceResult
from tower.errors import ConfigError, InconsistentPlan, LedgerConflict, RunNotInLedger
from tower.processes import pid_alive
from tower.runs import slots
from tower.runs.scheduler import Scheduler
from tower.states import RunState, ServiceState
from tower.stores import location
from tower.timestamps import iso, parse_iso

T = TypeVar("T")


@dataclass(frozen=True)
class Snapshot:
    """A run as stored: `core` is the slim plan the scheduler needs (None in a `since` load),
    `records` one dict per service."""

    version: int
    core: dict | None
    meta: dict
    records: dict[str, dict]


class RunLedger(Protocol):
    location: str  # where it keeps its runs (a file, a table URL): the same place, the same runs
    schedulers: SchedulerCache  # what this object remembers of its runs (see SchedulerCache)
    dispatches: Dispatches  # this object as a dispatcher, and its dispatches under way (see Dispatches)

    def create(self, run_id: str, core: dict, meta: dict, inputs: Mapping[str, dict],
               records: Mapping[str, dict], head: dict | None = None) -> bool:
        """Store a new run at version 1, whole or not at all; False (and nothing written) if it exists.
        `head` is the rest of the plan (`plan_head`), read back only by `stored_plan`."""

    def version(self, run_id: str) -> int | None: ...

    def meta(self, run_id: str) -> dict | None:
        """The run's meta ({started, cancel}), None if there is no such run."""

    def load(self, run_id: str, since: int | None = None) -> Snapshot | None:
        """The run; with `since`, only the records written at that version or later (and no core)."""

    def save(self, run_id: str, version: int, meta: dict, records: Mapping[str, dict]) -> bool:
        """Write changed records and meta if the run is still at `version` (then it is version + 1);
        False, and nothing written, if someone else changed it first."""

    def service_inputs(self, run_id: str, names: Sequence[str]) -> dict[str, dict]:
        """The inputs of these services' runs (as given to `create`), in one read or a few: a step
        that starts a wide fan-out must not read once per service."""

    def delete_runs(self, run_ids: Sequence[str]) -> int:
        """Delete these runs, if there (retention); returns how many were there."""

    def stored_plan(self, run_id: str, inputs: bool = True) -> tuple[dict, dict, dict[str, dict]] | None:
        """(core, head, every service's input, or {} without `inputs`) as given to `create`; None if
        there is no such run."""

    def slots(self) -> slots.SlotStore:
        """The shared platform slots kept beside these runs (`tower.runs.slots`)."""


# --- the dispatch steps -------------------------------------------------------------------------

@dataclass
class Step:
    """What a change asks the caller to do. `start`: service runs to start now (instance id ->
    its `ServiceJob`), most urgent first. `ensure`: service runs the ledger has running, to start only if their
    instance does not exist (a report that died half way may not have started them). `stop`:
    running service runs to cancel. `done` once every service ended (`status` then says how).
    `dispatching`: the instance ids in `ensure` whose dispatch may still be submitting, on this host
    or another (see `_reconciled`): not started when missing, since their service run would submit
    beside it. `more`: `ensure` and `stop` name at most `STEP_SERVICES`; when more remain, the plan
    position to ask again after (`reconcile_run`, `cancel_run`), else None. `offers`: what the run
    tells the pools of the shared platforms it touched (`tower.runs.slots.offer`), for `_share`."""

    start: dict[str, ServiceJob] = field(default_factory=dict)
    ensure: dict[str, ServiceJob] = field(default_factory=dict)
    dispatching: frozenset[str] = frozenset()
    stop: list[str] = field(default_factory=list)
    done: bool = False
    status: str = RunState.RUNNING
    more: int | None = None
    offers: dict[str, dict] = field(default_factory=dict, repr=False)
    version: int = 0  # the run's ledger version the step saw (its offers are that state's)


# Services a step names in `ensure` or `stop`: each costs the activity a call to the Durable host,
# so a wide run's reconcile or cancel is split over several activity calls, each well inside the
# host's functionTimeout (a timeout restarts the worker process with every invocation in it).
STEP_SERVICES = 500


_CORE_KEYS = ("deps", "expected", "platform", "iid")  # of each service: what the scheduler reads


def core_of(plan: Mapping[str, Any]) -> dict:
    """The part of a frozen plan the scheduler reads: the graph, expectations and limits."""
    return {
        "run_id": plan["run_id"],
        "pipeline": plan["pipeline"],
        "simulated": bool(plan.get("simulated")),
        "priority": int(plan.get("priority") or 0),
        "platforms": {name: {"max_concurrency": p.get("max_concurrency"), "shared": True}
                      for name, p in plan["platforms"].items()},
        "services": {name: {key: svc[key] for key in _CORE_KEYS}
                     for name, svc in plan["services"].items()},
        **({"deadline": plan["deadline"]} if plan.get("deadline") else {}),
    }


# Keys of a plan's service entry that its service run's input carries (`tower.runs.plan.service_job`);
# the others are in the core.
_INPUT_KEYS = ("spec", "params", "timeout", "retry")


def plan_head(plan: Mapping[str, Any]) -> dict:
    """What `core_of` and the services' inputs leave out of a plan (params, created, platform
    settings...), so that `load_plan` gives the plan back whole."""
    extra = {name: {k: v for k, v in svc.items() if k not in _CORE_KEYS and k not in _INPUT_KEYS}
             for name, svc in plan["services"].items()}
    head = {key: value for key, value in plan.items() if key != "services"}
    if any(extra.values()):
        head["service_extra"] = {name: fields for name, fields in extra.items() if fields}
    return head


def plan_reference(plan: Mapping[str, Any]) -> dict:
    """`pipeline_run`'s input: which run, and what it needs to wait (never the plan)."""
    return RunReference(plan["run_id"], plan["pipeline"], plan.get("reconcile_after")).to_json()


def store_plan(ledger: RunLedger, plan: Mapping[str, Any], now: datetime) -> dict:
    """Store a run's frozen plan, every service pending, and return `pipeline_run`'s input (its
    reference). Call it before starting `pipeline_run`. Idempotent: if the run is stored already
    (a start tried again), the stored plan stands and its reference is returned. The store writes
    a run whole or not at all (`RunLedger.create`), so a plan is never found half written."""
    from tower.runs.plan import service_job

    inputs = {name: service_job(dict(plan), name).to_json() for name in plan["services"]}
    create_run(ledger, plan, inputs, now, plan_head(plan))
    return plan_reference(plan)


def create_run(ledger: RunLedger, plan: Mapping[str, Any], inputs: Mapping[str, dict], now: datetime,
               head: dict | None = None) -> bool:
    """Store a run, every service pending (`store_plan` without building the inputs); False if it
    exists."""
    run_id = plan["run_id"]
    core = core_of(plan)
    scheduler = Scheduler(core, now)
    records = {name: asdict(scheduler.records[name]) for name in scheduler.order}
    with _run_lock(ledger, run_id):
        if not ledger.create(run_id, core, {"started": iso(now), "cancel": False}, inputs, records, head):
            return False
        scheduler.changed.clear()
        _remember(ledger, run_id, 1, scheduler)  # the open, if in this process, need not load it
        return True


def open_run(ledger: RunLedger, run_id: str, now: datetime) -> Step:
    """Start a stored run (`store_plan`): take its first ready services, and count the run as
    started now. When it was opened already (the activity runs again), dispatch what is ready and
    name what runs, as `reconcile_run` does. RunNotInLedger if the run's plan is not stored."""
    first = False

    def change(scheduler: Scheduler) -> Step:
        nonlocal first
        first = not scheduler.cancel_requested and all(r.status == ServiceState.PENDING for r in scheduler.records.values())
        if first:  # the run starts when pipeline_run does; its pools hear of what it offers them
            scheduler.started = now
            step = _step(ledger, scheduler, start=_take_ready(ledger, scheduler, now))
            scheduler.touched |= {p for p in scheduler.shared if scheduler.ready[p]}  # its first waiters
        else:
            step = _reconciled(ledger, scheduler, now)
        waiting = any(scheduler.ready[p] for p in scheduler.shared)  # for a shared platform's slot
        if not scheduler.done and not waiting and not any(r.status == ServiceState.RUNNING for r in scheduler.records.values()):
            raise InconsistentPlan(f"run {run_id}: no service can start (inconsistent plan)")
        return step

    step = _shared_change(ledger, run_id, now, change)  # grants are taken outside the run's lock
    # a new run also sweeps its pools: a slot lost by an ended run (which no timer of its own
    # reconciles any more) must not wait for this run's first reconcile
    return _sweep(ledger, run_id, step, now) if first else step


def finish_service(ledger: RunLedger, run_id: str, name: str, result: ServiceResult, now: datetime) -> Step:
    """Record a service's end (`Scheduler.finish`) and take what became ready. A repeated report changes nothing of
    that service; like `reconcile_run` it then dispatches what is ready and asks that every running
    service exists."""

    def change(scheduler: Scheduler) -> Step:
        if scheduler.records[name].status != ServiceState.RUNNING:
            return _reconciled(ledger, scheduler, now)
        scheduler.finish(name, result, now)
        return _step(ledger, scheduler, start=_take_ready(ledger, scheduler, now))

    return _shared_change(ledger, run_id, now, change)


def function_timeout(host_json: str | Path) -> timedelta:
    """The host's functionTimeout (host.json): how long any invocation may run, so how long a
    dispatch may still be submitting. Missing: 30 minutes, the default of Flex Consumption and
    Premium (Consumption's 5 minutes is shorter, so the grace errs on the safe side). Unbounded
    ("-1") or unreadable: a clear error, since no grace would then be safe."""
    path = Path(host_json)
    try:
        value = json.loads(path.read_text()).get("functionTimeout")
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{path}: cannot read functionTimeout ({exc}); Tower derives its dispatch grace "
                          "from it") from None
    if value is None:
        return DEFAULT_FUNCTION_TIMEOUT
    match = re.fullmatch(r"(?:(\d+)\.)?(\d{1,2}):(\d{2}):(\d{2})", str(value).strip())
    if match is None:
        raise ConfigError(f"{path}: functionTimeout {value!r} is not a bounded [d.]hh:mm:ss duration; Tower "
                          "needs one (a dispatch is presumed still submitting for that long), e.g. \"00:10:00\"")
    days, hours, minutes, seconds = (int(part or 0) for part in match.groups())
    timeout = timedelta(days=days, hours=hours, minutes=minutes, seconds=seconds)
    if not timeout:
        raise ConfigError(f"{path}: functionTimeout {value!r} is zero; give the host time to run, e.g. \"00:10:00\"")
    return timeout


DEFAULT_FUNCTION_TIMEOUT = timedelta(minutes=30)
HOST_JSON = Path(__file__).resolve().parents[2] / "host.json"  # the app root, beside function_app.py


def dispatch_grace(host_json: Path = HOST_JSON) -> timedelta:
    """How long a dispatch may still be submitting: it submits before it starts the service run, and
    no invocation outlives the host's functionTimeout, so a service run missing for longer than that
    after its dispatch was lost, not late."""
    return function_timeout(host_json) if host_json.exists() else DEFAULT_FUNCTION_TIMEOUT


class Dispatches:
    """A ledger object's own dispatches: who it is as the dispatcher of the services its changes take
    off the ready queue (`ServiceRecord.dispatcher`: host, pid and a nonce), and the instance ids
    whose dispatch is under way here (added once the change that took them is saved, removed by the
    dispatch when its submits and starts have settled: a platform thread adds while the event loop
    removes, hence the lock). `grace`: `dispatch_grace()`, read when the ledger object is built.

    The process's one ledger object (`tower.runtime.Runtime.ledger`) dispatches for the process; any
    other object, in this process or another, is another dispatcher and waits the grace for it."""

    def __init__(self, dispatcher: str | None = None, grace: timedelta | None = None):
        self.dispatcher = dispatcher or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.grace = grace if grace is not None else dispatch_grace()
        self._lock = threading.Lock()
        self._under_way: set[str] = set()

    def started(self, instance_ids) -> None:
        with self._lock:
            self._under_way.update(instance_ids)

    def settled(self, instance_ids) -> None:
        with self._lock:
            self._under_way.difference_update(instance_ids)

    def under_way(self) -> frozenset[str]:
        with self._lock:
            return frozenset(self._under_way)

    def __contains__(self, instance_id: str) -> bool:
        with self._lock:
            return instance_id in self._under_way

    def may_still_dispatch(self, dispatcher: str | None) -> bool:
        """Could the dispatcher that took a service off the ready queue still be submitting it? Yes,
        unless it is this one and its dispatch here has settled (the caller checks `in`), or it ran
        on this machine and its process is gone (a crashed `tower run`, a worker process that died
        on this instance): a dead process submits nothing, so its lost starts need not wait the
        grace. A process on another machine (another instance in Azure) is never known dead."""
        if dispatcher == self.dispatcher:
            return False
        host, _, rest = (dispatcher or "").partition(":")
        pid = rest.partition(":")[0]
        if host != socket.gethostname() or not pid.isdigit():
            return True
        return pid_alive(int(pid))


def reconcile_run(ledger: RunLedger, run_id: str, now: datetime, after: int = -1) -> Step:
    """Put a run right after a partial failure: dispatch what is ready (a lost dispatch), and name
    the running services in `ensure` (a lost start), those at plan positions after `after`, at most
    `STEP_SERVICES` (`Step.more` says where to go on). A reconcile runs on a timer, on any host."""
    step = _shared_change(ledger, run_id, now, lambda scheduler: _reconciled(ledger, scheduler, now, after))
    return _sweep(ledger, run_id, step, now) if after < 0 else step


def cancel_run(ledger: RunLedger, run_id: str, now: datetime, after: int = -1) -> Step:
    """Stop dispatching: what has not started is cancelled; `stop` names the running service runs
    at plan positions after `after`, at most `STEP_SERVICES` (`Step.more`: ask again from there;
    a cancel asked again changes nothing more)."""

    def change(scheduler: Scheduler) -> Step:
        running, more = _page(scheduler, scheduler.cancel(now), after)
        step = _step(ledger, scheduler, stop=[scheduler.plan["services"][n]["iid"] for n in running])
        step.more = more
        return step

    return _shared_change(ledger, run_id, now, change)


def is_cancelled(ledger: RunLedger, run_id: str) -> bool:
    """Has a cancel been asked for this run? (A run the ledger does not know is not cancelled.)"""
    meta = ledger.meta(run_id)
    return bool(meta and meta.get("cancel"))


def run_result(ledger: RunLedger, run_id: str, finished: datetime) -> dict:
    """The run's outcome (`Scheduler.result`: a few KB whatever the run's size, since `pipeline_run`
    returns it); each service's record stays here (`run_services`)."""
    return _change(ledger, run_id, finished, lambda scheduler: scheduler.result(finished))


def run_services(ledger: RunLedger, run_id: str, now: datetime) -> dict[str, dict] | None:
    """Every service's record (`ServiceRecord` fields), in plan order; None if the ledger has no
    such run. What shows a run's services reads them here, not from Durable."""
    try:
        return _change(ledger, run_id, now, lambda scheduler: {
            name: asdict(scheduler.records[name]) for name in scheduler.order})
    except RunNotInLedger:
        return None


def plan_outline(ledger: RunLedger, run_id: str) -> dict | None:
    """The plan without its services' specs and params (each service's deps, expected duration,
    platform and instance id; the platforms whole), read without the services' inputs: what shows
    a run needs of its plan. None if the ledger has no such run."""
    stored = ledger.stored_plan(run_id, inputs=False)
    if stored is None:
        return None
    core, head, _ = stored
    return {**{key: value for key, value in (head or core).items() if key != "service_extra"},
            "services": core["services"]}


def load_plan(ledger: RunLedger, run_id: str) -> dict:
    """The frozen plan `store_plan` stored, whole; RunNotInLedger if there is none."""
    stored = ledger.stored_plan(run_id)
    if stored is None or not stored[1]:
        raise RunNotInLedger(f"run {run_id!r} has no plan in the run ledger ({ledger.location})")
    core, head, inputs = stored
    extra = head.get("service_extra") or {}
    services = {name: {**svc, **{key: inputs[name][key] for key in _INPUT_KEYS}, **extra.get(name, {})}
                for name, svc in core["services"].items()}
    return {**{key: value for key, value in head.items() if key != "service_extra"}, "services": services}


def live_status(ledger: RunLedger, run_id: str, now: datetime) -> dict | None:
    """The compact status of a run (`Scheduler.compact_status`), None if the ledger has no such run;
    with `slots` when services wait for a shared platform: {platform: `tower.runs.slots.holding`}.
    Read through the same cache as changes, so following a big run does not reload it each time."""
    def read(scheduler: Scheduler):
        waiting = sorted(p for p in scheduler.shared if scheduler.ready[p] and not scheduler.cancel_requested)
        return scheduler.compact_status(now), waiting, bool(scheduler.plan.get("simulated"))

    try:
        status, waiting, simulated = _change(ledger, run_id, now, read)
    except RunNotInLedger:
        return None
    if waiting:
        status["slots"] = {platform: slots.holding(ledger.slots(), slots.pool_of(platform, simulated))
                           for platform in waiting}
    return status


def _step(ledger: RunLedger, scheduler: Scheduler, start=(), ensure=(), stop=()) -> Step:
    run_id, services = scheduler.plan["run_id"], scheduler.plan["services"]

    def jobs(names):
        inputs = ledger.service_inputs(run_id, names) if names else {}
        return {services[n]["iid"]: ServiceJob.from_json(inputs[n]) for n in names}

    return Step(start=jobs(start), ensure=jobs(ensure), stop=list(stop), done=scheduler.done, status=scheduler.status)


def _take_ready(ledger: RunLedger, scheduler: Scheduler, now: datetime) -> list[str]:
    """`Scheduler.take_ready`, each service taken marked as dispatched by this ledger object."""
    taken = scheduler.take_ready(now)
    for name in taken:
        scheduler.records[name].dispatcher = ledger.dispatches.dispatcher
    return taken


def _dispatched(ledger: RunLedger, step: Step) -> Step:
    """A saved step: its services to start are being dispatched here from now on."""
    ledger.dispatches.started(step.start)
    return step


def _page(scheduler: Scheduler, names: list[str], after: int) -> tuple[list[str], int | None]:
    """The `names` at plan positions after `after`, at most `STEP_SERVICES`, and where the next page
    starts (None: this is the last)."""
    position = scheduler.position
    names = [name for name in names if position[name] > after]
    if len(names) <= STEP_SERVICES:
        return names, None
    page = names[:STEP_SERVICES]
    return page, position[page[-1]]


def _reconciled(ledger: RunLedger, scheduler: Scheduler, now: datetime, after: int = -1) -> Step:
    """Take what is ready; name the other running services in `ensure` (a page of them, see
    `_page`). Every caller (a reconcile, a repeated report or open_run, on any host) respects the
    grace of a dispatch that may still be submitting: a service taken off the ready queue less than
    `Dispatches.grace` ago is `dispatching` unless this ledger object took it and its dispatch here
    has settled, or the process that took it is known dead (`may_still_dispatch`): then its submits are
    over, and a missing service run was lost."""
    started = _take_ready(ledger, scheduler, now)
    scheduler.touched |= scheduler.shared  # a repeated change re-syncs its pools (one may have been lost)
    running = [n for n in scheduler.order if scheduler.records[n].status == ServiceState.RUNNING and n not in started]
    running, more = _page(scheduler, running, after)
    step = _step(ledger, scheduler, start=started, ensure=running)
    services, records, dispatches = scheduler.plan["services"], scheduler.records, ledger.dispatches
    step.dispatching = frozenset(
        services[n]["iid"] for n in running
        if parse_iso(records[n].started) > now - dispatches.grace
        and (dispatches.may_still_dispatch(records[n].dispatcher) or services[n]["iid"] in dispatches))
    step.more = more
    return step


# --- shared platform slots (tower.runs.slots) ---------------------------------------------------------

GRANT_ROUNDS = 100  # grants taken in turn by one change (each a run whose granted services ended)


def _offers(scheduler: Scheduler, platforms) -> dict[str, dict]:
    simulated = bool(scheduler.plan.get("simulated"))
    return {slots.pool_of(p, simulated): slots.offer(scheduler, p) for p in sorted(platforms & scheduler.shared)}


def _shared_change(ledger: RunLedger, run_id: str, now: datetime, change: Callable[[Scheduler], Step]) -> Step:
    """`_change`, then `_share` what it did to shared platforms (a run without any: nothing more)."""

    def with_offers(scheduler: Scheduler) -> Step:
        scheduler.touched.clear()
        step = change(scheduler)
        step.offers = _offers(scheduler, scheduler.touched)
        return step

    step = _change(ledger, run_id, now, with_offers)
    try:
        return _share(ledger, step, now)
    except BaseException:  # the activity fails and no `act` dispatches the saved starts: not under way here
        ledger.dispatches.settled(step.start)  # (else its retry would leave them to the grace, not start them)
        raise


def _share(ledger: RunLedger, step: Step, now: datetime) -> Step:
    """Sync the run into the pools it touched, then take every grant in its own run (this one or
    another) and add their starts to `step`: the report that freed a slot dispatches its next holder."""
    store = ledger.slots() if step.offers else None
    grants = [(pool, run_id, name) for pool, offer in step.offers.items()
              for run_id, name in slots.sync(store, pool, {**offer, "version": step.version}, now)]
    for _ in range(GRANT_ROUNDS):
        if not grants:
            return step
        by_run: dict[str, dict[str, list[str]]] = {}
        for pool, run_id, name in grants:
            by_run.setdefault(run_id, {}).setdefault(pool, []).append(name)
        grants = []
        for run_id, pools in by_run.items():
            taken = _take_granted(ledger, run_id, pools, now)
            step.start.update(taken.start)
            grants += [(pool, other, name) for pool, offer in taken.offers.items()
                       for other, name in slots.sync(store, pool, {**offer, "version": taken.version}, now)]
    raise LedgerConflict(f"platform slots: grants kept coming after {GRANT_ROUNDS} rounds")


def _take_granted(ledger: RunLedger, run_id: str, pools: Mapping[str, list[str]], now: datetime) -> Step:
    """Mark the services granted a slot running in their run (those still ready), with offers that
    release what was granted but can no longer start. A run gone from the ledger leaves its pools."""

    def take(scheduler: Scheduler) -> Step:
        taken = scheduler.take({name for names in pools.values() for name in names}, now)
        for name in taken:
            scheduler.records[name].dispatcher = ledger.dispatches.dispatcher
        step = _step(ledger, scheduler, start=taken)
        step.offers = _offers(scheduler, {slots.platform_of(pool) for pool in pools})
        return step

    try:
        return _change(ledger, run_id, now, take)
    except RunNotInLedger:
        gone = {"run": run_id, "running": [], "ready": set(), "waiting": []}  # all `slots.apply` reads of it
        return Step(offers=dict.fromkeys(pools, gone), version=slots.GONE)


def _sweep(ledger: RunLedger, run_id: str, step: Step, now: datetime) -> Step:
    """A reconcile also puts right the other runs in its pools: a holder granted and never taken (a
    crash between the grant and its run's change) starts; one whose service ended without its slot
    coming back (a crash after the run's change), or whose run is gone, is released."""
    if not step.offers:
        return step
    store = ledger.slots()
    others: dict[str, dict[str, list[str]]] = {}
    for pool in step.offers:
        _, state = store.read(pool)
        for other in slots.runs_in(state) - {run_id}:
            others.setdefault(other, {})[pool] = [name for key in state["holders"]
                                                  for holder, name in [slots.holder_of(key)] if holder == other]
    for other, pools in others.items():
        swept = _take_granted(ledger, other, pools, now)
        step.start.update(_share(ledger, swept, now).start)
    return step


# --- optimistic changes with an in-process cache ------------------------------------------------

CACHED_SCHEDULERS = 32
SAVE_ATTEMPTS = 20
LOCK_STRIPES = 64


class SchedulerCache:
    """What a ledger object remembers of its runs in this process: the scheduler its last change
    left (with that version), and the locks that queue changes of one run. A change holds its run's
    lock: changes of one run queue up in this process (other processes are caught by the version),
    different runs go on side by side; striped, so the locks stay few.

    Each store object owns one (`RunLedger.schedulers`), so the cache is as wide as the object: the
    runtime builds one ledger per process (`tower.runtime.Runtime.ledger`) and every change in the
    process shares it; a second object over the same store (another host, a status reader) keeps
    its own, as another process would, and the stored version keeps them right."""

    def __init__(self, size: int = CACHED_SCHEDULERS, stripes: int = LOCK_STRIPES):
        self.size = size
        self._locks = tuple(threading.RLock() for _ in range(stripes))
        self._lock = threading.Lock()
        self._schedulers: OrderedDict[str, tuple[int, Scheduler]] = OrderedDict()

    def lock(self, run_id: str) -> threading.RLock:
        return self._locks[hash(run_id) % len(self._locks)]

    def remember(self, run_id: str, version: int, scheduler: Scheduler) -> None:
        with self._lock:
            self._schedulers[run_id] = (version, scheduler)
            self._schedulers.move_to_end(run_id)
            while len(self._schedulers) > self.size:
                self._schedulers.popitem(last=False)

    def get(self, run_id: str) -> tuple[int, Scheduler] | None:
        with self._lock:
            return self._schedulers.get(run_id)

    def take(self, run_id: str) -> tuple[int, Scheduler] | None:
        """The cached (version, scheduler), no longer cached: a change puts it back when it is done."""
        with self._lock:
            return self._schedulers.pop(run_id, None)

    def clear(self) -> None:
        with self._lock:
            self._schedulers.clear()


def _run_lock(ledger: RunLedger, run_id: str) -> threading.RLock:
    return ledger.schedulers.lock(run_id)


def _restore(snapshot: Snapshot, now: datetime) -> Scheduler:
    return Scheduler.restore(snapshot.core, parse_iso(snapshot.meta["started"]), snapshot.records,
                             bool(snapshot.meta.get("cancel")), now=now)


def _remember(ledger: RunLedger, run_id: str, version: int, scheduler: Scheduler) -> None:
    ledger.schedulers.remember(run_id, version, scheduler)


def cached_view(ledger: RunLedger, run_id: str, look: Callable[[Scheduler], T]) -> T | None:
    """`look` at this ledger object's cached scheduler of the run (as its last change here left it),
    under the run's lock and with no I/O; None when it is not cached. For checks that must cost
    nothing on the report path (tower.deadlines)."""
    with _run_lock(ledger, run_id):
        cached = ledger.schedulers.get(run_id)
        return None if cached is None else look(cached[1])


def _current(ledger: RunLedger, run_id: str, now: datetime) -> tuple[int, Scheduler]:
    """The run's scheduler at its stored version: the cached one if nobody changed the run since,
    else the cached one brought up to date with the records written since (a few), else loaded."""
    cached = ledger.schedulers.take(run_id)
    version = ledger.version(run_id)
    if cached is not None and cached[0] == version:
        return cached
    snapshot = None
    if version is not None and cached is not None:
        known, scheduler = cached
        snapshot = ledger.load(run_id, since=known)  # written at `known` too: a save may land in parts
        if snapshot is not None:
            records = {name: asdict(record) for name, record in scheduler.records.items()}
            records.update(snapshot.records)
            snapshot = Snapshot(snapshot.version, scheduler.plan, snapshot.meta, records)
    elif version is not None:
        snapshot = ledger.load(run_id)
    if snapshot is None:
        raise RunNotInLedger(f"run {run_id!r} is not in the run ledger")
    return snapshot.version, _restore(snapshot, now)


def _change(ledger: RunLedger, run_id: str, now: datetime, change: Callable[[Scheduler], T]) -> T:
    """Apply `change` to the run's scheduler and store what it changed; on a version conflict,
    reload and apply it again."""
    with _run_lock(ledger, run_id):
        for _ in range(SAVE_ATTEMPTS):
            version, scheduler = _current(ledger, run_id, now)
            was_cancelled = scheduler.cancel_requested
            outcome = change(scheduler)
            changes = scheduler.take_changes()
            if not changes and scheduler.cancel_requested == was_cancelled:
                _remember(ledger, run_id, version, scheduler)
                if isinstance(outcome, Step):
                    outcome.version = version
                return outcome
            meta = {"started": iso(scheduler.started), "cancel": scheduler.cancel_requested}
            if ledger.save(run_id, version, meta, changes):
                _remember(ledger, run_id, version + 1, scheduler)
                if isinstance(outcome, Step):
                    outcome.version = version + 1
                return _dispatched(ledger, outcome) if isinstance(outcome, Step) else outcome
        raise LedgerConflict(f"run {run_id!r}: the ledger kept changing under this host ({SAVE_ATTEMPTS} tries)")


def ledger_from_environment(home: str | Path | None = None) -> RunLedger:
    """A new ledger object: TOWER_LEDGER_TABLE_URL set -> Azure Table Storage; else SQLite in `home`
    (default $TOWER_HOME) (required in Azure: `tower.stores.location`). Build one per process and
    pass it around (`tower.runtime.Runtime.ledger` does): its scheduler cache is the object's."""
    kind, where = location("TOWER_LEDGER_TABLE_URL", "ledger.db", home)
    if kind == "table":
        from tower.runs.ledger_table import TableRunLedger

        return TableRunLedger(where)
    from tower.runs.ledger_sqlite import SqliteRunLedger

    return SqliteRunLedger(where)
