"""The local Functions host: `tower serve`. One aiohttp server for the app's HTTP functions and the
Durable management API, timer triggers on their NCRONTAB schedules, Service Bus triggers fed from
the local bus, and the durable engine underneath.

Everything asynchronous runs on the engine's one event loop (the Durable client keeps a global
aiohttp session bound to it); synchronous user functions run in a thread pool. Each invocation logs
one line to stderr: ``name: ok 12 ms`` or ``name: failed 12 ms: message``.

Locally auth levels are not enforced (no keys exist); an HTTP function's level is logged at start.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import os
import signal
import sqlite3
import sys
import threading
import time
import traceback
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path
from types import SimpleNamespace

from aiohttp import web

from tower.errors import ConfigError, UsageError
from tower.events import encode_event, local_bus_path
from tower.local.bindings import (
    ROUTE_PREFIX,
    Trigger,
    find_route,
    http_routes,
    read_triggers,
    resolve_setting,
)
from tower.local.bus import DEFAULT_MAX_DELIVERIES, LocalBus, Message, subscription_path
from tower.local.history import utcnow
from tower.local.ncrontab import NCrontab
from tower.redact import redact

DEFAULT_HOST, DEFAULT_PORT = "127.0.0.1", 7071
EVENTS_ROUTE = "events"  # POST /api/events: the local way in for Service Bus messages (when the app has none)
API_KEY_SETTING = "TOWER_API_KEY"  # under `tower serve`, the key every non-anonymous HTTP function asks for
BUS_POLL_SECONDS = 0.1
SHUTDOWN_GRACE_SECONDS = 10.0
BUS_RETRY_SECONDS = 1.0  # after a bus error (say, a locked file), wait this long before the next poll


def _stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


class Invoker:
    """Calls a user function through the engine (async ones on its loop, sync ones in threads),
    logging one line per invocation."""

    def __init__(self, call, client_binding=lambda: "", *, log=_stderr):
        self.call = call  # async (fn, kwargs) -> result: Engine.acall_function
        self.client_binding = client_binding  # () -> the durableClient binding string
        self.log = log

    async def __call__(self, trigger: Trigger, kwargs: dict):
        """Run one invocation and return its result; a failure is logged, then raised."""
        if trigger.wants_context:
            kwargs = {**kwargs, "context": _context(trigger)}
        if trigger.client_arg:
            kwargs = {**kwargs, trigger.client_arg: self.client_binding()}
        started = time.perf_counter()
        try:
            result = await self.call(trigger.fn, kwargs)
        except Exception as exc:
            self.log(f"{trigger.name}: failed {_ms(started)} ms: {_describe(exc)}")
            raise
        self.log(f"{trigger.name}: ok {_ms(started)} ms")
        return result


def _ms(started: float) -> int:
    return round((time.perf_counter() - started) * 1000)


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


def _context(trigger: Trigger):
    """A stand-in for `func.Context`: the fields functions and the Durable middleware read."""
    from tower.local.engine import INVOCATION_LOCAL

    return SimpleNamespace(
        invocation_id=str(uuid.uuid4()),
        function_name=trigger.name,
        function_directory=os.getcwd(),
        trace_context=None,
        retry_context=None,
        thread_local_storage=INVOCATION_LOCAL,
    )


# ---------------------------------------------------------------------------------------------- HTTP


class HttpFunctions:
    """Serves ``/api/<route>``: the app's HTTP triggers, then the local ``POST /api/events``."""

    def __init__(self, triggers: list[Trigger], invoke: Invoker, events):
        self.routes = http_routes(triggers)
        self.invoke = invoke
        self.events = events  # async (payload dict) -> response dict, or None when no bus trigger

    async def handle(self, request: web.Request) -> web.Response:
        path = request.match_info.get("tail", "")
        route, found = find_route(self.routes, request.method, path)
        if not _authorized(request, route):
            return _json_error(401, f"{request.method} /{ROUTE_PREFIX}/{path}: {API_KEY_SETTING} is set: send it in "
                               "the x-functions-key header or the code query parameter (as a function key in Azure)")
        if route is None:
            if path.strip("/") == EVENTS_ROUTE and request.method == "POST":
                return await self._post_event(request)
            if found:
                return _json_error(405, f"{request.method} /{ROUTE_PREFIX}/{path}: allowed methods are {', '.join(sorted(found))}")
            known = sorted(f"/{ROUTE_PREFIX}/{r.template}" for r in self.routes)
            return _json_error(404, f"no function serves {request.method} /{ROUTE_PREFIX}/{path}", routes=known)
        body = await request.read()
        import azure.functions as func

        http_request = func.HttpRequest(
            request.method,
            str(request.url),
            headers=dict(request.headers),
            params=dict(request.query),
            route_params=found,
            body=body,
        )
        try:
            result = await self.invoke(route.trigger, {route.trigger.arg: http_request})
        except Exception as exc:
            return _json_error(500, f"function {route.trigger.name!r} failed: {redact(_describe(exc))}")
        return _to_aiohttp(route.trigger.name, result)

    async def _post_event(self, request: web.Request) -> web.Response:
        if self.events is None:
            return _json_error(404, "the app has no Service Bus trigger: nothing would receive events")
        try:
            payload = json.loads(await request.read() or b"null")
        except ValueError as exc:
            return _json_error(400, f"POST /{ROUTE_PREFIX}/{EVENTS_ROUTE}: body is not JSON ({exc})")
        if not isinstance(payload, dict):
            return _json_error(400, f'POST /{ROUTE_PREFIX}/{EVENTS_ROUTE}: expected {{"type": ..., "data": ..., "id": ...}}')
        try:
            return web.json_response(self.events(payload), status=202)
        except UsageError as exc:
            return _json_error(400, f"POST /{ROUTE_PREFIX}/{EVENTS_ROUTE}: {exc}")


