"""The HTTP adapter's details against a local HTTP server whose every answer the test sets (status,
headers, JSON): the whole Status each answer reads as, what a submit sends, where a cancel goes, and
how a failed call is reported."""

from __future__ import annotations

import json
import logging
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

import pytest

from tests.platforms.identity_endpoint import identity_endpoint
from tower.errors import NonRetryableError, RetryableError
from tower.platforms import adapter_for
from tower.platforms.base import Handle, Status, Submission
from tower.states import RemoteState


class _Handler(BaseHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass

    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length).decode() if length else ""
        path = urlsplit(self.path).path
        self.server.seen.append((self.command, self.path, dict(self.headers), body))
        replies = self.server.replies.get((self.command, path)) or [(404, {}, {"error": "no such thing"})]
        status, headers, document = replies.pop(0) if len(replies) > 1 else replies[0]
        if "delay" in headers:
            time.sleep(float(headers.pop("delay")))
        data = b"" if document is None else json.dumps(document).encode()
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = do_DELETE = do_PUT = _answer


@pytest.fixture
def server():
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    srv.replies, srv.seen = {}, []
    srv.base = f"http://127.0.0.1:{srv.server_address[1]}"
    threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    yield srv
    srv.shutdown()
    srv.server_close()


def answer(server, method, path, *replies):
    """Each (status, headers, JSON document or None), in turn; the last one sticks."""
    server.replies[(method, path)] = list(replies)


def submission(spec, callback=None):
    return Submission(run_id="r-1", service="score", attempt=1, spec=spec, params={"day": "mon"}, callback=callback)


def started(server, **settings):
    """An adapter and the handle of a job the server started (202, status at /status/1?sig=...)."""
    answer(server, "POST", "/start", (202, {"Location": "/status/1?sig=s3cr3t"}, {"id": "job-1"}))
    adapter = adapter_for("http", {"base_url": server.base, "max_retries": 0, **settings})
    return adapter, adapter.submit(submission({"path": "/start"}))


URL = "{base}/status/1"


@pytest.mark.parametrize(("reply", "expected"), [
    ((202, {"Retry-After": "3"}, None), Status(RemoteState.RUNNING, poll_after=3.0)),
    ((303, {"Location": "/results/1?sig=s3cr3t"}, None), Status(RemoteState.SUCCEEDED, output="result at /results/1")),
    ((300, {"Location": "/results/2"}, None), Status(RemoteState.SUCCEEDED, output="result at /results/2")),
    ((200, {}, {"status": "Succeeded"}), Status(RemoteState.SUCCEEDED, output='{"status": "Succeeded"}')),
    ((200, {}, {"rows": 3}), Status(RemoteState.SUCCEEDED, output='{"rows": 3}')),
    ((200, {}, {"status": "Failed", "error": {"code": "E42"}}),
     Status(RemoteState.FAILED, message='{"code": "E42"}', retryable=True, output='{"status": "Failed", "error": {"code": "E42"}}')),
    ((200, {}, {"status": "failure"}), Status(RemoteState.FAILED, message="service reported failure", retryable=True,
                                              output='{"status": "failure"}')),
    ((200, {}, {"status": "Canceled", "reason": "by an operator"}),
     Status(RemoteState.CANCELLED, message="by an operator", output='{"status": "Canceled", "reason": "by an operator"}')),
    ((200, {"Retry-After": "5"}, {"status": "Queued"}), Status(RemoteState.RUNNING, message="Queued", poll_after=5.0)),
    ((304, {}, None), Status(RemoteState.SUCCEEDED, output="result at ")),
    ((200, {}, None), Status(RemoteState.SUCCEEDED, output="")),
    ((200, {}, {"status": "cancelled"}), Status(RemoteState.CANCELLED, message="service reported cancelled",
                                               output='{"status": "cancelled"}')),
])
def test_each_answer_of_the_status_url_reads_as_a_whole_status_with_the_job_page(server, reply, expected):
    adapter, handle = started(server)
    answer(server, "GET", "/status/1", reply)
    url = URL.format(base=server.base)
    assert handle.url == url and handle.remote_id == "job-1"
    assert adapter.poll(handle) == Status(**{**expected.to_json(), "url": url})


