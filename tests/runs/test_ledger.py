"""The run ledger (SQLite): dispatch steps, idempotency, optimistic concurrency, restore."""

import json
import os
import threading
from datetime import datetime, timedelta, timezone

import pytest

from tests.runs.jobs import job_json, named
from tower.catalog.model import Catalog, Pipeline, Platform, RetryPolicy, Service
from tower.contracts import ServiceResult
from tower.errors import (
    InconsistentPlan,
    LedgerConflict,
    LedgerError,
    RunNotInLedger,
    ServiceNotInLedger,
)
from tower.runs import ledger as lg
from tower.runs import ledger_sqlite
from tower.runs.ledger import (
    cached_view,
    cancel_run,
    create_run,
    finish_service,
    is_cancelled,
    ledger_from_environment,
    live_status,
    load_plan,
    open_run,
    plan_outline,
    plan_reference,
    reconcile_run,
    run_result,
    run_services,
    store_plan,
)
from tower.runs.ledger_sqlite import SqliteRunLedger
from tower.runs.plan import build_plan
from tower.runs.scheduler import RESULT_ERROR_CHARS, RESULT_FAILED_SHOWN, Scheduler
from tower.timestamps import iso

T0 = datetime(2026, 12, 1, 12, 0, tzinfo=timezone.utc)
T1 = T0 + timedelta(hours=1)  # a later clock: what a change stamps must be its own `now`


def plan_of(deps: dict, limit: int | None = None, expected: dict | None = None, run_id: str = "r1") -> dict:
    expected = expected or {}
    return {
        "run_id": run_id, "pipeline": "p",
        "platforms": {"x": {"max_concurrency": limit}},
        "services": {name: {"deps": list(d), "expected": expected.get(name, 1.0), "platform": "x",
                            "iid": f"{run_id}:{name}"} for name, d in deps.items()},
    }


def inputs_of(plan: dict) -> dict:
    return {name: job_json(plan["run_id"], name) for name in plan["services"]}


def open_new(ledger, plan: dict, inputs: dict, now: datetime):
    """Store the run (once), then open it: what a start and `pipeline_run`'s open_run do."""
    lg.create_run(ledger, plan, inputs, now)
    return open_run(ledger, plan["run_id"], now)


def ok(name: str, status: str = "succeeded", **extra) -> ServiceResult:
    return ServiceResult(name, status, attempts=1, **extra)


DIAMOND = {"a": [], "b": ["a"], "c": ["a"], "d": ["b", "c"]}


@pytest.fixture
def ledger(tmp_path):
    return SqliteRunLedger(tmp_path / "ledger.db")


def test_a_diamond_is_dispatched_as_its_dependencies_end(ledger):
    plan = plan_of(DIAMOND)
    step = open_new(ledger, plan, inputs_of(plan), T0)
    assert named(step.start) == {"r1:a": "a"} and not step.done
    step = finish_service(ledger, "r1", "a", ok("a"), T0)
    assert set(step.start) == {"r1:b", "r1:c"}
    assert finish_service(ledger, "r1", "b", ok("b"), T0).start == {}
    step = finish_service(ledger, "r1", "c", ok("c"), T0)
    assert list(step.start) == ["r1:d"] and not step.done
    step = finish_service(ledger, "r1", "d", ok("d", output="4 rows"), T0 + timedelta(seconds=3))
    assert step.done and step.status == "succeeded"
    result = run_result(ledger, "r1", T0 + timedelta(seconds=4))
    assert result["status"] == "succeeded" and result["counts"]["succeeded"] == 4 and "services" not in result
    services = run_services(ledger, "r1", T0)
    assert {n: s["status"] for n, s in services.items()} == dict.fromkeys("abcd", "succeeded")
    assert services["d"]["output"] == "4 rows"


def test_a_repeated_report_changes_nothing_and_asks_to_start_what_runs(ledger):
    plan = plan_of(DIAMOND)
    open_new(ledger, plan, inputs_of(plan), T0)
    first = finish_service(ledger, "r1", "a", ok("a"), T0)
    version = ledger.version("r1")
    again = finish_service(ledger, "r1", "a", ok("a", status="failed"), T0)
    assert ledger.version("r1") == version
    assert again.start == {} and again.ensure == first.start  # the first may have died before starting them
    assert live_status(ledger, "r1", T0)["states"] == "srrp"


def test_opening_twice_creates_once_and_restarts_what_runs(ledger):
    plan = plan_of(DIAMOND)
    open_new(ledger, plan, inputs_of(plan), T0)
    again = open_new(ledger, plan, inputs_of(plan), T0 + timedelta(seconds=5))
    assert again.start == {} and named(again.ensure) == {"r1:a": "a"}
    assert ledger.version("r1") == 2  # stored, then opened once


def test_a_reconcile_leaves_a_recent_dispatch_to_finish_its_submit(ledger):
    plan = plan_of(DIAMOND)
    open_new(ledger, plan, inputs_of(plan), T0)
    finish_service(ledger, "r1", "a", ok("a"), T0 + timedelta(minutes=1))  # b and c dispatched here
    assert {"r1:b", "r1:c"} <= ledger.dispatches.under_way()
    soon = reconcile_run(ledger, "r1", T0 + timedelta(minutes=2))
    assert set(soon.ensure) == {"r1:b", "r1:c"} and soon.dispatching == {"r1:b", "r1:c"}
    later = reconcile_run(ledger, "r1", T0 + timedelta(minutes=1) + ledger.dispatches.grace + timedelta(seconds=1))
    assert set(later.ensure) == {"r1:b", "r1:c"} and later.dispatching == frozenset()


