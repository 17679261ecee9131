"""A service whose endpoint is not there fails at once, saying where it tried to connect."""

import pytest

from tests.ports import free_port
from tower.errors import RetryableError
from tower.platforms import adapter_for
from tower.platforms.base import Submission


def submission(spec):
    return Submission(run_id="r-1", service="score", attempt=1, spec=spec)


def test_a_refused_http_connection_is_not_retried_inside_the_call(monkeypatch):
    from tower.platforms import http

    waits = []
    monkeypatch.setattr(http.time, "sleep", waits.append)
    port = free_port()  # nothing listens there
    adapter = adapter_for("http", {"base_url": f"http://127.0.0.1:{port}", "max_retries": 4})
    with pytest.raises(RetryableError) as caught:
        adapter.submit(submission({"path": "/scores"}))
    assert waits == []  # Tower's retries, with their backoff, decide: not four quick ones in here
    assert f"connection refused by 127.0.0.1:{port}" in str(caught.value)


def test_an_unknown_http_host_is_named(monkeypatch):
    from tower.platforms import http

    waits = []
    monkeypatch.setattr(http.time, "sleep", waits.append)
    adapter = adapter_for("http", {"base_url": "http://no-such-host.invalid:8080"})
    with pytest.raises(RetryableError) as caught:
        adapter.submit(submission({"path": "/scores"}))
    assert waits == [] and "no address for host 'no-such-host.invalid'" in str(caught.value)


def test_a_snowflake_connection_error_names_the_host_and_port():
    port = free_port()  # nothing listens there
    adapter = adapter_for("snowflake", {"account": "fakesnow", "user": "tower", "password": "not-a-secret",
                                        "host": "127.0.0.1", "port": port, "protocol": "http", "login_timeout": 5})
    with pytest.raises(RetryableError) as caught:
        adapter.submit(submission({"sql": "SELECT 1"}))
    assert f"connecting to http://127.0.0.1:{port}, account fakesnow" in str(caught.value)
    assert "not-a-secret" not in str(caught.value)
