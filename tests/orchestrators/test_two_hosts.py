"""Two hosts over one ledger: a repeated report on one host must not start a service run beside a
submit at dispatch still in flight on another (a platform's dedup by key need not be atomic).
Host B is its own process, with nothing in memory from host A; both reach the same Durable host
(the local engine's management API) and the same ledger ($TOWER_HOME)."""

import json
import threading
import time
import uuid

import azure.durable_functions as df

from tower import names
from tower.platforms.base import FunctionAdapter, Handle, Status
from tower.runner import store_run
from tower.runs.ledger import ledger_from_environment
from tower.runs.plan import build_plan

from .conftest import sim_catalog


def _repeated_report_on_host_b(client_binding: str, request: dict, out) -> None:
    """Host B: the report of `request` again (as after a lost reply, or a retry of the activity)."""
    import asyncio

    import app_runtime
    from activities.runs import act, record_report
    from tower.contracts import ServiceReport
    from tower.runtime import Runtime

    app_runtime.install(Runtime.from_environment())  # host B's own, as function_app.py would build it

    async def report() -> dict:
        return (await act(df.DurableOrchestrationClient(client_binding), request["run_id"],
                          record_report(ServiceReport.from_json(request)))).to_json()

    try:
        out.put(asyncio.run(report()))
    except Exception as exc:  # noqa: BLE001 - the test reports it
        out.put({"error": repr(exc)})


def test_a_report_repeated_on_another_host_leaves_a_submit_in_flight_here_alone(engine):
    import multiprocessing

    release, in_flight, lock, submits = threading.Event(), threading.Event(), threading.Lock(), []

    def submit(submission):  # host A's submit at dispatch of b hangs until the test releases it
        with lock:
            submits.append((submission.idempotency_key, time.monotonic(), release.is_set()))
        in_flight.set()
        release.wait(30)
        return Handle(remote_id=f"held-{uuid.uuid4().hex[:6]}")

    held = FunctionAdapter(submit=submit, poll=lambda handle: Status("succeeded"))
    with engine.runtime.platforms.overridden("held", held):
        catalog = sim_catalog({"a": {"duration": 0.0}, "b": {"deps": ["a"], "platform": "hp", "type": "held"}})
        plan = build_plan(catalog, "p", run_id=f"two-hosts-{uuid.uuid4().hex[:8]}")
        try:
            engine.start_new(names.PIPELINE_RUN, plan["run_id"], json.dumps(store_run(plan)))
            assert in_flight.wait(20), "b was never submitted at dispatch"
            a = ledger_from_environment(engine.home).load(plan["run_id"]).records["a"]
            request = {"run_id": plan["run_id"], "pipeline": "p", "simulated": True,
                       "result": {"service": "a", "status": a["status"], "attempts": 1,
                                  "started": a["started"], "finished": a["finished"]}}
            context = multiprocessing.get_context("spawn")
            out = context.Queue()
            host_b = context.Process(target=_repeated_report_on_host_b, args=(engine.client_binding, request, out))
            host_b.start()
            summary = out.get(timeout=60)
            host_b.join(30)
            time.sleep(0.5)  # a service run host B started would have submitted by now
            with lock:
                beside = [key for key, _, released in submits[1:] if not released]
            release.set()
            status = engine.wait(plan["run_id"], 20)
        finally:
            release.set()
    assert "error" not in summary, summary
    assert summary["started"] == 0, f"host B started b's service run beside host A's submit: {summary}"
    assert beside == [], f"submitted beside the submit at dispatch still in flight: {beside}"
    assert status["runtimeStatus"] == "Completed" and status["output"]["status"] == "succeeded", status