def test_every_repeated_change_respects_a_dispatch_in_flight(ledger):
    """A repeated report or open_run names the running services like a reconcile, and leaves those
    still being dispatched alone just the same: on this host until its dispatch settled, on any
    other host (it cannot know) until `Dispatches.grace` passed."""
    plan = plan_of(DIAMOND)
    open_new(ledger, plan, inputs_of(plan), T0)
    finish_service(ledger, "r1", "a", ok("a"), T0)  # b and c are being dispatched here
    ledger.dispatches.settled(["r1:a"])
    soon = T0 + timedelta(seconds=30)
    assert finish_service(ledger, "r1", "a", ok("a"), soon).dispatching == {"r1:b", "r1:c"}
    assert open_new(ledger, plan, inputs_of(plan), soon).dispatching == {"r1:b", "r1:c"}
    ledger.dispatches.settled(["r1:b"])  # b's dispatch settled: a missing service run of b was lost
    assert finish_service(ledger, "r1", "a", ok("a"), soon).dispatching == {"r1:c"}


def test_another_host_waits_for_the_grace_of_a_dispatch_it_did_not_make(ledger):
    plan = plan_of(DIAMOND)
    open_new(ledger, plan, inputs_of(plan), T0)
    finish_service(ledger, "r1", "a", ok("a"), T0)
    ledger.dispatches.settled(["r1:b", "r1:c"])  # whatever this host did has settled: the other cannot know
    other = SqliteRunLedger(ledger.path)  # another host's ledger object: another dispatcher
    assert other.dispatches.dispatcher != ledger.dispatches.dispatcher
    again = finish_service(other, "r1", "a", ok("a"), T0 + timedelta(seconds=30))
    assert set(again.ensure) == {"r1:b", "r1:c"} and again.dispatching == {"r1:b", "r1:c"}
    assert open_new(other, plan, inputs_of(plan), T0 + timedelta(minutes=1)).dispatching == {"r1:b", "r1:c"}
    assert finish_service(other, "r1", "a", ok("a"), T0 + other.dispatches.grace).dispatching == frozenset()
    late = T0 + other.dispatches.grace + timedelta(seconds=1)
    assert finish_service(other, "r1", "a", ok("a"), late).dispatching == frozenset()
    assert finish_service(ledger, "r1", "a", ok("a"), T0 + timedelta(seconds=30)).dispatching == frozenset()


def test_a_dispatch_by_a_process_known_dead_on_this_machine_waits_no_grace(ledger):
    """A crashed `tower run` (or a worker process that died on this instance) submits nothing any
    more: `tower resume` must not wait the grace for its lost starts; a live process, or one on
    another machine, keeps its grace."""
    import socket
    import subprocess
    import sys

    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    here = socket.gethostname()
    plan = plan_of(DIAMOND)
    dead = SqliteRunLedger(ledger.path, dispatches=lg.Dispatches(f"{here}:{gone.pid}:dead"))
    open_new(dead, plan, inputs_of(plan), T0)
    finish_service(dead, "r1", "a", ok("a"), T0)  # b and c taken by the process that is gone now
    resumer = SqliteRunLedger(ledger.path)  # `tower resume`: this process, another ledger object
    again = reconcile_run(resumer, "r1", T0 + timedelta(seconds=30))
    assert set(again.ensure) == {"r1:b", "r1:c"} and again.dispatching == frozenset()
    assert resumer.dispatches.may_still_dispatch(f"{here}:{os.getppid()}:alive")
    assert resumer.dispatches.may_still_dispatch(f"elsewhere:{gone.pid}:x")
    assert resumer.dispatches.may_still_dispatch(None)
    assert not resumer.dispatches.may_still_dispatch(f"{here}:{gone.pid}")  # named without a nonce
    assert resumer.dispatches.may_still_dispatch(ledger.dispatches.dispatcher)  # alive: this very process


def test_a_wide_reconcile_or_cancel_names_the_running_a_page_at_a_time(ledger, monkeypatch):
    monkeypatch.setattr(lg, "STEP_SERVICES", 3)
    names = [f"s{i}" for i in range(8)]
    plan = plan_of({**{n: [] for n in names}, "z": names})
    open_new(ledger, plan, inputs_of(plan), T0)
    later = T0 + ledger.dispatches.grace * 2

    def pages(change):
        seen, after = [], -1
        while after is not None:
            step = change(after)
            seen.append(step)
            after = step.more
        return seen

    reconciled = pages(lambda after: reconcile_run(ledger, "r1", later, after))
    assert [list(step.ensure) for step in reconciled] == [
        ["r1:s0", "r1:s1", "r1:s2"], ["r1:s3", "r1:s4", "r1:s5"], ["r1:s6", "r1:s7"]]
    finish_service(ledger, "r1", "s4", ok("s4"), later)  # ends between two pages: not stopped
    first = cancel_run(ledger, "r1", later)
    assert first.stop == ["r1:s0", "r1:s1", "r1:s2"] and first.more == 2
    rest = pages(lambda after: cancel_run(ledger, "r1", later, after) if after >= 0 else first)[1:]
    assert [step.stop for step in rest] == [["r1:s3", "r1:s5", "r1:s6"], ["r1:s7"]]
    assert live_status(ledger, "r1", later)["counts"] == {"running": 7, "succeeded": 1, "cancelled": 1}
    last = reconcile_run(ledger, "r1", later, after=3)  # s5, s6, s7: a full page that is the last
    assert list(last.ensure) == ["r1:s5", "r1:s6", "r1:s7"] and last.more is None


