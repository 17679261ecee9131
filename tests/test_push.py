"""Push completion on the real app under the local host: the Databricks stand-in calls
POST /api/notify/databricks when a job run ends (a notification destination of type webhook), and
the service run polls at once instead of at its next timer, minutes away."""

from __future__ import annotations

import json
import textwrap
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import start_app_host
from tests.platforms import jobs_api_server as jobs
from tower.local.host import Host
from tower.timestamps import parse_iso

REPO = Path(__file__).resolve().parents[1]
TOKEN = "dapi-push-test-token"
CATALOG = """
platforms:
  dbx: {type: databricks, host: "${TEST_PUSH_DBX_HOST}", token: "${TEST_PUSH_DBX_TOKEN}"}
  api: {type: http, base_url: "${TEST_PUSH_API_URL:-http://127.0.0.1:9}"}
services:
  ingest: {platform: dbx, job_id: 41, expected_duration: 20m}
  report: {platform: dbx, job_id: 42, expected_duration: 20m, depends_on: [ingest]}
  publish: {platform: dbx, job_id: 42, expected_duration: 20m, depends_on: [build]}
  build: {platform: api, path: /jobs, body: {polls: 100000}, expected_duration: 20m}
pipelines:
  nightly: {services: [ingest, report]}
  api: {services: [build, publish]}
"""


@pytest.fixture
def databricks(monkeypatch):
    jobs.without_ambient_auth(monkeypatch)
    server, api = jobs.start(TOKEN)
    monkeypatch.setenv("TEST_PUSH_DBX_HOST", jobs.url_of(server))
    monkeypatch.setenv("TEST_PUSH_DBX_TOKEN", TOKEN)
    api.jobs[41] = api.jobs[42] = jobs.RUNS_FOREVER     # they end when the test says so (api.end)
    yield api
    server.shutdown()
    server.server_close()


@pytest.fixture
def host(tmp_path, monkeypatch, databricks):
    local = start_app_host(tmp_path, monkeypatch, CATALOG)
    databricks.webhook = f"{local.base_url}/api/notify/databricks"
    monkeypatch.setenv("TOWER_CALLBACK_URL", f"{local.base_url}/api")   # as `tower serve` sets it
    yield local
    local.stop()


def _call(host: Host, method: str, path: str, body: dict | None = None) -> tuple[int, dict]:
    data = json.dumps(body).encode() if body is not None else (b"" if method == "POST" else None)
    request = urllib.request.Request(host.base_url + path, method=method, data=data)
    try:
        with urllib.request.urlopen(request, timeout=15) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def _wait_for(condition, seconds: float, what: str):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"{what} within {seconds} s")


def _run_of_job(api, job_id: int) -> int:
    with api.lock:
        return next((run.run_id for run in api.runs.values() if run.job_id == job_id), None)


@pytest.mark.parametrize("task_level", [False, True], ids=["set-on-the-job", "set-on-its-task"])
def test_a_webhook_makes_the_service_run_see_the_end_at_once_and_submit_its_dependent(host, databricks, task_level):
    databricks.task_level = task_level  # a task's notification names the job's run as its parent
    status, started = _call(host, "POST", "/api/runs/nightly", {})
    assert status == 202, started
    ingest = _wait_for(lambda: _run_of_job(databricks, 41), 20, "ingest was not submitted")
    time.sleep(1.0)              # its service run now waits on a timer: the next poll is minutes away
    ended = time.monotonic()
    databricks.end(ingest)       # the job ends and Databricks calls the webhook
    assert databricks.notified == [(ingest, 202)]
    report = _wait_for(lambda: _run_of_job(databricks, 42), 30, "report was not submitted after the webhook")
    assert time.monotonic() - ended < 20.0   # long before ingest's next poll (about 4 minutes on)
    databricks.end(report)
    run = _wait_for(lambda: (lambda r: r if r[1].get("status") == "succeeded" else None)(
        _call(host, "GET", f"/api/runs/{started['run_id']}")), 30, "the run did not succeed")[1]
    ingest_end = parse_iso(run["services"]["ingest"]["finished"])
    report_start = parse_iso(run["services"]["report"]["started"])
    assert (report_start - ingest_end).total_seconds() >= 0


def test_a_notification_about_a_run_tower_never_submitted_is_refused(host, databricks, caplog):
    status, body = _call(host, "POST", "/api/notify/databricks",
                         {"event_type": "jobs.on_success", "run": {"run_id": 424242}, "job": {"job_id": 41}})
    assert status == 404 and "424242" in body["error"]
    assert any("refused a notification about Databricks run 424242" in r.getMessage() for r in caplog.records)


def test_a_start_notification_wakes_nobody(host, databricks):
    status, body = _call(host, "POST", "/api/notify/databricks",
                         {"event_type": "jobs.on_start", "run": {"run_id": 1000}, "job": {"job_id": 41}})
    assert status == 202 and body["woken"] is False


def test_check_webhooks_lists_the_jobs_that_do_not_notify_tower(tmp_path, monkeypatch, databricks, capsys):
    from tower.cli.main import main

    catalog = tmp_path / "catalog.yaml"
    catalog.write_text(textwrap.dedent(CATALOG))
    destination = "6f0e1d2c-tower"
    databricks.notifications[41] = {"on_success": [{"id": destination}], "on_failure": [{"id": destination}]}
    databricks.notifications[42] = {"on_success": [{"id": destination}], "on_failure": [{"id": "someone-else"}]}
    code = main(["--catalog", str(catalog), "databricks", "check-webhooks", "--destination", destination, "--json"])
    out = json.loads(capsys.readouterr().out)
    assert code == 1
    assert out["checked"] == 2 and out["missing"] == [
        {"job_id": 42, "platform": "dbx", "services": ["publish", "report"], "missing": ["on_failure"]}]
    databricks.notifications[42]["on_failure"].append({"id": destination})
    assert main(["--catalog", str(catalog), "databricks", "check-webhooks", "--destination", destination]) == 0
    assert "2 Databricks jobs checked, 0 missing" in capsys.readouterr().out


@pytest.fixture
def service(monkeypatch):
    from tests.platforms.async_http_service import AsyncHttpService

    running = AsyncHttpService().start()
    running.state.retry_after = "600"       # "look again in 10 minutes"
    monkeypatch.setenv("TEST_PUSH_API_URL", running.url)
    yield running
    running.stop()


def test_an_http_service_calling_back_makes_the_service_run_see_the_end_at_once(service, host, databricks):
    status, started = _call(host, "POST", "/api/runs/api", {})
    assert status == 202, started
    job = _wait_for(lambda: next(iter(service.state.jobs), None), 20, "build was not submitted")
    callback = service.state.jobs[job].callback
    assert callback.startswith(f"{host.base_url}/api/notify/http/")
    time.sleep(1.0)              # its service run now waits on a timer: Retry-After 600 s
    ended = time.monotonic()
    service.finish(job)
    assert service.state.called_back == [(job, 202)]
    _wait_for(lambda: _run_of_job(databricks, 42), 30, "publish was not submitted after the callback")
    assert time.monotonic() - ended < 20.0   # long before the next poll (10 minutes on)
    assert _call(host, "POST", callback.removeprefix(host.base_url).replace("/http/", "/http/x"))[0] == 404
