"""Telemetry to Application Insights (tower.telemetry), asserted on what reaches an ingestion endpoint.

A local stand-in takes the place of Application Insights' ingestion (tests/appinsights_standin.py);
runs go through `tower run` in a subprocess, because the distro installs process-wide providers that
must not leak into other tests.
"""

import hashlib
import json
import os
import socket
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

import pytest

from tests.appinsights_standin import IngestionStandIn
from tests.platforms import jobs_api_server as jobs
from tower import telemetry
from tower.contracts import (
    CancelRequest,
    PlatformEntry,
    PollRequest,
    ServiceReport,
    ServiceResult,
    SubmitRequest,
)
from tower.events import event_run_id
from tower.platforms.base import Handle, Submission
from tower.runs.plan import new_run_id, timed_run_id

REPO = Path(__file__).resolve().parents[1]
TOKEN = "dapi-telemetry-secret-42"
JOB_ID = 7

CATALOG = """\
platforms:
  lake: {{type: sim}}
  dbx: {{type: databricks, host: "{dbx}", token: "${{TOWER_TEST_DATABRICKS_TOKEN}}"}}
services:
  extract: {{platform: lake, expected_duration: 2s, duration: 0.05, fail_attempts: 1, retries: {{attempts: 1, backoff: 0.2}}}}
  load: {{platform: lake, expected_duration: 1s, depends_on: [extract], duration: 0.05}}
  ingest: {{platform: dbx, job_id: {job}, expected_duration: 5s}}
  publish: {{platform: lake, depends_on: [ingest]}}
pipelines:
  nightly: {{services: [extract, load, ingest, publish]}}
"""


def _env(work: Path, **extra) -> dict:
    env = {key: value for key, value in os.environ.items()
           if not key.startswith(("DATABRICKS_", "ARM_", "APPLICATIONINSIGHTS_", "OTEL_"))}
    env.update(PYTHONPATH=str(REPO), TOWER_HOME=str(work / "home"), TOWER_CATALOG=str(work / "catalog.yaml"),
               DATABRICKS_CONFIG_FILE="/nonexistent/databrickscfg", TOWER_TEST_DATABRICKS_TOKEN=TOKEN,
               TOWER_EVENTS_QUEUE="tower-events", **extra)
    env.pop("TOWER_HISTORY_TABLE_URL", None)
    env.pop("TOWER_LEDGER_TABLE_URL", None)
    return env


@pytest.fixture
def databricks(tmp_path):
    """A Jobs API stand-in whose job fails with a message that holds the (secret) token."""
    server, api = jobs.start(token=TOKEN)
    api.jobs[JOB_ID] = [("RUNNING", None, ""), ("TERMINATED", "FAILED", f"could not log in with {TOKEN}")]
    (tmp_path / "catalog.yaml").write_text(CATALOG.format(dbx=jobs.url_of(server), job=JOB_ID))
    yield tmp_path
    server.shutdown()
    server.server_close()


def _tower_run(work: Path, connection_string: str, timeout: float = 120) -> tuple[int, dict, str]:
    done = subprocess.run([sys.executable, "-m", "tower", "run", "nightly", "--json"], cwd=work,
                          env=_env(work, APPLICATIONINSIGHTS_CONNECTION_STRING=connection_string),
                          capture_output=True, text=True, timeout=timeout)
    assert "Traceback" not in done.stderr, done.stderr
    return done.returncode, json.loads(done.stdout), done.stderr


def _of(envelopes, kind: str) -> list[dict]:
    return [e for e in envelopes if e["name"] == f"Microsoft.ApplicationInsights.{kind}"]


def _base(envelope: dict) -> dict:
    return envelope["data"]["baseData"]


def _operation(envelope: dict) -> str:
    return envelope["tags"].get("ai.operation.id")


def _parent(envelope: dict) -> str | None:
    return envelope["tags"].get("ai.operation.parentId")


