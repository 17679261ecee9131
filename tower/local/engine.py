"""The local Durable engine: runs a v2-model app's orchestrators and activities the way the Functions
host and the Durable extension do, through the real `azure-functions-durable` SDK, with its state in
SQLite so that a killed process picks up where it stopped.

One *work loop* thread owns the orchestration state: it reads inbox messages, batches those of an
instance into one episode, calls the SDK's handle with the context JSON, re-enacts the extension's
processing of the returned actions (`tower.local.replay`), and commits the episode in one
transaction. Activities run on `activity_workers` daemon threads; async functions (activities,
HTTP functions, the management API) run on the process's one event loop thread, `engine.loop`.

Several engines (processes) may share a home, as the Azure Storage backend's workers share a task
hub: the one holding the home's orchestration lease runs the work loop's episodes (and checks the
lease in each commit), every engine takes activity work items (one owner each), and a stopped or
dead engine's share is taken over (`Store.beat`). `python -m tower.local.worker` starts another.
"""

from __future__ import annotations

import asyncio
import heapq
import inspect
import json
import os
import socket
import threading
import time
import traceback
import uuid
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from queue import Empty, Queue
from typing import TYPE_CHECKING, Any

import app_runtime  # the shell's slot for the runtime its functions use (see app_runtime.py)
from tower.errors import EngineError, InstanceExists, InstanceNotFound, NonDeterminismError
from tower.local import history as h
from tower.local import store as st
from tower.local.latency import Latency, latency_from_env
from tower.local.replay import ACTIVITY, TIMER, Work, replay
from tower.processes import pid_alive
from tower.redact import redact
from tower.runs.plan import _FORBIDDEN_IN_ID, MAX_INSTANCE_ID, is_valid_instance_id
from tower.runtime import Runtime

if TYPE_CHECKING:
    from tower.local.management import StartTrouble

POLL_SECONDS = 0.1          # how often the inbox is polled for messages from other processes
# Several engines (processes) over one home cooperate as the Azure Storage backend's workers do: one
# lease (a single partition) decides which engine runs orchestrations, renewed with each heartbeat;
# activity work items are taken by any engine, one owner each. A host whose heartbeat is older than
# LEASE_SECONDS, or whose process is gone, is dead: its lease and its work items are taken over.
# (DurableTask.AzureStorage: LeaseRenewInterval 10 s, LeaseInterval 30 s.)
HEARTBEAT_SECONDS = 1.0
LEASE_SECONDS = 30.0
ORCHESTRATION_LEASE = "orchestrations"
# What the extension tells the out-of-process SDK about durable timers on Azure Storage: a timer
# further away than the maximum short timer becomes the SDK's LongTimerTask, a chain of timers of at
# most the interval (AzureStorageDurabilityProvider.MaximumDelayTime 6 days, LongRunningTimerInterval
# 3 days; the SDK's create_timer). The Durable Task Scheduler sends neither, and the SDK then makes
# one plain timer, so the scheduler profile leaves them out too.
MAXIMUM_SHORT_TIMER = timedelta(days=6)
LONG_TIMER_INTERVAL = timedelta(days=3)

# The Functions host's HTTP request body limit (FUNCTIONS_REQUEST_BODY_SIZE_LIMIT, 100 MB by
# default): aiohttp's own 1 MiB default would refuse bodies Azure takes.
HTTP_MAX_REQUEST_BYTES = 100 * 1024 * 1024

# Backend profiles (TOWER_LOCAL_BACKEND): what the task hub's storage does with big payloads.
AZURE_STORAGE, DURABLE_TASK_SCHEDULER = "azureStorage", "durableTaskScheduler"
BACKENDS = (AZURE_STORAGE, DURABLE_TASK_SCHEDULER)
# Azure Storage compresses a message over 45 KB into a blob and keeps a reference in the queue
# message / table row (DurableTask.AzureStorage MessageManager.MaxStorageQueuePayloadSizeInBytes):
# accepted, but each one costs a blob upload and a download per read. Counted in `stats`.
BLOB_OFFLOAD_BYTES = 45 * 1024
# The Durable Task Scheduler moves every payload in a gRPC message capped at 1 MiB; its large-payload
# offload is .NET only ("Large payload support with Durable Task Scheduler": Python, JavaScript,
# PowerShell, Java "not available: use external storage and pass references").
DTS_MESSAGE_LIMIT = 1024 * 1024
# Payload kinds, counted in stats["<kind>_payloads"], ["<kind>_max_bytes"], ["<kind>_over_45kb"]
PAYLOAD_KINDS = ("orchestration_input", "orchestration_output", "activity_input", "activity_output",
                 "custom_status", "event")


class PayloadTooLarge(EngineError):
    """A payload over the backend's message limit (the Durable Task Scheduler's 1 MiB)."""


def too_large_message(kind: str, size: int) -> str:
    """The gRPC failure the scheduler's channel reports for a message over its limit."""
    return (f'Status(StatusCode="ResourceExhausted", Detail="Received message larger than max '
            f'({size} vs. {DTS_MESSAGE_LIMIT})"): the {kind.replace("_", " ")} is {size} bytes, over the '
            "Durable Task Scheduler's 1 MiB message limit; pass a reference to stored data instead")


def backend_from_env() -> str:
    value = os.environ.get("TOWER_LOCAL_BACKEND") or AZURE_STORAGE
    if value not in BACKENDS:
        raise EngineError(f"TOWER_LOCAL_BACKEND={value!r} is not a backend profile of the local host; "
                          f"use one of {', '.join(BACKENDS)}")
    return value


def validate_instance_id(instance_id: str) -> None:
    """Azure's documented instance-id rules (tower.runs.plan's), so an id that works here works there."""
    if is_valid_instance_id(instance_id):
        return
    if not isinstance(instance_id, str) or not 1 <= len(instance_id) <= MAX_INSTANCE_ID:
        raise EngineError(f"invalid instance id {instance_id!r}: it must be 1 to {MAX_INSTANCE_ID} characters long")
    if instance_id.startswith("@"):
        raise EngineError(f"invalid instance id {instance_id!r}: it must not start with '@'")
    bad = sorted(set(_FORBIDDEN_IN_ID.findall(instance_id)))
    raise EngineError(f"invalid instance id {instance_id!r}: it must not contain {' '.join(map(repr, bad))}")


def timespan(value: timedelta) -> str:
    """A .NET TimeSpan in its constant ("c") format, d.hh:mm:ss.fffffff, as the host serialises it."""
    ticks = round(value.total_seconds() * 10_000_000)
    seconds, fraction = divmod(ticks, 10_000_000)
    minutes, second = divmod(seconds, 60)
    hours, minute = divmod(minutes, 60)
    days, hour = divmod(hours, 24)
    return f"{days}.{hour:02d}:{minute:02d}:{second:02d}" + (f".{fraction:07d}" if fraction else "")


