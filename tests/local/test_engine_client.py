"""The unmodified DurableOrchestrationClient against the engine's management API, every route."""

from __future__ import annotations

import asyncio
import json
from datetime import datetime, timedelta, timezone

import aiohttp
import azure.durable_functions as df
import azure.functions as func
import pytest
from azure.durable_functions.models.utils.http_utils import _close_session

from tests.local.apps import durable_app as app_module
from tower.local.engine import Engine
from tower.local.management import LOST_REPLY, PREFIX


@pytest.fixture
def engine(tmp_path):
    app_module.reset()
    eng = Engine(app_module.make_app(), tmp_path / "home").start()
    yield eng
    eng.stop()       # also closes the SDK's module-global aiohttp session on the engine loop


def run(engine, coro_fn):
    """Run client code on the engine's loop, where the SDK's global session lives."""
    async def body():
        try:
            return await coro_fn(df.DurableOrchestrationClient(engine.client_binding))
        finally:
            await _close_session()
    return asyncio.run_coroutine_threadsafe(body(), engine.loop).result(30)


async def until(predicate, timeout=5.0):
    for _ in range(int(timeout / 0.05)):
        if await predicate():
            return
        await asyncio.sleep(0.05)
    raise AssertionError("condition not met in time")


def test_start_status_wait_and_history(engine):
    async def flow(client):
        iid = await client.start_new("sequence", None, {"n": 2})
        request = func.HttpRequest("POST", "http://localhost:7071/api/start", body=b"")
        response = await client.wait_for_completion_or_create_check_status_response(request, iid, 10000, 100)
        status = await client.get_status(iid, show_history=True, show_history_output=True)
        running = await client.start_new("waiter", "w-1")
        pending = await client.wait_for_completion_or_create_check_status_response(request, running, 300, 100)
        return iid, response, status, pending
    iid, response, status, pending = run(engine, flow)
    assert response.status_code == 200 and json.loads(response.get_body()) == ["S0", "S1"]
    assert status.runtime_status == df.OrchestrationRuntimeStatus.Completed
    assert status.input_ == {"n": 2} and status.output == ["S0", "S1"] and status.name == "sequence"
    kinds = [e["EventType"] for e in status.historyEvents]
    assert kinds == ["ExecutionStarted", "TaskCompleted", "TaskCompleted", "ExecutionCompleted"]
    assert status.historyEvents[1]["FunctionName"] == "work" and status.historyEvents[1]["Result"] == "S0"
    assert pending.status_code == 202
    assert json.loads(pending.get_body())["id"] == "w-1"
    # the client rewrites the origin to the request's, keeping the management path
    assert pending.headers["Location"].startswith("http://localhost:7071" + PREFIX + "instances/w-1?")


def test_events_terminate_suspend_resume_and_their_status_codes(engine):
    async def flow(client):
        results = {}
        ev = await client.start_new("events", "ev-1")
        await client.raise_event(ev, "a", {"x": 1})
        await client.raise_event(ev, "b", [2])
        await until(lambda: _done(client, ev))
        results["events"] = (await client.get_status(ev)).output
        w = await client.start_new("waiter", "w-2")
        await until(lambda: _status_is(client, w, "Running"))
        await client.suspend(w, "pause")
        await until(lambda: _status_is(client, w, "Suspended"))
        await client.raise_event(w, "go", "later")
        await client.resume(w, "go on")
        await until(lambda: _done(client, w))
        results["resumed"] = (await client.get_status(w)).output
        t = await client.start_new("waiter", "w-3")
        await until(lambda: _status_is(client, t, "Running"))
        await client.terminate(t, "stop it")
        await until(lambda: _done(client, t))
        results["terminated"] = (await client.get_status(t)).output
        await client.terminate(t, "again")                    # 410: the client accepts it silently
        with pytest.raises(Exception, match="is gone"):
            await client.raise_event(t, "go", 1)
        with pytest.raises(Exception, match="No instance with ID 'missing' found"):
            await client.terminate("missing", "x")
        with pytest.raises(Exception, match="No instance with ID missing found"):
            await client.raise_event("missing", "go", 1)
        with pytest.raises(Exception, match="No instance with ID 'missing' found"):
            await client.suspend("missing", "x")
        return results
    results = run(engine, flow)
    assert results == {"events": [{"x": 1}, [2]], "resumed": "later", "terminated": "stop it"}


async def _done(client, iid):
    return (await client.get_status(iid)).runtime_status in (
        df.OrchestrationRuntimeStatus.Completed, df.OrchestrationRuntimeStatus.Failed,
        df.OrchestrationRuntimeStatus.Terminated)


async def _status_is(client, iid, value):
    return (await client.get_status(iid)).runtime_status == df.OrchestrationRuntimeStatus(value)


