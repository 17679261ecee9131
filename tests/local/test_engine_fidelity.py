"""The engine against the real SDK: scheduling order, event numbering and histories as the Durable
extension produces them (hand-checked), plus lifecycle operations and bad input."""

from __future__ import annotations

import asyncio
import json
import time

import pytest

from tests.local.apps import durable_app as app_module
from tower.errors import EngineError, InstanceExists, InstanceNotFound
from tower.local import history as h
from tower.local.engine import Engine


@pytest.fixture
def engine(tmp_path):
    app_module.reset()
    eng = Engine(app_module.make_app(), tmp_path / "home").start()
    yield eng
    eng.stop()


def start(engine, name, payload=None, instance_id=None):
    return engine.start_new(name, instance_id, json.dumps(payload))


def skeleton(events):
    """The history without episode markers: (type name, id, detail) per event."""
    out = []
    for e in events:
        kind = e["EventType"]
        if kind in (h.ORCHESTRATOR_STARTED, h.ORCHESTRATOR_COMPLETED):
            continue
        name = h.EVENT_TYPE_NAMES[kind]
        if kind in (h.TASK_SCHEDULED, h.SUB_CREATED):
            out.append((name, e["EventId"], e["Name"]))
        elif kind == h.TIMER_CREATED:
            out.append((name, e["EventId"]))
        elif kind in (h.TASK_COMPLETED, h.TASK_FAILED, h.SUB_COMPLETED, h.SUB_FAILED):
            out.append((name, e["TaskScheduledId"]))
        elif kind == h.TIMER_FIRED:
            out.append((name, e["TimerId"]))
        elif kind == h.EVENT_RAISED:
            out.append((name, e["Name"]))
        elif kind == h.EXECUTION_COMPLETED:
            out.append((name, e["OrchestrationStatus"]))
        else:
            out.append((name,))
    return out


def wait_for(predicate, timeout=5.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.02)
    raise AssertionError("condition not met in time")


def times(what):
    return {detail: t for w, detail, t in app_module.RECORD if w == what}


def test_naive_task_any_loop_is_serialised_and_a_zero_timer_fixes_it(engine):
    # d is ready when b ends (0.4 s) while c (0.8 s, after a) runs. The extension awaits each
    # top-level WhenAny in order, so the naive loop starts d only when WhenAny[c] completes.
    status = engine.wait(start(engine, "dag", {"timer": False}), 10)
    assert status["runtimeStatus"] == "Completed"
    started, ended = times("start"), times("end")
    assert started["d"] >= ended["c"] - 0.02
    assert started["d"] - ended["b"] > 0.3

    app_module.reset()
    status = engine.wait(start(engine, "dag", {"timer": True}), 10)
    assert status["output"] == ["a", "b", "d", "c"]
    started, ended = times("start"), times("end")
    assert started["d"] - ended["b"] < 0.15
    assert started["d"] < ended["c"]


def test_naive_loop_history_numbers_each_task_in_invocation_order(engine):
    iid = start(engine, "dag", {"timer": False})
    engine.wait(iid, 10)
    assert skeleton(engine.history(iid)) == [
        ("ExecutionStarted",), ("TaskScheduled", 0, "work"), ("TaskScheduled", 1, "work"),
        ("TaskCompleted", 0), ("TaskScheduled", 2, "work"),       # a done: c
        ("TaskCompleted", 1),                                       # b done: d waits behind WhenAny[c]
        ("TaskCompleted", 2), ("TaskScheduled", 3, "work"),       # c done: d at last
        ("TaskCompleted", 3), ("ExecutionCompleted", "Completed")]


def test_retry_schedules_a_timer_after_every_failure(engine):
    iid = start(engine, "retrying", "k:3")
    status = engine.wait(iid, 10)
    assert status["output"] == "ok after 3"
    assert skeleton(engine.history(iid)) == [
        ("ExecutionStarted",),
        ("TaskScheduled", 0, "flaky"), ("TaskFailed", 0), ("TimerCreated", 1), ("TimerFired", 1),
        ("TaskScheduled", 2, "flaky"), ("TaskFailed", 2), ("TimerCreated", 3), ("TimerFired", 3),
        ("TaskScheduled", 4, "flaky"), ("TaskCompleted", 4), ("ExecutionCompleted", "Completed")]


