"""What a run on the local engine tells telemetry, read in this process from in-memory exporters.

`tests/test_telemetry.py` checks what reaches Application Insights' ingestion, through `tower run`
in a process of its own (the distro installs process-wide providers). Here the same `Telemetry`
runs over OpenTelemetry SDK providers of the test's own, installed for one test, so the spans and
events of the activities on the engine are read where they are made: the service attempts, which
attempt each platform call belongs to, and the ends a reconcile records.
"""

from __future__ import annotations

import json
import time
import uuid

import pytest
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import InMemoryLogRecordExporter, SimpleLogRecordProcessor
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from tower import names, telemetry
from tower.runner import store_run
from tower.runs.plan import build_plan, service_instance_id

from .conftest import result_of, run, sim_catalog


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


def _attempts(spans: list, service: str) -> dict[int, object]:
    found = [s for s in spans if s.name == f"service {service}"]
    by_attempt = {s.attributes["tower.attempt"]: s for s in found}
    assert len(by_attempt) == len(found), f"an attempt of {service} has two spans"
    return by_attempt


def test_each_attempt_has_its_span_and_each_platform_call_names_the_attempt_it_belongs_to(engine, recorded):
    catalog = sim_catalog({"extract": {"duration": 0.05, "fail_attempts": 1, "retries": 1},
                           "load": {"duration": 0.05, "deps": ["extract"]}})
    result = run(engine, catalog)
    run_id = result["run_id"]
    assert result["status"] == "succeeded"
    spans = recorded.spans(run_id)

    extract = _attempts(spans, "extract")
    assert sorted(extract) == [1, 2]
    first, second = extract[1], extract[2]
    # the failed attempt's span comes from the next attempt's submit (`previous`), with what it ran
    assert first.attributes["tower.outcome"] == "failed"
    assert first.attributes["tower.remote_id"], "the failed attempt's remote run is named"
    assert first.attributes["tower.remote_id"] != second.attributes["tower.remote_id"]
    assert first.status.status_code.name == "ERROR"
    # the last attempt's span comes from the report
    assert second.attributes["tower.outcome"] == "succeeded"
    assert second.attributes["tower.remote_id"] == result["services"]["extract"]["remote_id"]
    assert sorted(_attempts(spans, "load")) == [1]

    # every platform call is a child of its attempt's span, and each attempt was submitted once
    attempt_ids = {(s.attributes["tower.service"], s.attributes["tower.attempt"]): s.context.span_id
                   for s in spans if s.name.startswith("service ")}
    calls = [s for s in spans if s.name.startswith("sim ")]
    submits = sorted((s.attributes["tower.service"], s.attributes["tower.attempt"])
                     for s in calls if s.name == "sim submit")
    assert submits == [("extract", 1), ("extract", 2), ("load", 1)]
    for call in calls:
        key = (call.attributes["tower.service"], call.attributes["tower.attempt"])
        assert call.parent.span_id == attempt_ids[key], f"{call.name} of {key} is not under its attempt"
        assert call.context.trace_id == int(telemetry.trace_id(run_id), 16)

    finished = recorded.events(telemetry.SERVICE_FINISHED, run_id)
    assert sorted((e["service"], e["status"], e["attempts"]) for e in finished) == [
        ("extract", "succeeded", "2"), ("load", "succeeded", "1")]
    assert [e["status"] for e in recorded.events(telemetry.RUN_FINISHED, run_id)] == ["succeeded"]


def test_a_service_end_the_reconcile_records_is_told_as_the_service_of_its_run(engine, recorded):
    plan = build_plan(sim_catalog({"long": {"duration": 30}}), "p", run_id=f"told-{uuid.uuid4().hex[:6]}")
    plan["reconcile_after"] = 0.3
    engine.start_new(names.PIPELINE_RUN, plan["run_id"], json.dumps(store_run(plan)))
    instance = service_instance_id(plan["run_id"], "long")
    deadline = time.monotonic() + 10
    while (engine.status(instance) or {}).get("runtimeStatus") != "Running":
        assert time.monotonic() < deadline, "the service run did not start"
        time.sleep(0.02)
    engine.terminate(instance, "stopped by an operator")
    assert result_of(engine, plan["run_id"], 15)["status"] == "failed"

    [event] = recorded.events(telemetry.SERVICE_FINISHED, plan["run_id"])
    assert (event["service"], event["status"]) == ("long", "failed")
    assert event["error_class"] == "service_run"
    assert [e["status"] for e in recorded.events(telemetry.RUN_FINISHED, plan["run_id"])] == ["failed"]
