"""Failure and concurrency cases of a run, found in review of the run-ledger and submit-at-dispatch
changes (each failed before its fix): deadlines and cancels racing early reports and dispatches,
starts and reports lost to outages, slow and hanging submits, saves that land in parts, async
activities that end cancelled."""

import asyncio
import concurrent.futures
import contextlib
import json
import logging
import sqlite3
import threading
import time
import uuid
from datetime import datetime, timezone

import azure.durable_functions as df
import pytest
from azure.durable_functions.models.utils import http_utils

import activities.runs
from tests.faults import ends, run_is
from tests.runs.jobs import job_json
from tower import logcontext, names
from tower.contracts import ServiceReport, ServiceResult
from tower.errors import EngineError, RetryableError
from tower.local.management import LOST_REPLY
from tower.platforms.base import FunctionAdapter, Handle, Status
from tower.runner import store_run
from tower.runs.history import SqliteRunHistory
from tower.runs.ledger import ledger_from_environment, open_run, reconcile_run, store_plan
from tower.runs.plan import build_plan, service_instance_id
from tower.runtime import PLATFORM_THREADS
from tower.states import ServiceState
from tower.timestamps import iso, utcnow

from .conftest import result_of, run, run_plan, scheduled, sim_adapter, sim_catalog, statuses

T0 = datetime(2026, 12, 1, 12, 0, tzinfo=timezone.utc)


def timed_adapter(work_seconds: float, submit_seconds: float = 0.0, submitted: threading.Event | None = None):
    """A platform whose submit takes `submit_seconds` and whose work then succeeds after
    `work_seconds` (it says so in `poll_after`, as the simulator does)."""

    def submit(submission):
        time.sleep(submit_seconds)
        if submitted is not None:
            submitted.set()
        return Handle(remote_id=f"timed-{uuid.uuid4().hex[:8]}", data={"ends_at": time.time() + work_seconds})

    def poll(handle):
        left = handle.data["ends_at"] - time.time()
        return Status("running", poll_after=left) if left > 0 else Status("succeeded")

    return FunctionAdapter(submit=submit, poll=poll)


def slow_submits(seconds: float) -> tuple[FunctionAdapter, list[str]]:
    """A platform whose submits take `seconds` (the work then ends at once), and the idempotency
    keys submitted while a submit with the same key was still in flight."""
    work, lock, in_flight, overlaps = timed_adapter(work_seconds=0.0), threading.Lock(), {}, []

    def submit(submission):
        key = submission.idempotency_key
        with lock:
            in_flight[key] = in_flight.get(key, 0) + 1
            if in_flight[key] > 1:
                overlaps.append(key)
        time.sleep(seconds)
        with lock:
            in_flight[key] -= 1
        return work.submit(submission)

    return FunctionAdapter(submit=submit, poll=work.poll), overlaps


def cancel_while_b_runs(engine, plan: dict) -> None:
    """Once the ledger has b running, cancel the run; return when a cancel signal to b's service
    run, if it does not exist yet, has given up (~2 s of "No instance")."""
    ledger = ledger_from_environment(engine.home)
    wait_until(lambda: ledger.version(plan["run_id"]) is not None
               and ledger.load(plan["run_id"]).records["b"]["status"] == "running", what="b running")
    engine.raise_event(plan["run_id"], names.CANCEL_EVENT, None)
    wait_until(lambda: ledger.load(plan["run_id"]).meta["cancel"], what="the cancel in the ledger")
    time.sleep(sum(activities.runs.SIGNAL_RETRY_DELAYS) + 0.5)


