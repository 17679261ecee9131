"""Telemetry to Application Insights: what operators see of Tower in the Azure portal.

Off unless ``APPLICATIONINSIGHTS_CONNECTION_STRING`` is set: then `configure()` sets up the
``azure-monitor-opentelemetry`` distro once per process (the Functions app, `tower run`, `tower
serve`). The distro is imported only then: it costs about a second and raises without a connection
string, and `tower validate` / `tower plan` must pay nothing for it.

A run is one end-to-end transaction: everything about it carries the trace id `trace_id(run_id)`
(the portal's operation id), whichever host or process emits it, so no context has to travel
through orchestrators. What is emitted, and from where (activities and triggers only: an
orchestrator replays, and nothing may be emitted twice), is the contract the workbook and the alerts
query; docs/architecture.md ("Observability") lists it.

Telemetry never fails or slows a run: every emit is guarded and returns at once; spans and events
about a run's end are built on one background thread (they may read the run ledger) and exported in
batches by the distro's own threads.
"""

from __future__ import annotations

import atexit
import contextvars
import hashlib
import logging
import os
import queue
import re
import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta
from typing import Any

from tower.contracts import CancelRequest, PlatformEntry, PollRequest, ServiceResult, SubmitRequest
from tower.redact import redact
from tower.states import FINISHED_STATES, RunState, ServiceState
from tower.timestamps import iso, parse_iso

CONNECTION_SETTING = "APPLICATIONINSIGHTS_CONNECTION_STRING"
AUTHENTICATION_SETTING = "APPLICATIONINSIGHTS_AUTHENTICATION_STRING"
LOGGER_NAME = "tower"  # only Tower's own loggers go to Application Insights (not every SDK's chatter)
LOCAL_ROLE = "tower-local"
ERROR_CHARS = 1000  # of a (redacted) error on a span
FAILED_SERVICES_SHOWN = 20

RUN_STARTED, RUN_FINISHED = "tower.run.started", "tower.run.finished"
SERVICE_FINISHED, SCHEDULE_TICK = "tower.service.finished", "tower.schedule.tick"

log = logging.getLogger("tower.telemetry")
# The one module-level state Tower keeps on purpose: the distro installs OpenTelemetry's global tracer
# and logger providers, which exist once per process whoever holds them, so the handle to them is
# per process too (everything else `Telemetry` keeps, the cores and the ends seen, lives on it).
_lock = threading.Lock()
_telemetry: Telemetry | None = None
_tried = False


# --- ids: one run, one operation ----------------------------------------------------------------

def trace_id(run_id: str) -> str:
    """The trace id (Application Insights operation id) of everything about a run: the first 32 hex
    digits of sha256(run_id). Derived, not carried, so any host can compute it from the run id."""
    return hashlib.sha256(run_id.encode()).hexdigest()[:32]


def run_span_id(run_id: str) -> int:
    """The span id of the run's own span (`run <pipeline>`), the parent of its services' spans."""
    return int(hashlib.sha256(run_id.encode()).hexdigest()[32:48], 16) or 1


def attempt_span_id(run_id: str, service: str, attempt: int) -> int:
    """The span id of one attempt of a service (`service <name>`), the parent of its platform calls,
    which happen before the attempt's span is emitted."""
    digest = hashlib.sha256(f"{run_id}\0{service}\0{attempt}".encode()).hexdigest()
    return int(digest[:16], 16) or 1


# --- configuration ------------------------------------------------------------------------------

def configure() -> bool:
    """Set up the distro when ``APPLICATIONINSIGHTS_CONNECTION_STRING`` is set, once per process;
    True if telemetry is on. Never raises: a process without telemetry is a working process."""
    global _telemetry, _tried
    with _lock:
        if _tried:
            return _telemetry is not None
        _tried = True
        connection = os.environ.get(CONNECTION_SETTING, "").strip()
        if not connection:
            return False
        try:
            _telemetry = Telemetry.to_application_insights(connection)
        except Exception as exc:
            log.warning("telemetry is off: configuring Application Insights failed: %s", redact(str(exc)))
            return False
    atexit.register(flush)  # after the distro's own exit hooks were registered: runs before them
    return True


def enabled() -> bool:
    return _telemetry is not None


