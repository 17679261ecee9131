"""The app's own triggers (triggers/) on the local host, with a simulated catalog: the HTTP API,
the events trigger (idempotent per message id) and the schedule tick (idempotent per time)."""

from __future__ import annotations

import asyncio
import json
import logging
import textwrap
import time
import urllib.error
import urllib.request
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from tower.events import EVENTS_QUEUE, event_run_id
from tower.local.host import Host, load_app

REPO = Path(__file__).resolve().parents[2]
CATALOG = """
platforms:
  sim: {type: sim}
services:
  extract: {platform: sim, duration: 0}
  load: {platform: sim, duration: 0, depends_on: [extract]}
  slow: {platform: sim, duration: 30}
pipelines:
  adhoc:
    services: [extract, load]
    params: {day: none}
  on_files:
    services: [extract]
    on_event: [files.*]
    params: {day: none}
  forever:
    services: [slow]
  nightly:
    services: [extract]
    schedule: "30 1 * * *"
    timezone: Europe/London
"""


@pytest.fixture
def host(tmp_path, monkeypatch):
    catalog = tmp_path / "catalog.yaml"
    catalog.write_text(textwrap.dedent(CATALOG))
    monkeypatch.setenv("TOWER_CATALOG", str(catalog))
    monkeypatch.setenv("TOWER_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("TOWER_EVENTS_QUEUE", EVENTS_QUEUE)  # an app setting in Azure; `tower serve` defaults it
    local = Host(load_app(REPO / "function_app.py"), tmp_path / "home", port=0, log=lambda line: None).start()
    yield local
    local.stop()


def call(host: Host, method: str, path: str, body: dict | None = None):
    data = json.dumps(body).encode() if body is not None else (b"" if method == "POST" else None)
    request = urllib.request.Request(host.base_url + path, method=method, data=data)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read()), dict(response.headers)
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read()), dict(exc.headers)


def wait_for_run(host: Host, run_id: str, timeout: float = 15) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status, run, _ = call(host, "GET", f"/api/runs/{run_id}")
        if status == 200 and run["status"] not in ("starting", "running", "pending"):  # starting: claimed, no instance yet
            return run
        time.sleep(0.1)
    raise AssertionError(f"run {run_id} did not finish in {timeout} s")


def test_api_starts_reads_lists_and_cancels_runs(host):
    status, started, headers = call(host, "POST", "/api/runs/adhoc", {"params": {"day": "2026-11-24"}})
    assert status == 202
    run_id = started["run_id"]
    assert started["status_url"] == f"{host.base_url}/api/runs/{run_id}" == headers["Location"]
    run = wait_for_run(host, run_id)
    assert run["status"] == "succeeded" and set(run["services"]) == {"extract", "load"}
    assert run_id in [r["run_id"] for r in call(host, "GET", "/api/runs")[1]["runs"]]

    _, slow, _ = call(host, "POST", "/api/runs/forever", {})
    deadline = time.monotonic() + 10
    while (live := call(host, "GET", f"/api/runs/{slow['run_id']}")[1])["services"].get("slow", {}).get("status") != "running":
        assert time.monotonic() < deadline, live  # a running run shows its services' state
        time.sleep(0.05)
    assert call(host, "POST", f"/api/runs/{slow['run_id']}/cancel")[0] == 202
    assert wait_for_run(host, slow["run_id"])["status"] == "cancelled"
    assert call(host, "POST", f"/api/runs/{slow['run_id']}/cancel")[0] == 409


def test_api_bad_input_gets_clear_errors(host):
    status, reply, _ = call(host, "POST", "/api/runs/nope", {})
    assert status == 404 and "unknown pipeline 'nope'" in reply["error"] and "adhoc" in reply["error"]
    status, reply, _ = call(host, "POST", "/api/runs/adhoc", {"params": {"colour": "red"}})
    assert status == 400 and "unknown param 'colour'" in reply["error"]
    assert call(host, "GET", "/api/runs/no-such-run")[0] == 404
    assert call(host, "POST", "/api/runs/no-such-run/cancel")[0] == 404


