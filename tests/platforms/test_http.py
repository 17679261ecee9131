"""The HTTP adapter against a local aiohttp service speaking the 202 pattern, over real connections."""

from __future__ import annotations

import time

import pytest

from tests.platforms.async_http_service import AsyncHttpService
from tests.platforms.polling import poll_to_end
from tower.errors import ConfigError, NonRetryableError, RetryableError
from tower.platforms import adapter_for
from tower.platforms.base import Submission
from tower.platforms.http import retry_after_seconds, safe_text, safe_url, value_at
from tower.states import RemoteState

RULES = {"status_path": "state.phase", "success_values": ["done"], "failure_values": ["failed"]}


@pytest.fixture(scope="module")
def service():
    svc = AsyncHttpService().start()
    yield svc
    svc.stop()


@pytest.fixture
def state(service):
    service.state.jobs.clear()
    service.state.by_key.clear()
    service.state.faults.clear()
    service.state.seen.clear()
    service.state.required_header = None
    return service.state


@pytest.fixture
def adapter(service):
    return adapter_for("http", {"base_url": service.url, "max_retry_wait": 5})


def sub(attempt=1, params=None, **spec):
    spec = {"path": "/jobs", **RULES, **spec}
    return Submission(run_id="adhoc-7", service="score_customers", attempt=attempt, spec=spec,
                      params=params or {})


def test_202_flow_to_success_passes_params_and_the_idempotency_key(state, adapter):
    handle = adapter.submit(sub(params={"day": "2024-01-01"}, body={"outcome": "succeed", "polls": 2}))
    status, states = poll_to_end(adapter, handle, limit=10)
    assert states == [RemoteState.RUNNING, RemoteState.RUNNING, RemoteState.SUCCEEDED]
    assert '"rows": 42' in status.output
    assert state.jobs[handle.remote_id].params == {"day": "2024-01-01"}
    post = next(headers for method, path, headers in state.seen if method == "POST")
    assert post["Idempotency-Key"] == "adhoc-7/score_customers/1"


def test_running_status_carries_retry_after_as_poll_after(state, adapter):
    handle = adapter.submit(sub(body={"polls": 1}))
    assert adapter.poll(handle).poll_after == 2.0


def test_202_flow_to_failure_keeps_the_service_message(state, adapter):
    status, _ = poll_to_end(adapter, adapter.submit(sub(body={"outcome": "fail", "polls": 1})), limit=10)
    assert (status.state, status.message, status.retryable) == (RemoteState.FAILED, "disk full on node 3", True)


def test_same_key_reattaches_to_the_same_job(state, adapter, service):
    first = adapter.submit(sub(body={"polls": 5}))
    again = adapter_for("http", {"base_url": service.url}).submit(sub(body={"polls": 5}))
    retry = adapter.submit(sub(attempt=2, body={"polls": 5}))
    assert again.remote_id == first.remote_id != retry.remote_id
    assert len(state.jobs) == 2


def test_cancel_reaches_the_service(state, adapter):
    handle = adapter.submit(sub(body={"polls": 100}, cancel_path="/cancel"))
    assert adapter.poll(handle).state == RemoteState.RUNNING
    adapter.cancel(handle)
    assert adapter.poll(handle).state == RemoteState.CANCELLED
    assert ("POST", f"/jobs/{handle.remote_id}/cancel") in [(m, p) for m, p, _ in state.seen]


def test_cancel_without_a_cancel_endpoint_calls_nothing(state, adapter):
    handle = adapter.submit(sub(body={"polls": 100}))
    calls = len(state.seen)
    adapter.cancel(handle)
    assert len(state.seen) == calls


def test_immediate_200_is_done_without_polling(state, adapter):
    handle = adapter.submit(sub(path="/sync", status_path="status"))
    calls = len(state.seen)
    status = adapter.poll(handle)
    assert status.state == RemoteState.SUCCEEDED and '"rows": 3' in status.output
    assert len(state.seen) == calls


def test_429_with_retry_after_is_honoured(state, adapter):
    state.faults.append(("/jobs", 429, "1"))
    started = time.monotonic()
    handle = adapter.submit(sub())
    assert time.monotonic() - started >= 1.0
    assert [p for m, p, _ in state.seen] == ["/jobs", "/jobs"]
    assert poll_to_end(adapter, handle, limit=10)[0].state == RemoteState.SUCCEEDED


def test_retry_after_beyond_the_bound_fails_retryable_at_once(state, adapter):
    state.faults.append(("/jobs", 429, "3600"))
    started = time.monotonic()
    with pytest.raises(RetryableError, match="answered 429"):
        adapter.submit(sub())
    assert time.monotonic() - started < 1.0


def test_5xx_on_poll_is_retried(state, adapter):
    handle = adapter.submit(sub(body={"polls": 0}))
    state.faults.extend([(f"/jobs/{handle.remote_id}", 503, None), (f"/jobs/{handle.remote_id}", 500, None)])
    assert adapter.poll(handle).state == RemoteState.SUCCEEDED
    assert [p for m, p, _ in state.seen].count(f"/jobs/{handle.remote_id}") == 3