async def _to_dashboard(request: web.Request) -> web.Response:
    raise web.HTTPFound(f"/{ROUTE_PREFIX}/dashboard")


def _authorized(request: web.Request, route) -> bool:
    """With ``TOWER_API_KEY`` set, a request for a function that is not anonymous must carry it, where
    Azure takes a function key: the ``x-functions-key`` header or the ``code`` query parameter."""
    import hmac

    key = os.environ.get(API_KEY_SETTING, "")
    if not key:
        return True
    if route is not None and str(route.trigger.binding.get("authLevel", "function")).lower() == "anonymous":
        return True
    given = request.headers.get("x-functions-key") or request.query.get("code") or ""
    return hmac.compare_digest(given.encode(), key.encode())


def _json_error(status: int, message: str, **extra) -> web.Response:
    return web.json_response({"error": message, **extra}, status=status)


def _to_aiohttp(name: str, result) -> web.Response:
    import azure.functions as func

    if isinstance(result, func.HttpResponse):
        headers = {k: v for k, v in result.headers.items() if k.lower() != "content-type"}
        content_type = result.headers.get("content-type") or (
            f"{result.mimetype}; charset={result.charset}" if result.mimetype else None
        )
        response = web.Response(status=result.status_code, body=result.get_body(), headers=headers)
        if content_type:
            response.headers["Content-Type"] = content_type
        return response
    if isinstance(result, str | bytes):
        return web.Response(status=200, body=result.encode() if isinstance(result, str) else result)
    if result is None:
        return web.Response(status=204)
    return _json_error(500, f"function {name!r} returned {type(result).__name__}; return a func.HttpResponse")


# --------------------------------------------------------------------------------------------- timers


class TimerState:
    """Each timer's last and next occurrence, kept like the host's schedule monitor (for past-due)."""

    def __init__(self, path: Path):
        self._db = sqlite3.connect(path, timeout=10, check_same_thread=False, isolation_level=None)
        self._db.execute("CREATE TABLE IF NOT EXISTS timers (name TEXT PRIMARY KEY, last TEXT, next TEXT)")

    def get(self, name: str) -> tuple[datetime | None, datetime | None]:
        row = self._db.execute("SELECT last, next FROM timers WHERE name = ?", (name,)).fetchone()
        return (None, None) if row is None else tuple(datetime.fromisoformat(v) if v else None for v in row)

    def put(self, name: str, last: datetime | None, next_: datetime) -> None:
        self._db.execute(
            "INSERT OR REPLACE INTO timers (name, last, next) VALUES (?, ?, ?)",
            (name, last.isoformat() if last else None, next_.isoformat()),
        )

    def close(self) -> None:
        self._db.close()