def test_a_status_path_past_the_end_of_a_list_reads_as_no_status(server):
    adapter, handle = started(server)
    answer(server, "GET", "/status/1", (200, {}, {"runs": [{"state": "failed"}, {"state": "failed"}]}))
    rules = {"status_path": "runs.2.state"}
    polled = adapter.poll(Handle(handle.remote_id, handle.url, {**handle.data, "rules": rules}))
    assert polled.state == RemoteState.SUCCEEDED


def test_failure_and_cancel_words_are_the_services_own_when_it_gives_them(server):
    answer(server, "POST", "/start", (202, {"Location": "/status/1"}, None))
    adapter = adapter_for("http", {"base_url": server.base})
    spec = {"path": "/start", "failure_values": ["broke"], "cancelled_values": ["dropped"]}
    handle = adapter.submit(submission(spec))
    answer(server, "GET", "/status/1", (200, {}, {"status": "BROKE"}), (200, {}, {"status": "Dropped"}),
           (200, {}, {"status": "failed"}))
    assert [adapter.poll(handle).state for _ in range(3)] == [RemoteState.FAILED, RemoteState.CANCELLED, RemoteState.RUNNING]  # "failed" is not theirs


def test_a_durable_functions_starter_is_followed_by_its_status_query_uri(server):
    answer(server, "POST", "/api/orchestrators/score",
           (202, {}, {"id": "abc", "statusQueryGetUri": "/runtime/webhooks/durabletask/instances/abc?code=k"}))
    adapter = adapter_for("http", {"base_url": server.base})
    handle = adapter.submit(submission({"path": "/api/orchestrators/score"}))
    assert handle.data["status_url"] == f"{server.base}/runtime/webhooks/durabletask/instances/abc?code=k"
    assert handle.url == f"{server.base}/runtime/webhooks/durabletask/instances/abc"


def test_a_submit_sends_json_with_params_the_services_headers_and_its_key(server, caplog):
    caplog.set_level(logging.INFO, logger="tower.platforms.http")
    adapter, handle = started(server, headers={"X-Team": "data"})
    method, path, headers, body = server.seen[0]
    assert (method, path, json.loads(body)) == ("POST", "/start", {"params": {"day": "mon"}})
    assert (headers["Accept"], headers["X-Team"], headers["Idempotency-Key"]) == ("application/json", "data", "r-1/score/1")
    assert "Tower-Callback" not in headers
    assert f"service score: HTTP job at {server.base}/status/1" in caplog.messages
    assert "s3cr3t" not in caplog.text


@pytest.mark.parametrize("method", ["get", "DELETE"])
def test_a_submit_without_a_body_sends_none(server, method):
    answer(server, method.upper(), "/run", (200, {}, {"status": "done"}))
    adapter = adapter_for("http", {"base_url": server.base + "/"})
    handle = adapter.submit(submission({"path": "/run", "method": method, "headers": {"X-Count": 3}}))
    assert adapter.poll(handle).state == RemoteState.SUCCEEDED
    [(sent, path, headers, body)] = server.seen
    assert (sent, path, body, headers["X-Count"]) == (method.upper(), "/run", "", "3")


def test_a_service_url_is_used_as_it_is_and_a_service_without_one_is_named(server):
    answer(server, "POST", "/elsewhere", (200, {}, {"status": "done"}))
    adapter = adapter_for("http", {"base_url": "http://127.0.0.1:9/unused"})
    adapter.submit(submission({"url": f"{server.base}/elsewhere"}))
    assert server.seen[0][1] == "/elsewhere"
    with pytest.raises(NonRetryableError) as caught:
        adapter.submit(submission({"method": "POST"}))
    assert (str(caught.value), caught.value.platform) == ("service 'score': needs 'path' or 'url'", "http")


