"""The local host is as strict as Azure where Tower's code must survive it: instance queries page,
a duplicate start fails with the extension's 500 (or replaces a finished instance), and the
Durable client's bare exceptions translate to Tower errors on the exact texts only."""

from __future__ import annotations

import asyncio
import json
import random

import aiohttp
import azure.durable_functions as df
import pytest
from azure.durable_functions.models.utils.http_utils import _close_session

from tests.local.apps import durable_app as app_module
from tower import durable_errors
from tower.errors import InstanceExists, InstanceGone, InstanceNotFound
from tower.local.engine import Engine
from tower.local.management import CONTINUATION_HEADER, PREFIX


@pytest.fixture
def engine(tmp_path):
    app_module.reset()
    eng = Engine(app_module.make_app(), tmp_path / "home").start()
    yield eng
    eng.stop()


def run(engine, coro_fn):
    async def body():
        try:
            return await coro_fn(df.DurableOrchestrationClient(engine.client_binding))
        finally:
            await _close_session()
    return asyncio.run_coroutine_threadsafe(body(), engine.loop).result(60)


async def _get(url: str, headers: dict | None = None) -> tuple[int, list, str | None]:
    async with aiohttp.ClientSession() as session, session.get(url, headers=headers or {}) as response:
        return response.status, await response.json(), response.headers.get(CONTINUATION_HEADER)


def test_instance_queries_page_like_the_extension(engine):
    ids = [f"i-{n:03d}" for n in range(130)]
    for iid in random.Random(7).sample(ids, len(ids)):        # created in a shuffled order
        engine.start_new("waiter", iid, json.dumps({"n": iid}))
    engine.start_new("waiter", "other", "1")
    base = engine.base_url + PREFIX + "instances"

    async def flow(client):
        first = await _get(base)
        second = await _get(base, {CONTINUATION_HEADER: first[2]})
        small = await _get(base + "?top=7&instanceIdPrefix=i-05&showInput=false")
        sdk_all = await client.get_status_all()
        sdk_by = await client.get_status_by(instance_id_prefix="i-")
        return first, second, small, sdk_all, sdk_by
    first, second, small, sdk_all, sdk_by = run(engine, flow)

    code, page, token = first
    assert code == 200 and len(page) == 100 and token                   # 100 per page, more remain
    assert [s["instanceId"] for s in page] == ids[:100]                 # instance-id order, not creation
    assert page[0]["input"] == {"n": "i-000"}                           # showInput defaults to true
    code, rest, token = second
    assert [s["instanceId"] for s in rest] == ids[100:] + ["other"] and token is None
    code, some, token = small
    assert [s["instanceId"] for s in some] == [f"i-05{n}" for n in range(7)] and token
    assert all(s["input"] is None for s in some)
    # The Python SDK reads one page and drops the token: Tower must never list runs this way.
    assert len(sdk_all) == 100 and [s.instance_id for s in sdk_all] == ids[:100]
    assert len(sdk_by) == 100


def test_a_start_on_a_running_instance_fails_with_the_extensions_500(engine):
    base = engine.base_url + PREFIX

    async def flow(client):
        await client.start_new("waiter", "dup", 1)
        await _until(lambda: _status(client, "dup", "Running"))
        with pytest.raises(Exception) as caught:
            await client.start_new("waiter", "dup", 2)
        async with aiohttp.ClientSession() as session, \
                session.post(base + "orchestrators/waiter/dup", json="3") as response:
            raw = response.status, await response.json()
        await client.suspend("dup", "hold")
        await _until(lambda: _status(client, "dup", "Suspended"))
        with pytest.raises(Exception) as suspended:
            await client.start_new("waiter", "dup", 4)
        return caught.value, raw, suspended.value, await client.get_status("dup")
    error, (code, body), suspended, status = run(engine, flow)
    assert type(error) is Exception                                    # the SDK's bare exception
    assert code == 500 and body["Message"] == "Something went wrong while processing your request"
    assert body["ExceptionMessage"] == "An Orchestration instance with the status Running already exists."
    assert body["ExceptionType"] == "DurableTask.Core.Exceptions.OrchestrationAlreadyExistsException"
    assert isinstance(durable_errors.translate(error), InstanceExists)
    translated = durable_errors.translate(suspended)
    assert isinstance(translated, InstanceExists) and "status Suspended" in str(translated)
    assert status.input_ == 1                                          # the running one is untouched


