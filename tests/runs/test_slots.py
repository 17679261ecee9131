"""Platform slots shared by every run (`tower.runs.slots`), through the ledger's steps, on both stores
(SQLite, and Table Storage against Azurite): the limit holds across runs and hosts, the most urgent
waiter of any run goes first, a freed slot dispatches another run's waiter in the same report, and a
crash never leaks a slot."""

import threading
import uuid
from dataclasses import replace
from datetime import datetime, timedelta, timezone

import pytest

from tests.runs.jobs import job_json
from tower.catalog.pipelines import PRIORITY_RANGE
from tower.contracts import ServiceResult
from tower.runs import ledger as lg
from tower.runs import slots
from tower.runs.ledger import cancel_run, core_of, finish_service, reconcile_run
from tower.runs.ledger_sqlite import SqliteRunLedger
from tower.states import ServiceState
from tower.timestamps import iso

T0 = datetime(2026, 12, 1, 12, 0, tzinfo=timezone.utc)


def plan_of(run_id: str, deps: dict, limit=2, expected=None, priority=0, simulated=False) -> dict:
    expected = expected or {}
    return {"run_id": run_id, "pipeline": run_id.split("-")[0], "priority": priority, "simulated": simulated,
            "platforms": {"x": {"max_concurrency": limit}, "free": {"max_concurrency": None}},
            "services": {name: {"deps": list(d), "expected": expected.get(name, 1.0),
                                "platform": "free" if name.startswith("free") else "x",
                                "iid": f"{run_id}:{name}"} for name, d in deps.items()}}


def open_run(ledger, plan: dict, inputs: dict, now: datetime):
    """Store the run (once), then open it: what a start and `pipeline_run`'s open_run do."""
    lg.create_run(ledger, plan, inputs, now)
    return lg.open_run(ledger, plan["run_id"], now)


def inputs_of(plan: dict) -> dict:
    return {name: job_json(plan["run_id"], name) for name in plan["services"]}


def ok(name: str) -> ServiceResult:
    return ServiceResult(name, ServiceState.SUCCEEDED, attempts=1)


def wide(n: int) -> dict:
    return {f"s{i}": [] for i in range(n)}


@pytest.fixture(params=["sqlite", "table"])
def store(request, tmp_path):
    """A function that opens the ledger as another host would (a new object over the same store)."""
    if request.param == "sqlite":
        return lambda: SqliteRunLedger(tmp_path / "ledger.db")
    from azure.core.credentials import AzureNamedKeyCredential

    from tests.conftest import AZURITE_ACCOUNT, AZURITE_KEY
    from tower.runs.ledger_table import TableRunLedger

    url = f"{request.getfixturevalue('azurite_table_url')}/slots{uuid.uuid4().hex[:8]}"
    return lambda: TableRunLedger(url, credential=AzureNamedKeyCredential(AZURITE_ACCOUNT, AZURITE_KEY))


def holders(ledger, pool="x") -> set[tuple[str, str]]:
    return {slots.holder_of(key) for key in ledger.slots().read(pool)[1]["holders"]}


def test_two_runs_share_one_limit_and_a_report_starts_the_other_runs_waiter(store):
    ledger = store()
    a, b = plan_of("a-1", wide(3)), plan_of("b-1", wide(3))
    assert list(open_run(ledger, a, inputs_of(a), T0).start) == ["a-1:s0", "a-1:s1"]
    assert open_run(ledger, b, inputs_of(b), T0).start == {}            # both slots are a's
    assert holders(ledger) == {("a-1", "s0"), ("a-1", "s1")}
    # a's s2 and b's s0 wait; both at remaining path 1: the older run (a) first
    step = finish_service(store(), "a-1", "s0", ok("s0"), T0 + timedelta(seconds=1))
    assert list(step.start) == ["a-1:s2"]
    step = finish_service(ledger, "a-1", "s1", ok("s1"), T0 + timedelta(seconds=2))
    assert list(step.start) == ["b-1:s0"]                                # a's report dispatches b's service
    assert (step.start["b-1:s0"].service, step.start["b-1:s0"].run_id) == ("s0", "b-1")
    assert ledger.load("b-1").records["s0"]["status"] == "running"
    assert holders(ledger) == {("a-1", "s2"), ("b-1", "s0")}
    ledger.dispatches.settled(step.start)  # b's s0, dispatched here, has settled: if its service run
    assert reconcile_run(ledger, "b-1", T0 + timedelta(seconds=3)).dispatching == frozenset()  # is missing, it was lost