def install(telemetry: Telemetry | None) -> Telemetry | None:
    """Make `telemetry` this process's (None: off) and return the one it replaces; `configure`
    installs the distro's. A test installs one over in-memory exporters, and the previous back."""
    global _telemetry, _tried
    with _lock:
        previous, _telemetry, _tried = _telemetry, telemetry, True
    return previous


def ingestion_credential(auth: str | None):
    """The credential for Entra ID ingestion when ``APPLICATIONINSIGHTS_AUTHENTICATION_STRING``
    asks for it (``Authorization=AAD`` and, for a user-assigned identity, ``ClientId=<id>``): the
    app's managed identity. None when unset (instrumentation-key ingestion, as locally)."""
    if not auth or not auth.strip():
        return None
    fields = {}
    for part in auth.split(";"):
        key, sep, value = part.partition("=")
        if sep:
            fields[key.strip().lower()] = value.strip()
    if fields.get("authorization", "").upper() != "AAD":
        raise ValueError(f"{AUTHENTICATION_SETTING} must be 'Authorization=AAD' or "
                         f"'Authorization=AAD;ClientId=<client id>'")
    from azure.identity import ManagedIdentityCredential

    client_id = fields.get("clientid")
    return ManagedIdentityCredential(client_id=client_id) if client_id else ManagedIdentityCredential()


class Telemetry:
    """Where Tower's spans and events go: an OpenTelemetry tracer provider and logger provider, the
    run ledger the cores of runs are read from (None: the environment's, opened on first need), and
    a background emitter. `to_application_insights` builds the one a process installs; a test hands
    in providers of its own (in-memory exporters) and installs it with `install`."""

    def __init__(self, tracer_provider, logger_provider, ledger: Any = None):
        self.providers = (tracer_provider, logger_provider)
        self.tracer = tracer_provider.get_tracer(LOGGER_NAME)
        self.ids = _ChosenIds(getattr(self.tracer, "id_generator", None))
        if hasattr(self.tracer, "id_generator"):
            self.tracer.id_generator = self.ids
        self.events = logger_provider.get_logger("tower.events")
        self.cores: OrderedDict[str, dict] = OrderedDict()
        self._ledger = ledger
        self._seen_lock = threading.Lock()
        self._seen: OrderedDict[tuple, bool] = OrderedDict()  # ends emitted by this process, newest last
        self.emitter = _Emitter()

    @classmethod
    def to_application_insights(cls, connection: str) -> Telemetry:
        """Set up the distro (process-wide providers, the export of Tower's log lines) for the
        Application Insights resource of `connection`."""
        from azure.monitor.opentelemetry import configure_azure_monitor
        from opentelemetry import trace
        from opentelemetry._logs import get_logger_provider
        from opentelemetry.sdk.resources import Resource

        in_azure = bool(os.environ.get("WEBSITE_SITE_NAME"))
        options: dict[str, Any] = {
            "connection_string": connection,
            "resource": Resource.create({"service.name": os.environ.get("WEBSITE_SITE_NAME") or LOCAL_ROLE}),
            "logger_name": LOGGER_NAME,
            # Tower's spans are the contract; auto-instrumented HTTP and Azure SDK calls (every ledger
            # change) would multiply the volume and cost time on the dispatch path.
            "instrumentation_options": {name: {"enabled": False} for name in (
                "azure_sdk", "django", "fastapi", "flask", "psycopg2", "requests", "urllib", "urllib3")},
            "enable_live_metrics": False,
            "log_record_processors": [_run_operation()],
            # retry files on disk are worth it in Azure; a local run must not leave them in /tmp
            "disable_offline_storage": not in_azure,
        }
        if not os.environ.get("OTEL_TRACES_SAMPLER"):
            # all or nothing per run (the sampler decides on the trace id), and by default all:
            # the distro's default rate limit could drop a run's span but keep its services'
            options["sampling_ratio"] = 1.0
        credential = ingestion_credential(os.environ.get(AUTHENTICATION_SETTING))
        if credential is not None:
            options["credential"] = credential
        configure_azure_monitor(**options)
        tower_log = logging.getLogger(LOGGER_NAME)
        for handler in tower_log.handlers:
            if type(handler).__name__ == "LoggingHandler":
                handler.addFilter(_RunDimensions())
        if tower_log.level == logging.NOTSET:  # Tower's info lines (a run's progress) are worth keeping
            tower_log.setLevel(logging.INFO)
        return cls(trace.get_tracer_provider(), get_logger_provider())

    # -- contexts ------------------------------------------------------------------------------

    def context(self, run_id: str, span_id: int | None = None):
        """A context whose (remote) parent is a span of the run: by default the run's own span."""
        from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags, set_span_in_context

        parent = SpanContext(int(trace_id(run_id), 16), span_id or run_span_id(run_id), is_remote=True,
                             trace_flags=TraceFlags(TraceFlags.SAMPLED))
        return set_span_in_context(NonRecordingSpan(parent))

    def span(self, name: str, kind_name: str, start: datetime, end: datetime, attributes: dict,
             parent=None, chosen: tuple[int | None, int] | None = None, error: str | None = None) -> None:
        """Emit a finished span with its real times; `chosen` = (trace id or None, span id)."""
        from opentelemetry.trace import SpanKind, Status, StatusCode

        start_ns, end_ns = _ns(start), _ns(end)
        self.ids.choose(chosen)
        try:
            span = self.tracer.start_span(name, context=parent, kind=getattr(SpanKind, kind_name),
                                          attributes=_clean(attributes), start_time=start_ns)
        finally:
            self.ids.choose(None)
        if error is not None:
            span.set_status(Status(StatusCode.ERROR, error))
        span.end(end_time=max(end_ns, start_ns))

    def event(self, name: str, properties: Mapping[str, Any], context=None) -> None:
        """A custom event (`customEvents`), every property a string, in the run's operation if given."""
        attributes = {key: "" if value is None else str(value) for key, value in properties.items()}
        attributes["microsoft.custom_event.name"] = name
        self.events.emit(body=name, attributes=attributes, context=context)

    def core(self, run_id: str) -> dict | None:
        """The run's graph, expected durations and platforms (the ledger's core plan), kept for a few
        runs: a report needs its service's platform and expected duration."""
        core = self.cores.get(run_id)
        if core is None:
            if self._ledger is None:  # only the emitter thread reads cores: no lock needed
                from tower.runs.ledger import ledger_from_environment

                self._ledger = ledger_from_environment()
            snapshot = self._ledger.load(run_id)
            core = snapshot.core if snapshot is not None else None
            if core is None:
                return None
            self.remember(run_id, core)
        return core

    def seen(self, key: tuple) -> bool:
        """Was this end emitted already by this process? (An activity may run twice.)"""
        with self._seen_lock:
            if key in self._seen:
                return True
            self._seen[key] = True
            while len(self._seen) > 10_000:
                self._seen.popitem(last=False)
            return False

    def remember(self, run_id: str, core: dict) -> None:
        self.cores[run_id] = core
        self.cores.move_to_end(run_id)
        while len(self.cores) > 32:
            self.cores.popitem(last=False)


