"""Failure and concurrency cases of a run (found in review of the run-ledger and submit-at-dispatch changes, each failed
before its fix): deadlines and cancels racing early reports, starts and reports lost to outages,
saves that land in parts, async activities that end cancelled."""

import asyncio
import json
import threading
import time
import uuid
from datetime import datetime, timezone

import pytest

import activities.remote
import activities.runs
from tower import names
from tower.history import SqliteRunHistory
from tower.ledger import ledger_from_environment
from tower.plan import build_plan
from tower.platforms import OVERRIDES, sim
from tower.platforms.base import FunctionAdapter, Handle, Status

from .conftest import run, scheduled, sim_catalog, statuses

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


@pytest.fixture
def table(azurite_table_url):
    """A fresh table in Azurite."""
    return f"{azurite_table_url}/review{uuid.uuid4().hex[:8]}"


@pytest.fixture
def platform():
    """Registers a stand-in platform type 'timed' for one test."""

    def register(adapter):
        OVERRIDES["timed"] = adapter

    yield register
    OVERRIDES.pop("timed", None)


def service_ended(engine, run_id: str, service: str, timeout: float = 10) -> dict:
    """The status of the ended service_run orchestration (it may start late and end after the run)."""
    deadline = time.monotonic() + timeout
    while engine.status(f"{run_id}:{service}", show_input=False) is None:
        assert time.monotonic() < deadline, f"{run_id}:{service} never started"
        time.sleep(0.01)
    return engine.wait(f"{run_id}:{service}", max(deadline - time.monotonic(), 0.1))


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


# A success the watching submit reported stands when a cancel wins the race in service_run at that
# moment: ledger, service result and run history agree.
def test_a_success_reported_while_a_cancel_arrives_stands_everywhere(engine, platform):
    submitted = threading.Event()
    platform(timed_adapter(work_seconds=0.35, submitted=submitted))
    catalog = sim_catalog({"only": {"platform": "tp", "type": "timed"}})
    plan = build_plan(catalog, "p", run_id=f"review-b-{uuid.uuid4().hex[:6]}")
    engine.start_new(names.PIPELINE_RUN, plan["run_id"], json.dumps(plan))
    assert submitted.wait(5)
    engine.raise_event(plan["run_id"], names.CANCEL_EVENT, None)  # arrives while the submit lingers
    result = engine.wait(plan["run_id"], 10)["output"]
    in_ledger = result["services"]["only"]["status"]
    own = service_output(engine, plan["run_id"], "only")["status"]
    history = {r.service: r.status for r in SqliteRunHistory(engine.home / "history.db").attempts(plan["run_id"])}
    assert (in_ledger, own, history["only"]) == (in_ledger, in_ledger, in_ledger), \
        f"ledger {in_ledger}, service_run {own}, history {history['only']}"


# A service the ledger took off the ready queue but whose submit at dispatch waits its turn on a busy
# platform pool until after the cancel (and after the cancel signal to its service run, which does
# not exist yet, gave up: ~2 s of "No instance") must submit nothing: that submit, and then
# service_run's own, read the run's cancel flag first. (A platform that cannot stop work, such as an
# HTTP service whose submit is the work, would otherwise run it in full.)
def test_a_service_dispatched_after_the_cancel_gave_up_submits_nothing(engine, monkeypatch):
    catalog = sim_catalog({"a": {"duration": 0.0}, "c": {"deps": ["a"], "duration": 0.0, "expected": 10.0},
                           "b": {"deps": ["a"], "duration": 0.2}})  # c first in line, b on the pool
    plan = build_plan(catalog, "p", run_id=f"review-c-{uuid.uuid4().hex[:6]}")
    real_first_attempt, release = activities.remote.first_attempt, threading.Event()

    def busy_pool(job, read_cancel=True):
        if job["service"] == "b":
            release.wait(10)
        return real_first_attempt(job, read_cancel)

    monkeypatch.setattr(activities.remote, "first_attempt", busy_pool)
    ledger = ledger_from_environment(engine.home)
    engine.start_new(names.PIPELINE_RUN, plan["run_id"], json.dumps(plan))
    deadline = time.monotonic() + 10
    while (ledger.version(plan["run_id"]) is None
           or ledger.load(plan["run_id"]).records["b"]["status"] != "running"):
        assert time.monotonic() < deadline
        time.sleep(0.01)
    engine.raise_event(plan["run_id"], names.CANCEL_EVENT, None)
    while not ledger.load(plan["run_id"]).meta["cancel"]:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    time.sleep(sum(activities.runs.SIGNAL_RETRY_DELAYS) + 0.5)  # the cancel signal to b has given up
    release.set()
    result = engine.wait(plan["run_id"], 10)["output"]
    assert result["services"]["b"]["status"] == "cancelled", result["services"]["b"]
    assert result["services"]["b"]["remote_id"] is None  # nothing was submitted
    assert result["status"] == "cancelled"


