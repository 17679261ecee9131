"""The local host running tests/local/apps/host_app.py in-process, with the real engine:
HTTP functions, the unmodified Durable client, timer triggers and Service Bus triggers."""

from __future__ import annotations

import json
import re
import sqlite3
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tower.events import EVENTS_QUEUE, LocalBusPublisher, local_bus_path
from tower.local.bus import MAX_DELIVERY_REASON, LocalBus, LockLost
from tower.local.host import Host, load_app

APP = Path(__file__).parent / "apps" / "host_app.py"
REPO = Path(__file__).resolve().parents[2]
NEVER = "0 0 0 1 1 *"  # once a year: keeps the test app's timer quiet


@pytest.fixture
def app_env(tmp_path, monkeypatch):
    record = tmp_path / "record.jsonl"
    monkeypatch.setenv("HOST_APP_RECORD", str(record))
    monkeypatch.setenv("HOST_APP_TIMER", NEVER)
    monkeypatch.setenv("HOST_APP_SECRET_TOKEN", "hunter2-very-secret")
    return record


@pytest.fixture
def make_host(tmp_path, app_env):
    hosts = []

    def make(**options) -> Host:
        lines: list[str] = []
        host = Host(load_app(APP), tmp_path / "home", port=0, log=lines.append, **options)
        host.lines = lines
        hosts.append(host.start())
        return host

    yield make
    for host in hosts:
        if host._started:
            host.stop()