class _ChosenIds:
    """The id generator of Tower's tracer: the ids a span asks for (derived from its run), else
    random ones. Chosen per thread, just around `start_span`."""

    def __init__(self, fallback):
        from opentelemetry.sdk.trace.id_generator import RandomIdGenerator

        self.fallback = fallback or RandomIdGenerator()
        self.local = threading.local()

    def choose(self, ids: tuple[int | None, int] | None) -> None:
        self.local.ids = ids

    def generate_span_id(self) -> int:
        ids = getattr(self.local, "ids", None)
        return ids[1] if ids else self.fallback.generate_span_id()

    def generate_trace_id(self) -> int:
        ids = getattr(self.local, "ids", None)
        return ids[0] if ids and ids[0] else self.fallback.generate_trace_id()

    def is_trace_id_random(self) -> bool:
        return False if getattr(self.local, "ids", None) else self.fallback.is_trace_id_random()


class _Emitter:
    """One background thread that builds the spans and events about ends (they may read the run
    ledger), so no activity waits for telemetry. Bounded: when it is full, telemetry is dropped."""

    def __init__(self, capacity: int = 10_000):
        self.queue: queue.Queue = queue.Queue(maxsize=capacity)
        self.dropped = 0
        self.thread = threading.Thread(target=self._run, name="tower-telemetry", daemon=True)
        self.thread.start()

    def later(self, fn: Callable, *args) -> None:
        try:
            self.queue.put_nowait((fn, args))
        except queue.Full:
            self.dropped += 1

    def drain(self, timeout: float) -> bool:
        done = threading.Event()
        try:
            self.queue.put((done.set, ()), timeout=timeout)
        except queue.Full:
            return False
        return done.wait(timeout)

    def _run(self) -> None:
        while True:
            fn, args = self.queue.get()
            try:
                fn(*args)
            except Exception as exc:
                log.debug("telemetry: %s failed: %s", getattr(fn, "__name__", fn), redact(str(exc)))


