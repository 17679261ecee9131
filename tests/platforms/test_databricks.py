"""The Databricks adapter with the real databricks-sdk against a local Jobs API server over HTTP."""

from __future__ import annotations

import time

import pytest

from tests.platforms import jobs_api_server as jobs
from tests.platforms.polling import poll_to_end
from tower.errors import NonRetryableError, RetryableError
from tower.platforms import adapter_for
from tower.platforms.base import Handle, Submission
from tower.platforms.databricks import idempotency_token, status_from_run
from tower.states import RemoteState

TOKEN = "dapi-local-test-token"


@pytest.fixture(autouse=True)
def _no_ambient_databricks_auth(monkeypatch):
    jobs.without_ambient_auth(monkeypatch)


@pytest.fixture(scope="module")
def server():
    srv, api = jobs.start(TOKEN)
    yield srv, api
    srv.shutdown()
    srv.server_close()


@pytest.fixture
def api(server):
    srv, api = server
    for table in (api.jobs, api.runs, api.tokens):
        table.clear()
    api.faults.clear()
    api.requests.clear()
    return api


@pytest.fixture
def adapter(server):
    return adapter_for("databricks", {"host": jobs.url_of(server[0]), "token": TOKEN, "retry_timeout": 20})


def submission(job_id=11, attempt=1, params=None, **spec):
    return Submission(run_id="nightly-20240101T023000-abc123", service="ingest_orders", attempt=attempt,
                      spec={"job_id": job_id, **spec}, params=params or {})


def test_success_walks_through_running_and_keeps_the_run_page_url(api, adapter):
    api.jobs[11] = jobs.SUCCEEDS
    handle = adapter.submit(submission(params={"day": "2024-01-01", "full": True},
                                       job_parameters={"env": "dev", "day": "old"}))
    status, seen = poll_to_end(adapter, handle)
    assert seen == [RemoteState.RUNNING, RemoteState.RUNNING, RemoteState.SUCCEEDED]
    assert status.url.endswith(f"/#job/11/run/{handle.remote_id}")
    run = api.runs[int(handle.remote_id)]
    assert run.parameters == {"env": "dev", "day": "2024-01-01", "full": "true"}  # run params win


def test_structured_params_reach_the_job_as_json_text(api, adapter):
    api.jobs[11] = jobs.SUCCEEDS
    handle = adapter.submit(submission(params={"filters": {"region": "emea"}, "days": [1, 2], "limit": None}))
    assert api.runs[int(handle.remote_id)].parameters == {
        "filters": '{"region": "emea"}', "days": "[1, 2]", "limit": "null"}


@pytest.mark.parametrize(
    ("script", "state", "retryable", "words"),
    [
        (jobs.FAILS, RemoteState.FAILED, True, "ZeroDivisionError"),       # ran and failed: the retry policy decides
        (jobs.TIMES_OUT, RemoteState.FAILED, True, "timed out"),
        (jobs.SKIPS, RemoteState.SKIPPED, False, "active run"),
        (jobs.BREAKS, RemoteState.FAILED, True, "Cluster terminated unexpectedly"),
    ],
    ids=["failed", "timedout", "skipped", "internal_error"],
)
def test_terminal_outcomes_keep_the_platform_message(api, adapter, script, state, retryable, words):
    api.jobs[11] = script
    status, _ = poll_to_end(adapter, adapter.submit(submission()))
    assert (status.state, status.retryable) == (state, retryable)
    assert words in status.message


def test_same_submission_twice_reattaches_to_the_same_run(api, adapter, server):
    api.jobs[11] = jobs.RUNS_FOREVER
    first = adapter.submit(submission())
    # A new process (new adapter, new SDK client) resubmitting after a crash.
    again = adapter_for("databricks", {"host": jobs.url_of(server[0]), "token": TOKEN}).submit(submission())
    next_attempt = adapter.submit(submission(attempt=2))
    assert again.remote_id == first.remote_id
    assert next_attempt.remote_id != first.remote_id
    assert len(api.runs) == 2


def test_long_keys_become_a_stable_64_character_token():
    key = "r" * 100
    assert idempotency_token(key) == idempotency_token(key)
    assert len(idempotency_token(key)) == 64
    assert idempotency_token("short/key/1") == "short/key/1"


def test_cancel_reaches_the_run_and_is_idempotent(api, adapter):
    api.jobs[11] = jobs.RUNS_FOREVER
    handle = adapter.submit(submission())
    assert adapter.poll(handle).state == RemoteState.RUNNING
    adapter.cancel(handle)
    adapter.cancel(handle)
    assert adapter.poll(handle).state == RemoteState.CANCELLED
    assert api.requests.count(("POST", "/api/2.2/jobs/runs/cancel")) == 2


