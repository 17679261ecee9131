"""The board: runways per platform and why each waiting service waits, read off the scheduler."""

from dataclasses import replace
from datetime import datetime, timedelta, timezone

from tests.runs.jobs import job_json
from tower.board import board, ordinal, run_view, view
from tower.contracts import ServiceResult
from tower.runs.ledger import core_of, create_run, finish_service, open_run
from tower.runs.ledger_sqlite import SqliteRunLedger
from tower.runs.scheduler import Scheduler
from tower.states import ServiceState

T0 = datetime(2026, 12, 1, 6, 0, tzinfo=timezone.utc)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def plan(deps: dict, platform_of: dict, limits: dict, expected: dict | None = None) -> dict:
    expected = expected or {}
    return {
        "run_id": "run~p@1", "pipeline": "p",
        "services": {name: {"deps": list(d), "expected": expected.get(name, 10.0), "platform": platform_of[name],
                            "iid": f"iid-{name}"} for name, d in deps.items()},
        "platforms": {p: {"max_concurrency": limit} for p, limit in limits.items()},
    }


def ok(name: str) -> ServiceResult:
    return ServiceResult(name, ServiceState.SUCCEEDED, attempts=1)


# six loads on a lakehouse of 4 slots, then a transform waiting for load_orders, on a warehouse
WIDE = plan(
    {"load_orders": [], "l1": [], "l2": [], "l3": [], "l4": [], "l5": [], "orders_model": ["load_orders"]},
    {"load_orders": "lakehouse", "l1": "lakehouse", "l2": "lakehouse", "l3": "lakehouse", "l4": "lakehouse",
     "l5": "lakehouse", "orders_model": "warehouse"},
    {"lakehouse": 4, "warehouse": None},
    expected={"load_orders": 50.0, "l1": 40.0, "l2": 30.0, "l3": 20.0, "l4": 5.0, "l5": 1.0, "orders_model": 8.0},
)


def test_a_full_platform_shows_its_slots_its_queue_in_priority_order_and_each_queued_place():
    s = Scheduler(WIDE, T0)
    started = s.take_ready(at(0))
    assert started == ["load_orders", "l1", "l2", "l3"]  # longest remaining path first
    b = board(s, at(3))
    lake = next(r for r in b["runways"] if r["platform"] == "lakehouse")
    assert (lake["busy"], lake["limit"]) == (4, 4)
    assert [r["service"] for r in lake["running"]] == started
    assert lake["running"][0]["elapsed"] == 3.0
    assert lake["queue"] == ["l4", "l5"]
    assert b["waiting"]["l4"] == "no slot on lakehouse: 4/4 busy, 1st in queue"
    assert b["waiting"]["l5"] == "no slot on lakehouse: 4/4 busy, 2nd in queue"
    assert b["waiting"]["orders_model"] == "waiting for load_orders"
    warehouse = next(r for r in b["runways"] if r["platform"] == "warehouse")
    assert (warehouse["busy"], warehouse["limit"], warehouse["queue"], warehouse["blocked"]) == (0, None, [], 1)


def test_a_finished_dependency_moves_its_dependent_out_of_waiting_and_frees_a_slot_for_the_queue():
    s = Scheduler(WIDE, T0)
    s.take_ready(at(0))
    s.finish("load_orders", ok("load_orders"), at(50))
    assert sorted(s.take_ready(at(50))) == ["l4", "orders_model"]
    b = board(s, at(51))
    assert "orders_model" not in b["waiting"] and "load_orders" not in b["waiting"]
    assert b["waiting"] == {"l5": "no slot on lakehouse: 4/4 busy, 1st in queue"}


def test_a_reason_names_the_unfinished_dependencies_only_and_counts_beyond_three():
    deps = {"a": [], "b": [], "c": [], "d": [], "e": [], "z": ["a", "b", "c", "d", "e"]}
    s = Scheduler(plan(deps, dict.fromkeys(deps, "db"), {"db": None}), T0)
    s.take_ready(at(0))
    s.finish("a", ok("a"), at(1))
    assert board(s, at(1))["waiting"]["z"] == "waiting for b, c, d and 1 more"


def test_after_a_cancel_nothing_waits_in_a_queue():
    s = Scheduler(WIDE, T0)
    s.take_ready(at(0))
    s.cancel(at(1))
    b = board(s, at(1))
    assert all(not r["queue"] for r in b["runways"])
    assert b["waiting"] == {}  # what had not started is cancelled, not waiting