def test_a_start_on_a_finished_instance_replaces_it_and_runs_again(engine):
    async def flow(client):
        await client.start_new("sequence", "again", {"n": 1})
        await _until(lambda: _status(client, "again", "Completed"))
        await client.start_new("sequence", "again", {"n": 2})            # no error: replaced
        await _until(lambda: _status(client, "again", "Completed"))
        completed = await client.get_status("again", show_history=True)
        await client.start_new("waiter", "gone", 1)
        await client.terminate("gone", "stop")
        await _until(lambda: _status(client, "gone", "Terminated"))
        await client.start_new("sequence", "gone", {"n": 1})
        await _until(lambda: _status(client, "gone", "Completed"))
        return completed, await client.get_status("gone")
    completed, replaced = run(engine, flow)
    assert completed.input_ == {"n": 2} and completed.output == ["S0", "S1"]
    assert [e["EventType"] for e in completed.historyEvents].count("ExecutionStarted") == 1
    assert replaced.name == "sequence" and replaced.output == ["S0"]


def test_durable_client_failures_translate_on_the_exact_texts_only(engine):
    async def flow(client):
        errors = {}
        for name, call in [("missing", client.raise_event("nobody", "go")),
                           ("terminate_missing", client.terminate("nobody", "x"))]:
            try:
                await call
            except Exception as exc:
                errors[name] = exc
        await client.start_new("sequence", "done", {"n": 1})
        await _until(lambda: _status(client, "done", "Completed"))
        try:
            await client.raise_event("done", "go")
        except Exception as exc:
            errors["gone"] = exc
        return errors
    errors = run(engine, flow)
    assert isinstance(durable_errors.translate(errors["missing"]), InstanceNotFound)
    assert isinstance(durable_errors.translate(errors["terminate_missing"]), InstanceNotFound)
    gone = durable_errors.translate(errors["gone"])
    assert isinstance(gone, InstanceGone) and gone.__cause__ is errors["gone"]
    # Near misses stay what they are: only the extension's exact texts mean "exists".
    for text in ["connection already closed", "An Orchestration instance with the status Running already exists",
                 {"Message": "x", "ExceptionMessage": "lease already taken"}]:
        exc = Exception(text)
        assert durable_errors.translate(exc) is exc
    assert isinstance(durable_errors.translate(Exception(
        "An Orchestration instance with the ID x:y already exists.")), InstanceExists)   # the gRPC wording
    other = RuntimeError("An Orchestration instance with the status Running already exists.")
    assert durable_errors.translate(other) is other


def test_a_translated_client_call_raises_the_tower_error_and_lets_the_rest_through(engine):
    async def flow(client):
        seen = {}
        await client.start_new("waiter", "twice", 1)
        await _until(lambda: _status(client, "twice", "Running"))
        for name, call in [("exists", lambda: client.start_new("waiter", "twice", 2)),
                           ("missing", lambda: client.raise_event("nobody", "go")),
                           ("gone", lambda: client.raise_event("done", "go"))]:
            if name == "gone":
                await client.start_new("sequence", "done", {"n": 1})
                await _until(lambda: _status(client, "done", "Completed"))
            try:
                with durable_errors.translated():
                    await call()
            except Exception as exc:
                seen[name] = exc
        return seen
    seen = run(engine, flow)
    assert {name: type(exc) for name, exc in seen.items()} == {
        "exists": InstanceExists, "missing": InstanceNotFound, "gone": InstanceGone}
    assert all(type(exc.__cause__) is Exception for exc in seen.values())    # the SDK's own, kept
    with pytest.raises(Exception, match="connection already closed") as other:
        with durable_errors.translated():
            raise Exception("connection already closed")
    assert type(other.value) is Exception


def test_only_durable_errors_reads_the_sdks_failure_texts():
    """Branching on a word of the SDK's text elsewhere would misread unrelated failures."""
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    texts = ("already exists", "No instance with ID", "is gone: either", "OrchestrationAlreadyExists")
    readers = sorted(str(path.relative_to(root)) for folder in ("tower", "activities", "orchestrators", "triggers")
                     for path in (root / folder).rglob("*.py")
                     if not path.is_relative_to(root / "tower" / "local")      # the host writes them
                     and any(text in path.read_text() for text in texts))
    assert readers == ["tower/durable_errors.py"]


async def _status(client, iid, value):
    status = await client.get_status(iid)
    return status is not None and status.runtime_status == df.OrchestrationRuntimeStatus(value)


async def _until(predicate, timeout=10.0):
    for _ in range(int(timeout / 0.05)):
        if await predicate():
            return
        await asyncio.sleep(0.05)
    raise AssertionError("condition not met in time")


# ---------------------------------------------------------------------------------------- payloads

