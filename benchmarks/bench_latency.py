"""Makespan in Azure terms: the refinery's nightly run under the local host's latency models.

Runs examples/refinery's `nightly` pipeline (27 services) on the local engine with every service
simulated (`sim`, time-scaled) the way a real platform behaves: it ends at its expected duration
+- a seeded jitter and gives no hint of its end (`blind`). Each service has a run history (seven
earlier successes with the same jitter), so Tower knows its median and spread. One engine per
backend profile (tower.local.latency, parameters from the repository's host.json), and on each
the same night with four poll strategies:

- expected-end: tower.polling (what Tower does);
- growing: 1 s, x1.5, up to 60 s (Tower's schedule before it, and still its fallback);
- fixed 30 s and fixed 10 s: what a scheduler's operator does (Airflow's Databricks operator polls
  every 30 s by default).

All figures are in Azure seconds (measured seconds / time scale). Per run: makespan against the
critical path of the durations the services really took (and against the bound with the
platforms' concurrency limits); per hop (a service's last dependency -> the service): the remote
end -> Tower knows (detection) -> the dependent submitted; poll activities and platform API calls
per service; queue messages and storage transactions per service (the model's counts).

usage: python benchmarks/bench_latency.py [--scale 0.01] [--jitter 0.02] [--quick]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent)]

import bench_orchestration  # noqa: E402

from tower import graph, names  # noqa: E402
from tower.catalog.loader import load_catalog  # noqa: E402
from tower.local.latency import AZURE_STORAGE, DURABLE_TASK_SCHEDULER, Latency, storage_settings  # noqa: E402
from tower.platforms import sim  # noqa: E402
from tower.platforms.base import Submission  # noqa: E402
from tower.runner import store_run  # noqa: E402
from tower.runs.ledger import ledger_from_environment, run_services  # noqa: E402
from tower.runs.plan import build_plan, service_instance_id  # noqa: E402
from tower.timestamps import parse_iso  # noqa: E402

CATALOG = HERE.parent / "examples" / "refinery" / "catalog.yaml"
PIPELINE = "nightly"
STRATEGIES = ("expected-end", "growing", "fixed 30 s", "fixed 10 s")
PROFILES = ("none", AZURE_STORAGE, DURABLE_TASK_SCHEDULER)


def history(catalog, jitter: float) -> dict[str, list[float]]:
    """Seven earlier successes of each service, with the jitter the night will have."""
    return {name: [sim.jittered(svc.expected, jitter, f"history/{name}/{k}") for k in range(7)]
            for name, svc in catalog.services.items()}


def plan_for(catalog, strategy: str, scale: float, jitter: float, run: int) -> dict:
    plan = build_plan(catalog, PIPELINE, simulate=True, time_scale=scale, run_id=f"night-{run}-{time.time_ns()}",
                      recent=history(catalog, jitter))
    for service in plan["services"].values():
        service["spec"].update(blind=True, jitter=jitter)
        if strategy != "expected-end":
            service["expect"] = None
    if strategy.startswith("fixed"):
        every = float(strategy.split()[1]) * scale
        for platform in plan["platforms"].values():
            platform["poll"].update(first=every, factor=1.0, max=every)
    return plan


def remote_durations(plan: dict, scale: float, jitter: float) -> dict[str, float]:
    """What each service's first attempt really takes (the sim's seeded jitter), in Azure seconds."""
    return {name: sim.jittered(svc["spec"]["duration"] * scale, jitter,
                               Submission(plan["run_id"], name, 1, {}, {}).idempotency_key) / scale
            for name, svc in plan["services"].items()}


def make_engine(app, profile: str, scale: float):
    latency = None if profile == "none" else Latency(profile, scale=scale, now=time.time())
    return bench_orchestration.make_engine(app, 32, latency=latency)


def one_night(engine, catalog, strategy: str, scale: float, jitter: float, run: int, timeout: float) -> dict:
    plan = plan_for(catalog, strategy, scale, jitter, run)
    deps = {name: svc["deps"] for name, svc in plan["services"].items()}
    before = dict(engine.stats)
    engine.start_new(names.PIPELINE_RUN, plan["run_id"], json.dumps(store_run(plan)))  # the plan goes to the ledger
    status = engine.wait(plan["run_id"], timeout)
    time.sleep(0.2)                                  # the model's counts catch up with the last episode
    stats = {key: engine.stats[key] - before.get(key, 0) for key in engine.stats}
    result = status["output"]
    assert result["status"] == "succeeded", result["status"]
    services = run_services(ledger_from_environment(), plan["run_id"], datetime.now(timezone.utc))
    took = remote_durations(plan, scale, jitter)
    started = {n: parse_iso(s["started"]).timestamp() for n, s in services.items()}
    knew = {n: parse_iso(s["finished"]).timestamp() for n, s in services.items()}
    ended = {n: started[n] + took[n] * scale for n in services}
    origin = min(started.values())
    makespan = (max(knew.values()) - origin) / scale
    _, cp = graph.critical_path(deps, took)
    limits = {name: p["max_concurrency"] for name, p in plan["platforms"].items()}
    bound = graph.lower_bound(deps, took, {n: s["platform"] for n, s in plan["services"].items()}, limits)
    detection = [(knew[n] - ended[n]) / scale for n in services]
    hops = []
    for name, ds in deps.items():
        if ds:
            last = max(ds, key=lambda d: knew[d])
            hops.append(((knew[last] - ended[last]) / scale, (started[name] - knew[last]) / scale))
    polls = [sum(1 for e in engine.history(service_instance_id(plan["run_id"], n))
                 if e["EventType"] == 4 and e["Name"] == names.POLL_SERVICE) for n in services]
    counts = {}  # polls per remote id, as the engine's sim adapters counted them
    for platform in plan["platforms"].values():
        if platform["type"] == "sim":
            counts.update(engine.runtime.platforms.adapter("sim", platform.get("settings") or {}).poll_counts())
    calls = [counts.get(s["remote_id"], 0) + 1 for s in services.values()]      # + the submit
    longest = max(services, key=lambda n: took[n])
    n = len(services)
    return {"makespan": makespan, "cp": cp, "bound": bound, "detection": detection, "hops": hops,
            "polls": polls, "calls": calls, "longest": (longest, took[longest], polls[list(services).index(longest)]),
            "messages": stats.get("queue_messages", 0) / n, "transactions": stats.get("storage_transactions", 0) / n,
            "activities": stats.get("activities", 0) / n}


def fmt(value: float, digits: int = 1) -> str:
    return f"{value:,.{digits}f}"


def table(header: list[str], rows: list[list[str]]) -> str:
    return "\n".join(["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
                     + ["| " + " | ".join(row) + " |" for row in rows])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=float, default=0.01, help="time scale (default 0.01: a night in ~90 s)")
    parser.add_argument("--jitter", type=float, default=0.02, help="each service ends within +- this fraction "
                        "of its expected duration (default 0.02)")
    parser.add_argument("--quick", action="store_true", help="scale 0.004, expected-end and fixed 30 s only")
    parser.add_argument("--timeout", type=float, default=900.0)
    args = parser.parse_args(argv)
    scale = 0.004 if args.quick else args.scale
    strategies = ("expected-end", "fixed 30 s") if args.quick else STRATEGIES

    from tower.local.driver import run_app

    catalog = load_catalog(CATALOG)
    longest, partitions = storage_settings()
    began = time.perf_counter()
    rows, hop_rows, cost_rows = [], [], []
    run = 0
    for profile in PROFILES:
        engine = make_engine(run_app(), profile, scale)
        try:
            for strategy in (("expected-end",) if profile == "none" else strategies):
                run += 1
                night = one_night(engine, catalog, strategy, scale, args.jitter, run, args.timeout)
                print(f"  {profile} / {strategy}: {night['makespan'] / 60:.1f} min", file=sys.stderr, flush=True)
                label = [profile, strategy]
                detection = sorted(night["detection"])
                rows.append(label + [fmt(night["cp"] / 60), fmt(night["bound"] / 60), fmt(night["makespan"] / 60),
                                     f"**{night['makespan'] / night['cp']:.4f}**",
                                     f"{night['makespan'] / night['bound']:.4f}",
                                     fmt(statistics.median(detection)), fmt(detection[int(0.9 * (len(detection) - 1))]),
                                     fmt(max(detection))])
                found = [h[0] for h in night["hops"]]
                submitted = [h[1] for h in night["hops"]]
                hop_rows.append(label + [str(len(night["hops"])), fmt(statistics.median(found)), fmt(max(found)),
                                         fmt(statistics.median(submitted), 2), fmt(max(submitted), 2)])
                name, took, polls = night["longest"]
                cost_rows.append(label + [fmt(statistics.mean(night["polls"])), str(max(night["polls"])),
                                          f"{polls} ({name}, {took / 60:.0f} min)",
                                          fmt(statistics.mean(night["calls"])), str(max(night["calls"])),
                                          fmt(night["activities"]), fmt(night["messages"]),
                                          fmt(night["transactions"], 0)])
        finally:
            engine.stop()
    elapsed = time.perf_counter() - began
    report = [
        f"### Refinery nightly in Azure terms: 27 services, each ending at its expected duration +-{args.jitter:.0%}"
        f" (seeded), blind; time scale {scale:g}; host.json: maxQueuePollingInterval {longest:g} s, "
        f"partitionCount {partitions}", "",
        table(["profile", "polling", "critical path min", "bound with limits min", "makespan min", "makespan / CP",
               "makespan / bound", "detection median s", "detection p90 s", "detection max s"], rows), "",
        "#### Per hop (a service's last dependency -> the service), Azure seconds", "",
        table(["profile", "polling", "hops", "remote end -> Tower knows, median", "max",
               "Tower knows -> dependent submitted, median", "max"], hop_rows), "",
        "#### What it costs, per service", "",
        table(["profile", "polling", "poll activities, mean", "max", "the longest service's",
               "platform API calls, mean", "max", "activity executions", "queue messages", "storage transactions"],
              cost_rows), "",
        f"_All figures measured in one run of `bench_latency.py{' --quick' if args.quick else ''}` ({elapsed:.0f} s)._"]
    print("\n".join(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