def test_retry_gives_up_after_the_last_attempt_and_its_timer(engine):
    iid = start(engine, "retrying", "k:9")
    status = engine.wait(iid, 10)
    assert status["output"] == "gave up: Activity function 'flaky' failed: RuntimeError: transient failure #3"
    events = skeleton(engine.history(iid))
    assert events[-4:] == [("TaskFailed", 4), ("TimerCreated", 5), ("TimerFired", 5),
                           ("ExecutionCompleted", "Completed")]
    assert [w for w, _, _ in app_module.RECORD].count("flaky") == 3
    failed = next(e for e in engine.history(iid) if e["EventType"] == h.TASK_FAILED)
    assert "transient failure #1" in failed["Details"]


def test_timers_fire_and_a_cancelled_timer_never_fires(engine):
    iid = start(engine, "timers")
    wait_for(lambda: any(e["EventType"] == h.TIMER_CREATED and e["EventId"] == 1 for e in engine.history(iid)))
    first = engine.history(iid)
    created = next(e for e in first if e["EventType"] == h.TIMER_CREATED and e["EventId"] == 0)
    fired_at = next(e for e in first if e["EventType"] == h.TIMER_FIRED)
    started = next(e for e in first if e["EventType"] == h.ORCHESTRATOR_STARTED)
    delay = (h.parse_time(fired_at["Timestamp"]) - h.parse_time(started["Timestamp"])).total_seconds()
    assert 0.2 <= delay < 0.6
    assert fired_at["FireAt"] == created["FireAt"]
    engine.raise_event(iid, "approve", json.dumps("yes"))
    status = engine.wait(iid, 5)
    assert status["output"] == {"approved": "yes"}
    assert skeleton(engine.history(iid)) == [
        ("ExecutionStarted",), ("TimerCreated", 0), ("TimerFired", 0), ("TimerCreated", 1),
        ("EventRaised", "approve"), ("ExecutionCompleted", "Completed")]
    with engine.store.read() as db:
        assert db.execute("SELECT COUNT(*) FROM inbox WHERE instance_id = ?", (iid,)).fetchone()[0] == 0


def test_sub_orchestrations_with_given_and_generated_ids_and_retry(engine):
    iid = start(engine, "parent")
    status = engine.wait(iid, 10)
    assert status["output"] == ["X", "Orchestrator function 'child' failed: child refused"]
    history = engine.history(iid)
    assert skeleton(history) == [
        ("ExecutionStarted",), ("SubOrchestrationInstanceCreated", 0, "child"),
        ("SubOrchestrationInstanceCompleted", 0),
        ("SubOrchestrationInstanceCreated", 1, "child"), ("SubOrchestrationInstanceFailed", 1),
        ("TimerCreated", 2), ("TimerFired", 2),
        ("SubOrchestrationInstanceCreated", 3, "child"), ("SubOrchestrationInstanceFailed", 3),
        ("TimerCreated", 4), ("TimerFired", 4), ("ExecutionCompleted", "Completed")]
    children = [e["InstanceId"] for e in history if e["EventType"] == h.SUB_CREATED]
    assert children[0] == iid + "-child"
    assert len(set(children)) == 3
    child = engine.status(children[0])
    assert child["runtimeStatus"] == "Completed" and child["output"] == "X"
    started = engine.history(children[0])[1]
    assert started["ParentInstance"]["OrchestrationInstance"]["InstanceId"] == iid
    assert engine.status(children[1])["runtimeStatus"] == "Failed"


def test_external_events_are_buffered_by_name_and_custom_status_is_kept(engine):
    iid = start(engine, "events")
    wait_for(lambda: engine.status(iid)["customStatus"] == {"stage": "waiting"})
    engine.raise_event(iid, "b", json.dumps(2))        # early: nobody waits for b yet
    time.sleep(0.2)
    assert engine.status(iid)["runtimeStatus"] == "Running"
    engine.raise_event(iid, "a", json.dumps(1))
    status = engine.wait(iid, 5)
    assert status["output"] == [1, 2]
    assert status["customStatus"] == {"stage": "done"}


