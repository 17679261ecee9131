"""The HTTP API's contract, on the real app (function_app.py) under the local host: the OpenAPI
document matches the routes registered, every route answers malformed input with a JSON 4xx (never
a 500), /api/health says what is wrong, TOWER_API_KEY guards the routes, and POST /api/events puts
the event on the events queue as the app itself."""

from __future__ import annotations

import functools
import json
import re
import textwrap
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import start_app_host
from tower.events import EVENTS_QUEUE
from tower.local.host import Host, load_app
from tower.openapi import document, operations
from tower.states import RunState, ServiceState

REPO = Path(__file__).resolve().parents[1]
CATALOG = """
platforms:
  sim: {type: sim}
services:
  extract: {platform: sim, duration: 0, params: {day: none}}
  slow: {platform: sim, duration: 30}
pipelines:
  adhoc: {services: [extract], params: {day: none}}
  forever: {services: [slow]}
  on_files: {services: [extract], on_event: [files.*]}
"""


@functools.cache
def registered_routes() -> frozenset[tuple[str, str]]:
    """(METHOD, route with every parameter written {}) of each HTTP function on function_app.app
    (a fresh app, read once: the SDK refuses to index one app's functions twice)."""
    app = load_app(REPO / "function_app.py")
    found = set()
    for function in app.get_functions():
        trigger = function.get_trigger()
        if trigger.type != "httpTrigger":
            continue
        route = "/" + re.sub(r"\{[^}]*\}", "{}", trigger.route.strip("/"))
        for method in trigger.methods:
            found.add((getattr(method, "value", str(method)).upper(), route))
    return frozenset(found)


def test_the_openapi_document_is_valid_and_documents_exactly_the_registered_routes():
    from openapi_spec_validator import validate

    doc = document("test")
    validate(doc)
    registered = registered_routes()
    assert operations(doc) == registered, (
        f"undocumented routes: {sorted(registered - operations(doc))}; "
        f"documented but not registered: {sorted(operations(doc) - registered)} (tower/openapi.py)")


def test_a_route_left_out_of_the_document_is_caught():
    doc = document("test")
    doc = {**doc, "paths": {k: v for k, v in doc["paths"].items() if k != "/health"}}
    assert ("GET", "/health") in registered_routes() - operations(doc)


def test_the_documented_states_are_the_state_enums():
    """The API's state lists are the code's (tower.states): a state added to an enum is documented."""
    doc = json.loads(json.dumps(document("test")))
    schemas = doc["components"]["schemas"]
    [status] = [p for p in doc["paths"]["/runs"]["get"]["parameters"] if p["name"] == "status"]
    assert status["schema"]["enum"] == [state.value for state in RunState] == schemas["RunRow"]["properties"]["status"]["enum"]
    assert schemas["Run"]["properties"]["status"]["enum"] == ["running", "succeeded", "failed", "cancelled"]
    service = schemas["Run"]["properties"]["services"]["additionalProperties"]
    assert service["properties"]["status"]["enum"] == [state.value for state in ServiceState]
    assert "upstream_failed" in service["properties"]["status"]["enum"]


@pytest.fixture
def host(tmp_path, monkeypatch):
    local = start_app_host(tmp_path, monkeypatch, CATALOG)
    yield local
    local.stop()


def call(host: Host, method: str, path: str, body: bytes | None = None, headers: dict | None = None):
    data = body if body is not None else (b"" if method == "POST" else None)
    request = urllib.request.Request(host.base_url + path, method=method, data=data, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=15) as response:
            return response.status, response.read(), dict(response.headers)
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read(), dict(exc.headers)