def _repeat_report(path: str, name: str, at: str, out) -> None:
    """Another host (its own process): the report of `name` again."""
    step = finish_service(SqliteRunLedger(path), "r1", name, ok(name), datetime.fromisoformat(at))
    out.put((sorted(step.ensure), sorted(step.dispatching)))


def test_a_report_repeated_on_another_process_leaves_a_dispatch_in_flight_here_alone(ledger, tmp_path):
    import multiprocessing

    plan = plan_of(DIAMOND)
    open_new(ledger, plan, inputs_of(plan), T0)
    finish_service(ledger, "r1", "a", ok("a"), T0)  # b and c: this host's dispatch is submitting
    context = multiprocessing.get_context("spawn")
    out = context.Queue()
    other = context.Process(target=_repeat_report,
                            args=(str(tmp_path / "ledger.db"), "a", (T0 + timedelta(seconds=5)).isoformat(), out))
    other.start()
    ensure, dispatching = out.get(timeout=60)
    other.join(30)
    assert ensure == ["r1:b", "r1:c"] and dispatching == ["r1:b", "r1:c"]


def test_the_dispatch_grace_is_the_hosts_function_timeout():
    import json

    host = json.loads(lg.HOST_JSON.read_text())
    hours, minutes, seconds = (int(part) for part in host["functionTimeout"].split(":"))
    assert lg.dispatch_grace() == timedelta(hours=hours, minutes=minutes, seconds=seconds)
    assert lg.Dispatches().grace == lg.dispatch_grace()  # read when a ledger object is built
    assert lg.Dispatches(grace=timedelta(seconds=5)).grace == timedelta(seconds=5)  # or given


def test_without_a_host_json_the_grace_is_the_default_function_timeout(tmp_path):
    assert lg.dispatch_grace(tmp_path / "host.json") == lg.DEFAULT_FUNCTION_TIMEOUT == timedelta(minutes=30)


def test_the_scheduler_cache_keeps_the_runs_changed_last():
    cache, schedulers = lg.SchedulerCache(size=2), {}
    for run_id in ("r1", "r2", "r3"):
        schedulers[run_id] = Scheduler(plan_of({"a": []}, run_id=run_id), T0)
        cache.remember(run_id, 1, schedulers[run_id])
    assert [cache.get(run_id) for run_id in ("r1", "r2", "r3")] == [None, (1, schedulers["r2"]), (1, schedulers["r3"])]
    assert cache.take("r2") == (1, schedulers["r2"]) and cache.get("r2") is None


@pytest.mark.parametrize(("value", "grace"), [
    ("00:10:00", timedelta(minutes=10)), ("01:30:05", timedelta(hours=1, minutes=30, seconds=5)),
    ("2.00:00:00", timedelta(days=2)), (None, lg.DEFAULT_FUNCTION_TIMEOUT)])
def test_a_function_timeout_is_read_as_the_host_reads_it(tmp_path, value, grace):
    import json

    path = tmp_path / "host.json"
    path.write_text(json.dumps({"version": "2.0"} | ({"functionTimeout": value} if value else {})))
    assert lg.function_timeout(path) == grace


@pytest.mark.parametrize("value", ["-1", "ten minutes", "00:00:00", "10"])
def test_an_unbounded_or_odd_function_timeout_is_a_clear_error(tmp_path, value):
    import json

    from tower.errors import ConfigError

    path = tmp_path / "host.json"
    path.write_text(json.dumps({"functionTimeout": value}))
    with pytest.raises(ConfigError, match=f"{path}: functionTimeout"):
        lg.function_timeout(path)


@pytest.mark.parametrize(("text", "problem"), [
    ("{not json", "cannot read functionTimeout ({error}); Tower derives its dispatch grace from it"),
    ('{"functionTimeout": "-1"}', "functionTimeout '-1' is not a bounded [d.]hh:mm:ss duration; Tower needs one "
                                   '(a dispatch is presumed still submitting for that long), e.g. "00:10:00"'),
    ('{"functionTimeout": "00:00:00"}', 'functionTimeout \'00:00:00\' is zero; give the host time to run, e.g. "00:10:00"'),
])
def test_a_function_timeout_error_says_what_is_wrong_and_what_to_write(tmp_path, text, problem):
    import json

    from tower.errors import ConfigError

    path = tmp_path / "host.json"
    path.write_text(text)
    try:
        json.loads(text)
        error = None
    except ValueError as exc:
        error = exc
    with pytest.raises(ConfigError) as caught:
        lg.function_timeout(path)
    assert str(caught.value) == f"{path}: " + problem.format(error=error)


def test_a_failure_holds_back_its_downstream(ledger):
    plan = plan_of(DIAMOND)
    open_new(ledger, plan, inputs_of(plan), T0)
    finish_service(ledger, "r1", "a", ok("a"), T0)
    finish_service(ledger, "r1", "b", ok("b", status="failed", error="boom"), T0)
    step = finish_service(ledger, "r1", "c", ok("c"), T0)
    assert step.done and step.status == "failed" and step.start == {}
    result = run_result(ledger, "r1", T0)
    assert run_services(ledger, "r1", T0)["d"]["status"] == "upstream_failed"
    assert "b: boom" in result["summary"] and result["failed"] == {"b": "boom"}