def test_202_without_anywhere_to_follow_is_a_clear_error(server):
    answer(server, "POST", "/start", (202, {}, None))
    adapter = adapter_for("http", {"base_url": server.base})
    with pytest.raises(NonRetryableError) as caught:
        adapter.submit(submission({"path": "/start"}))
    assert str(caught.value) == f"HTTP service {server.base}/start answered 202 without a Location header: cannot follow it"
    assert caught.value.platform == "http"
    long = "queued behind " + "x" * 200
    answer(server, "POST", "/start", (200, {}, {"status": long}))
    with pytest.raises(NonRetryableError) as caught:
        adapter.submit(submission({"path": "/start"}))
    assert str(caught.value).endswith(f"answered 200 without a Location header and a status that is not final "
                                      f"({long[:100]}): cannot follow it")


def test_a_cancel_method_alone_is_sent_to_the_status_url_itself(server):
    answer(server, "POST", "/start", (202, {"Location": "/status/1/?sig=s3cr3t"}, None))
    adapter = adapter_for("http", {"base_url": server.base})
    handle = adapter.submit(submission({"path": "/start", "cancel_method": "delete"}))
    answer(server, "DELETE", "/status/1", (202, {}, None))
    adapter.cancel(handle)
    assert server.seen[-1][:2] == ("DELETE", "/status/1")


def test_a_cancel_path_is_joined_to_the_status_url_without_its_query(server):
    answer(server, "POST", "/start", (202, {"Location": "/status/1/?sig=s3cr3t"}, None))
    adapter = adapter_for("http", {"base_url": server.base})
    handle = adapter.submit(submission({"path": "/start", "cancel_path": "/cancel"}))
    answer(server, "POST", "/status/1/cancel", (202, {}, None))
    adapter.cancel(handle)
    assert server.seen[-1][:2] == ("POST", "/status/1/cancel")


@pytest.mark.parametrize("code", [404, 409, 410])
def test_a_cancel_of_a_job_that_is_gone_or_over_is_quiet(server, code):
    answer(server, "POST", "/start", (202, {"Location": "/status/1"}, None))
    adapter = adapter_for("http", {"base_url": server.base, "max_retries": 0})
    handle = adapter.submit(submission({"path": "/start", "cancel_path": "/cancel"}))
    answer(server, "POST", "/status/1/cancel", (code, {}, {"error": "already over"}))
    adapter.cancel(handle)
    assert server.seen[-1][:2] == ("POST", "/status/1/cancel")


def test_an_absolute_https_cancel_url_is_called_as_it_is(server):
    closed = "https://127.0.0.1:9/jobs/1/cancel"      # nothing listens on port 9 (discard): refused
    answer(server, "POST", "/start", (202, {"Location": "/status/1"}, None))
    adapter = adapter_for("http", {"base_url": server.base, "max_retries": 0})
    handle = adapter.submit(submission({"path": "/start", "cancel_path": closed}))
    with pytest.raises(RetryableError, match="connection refused by 127.0.0.1:9"):
        adapter.cancel(handle)


def test_a_cancel_without_an_endpoint_says_so(server, caplog):
    caplog.set_level(logging.INFO, logger="tower.platforms.http")
    adapter, handle = started(server)
    adapter.cancel(handle)
    assert "HTTP job job-1: no cancel endpoint configured, nothing to stop" in caplog.messages
    assert [m for m, *_ in server.seen] == ["POST"]


@pytest.mark.parametrize(("code", "document", "words"), [
    (400, {"error": "bad day"}, 'answered 400: {"error": "bad day"}'),
    (404, None, "answered 404: "),
])
def test_a_4xx_is_not_retried_and_keeps_the_body(server, code, document, words):
    adapter, handle = started(server)
    answer(server, "GET", "/status/1", (code, {}, document))
    with pytest.raises(NonRetryableError) as caught:
        adapter.poll(handle)
    assert str(caught.value) == f"HTTP status of job-1: GET {server.base}/status/1 {words}"
    assert caught.value.platform == "http"
    assert len([m for m, *_ in server.seen if m == "GET"]) == 1


