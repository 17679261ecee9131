"""The Databricks adapter's details: the whole Status of each run state (message, url, retryable), the
webhooks a job notifies (for push completion), and the managed-identity headers."""

from __future__ import annotations

import pytest

from tests.platforms import jobs_api_server as jobs
from tower.errors import NonRetryableError
from tower.platforms import adapter_for
from tower.platforms.base import Status, Submission
from tower.platforms.databricks import status_from_run
from tower.states import RemoteState

TOKEN = "dapi-details-test-token"
PAGE = "https://adb-1.azuredatabricks.net/#job/11/run/1000"


@pytest.fixture(autouse=True)
def _no_ambient_databricks_auth(monkeypatch):
    jobs.without_ambient_auth(monkeypatch)


@pytest.fixture
def server():
    srv, api = jobs.start(TOKEN)
    yield srv, api
    srv.shutdown()
    srv.server_close()


@pytest.mark.parametrize(("life_cycle", "result", "message", "expected"), [
    (None, None, "waiting for cluster", Status(RemoteState.RUNNING, message="waiting for cluster", url=PAGE)),
    ("QUEUED", None, "", Status(RemoteState.RUNNING, url=PAGE)),
    ("SKIPPED", None, "", Status(RemoteState.SKIPPED, message="run skipped by Databricks", url=PAGE)),
    ("SKIPPED", None, "An active run exists", Status(RemoteState.SKIPPED, message="An active run exists", url=PAGE)),
    ("INTERNAL_ERROR", None, "", Status(RemoteState.FAILED, message="Databricks internal error", retryable=True, url=PAGE)),
    ("TERMINATED", "SUCCESS", "", Status(RemoteState.SUCCEEDED, url=PAGE)),
    ("TERMINATED", "SUCCESS", "all good", Status(RemoteState.SUCCEEDED, message="all good", url=PAGE)),
    ("TERMINATED", "FAILED", "", Status(RemoteState.FAILED, message="run ended FAILED", retryable=True, url=PAGE)),
    ("TERMINATED", "CANCELED", "", Status(RemoteState.CANCELLED, message="run ended CANCELED", url=PAGE)),
    ("TERMINATED", "TIMEDOUT", "Run timed out after 3600 s",
     Status(RemoteState.FAILED, message="Run timed out after 3600 s", retryable=True, url=PAGE)),
    ("TERMINATED", "TIMEDOUT", "Cluster lost",
     Status(RemoteState.FAILED, message="run timed out (the job's own timeout): Cluster lost", retryable=True, url=PAGE)),
    ("TERMINATED", "TIMEDOUT", "",
     Status(RemoteState.FAILED, message="run timed out (the job's own timeout): run ended TIMEDOUT", retryable=True, url=PAGE)),
    ("TERMINATED", "SOMETHING_NEW", "", Status(RemoteState.FAILED, message="run ended in state TERMINATED/SOMETHING_NEW", url=PAGE)),
    ("BROKEN", None, "it broke", Status(RemoteState.FAILED, message="it broke", url=PAGE)),
])
def test_every_run_state_maps_to_a_whole_status(life_cycle, result, message, expected):
    assert status_from_run(life_cycle, result, message, PAGE) == expected


def test_webhooks_names_the_destinations_a_job_calls_on_success_and_on_failure(server):
    srv, api = server
    api.jobs[42] = jobs.SUCCEEDS
    api.notifications[42] = {"on_success": [{"id": "tower"}, {"id": "team"}], "on_failure": [{"id": "tower"}],
                             "on_start": [{"id": "ignored"}]}
    api.jobs[43] = jobs.SUCCEEDS          # notifies nobody
    adapter = adapter_for("databricks", {"host": jobs.url_of(srv), "token": TOKEN})
    assert adapter.webhooks(42) == {"on_success": {"tower", "team"}, "on_failure": {"tower"}}
    assert adapter.webhooks(43) == {"on_success": set(), "on_failure": set()}
    with pytest.raises(NonRetryableError, match="Databricks get of job 44 failed: Job 44 does not exist"):
        adapter.webhooks(44)


class _Credential:
    """Stands in for the credential azure-identity builds (Entra ID is not reachable here)."""

    def __init__(self, client_id, fail=False):
        self.client_id, self.fail, self.scopes = client_id, fail, []

    def get_token(self, scope):
        if self.fail:
            from azure.core.exceptions import ClientAuthenticationError

            raise ClientAuthenticationError("no managed identity endpoint")
        self.scopes.append(scope)
        return type("Token", (), {"token": TOKEN})()