def test_an_end_without_its_own_times_is_stamped_with_the_reports_clock(ledger):
    plan = plan_of({"a": [], "after_a": ["a"]})
    open_new(ledger, plan, inputs_of(plan), T0)
    finish_service(ledger, "r1", "a", ok("a", status="failed", error="boom"), T1)  # its result says no time
    records = run_services(ledger, "r1", T1)
    assert (records["a"]["finished"], records["after_a"]["finished"]) == (iso(T1), iso(T1))
    assert run_result(ledger, "r1", T1 + timedelta(seconds=5))["finished"] == iso(T1 + timedelta(seconds=5))


def test_cancel_stops_dispatch_and_names_the_running(ledger):
    plan = plan_of(DIAMOND)
    open_new(ledger, plan, inputs_of(plan), T0)
    finish_service(ledger, "r1", "a", ok("a"), T0)
    step = cancel_run(ledger, "r1", T0)
    assert sorted(step.stop) == ["r1:b", "r1:c"] and not step.done
    assert finish_service(ledger, "r1", "b", ok("b", status="cancelled"), T0).start == {}
    step = finish_service(ledger, "r1", "c", ok("c"), T0)
    assert step.done and step.status == "cancelled"
    assert run_services(ledger, "r1", T0)["d"]["status"] == "cancelled"


def test_what_a_cancel_stops_before_it_started_ends_at_the_cancel(ledger):
    plan = plan_of({"a": [], "after_a": ["a"]})
    open_new(ledger, plan, inputs_of(plan), T0)
    cancel_run(ledger, "r1", T1)
    after_a = run_services(ledger, "r1", T1)["after_a"]
    assert (after_a["status"], after_a["finished"]) == ("cancelled", iso(T1))


def test_a_cancel_with_nothing_pending_is_still_kept(ledger, tmp_path):
    plan = plan_of({"a": [], "b": []})
    open_new(ledger, plan, inputs_of(plan), T0)
    assert sorted(cancel_run(ledger, "r1", T0).stop) == ["r1:a", "r1:b"]
    other = SqliteRunLedger(tmp_path / "ledger.db")  # another host: no cache, reads the store
    assert live_status(other, "r1", T0)["status"] == "running"
    assert finish_service(other, "r1", "a", ok("a"), T0).start == {}
    assert other.load("r1").meta["cancel"] is True


def test_limits_and_longest_remaining_path_first(ledger):
    deps = {"short": [], "long": [], "tail": ["long"], "mid": []}
    plan = plan_of(deps, limit=1, expected={"short": 1, "long": 5, "tail": 5, "mid": 3})
    assert list(open_new(ledger, plan, inputs_of(plan), T0).start) == ["r1:long"]
    assert list(finish_service(ledger, "r1", "long", ok("long"), T0).start) == ["r1:tail"]
    assert list(finish_service(ledger, "r1", "tail", ok("tail"), T0).start) == ["r1:mid"]
    assert list(finish_service(ledger, "r1", "mid", ok("mid"), T0).start) == ["r1:short"]


def test_two_hosts_sharing_a_ledger_see_each_others_changes(ledger, tmp_path):
    plan = plan_of(DIAMOND)
    open_new(ledger, plan, inputs_of(plan), T0)
    other = SqliteRunLedger(tmp_path / "ledger.db")
    finish_service(other, "r1", "a", ok("a"), T0)        # this host's cached state is now stale
    finish_service(ledger, "r1", "b", ok("b"), T0)
    step = finish_service(other, "r1", "c", ok("c"), T0)
    assert list(step.start) == ["r1:d"]
    assert live_status(ledger, "r1", T0)["states"] == "sssr"


def test_a_stale_save_is_refused_and_writes_nothing(ledger):
    plan = plan_of(DIAMOND)
    lg.create_run(ledger, plan, inputs_of(plan), T0)
    assert ledger.save("r1", 1, {"started": "x", "cancel": False}, {"a": {"status": "succeeded"}})
    assert not ledger.save("r1", 1, {"started": "y", "cancel": True}, {"b": {"status": "failed"}})
    snapshot = ledger.load("r1")
    assert snapshot.version == 2 and snapshot.meta == {"started": "x", "cancel": False}
    assert snapshot.records["b"]["status"] == "pending"


