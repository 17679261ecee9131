"""`tower run / runs / status / cancel / repair / resume`: runs on the local engine.

State lives in $TOWER_HOME (default ./.tower): the engine's store, run history, command logs.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from tower.cli.common import err, load_catalog, print_json, tower_home
from tower.errors import UsageError

RUN_HELP = """\
Start a run of PIPELINE on the local engine and follow it to the end: live progress on stderr,
then a summary (a table and a text Gantt). Exit status: 0 succeeded, 1 failed or cancelled,
2 bad input.

Ctrl-C cancels the run: running services are cancelled on their platforms, the rest are marked
cancelled, and the command waits for that to finish. A second Ctrl-C stops waiting at once; the
run stays in $TOWER_HOME and `tower resume` finishes it.
"""


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {text!r}")
    return value


def register(subparsers) -> None:
    run = subparsers.add_parser("run", help="run a pipeline locally and follow it", description=RUN_HELP,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    run.add_argument("pipeline", metavar="PIPELINE")
    run.add_argument("--param", action="append", default=[], metavar="K=V",
                     help="a run parameter (repeatable); reaches services as params / TOWER_PARAM_<K>")
    run.add_argument("--services", nargs="+", action="extend", metavar="SELECTOR",
                     help="run only these services of the pipeline (name, +name, name+, tag:x)")
    run.add_argument("--simulate", action="store_true",
                     help="run every service on the simulator for its expected duration (no credentials)")
    run.add_argument("--time-scale", type=_positive_float, metavar="F",
                     help="with --simulate: multiply durations by F (0.001 runs 2 hours in 7 s)")
    _add_json(run, "print the run result as one JSON object on stdout")
    run.set_defaults(handler=cmd_run)

    runs = subparsers.add_parser("runs", help="list recent runs, newest first")
    runs.add_argument("--limit", type=int, default=20, metavar="N", help="at most N runs (default 20)")
    _add_json(runs, "print the runs as JSON")
    runs.set_defaults(handler=cmd_runs)

    status = subparsers.add_parser("status", help="show one run, service by service")
    status.add_argument("run_id", metavar="RUN_ID")
    _add_json(status, "print the run as one JSON object on stdout")
    status.set_defaults(handler=cmd_status)

    cancel = subparsers.add_parser("cancel", help="cancel a run (its running services are cancelled remotely)")
    cancel.add_argument("run_id", metavar="RUN_ID")
    cancel.set_defaults(handler=cmd_cancel)

    repair = subparsers.add_parser(
        "repair", help="re-run a finished run's failed, upstream_failed and cancelled services",
        description="Start a new run of the services of RUN_ID that failed, were held back by a "
                    "failure, or were cancelled; the services that succeeded count as done. The new "
                    "run uses RUN_ID's frozen plan (same specs and params), and is followed like "
                    "`tower run`.")
    repair.add_argument("run_id", metavar="RUN_ID")
    _add_json(repair, "print the new run's result as one JSON object on stdout")
    repair.set_defaults(handler=cmd_repair)

    resume = subparsers.add_parser("resume", help="continue the runs left unfinished (after a crash or Ctrl-C)")
    _add_json(resume, "print the results as a JSON list on stdout")
    resume.set_defaults(handler=cmd_resume)


def _add_json(parser, text: str) -> None:
    parser.add_argument("--json", action="store_true", help=text)


# --- run, repair, resume: start and follow --------------------------------------------------------

def cmd_run(args) -> int:
    from tower.runner import plan_run

    if args.time_scale is not None and not args.simulate:
        raise UsageError("--time-scale only applies to simulated runs: add --simulate")
    catalog = load_catalog(args)
    home = tower_home()
    plan = plan_run(catalog, args.pipeline, params=args.param, selectors=args.services,
                    simulate=args.simulate, time_scale=args.time_scale or 1.0, home=home)
    return _start_and_follow(home, [plan], args.json)


def cmd_repair(args) -> int:
    from tower.runner import repair_plan, run_info

    home = tower_home()
    info = run_info(home, args.run_id)
    if not info.finished:
        raise UsageError(f"run {args.run_id} is still {info.status}: wait for it, or `tower cancel` it first")
    if not isinstance(info.plan, dict) or not isinstance(info.result, dict):
        raise UsageError(f"run {args.run_id} ended without a result ({info.runtime_status}); start a new run")
    plan = repair_plan(info.plan, info.result)
    err(f"repairing {args.run_id}: {len(plan['services'])} service(s): {', '.join(list(plan['services'])[:10])}"
        + (" …" if len(plan["services"]) > 10 else ""))
    return _start_and_follow(home, [plan], args.json)


def cmd_resume(args) -> int:
    return _start_and_follow(tower_home(), [], args.json, resume=True)


def _start_and_follow(home: Path, plans: list[dict], as_json: bool, resume: bool = False) -> int:
    from tower import telemetry
    from tower.runner import LocalEngine

    telemetry.configure()  # when APPLICATIONINSIGHTS_CONNECTION_STRING is set: the portal view, locally
    with LocalEngine(home) as local:
        run_ids = [local.start_run(plan) for plan in plans]
        if resume:
            run_ids = local.unfinished_runs()
            if not run_ids:
                err(f"nothing to resume in {home}")
                if as_json:
                    print_json([])
                return 0
        for run_id in run_ids:
            err(f"{'resuming' if resume else 'started'} run {run_id}")
        _follow(local, run_ids)
        results = [local.final(run_id).to_result() for run_id in run_ids]
    telemetry.flush(timeout=5.0)  # what the run's end emitted, before the process goes
    _report(results, as_json, as_list=resume)
    return 0 if all(r.get("status") == "succeeded" for r in results) else 1


def _follow(local, run_ids: list[str]) -> None:
    """Follow with a progress display; the first Ctrl-C cancels, a second one stops following."""
    from tower.cli.render import Progress

    label = run_ids[0] if len(run_ids) == 1 else f"{len(run_ids)} runs"
    with Progress(label) as progress:
        def show(latest) -> None:
            progress.update(_merged_status([info.custom_status for info in latest.values()]))

        cancelling = False
        while True:
            try:
                local.follow(run_ids, show)
                return
            except KeyboardInterrupt:
                if cancelling:
                    raise
                cancelling = True
                for run_id in run_ids:
                    if not local.info(run_id).finished:
                        local.cancel(run_id)
                err("cancelling… (Ctrl-C again to stop waiting; `tower resume` finishes the run)")


def _merged_status(statuses: list[dict | None]) -> dict | None:
    """One progress line for several runs: counts added up, the earliest start, the latest ETA."""
    statuses = [s for s in statuses if s]
    if len(statuses) <= 1:
        return statuses[0] if statuses else None
    counts: dict[str, int] = {}
    for status in statuses:
        for state, n in (status.get("counts") or {}).items():
            counts[state] = counts.get(state, 0) + n
    starts = [s["started"] for s in statuses if s.get("started")]
    etas = [s["eta"] for s in statuses if s.get("eta")]
    return {"counts": counts, "started": min(starts, default=None), "eta": max(etas, default=None)}


def _report(results: list[dict], as_json: bool, as_list: bool = False) -> None:
    from tower.cli.render import run_summary, short_duration
    from tower.runner import json_result

    if as_json:
        print_json([json_result(r) for r in results] if as_list else json_result(results[0]))
        from tower.cli.render import seconds_between

        for r in results:
            took = seconds_between(r.get("started"), r.get("finished"))
            err(f"run {r.get('run_id')}: {r.get('status')} in {short_duration(took)}")
        return
    print("\n\n".join(run_summary(r) for r in results))


# --- runs, status, cancel: read and steer from any process ---------------------------------------

def cmd_runs(args) -> int:
    from tower.cli.render import runs_table
    from tower.runner import list_runs

    home = tower_home()
    runs = [info.to_result() for info in list_runs(home, limit=max(args.limit, 1))]
    rows = [{"run_id": r["run_id"], "pipeline": r["pipeline"], "status": r["status"],
             "started": r["started"], "finished": r["finished"]} for r in runs]
    if args.json:
        print_json(rows)
    elif rows:
        print(runs_table(rows))
    else:
        err(f"no runs in {home} yet (start one with `tower run PIPELINE`)")
    return 0


def cmd_status(args) -> int:
    from tower.cli.render import progress_text, run_summary
    from tower.runner import json_result, run_info

    info = run_info(tower_home(), args.run_id)
    result = info.to_result()
    if args.json:
        data = json_result(result)
        if not info.finished:
            data["eta"] = result.get("eta")
        print_json(data)
        return 0
    from datetime import datetime, timezone

    detail = ""
    if not info.finished and info.custom_status:
        detail = f" ({progress_text(info.custom_status, datetime.now(timezone.utc))})"
    print(run_summary(result, detail))
    return 0


def cmd_cancel(args) -> int:
    from tower.runner import engine_alive, request_cancel

    home = tower_home()
    info = request_cancel(home, args.run_id)
    if info.finished:
        err(f"run {args.run_id} already ended: {info.status}; nothing to cancel")
    elif engine_alive(home):
        err(f"cancel requested for run {args.run_id}; the running engine is cancelling it")
    else:
        err(f"cancel requested for run {args.run_id}; no engine is running: `tower resume` carries it out")
    return 0