# A service whose end never reaches the ledger (its report failed LEDGER_RETRY times) must not hang
# the run: pipeline_run's reconcile finds the ended service run and records its result.
def test_a_report_lost_to_an_outage_is_recovered_by_the_reconcile(engine, monkeypatch):
    import azure.durable_functions as df

    import orchestrators.pipeline

    # the same outage, shorter: 2 tries 10 ms apart instead of 10 tries 1 s apart
    monkeypatch.setattr(orchestrators.pipeline, "LEDGER_RETRY",
                        df.RetryOptions(first_retry_interval_in_milliseconds=10, max_number_of_attempts=2))
    real, calls = activities.runs.settle, []

    def outage(request):
        calls.append(request["result"]["service"])
        if len(calls) <= 3:  # the early report and both REPORT_SERVICE tries
            raise RuntimeError("ledger unavailable")
        return real(request)

    monkeypatch.setattr(activities.runs, "settle", outage)
    plan = build_plan(sim_catalog({"only": {"duration": 0.0}}), "p", run_id=f"review-d-{uuid.uuid4().hex[:6]}")
    plan["reconcile_after"] = 0.5  # reconcile soon, not after a minute
    engine.start_new(names.PIPELINE_RUN, plan["run_id"], json.dumps(plan))
    try:
        service_ended(engine, plan["run_id"], "only")
        time.sleep(1.0)  # the ledger is back
        status = engine.wait(plan["run_id"], 5)
        assert status["output"]["services"]["only"]["status"] == "succeeded"
    finally:
        if engine.status(plan["run_id"])["runtimeStatus"] not in ("Completed", "Failed", "Terminated"):
            engine.terminate(plan["run_id"], "review test cleanup")


# A Table save of more than 99 records lands in several transactions; when a later one fails, the
# retried report must complete the cascade (restore derives upstream_failed from the records).
def test_a_failure_cascade_cut_short_is_completed_by_the_retry(table):
    from azure.core.exceptions import HttpResponseError

    from tests.test_ledger_table import open_ledger
    from tower.ledger import finish_service, open_run

    ledger = open_ledger(table)
    downstream = [f"d{i:03d}" for i in range(150)]
    services = {"root": [], **{name: ["root"] for name in downstream}}
    plan = {"run_id": "cascade", "pipeline": "p", "platforms": {"x": {"max_concurrency": None}},
            "services": {name: {"deps": deps, "expected": 1.0, "platform": "x", "iid": f"cascade:{name}"}
                         for name, deps in services.items()}}
    open_run(ledger, plan, {name: {"service": name} for name in services}, T0)

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
    failed = {"service": "root", "status": "failed", "attempts": 1, "error": "boom"}
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
    assert scheduled(engine, f"{result['run_id']}:only") == [names.SUBMIT_SERVICE]


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
    work, lock, in_flight, overlaps = timed_adapter(work_seconds=0.0), threading.Lock(), {}, []

    def slow_submit(submission):
        key = submission.idempotency_key
        with lock:
            in_flight[key] = in_flight.get(key, 0) + 1
            if in_flight[key] > 1:
                overlaps.append(key)
        time.sleep(1.0)
        with lock:
            in_flight[key] -= 1
        return work.submit(submission)

    platform(FunctionAdapter(submit=slow_submit, poll=work.poll))
    catalog = sim_catalog({"a": {"duration": 0.0},
                           "slow": {"deps": ["a"], "platform": "tp", "type": "timed", "expected": 10.0},
                           "quick": {"deps": ["a"], "duration": 0.0}})
    plan = build_plan(catalog, "p", run_id=f"review-e-{uuid.uuid4().hex[:6]}")
    plan["reconcile_after"] = 0.3  # as in Azure after 1 min, here while the submit is in flight
    engine.start_new(names.PIPELINE_RUN, plan["run_id"], json.dumps(plan))
    result = engine.wait(plan["run_id"], 20)["output"]
    assert statuses(result) == {"a": "succeeded", "slow": "succeeded", "quick": "succeeded"}
    assert overlaps == [], f"submitted beside a submit in flight: {overlaps}"
    assert scheduled(engine, f"{plan['run_id']}:slow") == [names.POLL_SERVICE]  # one service run, which polled