def flush(timeout: float = 10.0) -> None:
    """Emit what is pending and export it now (the end of `tower run`, tests, process exit)."""
    telemetry = _telemetry
    if telemetry is None:
        return
    try:
        telemetry.emitter.drain(timeout)
        for provider in telemetry.providers:
            force_flush = getattr(provider, "force_flush", None)
            if force_flush:
                force_flush(int(timeout * 1000))
    except Exception as exc:
        log.debug("telemetry: flush failed: %s", redact(str(exc)))


def _guarded(fn: Callable) -> Callable:
    """Telemetry never fails its caller: an emit that breaks is a debug line, nothing more."""

    def emit(*args, **kwargs):
        if _telemetry is None:
            return None
        try:
            return fn(_telemetry, *args, **kwargs)
        except Exception as exc:
            log.debug("telemetry: %s failed: %s", fn.__name__, redact(str(exc)))
            return None

    emit.__name__ = fn.__name__
    emit.__doc__ = fn.__doc__
    return emit


# --- what activities and triggers emit ----------------------------------------------------------

@_guarded
def run_started(t: Telemetry, plan: Mapping[str, Any], started: str) -> None:
    """`tower.run.started`, from the activity that opens the run (it has the plan); once per process."""
    if t.seen(("started", plan["run_id"])):
        return
    t.emitter.later(_run_started, t, plan, started)


def _run_started(t: Telemetry, plan: Mapping[str, Any], started: str) -> None:
    from tower.runs.ledger import core_of
    from tower.runs.scheduler import Scheduler

    run_id, core = plan["run_id"], core_of(plan)
    t.remember(run_id, core)
    start = parse_iso(started)
    expected_end = Scheduler(core, start).eta(start)
    t.event(RUN_STARTED, {
        "run_id": run_id, "pipeline": plan["pipeline"], "trigger": trigger_of(run_id, plan),
        "services": len(plan["services"]), "expected_end": iso(expected_end) or iso(start),
        "deadline": iso(plan.get("deadline")) or "",
    }, context=t.context(run_id))


@_guarded
def service_finished(t: Telemetry, run_id: str, pipeline: str | None, result: ServiceResult) -> None:
    """The span of the service's last attempt and `tower.service.finished`, from the report
    activity once the ledger took the service's end; `result`: the (redacted) service result. A
    report repeated in this process is not emitted again."""
    if t.seen(("service", run_id, result.service, result.attempts)):
        return
    t.emitter.later(_service_finished, t, run_id, pipeline, result)


def _service_finished(t: Telemetry, run_id: str, pipeline: str | None, result: ServiceResult) -> None:
    service = result.service
    svc = ((t.core(run_id) or {}).get("services") or {}).get(service) or {}
    attempt = result.attempts
    started = parse_iso(result.started) or parse_iso(result.finished)
    attempt_started = parse_iso(result.attempt_started) or started
    finished = parse_iso(result.finished) or attempt_started
    status, error = result.status or "", result.error
    error_class = error_class_of(status, error)
    platform = svc.get("platform") or ""
    expected = float(svc.get("expected") or 0.0)
    if attempt > 0 and attempt_started is not None:
        _attempt_span(t, pipeline, platform, expected, {
            **result.to_json(), "run_id": run_id, "attempt": attempt, "started": attempt_started,
            "finished": finished, "error_class": error_class})
    t.event(SERVICE_FINISHED, {
        "run_id": run_id, "pipeline": pipeline, "service": service, "platform": platform,
        "status": status, "attempts": attempt, "started": iso(started), "finished": iso(finished),
        "duration_s": _seconds(started, finished), "expected_s": expected, "error_class": error_class,
        "remote_id": result.remote_id,
    }, context=t.context(run_id, attempt_span_id(run_id, service, attempt) if attempt else None))


