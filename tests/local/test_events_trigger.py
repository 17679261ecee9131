"""The app's events trigger on the local host: poison messages are rejected once (completed, kept with
the reason, listed by the API and the CLI), transient failures are redelivered, a twin that wins the
race to start a run is a duplicate, and rejected messages can be redriven after a fix."""

from __future__ import annotations

import asyncio
import json
import logging
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import azure.durable_functions as df
import pytest

from tests.local.test_host_app_triggers import call, wait_for_run
from tower.events import EVENTS_QUEUE, RUN_REQUESTED, event_run_id
from tower.local.bus import MAX_DELIVERY_REASON
from tower.local.host import Host, load_app

REPO = Path(__file__).resolve().parents[2]
CATALOG = """
platforms:
  sim: {type: sim}
services:
  extract: {platform: sim, duration: 0}
pipelines:
  adhoc:
    services: [extract]
    params: {day: none, limit: 10}
  on_files:
    services: [extract]
    on_event: [files.*]
    params: {day: none, limit: 10}
"""


@pytest.fixture
def env(tmp_path, monkeypatch):
    catalog = tmp_path / "catalog.yaml"
    catalog.write_text(textwrap.dedent(CATALOG))
    monkeypatch.setenv("TOWER_CATALOG", str(catalog))
    monkeypatch.setenv("TOWER_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("TOWER_EVENTS_QUEUE", EVENTS_QUEUE)
    monkeypatch.delenv("TOWER_REJECTED_TABLE_URL", raising=False)
    return {"catalog": catalog, "home": tmp_path / "home"}


@pytest.fixture
def make_host(env):
    hosts = []

    def make(**options) -> Host:
        lines: list[str] = []
        host = Host(load_app(REPO / "function_app.py"), env["home"], port=0, log=lines.append, **options).start()
        host.lines = lines
        hosts.append(host)
        return host

    yield make
    for host in hosts:
        host.stop()


def send(host: Host, body, message_id: str, properties: dict | None = None) -> None:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    host.bus.send(EVENTS_QUEUE, data, message_id=message_id, application_properties=properties or {},
                  content_type="application/json")


def settle(host: Host, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while host.bus.active(EVENTS_QUEUE):
        assert time.monotonic() < deadline, "the events queue did not drain"
        time.sleep(0.05)


def rejected(host: Host) -> dict[str, dict]:
    status, listed, _ = call(host, "GET", "/api/events/rejected")
    assert status == 200
    return {r["id"]: r for r in listed}


def tower_cli(env, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tower", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=60, env={"TOWER_HOME": str(env["home"]), "TOWER_CATALOG": str(env["catalog"]),
                                           "PATH": "/usr/bin:/bin"})


def test_messages_that_can_never_work_are_completed_once_and_kept_with_the_reason(make_host, env, caplog):
    host = make_host()
    caplog.set_level(logging.ERROR, logger="tower.triggers")
    send(host, b"\xff not json", "no-type")                                              # no event type at all
    send(host, {"type": RUN_REQUESTED, "data": {"pipeline": "nope"}}, "unknown-pipeline")
    send(host, {"type": RUN_REQUESTED, "data": {"pipeline": "adhoc", "param": {}}}, "misspelt-field")
    send(host, {"type": "files.landed", "data": {"limit": "ten"}}, "bad-param")          # declared, wrong type
    send(host, {"type": RUN_REQUESTED, "data": {"pipeline": "adhoc", "params": {"day": "d1"}}}, "good")
    settle(host)

    found = rejected(host)
    assert set(found) == {"no-type", "unknown-pipeline", "misspelt-field", "bad-param"}
    assert "no event type" in found["no-type"]["reason"] and found["no-type"]["body_encoding"] == "base64"
    assert "unknown pipeline 'nope'" in found["unknown-pipeline"]["reason"]
    assert "unknown field(s) param" in found["misspelt-field"]["reason"]
    assert found["bad-param"]["reason"].startswith("on_files: ") and "'limit' must be an integer" in found["bad-param"]["reason"]
    assert found["bad-param"]["type"] == "files.landed" and found["bad-param"]["queue"] == EVENTS_QUEUE
    assert all(r["deliveries"] == 1 for r in found.values())   # each was delivered once: not retried
    assert host.bus.dead_letters() == []
    assert [line for line in host.lines if "on_event: failed" in line] == []     # the function returned normally
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert any("message bad-param on tower-events) rejected, not retried" in m for m in errors)
    assert wait_for_run(host, event_run_id("adhoc", "good"))["status"] == "succeeded"  # a good request runs

    listed = tower_cli(env, "events", "rejected", "--json")
    assert listed.returncode == 0, listed.stderr
    assert {r["id"] for r in json.loads(listed.stdout)} == set(found)
    assert call(host, "GET", "/api/events/rejected?limit=x")[0] == 400


def test_transient_failures_raise_and_are_redelivered(make_host, env):
    host = make_host(max_deliveries=2)
    good = env["catalog"].read_text()
    env["catalog"].write_text("pipelines: [broken")      # the deployed catalog, not the message, is at fault
    send(host, {"type": "files.landed", "data": {"day": "d1"}}, "while-broken")
    [dead] = _wait(lambda: host.bus.dead_letters(EVENTS_QUEUE))
    assert (dead.message_id, dead.delivery_count, dead.dead_letter_reason) == ("while-broken", 2, MAX_DELIVERY_REASON)
    assert rejected(host) == {}

    env["catalog"].write_text(good)                      # fixed: the dead letter is sent again and runs
    redriven = tower_cli(env, "events", "redrive", "--queue", EVENTS_QUEUE)
    assert redriven.returncode == 0 and "redriven: 1 dead letter" in redriven.stderr, redriven.stderr
    assert wait_for_run(host, event_run_id("on_files", "while-broken"))["status"] == "succeeded"


def test_a_rejected_message_is_redriven_after_the_fix_and_purged_on_request(make_host, env):
    host = make_host()
    send(host, {"type": RUN_REQUESTED, "data": {"pipeline": "later"}}, "too-early")
    send(host, {"type": RUN_REQUESTED, "data": {"pipeline": "nope"}}, "hopeless")
    settle(host)
    assert set(rejected(host)) == {"too-early", "hopeless"}

    env["catalog"].write_text(env["catalog"].read_text() + "  later:\n    services: [extract]\n")
    done = tower_cli(env, "events", "redrive", "--rejected", "--id", "too-early")
    assert done.returncode == 0 and done.stdout.split() == ["too-early", EVENTS_QUEUE], done.stderr
    assert wait_for_run(host, event_run_id("later", "too-early"))["status"] == "succeeded"
    assert set(rejected(host)) == {"hopeless"}

    purged = tower_cli(env, "events", "purge", "--rejected")
    assert purged.returncode == 0 and "purged: 1 rejected message" in purged.stderr
    assert rejected(host) == {}


def test_a_twin_that_started_the_run_first_makes_this_delivery_a_duplicate(make_host, env):
    """Both deliveries of one message see no run in Durable and start it: the runs index's claim
    decides, and the loser is the duplicate it is (not an error that Service Bus would redeliver)."""
    from triggers.common import catalog, start_once

    host = make_host()
    run_id = event_run_id("on_files", "twin")

    class LateLook:
        """The real client, except that its first look happens before the twin's start lands."""

        def __init__(self, client):
            self.client, self.looked = client, False

        async def get_status(self, instance_id, *args, **kwargs):
            if not self.looked:
                self.looked = True
                return None
            return await self.client.get_status(instance_id, *args, **kwargs)

        def __getattr__(self, name):
            return getattr(self.client, name)

    async def race():
        client = df.DurableOrchestrationClient(host.engine.client_binding)
        first = await start_once(client, catalog(), "on_files", run_id, trigger="event", params={"day": "d1"})
        second = await start_once(LateLook(client), catalog(), "on_files", run_id, trigger="event", params={"day": "d1"})
        return first, second

    # on the host's loop, as the trigger runs (the SDK keeps one HTTP session per process and loop)
    assert asyncio.run_coroutine_threadsafe(race(), host.engine.loop).result(timeout=30) == (True, False)
    assert wait_for_run(host, run_id)["status"] == "succeeded"


def test_a_start_that_fails_with_no_instance_behind_it_is_transient_and_raises(make_host):
    from triggers.common import catalog, start_once

    host = make_host()
    run_id = event_run_id("on_files", "unlucky")

    class Unreachable:
        """The real client, except that starting fails as an unreachable Durable API does."""

        def __init__(self, client):
            self.client = client

        async def start_new(self, *args, **kwargs):
            raise ConnectionResetError("the Durable API went away")

        def __getattr__(self, name):
            return getattr(self.client, name)

    async def start():
        client = Unreachable(df.DurableOrchestrationClient(host.engine.client_binding))
        return await start_once(client, catalog(), "on_files", run_id, trigger="event")

    with pytest.raises(ConnectionResetError):
        asyncio.run_coroutine_threadsafe(start(), host.engine.loop).result(timeout=30)
    assert rejected(host) == {}


def test_a_run_id_given_to_the_api_is_checked_and_gets_the_run_prefix(make_host):
    host = make_host()
    for bad in ("a b", "a/b", "50%", "x" * 97, 7):
        status, reply, _ = call(host, "POST", "/api/runs/adhoc", {"run_id": bad})
        assert status == 400 and "run_id" in reply["error"] and "letters, digits" in str(reply["error"]), (bad, reply)
    status, started, _ = call(host, "POST", "/api/runs/adhoc", {"run_id": "backfill-7"})
    assert status == 202 and started["run_id"] == "run~backfill-7"
    assert wait_for_run(host, "run~backfill-7")["status"] == "succeeded"
    assert call(host, "POST", "/api/runs/adhoc", {"run_id": "run~backfill-7"})[0] == 409  # the id given back
    # an id the SDK would have to encode never reaches it: a URL that decodes to one names no run
    for odd in ("run~backfill-7%3FshowHistory=true", "run~backfill-7%20", "a%2Fb"):
        assert call(host, "GET", f"/api/runs/{odd}")[0] == 404, odd
        assert call(host, "POST", f"/api/runs/{odd}/cancel")[0] == 404, odd


def test_in_the_task_hub_runs_are_one_prefix_and_sort_after_every_service_run(make_host):
    """On the strict host, whose instance queries page in id order like the Azure Storage backend."""
    import urllib.request

    from tower.local.management import PREFIX

    host = make_host()
    started = [call(host, "POST", "/api/runs/adhoc", {})[1]["run_id"] for _ in range(3)]
    send(host, {"type": "files.landed", "data": {"day": "d1"}}, "m 1/é")  # a message id no URL takes as is
    settle(host)
    started.append(event_run_id("on_files", "m 1/é"))
    for run_id in started:
        assert wait_for_run(host, run_id)["status"] == "succeeded"

    def page(query: str) -> list[str]:
        with urllib.request.urlopen(f"{host.base_url}{PREFIX}instances?showInput=false&{query}", timeout=10) as reply:
            return [i["instanceId"] for i in json.loads(reply.read())]

    assert sorted(page("instanceIdPrefix=run~")) == sorted(started)
    everything = page("top=100")
    assert len(everything) == 2 * len(started)            # each run and its one service run
    assert everything[-len(started):] == sorted(started)  # id order: every service run first


def test_the_events_queue_is_an_app_setting(env, monkeypatch):
    from tower.errors import ConfigError

    monkeypatch.delenv("TOWER_EVENTS_QUEUE")
    with pytest.raises(ConfigError, match="app setting 'TOWER_EVENTS_QUEUE' is not set"):
        Host(load_app(REPO / "function_app.py"), env["home"], port=0, log=lambda line: None)
    monkeypatch.setenv("TOWER_EVENTS_QUEUE", "orders")
    host = Host(load_app(REPO / "function_app.py"), env["home"], port=0, log=lambda line: None)
    try:
        assert host.pump.entities == ["orders"]
    finally:
        host.stop()


def _wait(probe, timeout: float = 15):
    deadline = time.monotonic() + timeout
    while not (found := probe()):
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)
    return found