@pytest.mark.slow
def test_a_run_is_one_transaction_in_application_insights(databricks):
    with IngestionStandIn() as ingestion:
        code, result, _ = _tower_run(databricks, ingestion.connection_string)
    assert code == 1 and result["status"] == "failed"
    run_id = result["run_id"]
    operation = telemetry.trace_id(run_id)
    envelopes = ingestion.envelopes
    assert TOKEN not in json.dumps(envelopes)  # redacted everywhere, the failure included

    # the run: one request, failed, with its real start and duration
    (run,) = _of(envelopes, "Request")
    base = _base(run)
    assert base["name"] == "run nightly" and base["success"] is False
    assert base["id"] == f"{telemetry.run_span_id(run_id):016x}" and _parent(run) is None
    assert run["time"].startswith(result["started"][:19])
    props = base["properties"]
    assert props["tower.run_id"] == run_id and props["tower.status"] == "failed"
    assert (props["tower.services"], props["tower.failed"], props["tower.trigger"]) == ("4", "1", "manual")
    assert 0 < float(props["tower.critical_path_s"]) <= float(props["tower.duration_s"])

    # each service that ran: one span per attempt, under the run; a failure carries its error
    attempts = {}
    for dep in _of(envelopes, "RemoteDependency"):
        if _base(dep)["name"].startswith("service "):
            props = _base(dep)["properties"]
            attempts[props["tower.service"], int(props["tower.attempt"])] = dep
            assert _parent(dep) == base["id"] and _base(dep)["type"] == "InProc"
            assert _base(dep)["id"] == f"{telemetry.attempt_span_id(run_id, *list(attempts)[-1]):016x}"
    assert set(attempts) == {("extract", 1), ("extract", 2), ("load", 1), ("ingest", 1)}  # publish never ran
    retried, extracted = _base(attempts["extract", 1]), _base(attempts["extract", 2])
    assert retried["success"] is False and "simulated failure of attempt 1" in retried["properties"]["tower.error"]
    assert extracted["success"] is True and extracted["properties"]["tower.outcome"] == "succeeded"
    assert (extracted["properties"]["tower.platform"], extracted["properties"]["tower.expected_s"]) == ("lake", "2.0")
    assert attempts["extract", 1]["time"] < attempts["extract", 2]["time"]
    failure = _base(attempts["ingest", 1])
    assert failure["success"] is False
    assert failure["properties"]["tower.outcome"] == "failed"
    assert failure["properties"]["tower.error_class"] == "platform"
    assert "could not log in with ***" in failure["properties"]["tower.error"]
    assert failure["properties"]["tower.remote_id"] == result["services"]["ingest"]["remote_id"]

    # platform calls: dependency spans of their platform's type, under the attempt they belong to
    calls = [d for d in _of(envelopes, "RemoteDependency") if not _base(d)["name"].startswith("service ")]
    names = {_base(d)["name"] for d in calls}
    assert {"dbx submit", "dbx poll", "lake submit"} <= names
    ingest_calls = [d for d in calls if _base(d)["name"].startswith("dbx ")]
    assert {_base(d)["type"] for d in ingest_calls} == {"databricks"}
    assert {_parent(d) for d in ingest_calls} == {failure["id"]}
    assert {_parent(d) for d in calls} == {_base(a)["id"] for a in attempts.values()}  # every attempt made calls

    # custom events with the properties the workbook and alerts query
    events = {}
    for event in _of(envelopes, "Event"):
        events.setdefault(_base(event)["name"], []).append(_base(event)["properties"])
    (started,) = events["tower.run.started"]
    assert (started["run_id"], started["pipeline"], started["services"], started["deadline"]) == (
        run_id, "nightly", "4", "")
    assert started["expected_end"] > result["started"][:19]
    (finished,) = events["tower.run.finished"]
    assert (finished["status"], finished["succeeded"], finished["failed"], finished["upstream_failed"]) == (
        "failed", "2", "1", "1")
    assert finished["failed_services"] == "ingest" and finished["started"] == result["started"]
    ended = {e["service"]: e for e in events["tower.service.finished"]}
    assert set(ended) == {"extract", "load", "ingest"}
    assert (ended["ingest"]["status"], ended["ingest"]["platform"], ended["ingest"]["error_class"]) == (
        "failed", "dbx", "platform")
    assert ended["load"]["status"] == "succeeded" and ended["load"]["attempts"] == "1"
    assert ended["extract"]["status"] == "succeeded" and ended["extract"]["attempts"] == "2"

    # one operation id for the whole run: requests, dependencies and events alike
    about_run = _of(envelopes, "Request") + _of(envelopes, "RemoteDependency") + _of(envelopes, "Event")
    assert {_operation(e) for e in about_run} == {operation}
    assert all(e["tags"]["ai.cloud.role"] == "tower-local" for e in about_run)

    # logs carry the run and service as custom dimensions, in the run's operation
    logs = [e for e in _of(envelopes, "Message") if _base(e)["properties"].get("tower.run_id") == run_id]
    assert any(_base(e)["properties"].get("tower.service") == "ingest" and "Databricks job" in _base(e)["message"]
               for e in logs)
    assert {_operation(e) for e in logs} == {operation}


@pytest.mark.slow
def test_an_unreachable_endpoint_neither_fails_nor_holds_up_a_run(databricks):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    code, result, stderr = _tower_run(
        databricks, f"InstrumentationKey=00000000-0000-0000-0000-000000000000;IngestionEndpoint=http://127.0.0.1:{port}/")
    assert code == 1 and result["status"] == "failed"
    assert result["services"]["ingest"]["status"] == "failed"
    assert result["services"]["load"]["status"] == "succeeded"
    assert TOKEN not in stderr


