"""What one Tower process shares, in one object: its stores, its platform adapters, its notifier.

Tower keeps no mutable state in module globals (the few per-process exceptions, and why, are in
docs/architecture.md, "One runtime per process"). A composition root builds one `Runtime` and hands
it to what needs it, the way an ``httpx.Client`` is given its transport:

- in Azure, ``function_app.py``, once per worker process (`app_runtime.install`);
- on the local host, each engine for its home, while it runs (`tower.local.engine.Engine`);
- the CLI, for the command it runs (`tower.local.driver.LocalEngine` hands its own to its engine).

Each store is built from the environment on first use (a command that reads one store opens no
other) and then kept: the run ledger's scheduler cache, the Table clients' connections and their
credentials serve the whole process. In Azure that makes exactly one ledger per worker process, as
the ledger's cache needs (`tower.runs.ledger.SchedulerCache`).

    Runtime.from_environment(home=None, platforms=None)
      .ledger  .history  .runs_index  .rejected  .push_keys  .outbox    the stores
      .notifier  .deadlines  .events                                    what a run tells the world
      .platforms  .platform_threads                                     tower.platforms.Platforms, its pool
      .catalog(path)                                                    loaded once per change of the file
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from tower.paths import tower_home
from tower.platforms import Platforms

T = TypeVar("T")
PLATFORM_THREADS = 32  # platform calls in flight at once in one process


class Runtime:
    """The stores and collaborators of one Tower process (see the module docstring). `home` is where
    the local stores live (SQLite files under it) when no Table setting names a table."""

    def __init__(self, home: str | Path | None = None, *, platforms: Platforms | None = None):
        self.home = (Path(home) if home is not None else tower_home()).absolute()
        self.platforms = platforms if platforms is not None else Platforms(home=self.home)
        self._lock = threading.RLock()  # re-entrant: building one part may ask for another
        self._parts: dict[str, Any] = {}
        self._catalogs: dict[str, tuple[float, Any]] = {}  # resolved path -> (mtime, catalog)

    @classmethod
    def from_environment(cls, home: str | Path | None = None, *, platforms: Platforms | None = None) -> Runtime:
        """The runtime of a process whose stores are named by its environment: each TOWER_*_TABLE_URL
        set names a Table, else a SQLite file under `home` (default $TOWER_HOME, read now). Nothing
        is opened until used."""
        return cls(home, platforms=platforms)

    def catalog(self, path: str | Path):
        """The catalog at `path`, loaded once and again when the file changes (its mtime), so the
        triggers of a worker do not parse it at every invocation; CatalogError if it is invalid, or
        declares what an Azure host cannot run when this is one (`tower validate --azure` checks)."""
        from tower.catalog import load_catalog
        from tower.stores import azure_marker

        path = Path(path)
        key = str(path.resolve())
        mtime = path.stat().st_mtime if path.exists() else -1.0
        with self._lock:
            cached = self._catalogs.get(key)
        if cached is None or cached[0] != mtime:
            cached = (mtime, load_catalog(path, for_azure=azure_marker() is not None))
            with self._lock:
                self._catalogs[key] = cached
        return cached[1]

    def _once(self, name: str, build: Callable[[], T]) -> T:
        with self._lock:
            if name not in self._parts:
                self._parts[name] = build()
            return self._parts[name]

    # --- the stores (tower.stores: a Table in Azure, a SQLite file under `home` locally) -----------

    @property
    def ledger(self):
        """The run ledger (`tower.runs.ledger`), with this process's scheduler cache."""
        from tower.runs.ledger import ledger_from_environment

        return self._once("ledger", lambda: ledger_from_environment(self.home))

    @property
    def history(self):
        """The run history (`tower.runs.history`)."""
        from tower.runs.history import history_from_environment

        return self._once("history", lambda: history_from_environment(self.home))

    @property
    def runs_index(self):
        """The runs index (`tower.runs.index`)."""
        from tower.runs.index import index_from_environment

        return self._once("runs_index", lambda: index_from_environment(self.home))

    @property
    def rejected(self):
        """Rejected events (`tower.rejected`)."""
        from tower.rejected import rejected_from_environment

        return self._once("rejected", lambda: rejected_from_environment(self.home))

    @property
    def push_keys(self):
        """Remote runs that may push their completion (`tower.push`)."""
        from tower import push

        return self._once("push_keys", lambda: push.index_from_environment(self.home))

    @property
    def platform_threads(self) -> ThreadPoolExecutor:
        """Where blocking platform calls run (requests, the Snowflake connector, subprocesses), never
        on the worker's event loop, which every async activity shares. Its threads start on use."""
        return self._once("platform_threads", lambda: ThreadPoolExecutor(
            max_workers=PLATFORM_THREADS, thread_name_prefix="tower-platform"))

    def close(self) -> None:
        """Let the threads this runtime started go (an engine that built its runtime stops); a later
        use starts them again. A worker process never needs it: its runtime lives as long as it."""
        with self._lock:
            pool = self._parts.pop("platform_threads", None)
        if pool is not None:
            pool.shutdown(wait=False)

    @property
    def events(self):
        """The publisher to the events queue (`tower.events`: Service Bus in Azure, the local bus under
        `home` elsewhere): one link per process."""
        from tower.events import publisher_from_settings

        return self._once("events", lambda: publisher_from_settings(home=self.home))

    @property
    def notifier(self):
        """Run notifications (`tower.notify.Notifier`): kept in the outbox, sent in the background."""
        from tower.notify import Notifier

        return self._once("notifier", lambda: Notifier(self.outbox, home=self.home))

    @property
    def deadlines(self):
        """Deadline checks (`tower.deadlines.DeadlineWatch`) over this runtime's ledger and notifier."""
        from tower.deadlines import DeadlineWatch

        return self._once("deadlines", lambda: DeadlineWatch(self.ledger, self.notifier))

    @property
    def outbox(self):
        """The notifications outbox (`tower.notify`)."""
        from tower.notify import outbox_from_environment

        return self._once("outbox", lambda: outbox_from_environment(self.home))
