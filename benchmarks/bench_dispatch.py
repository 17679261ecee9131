"""What the dispatch machinery built on the local host buys in Azure terms.

Each mechanism is switched off in turn by patching the module constant or function that carries it
(no production setting exists for this), and every variant runs in the same script, interleaved,
on one engine per latency profile (tower.local.latency: none, azure-storage, durable-task-scheduler,
parameters from the repository's host.json):

- today: everything on;
- no early report: the submit and poll activities do not report a success they see
  (`activities.services._report_if_done`): `service_run` reports it, one episode and one
  REPORT_SERVICE activity later;
- no submit at dispatch: the ledger activity does not submit the first attempt
  (`activities.remote.first_attempt`): `service_run` submits it, one orchestration start and one
  SUBMIT_SERVICE activity later;
- neither: both of the above (service_run submits and reports, the design before the ledger did);
- no linger: the first look at work does not watch short work (the plan's `poll.linger`, from
  `tower.runs.plan.POLL_LINGER`): a durable timer waits instead.

Two more variants measured the early report's submit of the most urgent dependent on the reporting
thread and its 50 ms hold-back of the others; both paid nothing and were removed (the script as it
was then, with them: the first version of this file in git; their figures in benchmarks/RESULTS.md).

Two DAGs: the wide three-tier DAG of 60 short services (0.05-0.5 s, `dags.wide_dag(60, 1)`, where
the local-host mechanisms mattered most), as benchmarks/bench_orchestration.py runs it (the sim
says when its work ends, so detection is exact and what remains is dispatch), at time scale 1 (real
seconds: no engine cost is magnified); and examples/refinery's nightly run (27 services, 2h26m
critical path) time-scaled, with run history, as benchmarks/bench_latency.py runs it: blind (no
hint of the end, as Databricks and Snowflake give none), each service ending at its duration +- 2 %
(seeded by run id; the run ids are fixed: variant and repeat).

Per run: makespan (first submit to the last end known to the ledger) / critical path of the
durations the services really took (the sim's handles, recorded at submit); detection (remote end
-> the ledger knows) and hand-over (the ledger knows -> the dependent submitted) per hop, medians;
queue messages and storage transactions per service (the model's counts); activity executions per
service. Each figure is the median of `--repeat` runs.

A second part measures the per-process dispatching set (a ledger object's `Dispatches`), which no
run without a failure consults: one service's start fails (the Durable API refuses it through all
of `_dispatch`'s retries), and the run recovers either at once (this process knows its dispatch has
settled) or only after the dispatch grace (without the set), shortened here to `--grace` seconds.

usage: python benchmarks/bench_dispatch.py [--repeat 3] [--refinery-scale 0.004] [--skip-refinery]
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import sys
import threading
import time
from contextlib import ExitStack, contextmanager
from datetime import datetime, timedelta, timezone
from pathlib import Path
from unittest import mock

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent)]

import bench_orchestration  # noqa: E402
import dags  # noqa: E402

from tower import graph, names  # noqa: E402
from tower.local.latency import AZURE_STORAGE, DURABLE_TASK_SCHEDULER, Latency, storage_settings  # noqa: E402
from tower.platforms import sim  # noqa: E402
from tower.states import RunState, ServiceState  # noqa: E402

PROFILES = ("none", AZURE_STORAGE, DURABLE_TASK_SCHEDULER)
JITTER = 0.02
SUBMITS: dict[tuple[str, str], list[dict]] = {}   # (run id, service) -> each submit's handle data
_submits_lock = threading.Lock()


def _recording_submit(real):
    def submit(self, submission):
        handle = real(self, submission)
        with _submits_lock:
            SUBMITS.setdefault((submission.run_id, submission.service), []).append(dict(handle.data))
        return handle
    return submit


# --- the variants -------------------------------------------------------------------------------

def _no_report(*args, **kwargs):
    return None


def _no_first_attempt(job, read_cancel=True):
    return None


def _patches(variant: str) -> list:
    import activities.remote as remote
    import activities.services as services

    no_report = mock.patch.object(services, "_report_if_done", _no_report)
    no_submit = mock.patch.object(remote, "first_attempt", _no_first_attempt)
    return {
        "today": [],
        "no early report": [no_report],
        "no submit at dispatch": [no_submit],
        "neither": [no_report, no_submit],
        "no linger": [],   # a plan setting: see `plan_for`
    }[variant]


VARIANTS = ("today", "no early report", "no submit at dispatch", "neither", "no linger")
REFINERY_VARIANTS = ("today", "neither")


@contextmanager
def variant_on(variant: str):
    with ExitStack() as stack:
        for patch in _patches(variant):
            stack.enter_context(patch)
        yield


# --- the runs -----------------------------------------------------------------------------------

def make_engine(app, profile: str, scale: float):
    latency = None if profile == "none" else Latency(profile, scale=scale, now=time.time(), seed=7)
    return bench_orchestration.make_engine(app, 32, latency=latency)


def wide_catalog():
    from tower.catalog.model import Catalog, Pipeline, Platform, Service

    deps, durations = dags.wide_dag(60, 1)
    services = {name: Service(name=name, platform="sim", depends_on=tuple(deps[name]),
                              expected_duration=durations[name], spec={"duration": durations[name]})
                for name in deps}
    return Catalog(path="<bench>", platforms={"sim": Platform("sim", "sim", max_concurrency=None)},
                   services=services, pipelines={"wide": Pipeline("wide")})


def refinery_catalog():
    from tower.catalog.loader import load_catalog

    return load_catalog(HERE.parent / "examples" / "refinery" / "catalog.yaml")


def plan_for(shape: str, catalog, variant: str, scale: float, run_id: str) -> dict:
    from tower.runs.plan import POLL_LINGER, build_plan

    if shape == "wide":
        plan = build_plan(catalog, "wide", simulate=True, time_scale=scale, run_id=run_id)
    else:
        recent = {name: [sim.jittered(svc.expected, JITTER, f"history/{name}/{k}") for k in range(7)]
                  for name, svc in catalog.services.items()}
        plan = build_plan(catalog, "nightly", simulate=True, time_scale=scale, run_id=run_id, recent=recent)
    if shape == "refinery":  # as bench_latency.py runs it; the wide DAG as bench_orchestration.py does
        for service in plan["services"].values():
            service["spec"].update(blind=True, jitter=JITTER)
    for platform in plan["platforms"].values():
        # a watch is wall-clock time: scaled like every other duration of a simulated run
        platform["poll"]["linger"] = 0.0 if variant == "no linger" else POLL_LINGER * scale
    return plan


def one_run(engine, shape: str, catalog, variant: str, scale: float, run_id: str, timeout: float) -> dict:
    from tower.runner import store_run
    from tower.runs.ledger import ledger_from_environment, run_services
    from tower.timestamps import parse_iso

    plan = plan_for(shape, catalog, variant, scale, run_id)
    deps = {name: svc["deps"] for name, svc in plan["services"].items()}
    before = dict(engine.stats)
    with variant_on(variant):
        engine.start_new(names.PIPELINE_RUN, run_id, json.dumps(store_run(plan)))
        status = engine.wait(run_id, timeout)
        time.sleep(0.2)                              # the model's counts catch up with the last episode
    stats = {key: engine.stats.get(key, 0) - before.get(key, 0) for key in ("queue_messages", "storage_transactions",
                                                                            "activities")}
    assert status["output"]["status"] == RunState.SUCCEEDED, status["output"]
    services = run_services(ledger_from_environment(), run_id, datetime.now(timezone.utc))
    remote = {n: SUBMITS[(run_id, n)][0] for n in services}
    submitted = {n: remote[n]["started_at"] for n in services}
    ended = {n: remote[n]["ends_at"] for n in services}
    knew = {n: parse_iso(s["finished"]).timestamp() for n, s in services.items()}
    took = {n: (ended[n] - submitted[n]) / scale for n in services}
    _, cp = graph.critical_path(deps, took)
    makespan = (max(knew.values()) - min(submitted.values())) / scale
    detection, handover = [], []
    for name, ds in deps.items():
        if ds:
            last = max(ds, key=lambda d: knew[d])
            detection.append((knew[last] - ended[last]) / scale)
            handover.append((submitted[name] - knew[last]) / scale)
    n = len(services)
    return {"ratio": makespan / cp, "makespan": makespan, "cp": cp,
            "detection": statistics.median(detection), "handover": statistics.median(handover),
            "messages": stats["queue_messages"] / n, "transactions": stats["storage_transactions"] / n,
            "activities": stats["activities"] / n}


def bench_shape(make_app, shape: str, variants, scale: float, repeat: int, timeout: float) -> dict:
    catalog = wide_catalog() if shape == "wide" else refinery_catalog()
    results: dict[tuple[str, str], list[dict]] = {}
    for profile in PROFILES:
        engine = make_engine(make_app(), profile, scale)
        try:
            for k in range(repeat):
                for variant in variants:   # interleaved, so load on the machine falls on every variant alike
                    run_id = f"{shape}-{variant.replace(' ', '_')}-{k}-{profile}"
                    run = one_run(engine, shape, catalog, variant, scale, run_id, timeout)
                    results.setdefault((profile, variant), []).append(run)
                    print(f"  {shape} {profile} {variant} #{k}: {run['ratio']:.4f} detection {run['detection']:.2f}"
                          f" handover {run['handover']:.3f}", file=sys.stderr, flush=True)
        finally:
            engine.stop()
    return results


def median_of(runs: list[dict], key: str) -> float:
    return statistics.median(run[key] for run in runs)


def table(header: list[str], rows: list[list[str]]) -> str:
    return "\n".join(["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
                     + ["| " + " | ".join(row) + " |" for row in rows])


def report_shape(title: str, results: dict, variants, unit_digits: int) -> list[str]:
    rows = []
    for profile in PROFILES:
        base = median_of(results[(profile, "today")], "ratio")
        for variant in variants:
            runs = results[(profile, variant)]
            ratios = sorted(run["ratio"] for run in runs)
            ratio = median_of(runs, "ratio")
            rows.append([profile, variant, f"**{ratio:.4f}**", f"{ratios[0]:.4f}–{ratios[-1]:.4f}",
                         f"{ratio / base:.4f}", f"{median_of(runs, 'detection'):.{unit_digits}f}",
                         f"{median_of(runs, 'handover'):.{unit_digits}f}",
                         f"{median_of(runs, 'activities'):.1f}", f"{median_of(runs, 'messages'):.1f}",
                         f"{median_of(runs, 'transactions'):,.0f}"])
    return [title, "", table(["profile", "variant", "makespan / CP", "all runs", "vs today", "detection median s",
                              "known -> dependent submitted, median s", "activity executions / service",
                              "queue messages / service", "storage transactions / service"], rows)]


# --- the dispatching set: a lost start --------------------------------------------------------------

def bench_lost_start(make_app, grace: float, repeat: int, timeout: float) -> list[str]:
    """a -> b: b's start fails through every retry of `_dispatch`; how long until b runs, with and
    without the set (without: this process's own settled dispatch counts as maybe still submitting)."""
    import activities.runs as runs
    from tower.catalog.model import Catalog, Pipeline, Platform, Service
    from tower.runner import store_run
    from tower.runs.ledger import ledger_from_environment, run_services
    from tower.runs.plan import build_plan
    from tower.timestamps import parse_iso

    services = {"a": Service(name="a", platform="sim", expected_duration=0.2, spec={"duration": 0.2}),
                "b": Service(name="b", platform="sim", depends_on=("a",), expected_duration=0.2,
                             spec={"duration": 0.2})}
    catalog = Catalog(path="<bench>", platforms={"sim": Platform("sim", "sim")}, services=services,
                      pipelines={"lost": Pipeline("lost")})
    real_start = runs._start
    rows = []
    for profile in PROFILES:
        engine = make_engine(make_app(), profile, 1.0)
        dispatches = engine.runtime.ledger.dispatches  # the engine's ledger object is its dispatcher
        real_may = dispatches.may_still_dispatch
        try:
            for with_set in (True, False):
                waits = []
                for k in range(repeat):
                    run_id = f"lost-{'set' if with_set else 'noset'}-{k}-{profile}"
                    plan = build_plan(catalog, "lost", simulate=True, time_scale=1.0, run_id=run_id)
                    plan["reconcile_after"] = 1.0
                    failures = {"left": 1 + len(runs.START_RETRY_DELAYS)}
                    b = plan["services"]["b"]["iid"]

                    async def failing_start(client, rid, instance_id, job, *, _b=b, _f=failures):
                        if instance_id == _b and _f["left"] > 0:
                            _f["left"] -= 1
                            raise RuntimeError("the Durable API refused the start (benchmark)")
                        return await real_start(client, rid, instance_id, job)

                    def may_still(dispatcher, _own=dispatches.dispatcher, _may=real_may):
                        return True if dispatcher == _own else _may(dispatcher)

                    with ExitStack() as stack:
                        stack.enter_context(mock.patch.object(runs, "_start", failing_start))
                        stack.enter_context(mock.patch.object(runs, "START_RETRY_DELAYS", (0.01, 0.01, 0.01)))
                        stack.enter_context(mock.patch.object(dispatches, "grace", timedelta(seconds=grace)))
                        if not with_set:
                            stack.enter_context(mock.patch.object(dispatches, "may_still_dispatch", may_still))
                        engine.start_new(names.PIPELINE_RUN, run_id, json.dumps(store_run(plan)))
                        engine.wait(run_id, timeout)
                    done = run_services(ledger_from_environment(), run_id, datetime.now(timezone.utc))
                    a_end = SUBMITS[(run_id, "a")][0]["ends_at"]
                    b_submit = SUBMITS[(run_id, "b")][-1]["started_at"]
                    assert done["b"]["status"] == ServiceState.SUCCEEDED
                    waits.append(b_submit - a_end)
                    print(f"  lost start {profile} set={with_set} #{k}: {waits[-1]:.2f} s "
                          f"(b finished {parse_iso(done['b']['finished']).timestamp() - a_end:.2f} s after a)",
                          file=sys.stderr, flush=True)
                rows.append([profile, "with the set" if with_set else f"without (grace {grace:g} s)",
                             f"{statistics.median(waits):.2f}", f"{min(waits):.2f}–{max(waits):.2f}"])
        finally:
            engine.stop()
    return [f"### A lost start: a -> b, b's start refused through every retry, median of {repeat}", "",
            table(["profile", "dispatching set", "a's end -> b submitted again, s", "all runs"], rows)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--refinery-scale", type=float, default=0.004)
    parser.add_argument("--skip-refinery", action="store_true")
    parser.add_argument("--skip-wide", action="store_true")
    parser.add_argument("--skip-lost-start", action="store_true")
    parser.add_argument("--grace", type=float, default=5.0, help="the dispatch grace in the lost-start runs (s)")
    parser.add_argument("--timeout", type=float, default=900.0)
    args = parser.parse_args(argv)
    logging.getLogger("tower.activities").setLevel(logging.ERROR)  # the lost starts warn, as they should

    import tower.platforms.sim as sim_module
    from tower.local.driver import run_app

    sim_module.SimAdapter.submit = _recording_submit(sim_module.SimAdapter.submit)
    longest, partitions = storage_settings()
    began = time.perf_counter()
    report = [f"_host.json: maxQueuePollingInterval {longest:g} s, partitionCount {partitions}; one worker._", ""]
    if not args.skip_wide:
        results = bench_shape(run_app, "wide", VARIANTS, 1.0, args.repeat, args.timeout)
        report += report_shape(f"### Wide 60 (0.05-0.5 s services, the sim hints at its end), time scale 1, median of {args.repeat}",
                               results, VARIANTS, 3) + [""]
    if not args.skip_refinery:
        results = bench_shape(run_app, "refinery", REFINERY_VARIANTS, args.refinery_scale, args.repeat, args.timeout)
        report += report_shape(f"### Refinery nightly (27 services, blind, run history), time scale "
                               f"{args.refinery_scale:g}, Azure seconds, median of {args.repeat}",
                               results, REFINERY_VARIANTS, 2) + [""]
    if not args.skip_lost_start:
        report += bench_lost_start(run_app, args.grace, args.repeat, args.timeout) + [""]
    report.append(f"_All figures measured in one run of `bench_dispatch.py` ({time.perf_counter() - began:.0f} s)._")
    print("\n".join(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
