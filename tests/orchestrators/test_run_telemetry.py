"""What a run on the local engine tells telemetry, read in this process from in-memory exporters.

`tests/test_telemetry.py` checks what reaches Application Insights' ingestion, through `tower run`
in a process of its own (the distro installs process-wide providers). Here the same `Telemetry`
runs over OpenTelemetry SDK providers of the test's own, installed for one test, so the spans and
events of the activities on the engine are read where they are made (the `recorded` fixture): the
service attempts and which attempt each platform call belongs to. (The end of a service run that a
reconcile records is checked in test_terminated_service_run.py.)
"""

from __future__ import annotations

from tower import telemetry

from .conftest import run, sim_catalog


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
    assert sorted((e["service"], e["status"], e["attempts"], e["pipeline"]) for e in finished) == [
        ("extract", "succeeded", "2", "p"), ("load", "succeeded", "1", "p")]
    assert {s.attributes["tower.pipeline"] for s in spans if s.name.startswith("service ")} == {"p"}
    assert [e["status"] for e in recorded.events(telemetry.RUN_FINISHED, run_id)] == ["succeeded"]
