"""One local engine for the orchestration tests (real SDK, real replay), state in a temp dir."""

import json
from datetime import datetime

import pytest
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import InMemoryLogRecordExporter, SimpleLogRecordProcessor
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from tests.faults import FaultyLedger, RuntimeWithFaults
from tower import names, telemetry
from tower.catalog.model import Catalog, Pipeline, Platform, RetryPolicy, Service
from tower.local.driver import run_app
from tower.platforms import sim
from tower.runner import store_run
from tower.runs.ledger import ledger_from_environment, run_services
from tower.runs.plan import build_plan
from tower.timestamps import utcnow


@pytest.fixture(scope="session")
def engine(tmp_path_factory):
    """The engine, its runtime's ledger one a test may make fail (`ledger_faults`)."""
    from tower.local.engine import Engine

    home = tmp_path_factory.mktemp("tower-home")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TOWER_HOME", str(home))
        patch.delenv("TOWER_HISTORY_TABLE_URL", raising=False)
        runtime = RuntimeWithFaults(home)
        eng = Engine(run_app(), home, activity_workers=8, runtime=runtime).start()
        try:
            yield eng
        finally:
            eng.stop()
            runtime.close()


class Recorded:
    """The spans and events one test's runs emitted."""

    def __init__(self, spans: InMemorySpanExporter, logs: InMemoryLogRecordExporter):
        self._spans, self._logs = spans, logs

    def spans(self, run_id: str) -> list:
        telemetry.flush()
        return [s for s in self._spans.get_finished_spans() if s.attributes.get("tower.run_id") == run_id]

    def events(self, name: str, run_id: str) -> list[dict]:
        telemetry.flush()
        found = [dict(log.log_record.attributes) for log in self._logs.get_finished_logs()]
        return [e for e in found if e.get("microsoft.custom_event.name") == name and e.get("run_id") == run_id]


@pytest.fixture
def recorded(engine):
    """Telemetry on for this test, over in-memory exporters, reading cores from the engine's ledger."""
    spans, logs = InMemorySpanExporter(), InMemoryLogRecordExporter()
    tracer_provider, logger_provider = TracerProvider(), LoggerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(spans))
    logger_provider.add_log_record_processor(SimpleLogRecordProcessor(logs))
    previous = telemetry.install(telemetry.Telemetry(tracer_provider, logger_provider, engine.runtime.ledger))
    try:
        yield Recorded(spans, logs)
    finally:
        telemetry.flush()
        telemetry.install(previous)


@pytest.fixture
def ledger_faults(engine) -> FaultyLedger:
    """The engine's ledger, failing the calls this test names (`FaultyLedger.fail`) until it ends."""
    faults = engine.runtime.ledger_faults
    try:
        yield faults
    finally:
        faults.clear()


def sim_adapter(engine) -> sim.SimAdapter:
    """The simulator the engine's activities use for `sim_catalog`'s platforms (settings {}): what
    it was told (`cancelled_remote_ids`, `poll_counts`). Remote ids are unique per run, so the
    record needs no clearing between tests."""
    return engine.runtime.platforms.adapter("sim", {})


def sim_catalog(services: dict, limits: dict | None = None, params: dict | None = None) -> Catalog:
    """services: {name: {deps, duration, platform, retries, backoff, timeout, outcome, fail_attempts,
    params, type}}. Durations are seconds of simulated work, also used as expected durations."""
    limits = limits or {}
    used = {spec.get("platform", "sim") for spec in services.values()} | {"sim"}
    types = {spec.get("platform", "sim"): spec.get("type", "sim") for spec in services.values()}
    platforms = {p: Platform(p, types.get(p, "sim"), max_concurrency=limits.get(p)) for p in sorted(used)}
    built = {}
    for name, spec in services.items():
        sim_spec = {k: spec[k] for k in ("duration", "outcome", "fail_attempts") if k in spec}
        sim_spec.update(spec.get("spec", {}))
        built[name] = Service(
            name, spec.get("platform", "sim"), depends_on=tuple(spec.get("deps", ())),
            timeout=spec.get("timeout"),
            retry=RetryPolicy(retries=spec.get("retries", 0), backoff=spec.get("backoff", 0.01),
                              max_backoff=spec.get("max_backoff", 1.0)),
            expected_duration=spec.get("expected", spec.get("duration", 0.0)),
            params=spec.get("params", {}), spec=sim_spec)
    return Catalog("test.yaml", platforms, built, {"p": Pipeline("p", params=params or {})})


_runs = iter(range(1, 10**6))


def run_plan(engine, plan: dict, timeout: float = 30) -> dict:
    """Store the plan, start pipeline_run on it, wait, and return the run result."""
    engine.start_new(names.PIPELINE_RUN, plan["run_id"], json.dumps(store_run(plan)))
    return result_of(engine, plan["run_id"], timeout)


def result_of(engine, run_id: str, timeout: float = 30) -> dict:
    """Once the run ends: its outcome (pipeline_run's output) with each service's record from the ledger."""
    status = engine.wait(run_id, timeout)
    assert status["runtimeStatus"] == "Completed", status
    return {**status["output"], "services": run_services(ledger_from_environment(), run_id, utcnow())}


def run(engine, catalog: Catalog, timeout: float = 30, **plan_options) -> dict:
    plan = build_plan(catalog, "p", run_id=f"t{next(_runs)}-{datetime.now():%H%M%S%f}", **plan_options)
    return run_plan(engine, plan, timeout)


def times(result: dict, name: str) -> tuple[datetime, datetime]:
    service = result["services"][name]
    return (datetime.fromisoformat(service["started"].replace("Z", "+00:00")),
            datetime.fromisoformat(service["finished"].replace("Z", "+00:00")))


def scheduled(engine, instance_id: str) -> list[str]:
    """The activities an orchestration scheduled, in order."""
    return [e["Name"] for e in engine.history(instance_id) if e["EventType"] == 4]  # TaskScheduled


def statuses(result: dict) -> dict:
    return {name: s["status"] for name, s in result["services"].items()}
