"""The run ledger's plan API and small reads (SQLite): a stored plan comes back whole, its outline,
the reference `pipeline_run` gets, the cancel flag, the cached view, retention deletes."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from tower.catalog.model import Catalog, Pipeline, Platform, RetryPolicy, Service
from tower.errors import RunNotInLedger
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
    store_plan,
)
from tower.runs.ledger_sqlite import SqliteRunLedger
from tower.runs.plan import build_plan

T0 = datetime(2026, 12, 1, 12, 0, tzinfo=timezone.utc)


@pytest.fixture
def ledger(tmp_path):
    return SqliteRunLedger(tmp_path / "ledger.db")


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
    reference = store_plan(ledger, plan, T0)
    assert reference == {"run_id": "r1", "pipeline": "p"}
    assert load_plan(ledger, "r1") == plan
    assert store_plan(ledger, {**plan, "reconcile_after": 5.0}, T0)["reconcile_after"] == 5.0
    assert plan_reference({**plan, "reconcile_after": 5.0}) == {"run_id": "r1", "pipeline": "p", "reconcile_after": 5.0}


def test_the_outline_is_the_plan_without_specs_and_params(ledger):
    plan = a_plan()
    store_plan(ledger, plan, T0)
    outline = plan_outline(ledger, "r1")
    assert outline == {**{k: v for k, v in plan.items() if k != "services"},
                       "services": {name: {key: svc[key] for key in ("deps", "expected", "platform", "iid")}
                                    for name, svc in plan["services"].items()}}
    assert plan_outline(ledger, "nope") is None


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
    step = finish_service(other, "r1", "a", {"service": "a", "status": "succeeded", "attempts": 1,
                                              "started": None, "finished": None}, T0)
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
    assert ledger.delete_runs(["r1", "r2", "r3", "nope"]) == 3
    assert [ledger.version(f"r{n}") for n in range(1, 6)] == [None, None, None, 1, 1]
    assert ledger.stored_plan("r2") is None and load_plan(ledger, "r4") == plans["r4"]


def test_the_ledger_from_the_environment_is_kept_in_the_home_it_is_given(tmp_path, monkeypatch):
    monkeypatch.setenv("TOWER_HOME", str(tmp_path / "elsewhere"))
    monkeypatch.delenv("TOWER_LEDGER_TABLE_URL", raising=False)
    here = ledger_from_environment(tmp_path / "home")
    assert isinstance(here, SqliteRunLedger) and str(here.path) == str(tmp_path / "home" / "ledger.db")
    assert ledger_from_environment(tmp_path / "home") is here            # one per location and process
    assert str(ledger_from_environment().path) == str(tmp_path / "elsewhere" / "ledger.db")