def test_an_event_starts_its_pipeline_once_per_message_id(host):
    for _ in range(2):  # the same message twice, as a redelivery would
        status, _, _ = call(host, "POST", "/api/events", {"type": "files.landed", "data": {"day": "d1", "x": 1}, "id": "msg-7"})
        assert status == 202
    run_id = event_run_id("on_files", "msg-7")
    run = wait_for_run(host, run_id)
    assert run["status"] == "succeeded"
    deadline = time.monotonic() + 10
    while host.bus.active(EVENTS_QUEUE):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    runs = [r["run_id"] for r in call(host, "GET", "/api/runs")[1]["runs"]]
    assert runs.count(run_id) == 1 and len(runs) == 1
    assert host.bus.dead_letters() == []


def test_schedule_tick_starts_each_due_time_once(host):
    import azure.durable_functions as df
    from azure.functions.timer import TimerRequest

    from triggers.schedule import tick

    async def run_ticks():
        client = df.DurableOrchestrationClient(host.engine.client_binding)
        now = datetime(2026, 3, 29, 1, 31, tzinfo=timezone.utc)  # 01:30 London does not exist: 01:30 UTC
        timer = TimerRequest(past_due=False, schedule_status={"Last": "2026-03-29T01:29:00+00:00"})
        first = await tick(client, timer, now)
        second = await tick(client, timer, now)
        return first, second

    first, second = asyncio.run_coroutine_threadsafe(run_ticks(), host.engine.loop).result(30)
    assert first == ["run~nightly@20260329T013000Z"] and second == []
    assert wait_for_run(host, first[0])["status"] == "succeeded"

    from triggers.purge import purge_now  # a catch-up over the same times after a purge: nothing

    on_host(host, lambda client: purge_now(client, datetime.now(timezone.utc) + timedelta(days=31)))
    assert host.engine.status(first[0]) is None
    assert asyncio.run_coroutine_threadsafe(run_ticks(), host.engine.loop).result(30) == ([], [])
    assert host.engine.status(first[0]) is None


def test_a_scheduled_run_whose_start_failed_is_started_by_a_later_tick(host, caplog):
    """The host records a tick as done even when it failed (its schedule monitor moves `Last` past a
    failed invocation), so the next tick must look back for the run nobody started."""
    import azure.durable_functions as df
    from azure.functions.timer import TimerRequest

    from tower.errors import TowerError
    from triggers.schedule import tick

    due = "run~nightly@20260329T013000Z"
    caplog.set_level(logging.INFO)

    async def tick_at(minute: int):
        client = df.DurableOrchestrationClient(host.engine.client_binding)
        now = datetime(2026, 3, 29, 1, minute, tzinfo=timezone.utc)
        last = (now - timedelta(minutes=1)).isoformat()
        return await tick(client, TimerRequest(past_due=False, schedule_status={"Last": last}), now)

    async def refused(name, instance_id):  # the Durable HTTP API answers 500
        raise RuntimeError("503 Server Busy: the storage account is throttling (injected)")

    with host.engine.unreliable_starts(refused), pytest.raises(TowerError, match=f"1 scheduled run\\(s\\) did not start: {due}"):
        asyncio.run_coroutine_threadsafe(tick_at(31), host.engine.loop).result(30)
    assert f"nightly: could not start scheduled run {due}: " in caplog.text and "Server Busy" in caplog.text
    assert host.engine.status(due) is None
    assert asyncio.run_coroutine_threadsafe(tick_at(32), host.engine.loop).result(30) == [due]
    assert wait_for_run(host, due)["status"] == "succeeded"
    caplog.clear()
    assert asyncio.run_coroutine_threadsafe(tick_at(33), host.engine.loop).result(30) == []
    assert "exists" not in caplog.text      # a run an earlier tick started is passed over quietly