class TimerRunner:
    """Fires timer triggers; one invocation of a timer at a time, as the host's singleton lock does."""

    def __init__(self, triggers: list[Trigger], invoke: Invoker, state: TimerState, *, log=_stderr):
        self.timers = [
            (t, NCrontab.parse(resolve_setting(t.binding["schedule"], f"timer {t.name}"), where=f"timer {t.name}"))
            for t in triggers
            if t.type == "timerTrigger"
        ]
        self.invoke = invoke
        self.state = state
        self.log = log

    def tasks(self) -> list[asyncio.Task]:
        return [_supervised(self._run(t, schedule), t.name, self.log) for t, schedule in self.timers]

    async def _run(self, trigger: Trigger, schedule: NCrontab) -> None:
        now = utcnow()
        last, next_ = self.state.get(trigger.name)
        if trigger.binding.get("runOnStartup"):
            await self._fire(trigger, schedule, last, now, past_due=False)
            last = now
        if next_ is not None and next_ <= now:  # an occurrence was missed while nothing ran
            await self._fire(trigger, schedule, last, next_, past_due=True)
            last = next_
        next_ = schedule.next_after(utcnow())
        while True:
            self.state.put(trigger.name, last, next_)
            await asyncio.sleep(max(0.0, (next_ - utcnow()).total_seconds()))
            await self._fire(trigger, schedule, last, next_, past_due=utcnow() - next_ > _PAST_DUE)
            last = next_
            next_ = schedule.next_after(max(next_, utcnow()))

    async def _fire(self, trigger, schedule, last, scheduled, *, past_due) -> None:
        from azure.functions.timer import (
            TimerRequest,  # the worker's own class (func.TimerRequest is abstract)
        )

        status = {"Next": schedule.next_after(scheduled).isoformat(), "LastUpdated": utcnow().isoformat()}
        if last is not None:  # the previous occurrence, as the host's schedule monitor records it
            status["Last"] = last.isoformat()
        request = TimerRequest(past_due=past_due, schedule_status=status, schedule={"AdjustForDST": True})
        try:
            await self.invoke(trigger, {trigger.arg: request})
        except Exception:  # logged by the invoker; a timer goes on ticking
            pass


_PAST_DUE = timedelta(seconds=1)  # fired this much after its time: the invocation is past due


def _supervised(coro, name: str, log) -> asyncio.Task:
    """A background loop whose crash is reported, not silently kept in a task nobody awaits."""

    async def run():
        try:
            await coro
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log(f"{name}: host error, trigger stopped: {_describe(exc)}\n{traceback.format_exc()}")

    return asyncio.ensure_future(run())


# ----------------------------------------------------------------------------------------- Service Bus


