"""The app's functions driven on the local engine in this process: what `tower run` and the tests use.

    LocalEngine(home)                 the app's functions on the local engine, as a context manager
      .start_run(plan) -> run_id      store a frozen plan, start `pipeline_run` on it
      .follow(run_id, on_update)      until the run ends; returns its result
      .unfinished_runs() -> [run_id]  runs the engine resumed after a crash
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from tower.errors import EngineError, UsageError
from tower.names import CANCEL_EVENT, PIPELINE_RUN
from tower.runner import RunInfo, store_run
from tower.runtime import Runtime
from tower.states import UNFINISHED_RUNTIMES


def run_app():
    """A fresh app with the functions a run needs (as function_app.py registers them). Fresh, because
    the engine reads an app's functions once and a process may run several engines one after another."""
    import azure.durable_functions as df

    from activities import blueprints as activities
    from orchestrators import bp as orchestrators

    app = df.DFApp()
    for blueprint in (orchestrators, *activities):
        app.register_functions(blueprint)
    return app


class LocalEngine:
    """The app's Durable functions running on the local engine in this process."""

    def __init__(self, home: Path, activity_workers: int = 8, app: Any = None, time_scale: float = 1.0,
                 runtime: Runtime | None = None):
        self.home = Path(home)
        # The stores and adapters of this process's runs (the CLI's composition root): given to the
        # engine for the app's functions, and read here to start and follow runs, so following a
        # run reads the ledger through the same cache its changes keep warm.
        self._own_runtime = runtime is None
        self.runtime = runtime if runtime is not None else Runtime(self.home)
        self.time_scale = time_scale    # a simulated run's: the latency model (if any) scales with it
        self.activity_workers = activity_workers
        self.app = app
        self.engine = None

    def __enter__(self) -> LocalEngine:
        from tower.local.engine import Engine

        app = self.app if self.app is not None else run_app()
        logging.disable(logging.WARNING)  # the Functions SDK warns that a non-HTTP app has no auth level
        try:
            self.engine = Engine(app, self.home, activity_workers=self.activity_workers,
                                 latency_scale=self.time_scale, runtime=self.runtime)
        finally:
            logging.disable(logging.NOTSET)
        self.engine.start()
        return self

    def __exit__(self, *exc) -> None:
        if self.engine is not None:
            self.engine.stop()
            self.engine = None
        if self._own_runtime:
            self.runtime.close()  # the engine ran on it: its platform threads go

    def start_run(self, plan: dict, trigger: str = "cli", repair_of: str | None = None, again: bool = False) -> str:
        """Claim the run id in the runs index, then start `pipeline_run` (tower.runs.index.start_once:
        RunExists if the id was used). A repair first links its original run to it, which refuses a
        second repair unless `again` (undone if the repair does not start)."""
        import asyncio

        from tower.runs.index import link_repair, row_for, start_once, unlink_repair
        from tower.timestamps import utcnow

        index, run_id = self.runtime.runs_index, plan["run_id"]

        async def start() -> None:
            self.engine.start_new(PIPELINE_RUN, run_id, json.dumps(store_run(plan, self.runtime.ledger)))

        async def exists() -> bool:
            return self.engine.status(run_id, show_input=False) is not None

        async def here(fn, *args):  # the index is local SQLite: no thread needed
            return fn(*args)

        previous = link_repair(index, repair_of, run_id, again) if repair_of else None
        try:
            asyncio.run(start_once(index, row_for(plan, trigger, utcnow(), repair_of), start, exists, to_thread=here))
        except BaseException:
            if repair_of:
                unlink_repair(index, repair_of, run_id, previous)
            raise
        return run_id

    def cancel(self, run_id: str) -> None:
        self.engine.raise_event(run_id, CANCEL_EVENT, None)

    def info(self, run_id: str) -> RunInfo:
        status = self.engine.status(run_id, show_input=False)
        if status is None:
            raise UsageError(f"no run {run_id!r}")
        return RunInfo.from_status(status).with_live_status(self.runtime.ledger)

    def unfinished_runs(self) -> list[str]:
        runs = self.engine.list(runtime_status=list(UNFINISHED_RUNTIMES))
        return [s["instanceId"] for s in runs if s.get("name") in (None, PIPELINE_RUN)]

    def follow(self, run_ids: Iterable[str], on_update: Callable[[dict[str, RunInfo]], None] | None = None,
               interval: float = 0.1) -> dict[str, RunInfo]:
        """Watch runs until every one has ended, calling `on_update` with their latest state."""
        pending = list(run_ids)
        latest: dict[str, RunInfo] = {}
        while True:
            for run_id in pending:
                latest[run_id] = self.info(run_id)
            pending = [run_id for run_id in pending if not latest[run_id].finished]
            if on_update:
                on_update(latest)
            if not pending:
                return latest
            try:  # the engine wakes this the moment the run ends: its end is not a poll away
                self.engine.wait(pending[0], timeout=interval)
            except EngineError:  # still running after `interval`: show progress, look again
                pass

    def final(self, run_id: str) -> RunInfo:
        """The ended run with each service's record (for the summary)."""
        return RunInfo.from_status(self.engine.status(run_id, show_input=False)).with_services(self.runtime.ledger)