def test_a_reconcile_leaves_the_run_sharing_its_platforms_for_the_next_change(store):
    ledger = store()
    plan = plan_of("a-1", wide(2), limit=1)
    assert list(open_run(ledger, plan, inputs_of(plan), T0).start) == ["a-1:s0"]
    reconcile_run(ledger, "a-1", T0 + timedelta(seconds=1))  # every pool re-synced, this host's state cached
    assert list(finish_service(ledger, "a-1", "s0", ok("s0"), T0 + timedelta(seconds=2)).start) == ["a-1:s1"]
    assert holders(ledger) == {("a-1", "s1")}  # through the pool: s0's slot given back, s1 holds it


def test_a_platform_without_a_limit_never_touches_the_pools(store, monkeypatch):
    ledger = store()
    plan = plan_of("a-1", {"free0": [], "free1": ["free0"]})
    monkeypatch.setattr(slots, "sync", lambda *args: pytest.fail("an unlimited platform synced a pool"))
    assert list(open_run(ledger, plan, inputs_of(plan), T0).start) == ["a-1:free0"]
    assert list(finish_service(ledger, "a-1", "free0", ok("free0"), T0).start) == ["a-1:free1"]


def test_a_higher_priority_run_overtakes_a_longer_path(store):
    ledger = store()
    low = plan_of("low-1", {"long": [], "long2": [], "tail": ["long"]}, limit=1, expected={"long": 9, "tail": 9})
    high = plan_of("high-1", {"quick": []}, limit=1, priority=5)
    assert list(open_run(ledger, low, inputs_of(low), T0).start) == ["low-1:long"]
    open_run(ledger, high, inputs_of(high), T0 + timedelta(seconds=1))
    step = finish_service(ledger, "low-1", "long", ok("long"), T0 + timedelta(seconds=2))
    assert list(step.start) == ["high-1:quick"]   # before low's own `tail`, a path of 9 s


def test_a_long_wait_ages_a_low_priority_waiter_past_a_higher_one(store):
    ledger = store()
    holder = plan_of("hold-1", {"h": []}, limit=1)
    low = plan_of("low-1", {"l": []}, limit=1, priority=0)
    high = plan_of("high-1", {"q": []}, limit=1, priority=1)
    open_run(ledger, holder, inputs_of(holder), T0)
    open_run(ledger, low, inputs_of(low), T0)
    open_run(ledger, high, inputs_of(high), T0 + slots.AGING * 2)
    step = finish_service(ledger, "hold-1", "h", ok("h"), T0 + slots.AGING * 2)
    assert list(step.start) == ["low-1:l"]       # waited two AGING steps: priority 0 + 2 > 1


def test_a_grant_is_idempotent_and_a_repeated_report_takes_no_second_slot(store):
    ledger = store()
    a, b = plan_of("a-1", wide(2), limit=1), plan_of("b-1", wide(2), limit=1)
    open_run(ledger, a, inputs_of(a), T0)
    open_run(ledger, b, inputs_of(b), T0)
    first = finish_service(ledger, "a-1", "s0", ok("s0"), T0)
    again = finish_service(store(), "a-1", "s0", ok("s0"), T0)
    assert list(first.start) == ["a-1:s1"] and again.start == {}
    assert holders(ledger) == {("a-1", "s1")}