class BusPump:
    """Feeds Service Bus triggers from the local bus: complete on success, abandon on failure."""

    def __init__(self, triggers: list[Trigger], invoke: Invoker, bus: LocalBus, *, log=_stderr, batch: int = 8):
        self.subscribers: list[tuple[Trigger, str, str]] = []  # (trigger, entity to send to, entity to read)
        for t in triggers:
            if t.type != "serviceBusTrigger":
                continue
            if t.binding.get("queueName"):
                queue = resolve_setting(t.binding["queueName"], f"Service Bus trigger {t.name}")
                self.subscribers.append((t, queue, queue))
            else:
                topic = resolve_setting(t.binding.get("topicName", ""), f"Service Bus trigger {t.name}")
                sub = resolve_setting(t.binding.get("subscriptionName", ""), f"Service Bus trigger {t.name}")
                if not topic or not sub:
                    raise ConfigError(f"Service Bus trigger {t.name}: needs queue_name, or topic_name and subscription_name")
                bus.add_subscription(topic, sub)
                self.subscribers.append((t, topic, subscription_path(topic, sub)))
        self.invoke = invoke
        self.bus = bus
        self.log = log
        self.batch = batch

    @property
    def entities(self) -> list[str]:
        """Where an event posted to the host goes: each queue or topic a trigger listens on, once."""
        return list(dict.fromkeys(entity for _, entity, _ in self.subscribers))

    def send_event(self, payload: dict) -> dict:
        """``{"type", "data", "id"}`` → one message on every listened-on entity; the reply for POST /api/events."""
        message_id, body, props = encode_event(payload.get("type"), payload.get("data"), payload.get("id"))
        for entity in self.entities:
            self.bus.send(entity, body, message_id=message_id, application_properties=props, content_type="application/json")
        return {"id": message_id, "type": payload.get("type"), "sent_to": self.entities}

    def tasks(self) -> list[asyncio.Task]:
        return [_supervised(self._run(t, entity), t.name, self.log) for t, _, entity in self.subscribers]

    async def _run(self, trigger: Trigger, entity: str) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                messages = await loop.run_in_executor(None, lambda: self.bus.receive(entity, max_messages=self.batch))
            except Exception as exc:  # a busy or broken bus file: report it and poll again, never stop
                self.log(f"{trigger.name}: host error receiving from '{entity}', retrying: {_describe(exc)}")
                await asyncio.sleep(BUS_RETRY_SECONDS)
                continue
            if not messages:
                await asyncio.sleep(BUS_POLL_SECONDS)
                continue
            await asyncio.gather(*(self._deliver(trigger, m) for m in messages))

    async def _deliver(self, trigger: Trigger, message: Message) -> None:
        try:
            argument = _servicebus_message(message)
        except Exception as exc:  # a host bug, not the function's: say so loudly
            self.log(f"{trigger.name}: host error building the message: {_describe(exc)}")
            await self._settle(trigger, message, self.bus.abandon)
            return
        try:
            await self.invoke(trigger, {trigger.arg: argument})
        except Exception:
            if await self._settle(trigger, message, self.bus.abandon) is False:
                self.log(
                    f"{trigger.name}: message {message.message_id} dead-lettered after "
                    f"{message.delivery_count} deliveries (see `tower events dead-letters`)"
                )
            return
        await self._settle(trigger, message, self.bus.complete)

    async def _settle(self, trigger: Trigger, message: Message, settle, *args):
        """Complete or abandon off the event loop (they are blocking SQLite calls). A lost lock or a
        bus error is logged, not raised: the message comes back when its lock expires."""
        try:
            return await asyncio.get_running_loop().run_in_executor(None, settle, message, *args)
        except Exception as exc:
            self.log(f"{trigger.name}: host error settling message {message.message_id}: {_describe(exc)}")
            return None


def _servicebus_message(message: Message):
    from azure.functions.servicebus import ServiceBusMessage  # the full one the worker builds

    return ServiceBusMessage(
        body=message.body,
        message_id=message.message_id,
        application_properties=dict(message.application_properties),
        user_properties=dict(message.application_properties),
        delivery_count=message.delivery_count,
        content_type=message.content_type,
        enqueued_time_utc=datetime.fromtimestamp(message.enqueued_at, timezone.utc),
        lock_token=message.lock_token,
        sequence_number=message.seq,
    )


# ------------------------------------------------------------------------------------------ the host


def load_app(app_path: str | Path):
    """Import ``function_app.py`` (a file, or the directory holding it) and return its ``app``."""
    path = Path(app_path)
    if path.is_dir() or not path.suffix:
        path = (path if path.is_dir() else path.parent) / "function_app.py"
    if not path.is_file():
        raise UsageError(f"{path}: no function_app.py here (run from the app root or pass --app PATH)")
    root = str(path.parent.resolve())
    if root not in sys.path:
        sys.path.insert(0, root)
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[path.stem] = module
    spec.loader.exec_module(module)
    app = getattr(module, "app", None)
    if app is None or not hasattr(app, "get_functions"):
        raise UsageError(f"{path}: defines no Functions app named `app` (app = df.DFApp(...))")
    return app