# A service whose cancel signal found no instance (its service run was being started) is stopped by
# its first look at the work, which reads the run's cancel flag; when that look fails retryably
# (here the platform's cancel answers 503 once), the next look must read the flag again.
def test_a_failed_first_look_does_not_lose_the_cancel(engine, platform, monkeypatch):
    from tower.errors import RetryableError

    ledger = ledger_from_environment(engine.home)
    catalog = sim_catalog({"a": {"duration": 0.0}, "b": {"deps": ["a"], "platform": "tp", "type": "timed"}})
    plan = build_plan(catalog, "p", run_id=f"review-g-{uuid.uuid4().hex[:6]}")
    work, cancels = timed_adapter(work_seconds=1.5), []

    def cancel(handle):
        cancels.append(handle.remote_id)
        if len(cancels) == 1:
            raise RetryableError("cancel answered 503 Service Unavailable", platform="tp")

    platform(FunctionAdapter(submit=work.submit, poll=work.poll, cancel=cancel))
    real_start, release = activities.runs._start, threading.Event()

    async def slow_start(client, run_id, instance_id, job):  # b's service run is created late
        while job["service"] == "b" and not release.is_set():
            await asyncio.sleep(0.02)
        return await real_start(client, run_id, instance_id, job)

    monkeypatch.setattr(activities.runs, "_start", slow_start)
    engine.start_new(names.PIPELINE_RUN, plan["run_id"], json.dumps(plan))
    deadline = time.monotonic() + 10
    while ledger.version(plan["run_id"]) is None or ledger.load(plan["run_id"]).records["b"]["status"] != "running":
        assert time.monotonic() < deadline
        time.sleep(0.01)
    engine.raise_event(plan["run_id"], names.CANCEL_EVENT, None)
    while not ledger.load(plan["run_id"]).meta["cancel"]:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    time.sleep(sum(activities.runs.SIGNAL_RETRY_DELAYS) + 0.5)  # the cancel signal to b has given up
    release.set()
    result = engine.wait(plan["run_id"], 10)["output"]
    b = service_ended(engine, plan["run_id"], "b")["output"]
    assert b["status"] == "cancelled", f"b {b['status']} after the run was cancelled (cancel calls: {len(cancels)})"
    assert result["status"] == "cancelled"


# The deadline counts from the submit at dispatch. When the service run itself starts after it
# (queues, an outage), work its first look finds done stands: it was done in time as far as anyone
# can tell, and Tower's own delay must not fail it. Work still running then is timed out.
def test_work_found_done_by_a_service_run_started_after_the_deadline_stands(engine, monkeypatch):
    real_start = activities.runs._start

    async def late_start(client, run_id, instance_id, job):
        if job["service"] in ("done", "running"):
            await asyncio.sleep(0.4)
        return await real_start(client, run_id, instance_id, job)

    monkeypatch.setattr(activities.runs, "_start", late_start)
    result = run(engine, sim_catalog({"done": {"duration": 0.0, "timeout": 0.2},
                                      "running": {"duration": 5.0, "timeout": 0.2}}))
    assert result["services"]["done"]["status"] == "succeeded", result["services"]["done"]
    running = result["services"]["running"]
    assert running["status"] == "failed" and running["error"].startswith("timed out after")
    assert running["remote_id"] in sim.cancelled_remote_ids()
