"""Early reports on the platform thread (`activities.runs.report_here`), called the way
`activities.services._report_if_done` does (from a thread that is not the loop's), against the
local engine's real Durable client and ledger: what a report that fails part way leaves behind."""

import asyncio
import time
import uuid

import azure.durable_functions as df
import pytest

import activities.remote
import activities.runs
from tests.orchestrators.conftest import sim_catalog
from tower.ledger import ledger_from_environment, open_run
from tower.plan import build_plan, service_job
from tower.runner import run_app
from tower.timestamps import iso, utcnow


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    """A local engine of this module's own, so its TOWER_HOME is set for this module only (the
    orchestration tests' session engine keeps its own)."""
    from tower.local.engine import Engine

    home = tmp_path_factory.mktemp("review-final-home")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TOWER_HOME", str(home))
        patch.delenv("TOWER_HISTORY_TABLE_URL", raising=False)
        eng = Engine(run_app(), home, activity_workers=4).start()
        try:
            yield eng
        finally:
            eng.stop()


def fan_out_run() -> tuple[dict, dict]:
    """A run a -> (b, c) opened in the ledger (a running), and the early report of a's success."""
    catalog = sim_catalog({"a": {"duration": 0.0}, "b": {"deps": ["a"], "duration": 0.0, "expected": 5.0},
                           "c": {"deps": ["a"], "duration": 0.0, "expected": 1.0}})
    plan = build_plan(catalog, "p", run_id=f"review-final-{uuid.uuid4().hex[:8]}")
    now = utcnow()
    open_run(ledger_from_environment(), plan, {name: service_job(plan, name) for name in plan["services"]}, now)
    result = {"service": "a", "status": "succeeded", "attempts": 1, "started": iso(now), "finished": iso(now)}
    return plan, {"run_id": plan["run_id"], "pipeline": "p", "simulated": True, "result": result}


def dependents(plan: dict) -> set[str]:
    return {plan["services"][name]["iid"] for name in ("b", "c")}


# Once `record_report` has taken b and c off the ready queue, a report_here that fails (here
# `call_soon_threadsafe` on a closed loop; also the pool refusing work at shutdown) must not leave
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
    time.sleep(activities.remote.HOLD_BACK * 4)  # every submit at dispatch has settled by now
    repeated = asyncio.run_coroutine_threadsafe(
        activities.runs.act(client, plan["run_id"], activities.runs.record_report(request)), engine.loop)
    summary = repeated.result(timeout=10)
    assert summary["started"] == 2, f"the repeated report started {summary['started']} of b and c: " \
        f"still marked dispatching: {sorted(dependents(plan) & activities.remote.DISPATCHING)}"