def test_persistent_5xx_becomes_a_retryable_error(state, service):
    adapter = adapter_for("http", {"base_url": service.url, "max_retries": 1})
    state.faults.extend([("/jobs", 502, "0")] * 2)
    with pytest.raises(RetryableError, match="answered 502: .*injected 502"):
        adapter.submit(sub())


def test_4xx_is_non_retryable_with_the_body(state, adapter):
    with pytest.raises(NonRetryableError, match="answered 405"):
        adapter.submit(sub(path="/sync", method="PUT"))
    assert len(state.seen) == 1


def test_headers_from_settings_authenticate(state, service):
    state.required_header = ("X-Api-Key", "k-123")
    with pytest.raises(NonRetryableError, match="answered 401"):
        adapter_for("http", {"base_url": service.url}).submit(sub())
    keyed = adapter_for("http", {"base_url": service.url, "headers": {"X-Api-Key": "k-123"}})
    assert keyed.submit(sub()).remote_id.startswith("job-")


def test_unreachable_service_is_retryable():
    adapter = adapter_for("http", {"base_url": "http://127.0.0.1:9", "max_retries": 0})
    with pytest.raises(RetryableError, match="connection refused by 127.0.0.1:9"):
        adapter.submit(sub())


def test_helpers():
    assert safe_url("https://fn.example/runtime/webhooks/x?code=SECRET#f") == "https://fn.example/runtime/webhooks/x"
    assert value_at({"a": {"b": [{"c": 1}]}}, "a.b.0.c") == 1
    assert value_at({"a": 1}, "a.b") is None
    assert retry_after_seconds("7") == 7.0
    assert retry_after_seconds("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0
    assert retry_after_seconds("soon") is None


def test_managed_identity_token_is_sent_as_bearer(state, service):
    # Entra ID is not reachable here: stand in for the credential object azure-identity would build.
    from tower.platforms import _auth

    scopes = []

    class Credential:
        def get_token(self, scope):
            scopes.append(scope)
            return type("Token", (), {"token": "eyJ.fake.token"})()

    state.required_header = ("Authorization", "Bearer eyJ.fake.token")
    adapter = adapter_for("http", {"base_url": service.url, "auth": {"audience": "api://tower-scoring"}},
                          credentials=_auth.Credentials(make=lambda client_id: Credential()))
    assert adapter.submit(sub()).remote_id.startswith("job-")
    assert scopes == ["api://tower-scoring/.default"]


def test_202_without_a_status_url_is_a_clear_error(state, service, monkeypatch):
    state.faults.append(("/jobs", 202, None))
    with pytest.raises(NonRetryableError, match="answered 202 without a Location header"):
        adapter_for("http", {"base_url": service.url}).submit(sub())


def test_a_network_error_never_carries_the_url_query():
    # Function keys travel in the query (?code=...); requests puts the whole URL in its exceptions.
    adapter = adapter_for("http", {"base_url": "http://127.0.0.1:9", "max_retries": 0})
    with pytest.raises(RetryableError, match="connection refused") as caught:
        adapter.submit(sub(path="/jobs?code=SECRETKEY&x=1#frag"))
    assert "SECRETKEY" not in str(caught.value) and "frag" not in str(caught.value)
    assert "http://127.0.0.1:9/jobs" in str(caught.value)


def test_safe_text_drops_queries_in_every_form():
    url = "https://fn.example/api/run?code=K3Y(1)"
    assert safe_text("Invalid URL 'https://fn.example/api/run?code=K3Y(1)': no", url) == \
        "Invalid URL 'https://fn.example/api/run': no"
    assert "K3Y" not in safe_text("Max retries exceeded with url: /api/run?code=K3Y%281%29 (Caused by x)", url)


def test_remote_id_of_a_synchronous_answer_has_no_query(state, adapter):
    handle = adapter.submit(sub(path="/sync?code=SECRETKEY", status_path="status"))
    assert "SECRETKEY" not in handle.remote_id
    assert handle.remote_id.endswith("/sync")


def test_200_that_is_not_finished_and_has_no_status_url_is_a_clear_error(state, adapter):
    # /sync answers 200 {"status": "done"}; with other success words "done" reads as still running.
    with pytest.raises(NonRetryableError, match="answered 200 without a Location header and a status that is "
                                                r"not final \(done\): cannot follow it"):
        adapter.submit(sub(path="/sync", status_path="status", success_values=["finished"]))


def test_auth_without_an_audience_fails_when_the_adapter_is_built(service):
    with pytest.raises(ConfigError, match="'auth' needs an 'audience'"):
        adapter_for("http", {"base_url": service.url, "auth": {"audience": ""}})


def test_the_cancel_method_is_kept_upper_case(state, adapter):
    handle = adapter.submit(sub(body={"polls": 100}, cancel_path="/cancel", cancel_method="post"))
    assert handle.data["cancel"] == {"path": "/cancel", "method": "POST"}
