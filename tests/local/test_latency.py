"""The latency model (TOWER_LOCAL_LATENCY): the Azure Storage backend's queue listeners poll with a
backoff up to host.json's maxQueuePollingInterval, per control queue, and a send wakes the sender's
own listener; the Durable Task Scheduler pushes. The engine delays what the model says."""

from __future__ import annotations

import json
import random
import time
from datetime import timedelta

import azure.durable_functions as df
import pytest

from tower.errors import EngineError
from tower.local import history as h
from tower.local.engine import Engine
from tower.local.latency import (
    AZURE_STORAGE,
    DURABLE_TASK_SCHEDULER,
    MIN_POLL_SECONDS,
    Latency,
    QueueListener,
    fnv1a,
    latency_from_env,
    partition_of,
    storage_settings,
)


def _host_json(tmp_path, **provider) -> object:
    path = tmp_path / "host.json"
    path.write_text(json.dumps({"version": "2.0", "extensions": {"durableTask": {"storageProvider": provider}}}))
    return path


def test_fnv1a_is_the_backends_hash():
    assert fnv1a("") == 2166136261            # the offset basis
    assert fnv1a("a") == 0xE40C292C           # the published FNV-1a 32-bit test vector
    assert fnv1a("foobar") == 0xBF9CF968
    assert partition_of("foobar", 16) == 0xBF9CF968 % 16


def test_an_idle_listener_backs_off_to_the_maximum_and_a_message_resets_it():
    listener = QueueListener(MIN_POLL_SECONDS, 5.0, random.Random(1), now=0.0)
    listener.idle_until(60.0)
    assert listener.interval == 5.0                        # backed off all the way
    assert 10 <= listener.polls <= 20                      # ~7 s of ramp, then one poll every 5 s
    at = listener.receive(61.0)
    assert 61.0 <= at <= 65.0 and at == listener.last       # the next poll of the 5-s grid
    assert listener.interval == MIN_POLL_SECONDS            # found a message: polls densely again
    assert listener.receive(at + 0.01) == pytest.approx(at + MIN_POLL_SECONDS)
    assert listener.receive(at) == at + MIN_POLL_SECONDS    # visible before the last poll: read by it


def test_a_send_wakes_the_senders_listener_at_once():
    listener = QueueListener(MIN_POLL_SECONDS, 30.0, random.Random(2), now=0.0)
    listener.idle_until(300.0)
    listener.wake(301.0)
    assert listener.receive(301.0) == 301.0


def test_the_parameters_come_from_host_json(tmp_path):
    assert storage_settings() == (5.0, 16)                          # the repository's host.json
    assert storage_settings(_host_json(tmp_path)) == (30.0, 4)      # Azure's defaults
    assert storage_settings(_host_json(tmp_path, maxQueuePollingInterval="00:01:00", partitionCount=2)) == (60.0, 2)
    with pytest.raises(EngineError, match="partitionCount must be an integer from 1 to 16"):
        storage_settings(_host_json(tmp_path, partitionCount=40))
    with pytest.raises(EngineError, match="not a TimeSpan"):
        storage_settings(_host_json(tmp_path, maxQueuePollingInterval="5 seconds"))


def test_a_longer_maximum_in_host_json_makes_timers_later(tmp_path):
    def mean_delay(span: str) -> float:
        model = Latency(AZURE_STORAGE, host_json=_host_json(tmp_path, maxQueuePollingInterval=span), seed=3)
        delays = []
        for k in range(200):             # timers firing in an idle night, one instance
            fire = 100.0 * (k + 1) + 7.3
            delays.append(model.delivered(f"svc-{k}", fire) - fire)
        return sum(delays) / len(delays)

    assert 1.5 < mean_delay("00:00:05") < 3.5          # uniform over the 5-s poll grid: ~2.5 s
    assert 10 < mean_delay("00:00:30") < 20            # ~15 s


def test_it_scales_with_the_time_scale(tmp_path):
    full = Latency(AZURE_STORAGE, seed=4)
    scaled = Latency(AZURE_STORAGE, seed=4, scale=0.01)
    fire = 1000.0
    assert scaled.delivered("x", fire * 0.01) - fire * 0.01 == pytest.approx((full.delivered("x", fire) - fire) * 0.01)


def test_the_scheduler_pushes_every_message_after_a_constant_delay():
    model = Latency(DURABLE_TASK_SCHEDULER)
    assert model.sent("x", 10.0)
    assert model.delivered("x", 10.0) == pytest.approx(10.03)
    assert model.delivered("x", 5000.0) == pytest.approx(5000.03)   # no polling, whatever the idle time
    model.idle_until(6000.0)
    assert model.stats() == {"queue_messages": 1, "queue_polls": 0, "storage_transactions": 0}