def test_a_5xx_is_retried_only_while_the_next_wait_fits_the_budget(server):
    adapter, handle = started(server, max_retries=4, max_retry_wait=0.4)   # the first wait is 0.5 s: none
    answer(server, "GET", "/status/1", (503, {}, {"error": "busy"}))
    with pytest.raises(RetryableError, match="answered 503"):
        adapter.poll(handle)
    assert len([m for m, *_ in server.seen if m == "GET"]) == 1


def test_a_timeout_names_the_exception_but_never_the_query(server):
    adapter, handle = started(server, timeout=0.2)
    answer(server, "GET", "/status/1", (200, {"delay": "1"}, {"status": "done"}))
    with pytest.raises(RetryableError) as caught:
        adapter.poll(handle)
    assert str(caught.value).startswith(f"HTTP status of job-1: GET {server.base}/status/1 failed: ReadTimeout: ")
    assert "s3cr3t" not in str(caught.value) and caught.value.platform == "http"


@pytest.mark.parametrize(("base", "where"), [("https://127.0.0.1", "127.0.0.1:443"), ("http://127.0.0.1", "127.0.0.1:80")])
def test_a_refused_connection_names_the_default_port(base, where):
    adapter = adapter_for("http", {"base_url": base})
    with pytest.raises(RetryableError) as caught:
        adapter.submit(submission({"path": "/start"}))
    assert str(caught.value) == (f"HTTP submit of service 'score': POST {base}/start failed: connection refused by "
                                 f"{where} (is the service running, on that port?)")
    assert caught.value.platform == "http"


def test_the_app_identity_of_a_user_assigned_client_id_authenticates(server, monkeypatch):
    with identity_endpoint(monkeypatch) as identity:
        adapter, handle = started(server, auth={"audience": "api://scores", "client_id": "uami-http-1"})
    assert server.seen[0][2]["Authorization"] == "Bearer token-for-api://scores"
    assert identity.asked[0][0]["client_id"] == "uami-http-1"


@pytest.mark.parametrize(("budget", "calls"), [(0.5, 2), (1.6, 3)])
def test_5xx_retries_wait_0_5_then_1_s_while_the_waits_add_up_within_the_budget(server, caplog, budget, calls):
    caplog.set_level(logging.INFO, logger="tower.platforms.http")
    adapter, handle = started(server, max_retries=4, max_retry_wait=budget)
    answer(server, "GET", "/status/1", (503, {}, {"error": "busy"}))
    with pytest.raises(RetryableError, match="answered 503"):
        adapter.poll(handle)
    assert len([m for m, *_ in server.seen if m == "GET"]) == calls
    assert caplog.messages[-1].startswith(f"GET {server.base}/status/1: retrying in ")
    assert caplog.messages[-1].endswith(' s ({"error": "busy"})')


def test_a_body_that_is_not_a_mapping_names_the_service(server):
    adapter = adapter_for("http", {"base_url": server.base})
    with pytest.raises(NonRetryableError) as caught:
        adapter.submit(submission({"path": "/start", "body": [1, 2]}))
    assert (str(caught.value), caught.value.platform) == ("service 'score': field 'body' must be a mapping", "http")