def test_managed_identity_uses_the_configured_client_id_and_names_the_workspace(server, monkeypatch):
    from tower.platforms import _auth

    built = []
    monkeypatch.setattr(_auth, "_credential", lambda client_id: built.append(_Credential(client_id)) or built[-1])
    srv, api = server
    api.jobs[11] = jobs.SUCCEEDS
    adapter = adapter_for("databricks", {"host": jobs.url_of(srv), "auth": "managed_identity", "client_id": "uami-1",
                                         "azure_resource_id": "/subscriptions/s/resourceGroups/g/ws"})
    adapter.submit(Submission(run_id="r", service="ingest", attempt=1, spec={"job_id": 11}))
    assert {credential.client_id for credential in built} == {"uami-1"}
    assert api.resource_ids and set(api.resource_ids) == {"/subscriptions/s/resourceGroups/g/ws"}


def test_a_managed_identity_without_a_token_is_a_databricks_error_that_is_not_retried(server, monkeypatch):
    from tower.platforms import _auth

    monkeypatch.setattr(_auth, "_credential", lambda client_id: _Credential(client_id, fail=True))
    srv, api = server
    api.jobs[11] = jobs.SUCCEEDS
    adapter = adapter_for("databricks", {"host": jobs.url_of(srv), "auth": "managed_identity"})
    with pytest.raises(NonRetryableError) as raised:
        adapter.submit(Submission(run_id="r", service="ingest", attempt=1, spec={"job_id": 11}))
    assert raised.value.platform == "databricks"
    assert "could not get an Azure token for audience '2ff814a6-3304-4ab8-85cb-cd0e6f879c1d'" in str(raised.value)
    assert not api.runs


def test_a_managed_identity_wins_over_a_token_left_in_the_settings(server, monkeypatch):
    from tower.platforms import _auth

    monkeypatch.setattr(_auth, "_credential", lambda client_id: _Credential(client_id))
    srv, api = server
    api.jobs[11] = jobs.SUCCEEDS
    adapter = adapter_for("databricks", {"host": jobs.url_of(srv), "auth": "managed_identity", "token": "dapi-stale"})
    assert adapter.submit(Submission(run_id="r", service="ingest", attempt=1, spec={"job_id": 11})).remote_id


def test_a_run_now_that_fails_names_the_job_and_service_and_a_submit_is_logged(server, caplog):
    import logging

    caplog.set_level(logging.INFO, logger="tower.platforms.databricks")
    srv, api = server
    api.jobs[11] = jobs.SUCCEEDS
    adapter = adapter_for("databricks", {"host": jobs.url_of(srv), "token": TOKEN})
    handle = adapter.submit(Submission(run_id="r", service="ingest", attempt=1, spec={"job_id": 11}))
    assert f"service ingest: Databricks job 11 run {handle.remote_id}" in caplog.messages
    with pytest.raises(NonRetryableError) as caught:
        adapter.submit(Submission(run_id="r", service="ingest", attempt=1, spec={"job_id": 44}))
    assert str(caught.value) == "Databricks run-now of job 44 for service 'ingest' failed: Job 44 does not exist."
    assert caught.value.platform == "databricks"


def test_the_timeouts_of_the_settings_reach_the_sdk_client(server):
    """The SDK's `Config` takes names it does not know without a word: a misspelt one would leave
    its own default in place, so the client's config is read back (text from ${VAR}s included)."""
    srv, api = server
    settings = {"host": jobs.url_of(srv), "token": TOKEN}
    configured = adapter_for("databricks", {**settings, "http_timeout": "5", "retry_timeout": "7"})._workspace().config
    assert (configured.http_timeout_seconds, configured.retry_timeout_seconds) == (5.0, 7)
    default = adapter_for("databricks", settings)._workspace().config
    assert (default.http_timeout_seconds, default.retry_timeout_seconds) == (30.0, 60)


def test_a_run_without_a_life_cycle_state_yet_is_running_with_its_message(server):
    srv, api = server
    api.jobs[11] = [(None, None, "waiting for a cluster")]
    adapter = adapter_for("databricks", {"host": jobs.url_of(srv), "token": TOKEN})
    handle = adapter.submit(Submission(run_id="r", service="ingest", attempt=1, spec={"job_id": 11}))
    page = f"{jobs.url_of(srv)}/#job/11/run/{handle.remote_id}"
    assert adapter.poll(handle) == Status(RemoteState.RUNNING, message="waiting for a cluster", url=page)


def test_a_poll_of_a_run_the_workspace_does_not_know_names_the_run(server):
    from tower.platforms.base import Handle

    srv, api = server
    adapter = adapter_for("databricks", {"host": jobs.url_of(srv), "token": TOKEN})
    with pytest.raises(NonRetryableError) as caught:
        adapter.poll(Handle(remote_id="999"))
    assert str(caught.value) == "Databricks get_run of run 999 failed: Run 999 does not exist."