def test_a_crash_between_the_runs_change_and_the_pool_is_put_right_by_a_reconcile(store, monkeypatch):
    ledger = store()
    a, b = plan_of("a-1", wide(2)), plan_of("b-1", wide(2))
    open_run(ledger, a, inputs_of(a), T0)
    open_run(ledger, b, inputs_of(b), T0)
    with monkeypatch.context() as crash:     # the host dies after saving a's change, before the pool
        crash.setattr(lg, "_share", lambda ledger, step, now: step)
        finish_service(ledger, "a-1", "s0", ok("s0"), T0)
        finish_service(ledger, "a-1", "s1", ok("s1"), T0)
    assert holders(ledger) == {("a-1", "s0"), ("a-1", "s1")}          # held by services that ended
    # a has ended: only another run's reconcile (on its timer, on any host) can free them
    step = reconcile_run(store(), "b-1", T0 + timedelta(minutes=1))
    assert sorted(step.start) == ["b-1:s0", "b-1:s1"]
    assert holders(ledger) == {("b-1", "s0"), ("b-1", "s1")}


def test_a_repeated_report_puts_right_a_pool_its_first_attempt_never_reached(store, monkeypatch):
    ledger = store()
    a, b = plan_of("a-1", wide(1), limit=1), plan_of("b-1", wide(1), limit=1)
    open_run(ledger, a, inputs_of(a), T0)
    open_run(ledger, b, inputs_of(b), T0)
    with monkeypatch.context() as crash:
        crash.setattr(lg, "_share", lambda ledger, step, now: step)
        assert finish_service(ledger, "a-1", "s0", ok("s0"), T0).start == {}
    assert list(finish_service(store(), "a-1", "s0", ok("s0"), T0).start) == ["b-1:s0"]   # the retry


def test_a_new_run_reclaims_slots_an_ended_run_lost_at_once(store, monkeypatch):
    ledger = store()
    a, b = plan_of("a-1", wide(2)), plan_of("b-1", wide(2))
    open_run(ledger, a, inputs_of(a), T0)
    with monkeypatch.context() as crash:     # a's last reports never reached the pool; a has ended
        crash.setattr(lg, "_share", lambda ledger, step, now: step)
        finish_service(ledger, "a-1", "s0", ok("s0"), T0)
        finish_service(ledger, "a-1", "s1", ok("s1"), T0)
    assert sorted(open_run(store(), b, inputs_of(b), T0).start) == ["b-1:s0", "b-1:s1"]


def test_a_sync_from_an_older_state_of_a_run_arriving_late_releases_nothing():
    """Two reports of one run sync outside its lock: the older state's sync, arriving after a newer
    one granted a slot to a service it did not know was ready, must not release that slot."""
    state = slots.empty()
    state["limit"] = 1

    def offer(version, running, ready):
        return {"run": "a-1", "version": version, "limit": 1, "priority": 0, "started": iso(T0),
                "running": running, "ready": set(ready), "waiting": [(n, 1.0) for n in ready]}

    assert slots.apply(state, offer(6, [], ["u"]), T0) == [("a-1", "u")]   # v6: u ready, granted
    assert slots.apply(state, offer(5, [], []), T0) == []                   # v5, late: u unknown
    assert set(state["holders"]) == {slots.holder_key("a-1", "u")}
    assert slots.apply(state, offer(7, [], []), T0) == []                   # v7: u ended, released
    assert state["holders"] == {} and state["seen"] == {}


