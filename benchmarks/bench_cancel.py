"""How long cancelling a wide run takes in the activities that do it (`cancel_run`).

Starts N independent long services on the local engine (sim platform, durable-timer waits), waits
until the ledger has every one running, then cancels the run and reports: the wall time of each
`cancel_run` activity call (from pipeline_run's history: scheduled -> completed), their sum, how
many calls, and the time until the run ended. In Azure every activity must end well inside the
host's functionTimeout, or the worker process restarts with all its invocations.

usage: python benchmarks/bench_cancel.py [--services 5000] [--timeout S]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from datetime import datetime
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent)]

from bench_orchestration import catalog_for, make_engine, parse  # noqa: E402

from tower.runs.plan import build_plan  # noqa: E402


def wait_for(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise SystemExit(f"gave up waiting for {what}")
        time.sleep(0.5)


def main(argv: list[str] | None = None) -> int:
    from tower import names
    from tower.local.driver import run_app
    from tower.runner import store_run
    from tower.runs.ledger import ledger_from_environment, live_status

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--services", type=int, default=5000)
    parser.add_argument("--timeout", type=float, default=900)
    args = parser.parse_args(argv)

    deps = {f"s{i:05d}": [] for i in range(args.services)}
    plan = build_plan(catalog_for(deps, dict.fromkeys(deps, 3600.0), None), "bench", simulate=True, time_scale=1.0)
    for platform in plan["platforms"].values():
        platform["poll"]["linger"] = 0
    engine = make_engine(run_app(), 8)
    try:
        run_id = plan["run_id"]
        began = time.perf_counter()
        engine.start_new(names.PIPELINE_RUN, run_id, json.dumps(store_run(plan)))  # the plan goes to the ledger

        def all_running() -> bool:
            status = live_status(ledger_from_environment(), run_id, datetime.now().astimezone())
            return bool(status) and status["counts"].get("running") == args.services

        wait_for(all_running, args.timeout, "every service running")
        iids = {svc["iid"] for svc in plan["services"].values()}
        wait_for(lambda: iids <= {row["instanceId"] for row in engine.list()}, args.timeout,
                 "every service run started")
        print(f"{args.services} services running after {time.perf_counter() - began:.1f} s")
        cancelled = time.perf_counter()
        engine.raise_event(run_id, names.CANCEL_EVENT, json.dumps(None))
        status = engine.wait(run_id, timeout=args.timeout)
        ended = time.perf_counter() - cancelled
        history = engine.history(run_id)
        scheduled = {e["EventId"]: parse(e["Timestamp"]) for e in history
                     if e["EventType"] == 4 and e["Name"] == names.CANCEL_RUN}
        calls = [parse(e["Timestamp"]) - scheduled[e["TaskScheduledId"]] for e in history
                 if e["EventType"] == 5 and e.get("TaskScheduledId") in scheduled]
        print(f"run {status['runtimeStatus']}: ended {ended:.1f} s after the cancel")
        print(f"cancel_run: {len(calls)} call(s), {sum(calls):.2f} s in all, longest {max(calls):.2f} s "
              f"({', '.join(f'{c:.2f}' for c in calls)})")
    finally:
        engine.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