# (METHOD, route) -> malformed requests: (path and query, body, the status expected)
MALFORMED = {
    ("POST", "/runs/{}"): [
        ("/api/runs/adhoc", b"{nope", 400),
        ("/api/runs/adhoc", b"[1, 2]", 400),
        ("/api/runs/adhoc", b'"text"', 400),
        ("/api/runs/adhoc", b'{"params": [1]}', 400),
        ("/api/runs/adhoc", b'{"params": {"nope": 1}}', 400),
        ("/api/runs/adhoc", b'{"services": "extract"}', 400),
        ("/api/runs/adhoc", b'{"services": [1]}', 400),
        ("/api/runs/adhoc", b'{"services": ["nothing+"]}', 400),
        ("/api/runs/adhoc", b'{"run_id": "bad/id#?"}', 400),
        ("/api/runs/adhoc", b'{"run_id": 7}', 400),
        ("/api/runs/adhoc", b'{"run_id": ""}', 400),
        ("/api/runs/adhoc", b'{"parms": {}}', 400),
        ("/api/runs/adhoc", b"\xff\xfe", 400),
        ("/api/runs/no-such-pipeline", b"{}", 404),
        ("/api/runs/%E2%9C%93", b"{}", 404),
    ],
    ("GET", "/runs/{}"): [
        ("/api/runs/run~nothing@20260101T000000Z", None, 404),
        ("/api/runs/bad%20id", None, 404),
        ("/api/runs/%25%23%3F", None, 404),
    ],
    ("GET", "/runs"): [
        ("/api/runs?limit=abc", None, 400),
        ("/api/runs?limit=0", None, 400),
        ("/api/runs?limit=100000", None, 400),
        ("/api/runs?status=sleeping", None, 400),
        ("/api/runs?since=yesterday-ish", None, 400),
        ("/api/runs?continuation=%00garbage", None, 400),
        ("/api/runs?pipline=adhoc", None, 400),
    ],
    ("POST", "/runs/{}/cancel"): [
        ("/api/runs/run~nothing@20260101T000000Z/cancel", None, 404),
        ("/api/runs/bad%20id/cancel", None, 404),
    ],
    ("POST", "/notify/databricks"): [
        ("/api/notify/databricks", b"{nope", 400),
        ("/api/notify/databricks", b"[1]", 400),
        ("/api/notify/databricks", b'{"run": {}}', 400),
        ("/api/notify/databricks", b'{"run": {"run_id": "x; drop"}}', 400),
        ("/api/notify/databricks", b'{"run": {"run_id": true}}', 400),
        ("/api/notify/databricks", b'{"event_type": 3, "run": {"run_id": 7}}', 400),
        ("/api/notify/databricks", b'{"event_type": "jobs.on_success", "run": {"run_id": 987654}}', 404),
        ("/api/notify/databricks", b'{"run": {"run_id": "5", "parent_run_id": "x"}}', 400),
        ("/api/notify/databricks", b'{"event_type": "jobs.on_failure", "task": {"task_key": "t"}, '
                                   b'"run": {"run_id": "5", "parent_run_id": "987654"}}', 404),
    ],
    ("POST", "/notify/http/{}"): [
        ("/api/notify/http/short", None, 404),
        ("/api/notify/http/%2E%2E%2Fruns", None, 404),
        ("/api/notify/http/AAAAAAAAAAAAAAAAAAAAAAAA", None, 404),   # well formed, never given
    ],
    ("GET", "/events/rejected"): [
        ("/api/events/rejected?limit=abc", None, 400),
        ("/api/events/rejected?limit=-3", None, 400),
    ],
    ("POST", "/events"): [
        ("/api/events", b"{nope", 400),
        ("/api/events", b"[1]", 400),
        ("/api/events", b'{"data": 1}', 400),
        ("/api/events", b'{"type": ""}', 400),
        ("/api/events", b'{"type": 5}', 400),
        ("/api/events", b'{"type": "a.b", "id": 5}', 400),
        ("/api/events", b'{"type": "a.b", "id": "' + b"x" * 200 + b'"}', 400),
        ("/api/events", b'{"type": "a.b", "extra": 1}', 400),
    ],
    ("POST", "/runs/{}/repair"): [
        ("/api/runs/run~nothing@20260101T000000Z/repair", b"{nope", 400),
        ("/api/runs/run~nothing@20260101T000000Z/repair", b'{"again": "yes"}', 400),
        ("/api/runs/run~nothing@20260101T000000Z/repair", b"[true]", 400),
        ("/api/runs/run~nothing@20260101T000000Z/repair", b"{}", 404),
        ("/api/runs/bad%20id/repair", b"{}", 404),
    ],
    ("GET", "/runs/{}/board"): [
        ("/api/runs/run~nothing@20260101T000000Z/board", None, 404),
        ("/api/runs/%25%23%3F/board", None, 404),
    ],
    ("GET", "/pipelines"): [("/api/pipelines?unused=1", None, 200)],
    ("GET", "/pipelines/{}"): [
        ("/api/pipelines/no-such-pipeline", None, 404),
        ("/api/pipelines/%E2%9C%93", None, 404),
    ],
    ("GET", "/dashboard"): [("/api/dashboard?unused=1", None, 200)],
    ("GET", "/dashboard/{}"): [
        ("/api/dashboard/..%2Fapi.py", None, 404),
        ("/api/dashboard/.hidden.js", None, 404),
        ("/api/dashboard/nothing.js", None, 404),
        ("/api/dashboard/index.html", None, 404),
    ],
    ("GET", "/health"): [("/api/health?verbose=maybe", None, 200)],
    ("GET", "/openapi.json"): [("/api/openapi.json?x=1", None, 200)],
}