def test_grants_are_taken_holding_no_run_lock(store, monkeypatch):
    """Taking a grant locks the granted run; a change holding its own run's lock meanwhile would
    deadlock with the other run's change doing the same (two runs opened at once did)."""
    ledger = store()
    a, b = plan_of("a-1", wide(1), limit=1), plan_of("b-1", wide(1), limit=1)
    take, held = lg._take_granted, []

    def checked(ledger, run_id, pools, now):
        for other in ("a-1", "b-1"):
            probe = threading.Thread(target=lambda o=other: held.append(
                (o, lg._run_lock(ledger, o).acquire(timeout=2) and lg._run_lock(ledger, o).release() is None)))
            probe.start()
            probe.join()
        return take(ledger, run_id, pools, now)

    monkeypatch.setattr(lg, "_take_granted", checked)
    open_run(ledger, a, inputs_of(a), T0)
    open_run(ledger, b, inputs_of(b), T0)
    finish_service(ledger, "a-1", "s0", ok("s0"), T0)
    reconcile_run(ledger, "b-1", T0)
    assert held and all(free for _, free in held), held


def _grant_lost(ledger, monkeypatch, width: int) -> None:
    """Runs a-1 and b-1 of `width` services each (the same names) on a pool of `width` slots, all a's;
    a's s0 ends, the pool grants b's s0, and the host dies before b's change takes it."""
    a, b = plan_of("a-1", wide(width), limit=width), plan_of("b-1", wide(width), limit=width)
    open_run(ledger, a, inputs_of(a), T0)
    open_run(ledger, b, inputs_of(b), T0)
    with monkeypatch.context() as crash:
        crash.setattr(lg, "_take_granted", lambda *args: (_ for _ in ()).throw(SystemExit("crash")))
        with pytest.raises(SystemExit):
            finish_service(ledger, "a-1", "s0", ok("s0"), T0)
    assert ("b-1", "s0") in holders(ledger) and ledger.load("b-1").records["s0"]["status"] == "pending"


def test_a_grant_lost_before_its_run_took_it_is_taken_by_a_reconcile(store, monkeypatch):
    ledger = store()
    _grant_lost(ledger, monkeypatch, width=1)
    step = reconcile_run(store(), "b-1", T0 + timedelta(minutes=1))
    assert list(step.start) == ["b-1:s0"] and holders(ledger) == {("b-1", "s0")}


def test_another_runs_reconcile_takes_the_lost_grant_and_only_it(store, monkeypatch):
    ledger = store()
    _grant_lost(ledger, monkeypatch, width=2)
    step = reconcile_run(store(), "a-1", T0 + timedelta(minutes=1))  # a's reconcile sweeps its pool's other runs
    assert list(step.start) == ["b-1:s0"]  # b's s0 holds the slot; b's s1 (a's s1 holds the other) still waits
    assert {n: r["status"] for n, r in ledger.load("b-1").records.items()} == {"s0": "running", "s1": "pending"}


def test_a_deleted_run_leaves_its_pools_on_a_reconcile(store, monkeypatch):
    ledger = store()
    a, b = plan_of("a-1", wide(1), limit=1), plan_of("b-1", wide(1), limit=1)
    open_run(ledger, a, inputs_of(a), T0)
    open_run(ledger, b, inputs_of(b), T0)
    ledger.delete_runs(["a-1"])
    ledger.schedulers.clear()  # what this host knew of the runs: forgotten
    assert list(reconcile_run(ledger, "b-1", T0).start) == ["b-1:s0"]
    assert holders(ledger) == {("b-1", "s0")}


def test_a_cancelled_run_frees_its_slots_and_starts_the_other_runs_waiters(store):
    ledger = store()
    a, b = plan_of("a-1", wide(4)), plan_of("b-1", wide(2))
    open_run(ledger, a, inputs_of(a), T0)
    open_run(ledger, b, inputs_of(b), T0)
    assert ledger.slots().read("x")[1]["waiting"].keys() == {"a-1", "b-1"}
    stop = cancel_run(ledger, "a-1", T0)
    assert sorted(stop.stop) == ["a-1:s0", "a-1:s1"]
    assert ledger.slots().read("x")[1]["waiting"].keys() == {"b-1"}     # a's waiters left the queue
    cancelled = ServiceResult("s0", ServiceState.CANCELLED, attempts=1, error="cancelled")
    assert list(finish_service(ledger, "a-1", "s0", cancelled, T0).start) == ["b-1:s0"]
    assert list(finish_service(ledger, "a-1", "s1", replace(cancelled, service="s1"), T0).start) == ["b-1:s1"]
    assert holders(ledger) == {("b-1", "s0"), ("b-1", "s1")}


