"""Runs, from any process: plan a pipeline run, store it, read and steer runs. Driving them on the
in-process local engine is `tower.local.driver.LocalEngine`.

    plan_run(catalog, pipeline, ...)  a plan whose priorities use the run history's durations
    repair_plan(plan, result)         a new run of what failed, was held back or was cancelled
    store_run(plan) -> dict           store a plan in the run ledger; `pipeline_run`'s input
    run_info / list_runs / request_cancel   read or steer runs from any process, engine or not
    purge(home, older_than)           delete finished runs' details (tower.runs.index, retention)

`pipeline_run` returns a run's outcome (tower.runs.ledger.run_result); a run result, as shown and printed
(`RunInfo.to_result`), adds each service's record, read from the run ledger.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from tower.errors import EngineError, InstanceNotFound, UsageError
from tower.names import CANCEL_EVENT, PIPELINE_RUN
from tower.states import UNFINISHED_RUNTIMES, RunState, ServiceState, run_state_of_ended

# Durable runtime states, and what each means for a run that has no result of its own.
REPAIRABLE = (ServiceState.FAILED, ServiceState.UPSTREAM_FAILED, ServiceState.CANCELLED)
JSON_SERVICE_FIELDS = ("status", "attempts", "started", "finished", "remote_id", "error")
_RUN_ID_SUFFIX = re.compile(r"-\d{8}T\d{6}-[0-9a-f]{6}$")


def _loads(value: Any) -> Any:
    """Engine payloads may come as JSON text or already parsed."""
    if isinstance(value, (str, bytes)) and value:
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


# --- plans ------------------------------------------------------------------------------------

def plan_run(catalog, pipeline: str, *, params=None, selectors=None, run_id: str | None = None,
             simulate=False, time_scale=1.0, home: Path | None = None, history=None) -> dict:
    """The frozen plan of a new run, with priorities from the run history where it knows better
    (asked about the selected services only). A simulated run keeps the catalog's expected
    durations, so a what-if is repeatable. `history`: the process's run history, else that of `home`."""
    from tower.runs.history import history_from_environment
    from tower.runs.plan import build_plan

    recent = None if simulate else (history or history_from_environment(home)).recent_durations
    return build_plan(catalog, pipeline, params=params, selectors=selectors, run_id=run_id, recent=recent,
                      simulate=simulate, time_scale=time_scale)


def repair_plan(plan: dict, result: dict, now: datetime | None = None) -> dict:
    """A new run of the original (frozen) plan's failed, upstream_failed and cancelled services.

    Everything else counts as satisfied: dependencies outside the repair are dropped. The specs,
    params and limits are those of the original run, not of today's catalog."""
    from tower.runs.plan import new_run_id, service_instance_id
    from tower.timestamps import iso

    statuses = {name: svc.get("status") for name, svc in (result.get("services") or {}).items()}
    chosen = [name for name in plan["services"] if statuses.get(name) in REPAIRABLE]
    if not chosen:
        raise UsageError(f"run {plan['run_id']} has nothing to repair: no failed, upstream_failed or"
                         " cancelled service")
    now = now or datetime.now(timezone.utc)
    run_id = new_run_id(plan["pipeline"], now)
    services = {}
    for name in chosen:
        svc = dict(plan["services"][name])
        svc["deps"] = [dep for dep in svc["deps"] if dep in chosen]
        svc["iid"] = service_instance_id(run_id, name)
        services[name] = svc
    used = {svc["platform"] for svc in services.values()}
    return {**plan, "run_id": run_id, "created": iso(now), "services": services,
            "platforms": {name: p for name, p in plan["platforms"].items() if name in used}}


def store_run(plan: dict, ledger=None) -> dict:
    """Store the run's frozen plan in the run ledger (once) and return `pipeline_run`'s input,
    a reference to it: every start of a run goes through here (tower.runs.ledger.store_plan).
    `ledger`: the process's (`tower.runtime.Runtime.ledger`); else one of $TOWER_HOME, for this call."""
    from tower.runs.ledger import ledger_from_environment, store_plan
    from tower.timestamps import utcnow

    return store_plan(ledger if ledger is not None else ledger_from_environment(), plan, utcnow())