def _read_request(conn: socket.socket) -> bytes:
    """One whole HTTP request off `conn`: its head, then as many body bytes as Content-Length says."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(65536)
        if not chunk:
            return data
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = next((int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")
                   if line.lower().startswith(b"content-length:")), 0)
    while len(body) < length:
        chunk = conn.recv(65536)
        if not chunk:
            break
        body += chunk
    return head + b"\r\n\r\n" + body


def test_a_connection_the_service_drops_is_retried_and_named_as_it_is(caplog):
    """A service that closes the connection without answering got the request: unlike a refused
    connection it is retried within the budget, and the failure says what requests saw."""
    caplog.set_level(logging.INFO, logger="tower.platforms.http")
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    accepted = []

    def drop_every_connection():
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            # all of it (a close with unread bytes would be a reset, not an end), counted before the
            # close: the client may see the close and the test count before this thread runs again
            accepted.append(_read_request(conn))
            conn.close()

    threading.Thread(target=drop_every_connection, daemon=True).start()
    base = f"http://127.0.0.1:{listener.getsockname()[1]}"
    adapter = adapter_for("http", {"base_url": base, "max_retries": 1, "max_retry_wait": 1})
    try:
        with pytest.raises(RetryableError) as caught:
            adapter.submit(submission({"path": "/start"}))
    finally:
        listener.close()
    detail = "ConnectionError: ('Connection aborted.', RemoteDisconnected('Remote end closed connection without response'))"
    assert str(caught.value) == f"HTTP submit of service 'score': POST {base}/start failed: {detail}"
    assert len(accepted) == 2 and caught.value.platform == "http"
    assert caplog.messages == [f"POST {base}/start: retrying in 0.5 s ({detail[:80]})"]  # the log cuts at 80


def test_a_failed_call_never_shows_the_query_even_where_it_holds_a_quote(server):
    """TLS to a plain-HTTP port: requests' message quotes the URL, and a query with a quote in it
    would outlive a cut at the first quote; the query itself is taken out."""
    adapter = adapter_for("http", {"base_url": server.base.replace("http:", "https:"), "max_retries": 0})
    with pytest.raises(RetryableError) as caught:
        adapter.submit(submission({"path": "/start?sig=ab'cd"}))
    port = server.server_address[1]
    assert str(caught.value).startswith(
        f"HTTP submit of service 'score': POST https://127.0.0.1:{port}/start failed: SSLError: HTTPSConnectionPool("
        f"host='127.0.0.1', port={port}): Max retries exceeded with url: /start (Caused by SSLError(")
    assert "cd" not in str(caught.value).replace("Caused", "")


@pytest.mark.parametrize(("base", "path", "joined"), [("/api/", "/run", "/api/run"), ("/api", "run", "/api/run"),
                                                     ("/api//", "//run", "/api/run"), ("/apiX/", "run", "/apiX/run")])
def test_a_base_url_and_a_path_are_joined_with_one_slash(server, base, path, joined):
    answer(server, "POST", joined, (200, {}, {"status": "done"}))
    adapter = adapter_for("http", {"base_url": server.base + base})
    adapter.submit(submission({"path": path}))
    assert server.seen[0][1] == joined


def test_an_absolute_http_cancel_url_is_called_as_it_is(server):
    answer(server, "POST", "/start", (202, {"Location": "/status/1"}, None))
    adapter = adapter_for("http", {"base_url": server.base, "max_retries": 0})
    handle = adapter.submit(submission({"path": "/start", "cancel_path": f"{server.base}/jobs/1/cancel"}))
    answer(server, "POST", "/jobs/1/cancel", (202, {}, None))
    adapter.cancel(handle)
    assert server.seen[-1][:2] == ("POST", "/jobs/1/cancel")


def test_max_retries_is_the_number_of_retries_after_the_first_call(server):
    adapter, handle = started(server, max_retries=1, max_retry_wait=10)
    answer(server, "GET", "/status/1", (503, {}, {"error": "busy"}))
    with pytest.raises(RetryableError):
        adapter.poll(handle)
    assert len([m for m, *_ in server.seen if m == "GET"]) == 2


def test_a_4xx_keeps_the_last_300_characters_of_a_long_body(server):
    adapter, handle = started(server)
    answer(server, "GET", "/status/1", (422, {}, {"error": "x" * 500}))
    with pytest.raises(NonRetryableError) as caught:
        adapter.poll(handle)
    body = json.dumps({"error": "x" * 500})
    assert str(caught.value) == f"HTTP status of job-1: GET {server.base}/status/1 answered 422: …{body[-299:]}"


def test_a_token_the_identity_refuses_fails_the_call_as_the_http_platforms(server):
    from azure.core.exceptions import ClientAuthenticationError

    from tower.platforms._auth import Credentials

    class Refused:
        def get_token(self, scope):
            raise ClientAuthenticationError("identity not assigned")

    adapter = adapter_for("http", {"base_url": server.base, "auth": {"audience": "api://x"}},
                          credentials=Credentials(make=lambda client_id: Refused()))
    with pytest.raises(NonRetryableError) as caught:
        adapter.submit(submission({"path": "/start"}))
    assert caught.value.platform == "http" and not server.seen