def test_continue_as_new_starts_a_fresh_history_under_the_same_id(engine):
    iid = start(engine, "counter", 1)
    status = engine.wait(iid, 10)
    assert status["output"] == 3 and status["instanceId"] == iid
    assert [d for w, d, _ in app_module.RECORD if w == "start"] == ["c1", "c2", "c3"]
    history = engine.history(iid)
    assert json.loads(history[1]["Input"]) == 3
    assert skeleton(history) == [("ExecutionStarted",), ("TaskScheduled", 0, "work"), ("TaskCompleted", 0),
                                 ("ExecutionCompleted", "Completed")]


def test_unhandled_exception_fails_with_the_hosts_message(engine):
    status = engine.wait(start(engine, "failing"), 5)
    assert status["runtimeStatus"] == "Failed"
    assert status["output"] == "Orchestrator function 'failing' failed: boom"


def test_terminate_and_late_results_are_dropped(engine):
    iid = start(engine, "waiter")
    wait_for(lambda: engine.status(iid)["runtimeStatus"] == "Running")
    engine.terminate(iid, "no longer needed")
    status = engine.wait(iid, 5)
    assert status["runtimeStatus"] == "Terminated" and status["output"] == "no longer needed"
    assert skeleton(engine.history(iid))[-2:] == [("ExecutionTerminated",), ("ExecutionCompleted", "Terminated")]
    with pytest.raises(EngineError, match="no longer accepts"):
        engine.raise_event(iid, "go", "1")


def test_suspend_holds_events_until_resume(engine):
    iid = start(engine, "waiter")
    wait_for(lambda: engine.status(iid)["runtimeStatus"] == "Running")
    engine.suspend(iid, "maintenance")
    wait_for(lambda: engine.status(iid)["runtimeStatus"] == "Suspended")
    engine.raise_event(iid, "go", json.dumps("value"))
    time.sleep(0.3)
    assert engine.status(iid)["runtimeStatus"] == "Suspended"
    assert not any(e["EventType"] == h.EVENT_RAISED for e in engine.history(iid))
    engine.resume(iid, "done")
    status = engine.wait(iid, 5)
    assert status["output"] == "value"
    kinds = [s[0] for s in skeleton(engine.history(iid))]
    assert kinds.index("ExecutionSuspended") < kinds.index("ExecutionResumed") < kinds.index("EventRaised")


def test_terminating_a_suspended_instance_consumes_what_it_held(engine):
    iid = start(engine, "waiter")
    wait_for(lambda: engine.status(iid)["runtimeStatus"] == "Running")
    engine.suspend(iid)
    wait_for(lambda: engine.status(iid)["runtimeStatus"] == "Suspended")
    engine.raise_event(iid, "go", json.dumps("held"))
    time.sleep(0.3)
    engine.terminate(iid, "given up")
    assert engine.wait(iid, 5)["runtimeStatus"] == "Terminated"
    with engine.store.read() as db:
        assert db.execute("SELECT COUNT(*) FROM inbox WHERE instance_id = ?", (iid,)).fetchone()[0] == 0


def test_fired_cancelled_and_orphaned_timers_leave_no_bookkeeping(engine):
    fired = start(engine, "retrying", "k:3")                 # two retry timers fire
    assert engine.wait(fired, 10)["output"] == "ok after 3"
    cancelled = start(engine, "timers")                      # the hour-long deadline is cancelled
    wait_for(lambda: any(e["EventType"] == h.TIMER_CREATED and e["EventId"] == 1
                         for e in engine.history(cancelled)))
    engine.raise_event(cancelled, "approve", json.dumps("ok"))
    engine.wait(cancelled, 5)
    orphaned = start(engine, "timers")                       # terminated with the deadline pending
    wait_for(lambda: any(e["EventType"] == h.TIMER_CREATED and e["EventId"] == 1
                         for e in engine.history(orphaned)))
    time.sleep(0.2)
    engine.terminate(orphaned)
    engine.wait(orphaned, 5)
    assert engine._timer_seq == {}