# --- what a run looks like from outside --------------------------------------------------------

@dataclass(frozen=True)
class RunInfo:
    """One run: its runtime state, input (`reference`: which plan), outcome or live custom status
    from Durable, and (`with_services`) each service's record and its plan's outline from the run
    ledger."""

    run_id: str
    runtime_status: str
    created: str | None
    updated: str | None
    reference: dict | None
    result: dict | str | None
    custom_status: dict | None
    services: dict | None = None
    plan: dict | None = None  # its outline (tower.runs.ledger.plan_outline): no service's spec or params

    @property
    def finished(self) -> bool:
        return self.runtime_status not in UNFINISHED_RUNTIMES

    @property
    def pipeline(self) -> str:
        for source in (self.result, self.reference):
            if isinstance(source, dict) and source.get("pipeline"):
                return source["pipeline"]
        return _RUN_ID_SUFFIX.sub("", self.run_id)

    @property
    def status(self) -> str:
        """succeeded / failed / cancelled / running (the run's, not the orchestration's)."""
        if isinstance(self.result, dict) and self.result.get("status"):
            return self.result["status"]
        if not self.finished:
            return RunState.RUNNING
        return run_state_of_ended(self.runtime_status)

    def to_result(self) -> dict:
        """The run in the shape of a run result, whatever state it is in: its outcome (or live
        status) and the services `with_services` read."""
        custom = self.custom_status or {}
        error = self.result if isinstance(self.result, str) else None
        result = {"run_id": self.run_id, "pipeline": self.pipeline, "status": self.status,
                  "started": custom.get("started") or self.created,
                  "finished": self.updated if self.finished else None,
                  "eta": custom.get("eta"), "summary": error or ""}
        if isinstance(self.result, dict):
            result.update(self.result)
        if self.services is not None:
            result["services"] = self.services
        result.setdefault("services", {})
        if custom.get("slots"):
            result["slots"] = custom["slots"]
        return result

    @classmethod
    def from_status(cls, status: dict) -> RunInfo:
        return cls(
            run_id=status.get("instanceId") or "",
            runtime_status=status.get("runtimeStatus") or "Unknown",
            created=status.get("createdTime"),
            updated=status.get("lastUpdatedTime"),
            reference=_loads(status.get("input")),
            result=_loads(status.get("output")),
            custom_status=_loads(status.get("customStatus")) or None,
        )

    def with_live_status(self, ledger) -> RunInfo:
        """A running run's progress comes from the run ledger (`pipeline_run` itself does not
        follow each service: tower.runs.ledger)."""
        if self.finished:
            return self
        from dataclasses import replace

        from tower.runs.ledger import live_status
        from tower.timestamps import utcnow

        status = live_status(ledger, self.run_id, utcnow())
        return replace(self, custom_status=status) if status else self

    def with_services(self, ledger) -> RunInfo:
        """The run with each service's record and the outline of its plan, read from the run ledger
        (Durable carries neither)."""
        from dataclasses import replace

        from tower.runs.ledger import plan_outline, run_services
        from tower.timestamps import utcnow

        services = run_services(ledger, self.run_id, utcnow())
        if services is None:
            return self
        return replace(self, services=services, plan=plan_outline(ledger, self.run_id))


def json_result(result: dict) -> dict:
    """The `--json` form of a run: the run's fields and, per service, the fields people script on."""
    return {
        "run_id": result.get("run_id"),
        "pipeline": result.get("pipeline"),
        "status": result.get("status"),
        "started": result.get("started"),
        "finished": result.get("finished"),
        "services": {name: {field: svc.get(field) for field in JSON_SERVICE_FIELDS}
                     for name, svc in (result.get("services") or {}).items()},
        **({"slots": result["slots"]} if result.get("slots") else {}),  # who holds the slots it waits for
    }