def _attempt_span(t: Telemetry, pipeline: str | None, platform: str, expected: float, attempt: dict) -> None:
    """`service <name>`: one attempt, under the run's span, with the span id its platform calls
    already named as their parent. attempt: {run_id, service, attempt, started, finished (datetimes),
    status, error, error_class, remote_id, url}."""
    run_id, service, number, status = attempt["run_id"], attempt["service"], attempt["attempt"], attempt["status"]
    error = _capped(attempt.get("error"))
    t.span(f"service {service}", "INTERNAL", attempt["started"], attempt["finished"], {
        "tower.run_id": run_id, "tower.pipeline": pipeline, "tower.service": service, "tower.platform": platform,
        "tower.attempt": number, "tower.remote_id": attempt.get("remote_id"), "tower.url": attempt.get("url"),
        "tower.outcome": status, "tower.error_class": attempt.get("error_class"), "tower.error": error,
        "tower.expected_s": expected, "tower.duration_s": _seconds(attempt["started"], attempt["finished"]),
    }, parent=t.context(run_id), chosen=(None, attempt_span_id(run_id, service, number)),
        error=error or status if status not in (ServiceState.SUCCEEDED, ServiceState.SKIPPED) else None)


@_guarded
def attempt_failed(t: Telemetry, asked: SubmitRequest) -> None:
    """The span of an attempt that failed and is being tried again, from the submit of the next
    one (`asked.previous`, set by `service_run`): the report covers only the last attempt."""
    previous, who = asked.previous, about(asked)
    if not previous or t.seen(("service", who["run_id"], who["service"], previous["attempt"])):
        return
    pipeline = asked.report.pipeline if asked.report is not None else None
    t.emitter.later(_attempt_failed, t, who, pipeline, dict(previous))


def _attempt_failed(t: Telemetry, who: dict, pipeline: str | None, previous: dict) -> None:
    svc = ((t.core(who["run_id"]) or {}).get("services") or {}).get(who["service"]) or {}
    started = parse_iso(previous.get("started")) or parse_iso(previous.get("finished"))
    _attempt_span(t, pipeline, svc.get("platform") or "", float(svc.get("expected") or 0.0), {
        **previous, "run_id": who["run_id"], "service": who["service"], "status": ServiceState.FAILED, "started": started,
        "finished": parse_iso(previous.get("finished")) or started,
        "error_class": error_class_of(ServiceState.FAILED, previous.get("error"))})


@_guarded
def run_finished(t: Telemetry, result: Mapping[str, Any]) -> None:
    """The run's span (`run <pipeline>`, a request) and `tower.run.finished`, from the activity that
    reads the run result. A repeat in this process is not emitted again."""
    if t.seen(("run", result["run_id"])):
        return
    t.emitter.later(_run_finished, t, dict(result))


def _run_finished(t: Telemetry, result: dict) -> None:
    from tower import graph

    run_id, pipeline, status = result["run_id"], result["pipeline"], result["status"]
    started, finished = parse_iso(result["started"]), parse_iso(result["finished"])
    services = result.get("services") or {}
    counts = dict.fromkeys(FINISHED_STATES, 0)
    for svc in services.values():
        if svc.get("status") in counts:
            counts[svc["status"]] += 1
    failed = [name for name, svc in services.items() if svc.get("status") == ServiceState.FAILED]
    core = t.core(run_id) or {}
    deps = {name: tuple(svc.get("deps") or ()) for name, svc in (core.get("services") or {}).items()}
    critical = 0.0
    if deps and set(deps) == set(services):
        took = {name: _seconds(parse_iso(svc.get("started")), parse_iso(svc.get("finished")))
                for name, svc in services.items()}
        critical = graph.critical_path(deps, took)[1]
    duration = _seconds(started, finished)
    trigger = trigger_of(run_id)
    t.span(f"run {pipeline}", "SERVER", started, finished, {
        "tower.run_id": run_id, "tower.pipeline": pipeline, "tower.trigger": trigger, "tower.status": status,
        "tower.services": len(services), "tower.failed": len(failed), "tower.critical_path_s": round(critical, 3),
        "tower.duration_s": duration,
    }, chosen=(int(trace_id(run_id), 16), run_span_id(run_id)),
        error=_capped(result.get("summary")) or status if status != RunState.SUCCEEDED else None)
    shown = failed[:FAILED_SERVICES_SHOWN]
    t.event(RUN_FINISHED, {
        "run_id": run_id, "pipeline": pipeline, "trigger": trigger, "status": status,
        "started": iso(started), "finished": iso(finished), "duration_s": duration,
        "critical_path_s": round(critical, 3), "services": len(services), **counts,
        "failed_services": ",".join(shown) + (f",... ({len(failed)} in all)" if len(failed) > len(shown) else ""),
    }, context=t.context(run_id))