def test_cancel_of_a_run_that_no_longer_exists_is_quiet(api, adapter):
    adapter.cancel(Handle(remote_id="987654"))
    assert ("POST", "/api/2.2/jobs/runs/cancel") in api.requests


@pytest.mark.slow
def test_429_and_503_bursts_on_poll_do_not_fail_the_run(api, adapter):
    api.jobs[11] = jobs.SUCCEEDS
    handle = adapter.submit(submission())
    api.fail_next("runs/get", [429, 429, 503], retry_after="0")
    started = time.monotonic()
    status, seen = poll_to_end(adapter, handle)
    assert status.state == RemoteState.SUCCEEDED
    assert seen == [RemoteState.RUNNING, RemoteState.RUNNING, RemoteState.SUCCEEDED]  # each throttled poll still got its answer
    assert api.requests.count(("GET", "/api/2.2/jobs/runs/get")) == 3 + 3
    assert time.monotonic() - started < 10


@pytest.mark.slow
def test_throttling_longer_than_the_retry_timeout_is_a_retryable_error(api, server):
    api.jobs[11] = jobs.SUCCEEDS
    adapter = adapter_for("databricks", {"host": jobs.url_of(server[0]), "token": TOKEN, "retry_timeout": 1})
    handle = adapter.submit(submission())
    api.fail_next("runs/get", [503] * 50, retry_after="1")
    started = time.monotonic()
    with pytest.raises(RetryableError, match="injected 503") as caught:
        adapter.poll(handle)
    assert time.monotonic() - started < 5  # bounded by retry_timeout, not by the outage
    assert caught.value.platform == "databricks"


def test_unknown_job_is_non_retryable_with_the_api_message(api, adapter):
    with pytest.raises(NonRetryableError, match="Job 404 does not exist"):
        adapter.submit(submission(job_id=404))


def test_bad_token_is_non_retryable_and_never_echoed(api, server):
    secret = "dapi-wrong-secret-value"
    adapter = adapter_for("databricks", {"host": jobs.url_of(server[0]), "token": secret})
    api.jobs[11] = jobs.SUCCEEDS
    with pytest.raises(NonRetryableError, match="Invalid access token") as caught:
        adapter.submit(submission())
    assert secret not in str(caught.value)


def test_job_id_that_is_not_a_number_names_the_service(adapter):
    with pytest.raises(NonRetryableError, match="service 'ingest_orders': field 'job_id'"):
        adapter.submit(submission(job_id="ingest"))


@pytest.mark.slow
def test_unreachable_workspace_is_retryable():
    adapter = adapter_for("databricks", {"host": "http://127.0.0.1:9", "token": TOKEN, "retry_timeout": 1})
    with pytest.raises(RetryableError):
        adapter.poll(Handle(remote_id="1"))


@pytest.mark.parametrize(
    ("life_cycle", "result", "state"),
    [("PENDING", None, RemoteState.RUNNING), ("QUEUED", None, RemoteState.RUNNING), ("TERMINATING", None, RemoteState.RUNNING),
     ("BLOCKED", None, RemoteState.RUNNING), ("TERMINATED", "CANCELED", RemoteState.CANCELLED),
     ("TERMINATED", "SUCCESS_WITH_FAILURES", RemoteState.SUCCEEDED), ("TERMINATED", "EXCLUDED", RemoteState.SKIPPED),
     ("TERMINATED", "SOMETHING_NEW", RemoteState.FAILED)],
)
def test_state_mapping(life_cycle, result, state):
    assert status_from_run(life_cycle, result, "", None).state == state


def test_managed_identity_sends_an_entra_token_and_the_workspace_resource_id(api, server):
    # Entra ID is not reachable here: stand in for the credential object azure-identity would build.
    from tower.platforms import _auth

    scopes = []

    class Credential:
        def get_token(self, scope):
            scopes.append(scope)
            return type("Token", (), {"token": TOKEN})()

    api.jobs[11] = jobs.SUCCEEDS
    adapter = adapter_for("databricks", {"host": jobs.url_of(server[0]), "auth": "managed_identity",
                                         "azure_resource_id": "/subscriptions/s/resourceGroups/g/ws"},
                          credentials=_auth.Credentials(make=lambda client_id: Credential()))
    assert adapter.poll(adapter.submit(submission())).state == RemoteState.RUNNING
    assert scopes and set(scopes) == {"2ff814a6-3304-4ab8-85cb-cd0e6f879c1d/.default"}