def test_ordinals():
    assert [ordinal(n) for n in (1, 2, 3, 4, 11, 12, 13, 21, 22, 101, 111)] == [
        "1st", "2nd", "3rd", "4th", "11th", "12th", "13th", "21st", "22nd", "101st", "111th"]


def test_view_marks_the_critical_path_of_what_is_left():
    s = Scheduler(WIDE, T0)
    s.take_ready(at(0))
    v = view(s, at(0))
    assert v["critical_path"] == ["load_orders", "orders_model"]  # 50 + 8 beats l1's 40
    s.finish("load_orders", ok("load_orders"), at(50))
    s.take_ready(at(50))
    assert view(s, at(50))["critical_path"] == ["orders_model"]  # 8 left beats l4's 5 and l1-l3 (overdue: 0 left)


def test_run_view_reads_a_run_from_the_ledger_without_changing_it(tmp_path):
    ledger = SqliteRunLedger(tmp_path / "ledger.db")
    full = {**WIDE, "platforms": {p: {"max_concurrency": x["max_concurrency"]} for p, x in WIDE["platforms"].items()}}
    create_run(ledger, full, {name: job_json(full["run_id"], name) for name in WIDE["services"]}, T0)
    open_run(ledger, full["run_id"], T0)
    finish_service(ledger, "run~p@1", "load_orders", replace(ok("load_orders"), remote_id="q-1", url="http://x/1"), at(50))
    version = ledger.version("run~p@1")
    v = run_view(ledger, "run~p@1", at(51))
    assert ledger.version("run~p@1") == version
    assert v["services"]["load_orders"]["url"] == "http://x/1"
    assert v["services"]["orders_model"]["status"] == "running"
    assert v["platforms"] == {"lakehouse": {"limit": 4}, "warehouse": {"limit": None}}
    assert v["board"]["waiting"] == {"l5": "no slot on lakehouse: 4/4 busy, 1st in queue"}
    assert core_of(full)["services"]["l5"]["platform"] == "lakehouse"
    assert run_view(ledger, "run~nope", at(51)) is None


def test_a_ready_service_with_a_free_slot_is_not_said_to_wait_for_a_slot():
    s = Scheduler(WIDE, T0)  # nothing taken yet: every load is ready, the lakehouse has 4 free slots
    b = board(s, at(0))
    assert b["waiting"]["load_orders"] == "ready: starts at the next dispatch on lakehouse"
    assert b["waiting"]["l3"] == "ready: starts at the next dispatch on lakehouse"  # 4th: the last free slot
    assert b["waiting"]["l4"] == "no slot on lakehouse: 0/4 busy, 1st in queue"  # behind the 4 that take them
    assert b["waiting"]["l5"] == "no slot on lakehouse: 0/4 busy, 2nd in queue"
    lake = next(r for r in b["runways"] if r["platform"] == "lakehouse")
    assert lake["queue"] == ["load_orders", "l1", "l2", "l3", "l4", "l5"] and lake["busy"] == 0


def test_a_waiting_service_names_the_runs_that_hold_its_platforms_shared_slots(tmp_path):
    ledger = SqliteRunLedger(tmp_path / "ledger.db")
    first = {**WIDE, "run_id": "run~first@1"}
    second = {**WIDE, "run_id": "run~second@1",
              "services": {n: {**svc, "iid": f"second-{n}"} for n, svc in WIDE["services"].items()}}
    for plan, now in ((first, T0), (second, at(1))):
        create_run(ledger, plan, {name: job_json(plan["run_id"], name) for name in WIDE["services"]}, now)
        open_run(ledger, plan["run_id"], now)
    v = run_view(ledger, "run~second@1", at(2))
    lake = next(r for r in v["board"]["runways"] if r["platform"] == "lakehouse")
    assert lake["busy"] == 4 and lake["holders"] == {"run~first@1": 4} and lake["running"] == []
    assert lake["waiting_runs"] == ["run~first@1", "run~second@1"]
    assert v["board"]["waiting"]["load_orders"] == "no slot on lakehouse: 4/4 busy; held by run~first@1 (4)"
    assert v["board"]["waiting"]["l5"] == "no slot on lakehouse: 4/4 busy, 2nd in queue; held by run~first@1 (4)"
    assert v["board"]["waiting"]["orders_model"] == "waiting for load_orders"