def test_last_tick_reads_the_monitors_time_in_any_iso_form_else_one_interval_ago():
    from types import SimpleNamespace

    from triggers.schedule import TICK_INTERVAL, last_tick

    now = datetime(2026, 3, 29, 1, 31, tzinfo=timezone.utc)
    earlier = datetime(2026, 3, 29, 1, 20, tzinfo=timezone.utc)
    for text in ("2026-03-29T01:20:00Z", "2026-03-29T01:20:00+00:00", "2026-03-29T02:20:00+01:00",
                 "2026-03-29T01:20:00"):
        assert last_tick(SimpleNamespace(schedule_status={"Last": text}), now) == earlier, text
    for status in ({}, {"Last": ""}, {"Last": None}, {"Last": "yesterday"}, None):
        assert last_tick(SimpleNamespace(schedule_status=status), now) == now - TICK_INTERVAL, status
    recent = {"Last": "2026-03-29T01:30:30Z"}                     # never later than one interval ago
    assert last_tick(SimpleNamespace(schedule_status=recent), now) == now - TICK_INTERVAL


def on_host(host: Host, coroutine_function):
    """Run `coroutine_function(client)` on the host's loop with the app's Durable client."""
    import azure.durable_functions as df

    async def call_it():
        return await coroutine_function(df.DurableOrchestrationClient(host.engine.client_binding))

    return asyncio.run_coroutine_threadsafe(call_it(), host.engine.loop).result(30)


def test_a_run_id_starts_once_whether_running_finished_or_purged(host):
    from tower.runs.index import index_from_environment

    status, slow, _ = call(host, "POST", "/api/runs/forever", {"run_id": "mine-1"})
    assert status == 202 and slow["run_id"] == "run~mine-1"
    status, reply, _ = call(host, "POST", "/api/runs/forever", {"run_id": "mine-1"})  # running
    assert status == 409 and "'run~mine-1' exists already (running)" in reply["error"]
    call(host, "POST", "/api/runs/run~mine-1/cancel")
    assert wait_for_run(host, "run~mine-1")["status"] == "cancelled"

    status, _, _ = call(host, "POST", "/api/runs/adhoc", {"run_id": "mine-2"})
    assert status == 202
    first = host.engine.status("run~mine-2", show_input=False)
    assert wait_for_run(host, "run~mine-2")["status"] == "succeeded"
    status, reply, _ = call(host, "POST", "/api/runs/adhoc", {"run_id": "mine-2"})  # finished: the host
    assert status == 409 and "(succeeded)" in reply["error"]                        # would replace it
    time.sleep(0.3)
    assert host.engine.status("run~mine-2", show_input=False)["createdTime"] == first["createdTime"]

    from triggers.purge import purge_now

    report = on_host(host, lambda client: purge_now(client, datetime.now(timezone.utc) + timedelta(days=31)))
    assert report["instances"] >= 4  # both runs and their service runs
    assert host.engine.status("run~mine-2") is None
    status, reply, _ = call(host, "POST", "/api/runs/adhoc", {"run_id": "mine-2"})  # purged: still used
    assert status == 409 and host.engine.status("run~mine-2") is None
    status, tombstone, _ = call(host, "GET", "/api/runs/run~mine-2")
    assert status == 200 and tombstone["status"] == "succeeded" and tombstone["purged"] is True
    assert index_from_environment().get("run~mine-2").counts == {"succeeded": 2}


def test_a_start_that_fails_can_be_retried(host):
    import triggers.common as common

    async def refused(name, instance_id):  # the Durable HTTP API answers 500
        raise RuntimeError("503 Server Busy: the storage account is throttling (injected)")

    with host.engine.unreliable_starts(refused), pytest.raises(Exception, match="Server Busy"):
        on_host(host, lambda client: common.start_new_run(client, common.catalog(), "adhoc", "run~retry-1",
                                                          trigger="api"))
    assert call(host, "GET", "/api/runs")[1]["runs"] == []  # no half-started run
    assert host.engine.status("run~retry-1") is None
    assert call(host, "POST", "/api/runs/adhoc", {"run_id": "retry-1"})[0] == 202
    assert wait_for_run(host, "run~retry-1")["status"] == "succeeded"