def test_every_route_has_malformed_cases():
    assert set(MALFORMED) == registered_routes(), "add malformed-input cases for each new route here"


def test_every_route_answers_malformed_input_with_a_json_4xx_never_a_500(host):
    wrong = []
    for (method, _), cases in MALFORMED.items():
        for path, body, expected in cases:
            status, raw, headers = call(host, method, path, body)
            try:
                reply = json.loads(raw)
            except ValueError:
                reply = None
            if status != expected:
                wrong.append(f"{method} {path} {body!r}: {status} (expected {expected}): {raw[:300]!r}")
            elif status >= 400 and not (isinstance(reply, dict) and isinstance(reply.get("error"), str)
                                        and reply["error"]):
                wrong.append(f"{method} {path} {body!r}: {status} without a JSON error: {raw[:300]!r}")
            elif status >= 400 and "application/json" not in headers.get("Content-Type", ""):
                wrong.append(f"{method} {path}: {status} with Content-Type {headers.get('Content-Type')}")
    assert wrong == []


def test_openapi_json_is_served(host):
    status, raw, _ = call(host, "GET", "/api/openapi.json")
    assert status == 200
    served = json.loads(raw)
    assert served["openapi"] == "3.1.0" and operations(served) == registered_routes()
    from tower import __version__

    assert served["info"]["version"] == __version__


def test_health_is_ok_and_says_what_is_wrong_when_it_is_not(host, tmp_path):
    status, raw, _ = call(host, "GET", "/api/health")
    reply = json.loads(raw)
    assert status == 200 and reply["ok"] is True and reply["version"]
    assert set(reply["checks"]) >= {"catalog", "runs_index", "ledger", "history", "rejected_events"}
    assert all(check == {"ok": True} for check in reply["checks"].values())

    (tmp_path / "catalog.yaml").write_text("services:\n  a: {platform: nowhere}\n")
    status, raw, _ = call(host, "GET", "/api/health")
    reply = json.loads(raw)
    assert status == 503 and reply["ok"] is False
    assert reply["checks"]["catalog"]["ok"] is False and "nowhere" in reply["checks"]["catalog"]["error"]
    assert reply["checks"]["runs_index"] == {"ok": True}