def test_the_setting_is_checked(monkeypatch):
    monkeypatch.delenv("TOWER_LOCAL_LATENCY", raising=False)
    assert latency_from_env() is None
    monkeypatch.setenv("TOWER_LOCAL_LATENCY", "azure")
    with pytest.raises(EngineError, match="TOWER_LOCAL_LATENCY='azure' is not a latency profile.*azure-storage"):
        latency_from_env()
    monkeypatch.setenv("TOWER_LOCAL_LATENCY", "azure-storage")
    monkeypatch.setenv("TOWER_LOCAL_LATENCY_WORKERS", "two")
    with pytest.raises(EngineError, match="TOWER_LOCAL_LATENCY_WORKERS='two'"):
        latency_from_env()


def _app():
    app = df.DFApp()
    bp = df.Blueprint()

    @bp.orchestration_trigger(context_name="context")
    def wait_then_call(context: df.DurableOrchestrationContext):
        yield context.create_timer(context.current_utc_datetime + timedelta(seconds=context.get_input()))
        yield context.call_activity("echo", "x")
        return "done"

    @bp.activity_trigger(input_name="value")
    def echo(value):
        return value

    app.register_functions(bp)
    return app


def _fired_late(engine, instance_id: str) -> float:
    """Seconds from a timer's FireAt to the start of the episode that saw it fire."""
    events = engine.history(instance_id)
    for i, event in enumerate(events):
        if event["EventType"] == h.TIMER_FIRED:
            started = next(e for e in reversed(events[:i]) if e["EventType"] == h.ORCHESTRATOR_STARTED)
            return (h.parse_time(started["Timestamp"]) - h.parse_time(event["FireAt"])).total_seconds()
    raise AssertionError("no timer fired")


def test_on_azure_storage_a_timer_fires_at_the_next_poll_and_the_hops_are_counted(tmp_path):
    model = Latency(AZURE_STORAGE, host_json=_host_json(tmp_path, maxQueuePollingInterval="00:00:01"),
                    seed=0, now=time.time())
    with Engine(_app(), tmp_path / "home", latency=model) as engine:
        engine.start_new("wait_then_call", "w", json.dumps(2.0))
        assert engine.wait("w", 15)["output"] == "done"
        late = _fired_late(engine, "w")
        # woken at the timer's send, the listener polls at ~0.05, 0.15, 0.3, 0.55, 1.0, ~1.9, ~2.9 s
        assert 0.3 <= late <= 1.0 + 0.05 + 0.5
        time.sleep(0.2)
        stats = engine.stats
        assert stats["queue_messages"] >= 4       # start, timer, work item, result
        assert stats["queue_polls"] > 10 and stats["storage_transactions"] > stats["queue_polls"]


def test_without_a_model_the_engine_is_as_fast_as_before(tmp_path, monkeypatch):
    monkeypatch.delenv("TOWER_LOCAL_LATENCY", raising=False)
    with Engine(_app(), tmp_path / "home") as engine:
        assert engine.latency is None
        engine.start_new("wait_then_call", "w", json.dumps(0.5))
        assert engine.wait("w", 15)["output"] == "done"
        assert _fired_late(engine, "w") < 0.2
        assert engine.stats["queue_messages"] == 0


def test_on_the_scheduler_every_hop_costs_the_push_delay(tmp_path):
    model = Latency(DURABLE_TASK_SCHEDULER, scale=10.0)      # 0.3 s a hop, to see it through the noise
    with Engine(_app(), tmp_path / "home", latency=model) as engine:
        started = time.monotonic()
        engine.start_new("wait_then_call", "w", json.dumps(0.0))
        assert engine.wait("w", 15)["output"] == "done"
        # start, timer, dispatch, result: four hops
        assert time.monotonic() - started >= 4 * 0.3
        assert 0.3 <= _fired_late(engine, "w") < 0.3 + 0.3


def test_a_simulated_cli_run_scales_the_model_with_its_time_scale(tmp_path, monkeypatch):
    from tower.local.driver import LocalEngine

    monkeypatch.setenv("TOWER_LOCAL_LATENCY", "azure-storage")
    with LocalEngine(tmp_path / "home", activity_workers=1, time_scale=0.01) as local:
        assert local.engine.latency.scale == 0.01
        assert local.engine.latency.hop == pytest.approx(0.05 * 0.01)
