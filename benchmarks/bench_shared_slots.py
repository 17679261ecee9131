"""Overlapping runs on one platform with shared slots: the limit holds over every run, and the slots
stay busy.

Starts k runs (2 and 4) of the seeded 60-service DAG at once on the local engine (real SDK, real
replay), every service on one `sim` platform with m = 4 slots shared by all runs (`tower.runs.slots`).
From the recorded start and end of every service: the peak concurrency over all runs (asserted
<= m), and the combined makespan (first start to last end) over its lower bound max(critical path,
total work of all runs / m) (target <= 1.03). Each figure is the median of `--repeat` rounds.

usage: python benchmarks/bench_shared_slots.py [--repeat N] [--runs 2,4] [--limit 4] [--timeout S]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent)]

import dags  # noqa: E402
from bench_orchestration import make_engine, max_concurrency, parse, plan_for, spread, table  # noqa: E402

from tower import graph  # noqa: E402


def overlapping(engine, deps, durations, runs: int, limit: int, timeout: float) -> dict:
    """Start `runs` plans of the DAG at once; the combined makespan and peak over their services."""
    from tower.names import PIPELINE_RUN
    from tower.runner import store_run
    from tower.runs.ledger import ledger_from_environment, run_services
    from tower.timestamps import utcnow

    plans = []
    for i in range(runs):
        plan = plan_for(deps, durations, limit=limit)
        plan["run_id"] = f"{plan['run_id']}-{i}"  # started in the same instant: keep them apart
        for svc in plan["services"].values():
            svc["iid"] = f"{svc['iid']}-{i}"
        plans.append(plan)
    for plan in plans:
        engine.start_new(PIPELINE_RUN, plan["run_id"], json.dumps(store_run(plan)))  # the plan goes to the ledger
    results = []
    for plan in plans:
        status = engine.wait(plan["run_id"], timeout=timeout)
        output = status["output"]
        result = json.loads(output) if isinstance(output, str) else output
        results.append({**result, "services": run_services(ledger_from_environment(), plan["run_id"], utcnow())})
    assert all(r["status"] == "succeeded" for r in results), [r["status"] for r in results]
    services = [s for r in results for s in r["services"].values()]
    makespan = max(parse(s["finished"]) for s in services) - min(parse(s["started"]) for s in services)
    peak = max_concurrency({"services": {f"{i}/{n}": s for i, r in enumerate(results)
                                         for n, s in r["services"].items()}})
    return {"makespan": makespan, "peak": peak}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--runs", default="2,4")
    parser.add_argument("--limit", type=int, default=4)
    parser.add_argument("--timeout", type=float, default=300)
    args = parser.parse_args(argv)
    from tower.local.driver import run_app

    deps, durations = dags.random_dag(60, 1)
    _, cp = graph.critical_path(deps, durations)
    work = sum(durations.values())
    engine = make_engine(run_app(), workers=16)
    rows, failures = [], []
    try:
        for runs in (int(k) for k in args.runs.split(",")):
            bound = max(cp, runs * work / args.limit)
            rounds = [overlapping(engine, deps, durations, runs, args.limit, args.timeout) for _ in range(args.repeat)]
            ratios = sorted(r["makespan"] / bound for r in rounds)
            peak = max(r["peak"] for r in rounds)
            median = statistics.median(ratios)
            rows.append([str(runs), str(args.limit), f"{cp:.3f}", f"{runs * work / args.limit:.3f}",
                         f"{median * bound:.3f}", f"**{median:.3f}**", spread(ratios), str(peak)])
            if peak > args.limit:
                failures.append(f"{runs} runs: peak concurrency {peak} > {args.limit}")
            if median > 1.03:
                failures.append(f"{runs} runs: makespan / bound {median:.3f} > 1.03")
            time.sleep(0.5)
    finally:
        engine.stop()
    print(f"### Overlapping runs of random 60 (seed 1), one `sim` platform with m = {args.limit} shared slots: "
          f"combined makespan / max(CP, total work / m) (target <= 1.03), median of {args.repeat} rounds\n")
    print(table(["runs", "m", "critical path s", "total work / m s", "makespan s", "ratio",
                 f"all {args.repeat} rounds", "peak concurrency (all runs)"], rows))
    for failure in failures:
        print(f"\nFAILED: {failure}")
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