def test_what_if_runs_share_pools_of_their_own(store):
    ledger = store()
    real, what_if = plan_of("a-1", wide(2), limit=1), plan_of("b-1", wide(1), limit=1, simulated=True)
    assert list(open_run(ledger, real, inputs_of(real), T0).start) == ["a-1:s0"]
    assert list(open_run(ledger, what_if, inputs_of(what_if), T0).start) == ["b-1:s0"]
    assert holders(ledger, "what-if/x") == {("b-1", "s0")}
    other = plan_of("c-1", wide(1), limit=1, simulated=True)
    open_run(ledger, other, inputs_of(other), T0)  # waits for b's what-if slot, not for a's real one
    assert lg.live_status(ledger, "c-1", T0)["slots"] == {"x": {"limit": 1, "busy": 1, "held_by": {"b-1": 1}}}


def test_reports_from_many_threads_and_hosts_never_exceed_the_limit(store, monkeypatch):
    """Four runs of 12 services, limit 3, reports on three threads, each over its own ledger object
    (a host): the pool never has more than 3 holders, and every service starts exactly once."""
    runs = [plan_of(f"r{i}-1", wide(12), limit=3) for i in range(4)]
    first = store()
    running: list[str] = []
    starts: list[str] = []
    peak, lock = [0], threading.Lock()
    apply = slots.apply

    def counted(state, run, now):
        grants = apply(state, run, now)
        with lock:
            peak[0] = max(peak[0], len(state["holders"]))
        return grants

    monkeypatch.setattr(slots, "apply", counted)

    def started(step):
        with lock:
            running.extend(step.start)
            starts.extend(step.start)

    for plan in runs:
        started(open_run(first, plan, inputs_of(plan), T0))

    def host():
        ledger = store()
        for _ in range(200):
            with lock:
                iid = running.pop() if running else None
                if iid is None and len(starts) == 48:
                    return
            if iid is None:
                threading.Event().wait(0.005)
                continue
            run_id, _, name = iid.partition(":")
            started(finish_service(ledger, run_id, name, ok(name), T0))

    threads = [threading.Thread(target=host) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert peak[0] == 3
    assert sorted(starts) == sorted(f"{p['run_id']}:s{i}" for p in runs for i in range(12))
    statuses = [r["status"] for plan in runs for r in first.load(plan["run_id"]).records.values()]
    assert statuses == ["succeeded"] * 48
    assert holders(first) == set() and first.slots().read("x")[1]["waiting"] == {}


def test_core_of_carries_priority_and_shares_limited_platforms():
    core = core_of(plan_of("a-1", wide(1), priority=7))
    assert core["priority"] == 7 and core["platforms"]["x"]["shared"] is True
    unset = plan_of("a-1", wide(1))
    del unset["priority"]
    assert core_of(unset)["priority"] == 0  # ranks with the runs that say 0
    assert PRIORITY_RANGE == (-100, 100)


def test_status_of_a_waiting_run_says_which_runs_hold_the_slots(store):
    from tower.runner import RunInfo, json_result
    from tower.runs.ledger import live_status

    ledger = store()
    a, b = plan_of("a-1", wide(2)), plan_of("b-1", wide(1))
    open_run(ledger, a, inputs_of(a), T0)
    open_run(ledger, b, inputs_of(b), T0)
    assert "slots" not in live_status(ledger, "a-1", T0)        # nothing of a waits
    status = live_status(ledger, "b-1", T0)
    assert status["slots"] == {"x": {"limit": 2, "busy": 2, "held_by": {"a-1": 2}}}
    info = RunInfo("b-1", "Running", None, None, b, None, status)
    assert json_result(info.to_result())["slots"] == status["slots"]   # GET /api/runs/{id}, status --json


class LosingSlots(slots.SqliteSlots):
    """Every conditional write of a pool loses, as if another host always wrote it first."""

    writes = 0

    def write(self, pool, tag, state) -> bool:
        self.writes += 1
        return False


def test_a_pool_write_that_loses_every_race_is_a_ledger_conflict(tmp_path):
    from tower.errors import LedgerConflict

    store = LosingSlots(tmp_path / "ledger.db")
    waiter = {"run": "r1", "version": 1, "limit": 1, "priority": 0, "started": iso(T0), "running": [],
              "ready": {"a"}, "waiting": [["a", 1.0]]}
    with pytest.raises(LedgerConflict, match=r"platform slots 'x': the pool kept changing .*\(\d+ tries\)"):
        slots.sync(store, "x", waiter, T0)
    assert store.writes == slots.SYNC_ATTEMPTS


class FailingSlots(slots.SqliteSlots):
    """A pool store whose writes fail while `down` (a Table 503 during the sync after a run's save)."""

    down = True

    def write(self, pool, tag, state) -> bool:
        if self.down:
            raise OSError("503 Server Busy (injected)")
        return super().write(pool, tag, state)


def test_a_sync_that_fails_after_the_save_leaves_the_saved_starts_to_the_retry(tmp_path):
    """The activity fails, so nothing dispatched what the saved change took: its retry on this host
    must start them, not leave them `dispatching` for the whole grace (30 minutes)."""
    ledger = SqliteRunLedger(tmp_path / "ledger.db")
    failing = FailingSlots(tmp_path / "ledger.db")
    ledger.slots = lambda: failing
    failing.down = False
    plan = plan_of("a-1", {"a": [], "free0": ["a"], "b": ["a"]}, limit=1)
    assert list(open_run(ledger, plan, inputs_of(plan), T0).start) == ["a-1:a"]
    ledger.dispatches.settled(["a-1:a"])
    failing.down = True
    with pytest.raises(OSError, match="503"):
        finish_service(ledger, "a-1", "a", ok("a"), T0 + timedelta(seconds=1))  # saved: free0 taken, then the sync fails
    assert ledger.dispatches.under_way() == frozenset()
    failing.down = False
    again = finish_service(ledger, "a-1", "a", ok("a"), T0 + timedelta(seconds=2))  # the activity's retry
    assert "a-1:free0" in again.ensure and again.dispatching == frozenset()
    assert list(again.start) == ["a-1:b"]  # a's slot, given back by the retry's sync


def test_a_service_made_ready_by_a_report_asks_its_pool_in_that_report(store):
    ledger = store()
    plan = plan_of("a-1", {"free0": [], "s0": ["free0"]}, limit=1)
    assert list(open_run(ledger, plan, inputs_of(plan), T0).start) == ["a-1:free0"]
    assert list(finish_service(ledger, "a-1", "free0", ok("free0"), T0).start) == ["a-1:s0"]  # granted at once
    assert holders(ledger) == {("a-1", "s0")}


def test_between_runs_the_longer_remaining_path_is_granted_first(store):
    ledger = store()
    holder, short = plan_of("a-1", wide(1), limit=1), plan_of("c-1", {"short": []}, limit=1)
    long = plan_of("b-1", {"long": [], "tail": ["long"]}, limit=1)
    open_run(ledger, holder, inputs_of(holder), T0)
    open_run(ledger, short, inputs_of(short), T0)                          # older, but its path is 1
    open_run(ledger, long, inputs_of(long), T0 + timedelta(seconds=1))     # path 2: long, then tail
    assert list(finish_service(ledger, "a-1", "s0", ok("s0"), T0 + timedelta(seconds=2)).start) == ["b-1:long"]