def already_exists_message(status: str) -> str:
    """What DurableTask.AzureStorage throws (`OrchestrationAlreadyExistsException`) when a start
    names an instance that is Running, Pending, Suspended or ContinuedAsNew: the extension's default
    `overridableExistingInstanceStates` (NonRunningStates) dedupes only those; a Completed, Failed or
    Terminated instance is replaced (AzureStorageOrchestrationService.CreateTaskOrchestrationAsync,
    OverridableStates.cs)."""
    return f"An Orchestration instance with the status {status} already exists."


@dataclass(frozen=True)
class Activity:
    fn: Callable
    input_name: str
    client_names: tuple[str, ...]
    wants_context: bool = False  # takes `context` (a func.Context), as the worker tells by its signature


# The worker hands every function one threading.local as `context.thread_local_storage`; a log line
# from a thread is tied to the invocation id set there (azure-functions-python-worker dispatcher.py).
INVOCATION_LOCAL = threading.local()


def invocation_context(function_name: str) -> Any:
    """A stand-in for the `func.Context` the worker passes a function that takes `context`."""
    from types import SimpleNamespace

    return SimpleNamespace(invocation_id=str(uuid.uuid4()), function_name=function_name,
                           function_directory=os.getcwd(), trace_context=None, retry_context=None,
                           thread_local_storage=INVOCATION_LOCAL)


@dataclass
class _Live:
    """In-memory state of an unfinished instance: the history and its JSON, ready for the next episode."""

    id: str
    name: str
    execution_id: str
    status: str
    input: str | None
    parent: dict | None
    history: list[dict] = field(default_factory=list)
    encoded: list[str] = field(default_factory=list)     # history events as JSON, IsPlayed = true
    last_started: Any = None
    episodes: int = 0
    handle_cpu: float = 0.0
    custom_status: str | None = None
    output: str | None = None
    held: list = field(default_factory=list)              # messages that arrived while suspended