@_guarded
def schedule_tick(t: Telemetry, at: datetime, started: int) -> None:
    """`tower.schedule.tick`, every tick, runs started or not (an alert fires when ticks stop)."""
    t.event(SCHEDULE_TICK, {"at": iso(at), "started": started})


def traced(platform_adapter, platform: PlatformEntry, about: Mapping[str, Any] | None):
    """The adapter itself when telemetry is off; else one whose submit, poll and cancel are
    dependency spans (`<platform> <call>`) under the service attempt's span. `about`: {run_id,
    service, attempt} (see `about`)."""
    if _telemetry is None or not about or not about.get("run_id"):
        return platform_adapter
    return _TracedAdapter(platform_adapter, platform, about)


def about(asked: SubmitRequest | PollRequest | CancelRequest) -> dict | None:
    """{run_id, service, attempt} of a platform activity's request: from its submission (submit),
    its report (poll), or its own fields (cancel)."""
    if isinstance(asked, SubmitRequest):
        sub = asked.submission
        return {"run_id": sub.run_id, "service": sub.service, "attempt": sub.attempt}
    if isinstance(asked, PollRequest):
        if asked.report is None:  # no run to name: its calls are not traced
            return None
        result = asked.report.result
        return {"run_id": asked.report.run_id, "service": result.service, "attempt": result.attempts or 1}
    return {"run_id": asked.run_id, "service": asked.service, "attempt": asked.attempt or 1}


class _TracedAdapter:
    def __init__(self, adapter, platform: PlatformEntry, about: Mapping[str, Any]):
        self._adapter, self._platform, self._about = adapter, platform, about

    def __getattr__(self, name):
        return getattr(self._adapter, name)

    def submit(self, submission):
        return self._call("submit", self._adapter.submit, submission)

    def poll(self, handle):
        return self._call("poll", self._adapter.poll, handle)

    def cancel(self, handle):
        return self._call("cancel", self._adapter.cancel, handle)

    def _call(self, call: str, fn, arg):
        started = _span_start(self._platform, self._about, call)
        if started is None:
            return fn(arg)
        span, token = started
        try:
            value = fn(arg)
        except BaseException as exc:
            _span_end(span, token, exc)
            raise
        _span_end(span, token, None, value)
        return value


def _span_start(platform: PlatformEntry, about: Mapping[str, Any], call: str):
    """Start a platform call's span, current in this thread (logs inside join the run)."""
    t = _telemetry
    if t is None:
        return None
    try:
        from opentelemetry import context as context_api
        from opentelemetry.trace import SpanKind, set_span_in_context

        run_id, service, attempt = about["run_id"], about.get("service") or "", int(about.get("attempt") or 1)
        name = platform.name or platform.type or "platform"
        parent = t.context(run_id, attempt_span_id(run_id, service, attempt) if service else None)
        span = t.tracer.start_span(f"{name} {call}", context=parent, kind=SpanKind.CLIENT, attributes=_clean({
            "tower.run_id": run_id, "tower.service": service, "tower.platform": name, "tower.attempt": attempt,
            "az.namespace": platform.type or name,  # the dependency type in Application Insights
            "peer.service": name}))
        return span, (context_api.attach(set_span_in_context(span)), _about.set((run_id, service)))
    except Exception as exc:
        log.debug("telemetry: platform span failed: %s", redact(str(exc)))
        return None