def wait_until(condition, timeout: float = 10, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


@pytest.fixture
def table(azurite_table_url):
    """A fresh table in Azurite."""
    return f"{azurite_table_url}/review{uuid.uuid4().hex[:8]}"


@pytest.fixture
def platform(engine):
    """Stands an adapter in for the platform type 'timed' on the engine, for one test."""
    with contextlib.ExitStack() as stack:
        yield lambda adapter: stack.enter_context(engine.runtime.platforms.overridden("timed", adapter))


def service_ended(engine, run_id: str, service: str, timeout: float = 10) -> dict:
    """The status of the ended service_run orchestration (it may start late and end after the run)."""
    deadline = time.monotonic() + timeout
    while engine.status(service_instance_id(run_id, service), show_input=False) is None:
        assert time.monotonic() < deadline, f"{run_id}:{service} never started"
        time.sleep(0.01)
    return engine.wait(service_instance_id(run_id, service), max(deadline - time.monotonic(), 0.1))


def service_output(engine, run_id: str, service: str) -> dict:
    """What the service_run orchestration itself returned."""
    return service_ended(engine, run_id, service)["output"]


# A slow submit must not watch the work past the service's deadline (the watch ends at an absolute
# time the orchestrator sets), nor report a success it sees after it.
def test_a_slow_submit_never_watches_past_the_deadline(engine, platform):
    platform(timed_adapter(work_seconds=0.25, submit_seconds=0.2))
    catalog = sim_catalog({"late": {"platform": "tp", "type": "timed", "timeout": 0.3},
                           "after": {"deps": ["late"], "duration": 0.0}})
    result = run(engine, catalog)
    own = service_output(engine, result["run_id"], "late")
    assert own["status"] == "failed" and own["error"].startswith("timed out")  # what service_run decided
    # ...but the ledger took the success the submit saw after the deadline, and ran `after`:
    assert result["services"]["late"]["status"] == "failed", result["services"]["late"]
    assert result["services"]["after"]["status"] == "upstream_failed"


# The work a service run's own submit started after its deadline passed (the submit was slow) is
# cancelled with the handle that submit returned: nothing is left running on the platform.
def test_work_submitted_by_a_submit_that_outlived_the_deadline_is_cancelled(engine, platform):
    submits, cancels = [], []

    def submit(submission):
        submits.append(f"work-{len(submits)}")
        if len(submits) == 1:  # the submit at dispatch fails: service_run submits itself
            raise ConnectionError("connection reset (injected)")
        time.sleep(0.5)  # past the 0.2 s deadline
        return Handle(remote_id=submits[-1])

    platform(FunctionAdapter(submit=submit, poll=lambda handle: Status("running", poll_after=30.0),
                             cancel=lambda handle: cancels.append(handle.remote_id)))
    result = run(engine, sim_catalog({"slow": {"platform": "tp", "type": "timed", "timeout": 0.2}}))
    slow = result["services"]["slow"]
    assert (slow["status"], slow["error"]) == ("failed", "timed out after 0.2s"), slow
    assert (slow["remote_id"], cancels) == ("work-1", ["work-1"])


# A cancel the platform refuses does not hide why the service ended: the service fails for its own
# reason, and its output says the remote work may still run (and which).
def test_a_cancel_the_platform_refuses_is_noted_in_the_services_output(engine, platform, caplog):
    caplog.set_level(logging.INFO, logger="tower.orchestrators")

    def refuse(handle):
        raise RetryableError("cancel answered 503 Service Unavailable", platform="tp")

    work = timed_adapter(work_seconds=30.0)
    platform(FunctionAdapter(submit=work.submit, poll=work.poll, cancel=refuse))
    result = run(engine, sim_catalog({"late": {"platform": "tp", "type": "timed", "timeout": 0.2}}))
    late = result["services"]["late"]
    assert (late["status"], late["error"]) == ("failed", "timed out after 0.2s"), late
    assert late["output"] == (f"could not cancel remote run {late['remote_id']}: "
                              "cancel answered 503 Service Unavailable"), late
    # and the operator is told, once whatever the replays, which run and service may have left work running
    assert [(r.levelname, r.getMessage()) for r in caplog.records
            if r.getMessage().startswith(result["run_id"]) and "could not cancel" in r.getMessage()] == [
        ("WARNING", f"{result['run_id']}/late: {late['output']}")], caplog.text


# A push that the work ended wakes the service run once: a push that came early (the work still
# runs) costs one poll, and the next wait listens for the next push, not the same one again.
def test_an_early_push_costs_one_poll(engine):
    catalog = sim_catalog({"long": {"duration": 1.5}})
    plan = build_plan(catalog, "p", run_id=f"push-{uuid.uuid4().hex[:6]}")
    engine.start_new(names.PIPELINE_RUN, plan["run_id"], json.dumps(store_run(plan)))
    iid = plan["services"]["long"]["iid"]
    wait_until(lambda: scheduled(engine, iid), what="long's first look")
    time.sleep(0.2)
    engine.raise_event(iid, names.REMOTE_ENDED_EVENT, None)
    result = result_of(engine, plan["run_id"], 10)
    polls = sim_adapter(engine).poll_counts()[result["services"]["long"]["remote_id"]]
    assert result["services"]["long"]["status"] == "succeeded" and polls <= 4, polls


# A success the watching submit reported stands when a cancel wins the race in service_run at that
# moment: ledger, service result and run history agree. The watch is the first look's poll when the
# work was submitted at dispatch, the submit's own when the service run had to submit it.
@pytest.mark.parametrize("submitter", ["dispatch", "service_run"])
def test_a_success_reported_while_a_cancel_arrives_stands_everywhere(engine, platform, submitter):
    submitted = threading.Event()
    work = timed_adapter(work_seconds=0.35, submitted=submitted)
    if submitter == "service_run":
        refused, timed = [], work

        def submit(submission):  # the submit at dispatch fails: service_run submits, and watches
            if not refused:
                refused.append(submission.service)
                raise ConnectionError("connection reset (injected)")
            return timed.submit(submission)

        work = FunctionAdapter(submit=submit, poll=timed.poll)
    platform(work)
    catalog = sim_catalog({"only": {"platform": "tp", "type": "timed"}})
    plan = build_plan(catalog, "p", run_id=f"review-b-{uuid.uuid4().hex[:6]}")
    engine.start_new(names.PIPELINE_RUN, plan["run_id"], json.dumps(store_run(plan)))
    assert submitted.wait(5)
    engine.raise_event(plan["run_id"], names.CANCEL_EVENT, None)  # arrives while the submit lingers
    result = result_of(engine, plan["run_id"], 10)
    in_ledger = result["services"]["only"]["status"]
    own = service_output(engine, plan["run_id"], "only")["status"]
    history = {r.service: r.status for r in SqliteRunHistory(engine.home / "history.db").attempts(plan["run_id"])}
    assert (in_ledger, own, history["only"]) == (in_ledger, in_ledger, in_ledger), \
        f"ledger {in_ledger}, service_run {own}, history {history['only']}"
    assert scheduled(engine, plan["services"]["only"]["iid"])[0] == \
        (names.POLL_SERVICE if submitter == "dispatch" else names.SUBMIT_SERVICE)


# A service the ledger took off the ready queue but whose submit at dispatch waits its turn on a busy
# platform pool until after the cancel (and after the cancel signal to its service run, which does
# not exist yet, gave up: ~2 s of "No instance") must submit nothing: that submit, and then
# service_run's own, read the run's cancel flag first. (A platform that cannot stop work, such as an
# HTTP service whose submit is the work, would otherwise run it in full.) The pool is busy with
# platform calls that hang (an outage elsewhere), begun just as a's end is seen, so that a's report
# hands c and b to a pool with no thread free.
def test_a_service_dispatched_after_the_cancel_gave_up_submits_nothing(engine, platform):
    work, hanging, release = timed_adapter(work_seconds=0.0), [], threading.Event()

    def poll(handle):
        status = work.poll(handle)
        if status.state == "succeeded" and not hanging:  # before this thread reports a's end
            pool = engine.runtime.platform_threads
            hanging.extend(pool.submit(release.wait, 30) for _ in range(PLATFORM_THREADS))  # all of it, and more
        return status

    platform(FunctionAdapter(submit=work.submit, poll=poll))
    catalog = sim_catalog({"a": {"platform": "tp", "type": "timed"},
                           "c": {"deps": ["a"], "duration": 0.0, "expected": 10.0},
                           "b": {"deps": ["a"], "duration": 0.2}})  # c first in line, b behind it
    plan = build_plan(catalog, "p", run_id=f"review-c-{uuid.uuid4().hex[:6]}")
    engine.start_new(names.PIPELINE_RUN, plan["run_id"], json.dumps(store_run(plan)))
    try:
        cancel_while_b_runs(engine, plan)
        assert hanging and not any(call.done() for call in hanging)
    finally:
        release.set()
    result = result_of(engine, plan["run_id"], 10)
    assert result["services"]["b"]["status"] == "cancelled", result["services"]["b"]
    assert result["services"]["b"]["remote_id"] is None  # nothing was submitted
    assert result["status"] == "cancelled"


# A service whose end never reaches the ledger (its report failed LEDGER_RETRY times) must not hang
# the run: pipeline_run's reconcile finds the ended service run and records its result.
def test_a_report_lost_to_an_outage_is_recovered_by_the_reconcile(engine, ledger_faults, monkeypatch):
    import orchestrators.pipeline

    # the same outage, shorter: 2 tries 10 ms apart instead of 10 tries 1 s apart
    monkeypatch.setattr(orchestrators.pipeline, "LEDGER_RETRY",
                        df.RetryOptions(first_retry_interval_in_milliseconds=10, max_number_of_attempts=2))
    # the early report and both REPORT_SERVICE tries cannot write; the reconcile's write can
    outage = ledger_faults.fail("save", sqlite3.OperationalError("disk I/O error"), times=3, when=ends("only"))
    plan = build_plan(sim_catalog({"only": {"duration": 0.0}}), "p", run_id=f"review-d-{uuid.uuid4().hex[:6]}")
    plan["reconcile_after"] = 0.5  # reconcile soon, not after a minute
    engine.start_new(names.PIPELINE_RUN, plan["run_id"], json.dumps(store_run(plan)))
    try:
        service_ended(engine, plan["run_id"], "only")
        assert result_of(engine, plan["run_id"], 5)["services"]["only"]["status"] == "succeeded"
        assert outage.failed == 3, f"{outage.failed} report(s) met the outage"
    finally:
        if engine.status(plan["run_id"])["runtimeStatus"] not in ("Completed", "Failed", "Terminated"):
            engine.terminate(plan["run_id"], "review test cleanup")


# A Table save of more than 99 records lands in several transactions; when a later one fails, the
# retried report must complete the cascade (restore derives upstream_failed from the records).
def test_a_failure_cascade_cut_short_is_completed_by_the_retry(table):
    from azure.core.exceptions import HttpResponseError

    from tests.runs.test_ledger_table import open_ledger
    from tower.runs.ledger import create_run, finish_service, open_run

    ledger = open_ledger(table)
    downstream = [f"d{i:03d}" for i in range(150)]
    services = {"root": [], **{name: ["root"] for name in downstream}}
    plan = {"run_id": "cascade", "pipeline": "p", "platforms": {"x": {"max_concurrency": None}},
            "services": {name: {"deps": deps, "expected": 1.0, "platform": "x", "iid": f"cascade:{name}"}
                         for name, deps in services.items()}}
    create_run(ledger, plan, {name: job_json("cascade", name) for name in services}, T0)
    open_run(ledger, plan["run_id"], T0)

    real_save, real_submit = ledger.save, ledger.table.submit_transaction
    transactions = []

    def save(run_id, version, meta, records):
        # `changes` come in a set's order: here the failed service's own record is in the first
        # transaction (as in 99 of 151 orders)
        return real_save(run_id, version, meta, {"root": records["root"], **records})

    def submit_transaction(operations, **kwargs):
        transactions.append(len(operations))
        if len(transactions) == 2:
            raise HttpResponseError(message="503 Server Busy (injected)")
        return real_submit(operations, **kwargs)

    ledger.save, ledger.table.submit_transaction = save, submit_transaction
    failed = ServiceResult("root", ServiceState.FAILED, attempts=1, error="boom")
    with pytest.raises(HttpResponseError):
        finish_service(ledger, "cascade", "root", failed, T0)
    ledger.save, ledger.table.submit_transaction = real_save, real_submit
    step = finish_service(open_ledger(table), "cascade", "root", failed, T0)  # the activity's retry
    records = open_ledger(table).load("cascade").records
    pending = [name for name, record in records.items() if record["status"] == "pending"]
    assert step.done and step.status == "failed", f"{len(pending)} service(s) pending for ever"


def _cancelling_app():
    import azure.durable_functions as df
    import azure.functions as func

    app = df.DFApp(http_auth_level=func.AuthLevel.ANONYMOUS)

    @app.activity_trigger(input_name="value")
    async def cancelled_inside(value: str) -> str:
        raise asyncio.CancelledError()  # e.g. a library cancelling the task it runs in

    @app.orchestration_trigger(context_name="context")
    def calls_it(context):
        try:
            yield context.call_activity("cancelled_inside", "x")
        except Exception as exc:  # noqa: BLE001 - the orchestrator must hear of the failure
            return f"failed: {exc}"
        return "completed"

    return app


# An async activity whose coroutine ends cancelled is recorded as failed, not left pending forever.
def test_an_async_activity_ending_cancelled_is_recorded_as_failed(tmp_path):
    import logging

    from tower.local.engine import Engine

    logging.disable(logging.WARNING)
    try:
        engine = Engine(_cancelling_app(), tmp_path / "home").start()
    finally:
        logging.disable(logging.NOTSET)
    try:
        instance = engine.start_new("calls_it", "cancel-inside", json.dumps(None))
        status = engine.wait(instance, 3)
        assert status["output"].startswith("failed:")
    finally:
        engine.stop()


# A submit at dispatch that fails (here: the connection drops) is not the end: the service run
# submits the same attempt itself, with the same idempotency key, so the platform can never run
# it twice, and the service's attempts do not count the lost submit.
def test_a_failed_submit_at_dispatch_is_made_again_by_the_service_run_with_the_same_key(engine, platform):
    keys = []
    work = timed_adapter(work_seconds=0.05)

    def flaky_submit(submission):
        keys.append(submission.idempotency_key)
        if len(keys) == 1:
            raise ConnectionError("connection reset by peer")
        return work.submit(submission)

    platform(FunctionAdapter(submit=flaky_submit, poll=work.poll))
    result = run(engine, sim_catalog({"only": {"platform": "tp", "type": "timed"}}))
    only = result["services"]["only"]
    assert (result["status"], only["status"], only["attempts"]) == ("succeeded", "succeeded", 1)
    assert keys == [f"{result['run_id']}/only/1"] * 2
    assert scheduled(engine, service_instance_id(result['run_id'], "only")) == [names.SUBMIT_SERVICE]


# The deadline counts from the submit at dispatch. A slow submit of one service (here 1 s) must not
# hold back the service run of another (dispatches do not wait for each other), and a service run
# that starts late anyway must not fail work its first look finds done, well inside its timeout.
def test_work_done_well_in_time_is_not_timed_out_because_its_service_run_started_late(engine, platform):
    platform(timed_adapter(work_seconds=0.0, submit_seconds=1.0))
    catalog = sim_catalog({"slow_submit": {"platform": "tp", "type": "timed", "expected": 10.0},
                           "quick": {"duration": 0.0, "timeout": 0.5}})
    result = run(engine, catalog)
    quick = result["services"]["quick"]
    assert quick["status"] == "succeeded", f"quick {quick['status']}: {quick['error']}"


# A dispatch whose submit is slow (an HTTP submit can take minutes with its retries) is not a lost
# start: the reconcile meanwhile (after `reconcile_after`, 1 min in Azure) must not start its service
# run, whose submit would go out beside the one in flight (same key, but a platform's dedup need not
# be atomic: Snowflake's is a lookup by query tag), nor replace a service run that already ended.
def test_a_slow_submit_at_dispatch_is_not_taken_for_a_lost_start(engine, platform):
    adapter, overlaps = slow_submits(1.0)
    platform(adapter)
    catalog = sim_catalog({"a": {"duration": 0.0},
                           "slow": {"deps": ["a"], "platform": "tp", "type": "timed", "expected": 10.0},
                           "quick": {"deps": ["a"], "duration": 0.0}})
    plan = build_plan(catalog, "p", run_id=f"review-e-{uuid.uuid4().hex[:6]}")
    plan["reconcile_after"] = 0.3  # as in Azure after 1 min, here while the submit is in flight
    engine.start_new(names.PIPELINE_RUN, plan["run_id"], json.dumps(store_run(plan)))
    result = result_of(engine, plan["run_id"], 20)
    assert statuses(result) == {"a": "succeeded", "slow": "succeeded", "quick": "succeeded"}
    assert overlaps == [], f"submitted beside a submit in flight: {overlaps}"
    assert scheduled(engine, service_instance_id(plan['run_id'], "slow")) == [names.POLL_SERVICE]  # one service run, which polled


# A service whose cancel signal found no instance (its service run was being started) is stopped by
# its first look at the work, which reads the run's cancel flag; when that look fails retryably
# (here the platform's cancel answers 503 once), the next look must read the flag again.
def test_a_failed_first_look_does_not_lose_the_cancel(engine, platform):
    catalog = sim_catalog({"a": {"duration": 0.0}, "b": {"deps": ["a"], "platform": "tp", "type": "timed"}})
    plan = build_plan(catalog, "p", run_id=f"review-g-{uuid.uuid4().hex[:6]}")
    work, cancels = timed_adapter(work_seconds=1.5), []

    def cancel(handle):
        cancels.append(handle.remote_id)
        if len(cancels) == 1:
            raise RetryableError("cancel answered 503 Service Unavailable", platform="tp")

    platform(FunctionAdapter(submit=work.submit, poll=work.poll, cancel=cancel))
    b, release = service_instance_id(plan["run_id"], "b"), threading.Event()

    async def slow_start(name, instance_id):  # the Durable HTTP API creates b's service run late
        while instance_id == b and not release.is_set():
            await asyncio.sleep(0.02)

    with engine.unreliable_starts(slow_start):
        try:
            engine.start_new(names.PIPELINE_RUN, plan["run_id"], json.dumps(store_run(plan)))
            cancel_while_b_runs(engine, plan)
        finally:
            release.set()
    result = result_of(engine, plan["run_id"], 10)
    b = service_ended(engine, plan["run_id"], "b")["output"]
    assert b["status"] == "cancelled", f"b {b['status']} after the run was cancelled (cancel calls: {len(cancels)})"
    assert result["status"] == "cancelled"


# The deadline counts from the submit at dispatch. When the service run itself starts after it
# (queues, an outage), work its first look finds done stands: it was done in time as far as anyone
# can tell, and Tower's own delay must not fail it. Work still running then is timed out.
def test_work_found_done_by_a_service_run_started_after_the_deadline_stands(engine):
    async def late_start(name, instance_id):  # the Durable HTTP API takes 0.4 s to create them
        if instance_id.endswith((":done", ":running")):
            await asyncio.sleep(0.4)

    with engine.unreliable_starts(late_start):
        result = run(engine, sim_catalog({"done": {"duration": 0.0, "timeout": 0.2},
                                          "running": {"duration": 5.0, "timeout": 0.2}}))
    assert result["services"]["done"]["status"] == "succeeded", result["services"]["done"]
    running = result["services"]["running"]
    assert running["status"] == "failed" and running["error"].startswith("timed out after")
    assert running["remote_id"] in sim_adapter(engine).cancelled_remote_ids()


def _at(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


# A store hiccup (SQLite "database is locked", a Table 503) while the first look reads the run's
# cancel flag must not fail healthy work: an unreadable flag counts as unset.
def test_a_ledger_hiccup_at_the_first_look_does_not_fail_the_service(engine, ledger_faults):
    plan = build_plan(sim_catalog({"only": {"duration": 0.05}}), "p", run_id=f"review-h-{uuid.uuid4().hex[:6]}")
    # the run's second flag read: the first is the submit at dispatch's, the second the first look's
    hiccup = ledger_faults.fail("meta", sqlite3.OperationalError("database is locked"), skip=1,
                                when=run_is(plan["run_id"]))
    result = run_plan(engine, plan)
    only = result["services"]["only"]
    assert hiccup.failed == 1, "the first look did not read the cancel flag"
    assert only["status"] == "succeeded", f"only {only['status']}: {only['error']}"
    assert only["remote_id"] and scheduled(engine, plan["services"]["only"]["iid"]) == [names.POLL_SERVICE]


# A repeated report (REPORT_SERVICE after an early report whose starts failed, or an activity retry)
# names every running service in `ensure`; it must not start the service run of one whose submit at
# dispatch, by another report, is still in flight (its submit would go out beside that one). Here the
# Durable HTTP API refuses c's start and every start tried again in place (`START_RETRY_DELAYS`,
# 7.5 s in all), so b's early report fails and b's service run reports again while slow's submit
# (10 s) is still in flight; that report's `ensure` starts c.
def test_a_repeated_report_does_not_start_a_service_whose_dispatch_is_still_submitting(engine, platform):
    adapter, overlaps = slow_submits(sum(activities.runs.START_RETRY_DELAYS) + 2.5)
    platform(adapter)
    starts_of_c = []

    async def refused(name, instance_id):
        if instance_id.endswith(":c"):
            starts_of_c.append(instance_id)
            if len(starts_of_c) <= 1 + len(activities.runs.START_RETRY_DELAYS):
                raise RuntimeError("503 Server Busy: the storage account is throttling (injected)")
        return None

    # a's early report dispatches b (first in line) and slow (its submit in flight for 10 s);
    # b ends at once, its early report dispatches c, whose starts all fail, so b's service run reports again
    catalog = sim_catalog({"a": {"duration": 0.0}, "b": {"deps": ["a"], "duration": 0.0, "expected": 10.0},
                           "slow": {"deps": ["a"], "platform": "tp", "type": "timed", "expected": 1.0},
                           "c": {"deps": ["b"], "duration": 0.0}})
    with engine.unreliable_starts(refused):
        result = run(engine, catalog)
    run_id = result["run_id"]
    assert len(starts_of_c) == 2 + len(activities.runs.START_RETRY_DELAYS), starts_of_c  # and the ensure's
    assert scheduled(engine, service_instance_id(run_id, "b")) == [names.POLL_SERVICE, names.REPORT_SERVICE], \
        "b's early report did not fail: the scenario did not happen"
    assert result["status"] == "succeeded", result
    assert overlaps == [], f"submitted beside a submit at dispatch still in flight: {overlaps}"
    assert scheduled(engine, service_instance_id(run_id, "slow")) == [names.POLL_SERVICE]


# An invocation that dispatched several services ends (raises) only once every dispatch of its step
# has settled: in Azure, work that outlives its invocation may be cut off when the host recycles the
# worker, and a dispatch cut off before it settles leaves its service counted as still dispatching (no
# ensure starts it for the dispatch grace) when the retry comes. Here a's early report dispatches bad, whose starts
# the Durable HTTP API refuses (each try of `START_RETRY_DELAYS`, 7.5 s in all), and slow, whose start
# is still under way when bad's last try is refused.
def test_an_early_report_fails_only_once_every_dispatch_of_its_step_has_settled(engine, caplog):
    caplog.set_level(logging.INFO, logger="tower.activities")
    catalog = sim_catalog({"a": {"duration": 0.0}, "bad": {"deps": ["a"], "duration": 0.0},
                           "worse": {"deps": ["a"], "duration": 0.0}, "slow": {"deps": ["a"], "duration": 0.0}})
    plan = build_plan(catalog, "p", run_id=f"review-act-{uuid.uuid4().hex[:6]}")
    run_id, tries = plan["run_id"], 1 + len(activities.runs.START_RETRY_DELAYS)
    bad, worse, slow = (service_instance_id(run_id, name) for name in ("bad", "worse", "slow"))
    starts = {bad: 0, worse: 0}

    async def trouble(name, instance_id):
        if instance_id in starts:
            starts[instance_id] += 1
            if starts[instance_id] <= tries:  # every try of its dispatch; the repeated report's ensure starts it
                raise RuntimeError("503 Server Busy: the storage account is throttling (injected)")
        elif instance_id == slow:  # under way until well after the last tries were refused
            while min(starts.values()) < tries:
                await asyncio.sleep(0.02)
            await asyncio.sleep(0.5)
        return None

    class WhenItFails(logging.Handler):
        """What the early report's failure finds done, the moment `_reported` hears of it."""

        def __init__(self):
            super().__init__(logging.WARNING)
            self.found = []

        def emit(self, record):
            message = record.getMessage()
            if getattr(record, logcontext.RUN_ID, None) == run_id and "early report dispatched failed" in message:
                self.found.append({"slow started": engine.status(slow, show_input=False) is not None,
                                   "slow dispatching": slow in engine.runtime.ledger.dispatches})

    at_failure, logger = WhenItFails(), logging.getLogger("tower.activities")
    logger.addHandler(at_failure)
    try:
        with engine.unreliable_starts(trouble):
            result = run_plan(engine, plan, 30)
    finally:
        logger.removeHandler(at_failure)
    assert scheduled(engine, service_instance_id(run_id, "a")) == [names.POLL_SERVICE, names.REPORT_SERVICE], \
        "a's early report did not fail: the scenario did not happen"
    assert at_failure.found == [{"slow started": True, "slow dispatching": False}], \
        "the early report's act raised while another dispatch of its step was still under way"
    assert statuses(result) == {"a": "succeeded", "bad": "succeeded", "worse": "succeeded", "slow": "succeeded"}
    assert starts == {bad: tries + 1, worse: tries + 1}, starts  # and the repeated report's ensure
    # each dispatch that failed for good is named (the activity's own error is the first one's only)
    gave_up = sorted((r.levelname, r.getMessage()) for r in caplog.records if "could not start service run" in r.getMessage())
    assert [(level, text.split(": {")[0]) for level, text in gave_up] == [
        ("WARNING", f"run {run_id}: could not start service run {iid}") for iid in sorted((bad, worse))], caplog.text
    assert all("503 Server Busy: the storage account is throttling (injected)" in text for _, text in gave_up)
    # the operator reads that the early report failed, once, of this run (a's service run reports again)
    said = f"{run_id}: starting what an early report dispatched failed, service_run will report: "
    failed = [r for r in caplog.records
              if getattr(r, logcontext.RUN_ID, None) == run_id and "early report dispatched failed" in r.getMessage()]
    assert [(r.levelname, r.getMessage().startswith(said), getattr(r, logcontext.SERVICE, None))
            for r in failed] == [("WARNING", True, "a")], caplog.text
    assert "503 Server Busy: the storage account is throttling (injected)" in failed[0].getMessage()


# Two ensures may find the same lost start at once (a reconcile, and a repeated report, on one host
# or two) and both start its service run: Durable creates it once and refuses the other start (an
# "already exists" 500, `InstanceExists` here), which counts nothing and says so.
def test_two_ensures_that_find_the_same_start_lost_start_it_once(engine, caplog):
    caplog.set_level(logging.INFO, logger="tower.activities")
    plan = build_plan(sim_catalog({"b": {"duration": 0.5}}), "p", run_id=f"review-twins-{uuid.uuid4().hex[:6]}")
    run_id, ledger = plan["run_id"], engine.runtime.ledger
    b, arrived = service_instance_id(run_id, "b"), []
    store_run(plan, ledger)
    taken = open_run(ledger, run_id, utcnow())    # b taken off the ready queue here...
    ledger.dispatches.settled(taken.start)        # ...and its dispatch lost before it started b's service run
    steps = [reconcile_run(ledger, run_id, utcnow()) for _ in range(2)]
    assert [(list(step.ensure), step.dispatching) for step in steps] == [([b], frozenset())] * 2

    async def side_by_side(name, instance_id):  # both starts in flight; the second reaches Durable last
        if instance_id == b:
            arrived.append(instance_id)
            mine, until = len(arrived), time.monotonic() + 5
            while len(arrived) < 2 and time.monotonic() < until:
                await asyncio.sleep(0.01)
            if mine == 2:
                await asyncio.sleep(0.1)
        return None

    async def both():
        client = df.DurableOrchestrationClient(engine.client_binding)
        return await asyncio.gather(*(activities.runs.act(client, run_id, step) for step in steps))

    with engine.unreliable_starts(side_by_side):
        summaries = asyncio.run_coroutine_threadsafe(both(), engine.loop).result(timeout=15)
    assert len(arrived) == 2, "the two ensures did not both start b's service run"
    assert sorted(summary.started for summary in summaries) == [0, 1]
    wait_until(lambda: ledger.load(run_id).records["b"]["status"] == "succeeded", what="b's service run reported")
    assert scheduled(engine, b).count(names.SUBMIT_SERVICE) == 1
    said = [(r.levelname, r.getMessage(), getattr(r, logcontext.RUN_ID, None), getattr(r, logcontext.SERVICE, None))
            for r in caplog.records if "already started" in r.getMessage()]
    assert said == [("INFO", f"run {run_id}: service run {b} already started", run_id, "b")], caplog.text


# A start whose reply was lost took effect: the dispatch looks before it starts again, since a start
# over a service run that already ended would replace it and watch its work a second time.
def test_a_start_whose_reply_was_lost_is_not_made_again(engine, caplog):
    caplog.set_level(logging.INFO, logger="tower.activities")
    starts = []

    async def reply_lost(name, instance_id):
        if instance_id.endswith(":b"):
            starts.append(instance_id)
            if len(starts) == 1:
                return LOST_REPLY   # b's service run is created; the caller never hears of it
        return None

    with engine.unreliable_starts(reply_lost):
        result = run(engine, sim_catalog({"a": {"duration": 0.0}, "b": {"deps": ["a"], "duration": 0.0}}))
        wait_until(lambda: service_instance_id(result["run_id"], "b") not in engine.runtime.ledger.dispatches,
                   what="b's dispatch settled")  # b ran, and ended, while its dispatch waited to try again
    assert result["status"] == "succeeded", result
    assert len(starts) == 1, f"b's service run was started {len(starts)} times"
    b = result["services"]["b"]
    assert sim_adapter(engine).poll_counts().get(b["remote_id"], 0) <= 1
    # the operator reads that a start failed and what it then found, once each, of this run and service
    b_run = service_instance_id(result["run_id"], "b")
    said = [(r.levelname, r.getMessage(), getattr(r, logcontext.RUN_ID, None))
            for r in caplog.records if b_run in r.getMessage()]
    assert said == [("WARNING", f"run {result['run_id']}: starting service run {b_run} failed, trying again: "
                                "Server disconnected", result["run_id"]),
                    ("INFO", f"run {result['run_id']}: service run {b_run} was started; only the reply was lost",
                     result["run_id"])], caplog.text


# Only the dispatch has the handle of the work it submitted, so a failed start of its service run is
# tried again in place: a service run started later without it would know nothing of that work and,
# if the run was cancelled meanwhile, submit nothing and leave the work running on its platform.
def test_work_submitted_at_dispatch_is_cancelled_even_when_its_first_start_failed(engine, platform):
    submits, cancels = [], []

    def submit(submission):
        submits.append(f"work-{len(submits)}")
        return Handle(remote_id=submits[-1], data={"ends_at": time.time() + 30})

    def poll(handle):
        if handle.remote_id in cancels:
            return Status("cancelled", message="cancelled")
        left = handle.data["ends_at"] - time.time()
        return Status("running", poll_after=left) if left > 0 else Status("succeeded")

    platform(FunctionAdapter(submit=submit, poll=poll, cancel=lambda handle: cancels.append(handle.remote_id)))
    ledger = ledger_from_environment(engine.home)
    catalog = sim_catalog({"a": {"duration": 0.0}, "b": {"deps": ["a"], "platform": "tp", "type": "timed"}})
    plan = build_plan(catalog, "p", run_id=f"review-s3-{uuid.uuid4().hex[:6]}")
    b, starts, release = service_instance_id(plan["run_id"], "b"), [], threading.Event()

    async def flaky_start(name, instance_id):  # b's first start refused, the next one slow
        if instance_id == b:
            starts.append(instance_id)
            if len(starts) == 1:
                raise RuntimeError("503 Server Busy: the storage account is throttling (injected)")
            while not release.is_set():
                await asyncio.sleep(0.02)

    with engine.unreliable_starts(flaky_start):
        try:
            engine.start_new(names.PIPELINE_RUN, plan["run_id"], json.dumps(store_run(plan)))
            wait_until(lambda: len(starts) >= 2 and submits, what="b submitted at dispatch and started again")
            engine.raise_event(plan["run_id"], names.CANCEL_EVENT, None)
            wait_until(lambda: ledger.load(plan["run_id"]).meta["cancel"], what="the cancel in the ledger")
        finally:
            release.set()
    result = result_of(engine, plan["run_id"], 15)
    assert result["status"] == "cancelled", result
    orphans = [remote_id for remote_id in submits if remote_id not in cancels]
    assert orphans == [], f"work submitted at dispatch and never cancelled after the run was cancelled: {orphans}"


# One slow submit at dispatch (an HTTP or Databricks submit can take minutes with its retries) must
# not hold back the service run of another dependent of the same report.
def test_a_slow_submit_at_dispatch_does_not_hold_back_the_other_dependents(engine, platform):
    platform(timed_adapter(work_seconds=0.0, submit_seconds=1.5))
    catalog = sim_catalog({"a": {"duration": 0.0},
                           "slow": {"deps": ["a"], "platform": "tp", "type": "timed", "expected": 10.0},
                           "quick": {"deps": ["a"], "duration": 0.0, "expected": 0.1}})
    result = run(engine, catalog)
    a_end = _at(result["services"]["a"]["finished"])
    quick_end = _at(result["services"]["quick"]["finished"])
    assert (quick_end - a_end).total_seconds() < 0.75, \
        f"quick (0 s of work) ended {(quick_end - a_end).total_seconds():.2f} s after its only dependency"


# Submits that hang (a platform outage, SDK retries for minutes) must not stall other runs: they never
# occupy the event loop's default executor (min(32, CPUs + 4) threads), which every ledger step of
# every activity in the worker needs. Here as many services as that pool has threads fail, each
# freeing its platform's slot for a service whose submit hangs; an unrelated run must still finish.
def test_hanging_submits_after_failures_do_not_stall_other_runs(engine, platform):
    threads = concurrent.futures.ThreadPoolExecutor()._max_workers  # the loop's default executor size
    hanging, release = [], threading.Event()

    def submit(submission):
        if submission.service.startswith("s"):
            hanging.append(threading.current_thread().name)
            release.wait(20)
        return Handle(remote_id=f"{submission.service}-{uuid.uuid4().hex[:6]}", data={"service": submission.service})

    def poll(handle):
        if handle.data["service"].startswith("f"):
            return Status("failed", message="boom", retryable=False)
        return Status("succeeded")

    platform(FunctionAdapter(submit=submit, poll=poll))
    services = {}
    for i in range(threads):  # per platform (one slot): f_i first, s_i waits for the slot
        services[f"f{i}"] = {"platform": f"tp{i}", "type": "timed", "expected": 10.0}
        services[f"s{i}"] = {"platform": f"tp{i}", "type": "timed", "expected": 1.0}
    catalog = sim_catalog(services, limits={f"tp{i}": 1 for i in range(threads)})
    busy = build_plan(catalog, "p", run_id=f"review-s5-{uuid.uuid4().hex[:6]}")
    probe = build_plan(sim_catalog({"only": {"duration": 0.0}}), "p", run_id=f"review-s5p-{uuid.uuid4().hex[:6]}")
    engine.start_new(names.PIPELINE_RUN, busy["run_id"], json.dumps(store_run(busy)))
    try:
        wait_until(lambda: len(hanging) >= threads, what="every s_i submitting")
        began = time.monotonic()
        engine.start_new(names.PIPELINE_RUN, probe["run_id"], json.dumps(store_run(probe)))
        try:
            status = engine.wait(probe["run_id"], 3)
        except EngineError:
            status = {"runtimeStatus": "not finished after 3 s"}
        assert status["runtimeStatus"] == "Completed", \
            f"a one-service run, started while {threads} submits hang on {sorted(set(hanging))}: {status['runtimeStatus']}"
        assert time.monotonic() - began < 3
    finally:
        release.set()
        engine.wait(busy["run_id"], 20)
        engine.wait(probe["run_id"], 20)


def fan_out_run() -> tuple[dict, ServiceReport]:
    """A run a -> (b, c) opened in the ledger (a running), and the early report of a's success."""
    catalog = sim_catalog({"a": {"duration": 0.0}, "b": {"deps": ["a"], "duration": 0.0, "expected": 5.0},
                           "c": {"deps": ["a"], "duration": 0.0, "expected": 1.0}})
    plan = build_plan(catalog, "p", run_id=f"review-final-{uuid.uuid4().hex[:8]}")
    now = utcnow()
    store_plan(ledger_from_environment(), plan, now)
    open_run(ledger_from_environment(), plan["run_id"], now)
    result = {"service": "a", "status": "succeeded", "attempts": 1, "started": iso(now), "finished": iso(now)}
    return plan, ServiceReport(plan["run_id"], "p", ServiceResult.from_json(result), simulated=True)


def dependents(plan: dict) -> set[str]:
    return {plan["services"][name]["iid"] for name in ("b", "c")}


# Once `record_report` has taken b and c off the ready queue, a report_here that fails (here
# `run_coroutine_threadsafe` on a closed loop) must not leave
# them marked as being dispatched: service_run then reports again, and that repeated report's
# `ensure` must start them.
def test_an_early_report_that_cannot_reach_the_loop_leaves_its_services_startable(engine):
    plan, request = fan_out_run()
    client = df.DurableOrchestrationClient(engine.client_binding)
    closed = asyncio.new_event_loop()
    closed.close()
    try:
        activities.runs.report_here(request, client, closed).exception(timeout=5)
    except Exception:  # noqa: BLE001 - how it fails is not the point; what it leaves behind is
        pass
    repeated = asyncio.run_coroutine_threadsafe(
        activities.runs.act(client, plan["run_id"], activities.runs.record_report(request)), engine.loop)
    summary = repeated.result(timeout=10)
    assert summary.started == 2, f"the repeated report started {summary.started} of b and c: " \
        f"still marked dispatching: {sorted(dependents(plan) & engine.runtime.ledger.dispatches.under_way())}"



# In Azure the SDK keeps one aiohttp session per worker and closes it when a reply is lost
# (ServerDisconnectedError): a start of another service run in flight on it at that moment fails as
# well, though Durable still creates that instance. Its dispatch looks it up instead of starting it
# again, and every service runs once.
async def _until(condition, seconds: float = 10.0) -> None:
    """Wait on the loop until `condition()` holds, `seconds` at most (the test's assertions then say
    whether its scenario happened)."""
    deadline = time.monotonic() + seconds
    while not condition() and time.monotonic() < deadline:
        await asyncio.sleep(0.01)


def test_a_lost_reply_that_closes_the_clients_session_breaks_another_start_and_no_service_runs_twice(engine, caplog):
    caplog.set_level(logging.INFO, logger="tower.activities")
    lost, starts_of_b = [], []

    async def trouble(name, instance_id):    # on the process loop, beside the SDK's client calls
        if instance_id.endswith(":c") and not lost:
            await _until(lambda: starts_of_b)    # b's start is in flight too
            lost.append(instance_id)
            return LOST_REPLY        # c's service run is created; its reply is lost, the session closed
        if instance_id.endswith(":b"):
            session = http_utils._client_session    # the SDK's one session, b's start on it
            starts_of_b.append(instance_id)
            await _until(lambda: session is None or session.closed)   # c's lost reply closes it under b
        return None

    with engine.unreliable_starts(trouble):
        result = run(engine, sim_catalog({"a": {"duration": 0.0}, "b": {"deps": ["a"], "duration": 0.0},
                                          "c": {"deps": ["a"], "duration": 0.0}}))
        b_run = service_instance_id(result["run_id"], "b")
        wait_until(lambda: b_run not in engine.runtime.ledger.dispatches,
                   what="b's dispatch settled")  # the run may end while b's dispatch waits to look again
    broken = [r.getMessage() for r in caplog.records if f"starting service run {b_run} failed" in r.getMessage()]
    assert lost and broken, "the scenario did not happen: b's start was not in flight when c's reply was lost"
    assert result["status"] == "succeeded", result
    assert {name: s["attempts"] for name, s in result["services"].items()} == {"a": 1, "b": 1, "c": 1}
    assert len(starts_of_b) == 1, "b's service run was started again although its first start took effect"