def test_concurrent_reports_from_threads_lose_nothing(ledger, tmp_path):
    names = [f"s{i}" for i in range(40)]
    plan = plan_of({**{n: [] for n in names}, "join": names})
    open_new(ledger, plan, inputs_of(plan), T0)
    hosts = [SqliteRunLedger(tmp_path / "ledger.db") for _ in range(4)]
    steps = []

    def report(i):
        steps.append(finish_service(hosts[i % 4], "r1", names[i], ok(names[i]), T0))

    threads = [threading.Thread(target=report, args=(i,)) for i in range(len(names))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sum("r1:join" in step.start for step in steps) == 1  # started by exactly one report
    assert live_status(ledger, "r1", T0)["counts"] == {"running": 1, "succeeded": 40}


def test_a_save_that_loses_a_race_is_applied_again_on_the_new_state(ledger, tmp_path):
    plan = plan_of({"a": [], "b": [], "join": ["a", "b"]})
    open_new(ledger, plan, inputs_of(plan), T0)
    rival = SqliteRunLedger(tmp_path / "ledger.db")
    saves = []

    class Racing(SqliteRunLedger):
        def save(self, run_id, version, meta, records):
            if not saves:  # another host reports `b` between this host's read and its write
                finish_service(rival, "r1", "b", ok("b"), T0)
            saves.append(super().save(run_id, version, meta, records))
            return saves[-1]

    step = finish_service(Racing(tmp_path / "ledger.db"), "r1", "a", ok("a"), T0)
    assert saves == [False, True]
    assert list(step.start) == ["r1:join"]  # decided on the state that has both reports
    assert live_status(ledger, "r1", T0)["states"] == "ssr"


def _report_all(path: str, names: list[str], out) -> None:
    host = SqliteRunLedger(path)
    out.put([list(finish_service(host, "r1", name, ok(name), T0).start) for name in names])


def test_reports_from_two_processes_conflict_and_retry_without_losing_any(ledger, tmp_path):
    import multiprocessing

    names = [f"s{i}" for i in range(60)]
    plan = plan_of({**{n: [] for n in names}, "join": names})
    open_new(ledger, plan, inputs_of(plan), T0)
    context = multiprocessing.get_context("spawn")
    out = context.Queue()
    workers = [context.Process(target=_report_all, args=(str(tmp_path / "ledger.db"), names[i::2], out))
               for i in range(2)]
    for worker in workers:
        worker.start()
    starts = [start for _ in workers for start in out.get(timeout=60)]
    for worker in workers:
        worker.join(30)
    assert sum(start == ["r1:join"] for start in starts) == 1
    assert ledger.load("r1").version == 2 + len(names)  # stored, opened, every report saved once
    assert live_status(ledger, "r1", T0)["counts"] == {"running": 1, "succeeded": 60}


def test_a_save_that_landed_in_parts_is_completed_by_the_next_change(ledger, tmp_path):
    """A Table save of many records may land in several transactions: here the failure of `a`
    landed, its cascade did not, and the dispatch of `c` (ready after `b`) did not either."""
    plan = plan_of({"a": [], "b": [], "after_a": ["a"], "after_both": ["after_a", "b"], "c": ["b"]})
    open_new(ledger, plan, inputs_of(plan), T0)
    record = ledger.load("r1").records
    assert ledger.save("r1", 2, {"started": iso(T0), "cancel": False},
                       {"a": {**record["a"], "status": "failed", "error": "boom"},
                        "b": {**record["b"], "status": "succeeded"}})
    other = SqliteRunLedger(tmp_path / "ledger.db")  # a host that reads what is stored
    step = reconcile_run(other, "r1", T1)
    assert list(step.start) == ["r1:c"] and not step.ensure
    assert other.load("r1").records["c"]["started"] == iso(T1)  # taken by this reconcile, at its time
    states = {n: r["status"] for n, r in other.load("r1").records.items()}
    assert states == {"a": "failed", "b": "succeeded", "after_a": "upstream_failed",
                      "after_both": "upstream_failed", "c": "running"}


def _half_landed(ledger, tmp_path) -> SqliteRunLedger:
    """A run whose save of a's failure landed without its cascade; a host that reads it anew."""
    plan = plan_of({"a": [], "after_a": ["a"], "b": []})
    open_new(ledger, plan, inputs_of(plan), T0)
    record = ledger.load("r1").records["a"]
    assert ledger.save("r1", 2, {"started": iso(T0), "cancel": False},
                       {"a": {**record, "status": "failed", "error": "boom", "finished": iso(T0)}})
    return SqliteRunLedger(tmp_path / "ledger.db")


@pytest.mark.parametrize("change", [
    lambda ledger: reconcile_run(ledger, "r1", T1),
    lambda ledger: open_run(ledger, "r1", T1),
    lambda ledger: finish_service(ledger, "r1", "b", ok("b"), T1),
    lambda ledger: cancel_run(ledger, "r1", T1),
    lambda ledger: run_result(ledger, "r1", T1),
    lambda ledger: run_services(ledger, "r1", T1),
    lambda ledger: live_status(ledger, "r1", T1),
], ids=["reconcile", "open", "report", "cancel", "result", "services", "status"])
def test_a_repair_found_on_load_is_stamped_with_the_callers_clock(ledger, tmp_path, change):
    """Whatever first reads a half-landed save completes it, at the time it was called with (not
    the run's start: a held-back service would seem to end before its upstream failed)."""
    change(_half_landed(ledger, tmp_path))
    after_a = SqliteRunLedger(tmp_path / "ledger.db").load("r1").records["after_a"]
    assert (after_a["status"], after_a["finished"]) == ("upstream_failed", iso(T1))


def test_a_host_behind_by_a_few_versions_reads_only_what_changed(ledger, tmp_path):
    names = [f"s{i}" for i in range(30)]
    plan = plan_of({n: [] for n in names})
    open_new(ledger, plan, inputs_of(plan), T0)
    other = SqliteRunLedger(tmp_path / "ledger.db")
    other.location = f"another process over {tmp_path}"  # its own cache, as on another host (one per test)
    finish_service(other, "r1", "s0", ok("s0"), T0)  # `other` caches version 3 (stored, opened, s0)
    finish_service(ledger, "r1", "s1", ok("s1"), T0)  # version 4, written by the first host
    assert set(ledger.load("r1", since=4).records) == {"s1"}
    reads = []
    real_load = other.load
    other.load = lambda run_id, since=None: reads.append(since) or real_load(run_id, since)
    finish_service(other, "r1", "s2", ok("s2"), T0)
    assert reads == [3]  # only the records written since the version it knew
    assert live_status(ledger, "r1", T0)["counts"] == {"running": 27, "succeeded": 3}


def test_restore_rebuilds_the_same_dispatch_state():
    deps = {"a": [], "b": ["a"], "c": [], "d": ["b", "c"], "e": ["c"]}
    plan = plan_of(deps, limit=2, expected={"a": 1, "b": 4, "c": 2, "d": 1, "e": 3})
    live = Scheduler(plan, T0)
    live.take_ready(T0)
    live.finish("c", ok("c"), T0)
    live.take_ready(T0)
    records = {name: {**vars(record)} for name, record in live.records.items()}
    restored = Scheduler.restore(plan, T0, records)
    assert restored.busy == live.busy and restored.waiting == live.waiting
    assert restored.unfinished == live.unfinished
    assert sorted(restored.ready["x"]) == sorted(live.ready["x"])
    live.finish("a", ok("a"), T0)
    restored.finish("a", ok("a"), T0)
    assert restored.take_ready(T0) == live.take_ready(T0)


def test_an_unknown_run_or_service_is_a_clear_error(ledger):
    with pytest.raises(RunNotInLedger, match="'nope' is not in the run ledger"):
        finish_service(ledger, "nope", "a", ok("a"), T0)
    plan = plan_of(DIAMOND)
    open_new(ledger, plan, inputs_of(plan), T0)
    with pytest.raises(ServiceNotInLedger, match="no service 'zz'"):
        ledger.service_inputs("r1", ["a", "zz"])
    assert ledger.service_inputs("r1", ["d", "a"]) == {"d": job_json("r1", "d"), "a": job_json("r1", "a")}
    assert live_status(ledger, "nope", T0) is None


class LosingLedger(SqliteRunLedger):
    """Every conditional save loses, as if another host always changed the run first."""

    saves = 0

    def save(self, run_id, version, meta, records):
        self.saves += 1
        return False


def test_a_change_that_loses_every_race_is_a_ledger_conflict(tmp_path):
    ledger = LosingLedger(tmp_path / "ledger.db")
    plan = plan_of(DIAMOND)
    lg.create_run(ledger, plan, inputs_of(plan), T0)
    with pytest.raises(LedgerConflict, match=r"kept changing under this host \(20 tries\)") as raised:
        open_run(ledger, "r1", T0)
    assert isinstance(raised.value, LedgerError) and ledger.saves == lg.SAVE_ATTEMPTS


def test_a_run_in_which_nothing_can_start_is_an_inconsistent_plan(ledger):
    plan = plan_of(DIAMOND, limit=0)                        # a platform with no slot: nothing runs
    lg.create_run(ledger, plan, inputs_of(plan), T0)
    with pytest.raises(InconsistentPlan, match="run r1: no service can start"):
        open_run(ledger, "r1", T0)


def test_the_environment_chooses_sqlite_in_tower_home(tmp_path, monkeypatch):
    monkeypatch.delenv("TOWER_LEDGER_TABLE_URL", raising=False)
    monkeypatch.setenv("TOWER_HOME", str(tmp_path))
    chosen = lg.ledger_from_environment()
    assert isinstance(chosen, SqliteRunLedger) and chosen.path == tmp_path.absolute() / "ledger.db"
    assert lg.ledger_from_environment() is not chosen  # a new object: the process keeps one (Runtime)


# --- the plan, stored once ------------------------------------------------------------------------

def catalog_plan(run_id: str = "stored-1", services: int = 3) -> dict:
    """A real frozen plan (tower.runs.plan.build_plan), with a spec, params and platform settings."""
    from tower.catalog.model import Catalog, Pipeline, Platform, Service
    from tower.runs.plan import build_plan

    names = [f"s{i}" for i in range(services)]
    built = {name: Service(name, "cmd", depends_on=tuple(names[:i][-1:]), timeout=60.0, params={"n": i},
                           spec={"command": f"echo {name}"}, expected_duration=2.0)
             for i, name in enumerate(names)}
    catalog = Catalog("t.yaml", {"cmd": Platform("cmd", "command", max_concurrency=2, settings={"cwd": "/tmp"})},
                      built, {"p": Pipeline("p", params={"day": "today"})})
    return build_plan(catalog, "p", run_id=run_id, params=["day=monday"])


def test_a_stored_plan_reads_back_whole_and_its_reference_is_small(ledger, tmp_path):
    plan = catalog_plan()
    reference = lg.store_plan(ledger, plan, T0)
    queued = live_status(SqliteRunLedger(tmp_path / "ledger.db"), "stored-1", T1)  # stored, not opened yet
    assert (queued["status"], queued["started"]) == ("running", iso(T0))
    assert reference == {"run_id": "stored-1", "pipeline": "p"}
    assert lg.load_plan(ledger, "stored-1") == json.loads(json.dumps(plan))
    assert "spec" not in lg.plan_outline(ledger, "stored-1")["services"]["s0"]
    step = open_run(ledger, "stored-1", T0 + timedelta(seconds=1))
    from tower.runs.plan import service_job

    assert step.start == {plan["services"]["s0"]["iid"]: service_job(plan, "s0")}
    assert run_result(ledger, "stored-1", T0)["started"] == iso(T0 + timedelta(seconds=1))  # when it opened


def test_storing_a_plan_again_keeps_the_first(ledger):
    plan = catalog_plan()
    lg.store_plan(ledger, plan, T0)
    other = {**catalog_plan(), "params": {"day": "tuesday"}}
    assert lg.store_plan(ledger, other, T0) == {"run_id": "stored-1", "pipeline": "p"}
    assert lg.load_plan(ledger, "stored-1")["params"] == plan["params"]


def test_a_run_without_a_stored_plan_is_refused_clearly(ledger):
    with pytest.raises(RunNotInLedger, match="not in the run ledger"):
        open_run(ledger, "never-stored", T0)
    with pytest.raises(RunNotInLedger, match="no plan in the run ledger"):
        lg.load_plan(ledger, "never-stored")


def test_the_run_result_is_a_capped_summary_whatever_the_run_size(ledger):
    names = [f"s{i:04d}" for i in range(3000)]
    plan = plan_of({**{n: [] for n in names}, "after": ["s0000"]})
    open_new(ledger, plan, inputs_of(plan), T0)
    for name in names:
        finish_service(ledger, "r1", name, ok(name, status="failed", error="x" * 5000), T0)
    result = run_result(ledger, "r1", T0)
    assert result["status"] == "failed" and "services" not in result
    assert result["counts"]["failed"] == 3000 and result["counts"]["upstream_failed"] == 1
    assert list(result["failed"]) == names[:RESULT_FAILED_SHOWN]
    assert all(len(error) == RESULT_ERROR_CHARS for error in result["failed"].values())
    assert result["failed_not_shown"] == 3000 - RESULT_FAILED_SHOWN
    assert f"and {3000 - RESULT_FAILED_SHOWN} more failed service(s)" in result["summary"]
    assert len(json.dumps(result)) < 45_000  # under Azure Storage's blob offload threshold
    assert run_services(ledger, "r1", T0)["s2999"]["error"] == "x" * 5000  # the ledger keeps it whole


# --- the plan API and small reads: a stored plan back whole, its outline and reference, the cancel
# flag, the cached view, retention deletes ------------------------------------------------------

def a_plan(run_id: str = "r1", **options) -> dict:
    platforms = {"sim": Platform("sim", "sim", max_concurrency=2, settings={"time_scale": 1})}
    services = {
        "a": Service("a", "sim", retry=RetryPolicy(retries=1), expected_duration=2.0, spec={"duration": 1},
                     params={"day": "mon"}),
        "b": Service("b", "sim", depends_on=("a",), timeout=60.0, spec={"duration": 2}),
    }
    catalog = Catalog("test.yaml", platforms, services, {"p": Pipeline("p", params={"region": "emea"})})
    return build_plan(catalog, "p", run_id=run_id, **options)


def test_a_stored_plan_comes_back_whole_and_its_reference_is_small(ledger):
    plan = a_plan()
    plan["services"]["a"]["note"] = "an extra field a later version added"
    del plan["services"]["b"]["expect"]  # a service with nothing beyond its core and its input
    reference = store_plan(ledger, plan, T0)
    assert reference == {"run_id": "r1", "pipeline": "p"}
    assert load_plan(ledger, "r1") == plan
    assert store_plan(ledger, {**plan, "reconcile_after": 5.0}, T0)["reconcile_after"] == 5.0
    assert plan_reference({**plan, "reconcile_after": 5.0}) == {"run_id": "r1", "pipeline": "p", "reconcile_after": 5.0}


def test_the_head_keeps_only_what_the_core_and_the_inputs_leave_out():
    plan = a_plan()
    plan["services"]["a"]["note"] = "an extra field"
    head = lg.plan_head(plan)  # stored beside the core and every input: a 5,000-service spec list only once
    assert head == {**{k: v for k, v in plan.items() if k != "services"},
                    "service_extra": {"a": {"expect": plan["services"]["a"]["expect"], "note": "an extra field"},
                                      "b": {"expect": None}}}


def test_the_outline_is_the_plan_without_specs_and_params(ledger):
    plan = a_plan()
    store_plan(ledger, plan, T0)
    reads = []
    stored_plan = ledger.stored_plan
    ledger.stored_plan = lambda run_id, inputs=True: reads.append(inputs) or stored_plan(run_id, inputs)
    outline = plan_outline(ledger, "r1")
    assert outline == {**{k: v for k, v in plan.items() if k != "services"},
                       "services": {name: {key: svc[key] for key in ("deps", "expected", "platform", "iid")}
                                    for name, svc in plan["services"].items()}}
    assert plan_outline(ledger, "nope") is None
    assert reads == [False, False]  # a status read of a wide run never downloads every service's input


def test_a_run_stored_without_its_plan_has_no_plan_to_load(ledger):
    plan = a_plan()
    create_run(ledger, plan, {name: {"service": name} for name in plan["services"]}, T0)
    with pytest.raises(RunNotInLedger, match="run 'r1' has no plan in the run ledger"):
        load_plan(ledger, "r1")
    with pytest.raises(RunNotInLedger):
        load_plan(ledger, "nope")


def test_the_cancel_flag_reads_false_until_a_cancel_and_for_an_unknown_run(ledger):
    store_plan(ledger, a_plan(), T0)
    open_run(ledger, "r1", T0)
    assert (is_cancelled(ledger, "r1"), is_cancelled(ledger, "nope")) == (False, False)
    cancel_run(ledger, "r1", T0)
    assert is_cancelled(ledger, "r1")


def test_a_cancel_seen_by_another_host_stops_its_dispatch(ledger, tmp_path):
    store_plan(ledger, a_plan(), T0)
    open_run(ledger, "r1", T0)
    cancel_run(ledger, "r1", T0)
    other = SqliteRunLedger(tmp_path / "ledger.db")
    other.location = f"another host over {tmp_path}"           # restores the run from the store
    step = finish_service(other, "r1", "a", ok("a"), T0)
    assert step.start == {} and step.done
    assert live_status(other, "r1", T0)["counts"] == {"succeeded": 1, "cancelled": 1}


def test_the_cached_view_looks_at_this_hosts_last_state_of_a_run_only(ledger, tmp_path):
    assert cached_view(ledger, "r1", lambda scheduler: scheduler.plan["run_id"]) is None
    store_plan(ledger, a_plan(), T0)
    open_run(ledger, "r1", T0)
    assert cached_view(ledger, "r1", lambda scheduler: scheduler.records["a"].status) == "running"
    assert cached_view(ledger, "r2", lambda scheduler: scheduler.plan["run_id"]) is None
    elsewhere = SqliteRunLedger(tmp_path / "other.db")
    assert cached_view(elsewhere, "r1", lambda scheduler: scheduler.plan["run_id"]) is None


def test_retention_deletes_the_runs_asked_for_in_chunks_and_counts_them(ledger, monkeypatch):
    monkeypatch.setattr(ledger_sqlite, "SQLITE_CHUNK", 2)
    plans = {f"r{n}": a_plan(f"r{n}") for n in range(1, 6)}
    for plan in plans.values():
        store_plan(ledger, plan, T0)
    assert ledger.delete_runs(["r1", "r2", "r3", "r4", "nope"]) == 4  # three chunks
    assert [ledger.version(f"r{n}") for n in range(1, 6)] == [None, None, None, None, 1]
    assert ledger.stored_plan("r2") is None and load_plan(ledger, "r5") == plans["r5"]


def test_the_sqlite_store_keeps_its_contract(ledger):
    """`RunLedger`'s promises, as the dispatch API relies on them (the Table store's: test_ledger_table)."""
    plan = plan_of({"a": [], "b": ["a"]})
    assert lg.create_run(ledger, plan, inputs_of(plan), T0) is True
    assert lg.create_run(ledger, {**plan, "pipeline": "other"}, inputs_of(plan), T1) is False  # the first stands
    assert ledger.stored_plan("r1")[0]["pipeline"] == "p" and ledger.meta("r1") == {"started": iso(T0), "cancel": False}
    open_run(ledger, "r1", T0)
    finish_service(ledger, "r1", "a", ok("a"), T0)  # version 3
    since = ledger.load("r1", since=3)
    assert (since.version, since.core, set(since.records)) == (3, None, {"a", "b"})
    assert ledger.load("r1").core == lg.core_of(plan)
    assert ledger.stored_plan("r1", inputs=False)[2] == {}
    assert ledger.stored_plan("r1")[2] == inputs_of(plan)
    assert (ledger.version("nope"), ledger.meta("nope"), ledger.load("nope"), ledger.stored_plan("nope")) == \
        (None, None, None, None)


def test_a_run_stored_here_opens_from_this_hosts_memory(ledger):
    plan = plan_of({"a": [], "b": ["a"]})
    loads, load = [], ledger.load
    ledger.load = lambda run_id, since=None: loads.append(since) or load(run_id, since)
    assert lg.create_run(ledger, plan, inputs_of(plan), T0)
    assert live_status(ledger, "r1", T0)["started"] == iso(T0)  # stored, not opened yet
    assert list(open_run(ledger, "r1", T1).start) == ["r1:a"]
    assert loads == []  # the scheduler the store left in memory: no read of the run


def test_a_deadline_in_the_plan_is_in_the_runs_status(ledger, tmp_path):
    plan = {**plan_of({"a": [], "b": ["a"]}), "deadline": iso(T0 + timedelta(hours=2))}
    open_new(ledger, plan, inputs_of(plan), T0)
    status = live_status(SqliteRunLedger(tmp_path / "ledger.db"), "r1", T0 + timedelta(seconds=1))
    assert status["deadline"] == iso(T0 + timedelta(hours=2)) and status["at_risk"] is False


def test_a_run_stored_before_plans_were_kept_reads_its_outline_from_its_core(ledger):
    plan = a_plan()
    store_plan(ledger, plan, T0)
    with ledger._connect() as db:  # a ledger file written before the run_plans table held heads
        db.execute("DELETE FROM run_plans")
    assert plan_outline(ledger, "r1")["services"]["b"]["deps"] == ["a"]
    assert plan_outline(ledger, "r1")["pipeline"] == "p"
    with pytest.raises(RunNotInLedger, match="has no plan"):
        load_plan(ledger, "r1")


def test_the_ledger_from_the_environment_is_kept_in_the_home_it_is_given(tmp_path, monkeypatch):
    monkeypatch.setenv("TOWER_HOME", str(tmp_path / "elsewhere"))
    monkeypatch.delenv("TOWER_LEDGER_TABLE_URL", raising=False)
    here = ledger_from_environment(tmp_path / "home")
    assert isinstance(here, SqliteRunLedger) and str(here.path) == str(tmp_path / "home" / "ledger.db")
    assert str(ledger_from_environment().path) == str(tmp_path / "elsewhere" / "ledger.db")