def test_tower_api_key_guards_every_route(host, monkeypatch):
    monkeypatch.setenv("TOWER_API_KEY", "s3cret-key-123")
    for path in ("/api/health", "/api/runs", "/api/openapi.json"):
        status, raw, _ = call(host, "GET", path)
        assert status == 401 and "TOWER_API_KEY" in json.loads(raw)["error"]
        assert "s3cret-key-123" not in raw.decode()
        assert call(host, "GET", path, headers={"x-functions-key": "wrong"})[0] == 401
        assert call(host, "GET", path, headers={"x-functions-key": "s3cret-key-123"})[0] == 200
        assert call(host, "GET", path + "?code=s3cret-key-123")[0] == 200
    status, _, _ = call(host, "POST", "/api/events", json.dumps({"type": "a.b"}).encode())
    assert status == 401
    assert call(host, "GET", "/api/dashboard")[0] == 401
    assert call(host, "GET", "/api/dashboard/app.js")[0] == 200  # anonymous in Azure too: a static file
    monkeypatch.delenv("TOWER_API_KEY")
    assert call(host, "GET", "/api/health")[0] == 200


def test_post_events_puts_the_event_on_the_events_queue(host):
    import time

    from tower.events import event_run_id

    status, raw, _ = call(host, "POST", "/api/events",
                          json.dumps({"type": "files.landed", "data": {"day": "d1"}, "id": "m-42"}).encode())
    assert status == 202
    assert json.loads(raw) == {"id": "m-42", "type": "files.landed", "sent_to": [EVENTS_QUEUE]}
    run_id = event_run_id("on_files", "m-42")  # the events trigger took it off the queue and started it
    deadline = time.monotonic() + 15
    while call(host, "GET", f"/api/runs/{run_id}")[0] != 200:
        assert time.monotonic() < deadline, "the event never reached the events trigger"
        time.sleep(0.1)
    status, raw, _ = call(host, "GET", f"/api/runs/{run_id}")
    assert json.loads(raw)["pipeline"] == "on_files"


def test_a_running_run_shows_its_deadline_prediction(host, tmp_path):
    import time
    from datetime import datetime, timedelta, timezone

    deadline = (datetime.now(timezone.utc) + timedelta(minutes=3)).replace(second=0, microsecond=0)
    catalog = tmp_path / "catalog.yaml"
    text = textwrap.dedent(CATALOG) + f"  due: {{services: [long_one], deadline: '{deadline:%H:%M}'}}\n"
    catalog.write_text(text.replace("services:\n", "services:\n  long_one: {platform: sim, duration: 30, "
                                    "expected_duration: 2h}\n", 1))
    status, raw, _ = call(host, "GET", "/api/pipelines/due")
    planned = json.loads(raw)["deadline"]  # what `tower plan` says of its next run
    assert status == 200 and planned["deadline"] == deadline.isoformat().replace("+00:00", "Z")
    assert planned["slack_s"] < -3600 and planned["start_is"] == "a run started now"
    status, raw, _ = call(host, "GET", "/api/pipelines/adhoc")
    assert status == 200 and json.loads(raw)["deadline"] is None
    status, raw, _ = call(host, "POST", "/api/runs/due", b"{}")
    assert status == 202, raw
    run_id = json.loads(raw)["run_id"]
    try:
        give_up = time.monotonic() + 15
        while True:
            status, raw, _ = call(host, "GET", f"/api/runs/{run_id}")
            run = json.loads(raw)
            if status == 200 and "at_risk" in run:
                break
            assert time.monotonic() < give_up, raw
            time.sleep(0.1)
        assert run["deadline"] == deadline.isoformat().replace("+00:00", "Z")
        assert run["at_risk"] is True and run["missed"] is False and run["critical_path"] == ["long_one"]
        assert run["slack_s"] < -3600
    finally:  # cancel it and wait for its end: no activity of it may outlive this test's settings
        call(host, "POST", f"/api/runs/{run_id}/cancel")
        give_up = time.monotonic() + 20
        while json.loads(call(host, "GET", f"/api/runs/{run_id}")[1]).get("status") in ("running", "pending"):
            assert time.monotonic() < give_up
            time.sleep(0.1)
