"""A remote run that ran and failed is retried under the service's retry policy, as a new run with
its own idempotency key; a failure that a retry cannot fix is not."""

from __future__ import annotations

import json
import threading
import time
from datetime import datetime

import pytest

from tests.orchestrators.conftest import run_plan
from tests.platforms import jobs_api_server as jobs
from tower.catalog.model import Catalog, Pipeline, Platform, RetryPolicy, Service
from tower.runs.plan import build_plan

TOKEN = "dapi-retry-test-token"
JOB = 41


@pytest.fixture
def databricks(monkeypatch):
    jobs.without_ambient_auth(monkeypatch)
    monkeypatch.setenv("TOWER_TEST_RETRY_TOKEN", TOKEN)
    server, api = jobs.start(TOKEN)
    yield server, api
    server.shutdown()
    server.server_close()


def _plan(server, retries: int) -> dict:
    platform = Platform("dbx", "databricks", settings={"host": jobs.url_of(server), "token": "${TOWER_TEST_RETRY_TOKEN}"})
    service = Service("ingest", "dbx", retry=RetryPolicy(retries=retries, backoff=0.3, max_backoff=1.0),
                      expected_duration=1.0, spec={"job_id": JOB})
    catalog = Catalog("test.yaml", {"dbx": platform}, {"ingest": service}, {"p": Pipeline("p")})
    return build_plan(catalog, "p", run_id=f"retry-{datetime.now():%H%M%S%f}")


def _succeed_after_the_first_run(api) -> threading.Thread:
    def watch():
        deadline = time.monotonic() + 20
        while not api.runs and time.monotonic() < deadline:
            time.sleep(0.01)
        api.jobs[JOB] = jobs.SUCCEEDS            # runs created from now on succeed
    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    return thread


def test_a_failed_databricks_run_is_retried_as_a_new_run(engine, databricks):
    server, api = databricks
    api.jobs[JOB] = jobs.FAILS
    watcher = _succeed_after_the_first_run(api)
    result = run_plan(engine, _plan(server, retries=1))
    watcher.join(5)
    ingest = result["services"]["ingest"]
    assert (ingest["status"], ingest["attempts"]) == ("succeeded", 2)
    assert len(api.runs) == 2 and len(set(api.tokens)) == 2      # two runs, each with its own key
    assert ingest["remote_id"] == str(max(api.runs))


def test_without_retries_a_failed_run_fails_the_service_with_the_platform_message(engine, databricks):
    server, api = databricks
    api.jobs[JOB] = jobs.FAILS
    result = run_plan(engine, _plan(server, retries=0))
    ingest = result["services"]["ingest"]
    assert (ingest["status"], ingest["attempts"]) == ("failed", 1)
    assert "ZeroDivisionError" in ingest["error"] and len(api.runs) == 1


def test_an_unknown_job_is_never_retried(engine, databricks):
    server, api = databricks                      # no job JOB: "Job 41 does not exist."
    result = run_plan(engine, _plan(server, retries=3))
    ingest = result["services"]["ingest"]
    assert (ingest["status"], ingest["attempts"]) == ("failed", 1)
    assert "does not exist" in ingest["error"]


def test_a_failed_services_error_is_kept_with_the_hosts_secrets_masked(engine, databricks):
    server, api = databricks
    api.jobs[JOB] = [("RUNNING", None, ""), ("TERMINATED", "FAILED", f"could not log in with {TOKEN}")]
    result = run_plan(engine, _plan(server, retries=0))
    ingest = result["services"]["ingest"]
    assert ingest["status"] == "failed" and "could not log in with ***" in ingest["error"]
    assert TOKEN not in json.dumps(result) and TOKEN not in json.dumps(engine.status(result["run_id"]))

