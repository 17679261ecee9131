"""`tower graph` and `tower plan`: what a pipeline looks like and how long a run takes at best.

Both work on the catalog alone (nothing runs, nothing connects), so they are fast and safe to try
before deploying anything.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from datetime import datetime, timezone

from tower import graph
from tower.cli.common import load_catalog, print_json
from tower.cli.render import table
from tower.errors import UsageError
from tower.timestamps import iso

FORMATS = {"text": graph.render_text, "mermaid": graph.render_mermaid, "dot": graph.render_dot}
SCHEDULES = (
    ("critical_path_first", "critical-path first"),
    ("fifo", "FIFO"),
    ("level_by_level", "level by level"),
)


@dataclass(frozen=True)
class PipelineGraph:
    """A pipeline's selected services as plain mappings, ready for `tower.graph`.

    deps is restricted to the selection (dependencies outside it count as satisfied);
    durations are the catalog's (Service.expected), and `assumed` lists where it had none.
    """

    pipeline: str
    deps: dict[str, tuple[str, ...]]
    durations: dict[str, float]
    platform_of: dict[str, str]
    limits: dict[str, int | None]
    assumed: tuple[str, ...]


def pipeline_graph(catalog, pipeline: str, concurrency: dict[str, int | None] | None = None) -> PipelineGraph:
    """Select a pipeline's services from the catalog; ``concurrency`` overrides platform limits."""
    from tower.runs.plan import select_services

    selected = select_services(catalog, pipeline)
    services = {name: catalog.services[name] for name in selected}
    limits = {name: platform.max_concurrency for name, platform in catalog.platforms.items()}
    limits.update(concurrency or {})
    return PipelineGraph(
        pipeline=pipeline,
        deps=graph.restrict(catalog.deps(), selected),
        durations={name: svc.expected for name, svc in services.items()},
        platform_of={name: svc.platform for name, svc in services.items()},
        limits=limits,
        assumed=tuple(name for name, svc in services.items() if svc.expected_duration is None),
    )


def pipelines_graph(catalog, pipelines: list[str], concurrency: dict[str, int | None] | None = None) -> PipelineGraph:
    """Several pipelines run at once: one graph of their services (``pipeline:service``) whose
    platforms' slots they share, as a platform's max_concurrency is shared by every run
    (`tower.runs.slots`); the simulation dispatches the longest remaining path of any run first."""
    if len(pipelines) == 1:
        return pipeline_graph(catalog, pipelines[0], concurrency)
    twice = sorted({p for p in pipelines if pipelines.count(p) > 1})
    if twice:
        raise UsageError(f"tower plan: pipeline {twice[0]!r} named twice; name each pipeline once")
    graphs = [pipeline_graph(catalog, pipeline, concurrency) for pipeline in pipelines]

    def key(pg: PipelineGraph, name: str) -> str:
        return f"{pg.pipeline}:{name}"

    return PipelineGraph(
        pipeline=" + ".join(pipelines),
        deps={key(pg, name): tuple(key(pg, dep) for dep in deps) for pg in graphs for name, deps in pg.deps.items()},
        durations={key(pg, name): seconds for pg in graphs for name, seconds in pg.durations.items()},
        platform_of={key(pg, name): platform for pg in graphs for name, platform in pg.platform_of.items()},
        limits=graphs[0].limits,
        assumed=tuple(key(pg, name) for pg in graphs for name in pg.assumed),
    )


def parse_concurrency(values: list[str], platforms) -> dict[str, int | None]:
    """``PLATFORM=N`` overrides; N = 0 or ``none`` means unlimited."""
    from tower.runs.plan import names_hint

    limits: dict[str, int | None] = {}
    for value in values:
        platform, sep, text = value.partition("=")
        platform, text = platform.strip(), text.strip().lower()
        if not sep or not platform:
            raise UsageError(f"--concurrency {value!r}: write PLATFORM=N, e.g. --concurrency databricks=4")
        if platform not in platforms:
            raise UsageError(
                f"--concurrency {value!r}: unknown platform {platform!r} ({names_hint(platform, platforms, 'platforms')})"
            )
        if text in ("0", "none"):
            limits[platform] = None
        elif text.isascii() and text.isdigit():
            limits[platform] = int(text)
        else:
            raise UsageError(
                f"--concurrency {value!r}: N must be a whole number >= 1, or 0 / 'none' for unlimited"
            )
    return limits