def test_activity_failures_keep_no_secret_in_history_or_status(engine, monkeypatch):
    monkeypatch.setenv("DURABLE_APP_SECRET_TOKEN", "hunter2-very-secret")
    iid = start(engine, "leaking", "DURABLE_APP_SECRET_TOKEN")
    status = engine.wait(iid, 5)
    assert status["runtimeStatus"] == "Failed"
    assert "cannot connect with ***" in status["output"]
    failed = next(e for e in engine.history(iid) if e["EventType"] == h.TASK_FAILED)
    assert "cannot connect with ***" in failed["Reason"] and "cannot connect with ***" in failed["Details"]
    shown = json.dumps(engine.status(iid, show_history=True, show_history_output=True))
    assert "hunter2" not in shown and "hunter2" not in json.dumps(engine.history(iid))


def test_purge_removes_finished_instances_only(engine):
    done = start(engine, "sequence", {"n": 1})
    engine.wait(done, 5)
    running = start(engine, "waiter")
    wait_for(lambda: engine.status(running)["runtimeStatus"] == "Running")
    assert engine.purge(running) == 0
    assert engine.purge(done) == 1
    assert engine.status(done) is None and engine.history(done) == []
    assert engine.purge(done) == 0
    engine.terminate(running)
    engine.wait(running, 5)
    assert engine.purge_many(runtime_status=["Terminated"]) == 1


def test_a_changed_orchestrator_fails_with_a_non_determinism_error(engine):
    iid = start(engine, "changing")
    wait_for(lambda: any(e["EventType"] == h.TASK_COMPLETED for e in engine.history(iid)))
    time.sleep(0.1)
    app_module.TOGGLE["changed"] = True
    engine.raise_event(iid, "go")
    status = engine.wait(iid, 5)
    assert status["runtimeStatus"] == "Failed"
    assert status["output"] == (
        "Orchestrator function 'changing' failed: Non-Deterministic workflow detected: the history has "
        "TaskScheduled #0 'work', but replaying the orchestrator now schedules TaskScheduled 'flaky' with "
        "that id; orchestrator code must not change while an instance is in flight")


def test_activity_gets_a_working_durable_client(engine):
    status = engine.wait(start(engine, "spawner"), 10)
    child = engine.wait(status["output"], 5)
    assert child["name"] == "sequence" and child["output"] == ["S0"]


def test_fan_out_runs_activities_concurrently_and_batches_results(engine):
    iid = start(engine, "fan", {"n": 8})
    status = engine.wait(iid, 5)
    assert status["output"] == [f"F{i}" for i in range(8)]
    starts = sorted(times("start").values())
    assert starts[-1] - starts[0] < 0.05                 # 8 workers: all at once
    episodes = engine.store.instance_row(iid)["episodes"]
    assert episodes < 8                                  # results that arrive together share an episode


def test_bad_input_is_refused_clearly(engine):
    with pytest.raises(EngineError, match=r"no orchestrator function named 'nope' \(known: .*changing.*\)"):
        engine.start_new("nope")
    for bad in ["", "@x", "a/b", "a\\b", "a#b", "a?b", "a\x7fb", "a\nb", "x" * 101]:
        with pytest.raises(EngineError, match="invalid instance id"):
            engine.start_new("sequence", bad, "{}")
    iid = start(engine, "waiter", None, "same-id")
    with pytest.raises(InstanceExists, match="already"):
        engine.start_new("waiter", "same-id")
    with pytest.raises(InstanceNotFound, match="no orchestration instance with id 'missing'"):
        engine.raise_event("missing", "go")
    with pytest.raises(InstanceNotFound):
        engine.terminate("missing")
    assert engine.status("missing") is None
    engine.terminate(iid)
    engine.wait(iid, 5)
    assert engine.start_new("sequence", "same-id", json.dumps({"n": 1})) == "same-id"   # replaced when done
    assert engine.wait("same-id", 5)["output"] == ["S0"]


def test_context_json_has_the_hosts_shape(engine):
    seen = []
    handle = engine.orchestrators["sequence"]
    engine.orchestrators["sequence"] = lambda ctx: (seen.append(json.loads(ctx)), handle(ctx))[1]
    engine.wait(start(engine, "sequence", {"n": 1}, "shape"), 5)
    first, second = seen
    assert {k: first[k] for k in ("instanceId", "isReplaying", "parentInstanceId", "upperSchemaVersion",
                                  "upperSchemaVersionNew")} == {
        "instanceId": "shape", "isReplaying": False, "parentInstanceId": None, "upperSchemaVersion": 1,
        "upperSchemaVersionNew": 2}
    assert first["input"] == '{"n": 1}'
    assert [e["EventType"] for e in first["history"]] == [h.ORCHESTRATOR_STARTED, h.EXECUTION_STARTED]
    assert first["history"][1]["Version"] == "" and first["history"][0]["IsPlayed"] is False
    assert second["isReplaying"] is True
    assert [e["IsPlayed"] for e in second["history"]] == [True] * 4 + [False, False]