def run_info(home: Path, run_id: str, services: bool = True) -> RunInfo:
    """A run read straight from the store (no engine needed), with its services' records unless
    `services` is false; UsageError if there is none."""
    from tower.local.store import read_status
    from tower.runs.ledger import ledger_from_environment

    if not (Path(home) / "state.db").exists():
        raise UsageError(f"no runs in {home} yet (is TOWER_HOME right? start one with `tower run PIPELINE`)")
    try:
        status = read_status(home, run_id)
    except InstanceNotFound:
        status = None
    if not status or status.get("name") not in (None, PIPELINE_RUN):
        raise UsageError(f"no run {run_id!r} in {home} (see `tower runs`; is TOWER_HOME right?)")
    ledger = ledger_from_environment(home)
    info = RunInfo.from_status(status).with_live_status(ledger)
    return info.with_services(ledger) if services else info


def list_runs(home: Path, limit: int = 20, **filters) -> list:
    """Recent runs, newest first, from the runs index (RunRow; filters as `RunsIndex.list`)."""
    from tower.runs.index import index_from_environment

    return index_from_environment(home).list(limit=limit, **filters)[0]


class LocalDurableSide:
    """The purge's view of the local engine's store (tower.runs.index.DurableSide); an engine may
    be running: each instance is deleted in its own transaction, only if it is still finished."""

    def __init__(self, home: Path):
        self.home = Path(home)

    async def runtime(self, instance_id: str) -> str | None:
        from tower.local.store import read_status

        if not (self.home / "state.db").exists():
            return None
        status = read_status(self.home, instance_id, show_input=False)
        return status.get("runtimeStatus") if status else None

    async def purge(self, created_before: datetime) -> int:
        from tower.local import history as h
        from tower.local.store import Store

        if not (self.home / "state.db").exists():
            return 0
        store, deleted = Store(self.home), 0
        try:
            for row in store.rows(runtime_status=sorted(h.TERMINAL), created_to=created_before):
                with store.tx() as db:
                    found = db.execute("SELECT status FROM instances WHERE id = ?", (row["id"],)).fetchone()
                    if found and found[0] in h.TERMINAL:
                        store.purge(db, row["id"])
                        deleted += 1
        finally:
            store.close()
        return deleted


def purge(home: Path, older_than_days: int, now: datetime | None = None) -> dict[str, int]:
    """`tower purge`: delete the details of runs older than this (tower.runs.index.purge)."""
    import asyncio

    from tower import push
    from tower.runs.history import history_from_environment
    from tower.runs.index import index_from_environment
    from tower.runs.index import purge as purge_stores
    from tower.runs.ledger import ledger_from_environment

    async def here(fn, *args):
        return fn(*args)

    return asyncio.run(purge_stores(index_from_environment(home), ledger_from_environment(home),
                                    history_from_environment(home), LocalDurableSide(home),
                                    now or datetime.now(timezone.utc), older_than_days, to_thread=here,
                                    push=push.index_from_environment(home)))


def engine_alive(home: Path) -> bool:
    """Does `<home>/engine.json` name a live process?"""
    from tower.processes import pid_alive

    try:
        pid = int(json.loads((home / "engine.json").read_text())["pid"])
    except (OSError, ValueError, KeyError, TypeError):
        return False
    return pid_alive(pid)


def request_cancel(home: Path, run_id: str) -> RunInfo:
    """Raise the cancel event of a run; a running engine acts on it at once, a stopped one on its
    next start (`tower resume`)."""
    from tower.local.store import enqueue_event

    info = run_info(home, run_id, services=False)
    if not info.finished:
        try:
            enqueue_event(home, run_id, CANCEL_EVENT, None)
        except EngineError:  # it ended in the meantime
            info = run_info(home, run_id, services=False)
    return info