def _ratio(makespan: float, bound: float) -> float | None:
    if bound > 0:
        return round(makespan / bound, 4)
    return 1.0 if makespan == 0 else None


def plan_report(pg: PipelineGraph) -> dict:
    """Everything `tower plan` prints, as one JSON-able dict (seconds throughout)."""
    path, length = graph.critical_path(pg.deps, pg.durations)
    work = graph.work_by_platform(pg.durations, pg.platform_of)
    bound = graph.lower_bound(pg.deps, pg.durations, pg.platform_of, pg.limits)
    makespans = {
        "critical_path_first": graph.simulate(pg.deps, pg.durations, pg.platform_of, pg.limits).makespan,
        "fifo": graph.simulate(pg.deps, pg.durations, pg.platform_of, pg.limits, priority="fifo").makespan,
        "level_by_level": graph.simulate_levels(pg.deps, pg.durations, pg.platform_of, pg.limits),
    }
    counts: dict[str, int] = {}
    for platform in pg.platform_of.values():
        counts[platform] = counts.get(platform, 0) + 1
    return {
        "pipeline": pg.pipeline,
        "services": len(pg.deps),
        "critical_path": [
            {"service": name, "platform": pg.platform_of[name], "expected_duration": pg.durations[name]}
            for name in path
        ],
        "critical_path_length": length,
        "total_work": graph.total_work(pg.durations),
        "platforms": [
            {
                "platform": platform,
                "limit": pg.limits.get(platform),
                "services": counts[platform],
                "work": seconds,
                "work_per_slot": seconds / pg.limits[platform] if pg.limits.get(platform) else None,
            }
            for platform, seconds in work.items()
        ],
        "lower_bound": bound,
        "makespan": makespans,
        "ratio_to_lower_bound": {key: _ratio(value, bound) for key, value in makespans.items()},
        "assumed_expected_duration": list(pg.assumed),
    }


def next_start(pipeline, now: datetime) -> tuple[datetime, str]:
    """When the next run starts: the pipeline's next scheduled time, else now."""
    from tower.schedules import next_due

    if pipeline.schedule is not None:
        due = next_due(pipeline.schedule, now, 1)
        if due:
            return due[0], "the next scheduled run"
    return now, "a run started now"


def deadline_report(pipeline, makespan: float, now: datetime | None = None) -> dict:
    """`{"deadline": {...}}` for a pipeline with a deadline: the predicted end of its next run (the
    critical-path-first makespan) against it (tower.deadlines); else nothing."""
    if pipeline.deadline is None:
        return {}
    from tower.deadlines import plan_slack

    start, which = next_start(pipeline, now or datetime.now(timezone.utc))
    return {"deadline": {**plan_slack(pipeline.deadline, start, makespan), "start": iso(start), "start_is": which}}


def retry_report(catalog, pipeline: str) -> list[dict]:
    """Per platform of the pipeline: how many of its services have `retries:`, and which failures retry."""
    from tower.platforms import NEVER_RETRIED, RETRIED_FAILURES
    from tower.runs.plan import select_services

    rows: dict[str, dict] = {}
    for name in select_services(catalog, pipeline):
        svc = catalog.services[name]
        kind = catalog.platforms[svc.platform].type
        row = rows.setdefault(svc.platform, {"platform": svc.platform, "type": kind, "services_with_retries": 0,
                                             "retried": RETRIED_FAILURES.get(kind, ""), "never": NEVER_RETRIED})
        row["services_with_retries"] += svc.retry.retries > 0
    return list(rows.values())


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" + ("" if n == 1 else "s")