class Engine:
    def __init__(self, app, home: str | os.PathLike, *, activity_workers: int = 8,
                 log: Callable[[str], None] | None = None, port: int = 0, hub: str = "TowerHub",
                 backend: str | None = None, orchestrations: bool = True, max_activities: int | None = None,
                 maximum_short_timer: timedelta = MAXIMUM_SHORT_TIMER,
                 long_timer_interval: timedelta = LONG_TIMER_INTERVAL,
                 latency: Latency | None = None, latency_scale: float = 1.0, runtime: Runtime | None = None):
        from aiohttp import web

        from tower.local import management

        self.home = Path(home)
        # What the app's functions use while this engine runs (app_runtime.using): the stores of its
        # home, the platform adapters. A test passes one with stand-in platforms.
        self._own_runtime = runtime is None  # built here: its threads go when the engine stops
        self.runtime = runtime if runtime is not None else Runtime(self.home)
        self.store = st.Store(self.home)
        self.log = log or (lambda line: None)
        self.hub = hub
        self.orchestrators: dict[str, Callable[[str], str]] = {}
        self.activities: dict[str, Activity] = {}
        self.functions: list = []           # every other function (HTTP, timer, Service Bus...) for the host
        for fn in app.get_functions():      # once per app object: a second call raises "not unique"
            trigger = fn.get_trigger()
            if trigger.type == "orchestrationTrigger":
                self.orchestrators[fn.get_function_name()] = fn.get_user_function()
            elif trigger.type == "activityTrigger":
                clients = tuple(b.name for b in fn.get_bindings() if b.type == "durableClient")
                user = fn.get_user_function()
                self.activities[fn.get_function_name()] = Activity(
                    user, trigger.name, clients, "context" in inspect.signature(user).parameters)
            else:
                self.functions.append(fn)
        self.backend = backend or backend_from_env()
        if self.backend not in BACKENDS:
            raise EngineError(f"backend {self.backend!r} is not one of {', '.join(BACKENDS)}")
        self.payload_limit = DTS_MESSAGE_LIMIT if self.backend == DURABLE_TASK_SCHEDULER else None
        timers = {} if self.backend == DURABLE_TASK_SCHEDULER else {
            "maximumShortTimerDuration": timespan(maximum_short_timer),
            "longRunningTimerIntervalDuration": timespan(long_timer_interval)}
        self._context_tail = json.dumps({"upperSchemaVersion": 1, "upperSchemaVersionNew": 2, **timers})[1:-1]
        self.stats = {"episodes": 0, "handle_cpu": 0.0, "loop_cpu": 0.0, "activities": 0, "history_events": 0,
                      "max_payload_bytes": 0, "payloads_over_45kb": 0}
        for kind in PAYLOAD_KINDS:      # every stat a number: "<kind>_payloads", "_max_bytes", "_over_45kb"
            self.stats.update({f"{kind}_payloads": 0, f"{kind}_max_bytes": 0, f"{kind}_over_45kb": 0})
        # What the Azure backend's queues would delay (TOWER_LOCAL_LATENCY; None: the local host's own
        # speed), and what they would count: queue_messages, queue_polls, storage_transactions.
        self.latency = latency if latency is not None else latency_from_env(latency_scale, now=time.time())
        self.stats.update({"queue_messages": 0, "queue_polls": 0, "storage_transactions": 0})
        self._modelled: set[int] = set()        # inbox seqs whose delivery time the model has set
        self._dispatches: list = []             # heap of (at, n, work item): activities on their way
        self._dispatch_seq = 0
        self._stats_lock = threading.Lock()     # "activities" is counted by the worker threads
        self.episode_samples: list[tuple[int, float, float]] | None = None  # (history length, handle s, engine s)
        self.web_app = web.Application(client_max_size=HTTP_MAX_REQUEST_BYTES)
        management.add_routes(self.web_app.router, self)
        self._port = port
        self.base_url = ""
        self.client_binding = ""
        self.loop: asyncio.AbstractEventLoop | None = None     # the process loop, from start() to stop()
        self._workers = activity_workers
        self.host_id = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.orchestrations = orchestrations    # False: an activities-only worker
        self.max_activities = max_activities    # in flight at once, async ones included (None: no cap)
        self._leader = False                    # holds the orchestration lease
        self._next_beat = 0.0
        self._inflight = 0                      # claimed activity work items not yet done
        self._live: dict[str, _Live] = {}
        self._timers: list = []             # heap of (due, seq, message)
        self._timer_seq: dict[tuple[str, str], dict[int, int]] = {}   # (id, execution) -> {timer id: seq}, heap only
        self._dead: set[int] = set()
        self._hwm = 0
        self._wake = threading.Event()
        self._changed = threading.Condition()
        self._stopping = threading.Event()
        self._work: Queue = Queue()
        self._threads: list[threading.Thread] = []
        self._runner = None
        self._awaiting: set[asyncio.Task] = set()   # async activities running on the loop (touched there only)
        self.start_trouble: StartTrouble | None = None     # see unreliable_starts

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> Engine:
        """Start the event loop, the management API, the activity workers and the work loop."""
        from tower.local import management

        self.loop = _process_loop.acquire()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", self._port))
        except OSError as exc:
            sock.close()
            self._stopping.set()  # nothing was started: give back the process loop, and stop() is a no-op
            _process_loop.release(timeout=10)
            self.loop = None
            raise EngineError(f"cannot listen on 127.0.0.1:{self._port} ({exc.strerror}); stop whatever "
                              "uses that port or choose another one") from None
        self.base_url = f"http://127.0.0.1:{sock.getsockname()[1]}"
        self.client_binding = management.binding_string(self.base_url, self.hub)
        self._runner = asyncio.run_coroutine_threadsafe(self._serve(sock), self.loop).result()
        app_runtime.using(self.runtime)
        self._beat()            # join the hosts: take the lease if free, take over dead hosts' work
        for i in range(self._workers):
            self._spawn(self._activity_worker, f"tower-activity-{i}")
        self._spawn(self._run, "tower-engine")
        self._announce()
        self.log(f"engine: {len(self.orchestrators)} orchestrators, {len(self.activities)} activities, "
                 f"management API at {self.base_url}")
        if self.latency is not None:
            self.log(f"engine: {self.latency.describe()}")
        if not self._leader:
            self.log(self.follower_line())
        return self

    def _announce(self) -> None:
        """`<home>/engine.json` names a live engine of this home (`tower status` asks whether one runs)."""
        (self.home / "engine.json").write_text(json.dumps({"pid": os.getpid(), "base_url": self.base_url}))

    @property
    def is_leader(self) -> bool:
        """Does this engine hold the orchestration lease (run the home's orchestrations) now?"""
        return self._leader

    def follower_line(self) -> str:
        """One line naming the engine that runs this home's orchestrations, when it is not this one."""
        holder = self.store.lease_holder(ORCHESTRATION_LEASE)
        if holder is None:
            return f"engine: activities only (no engine in {self.home} runs orchestrations yet)"
        return (f"engine: orchestrations in {self.home} are run by the engine of pid {holder['pid']} "
                f"(started {holder['started']}: {holder['command']}); this one runs activities and takes "
                "over if that one stops")

    async def _serve(self, sock):
        from aiohttp import web

        runner = web.AppRunner(self.web_app, access_log=None)
        await runner.setup()
        await web.SockSite(runner, sock).start()
        return runner

    def _spawn(self, target, name):
        thread = threading.Thread(target=target, name=name, daemon=True)
        thread.start()
        self._threads.append(thread)

    def stop(self, timeout: float = 10) -> None:
        """Finish the episode in progress and stop; the lease and the activities still running go to
        the other engines of this home at once (re-run there, or here at the next start)."""
        if self._stopping.is_set():
            return
        self._stopping.set()
        self._wake.set()
        for _ in self._threads:
            self._work.put(None)
        engine_thread = next((t for t in self._threads if t.name == "tower-engine"), None)
        if engine_thread is not None:
            engine_thread.join(timeout)
        if self._runner is not None:
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self.loop).result(timeout)
            self._runner = None
        if self.loop is not None:   # started: its async activities stop with it, as a worker's would
            asyncio.run_coroutine_threadsafe(_cancelled(self._awaiting, timeout), self.loop).result(timeout * 2)
            _process_loop.release(timeout)
        self.store.leave(self.host_id)     # lease and unfinished work items go to the other hosts
        app_runtime.done_with(self.runtime)
        if self._own_runtime:
            self.runtime.close()
        engine_file = self.home / "engine.json"
        try:
            if json.loads(engine_file.read_text()).get("base_url") == self.base_url:
                engine_file.unlink()
        except (OSError, ValueError):
            pass
        self.log("engine: stopped")

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    # ------------------------------------------------------------------ payloads
    def _payload(self, kind: str, text: str | None) -> str | None:
        """Count one payload crossing the task hub; the failure text when the backend refuses it."""
        if text is None:
            return None
        size = len(text) if text.isascii() else len(text.encode())
        with self._stats_lock:
            stats = self.stats
            stats[f"{kind}_payloads"] += 1
            if size > stats[f"{kind}_max_bytes"]:
                stats[f"{kind}_max_bytes"] = size
                stats["max_payload_bytes"] = max(stats["max_payload_bytes"], size)
            if size > BLOB_OFFLOAD_BYTES:
                stats[f"{kind}_over_45kb"] += 1
                stats["payloads_over_45kb"] += 1
        if self.payload_limit is not None and size > self.payload_limit:
            return too_large_message(kind, size)
        return None

    # ------------------------------------------------------------------ running user functions
    async def acall_function(self, fn: Callable, kwargs: dict) -> Any:
        """Run a user function from the loop: async ones directly, sync ones in the default pool."""
        if inspect.iscoroutinefunction(fn):
            return await fn(**kwargs)
        result = await self.loop.run_in_executor(None, lambda: fn(**kwargs))
        return await result if inspect.isawaitable(result) else result

    # ------------------------------------------------------------------ client API (thread-safe)
    def start_new(self, name: str, instance_id: str | None = None, input_json: str | None = None) -> str:
        """Start an orchestration; `input_json` is the JSON text (what DurableOrchestrationClient sends)."""
        instance_id = instance_id if instance_id is not None else uuid.uuid4().hex
        with self.store.tx() as db:
            self._create(db, instance_id, name, input_json, None)
        self._wake.set()
        return instance_id

    @contextmanager
    def unreliable_starts(self, trouble: StartTrouble) -> Iterator[None]:
        """While the block runs, the starts through the Durable HTTP API (a client's `start_new`)
        meet `trouble` first (`tower.local.management.StartTrouble`): slow, refused with a 500, or
        with their reply lost, as Azure's API may leave them, so a test can show the app surviving
        it. Starts from this engine's own `start_new` (the CLI, tests) are not affected."""
        before, self.start_trouble = self.start_trouble, trouble
        try:
            yield
        finally:
            self.start_trouble = before

    def _create(self, db, instance_id: str, name: str, input_json: str | None, parent: dict | None) -> None:
        """Create the instance row and its start message; EngineError for an unknown name or a bad id,
        InstanceExists when an unfinished instance has that id."""
        if name not in self.orchestrators:
            known = ", ".join(sorted(self.orchestrators)) or "none"
            raise EngineError(f"no orchestrator function named '{name}' (known: {known})")
        validate_instance_id(instance_id)
        row = db.execute("SELECT status FROM instances WHERE id = ?", (instance_id,)).fetchone()
        if row is not None and row[0] not in h.TERMINAL:
            raise InstanceExists(already_exists_message(row[0]))
        refused = self._payload("orchestration_input", input_json)   # a sub-orchestration's too
        if refused:
            raise PayloadTooLarge(refused)
        if row is not None:
            self.store.purge(db, instance_id)     # Azure replaces a finished instance with the same id
        execution_id = uuid.uuid4().hex
        now = h.fmt_time(h.utcnow())
        db.execute("INSERT INTO instances (id, name, execution_id, status, input, parent, created, updated) "
                   "VALUES (?,?,?,?,?,?,?,?)", (instance_id, name, execution_id, h.PENDING, input_json,
                                                json.dumps(parent) if parent else None, now, now))
        self.store.enqueue(db, instance_id, st.START, {"name": name, "input": input_json, "parent": parent},
                           execution_id=execution_id)

    def raise_event(self, instance_id: str, event_name: str, data_json: str | None = None) -> None:
        refused = self._payload("event", data_json)
        if refused:
            raise PayloadTooLarge(refused)
        self._control(instance_id, st.EVENT, st.event_raised(event_name, data_json))

    def terminate(self, instance_id: str, reason: str | None = None) -> None:
        self._control(instance_id, st.TERMINATE, {"reason": reason})

    def suspend(self, instance_id: str, reason: str | None = None) -> None:
        self._control(instance_id, st.SUSPEND, {"reason": reason})

    def resume(self, instance_id: str, reason: str | None = None) -> None:
        self._control(instance_id, st.RESUME, {"reason": reason})

    def _control(self, instance_id: str, kind: str, body: dict) -> None:
        self.store.enqueue_if_running(instance_id, kind, body)
        self._wake.set()

    def purge(self, instance_id: str) -> int:
        """Delete a finished instance and its history; running ones are left alone (returns 0)."""
        with self.store.tx() as db:
            row = db.execute("SELECT status FROM instances WHERE id = ?", (instance_id,)).fetchone()
            if row is None or row[0] not in h.TERMINAL:
                return 0
            self.store.purge(db, instance_id)
        return 1

    def purge_many(self, *, created_from=None, created_to=None, runtime_status=None) -> int:
        statuses = [s for s in (runtime_status or h.TERMINAL) if s in h.TERMINAL]
        rows = self.store.rows(runtime_status=statuses, created_from=created_from, created_to=created_to)
        return sum(self.purge(r["id"]) for r in rows)

    def status(self, instance_id: str, *, show_history=False, show_history_output=False,
               show_input=True) -> dict | None:
        row = self.store.instance_row(instance_id)
        if row is None:
            return None
        return st.status_of(row, self.store, show_history=show_history,
                            show_history_output=show_history_output, show_input=show_input)

    def list(self, *, runtime_status=None, created_from=None, created_to=None, prefix=None) -> list[dict]:
        return [st.status_of(r, self.store) for r in self.store.rows(
            runtime_status=runtime_status, created_from=created_from, created_to=created_to, prefix=prefix)]

    def history(self, instance_id: str) -> list[dict]:
        """The raw PascalCase history of the current execution, as the SDK receives it."""
        return self.store.history(instance_id)

    def wait(self, instance_id: str, timeout: float | None = None) -> dict:
        """Block until the instance is Completed, Failed or Terminated; EngineError on timeout."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._changed:
            while True:  # without the input while waiting: a big plan would be parsed at every wake
                status = self.status(instance_id, show_input=False)
                if status is None:
                    raise InstanceNotFound(f"no orchestration instance with id '{instance_id}'")
                if status["runtimeStatus"] in h.TERMINAL:
                    return self.status(instance_id)
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    raise EngineError(f"instance '{instance_id}' is still {status['runtimeStatus']} "
                                      f"after {timeout} s")
                self._changed.wait(0.5 if left is None else min(0.5, left))

    # ------------------------------------------------------------------ the work loop
    def _run(self) -> None:
        while not self._stopping.is_set():
            wait = POLL_SECONDS
            if self._timers:
                wait = min(wait, max(0.0, (self._timers[0][0] - h.utcnow()).total_seconds()))
            if self._dispatches:
                wait = min(wait, max(0.0, self._dispatches[0][0] - time.time()))
            self._wake.wait(wait)
            self._wake.clear()
            if self._stopping.is_set():
                break
            started = time.thread_time()
            try:
                if time.monotonic() >= self._next_beat:
                    self._beat()
                if self._leader:
                    self._iteration()
                if self.latency is not None:
                    self._model_tick()
                self._claim()
            except _LeaseLost:
                self.log("engine: another engine took the orchestration lease; " + self.follower_line())
                self._leader = False
                self._reset()
            except Exception:                       # never die: reload the truth from SQLite
                self.log("engine: work loop error, reloading state\n" + traceback.format_exc(limit=4))
                self._reset()
                self._stopping.wait(1.0)
            self.stats["loop_cpu"] += time.thread_time() - started

    # ------------------------------------------------------------------ hosts, lease, work items
    def _beat(self) -> None:
        """Heartbeat; take over dead hosts' work; renew the lease, or take it when it is free."""
        first = self._next_beat == 0.0
        self._next_beat = time.monotonic() + HEARTBEAT_SECONDS
        held = self.store.beat(self.host_id, _command_line(), ORCHESTRATION_LEASE if self.orchestrations else None,
                               LEASE_SECONDS, pid_alive, sweep=first)
        if not (self.home / "engine.json").exists():     # the engine that wrote it stopped; this one runs
            self._announce()
        if held and not self._leader:
            self._reset()                           # whatever another engine did: read it all again
            self._leader = True
            self.log(f"engine: runs the orchestrations of {self.home}")
        elif not held and self._leader:
            raise _LeaseLost

    def _capacity(self) -> int:
        if self.max_activities is None:
            return 1 << 30
        with self._stats_lock:
            return max(self.max_activities - self._inflight, 0)

    def _claim(self) -> None:
        """Take work items no host owns (left by a stopped or dead host, or over another's capacity)."""
        room = self._capacity()
        if room <= 0:
            return
        waiting = self.store.unclaimed_work(min(room, 256))
        if not waiting:
            return
        taken = self.store.claim(self.host_id, waiting)
        with self._stats_lock:
            self._inflight += len(taken)
        for item in taken:
            self._work.put(item)

    def _reset(self) -> None:
        self._live.clear()
        self._timers.clear()
        self._timer_seq.clear()
        self._dead.clear()
        self._modelled.clear()
        self._hwm = 0

    # ------------------------------------------------------------------ the latency model
    def _model_tick(self) -> None:
        """Hand over the activities whose dispatch is due; bring the model's counts into `stats`."""
        now = time.time()
        while self._dispatches and self._dispatches[0][0] <= now:
            self._work.put(heapq.heappop(self._dispatches)[2])
        self.latency.idle_until(now)
        self.stats.update(self.latency.stats())

    def _delivery(self, message: st.Message, visible) -> Any:
        """When the backend hands `message` (visible from `visible`, a datetime) to the orchestrator."""
        self._modelled.add(message.seq)
        at = self.latency.delivered(message.instance_id, visible.timestamp())
        return max(visible, datetime.fromtimestamp(at, timezone.utc))

    def _iteration(self) -> None:
        now = h.utcnow()
        ready: list[st.Message] = []
        for message in self.store.messages_after(self._hwm):
            self._hwm = message.seq
            due = h.parse_time(message.due) if message.due else None
            if self.latency is not None:    # sent now: a timer's message is visible at its fire time
                self.latency.sent(message.instance_id, now.timestamp())
                if due is None or due <= now:
                    due = self._delivery(message, now)
            if due is not None and due > now:
                heapq.heappush(self._timers, (due, message.seq, message))
                if message.kind == st.TIMER:     # so that a cancel or the instance's end can drop it
                    key = (message.instance_id, message.execution_id)
                    self._timer_seq.setdefault(key, {})[message.task_id] = message.seq
            else:
                self._modelled.discard(message.seq)
                ready.append(message)
        while self._timers and self._timers[0][0] <= now:
            due, seq, message = heapq.heappop(self._timers)
            if seq in self._dead:
                self._dead.discard(seq)
                self._modelled.discard(seq)
                continue
            if self.latency is not None and seq not in self._modelled:    # a timer: read at a later poll
                delivered = self._delivery(message, due)
                if delivered > now:
                    heapq.heappush(self._timers, (delivered, seq, message))
                    continue
            self._modelled.discard(seq)
            ready.append(message)
            pending = self._timer_seq.get((message.instance_id, message.execution_id))
            if pending is not None and pending.get(message.task_id) == seq:
                del pending[message.task_id]
                if not pending:
                    del self._timer_seq[(message.instance_id, message.execution_id)]
        if not ready:
            return
        by_instance: dict[str, list[st.Message]] = {}
        for message in ready:
            by_instance.setdefault(message.instance_id, []).append(message)
        # New instances first, committed and their work handed out before the rest: a service that
        # was just started gets its first activity going while the others' episodes run.
        starting = {i: messages for i, messages in by_instance.items() if any(m.kind == st.START for m in messages)}
        others = {i: messages for i, messages in by_instance.items() if i not in starting}
        for group in (starting, others):
            if group:
                self._run_batch(group)
        with self._changed:
            self._changed.notify_all()

    def _run_batch(self, by_instance: dict[str, list[st.Message]]) -> None:
        batch = _Batch(room=self._capacity())
        for instance_id, messages in by_instance.items():
            self._apply(instance_id, sorted(messages, key=lambda m: m.seq), batch)
        with self.store.tx() as db:
            if not self.store.holds(db, ORCHESTRATION_LEASE, self.host_id):   # the fence: one owner
                raise _LeaseLost
            if batch.consumed:
                db.executemany("DELETE FROM inbox WHERE seq = ?", [(s,) for s in batch.consumed])
            for op in batch.ops:
                op(db)
        if batch.work:
            with self._stats_lock:
                self._inflight += len(batch.work)
        for item in batch.work:
            if self.latency is None:
                self._work.put(item)
            else:                       # through the work-item queue
                self._dispatch_seq += 1
                heapq.heappush(self._dispatches, (self.latency.dispatched(time.time()), self._dispatch_seq, item))
        if batch.wake:
            self._wake.set()

    def _apply(self, instance_id: str, messages: list[st.Message], batch: _Batch) -> None:
        """Turn one instance's ready messages into (at most a few) episodes."""
        live = self._live.get(instance_id)
        events: list[dict] = []
        queue = list(messages)
        while queue:
            message = queue.pop(0)
            batch.consumed.append(message.seq)
            if message.kind == st.START:
                live = self._begin(message, live)
                if live is not None:
                    events = [self._started_event(live)]
                continue
            if live is None:
                live = self._load(instance_id)
            if live is None or (message.execution_id and message.execution_id != live.execution_id):
                continue                            # finished, purged, or from an earlier execution
            if message.kind == st.TERMINATE:
                live = self._flush(live, events, batch)
                if live is not None:     # what it held while suspended, and what came after, is moot now
                    batch.consumed.extend(m.seq for m in live.held + queue)
                    self._terminate(live, message.body.get("reason"), batch)
                live, events = None, []
                queue = []
            elif live.status == h.SUSPENDED and message.kind != st.RESUME:
                batch.consumed.pop()                # keep the row: it is processed after resume
                live.held.append(message)
            elif message.kind == st.SUSPEND:
                live = self._flush(live, events, batch)
                events = []
                if live is not None:
                    self._mark(live, h.EXECUTION_SUSPENDED, h.SUSPENDED, message.body.get("reason"), batch)
            elif message.kind == st.RESUME:
                if live.status == h.SUSPENDED:
                    self._mark(live, h.EXECUTION_RESUMED, h.RUNNING, message.body.get("reason"), batch)
                    queue = live.held + queue
                    live.held = []
            else:
                events.append(message.body)      # _episode copies it
            if live is None:
                queue = []
        self._flush(live, events, batch)

    def _flush(self, live: _Live | None, events: list[dict], batch: _Batch) -> _Live | None:
        if live is None or not events:
            return live
        self._episode(live, list(events), batch)
        events.clear()
        return self._live.get(live.id)

    def _begin(self, message: st.Message, live: _Live | None) -> _Live | None:
        row = self.store.instance_row(message.instance_id)
        if row is None or row["execution_id"] != message.execution_id or row["status"] in h.TERMINAL:
            return live
        body = message.body
        live = _Live(row["id"], body["name"], message.execution_id, h.PENDING, body.get("input"), body.get("parent"))
        self._live[live.id] = live
        return live

    def _started_event(self, live: _Live) -> dict:
        parent = live.parent
        return {"EventType": h.EXECUTION_STARTED, "Timestamp": h.fmt_time(h.utcnow()), "Name": live.name,
                "Version": "", "Input": live.input,
                "OrchestrationInstance": {"InstanceId": live.id, "ExecutionId": live.execution_id},
                "ParentInstance": None if not parent else {
                    "Name": parent["name"], "TaskScheduleId": parent["task_id"],
                    "OrchestrationInstance": {"InstanceId": parent["id"], "ExecutionId": parent["execution_id"]}}}

    def _load(self, instance_id: str) -> _Live | None:
        row = self.store.instance_row(instance_id)
        if row is None or row["status"] in h.TERMINAL or row["status"] == h.PENDING:
            return None
        events = self.store.history(instance_id)
        live = _Live(row["id"], row["name"], row["execution_id"], row["status"], row["input"],
                     json.loads(row["parent"]) if row["parent"] else None, events,
                     [json.dumps(e) for e in events], episodes=row["episodes"], handle_cpu=row["handle_cpu"],
                     custom_status=row["custom_status"])
        starts = [e["Timestamp"] for e in events if e["EventType"] == h.ORCHESTRATOR_STARTED]
        live.last_started = h.parse_time(starts[-1]) if starts else None
        self._live[instance_id] = live
        return live

    # ------------------------------------------------------------------ one episode
    def _episode(self, live: _Live, inbound: list[dict], batch: _Batch) -> None:
        engine_started = time.thread_time()
        moment = h.after(h.utcnow(), live.last_started)
        live.last_started = moment
        stamp = h.fmt_time(moment)
        new = [h.event(h.ORCHESTRATOR_STARTED, stamp)]
        for body in inbound:
            body = dict(body)
            new.append(h.event(body.pop("EventType"), body.pop("Timestamp", stamp), **body))
        context = ('{"history":[' + ",".join(live.encoded + [json.dumps(e) for e in new]) + "]," +
                   json.dumps({"input": live.input, "instanceId": live.id, "isReplaying": bool(live.encoded),
                               "parentInstanceId": live.parent["id"] if live.parent else None})[1:-1] +
                   "," + self._context_tail + "}")
        handle_started = time.thread_time()
        state = self._call_orchestrator(live, context)
        handle_cpu = time.thread_time() - handle_started
        live.episodes += 1
        live.handle_cpu += handle_cpu
        live.status = h.RUNNING
        prior = len(live.history)
        live.history.extend(new)
        oversize = None
        if state.get("customStatus") is not None:     # the shim only sets a non-null custom status
            live.custom_status = json.dumps(state["customStatus"])
            oversize = self._payload("custom_status", live.custom_status)
        actions = state.get("actions") or [[]]
        actions = actions[0] if actions else []
        try:
            outcome = replay(actions, live.history)
            failure = state.get("error") or self._oversize(state, actions, outcome) or oversize
        except NonDeterminismError as exc:
            outcome, failure = None, f"Non-Deterministic workflow detected: {exc}"
        except EngineError as exc:
            outcome, failure = None, str(exc)
        except Exception as exc:                       # malformed actions: fail this instance only
            outcome, failure = None, f"the local engine could not process the actions: {exc!r}"
        continued = False
        if failure is not None:
            message = f"Orchestrator function '{live.name}' failed: {failure}"
            self._finish(live, h.FAILED, message, new, stamp, batch, details=state.get("details"))
        elif state.get("isDone"):
            again = [a for a in actions if a.get("actionType") == h.CONTINUE_AS_NEW_ACTION]
            if again:
                continued = True
                self._continue_as_new(live, again[-1].get("input"), batch)
            else:
                self._finish(live, h.COMPLETED, state.get("output"), new, stamp, batch)
        else:
            for work in outcome.new_work:
                new.append(self._schedule(live, work, stamp, batch))
            for timer_id in outcome.cancelled_timers:
                self._cancel_timer(live, timer_id, batch)
            new.append(h.event(h.ORCHESTRATOR_COMPLETED, stamp))
        if not continued:
            del live.history[prior:]
            live.history.extend(new)
            self._commit_history(live, batch)
        self.stats["episodes"] += 1
        self.stats["handle_cpu"] += handle_cpu
        if self.latency is not None:
            self.latency.episode()
        if self.episode_samples is not None:
            engine_cpu = time.thread_time() - engine_started - handle_cpu
            self.episode_samples.append((len(live.history), handle_cpu, engine_cpu))

    def _oversize(self, state: dict, actions: list[dict], outcome) -> str | None:
        """Count what this episode sends (new work's inputs, the output or the next input); the first
        refusal, if any. On the scheduler the orchestrator's whole response is one gRPC message: a
        payload over the limit fails the completion, so the orchestration fails here."""
        refused = [self._payload("activity_input", w.input) for w in outcome.new_work if w.kind == ACTIVITY]
        if state.get("isDone"):
            again = [a for a in actions if a.get("actionType") == h.CONTINUE_AS_NEW_ACTION]
            refused.append(self._payload("orchestration_input", again[-1].get("input")) if again
                           else self._payload("orchestration_output", json.dumps(state.get("output"))))
        return next((r for r in refused if r), None)

    def _call_orchestrator(self, live: _Live, context: str) -> dict:
        try:
            return json.loads(self.orchestrators[live.name](context))
        except KeyError:
            return {"error": f"no orchestrator function named '{live.name}' is registered in this app"}
        except Exception as exc:                       # the SDK's unhandled-exception envelope
            text = str(exc)
            if h.OUT_OF_PROC_MARK in text:
                state = json.loads(text.split(h.OUT_OF_PROC_MARK, 1)[1])
                state.setdefault("error", text.split("\n\n" + h.OUT_OF_PROC_MARK, 1)[0])
                return state
            return {"error": f"{type(exc).__name__}: {text}", "details": traceback.format_exc(limit=3)}

    def _commit_history(self, live: _Live, batch: _Batch) -> None:
        """Append the events not yet written (the episode's, scheduling included); save the row."""
        known = len(live.encoded)
        encoded = [json.dumps({**e, "IsPlayed": True}) for e in live.history[known:]]
        rows = [(live.id, known + i, text) for i, text in enumerate(encoded)]
        live.encoded.extend(encoded)
        self.stats["history_events"] += len(rows)
        snapshot = (live.status, live.output, live.custom_status, h.fmt_time(h.utcnow()), live.episodes,
                    live.handle_cpu, len(live.encoded), live.id, live.execution_id)

        def write(db):
            db.executemany("INSERT OR REPLACE INTO history (instance_id, seq, event) VALUES (?,?,?)", rows)
            db.execute("UPDATE instances SET status=?, output=?, custom_status=?, updated=?, episodes=?, "
                       "handle_cpu=?, history_events=? WHERE id=? AND execution_id=?", snapshot)
        batch.ops.append(write)

    def _schedule(self, live: _Live, work: Work, stamp: str, batch: _Batch) -> dict:
        """Record the scheduling event for new work and queue its effect for after the commit."""
        key = (live.id, live.execution_id, work.event_id)
        if work.kind == ACTIVITY:
            item = (live.id, live.execution_id, work.event_id, work.name, work.input)
            owner = None
            if batch.room > 0:              # taken by this engine at once; the rest waits for any host
                batch.room -= 1
                owner = self.host_id
                batch.work.append(item)
            batch.ops.append(lambda db: db.execute(
                "INSERT OR REPLACE INTO work (instance_id, execution_id, task_id, name, input, owner) "
                "VALUES (?,?,?,?,?,?)", (*item, owner)))
            return h.event(h.TASK_SCHEDULED, stamp, work.event_id, Name=work.name, Version="", Input=work.input)
        if work.kind == TIMER:
            fired = {"EventType": h.TIMER_FIRED, "TimerId": work.event_id, "FireAt": work.fire_at}
            batch.ops.append(lambda db: self.store.enqueue(db, live.id, st.TIMER, fired, execution_id=key[1],
                                                           due=work.fire_at, task_id=work.event_id))
            batch.wake = True
            return h.event(h.TIMER_CREATED, stamp, work.event_id, FireAt=work.fire_at)
        child_id = work.instance_id or str(uuid.uuid5(uuid.NAMESPACE_URL, "/".join(map(str, key))))
        parent = {"id": live.id, "execution_id": live.execution_id, "task_id": work.event_id, "name": live.name}
        batch.ops.append(lambda db: self._start_child(db, child_id, work, parent))
        batch.wake = True
        return h.event(h.SUB_CREATED, stamp, work.event_id, Name=work.name, Version="", InstanceId=child_id,
                       Input=work.input)

    def _start_child(self, db, child_id: str, work: Work, parent: dict) -> None:
        try:
            self._create(db, child_id, work.name, work.input, parent)
        except EngineError as exc:
            self._notify_parent(db, parent, h.FAILED, str(exc), None)

    def _cancel_timer(self, live: _Live, timer_id: int, batch: _Batch) -> None:
        seq = self._timer_seq.get((live.id, live.execution_id), {}).pop(timer_id, None)
        if seq is not None:
            self._dead.add(seq)
        batch.ops.append(lambda db: db.execute(
            "DELETE FROM inbox WHERE instance_id=? AND execution_id=? AND kind=? AND task_id=?",
            (live.id, live.execution_id, st.TIMER, timer_id)))

    def _mark(self, live: _Live, event_type: int, status: str, reason: str | None, batch: _Batch) -> None:
        event = h.event(event_type, h.fmt_time(h.utcnow()), Input=reason)
        live.status = status
        live.history.append(event)
        self._commit_history(live, batch)

    # ------------------------------------------------------------------ endings
    def _finish(self, live: _Live, status: str, output: Any, new: list[dict], stamp: str, batch: _Batch,
                details: str | None = None) -> None:
        result = json.dumps(output)
        new.append(h.event(h.EXECUTION_COMPLETED, stamp, OrchestrationStatus=status, Result=result,
                           **({"FailureDetails": details} if details else {})))
        new.append(h.event(h.ORCHESTRATOR_COMPLETED, stamp))
        self._end(live, status, result, batch, reason=output if status != h.COMPLETED else None)

    def _terminate(self, live: _Live, reason: str | None, batch: _Batch) -> None:
        stamp = h.fmt_time(h.after(h.utcnow(), live.last_started))
        live.history.extend([
            h.event(h.ORCHESTRATOR_STARTED, stamp), h.event(h.EXECUTION_TERMINATED, stamp, Input=reason),
            h.event(h.EXECUTION_COMPLETED, stamp, OrchestrationStatus=h.TERMINATED, Result=json.dumps(reason)),
            h.event(h.ORCHESTRATOR_COMPLETED, stamp)])
        self._end(live, h.TERMINATED, json.dumps(reason), batch, reason=reason or "terminated")
        self._commit_history(live, batch)

    def _end(self, live: _Live, status: str, result: str, batch: _Batch, reason: str | None) -> None:
        """Leave memory, drop pending work and timers, tell the parent; the caller writes the history."""
        live.status, live.output = status, result
        del self._live[live.id]
        self._drop_timers(live)
        key = (live.id, live.execution_id)

        def cleanup(db):
            db.execute("DELETE FROM work WHERE instance_id=? AND execution_id=?", key)
            db.execute("DELETE FROM inbox WHERE instance_id=? AND kind=?", (live.id, st.TIMER))
            if live.parent:
                self._notify_parent(db, live.parent, status, reason, result)
        batch.ops.append(cleanup)
        batch.wake = True
        self.log(f"{live.name}/{live.id}: {status} after {live.episodes} episodes")

    def _drop_timers(self, live: _Live) -> None:
        """The execution is over: its pending timers must not fire (their rows go in the same batch)."""
        self._dead.update(self._timer_seq.pop((live.id, live.execution_id), {}).values())

    def _notify_parent(self, db, parent: dict, status: str, reason: str | None, result: str | None) -> None:
        now = h.fmt_time(h.utcnow())
        if status == h.COMPLETED:
            body = {"EventType": h.SUB_COMPLETED, "TaskScheduledId": parent["task_id"], "Result": result,
                    "Timestamp": now}
        else:
            body = {"EventType": h.SUB_FAILED, "TaskScheduledId": parent["task_id"], "Reason": reason,
                    "Details": None, "Timestamp": now}
        self.store.enqueue(db, parent["id"], st.EVENT, body, execution_id=parent["execution_id"])

    def _continue_as_new(self, live: _Live, input_json: str | None, batch: _Batch) -> None:
        """Fresh history, same id, a new execution id; messages for the old execution are dropped."""
        old = (live.id, live.execution_id)
        execution_id = uuid.uuid4().hex
        del self._live[live.id]
        self._drop_timers(live)
        self.log(f"{live.name}/{live.id}: continued as new")
        snapshot = (execution_id, input_json, live.custom_status, h.fmt_time(h.utcnow()), live.episodes,
                    live.handle_cpu, live.id)
        start = {"name": live.name, "input": input_json, "parent": live.parent}

        def write(db):
            db.execute("DELETE FROM history WHERE instance_id=?", (live.id,))
            db.execute("DELETE FROM work WHERE instance_id=? AND execution_id=?", old)
            db.execute("DELETE FROM inbox WHERE instance_id=? AND kind=?", (live.id, st.TIMER))
            db.execute("UPDATE instances SET execution_id=?, status='Pending', input=?, custom_status=?, "
                       "updated=?, episodes=?, handle_cpu=?, history_events=0, output=NULL WHERE id=?", snapshot)
            self.store.enqueue(db, live.id, st.START, start, execution_id=execution_id)
        batch.ops.append(write)
        batch.wake = True

    # ------------------------------------------------------------------ activities
    def _activity_worker(self) -> None:
        while True:
            try:
                item = self._work.get(timeout=1)
            except Empty:
                if self._stopping.is_set():
                    return
                continue
            if item is None or self._stopping.is_set():
                return
            self._run_activity(*item)

    def _run_activity(self, instance_id, execution_id, task_id, name, raw_input) -> None:
        """Run one activity. A sync one runs on this worker thread; an async one runs on the event
        loop and frees this thread at once (as in the Functions worker, an awaiting activity holds
        no thread), its result recorded when it completes."""
        key = (instance_id, execution_id, task_id)
        try:
            activity = self.activities.get(name)
            if activity is None:
                known = ", ".join(sorted(self.activities)) or "none"
                raise EngineError(f"The function '{name}' doesn't exist, is disabled, or is not an activity "
                                  f"function (known activities: {known})")
            from azure.functions._durable_functions import df_loads

            try:
                value = None if raw_input is None else df_loads(raw_input)
            except ValueError:
                value = raw_input
            kwargs = {activity.input_name: value, **{c: self.client_binding for c in activity.client_names}}
            if activity.wants_context:
                kwargs["context"] = invocation_context(name)
            result = activity.fn(**kwargs)
        except Exception as exc:
            self._activity_done(key, name, error=exc)
            return
        if not inspect.isawaitable(result):
            self._activity_done(key, name, value=result)
            return
        self.loop.call_soon_threadsafe(self._await, key, name, result)

    def _await(self, key: tuple, name: str, awaitable) -> None:
        """On the loop: run an async activity as a task this engine cancels when it stops."""
        task = self.loop.create_task(_awaited(awaitable))
        if self._stopping.is_set():     # it stopped meanwhile: the work item is the other engines' now
            task.cancel()
        self._awaiting.add(task)
        task.add_done_callback(self._awaiting.discard)
        task.add_done_callback(lambda done: self._settled(key, name, done))

    def _settled(self, key: tuple, name: str, done) -> None:
        """An async activity ended: its outcome goes to the store, unless it was cancelled because
        this engine stopped (its work item is the other engines' now, as a worker's would be)."""
        if done.cancelled() and self._stopping.is_set():
            with self._stats_lock:
                self._inflight -= 1
            return
        self._activity_done(key, name, *_outcome(done))

    def _activity_done(self, key: tuple, name: str, value: Any = None, error: BaseException | None = None) -> None:
        from azure.functions._durable_functions import df_dumps

        instance_id, execution_id, task_id = key
        if error is None:
            try:
                body = {"EventType": h.TASK_COMPLETED, "TaskScheduledId": task_id, "Result": df_dumps(value)}
            except Exception as exc:  # a result that is not JSON
                error = exc
            else:                     # on the scheduler, a result over its limit fails the task
                refused = self._payload("activity_output", body["Result"])
                if refused:
                    error = PayloadTooLarge(refused)
        if error is not None:
            body = {"EventType": h.TASK_FAILED, "TaskScheduledId": task_id,   # kept in history: no secrets
                    "Reason": redact(f"Activity function '{name}' failed: {type(error).__name__}: {error}"),
                    "Details": redact("".join(traceback.format_exception(error, limit=-3)))}
        body["Timestamp"] = h.fmt_time(h.utcnow())
        with self._stats_lock:
            self.stats["activities"] += 1
            self._inflight -= 1
        with self.store.tx() as db:     # result and "no longer pending" in one transaction: one result
            gone = db.execute("DELETE FROM work WHERE instance_id=? AND execution_id=? AND task_id=?", key)
            if gone.rowcount:
                self.store.enqueue(db, instance_id, st.EVENT, body, execution_id=execution_id)
        self._wake.set()