def _payload_app():
    """An orchestration whose payload sizes come from its input: "echo" bytes for the activity's
    result, "status" bytes of custom status, "out" bytes of output, "wait" for an event first."""
    app = df.DFApp()
    bp = df.Blueprint()

    @bp.activity_trigger(input_name="size")
    def blob(size: int) -> str:
        return "r" * size

    @bp.orchestration_trigger(context_name="context")
    def payloads(context: df.DurableOrchestrationContext):
        sizes = context.get_input()
        if sizes.get("status"):
            context.set_custom_status("s" * sizes["status"])
        if sizes.get("echo"):
            yield context.call_activity("blob", sizes["echo"])
        if sizes.get("wait"):
            yield context.wait_for_external_event("go")
        return "o" * sizes.get("out", 1)

    app.register_functions(bp)
    return app


MIB = 1024 * 1024


def test_azure_storage_accepts_big_payloads_and_counts_the_blob_offloads(tmp_path, monkeypatch):
    monkeypatch.delenv("TOWER_LOCAL_BACKEND", raising=False)
    with Engine(_payload_app(), tmp_path / "home") as engine:
        assert engine.backend == "azureStorage"
        engine.start_new("payloads", "big", json.dumps({"echo": 2 * MIB, "out": 50_000, "pad": "p" * 47_000}))
        assert engine.wait("big", 30)["runtimeStatus"] == "Completed"
        engine.start_new("payloads", "small", json.dumps({"echo": 10}))
        assert engine.wait("small", 30)["runtimeStatus"] == "Completed"
    stats = engine.stats
    assert stats["max_payload_bytes"] >= 2 * MIB
    # over 45 KB: the big start's input, the activity's result, the output (the inputs to blob are ints)
    assert stats["payloads_over_45kb"] == 3
    assert stats["activity_output_over_45kb"] == 1 and stats["activity_output_payloads"] == 2
    assert stats["orchestration_input_over_45kb"] == 1 and stats["orchestration_output_over_45kb"] == 1
    assert (stats["activity_input_payloads"], stats["activity_input_max_bytes"], stats["activity_input_over_45kb"]) \
        == (2, 7, 0)
    assert all(isinstance(value, (int, float)) for value in stats.values())   # benchmarks subtract them


def test_the_durable_task_scheduler_profile_refuses_payloads_over_1_mib(tmp_path, monkeypatch):
    monkeypatch.setenv("TOWER_LOCAL_BACKEND", "durableTaskScheduler")
    with Engine(_payload_app(), tmp_path / "home") as engine:
        assert engine.payload_limit == MIB

        async def flow(client):
            errors = []
            try:                                              # a start over the limit: refused
                await client.start_new("payloads", "huge-input", {"pad": "p" * MIB})
            except Exception as exc:
                errors.append(exc)
            await client.start_new("payloads", "waits", {"wait": True})
            try:
                await client.raise_event("waits", "go", "e" * (MIB + 1))
            except Exception as exc:
                errors.append(exc)
            return errors
        refused, event_refused = run(engine, flow)
        assert type(refused) is Exception and refused.args[0]["ExceptionType"] == "Grpc.Core.RpcException"
        assert "ResourceExhausted" in refused.args[0]["ExceptionMessage"]
        assert engine.status("huge-input") is None                      # nothing half-started
        assert type(event_refused) is Exception
        engine.raise_event("waits", "go", "1")
        assert engine.wait("waits", 10)["runtimeStatus"] == "Completed"

        engine.start_new("payloads", "big-result", json.dumps({"echo": MIB + 10}))
        failed = engine.wait("big-result", 30)
        assert failed["runtimeStatus"] == "Failed"
        assert "activity output is 1048588 bytes" in failed["output"]    # the task failed, then the run
        for iid, sizes, kind in [("big-output", {"out": MIB + 1}, "orchestration output"),
                                 ("big-status", {"status": MIB}, "custom status")]:
            engine.start_new("payloads", iid, json.dumps(sizes))
            status = engine.wait(iid, 30)
            assert status["runtimeStatus"] == "Failed" and f"{kind} is" in status["output"], status["output"]
        engine.start_new("payloads", "under", json.dumps({"echo": MIB - 100, "out": MIB - 100}))
        assert engine.wait("under", 30)["runtimeStatus"] == "Completed"


def test_an_unknown_backend_profile_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("TOWER_LOCAL_BACKEND", "cosmos")
    with pytest.raises(Exception, match="TOWER_LOCAL_BACKEND='cosmos' is not a backend profile.*azureStorage"):
        Engine(_payload_app(), tmp_path / "home")