class Host:
    """The running local host: the engine and its one HTTP server, plus timers and the bus pump.

    The engine serves ``engine.web_app`` (its Durable management API) on ``port``; the host adds the
    app's ``/api/...`` routes to it before it starts, and runs every trigger on ``engine.loop``.
    """

    def __init__(
        self,
        app,
        home: str | Path,
        *,
        host: str = DEFAULT_HOST,
        port: int = DEFAULT_PORT,
        max_deliveries: int = DEFAULT_MAX_DELIVERIES,
        bus_lock_seconds: float = 60.0,
        log=_stderr,
    ):
        from tower.local.engine import Engine

        if host != DEFAULT_HOST:
            raise UsageError(f"--host {host}: the local host listens on {DEFAULT_HOST} only (it enforces no auth)")
        self.home = Path(home)
        self.home.mkdir(parents=True, exist_ok=True)
        self.log = log = _redacting(log)  # every component logs through it: one place masks secrets
        self.engine = Engine(app, self.home, activity_workers=8, log=log, port=port)
        try:
            self.triggers = read_triggers(self.engine.functions)   # a bad trigger is a ConfigError
        except BaseException:
            self.engine.stop()      # its stores and runtime are open already
            raise
        self.bus = LocalBus(local_bus_path(self.home), max_deliveries=max_deliveries, lock_seconds=bus_lock_seconds)
        self._timer_state = TimerState(self.home / "timers.db")
        self.invoke = Invoker(self.engine.acall_function, lambda: self.engine.client_binding, log=log)
        self.pump = BusPump(self.triggers, self.invoke, self.bus, log=log)
        self.timers = TimerRunner(self.triggers, self.invoke, self._timer_state, log=log)
        self.http = HttpFunctions(
            self.triggers,
            self.invoke,
            events=self.pump.send_event if self.pump.subscribers else None,
        )
        self.engine.web_app.router.add_route("*", f"/{ROUTE_PREFIX}/{{tail:.*}}", self.http.handle)
        self.engine.web_app.router.add_get("/", _to_dashboard)  # the page people open first
        self._tasks: list[asyncio.Task] = []
        self._started = False

    @property
    def base_url(self) -> str:
        return self.engine.base_url

    def start(self) -> Host:
        """Start the engine (which resumes unfinished instances), then the timers and the bus pump."""
        self.engine.start()
        self._started = True
        asyncio.run_coroutine_threadsafe(self._start_triggers(), self.engine.loop).result(timeout=30)
        return self

    def stop(self) -> None:
        """Stop the triggers (a running invocation may finish, bounded), then the engine; state stays."""
        if self._started:
            future = asyncio.run_coroutine_threadsafe(self._stop_triggers(), self.engine.loop)
            future.result(timeout=SHUTDOWN_GRACE_SECONDS + 5)
            self._started = False
        self.engine.stop()
        self.bus.close()
        self._timer_state.close()

    def __enter__(self) -> Host:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    async def _start_triggers(self) -> None:
        for route in self.http.routes:
            methods = ",".join(sorted(route.methods)) or "*"
            self.log(
                f"  {route.trigger.name}: [{methods}] {self.base_url}/{ROUTE_PREFIX}/{route.template}"
                f" (auth {route.auth_level.lower()}, not enforced locally)"
            )
        for trigger, schedule in self.timers.timers:
            self.log(f"  {trigger.name}: timer '{schedule.expression}'")
        for trigger, _, entity in self.pump.subscribers:
            self.log(f"  {trigger.name}: Service Bus '{entity}' (local bus)")
        self._tasks = self.timers.tasks() + self.pump.tasks()

    async def _stop_triggers(self) -> None:
        for task in self._tasks:
            task.cancel()
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=SHUTDOWN_GRACE_SECONDS)


def _redacting(log):
    return lambda line: log(redact(line))


def serve(app_path: str | Path = ".", *, home: str | Path, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT) -> int:
    """`tower serve`: run until Ctrl-C or SIGTERM, then shut down cleanly (state stays in SQLite)."""
    local = Host(load_app(app_path), home, host=host, port=port)
    stop = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        local.start()  # a taken port is an EngineError that says so
        # Azure gives the app its public host name (WEBSITE_HOSTNAME); here it is where this host listens
        os.environ.setdefault("TOWER_CALLBACK_URL", f"{local.base_url}/{ROUTE_PREFIX}")
        _stderr(f"tower serve: listening on {local.base_url} (state in {Path(home).resolve()}); Ctrl-C to stop")
        while not stop.wait(0.5):  # a timed wait lets the signal handlers run promptly
            pass
        _stderr("tower serve: stopping (running functions get a moment to finish)")
    finally:
        local.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    _stderr("tower serve: stopped")
    return 0
