"""The board: where a run stands, platform by platform, and why each waiting service waits.

A run page needs more than states: a data engineer wants to know *why* `publish` has not started.
The scheduler already knows (`tower.runs.scheduler.Scheduler`: dependencies still awaited, ready queues
per platform in priority order, slots taken), so the board is read straight off it: a pure function
of the run's restored scheduler, no clock but the `now` it is given.

    board(scheduler, now) -> dict        platforms as runways (slots in use / limit, queue) and reasons
    run_view(ledger, run_id, now) -> dict   the run's graph, critical path, ETA and board, from the ledger

Reasons, in the scheduler's own terms:
    "waiting for load_orders"                          a dependency has not succeeded yet
    "no slot on lakehouse: 4/4 busy, 2nd in queue"     ready, its platform is full
    "no slot on lakehouse: 4/4 busy; held by run~nightly@... (3), run~adhoc@... (1)"
                                                       ready, its platform's shared slots held by other runs
    "run cancelled"                                    a cancel stops dispatching
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from tower import graph
from tower.runs.scheduler import Scheduler
from tower.states import DONE_FOR_DEPENDENTS, ServiceState
from tower.timestamps import iso, parse_iso

DEPS_NAMED = 3  # unfinished dependencies named in a reason; the rest are counted


def ordinal(n: int) -> str:
    """1st, 2nd, 3rd, 4th, ... 11th, 12th, 13th, 21st."""
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def _waiting_for(names: list[str]) -> str:
    shown = ", ".join(names[:DEPS_NAMED])
    more = len(names) - DEPS_NAMED
    return f"waiting for {shown}" + (f" and {more} more" if more > 0 else "")


def board(scheduler: Scheduler, now: datetime) -> dict:
    """The runways of a run: per platform its slots (``busy``/``limit``, None = unlimited), what
    runs there (longest-running first) and its queue in dispatch order; per pending service why it
    waits. A finished run has empty runways and no reasons."""
    records = scheduler.records
    queues = {platform: [name for _, _, name in sorted(entries)] for platform, entries in scheduler.ready.items()}
    runways = []
    for platform, limit in scheduler.limits.items():
        running = sorted((n for n in scheduler.order if records[n].status == ServiceState.RUNNING and scheduler.platform_of[n] == platform),
                         key=lambda n: (records[n].started or "", scheduler.position[n]))
        runways.append({
            "platform": platform,
            "limit": limit,
            "busy": scheduler.busy.get(platform, 0),
            "running": [{"service": n, "started": records[n].started,
                         "elapsed": _elapsed(records[n].started, now),
                         "expected": scheduler.expected[n]} for n in running],
            "queue": queues.get(platform, []),
            "blocked": sum(1 for n in scheduler.order if records[n].status == ServiceState.PENDING
                           and scheduler.platform_of[n] == platform and n not in queues.get(platform, ())),
        })
    position = {name: (platform, i) for platform, queue in queues.items() for i, name in enumerate(queue)}
    waiting = {}
    for name in scheduler.order:
        if records[name].status != ServiceState.PENDING:
            continue
        if scheduler.cancel_requested:
            waiting[name] = "run cancelled"
            continue
        unfinished = [dep for dep in scheduler.deps[name] if records[dep].status not in DONE_FOR_DEPENDENTS]
        if unfinished:
            waiting[name] = _waiting_for(unfinished)
        elif name in position and position[name][1] >= _free(scheduler, position[name][0]):
            platform, at = position[name]  # the free slots go to those ahead of it first
            waiting[name] = (f"no slot on {platform}: {scheduler.busy[platform]}/{scheduler.limits[platform]} busy,"
                             f" {ordinal(at - _free(scheduler, platform) + 1)} in queue")
        else:  # ready with a free slot: the next dispatch takes it
            waiting[name] = f"ready: starts at the next dispatch on {scheduler.platform_of[name]}"
    return {"runways": runways, "waiting": waiting}


def _free(scheduler: Scheduler, platform: str) -> float:
    """Slots the next dispatch can fill on `platform` (infinite without a limit)."""
    limit = scheduler.limits[platform]
    return float("inf") if limit is None else max(limit - scheduler.busy[platform], 0)


def _elapsed(started: str | None, now: datetime) -> float | None:
    when = parse_iso(started) if started else None
    return round((now - when).total_seconds(), 3) if when else None


def remaining_critical_path(scheduler: Scheduler, now: datetime) -> list[str]:
    """The chain that decides when the run ends: the critical path of what is left (running
    services by their expected time left), or of the whole plan once nothing is left."""
    left: dict[str, float] = {}
    for name in scheduler.order:
        record = scheduler.records[name]
        if record.status == ServiceState.PENDING:
            left[name] = scheduler.expected[name]
        elif record.status == ServiceState.RUNNING:
            elapsed = _elapsed(record.started, now) or 0.0
            left[name] = max(scheduler.expected[name] - elapsed, 0.0)
    if not left or scheduler.cancel_requested:
        return graph.critical_path(scheduler.deps, scheduler.expected)[0]
    return graph.critical_path(graph.restrict(scheduler.deps, left), left)[0]


def view(scheduler: Scheduler, now: datetime) -> dict:
    """Everything the run page draws that a run result does not carry: each service's platform,
    dependencies, expected seconds and remote link; the platforms' limits; the critical path; the
    ETA; and the board."""
    services = {}
    for name in scheduler.order:
        record = scheduler.records[name]
        entry = {"platform": scheduler.platform_of[name], "deps": list(scheduler.deps[name]),
                 "expected": scheduler.expected[name], "status": record.status, "attempts": record.attempts,
                 "started": record.started, "finished": record.finished, "remote_id": record.remote_id,
                 "url": record.url, "error": record.error}
        services[name] = {key: value for key, value in entry.items() if value is not None}  # a 1,000-service page polls it
    return {
        "run_id": scheduler.plan["run_id"],
        "pipeline": scheduler.plan["pipeline"],
        "status": scheduler.status,
        "started": iso(scheduler.started),
        "eta": iso(scheduler.eta(now)),
        "cancel_requested": scheduler.cancel_requested,
        "counts": scheduler.counts(),
        "platforms": {name: {"limit": limit} for name, limit in scheduler.limits.items()},
        "critical_path": remaining_critical_path(scheduler, now),
        "services": services,
        "board": board(scheduler, now),
    }


def restore(core: Mapping[str, Any], meta: Mapping[str, Any], records: Mapping[str, Mapping[str, Any]],
            now: datetime) -> Scheduler:
    """The scheduler a stored run describes (as tower.runs.ledger restores it), for reading only."""
    return Scheduler.restore(core, parse_iso(meta["started"]), records, bool(meta.get("cancel")), now=now)


def run_view(ledger, run_id: str, now: datetime) -> dict | None:
    """`view` of a run read from its ledger (one load, nothing written); None if the ledger does not
    have it."""
    snapshot = ledger.load(run_id)
    if snapshot is None or snapshot.core is None:
        return None
    scheduler = restore(snapshot.core, snapshot.meta, snapshot.records, now)
    shown = view(scheduler, now)
    if scheduler.shared and hasattr(ledger, "slots"):
        shared_slots(shown["board"], scheduler, ledger.slots())
    return shown


HOLDING_RUNS_NAMED = 3  # runs named in a "held by" reason; the rest are counted


def shared_slots(shown: dict, scheduler: Scheduler, store) -> None:
    """A shared platform's runway shows the slots of every run (`tower.runs.slots`): `busy` counts all
    holders, `holders` says which runs hold how many; a ready service that waits for a slot says
    which runs hold them (the queue across runs decides, not this run's queue alone)."""
    from tower.runs import slots

    simulated, run_id = bool(scheduler.plan.get("simulated")), scheduler.plan["run_id"]
    full = {}
    for runway in shown["runways"]:
        if runway["platform"] not in scheduler.shared:
            continue
        state = store.read(slots.pool_of(runway["platform"], simulated))[1]
        holders: dict[str, int] = {}
        for key in state["holders"]:
            holders[slots.holder_of(key)[0]] = holders.get(slots.holder_of(key)[0], 0) + 1
        runway["busy"], runway["holders"] = len(state["holders"]), holders
        granted = {name for key in state["holders"] for holder, name in [slots.holder_of(key)]
                   if holder == run_id and name in runway["queue"]}  # its run takes them in a moment
        if granted:
            runway["queue"] = [name for name in runway["queue"] if name not in granted]
            shown["waiting"].update({name: f"granted a slot on {runway['platform']}: starting" for name in granted})
            for place, name in enumerate(runway["queue"], 1):  # the places behind them, counted by the pool
                if shown["waiting"].get(name, "").startswith("no slot"):
                    shown["waiting"][name] = (f"no slot on {runway['platform']}: {runway['busy']}/{runway['limit']} busy,"
                                              f" {ordinal(place)} in queue")
        runway["waiting_runs"] = sorted(state["waiting"])
        if runway["limit"] is not None and len(state["holders"]) >= runway["limit"] and set(holders) - {run_id}:
            ranked = sorted(holders.items(), key=lambda item: (-item[1], item[0]))
            named = ", ".join(f"{run} ({n})" for run, n in ranked[:HOLDING_RUNS_NAMED])
            more = len(ranked) - HOLDING_RUNS_NAMED
            full[runway["platform"]] = (f"{len(state['holders'])}/{runway['limit']} busy", f"held by {named}"
                                        + (f" and {more} more runs" if more > 0 else ""))
    for name, reason in shown["waiting"].items():
        platform = scheduler.platform_of[name]
        if platform not in full:
            continue
        busy, held = full[platform]
        if reason.startswith("no slot"):  # its place in this run's queue, and who holds the slots
            place = reason.split(", ", 1)[1]
            shown["waiting"][name] = f"no slot on {platform}: {busy}, {place}; {held}"
        elif reason.startswith("ready"):
            shown["waiting"][name] = f"no slot on {platform}: {busy}; {held}"