def test_a_start_whose_reply_was_lost_answers_started_and_runs_once(host):
    from tower import names
    from tower.local.management import LOST_REPLY

    async def reply_lost(name, instance_id):  # the run is created; the connection drops before the reply
        return LOST_REPLY if name == names.PIPELINE_RUN else None

    with host.engine.unreliable_starts(reply_lost):
        status, reply, _ = call(host, "POST", "/api/runs/adhoc", {"run_id": "lost-1"})
    assert status == 202, reply
    first = host.engine.status("run~lost-1", show_input=False)
    assert wait_for_run(host, "run~lost-1")["status"] == "succeeded"
    assert host.engine.status("run~lost-1", show_input=False)["createdTime"] == first["createdTime"]
    assert call(host, "POST", "/api/runs/adhoc", {"run_id": "lost-1"})[0] == 409  # used, as any run id


def test_an_event_redelivered_after_a_purge_starts_nothing(host):
    from triggers.events import handle
    from triggers.purge import purge_now

    class Message:
        message_id, application_properties = "msg-9", {}

        @staticmethod
        def get_body():
            return json.dumps({"type": "files.landed", "data": {"day": "d1"}}).encode()

    started = on_host(host, lambda client: handle(client, Message()))
    assert started == [event_run_id("on_files", "msg-9")]
    wait_for_run(host, started[0])
    on_host(host, lambda client: purge_now(client, datetime.now(timezone.utc) + timedelta(days=31)))
    assert host.engine.status(started[0]) is None
    assert on_host(host, lambda client: handle(client, Message())) == []
    assert host.engine.status(started[0]) is None


def test_api_lists_runs_newest_first_with_filters_and_pages(host):
    ids = []
    for pipeline in ("adhoc", "nightly", "adhoc"):
        status, started, _ = call(host, "POST", f"/api/runs/{pipeline}", {})
        ids.append(started["run_id"])
        wait_for_run(host, started["run_id"])
    status, page, _ = call(host, "GET", "/api/runs")
    assert status == 200 and [r["run_id"] for r in page["runs"]] == ids[::-1] and page["continuation"] is None
    assert {r["trigger"] for r in page["runs"]} == {"api"}
    assert [r["run_id"] for r in call(host, "GET", "/api/runs?pipeline=adhoc")[1]["runs"]] == [ids[2], ids[0]]
    assert call(host, "GET", "/api/runs?status=failed")[1]["runs"] == []
    _, first, _ = call(host, "GET", "/api/runs?limit=2")
    assert [r["run_id"] for r in first["runs"]] == [ids[2], ids[1]]
    from urllib.parse import quote

    _, second, _ = call(host, "GET", f"/api/runs?limit=2&continuation={quote(first['continuation'])}")
    assert [r["run_id"] for r in second["runs"]] == [ids[0]] and second["continuation"] is None
    status, reply, _ = call(host, "GET", "/api/runs?limit=0")
    assert status == 400 and "limit" in reply["error"]
    status, reply, _ = call(host, "GET", "/api/runs?pipline=adhoc")
    assert status == 400 and "unknown query parameter 'pipline'" in reply["error"]


def test_simultaneous_starts_of_one_run_id_start_it_once(host):
    from concurrent.futures import ThreadPoolExecutor

    from tower.runs.history import history_from_environment

    with ThreadPoolExecutor(8) as pool:
        replies = list(pool.map(lambda _: call(host, "POST", "/api/runs/adhoc", {"run_id": "twin"}), range(8)))
    codes = sorted(code for code, _, _ in replies)
    assert codes == [202] + [409] * 7, [reply for code, reply, _ in replies if code not in (202, 409)]
    assert wait_for_run(host, "run~twin")["status"] == "succeeded"
    attempts = history_from_environment().attempts("run~twin")
    assert sorted(a.service for a in attempts) == ["extract", "load"]  # each ran once
