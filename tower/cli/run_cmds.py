"""`tower run / runs / status / cancel / repair / resume / purge`: runs on the local engine.

State lives in $TOWER_HOME (default ./.tower): the engine's store, run history, command logs.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from tower.cli.common import err, load_catalog, print_json, tower_home
from tower.errors import UsageError
from tower.states import RunState

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


def _limit(text: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= 1000:
        raise argparse.ArgumentTypeError(f"expected a whole number from 1 to 1000, got {text!r}")
    return int(text)


def _days(text: str) -> float:
    from tower.catalog.durations import parse_duration

    try:
        seconds = parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    if seconds <= 0:
        raise argparse.ArgumentTypeError(f"expected an age > 0, e.g. 30d, got {text!r}")
    return seconds / 86400


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

    runs = subparsers.add_parser(
        "runs", help="list runs, newest first (from the runs index)",
        description="List runs newest first from the runs index ($TOWER_HOME/runs.db), which keeps a "
                    "row per run even after `tower purge` removed its details.")
    runs.add_argument("--pipeline", metavar="NAME", help="only this pipeline's runs")
    runs.add_argument("--status", metavar="STATUS",
                      help="only runs in this state (starting, running, succeeded, failed, cancelled)")
    runs.add_argument("--since", metavar="WHEN", help="only runs started since: an ISO time or an age (7d, 12h)")
    runs.add_argument("--limit", type=_limit, default=20, metavar="N", help="at most N runs (1-1000, default 20)")
    runs.add_argument("--continuation", metavar="TOKEN", help="the next page: the token the previous page printed")
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
                    "run uses the plan frozen when RUN_ID started (same specs and params): catalog "
                    "edits since are not applied (for those, `tower run` the services again). RUN_ID "
                    "then points to its repair, and a second repair of it is refused unless --again. "
                    "Followed like `tower run`.")
    repair.add_argument("run_id", metavar="RUN_ID")
    repair.add_argument("--again", action="store_true", help="repair RUN_ID even though it was repaired before")
    _add_json(repair, "print the new run's result as one JSON object on stdout")
    repair.set_defaults(handler=cmd_repair)

    purge = subparsers.add_parser(
        "purge", help="delete the details of runs older than the retention",
        description="Delete what finished runs older than --older-than leave in $TOWER_HOME: engine "
                    "instances, ledger and history rows. `tower runs` keeps listing them (as a tombstone, "
                    "14 days longer) so their run ids are never started again. In Azure a daily timer does "
                    "this with TOWER_RETENTION_DAYS.")
    purge.add_argument("--older-than", type=_days, default=None, metavar="AGE",
                       help="e.g. 30d, 12h (default: TOWER_RETENTION_DAYS days, else 30d)")
    _add_json(purge, "print what was deleted as JSON")
    purge.set_defaults(handler=cmd_purge)

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
    from tower.errors import RunNotInLedger
    from tower.runner import repair_plan, run_info
    from tower.runs.index import index_from_environment, record_end
    from tower.runs.ledger import ledger_from_environment, load_plan

    home = tower_home()
    info = run_info(home, args.run_id)
    if not info.finished:
        raise UsageError(f"run {args.run_id} is still {info.status}: wait for it, or `tower cancel` it first")
    if not isinstance(info.result, dict) or info.services is None:
        raise UsageError(f"run {args.run_id} ended without a result ({info.runtime_status}); start a new run")
    try:
        plan = load_plan(ledger_from_environment(home), args.run_id)
    except RunNotInLedger as exc:
        raise UsageError(f"{exc}; start a new run") from None
    index = index_from_environment(home)
    if index.get(args.run_id) is None:  # a run from before the runs index: give it its row
        result = info.result
        record_end(index, args.run_id, info.pipeline, info.status, result.get("finished"), {}, result.get("started"))
    plan = repair_plan(plan, info.to_result())
    names = list(plan["services"])
    err(f"repairing {args.run_id} with the plan frozen when it started (catalog edits are not applied): "
        f"{len(names)} service(s): {', '.join(names[:10])}" + (" …" if len(names) > 10 else ""))
    return _start_and_follow(home, [plan], args.json, trigger="repair", repair_of=args.run_id, again=args.again)


def cmd_resume(args) -> int:
    return _start_and_follow(tower_home(), [], args.json, resume=True)


def _start_and_follow(home: Path, plans: list[dict], as_json: bool, resume: bool = False, trigger: str = "cli",
                      repair_of: str | None = None, again: bool = False) -> int:
    from tower import telemetry
    from tower.cli.interrupts import sigterm_as_interrupt
    from tower.local.driver import LocalEngine

    telemetry.configure()  # when APPLICATIONINSIGHTS_CONNECTION_STRING is set: the portal view, locally
    scales = [p["platforms"][name]["settings"]["time_scale"] for p in plans if p.get("simulated")
              for name in p["platforms"]]
    with sigterm_as_interrupt(), LocalEngine(home, time_scale=min(scales, default=1.0)) as local:
        run_ids: list[str] = []
        early = None  # Ctrl-C or SIGTERM after a run started, before it was followed: cancel it too
        try:
            for plan in plans:
                run_ids.append(local.start_run(plan, trigger, repair_of, again))
            if resume:
                run_ids = local.unfinished_runs()
                if not run_ids:
                    err(f"nothing to resume in {home}")
                    if as_json:
                        print_json([])
                    return 0
            for run_id in run_ids:
                err(f"{'resuming' if resume else 'started'} run {run_id}")
        except KeyboardInterrupt as interrupt:
            if not run_ids:
                raise
            early = interrupt
        interrupt = _follow(local, run_ids, early)
        results = [local.final(run_id).to_result() for run_id in run_ids]
    telemetry.flush(timeout=5.0)  # what the run's end emitted, before the process goes
    local.runtime.notifier.drain(timeout=5.0)  # and its notifications
    _report(results, as_json, as_list=resume)
    if interrupt is not None:  # cancelled on Ctrl-C or SIGTERM: exit as a signalled process does
        from tower.cli.interrupts import exit_code

        return exit_code(interrupt)
    return 0 if all(r.get("status") == RunState.SUCCEEDED for r in results) else 1


def _follow(local, run_ids: list[str], early: KeyboardInterrupt | None = None) -> KeyboardInterrupt | None:
    """Follow with a progress display; the first Ctrl-C (or SIGTERM, or `early`, one that came
    before) cancels, a second one stops following. Returns the interrupt that cancelled the runs."""
    from tower.cli.render import Progress

    def cancel_all() -> None:
        for run_id in run_ids:
            if not local.info(run_id).finished:
                local.cancel(run_id)
        err("cancelling… (Ctrl-C again to stop waiting; `tower resume` finishes the run)")

    label = run_ids[0] if len(run_ids) == 1 else f"{len(run_ids)} runs"
    with Progress(label) as progress:
        def show(latest) -> None:
            progress.update(_merged_status([info.custom_status for info in latest.values()]))

        cancelling = early
        if early is not None:
            cancel_all()
        while True:
            try:
                local.follow(run_ids, show)
                return cancelling
            except KeyboardInterrupt as interrupt:
                if cancelling:
                    raise
                cancelling = interrupt
                cancel_all()


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
    from tower.runs.index import index_from_environment, list_query

    home = tower_home()
    query = list_query({name: value for name in ("pipeline", "status", "since", "continuation")
                        if (value := getattr(args, name))} | {"limit": str(args.limit)})
    rows, continuation = index_from_environment(home).list(**query)
    if args.json:
        print_json([row.to_json() for row in rows])
    elif rows:
        print(runs_table([row.to_json() for row in rows]))
    elif args.continuation or any(query.get(k) for k in ("pipeline", "status", "since")):
        err("no runs match")
    else:
        err(f"no runs in {home} yet (start one with `tower run PIPELINE`)")
    if continuation:
        from shlex import quote

        err(f"more: tower runs --continuation {quote(continuation)}" + "".join(
            f" --{name} {quote(getattr(args, name))}" for name in ("pipeline", "status", "since") if getattr(args, name))
            + (f" --limit {args.limit}" if args.limit != 20 else ""))
    return 0


def cmd_purge(args) -> int:
    from tower.runner import purge
    from tower.runs.index import retention_days

    days = args.older_than if args.older_than is not None else retention_days()
    report = purge(tower_home(), days)
    if args.json:
        print_json(report)
    else:
        err(f"purged what is older than {days:g} days: {report['instances']} engine instance(s), "
            f"{report['ledger_runs']} ledger run(s), {report['history_rows']} history row(s), "
            f"{report['index_rows']} index row(s), {report.get('push_keys', 0)} push key(s); "
            f"{report['settled']} unfinished run(s) settled")
    return 0


def cmd_status(args) -> int:
    from tower.cli.logs_cmds import log_lines, with_submitted_details
    from tower.cli.render import progress_text, run_summary
    from tower.runner import engine_alive, json_result, run_info
    from tower.runs.index import index_from_environment

    home = tower_home()
    row = index_from_environment(home).get(args.run_id)
    try:
        info = run_info(home, args.run_id)
    except UsageError:
        if row is None:
            raise
        return _tombstone(row, args.json)
    result = with_submitted_details(home, info.plan, info.to_result())
    links = {key: getattr(row, key) for key in ("repair_of", "repaired_by") if row is not None and getattr(row, key)}
    from tower import deadlines

    deadline = deadlines.of_run(info)
    if args.json:
        data = json_result(result)
        if not info.finished:
            data["eta"] = result.get("eta")
        print_json({**data, **deadline, **links})
        return 0
    from datetime import datetime, timezone

    detail = ""
    if not info.finished and not engine_alive(home):
        detail = " (no engine attached: `tower resume` continues it)"
    elif not info.finished and info.custom_status:
        detail = f" ({progress_text(info.custom_status, datetime.now(timezone.utc))})"
    deadline_line = deadlines.describe(deadline, info.finished)
    print("\n".join([run_summary(result, detail), *([deadline_line] if deadline_line else []),
                     *log_lines(home, info, result)]))
    for platform, held in (result.get("slots") or {}).items():
        holders = ", ".join(f"{run} ({n})" for run, n in sorted(held["held_by"].items(), key=lambda i: -i[1]))
        print(f"waiting for {platform}: {held['busy']}/{held['limit']} slots held by {holders or 'nobody'}")
    for key, text in (("repair_of", "repair of"), ("repaired_by", "repaired by")):
        if key in links:
            print(f"{text} {links[key]} (tower status {links[key]})")
    return 0


def _tombstone(row, as_json: bool) -> int:
    """A run the engine does not have (its details were purged, or it is being started): what the
    runs index knows."""
    if as_json:
        print_json(row.to_json())
        return 0
    counts = ", ".join(f"{n} {state}" for state, n in sorted(row.counts.items()))
    print(f"run {row.run_id} ({row.pipeline}, {row.trigger}): {row.status}, started {row.started}, "
          f"finished {row.finished or '-'}" + (f"; services: {counts}" if counts else ""))
    if row.purged:
        print("its details were purged (tower purge / TOWER_RETENTION_DAYS); the runs index keeps this row")
    elif row.status == RunState.STARTING:
        print("it is being started (or its start failed: starting it again will take it over)")
    else:
        print(f"the engine in {tower_home()} has no record of it; the runs index keeps this row")
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