class _ProcessLoop:
    """The one event loop of the process, as in the Functions Python worker: every engine's async
    functions and management API run on it. One loop matters beyond tidiness: the Durable SDK's
    client keeps one module-global aiohttp session, which only works on the loop that created it.
    Started by the first engine, stopped (closing that session) when the last one stops."""

    def __init__(self):
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._users = 0

    def acquire(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._loop is None:
                self._loop = asyncio.new_event_loop()
                threading.Thread(target=self._loop.run_forever, name="tower-loop", daemon=True).start()
            self._users += 1
            return self._loop

    def release(self, timeout: float) -> None:
        with self._lock:
            self._users -= 1
            if self._users > 0 or self._loop is None:
                return
            loop, self._loop = self._loop, None
        asyncio.run_coroutine_threadsafe(_wind_down(timeout), loop).result(timeout * 2)
        loop.call_soon_threadsafe(loop.stop)


async def _wind_down(timeout: float) -> None:
    """Before the process loop stops: cancel what still runs on it (say, an invocation in flight),
    so no task is left pending, then close the Durable SDK's session."""
    from azure.durable_functions.models.utils import http_utils

    await _cancelled([task for task in asyncio.all_tasks() if task is not asyncio.current_task()], timeout)
    await http_utils._close_session()


async def _cancelled(tasks: Iterable[asyncio.Task], timeout: float) -> None:
    """On the loop: cancel `tasks` and give them up to `timeout` seconds to end."""
    tasks = list(tasks)     # a copy: each task leaves its engine's set as it ends
    for task in tasks:
        task.cancel()
    if tasks:
        await asyncio.wait(tasks, timeout=timeout)


_process_loop = _ProcessLoop()


def running_engines() -> int:
    """How many engines of this process are started and not yet stopped."""
    return _process_loop._users


@dataclass
class _Batch:
    """What one loop iteration commits: consumed inbox rows, SQL steps, and the work items this
    engine takes (up to `room`; the others wait in the table for any host)."""

    consumed: list[int] = field(default_factory=list)
    ops: list[Callable] = field(default_factory=list)
    work: list[tuple] = field(default_factory=list)
    wake: bool = False
    room: int = 0


class _LeaseLost(Exception):
    """Another engine holds the orchestration lease now: this one must not commit an episode."""




def _command_line() -> str:
    import sys

    return " ".join([os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else "python", *sys.argv[1:]])[:300]


def _outcome(done) -> tuple[Any, BaseException | None]:
    """(value, error) of a finished future; a cancelled one is an error too (the host gave up on it)."""
    if done.cancelled():
        return None, EngineError("the activity was cancelled before it finished")
    error = done.exception()
    return (None, error) if error is not None else (done.result(), None)


async def _awaited(awaitable):
    return await awaitable