def call(host: Host, method: str, path: str, body: bytes | None = None, headers: dict | None = None):
    request = urllib.request.Request(host.base_url + path, method=method, data=body, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


def records(path: Path, function: str) -> list[dict]:
    if not path.exists():
        return []
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    return [r for r in rows if r["function"] == function]


def wait_until(predicate, timeout: float = 10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"condition not met within {timeout} s")


# ------------------------------------------------------------------------------------------ HTTP


def test_http_function_gets_route_params_query_headers_and_body(make_host):
    host = make_host()
    status, headers, body = call(host, "POST", "/api/echo/bob?x=1&y=two", b"payload", {"X-Test": "t1"})
    assert status == 201
    assert headers["X-Echo"] == "yes"
    assert headers["Content-Type"].startswith("application/json")
    assert json.loads(body) == {
        "method": "POST",
        "name": "bob",
        "params": {"x": "1", "y": "two"},
        "header": "t1",
        "body": "payload",
    }
    assert any(re.fullmatch(r"echo: ok \d+ ms", line) for line in host.lines)


def test_literal_route_beats_a_parameter_and_unknown_routes_say_what_exists(make_host):
    host = make_host()
    assert call(host, "GET", "/api/echo/special")[::2] == (200, b"literal route wins")
    status, _, body = call(host, "GET", "/api/nothing/here")
    assert status == 404
    reply = json.loads(body)
    assert reply["error"] == "no function serves GET /api/nothing/here"
    assert "/api/echo/{name}" in reply["routes"]
    status, _, body = call(host, "DELETE", "/api/echo/bob")
    assert status == 405 and "GET, POST" in json.loads(body)["error"]


def test_a_failing_function_is_a_500_with_the_error_and_no_secret(make_host):
    host = make_host()
    status, _, body = call(host, "GET", "/api/boom")
    assert status == 500
    message = json.loads(body)["error"]
    assert "RuntimeError: cannot reach the store with ***" in message
    assert "hunter2" not in message and not any("hunter2" in line for line in host.lines)
    assert any(line.startswith("boom: failed") for line in host.lines)
    host.engine.log("engine: work loop error with hunter2-very-secret")   # the engine logs through the host's sink
    assert host.lines[-1] == "engine: work loop error with ***"


def test_unmodified_durable_client_in_an_http_function_starts_and_reads_an_orchestration(make_host):
    host = make_host()
    status, headers, body = call(host, "POST", "/api/hello/ann?id=greet-1", b"")
    assert status == 202
    links = json.loads(body)
    assert links["id"] == "greet-1"
    assert links["statusQueryGetUri"].startswith(host.base_url + "/runtime/webhooks/durabletask/instances/greet-1")

    def completed():
        code, _, reply = call(host, "GET", "/api/hello-status/greet-1")
        return code == 200 and json.loads(reply)["status"] == "Completed" and json.loads(reply)

    assert wait_until(completed)["output"] == "hello ann"
    assert call(host, "GET", "/api/hello-status/nobody")[0] == 404


# ---------------------------------------------------------------------------------------- timers


def test_timer_fires_on_its_seconds_schedule(make_host, app_env, monkeypatch):
    monkeypatch.setenv("HOST_APP_TIMER", "*/1 * * * * *")
    make_host()
    fired = wait_until(lambda: len(records(app_env, "every_second")) >= 2 and records(app_env, "every_second"), 5)
    assert all(r["past_due"] is False for r in fired)
    assert fired[0]["last"] is None and fired[1]["last"] is not None  # the monitor's previous occurrence


def test_a_bad_timer_schedule_is_a_clear_error(tmp_path, app_env, monkeypatch):
    from tower.errors import ConfigError

    monkeypatch.setenv("HOST_APP_TIMER", "* * * * *")
    with pytest.raises(ConfigError, match="timer every_second: '\\* \\* \\* \\* \\*' has 5 fields"):
        Host(load_app(APP), tmp_path / "home", port=0, log=lambda line: None)


# ----------------------------------------------------------------------------------- Service Bus


def post_event(host: Host, payload: dict):
    status, _, body = call(host, "POST", "/api/events", json.dumps(payload).encode())
    return status, json.loads(body)


def test_posted_event_reaches_the_trigger_as_a_service_bus_message(make_host, app_env):
    host = make_host()
    status, reply = post_event(host, {"type": "files.landed", "data": {"day": "2026-11-24"}, "id": "m-1"})
    assert (status, reply["id"], reply["sent_to"]) == (202, "m-1", [EVENTS_QUEUE])
    [got] = wait_until(lambda: records(app_env, "on_event"))
    assert got == {"function": "on_event", "id": "m-1", "type": "files.landed", "data": {"day": "2026-11-24"}, "delivery_count": 1}
    wait_until(lambda: not host.bus.active(EVENTS_QUEUE))


def test_a_failing_trigger_gets_redelivered_with_a_growing_delivery_count(make_host, app_env):
    host = make_host()
    post_event(host, {"type": "t", "data": {"fail_times": 2}, "id": "flaky"})
    wait_until(lambda: len(records(app_env, "on_event")) == 3)
    wait_until(lambda: not host.bus.active(EVENTS_QUEUE))
    assert [r["delivery_count"] for r in records(app_env, "on_event")] == [1, 2, 3]
    assert host.bus.dead_letters() == []


def test_a_poison_message_is_dead_lettered_after_max_deliveries(make_host, app_env):
    host = make_host(max_deliveries=3)
    post_event(host, {"type": "t", "data": {"poison": True}, "id": "poison"})
    [dead] = wait_until(lambda: host.bus.dead_letters(EVENTS_QUEUE))
    assert (dead.message_id, dead.delivery_count, dead.dead_letter_reason) == ("poison", 3, MAX_DELIVERY_REASON)
    # Service Bus's generic description: the function's error is in the host's log, not on the message
    assert dead.dead_letter_description == "Message could not be consumed after 3 delivery attempts."
    assert any("ValueError: cannot handle poison (delivery 3)" in line for line in host.lines)
    assert len(records(app_env, "on_event")) == 3
    assert any("poison dead-lettered after 3 deliveries" in line for line in host.lines)


def test_bus_errors_are_logged_and_the_trigger_keeps_reading(make_host, app_env):
    host = make_host()
    receive, complete = host.bus.receive, host.bus.complete
    failures = {"receive": 1, "complete": 1}
    settled_on: list[str] = []

    def flaky_receive(*args, **kwargs):
        if failures["receive"]:
            failures["receive"] -= 1
            raise sqlite3.OperationalError("database is locked")
        return receive(*args, **kwargs)

    def flaky_complete(message):
        settled_on.append(threading.current_thread().name)
        if failures["complete"]:
            failures["complete"] -= 1
            raise LockLost(f"message {message.message_id}: the lock was lost or expired")
        return complete(message)

    host.bus.receive, host.bus.complete = flaky_receive, flaky_complete
    post_event(host, {"type": "t", "data": {}, "id": "first"})
    wait_until(lambda: records(app_env, "on_event"))
    wait_until(lambda: settled_on)
    post_event(host, {"type": "t", "data": {}, "id": "second"})   # the trigger still reads its queue
    wait_until(lambda: [r["id"] for r in records(app_env, "on_event")] == ["first", "second"])
    assert any("host error receiving from 'tower-events', retrying: OperationalError" in line for line in host.lines)
    assert any("host error settling message first: LockLost" in line for line in host.lines)
    assert not any("trigger stopped" in line for line in host.lines)
    assert "tower-loop" not in settled_on                           # blocking SQLite stays off the event loop


def test_a_bad_event_post_is_a_400(make_host):
    host = make_host()
    assert call(host, "POST", "/api/events", b"{nope")[0] == 400
    status, _, body = call(host, "POST", "/api/events", json.dumps({"data": 1}).encode())
    assert status == 400 and "event type" in json.loads(body)["error"]


def test_messages_sent_while_the_host_is_down_are_delivered_when_it_starts(tmp_path, make_host, app_env):
    home = tmp_path / "home"
    bus = LocalBus(local_bus_path(home))
    LocalBusPublisher(bus).send("while.down", {"n": 1}, message_id="queued")
    bus.close()
    make_host()
    [got] = wait_until(lambda: records(app_env, "on_event"))
    assert (got["id"], got["type"], got["data"]) == ("queued", "while.down", {"n": 1})


def test_tower_events_send_cli_feeds_the_running_host(tmp_path, make_host, app_env):
    host = make_host()
    env = {"TOWER_HOME": str(tmp_path / "home"), "PATH": "/usr/bin:/bin"}
    done = subprocess.run(
        [sys.executable, "-m", "tower", "events", "send", "orders.in", "--data", '{"k": 2}', "--id", "cli-1"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=30,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "cli-1"
    [got] = wait_until(lambda: records(app_env, "on_event"))
    assert (got["id"], got["type"], got["data"]) == ("cli-1", "orders.in", {"k": 2})
    wait_until(lambda: not host.bus.active(EVENTS_QUEUE))
    bad = subprocess.run(
        [sys.executable, "-m", "tower", "events", "send", "x", "--data", "{bad"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=30,
    )
    assert bad.returncode == 2 and "--data: not valid JSON" in bad.stderr and "Traceback" not in bad.stderr