TICK_SCRIPT = """
import sys, time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from tower import telemetry
from tower.local.host import Host, TimerState, load_app

home = Path(sys.argv[1])
home.mkdir(parents=True, exist_ok=True)
now = datetime.now(timezone.utc)
state = TimerState(home / "timers.db")  # a tick missed while the host was down: it fires on start
state.put("schedule_tick", now - timedelta(minutes=3), now - timedelta(minutes=1))
state.close()
host = Host(load_app(sys.argv[2]), home, port=0, log=lambda line: None).start()
try:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        runs = [r for r in host.engine.list(prefix="run~every@") if r.get("name") == "pipeline_run"]
        if runs and all(r["runtimeStatus"] == "Completed" for r in runs):
            break
        time.sleep(0.1)
    print(",".join(r["instanceId"] for r in runs), telemetry.enabled())
    telemetry.flush()
finally:
    host.stop()
"""


@pytest.mark.slow
def test_the_functions_app_reports_each_schedule_tick_and_the_runs_it_starts(tmp_path):
    (tmp_path / "catalog.yaml").write_text(
        "platforms:\n  lake: {type: sim}\nservices:\n  extract: {platform: lake, duration: 0.01}\n"
        "pipelines:\n  every: {services: [extract], schedule: '* * * * *'}\n")
    with IngestionStandIn() as ingestion:
        done = subprocess.run([sys.executable, "-c", TICK_SCRIPT, str(tmp_path / "home"), str(REPO / "function_app.py")],
                              cwd=tmp_path, env=_env(tmp_path, APPLICATIONINSIGHTS_CONNECTION_STRING=ingestion.connection_string),
                              capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    run_ids, enabled = done.stdout.split()
    assert enabled == "True" and run_ids.startswith("run~every@")  # function_app.py configured telemetry
    ticks = [_base(e)["properties"] for e in _of(ingestion.envelopes, "Event") if _base(e)["name"] == "tower.schedule.tick"]
    assert len(ticks) == 1 and ticks[0]["started"] == str(len(run_ids.split(",")))
    assert ticks[0]["at"].endswith("Z")
    (run,) = _of(ingestion.envelopes, "Request")
    assert _base(run)["properties"]["tower.trigger"] == "schedule"
    assert _operation(run) == telemetry.trace_id(_base(run)["properties"]["tower.run_id"])


GUARD_SCRIPT = """
from tower import telemetry
from tower.contracts import PlatformEntry
from tower.events import event_run_id
from tower.runs.plan import new_run_id, timed_run_id
assert telemetry.configure() and telemetry.configure()  # once per process: the second call is a no-op
telemetry.service_finished("r", "p", None)  # malformed on purpose: an emit that breaks is swallowed
telemetry.run_finished({"run_id": "r"})
telemetry.run_started({"run_id": "r"}, "not a time")
telemetry.attempt_failed(None)

class Broken:
    def submit(self, submission):
        raise ValueError("the platform said no")

adapter = telemetry.traced(Broken(), PlatformEntry("dbx", "databricks"), {"run_id": "r", "service": "s", "attempt": 1})
try:
    adapter.submit(None)
except ValueError as exc:
    print("raised:", exc)
telemetry.flush()
"""


@pytest.mark.slow
def test_telemetry_never_fails_its_caller_and_a_failed_platform_call_is_a_failed_dependency(tmp_path):
    with IngestionStandIn() as ingestion:
        done = subprocess.run([sys.executable, "-c", GUARD_SCRIPT], cwd=tmp_path, capture_output=True, text=True,
                              env=_env(tmp_path, APPLICATIONINSIGHTS_CONNECTION_STRING=ingestion.connection_string),
                              timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "raised: the platform said no"  # the caller sees the platform's own error
    (call,) = [e for e in _of(ingestion.envelopes, "RemoteDependency") if _base(e)["name"] == "dbx submit"]
    assert _base(call)["success"] is False and _base(call)["type"] == "databricks"
    assert _operation(call) == telemetry.trace_id("r")
    assert _parent(call) == f"{telemetry.attempt_span_id('r', 's', 1):016x}"
    assert not _of(ingestion.envelopes, "Request") and not _of(ingestion.envelopes, "Event")


def test_without_the_setting_nothing_is_configured_or_imported(tmp_path):
    """`tower validate` and `tower plan` never pay for the distro, even with the setting; without it
    `configure()` sets nothing up and imports nothing."""
    (tmp_path / "catalog.yaml").write_text(CATALOG.format(dbx="http://127.0.0.1:9", job=JOB_ID))
    script = (
        "import io, contextlib, os, sys\n"
        "from tower.cli.main import main\n"
        "with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):\n"
        "    codes = [main(['validate']), main(['plan', 'nightly'])]\n"
        "loaded = sorted(m for m in sys.modules if m.startswith(('azure.monitor', 'opentelemetry')))\n"
        "from tower import telemetry\n"
        "os.environ.pop('APPLICATIONINSIGHTS_CONNECTION_STRING', None)\n"
        "configured = telemetry.configure()\n"
        "after = sorted(m for m in sys.modules if m.startswith(('azure.monitor', 'opentelemetry')))\n"
        "print(codes, loaded, configured, telemetry.enabled(), after)\n"
    )
    env = _env(tmp_path, APPLICATIONINSIGHTS_CONNECTION_STRING="InstrumentationKey=x;IngestionEndpoint=http://127.0.0.1:9/")
    done = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[0, 0] [] False False []"


def test_the_trace_id_of_a_run_is_derived_from_its_run_id():
    run_id = "nightly-20261206T044000-abc123"
    assert telemetry.trace_id(run_id) == hashlib.sha256(run_id.encode()).hexdigest()[:32]
    assert telemetry.trace_id(run_id) != telemetry.trace_id(run_id + "x")
    assert telemetry.attempt_span_id(run_id, "a", 1) != telemetry.attempt_span_id(run_id, "a", 2)
    assert telemetry.attempt_span_id(run_id, "a", 1) != telemetry.run_span_id(run_id)


def test_platform_requests_name_their_run_service_and_attempt():
    handle = Handle("q-1")
    platform = PlatformEntry("wh", "snowflake")
    submission = Submission("r", "s", 2, {}, {})
    assert telemetry.about(SubmitRequest(platform, submission)) == {"run_id": "r", "service": "s", "attempt": 2}
    report = ServiceReport("r", "p", ServiceResult("s", attempts=3))
    assert telemetry.about(PollRequest(platform, handle, report)) == {"run_id": "r", "service": "s", "attempt": 3}
    assert telemetry.about(PollRequest(platform, handle, report.with_result(ServiceResult("s")))) == {
        "run_id": "r", "service": "s", "attempt": 1}  # not submitted yet: its first attempt
    assert telemetry.about(CancelRequest(platform, handle, "r", "s", 1)) == {"run_id": "r", "service": "s", "attempt": 1}
    assert telemetry.about(PollRequest(platform, handle)) is None  # no run to name


def test_entra_id_ingestion_uses_the_managed_identity_of_the_authentication_string(monkeypatch):
    import azure.identity

    made = []

    class Recorded(azure.identity.ManagedIdentityCredential):  # a real credential, its arguments noted
        def __init__(self, **kwargs):
            made.append(kwargs)
            super().__init__(**kwargs)

    monkeypatch.setattr(azure.identity, "ManagedIdentityCredential", Recorded)
    assert telemetry.ingestion_credential(None) is None
    assert telemetry.ingestion_credential("") is None
    client_id = "11111111-2222-3333-4444-555555555555"
    assert isinstance(telemetry.ingestion_credential(f"Authorization=AAD;ClientId={client_id}"), Recorded)
    assert isinstance(telemetry.ingestion_credential("authorization=AAD"), Recorded)  # system-assigned
    assert made == [{"client_id": client_id}, {}]
    with pytest.raises(ValueError, match="Authorization=AAD"):
        telemetry.ingestion_credential("Authorization=Key")


def test_error_classes_and_triggers():
    assert telemetry.error_class_of("succeeded", None) == ""
    assert telemetry.error_class_of("failed", "timed out after 10m") == "timeout"
    assert telemetry.error_class_of("failed", "HTTP 503 (gave up after 3 attempts)") == "retries_exhausted"
    assert telemetry.error_class_of("failed", "its service run ended terminated: x") == "service_run"
    assert telemetry.error_class_of("failed", "job failed") == "platform"
    assert telemetry.error_class_of("cancelled", "cancelled") == "cancelled"
    assert telemetry.trigger_of(timed_run_id("nightly", datetime(2026, 12, 6, 4, tzinfo=timezone.utc))) == "schedule"
    assert telemetry.trigger_of(event_run_id("nightly", "42")) == "event"
    assert telemetry.trigger_of(new_run_id("nightly", datetime(2026, 12, 6, 4, tzinfo=timezone.utc))) == "manual"
    assert telemetry.trigger_of("nightly-x", {"trigger": "api"}) == "api"


def test_emits_without_telemetry_do_nothing_and_never_raise():
    assert not telemetry.enabled()  # no test configures the distro in this process
    telemetry.service_finished(None, None, None)  # malformed on purpose: nothing is read when telemetry is off
    telemetry.run_finished({})
    telemetry.run_started({}, "")
    adapter = object()
    assert telemetry.traced(adapter, PlatformEntry("x", "sim"), {"run_id": "r"}) is adapter