def test_list_filters_and_purge(engine):
    async def flow(client):
        before = datetime.now(timezone.utc) - timedelta(seconds=1)
        for i in range(3):
            await client.start_new("sequence", f"seq-{i}", {"n": 1})
        await client.start_new("waiter", "other-1")
        await until(lambda: _done(client, "seq-2"))
        await until(lambda: _done(client, "seq-0"))
        await until(lambda: _done(client, "seq-1"))
        everything = await client.get_status_all()
        completed = await client.get_status_by(runtime_status=[df.OrchestrationRuntimeStatus.Completed])
        running = await client.get_status_by(created_time_from=before,
                                             runtime_status=[df.OrchestrationRuntimeStatus.Running,
                                                             df.OrchestrationRuntimeStatus.Pending])
        future = await client.get_status_by(created_time_from=datetime.now(timezone.utc) + timedelta(hours=1))
        one = await client.purge_instance_history("seq-0")
        none = await client.purge_instance_history("seq-0")
        many = await client.purge_instance_history_by(
            created_time_from=before, runtime_status=[df.OrchestrationRuntimeStatus.Completed])
        left = await client.get_status_all()
        missing = await client.get_status("seq-0")
        return everything, completed, running, future, one, none, many, left, missing
    everything, completed, running, future, one, none, many, left, missing = run(engine, flow)
    assert {s.instance_id for s in everything} == {"seq-0", "seq-1", "seq-2", "other-1"}
    assert {s.instance_id for s in completed} == {"seq-0", "seq-1", "seq-2"}
    assert [s.instance_id for s in running] == ["other-1"]
    assert future == []
    assert (one.instances_deleted, none.instances_deleted, many.instances_deleted) == (1, 0, 2)
    assert [s.instance_id for s in left] == ["other-1"]
    assert not missing


def test_bad_requests_get_the_hosts_status_codes(engine):
    async def flow(client):
        with pytest.raises(Exception, match="no orchestrator function named 'nope'"):
            await client.start_new("nope")
        with pytest.raises(Exception, match="invalid instance id"):
            await client.start_new("sequence", "@bad", 1)
        await client.start_new("waiter", "dup")
        with pytest.raises(Exception, match="already"):
            await client.start_new("waiter", "dup")
        base = engine.base_url + PREFIX
        async with aiohttp.ClientSession() as session:
            codes = {}
            for method, path in [("GET", "instances/missing"), ("POST", "orchestrators/nope"),
                                 ("DELETE", "instances"), ("GET", "instances?runtimeStatus=Bogus"),
                                 ("POST", "instances/dup/rewind"), ("POST", "instances/dup/explode"),
                                 ("GET", "instances?createdTimeFrom=yesterday"), ("POST", "orchestrators/waiter/dup")]:
                async with session.request(method, base + path) as response:
                    codes[(method, path)] = (response.status, await response.text())
        return codes
    codes = run(engine, flow)
    assert codes[("GET", "instances/missing")][0] == 404
    assert codes[("POST", "orchestrators/nope")][0] == 400
    assert codes[("POST", "orchestrators/waiter/dup")][0] == 500     # the extension does not map it
    assert "createdTimeFrom" in codes[("DELETE", "instances")][1] and codes[("DELETE", "instances")][0] == 400
    assert codes[("GET", "instances?runtimeStatus=Bogus")][0] == 400
    assert codes[("POST", "instances/dup/rewind")][0] == 501
    assert codes[("POST", "instances/dup/explode")][0] == 404
    assert codes[("GET", "instances?createdTimeFrom=yesterday")][0] == 400
    assert "Traceback" not in "".join(text for _, text in codes.values())


def test_unreliable_starts_are_slow_refused_or_lose_their_reply_as_in_azure(engine):
    async def trouble(name, instance_id):
        if instance_id == "slow":
            await asyncio.sleep(0.3)
        elif instance_id == "refused":
            raise RuntimeError("503 Server Busy (injected)")
        elif instance_id == "lost":
            return LOST_REPLY
        return None

    async def flow(client):
        began = asyncio.get_running_loop().time()
        await client.start_new("sequence", "slow", {"n": 1})
        slow = asyncio.get_running_loop().time() - began
        with pytest.raises(Exception) as refused:
            await client.start_new("sequence", "refused", {"n": 1})
        with pytest.raises(aiohttp.ClientConnectionError):
            await client.start_new("waiter", "lost")
        return slow, refused.value.args[0]

    with engine.unreliable_starts(trouble):
        slow, refused = run(engine, flow)
    assert slow >= 0.3 and engine.wait("slow", 5)["runtimeStatus"] == "Completed"
    assert refused["Message"] == "Something went wrong while processing your request"  # the catch-all 500
    assert "503 Server Busy" in refused["ExceptionMessage"] and engine.status("refused") is None
    assert engine.status("lost")["runtimeStatus"] in ("Pending", "Running")  # started, though no one heard
    assert engine.start_trouble is None  # only while the block ran
    assert run(engine, lambda client: client.start_new("sequence", "refused", {"n": 1})) == "refused"