def test_other_processes_read_the_store_and_write_the_inbox(engine, tmp_path):
    from tower.local.store import enqueue_event, enqueue_terminate, read_list, read_status

    home = tmp_path / "home"
    assert json.loads((home / "engine.json").read_text())["base_url"] == engine.base_url
    iid = start(engine, "waiter", None, "cli-1")
    wait_for(lambda: (read_status(home, iid) or {}).get("runtimeStatus") == "Running")
    sent = time.monotonic()
    enqueue_event(home, iid, "go", json.dumps("from the CLI"))
    status = engine.wait(iid, 5)
    assert status["output"] == "from the CLI" and time.monotonic() - sent < 1.0
    other = start(engine, "waiter", None, "cli-2")
    wait_for(lambda: read_status(home, other)["runtimeStatus"] == "Running")
    enqueue_terminate(home, other, "cancelled by user")
    assert engine.wait(other, 5)["output"] == "cancelled by user"
    assert [s["instanceId"] for s in read_list(home, runtime_status=["Terminated"])] == ["cli-2"]
    assert [s["instanceId"] for s in read_list(home, prefix="cli-")] == ["cli-1", "cli-2"]
    with pytest.raises(InstanceNotFound):
        enqueue_event(home, "missing", "go")
    with pytest.raises(EngineError, match="Terminated"):
        enqueue_terminate(home, other)


def test_an_async_activity_running_at_a_stop_is_given_up_not_failed_and_leaves_no_task_pending(tmp_path):
    app_module.reset()
    first = Engine(app_module.make_app(), tmp_path / "home").start()
    iid = first.start_new("lingering", "linger-1", json.dumps(30))
    wait_for(lambda: any(what == "linger" for what, _, _ in app_module.RECORD))
    loop = first.loop
    first.stop()  # the last engine of the process: its loop stops
    wait_for(lambda: not loop.is_running())
    assert asyncio.all_tasks(loop) == set()  # else: "Task was destroyed but it is pending" at exit
    assert not [e for e in first.history(iid) if e["EventType"] == 6]  # not recorded as failed (TaskFailed)
    second = Engine(app_module.make_app(), tmp_path / "home").start()
    try:  # its work item is still there: the next engine runs the activity again
        wait_for(lambda: [what for what, _, _ in app_module.RECORD].count("linger") == 2)
        assert second.status(iid)["runtimeStatus"] == "Running"
    finally:
        second.stop()


def test_an_async_activity_stops_with_its_engine_though_another_engine_keeps_the_loop(tmp_path):
    """A stopped worker's functions do not go on: here they would call a host that is gone (and a
    failed Durable client call closes the SDK's one session under every other engine's calls)."""
    app_module.reset()
    other = Engine(app_module.make_app(), tmp_path / "other").start()
    try:
        first = Engine(app_module.make_app(), tmp_path / "home").start()
        first.start_new("lingering", "linger-1", json.dumps(30))
        wait_for(lambda: any(what == "linger" for what, _, _ in app_module.RECORD))
        first.stop()
        assert [what for what, _, _ in app_module.RECORD].count("linger cancelled") == 1
        assert other.loop.is_running()
    finally:
        other.stop()


def test_unfinished_instances_resume_after_a_clean_stop(tmp_path):
    app_module.reset()
    first = Engine(app_module.make_app(), tmp_path / "home").start()
    iid = first.start_new("waiter", "resume-1")
    wait_for(lambda: first.status(iid)["runtimeStatus"] == "Running")
    first.stop()
    assert not (tmp_path / "home" / "engine.json").exists()
    second = Engine(app_module.make_app(), tmp_path / "home").start()
    try:
        second.raise_event(iid, "go", json.dumps(7))
        assert second.wait(iid, 5)["output"] == 7
    finally:
        second.stop()