def _span_end(span, token, error: BaseException | None, value: Any = None) -> None:
    try:
        from opentelemetry import context as context_api
        from opentelemetry.trace import Status, StatusCode

        context_api.detach(token[0])
        _about.reset(token[1])
        if error is not None:
            span.set_status(Status(StatusCode.ERROR, _capped(str(error)) or type(error).__name__))
        else:
            state = getattr(value, "state", None)
            if state:
                span.set_attribute("tower.state", str(state))
        span.end()
    except Exception as exc:
        log.debug("telemetry: platform span failed: %s", redact(str(exc)))


# --- helpers --------------------------------------------------------------------------------------

def _run_operation():
    """A log record processor: a log line about a run (``tower.run_id``, see `_RunDimensions`)
    logged outside any span joins the run's operation, so the portal shows it with the run."""
    from opentelemetry.sdk._logs import LogRecordProcessor

    class RunOperation(LogRecordProcessor):
        def on_emit(self, log_record) -> None:
            record = log_record.log_record
            run_id = (record.attributes or {}).get("tower.run_id")
            if run_id and not record.trace_id:
                record.trace_id = int(trace_id(str(run_id)), 16)
                record.span_id = run_span_id(str(run_id))

        def emit(self, log_record) -> None:  # the name of on_emit in older SDKs
            self.on_emit(log_record)

        def shutdown(self) -> None:
            pass

        def force_flush(self, timeout_millis: int = 30000) -> bool:
            return True

    return RunOperation()


# The run and service of the platform call under way in this thread (or task), for its log lines.
_about: contextvars.ContextVar[tuple[str, str] | None] = contextvars.ContextVar("tower_about", default=None)


class _RunDimensions(logging.Filter):
    """Logs carry the run and service as custom dimensions: the ``extra`` fields ``run_id`` and
    ``service`` become ``tower.run_id`` and ``tower.service``; without them, a line logged during a
    platform call (an adapter's) gets those of that call."""

    def filter(self, record: logging.LogRecord) -> bool:
        current = _about.get()
        for field, index in (("run_id", 0), ("service", 1)):
            value = getattr(record, field, None)
            if value is None and current is not None:
                value = current[index] or None
            if value is not None:
                setattr(record, f"tower.{field}", str(value))
        return True


def trigger_of(run_id: str, plan: Mapping[str, Any] | None = None) -> str:
    """How a run was started: the plan's `trigger` when it says, else what its id shows
    (tower.runs.plan's shapes: `run~<pipeline>@<stamp>` schedule, `run~<pipeline>@<stamp>-<nonce>` by
    hand, `run~<pipeline>:<message id>` event; any other id was given by a caller: manual)."""
    if plan and plan.get("trigger"):
        return str(plan["trigger"])
    if _SCHEDULED_ID.search(run_id):
        return "schedule"
    if _EVENT_ID.match(run_id):
        return "event"
    return "manual"


_SCHEDULED_ID = re.compile(r"@\d{8}T\d{6}Z$")
_EVENT_ID = re.compile(r"run~[A-Za-z0-9_-]+:")


def error_class_of(status: str, error: str | None) -> str:
    """A service's failure in a word the workbook can group by: timeout, cancelled, retries_exhausted,
    upstream, service_run (its orchestration ended abnormally) or platform; "" when it did not fail."""
    if status in (ServiceState.SUCCEEDED, ServiceState.SKIPPED, "") and not error:
        return ""
    text = error or ""
    if status == ServiceState.CANCELLED:
        return "cancelled"
    if status == ServiceState.UPSTREAM_FAILED:
        return "upstream"
    if text.startswith("timed out"):
        return "timeout"
    if "(gave up after" in text:
        return "retries_exhausted"
    if text.startswith("its service run ended"):
        return "service_run"
    return "platform" if status == ServiceState.FAILED else ""


def _capped(text: str | None) -> str | None:
    return redact(text)[:ERROR_CHARS] if text else None


def _clean(attributes: Mapping[str, Any]) -> dict:
    return {key: value for key, value in attributes.items() if value is not None}


def _ns(moment: datetime) -> int:
    return int(moment.timestamp() * 1e9)


def _seconds(start: datetime | None, end: datetime | None) -> float:
    if start is None or end is None:
        return 0.0
    return round(max((end - start) / timedelta(seconds=1), 0.0), 3)