def format_plan(report: dict) -> str:
    """The human form of plan_report: short sections, aligned columns, durations as people write them."""
    from tower.catalog.durations import format_duration as fmt

    lines = [
        f"pipeline {report['pipeline']}: {_count(report['services'], 'service')} on "
        f"{_count(len(report['platforms']), 'platform')}",
        "",
        f"critical path: {_count(len(report['critical_path']), 'service')}, {fmt(report['critical_path_length'])}",
    ]
    lines += table(
        [[s["service"], s["platform"], fmt(s["expected_duration"])] for s in report["critical_path"]], indent="  "
    )
    lines += ["", "platforms:"]
    rows = [["platform", "limit", "services", "work", "work/limit"]]
    for p in report["platforms"]:
        per_slot = "-" if p["work_per_slot"] is None else fmt(p["work_per_slot"])
        limit = "none" if p["limit"] is None else str(p["limit"])
        rows.append([p["platform"], limit, str(p["services"]), fmt(p["work"]), per_slot])
    lines += table(rows, indent="  ")
    lines += [
        "",
        f"total work:   {fmt(report['total_work'])}",
        f"lower bound:  {fmt(report['lower_bound'])}  (max of the critical path and work/limit per platform)",
        "",
        "predicted makespan:",
    ]
    rows = [["schedule", "makespan", "vs lower bound"]]
    for key, label in SCHEDULES:
        ratio = report["ratio_to_lower_bound"][key]
        rows.append([label, fmt(report["makespan"][key]), "-" if ratio is None else f"{ratio:.2f}x"])
    lines += table(rows, indent="  ")
    deadline = report.get("deadline")
    if deadline:
        slack = deadline["slack_s"]
        verdict = f"{fmt(slack)} to spare" if slack >= 0 else f"misses it by {fmt(-slack)}"
        lines += ["", f"deadline {deadline['deadline_rule']}: {deadline['deadline']} for {deadline['start_is']} "
                  f"({deadline['start']}); predicted end {deadline['predicted_end']}: {verdict}"]
    if report.get("retries"):
        lines += ["", "retries (services with `retries:` try again after these failures):"]
        lines += table([[r["platform"], f"{r['services_with_retries']} with retries", r["retried"]]
                        for r in report["retries"]], indent="  ")
        lines += [f"  never after {report['retries'][0]['never']}"]
    assumed = report["assumed_expected_duration"]
    if assumed:
        from tower.catalog.model import DEFAULT_EXPECTED_DURATION

        shown = ", ".join(assumed[:5]) + (f" and {len(assumed) - 5} more" if len(assumed) > 5 else "")
        lines += [
            "",
            f"note: no expected_duration for {_count(len(assumed), 'service')} ({shown}); "
            f"assumed {fmt(DEFAULT_EXPECTED_DURATION)} each",
        ]
    return "\n".join(lines) + "\n"


def run_graph(args: argparse.Namespace) -> int:
    from tower.catalog.durations import format_duration

    catalog = load_catalog(args)
    pg = pipeline_graph(catalog, args.pipeline)
    path, _ = graph.critical_path(pg.deps, pg.durations)
    notes = {name: f"{pg.platform_of[name]}, {format_duration(pg.durations[name])}" for name in pg.deps}
    print(FORMATS[args.format](pg.deps, notes, highlight=set(path)), end="")
    return 0


def run_plan(args: argparse.Namespace) -> int:
    catalog = load_catalog(args)
    concurrency = parse_concurrency(args.concurrency, catalog.platforms)
    report = plan_report(pipelines_graph(catalog, args.pipeline, concurrency))
    if len(args.pipeline) == 1:  # several: their combined makespan is no one pipeline's end
        report.update(deadline_report(catalog.pipelines[args.pipeline[0]], report["makespan"]["critical_path_first"]))
    retries: dict[str, dict] = {}
    for pipeline in args.pipeline:  # several: each run's services count, as in the combined graph
        for row in retry_report(catalog, pipeline):
            if row["platform"] in retries:
                retries[row["platform"]]["services_with_retries"] += row["services_with_retries"]
            else:
                retries[row["platform"]] = row
    report["retries"] = list(retries.values())
    if args.json:
        print_json(report)
    else:
        print(format_plan(report), end="")
    return 0


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "graph",
        help="draw a pipeline's services and dependencies (text, mermaid, dot)",
        description="Draw a pipeline's services and their dependencies; the critical path is marked.",
    )
    parser.add_argument("pipeline", metavar="PIPELINE")
    parser.add_argument(
        "--format", choices=tuple(FORMATS), default="text", help="output format (default: text)"
    )
    parser.set_defaults(handler=run_graph)

    parser = subparsers.add_parser(
        "plan",
        help="critical path, lower bound and predicted makespan of a pipeline",
        description=(
            "Predict a pipeline's run from the catalog's expected durations: the critical path, total "
            "work, the lower bound max(critical path, work/limit per platform), and the simulated "
            "makespan of critical-path-first dispatch compared with FIFO and level-by-level execution. "
            "Several pipelines are planned as runs started together, sharing each platform's slots."
        ),
    )
    parser.add_argument("pipeline", metavar="PIPELINE", nargs="+")
    parser.add_argument(
        "--concurrency",
        action="append",
        default=[],
        metavar="PLATFORM=N",
        help="override a platform's max_concurrency (0 or 'none' = unlimited); repeatable",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object to stdout")
    parser.set_defaults(handler=run_plan)
