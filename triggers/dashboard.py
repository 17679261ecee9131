"""The dashboard and the routes it reads beyond the runs API. Function-level keys in Azure, except
the dashboard's static scripts and styles, which hold no data (the page passes the key it was
opened with, ``?code=``, to every API call).

    GET  /api/dashboard                  the dashboard page (tower/dashboard/index.html)
    GET  /api/dashboard/{asset}          its script and stylesheet (anonymous: static files)
    GET  /api/pipelines                  each pipeline: schedule, next due times, event types, services
    GET  /api/pipelines/{name}           one pipeline: its services, schedule, next due times,
                                         critical path and predicted makespan (as `tower plan`)
    GET  /api/runs/{run_id}/board        the run page's data: each service's platform, dependencies,
                                         expected time and remote link; critical path; ETA; and the
                                         board (runways per platform, why each waiting service waits)
    POST /api/runs/{run_id}/repair       a new run of what failed, was held back or was cancelled -> 202
"""

from __future__ import annotations

import asyncio
import html
import json
from datetime import datetime, timezone
from pathlib import Path
from urllib.parse import urlsplit

import azure.durable_functions as df
import azure.functions as func

import app_runtime
import tower
from tower.errors import CatalogError, RunExists, UsageError
from tower.names import PIPELINE_RUN
from tower.runs.plan import is_safe_instance_id
from triggers.common import catalog

DASHBOARD_PAGE = "dashboard_page"
DASHBOARD_ASSET = "dashboard_asset"
API_LIST_PIPELINES = "api_list_pipelines"
API_GET_PIPELINE = "api_get_pipeline"
API_RUN_BOARD = "api_run_board"
API_REPAIR_RUN = "api_repair_run"

bp = df.Blueprint()
AUTH = func.AuthLevel.FUNCTION
ASSETS = Path(tower.__file__).resolve().parent / "dashboard"
ASSET_TYPES = {".js": "text/javascript", ".css": "text/css", ".svg": "image/svg+xml"}
NEXT_DUE_SHOWN = 3
# Everything the page loads or calls comes from this app: the browser enforces "no CDN", and a remote
# link a platform returned cannot run script in the page.
PAGE_POLICY = ("default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; connect-src 'self';"
               " img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")


def _json(body, status: int = 200, headers: dict | None = None) -> func.HttpResponse:
    return func.HttpResponse(json.dumps(body, default=str), status_code=status, mimetype="application/json",
                             headers=headers)


def _error(status: int, message: str) -> func.HttpResponse:
    return _json({"error": message}, status)


def _file(name: str, mimetype: str) -> func.HttpResponse:
    return func.HttpResponse((ASSETS / name).read_bytes(), mimetype=mimetype, charset="utf-8",
                             headers={"Cache-Control": "no-cache"})


@bp.function_name(DASHBOARD_PAGE)
@bp.route(route="dashboard", methods=["GET"], auth_level=AUTH)
def dashboard_page(req: func.HttpRequest) -> func.HttpResponse:
    """The page, its asset links made absolute from the path it was asked at (with or without a
    trailing slash, whatever the host's route prefix)."""
    here = html.escape(urlsplit(req.url).path.rstrip("/"))
    page = (ASSETS / "index.html").read_text().replace('="dashboard/', f'="{here}/')
    return func.HttpResponse(page, mimetype="text/html", charset="utf-8",
                             headers={"Cache-Control": "no-cache", "Content-Security-Policy": PAGE_POLICY})


@bp.function_name(DASHBOARD_ASSET)
@bp.route(route="dashboard/{asset}", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
def dashboard_asset(req: func.HttpRequest) -> func.HttpResponse:
    name = req.route_params.get("asset", "")
    kind = ASSET_TYPES.get(Path(name).suffix)
    if kind is None or "/" in name or "\\" in name or name.startswith(".") or not (ASSETS / name).is_file():
        return _error(404, f"the dashboard has no file {name!r}")
    return _file(name, kind)


# --- pipelines ----------------------------------------------------------------------------------

def _schedule(pipeline, now: datetime) -> dict:
    from tower.schedules import next_due

    schedule = pipeline.schedule
    if schedule is None:
        return {"schedule": None, "next_due": []}
    return {"schedule": {"cron": schedule.cron, "timezone": schedule.timezone, "catchup": schedule.catchup},
            "next_due": [when.isoformat().replace("+00:00", "Z") for when in next_due(schedule, now, NEXT_DUE_SHOWN)]}


def _pipeline_summary(cat, name: str, now: datetime) -> dict:
    from tower.runs.plan import select_services

    pipeline = cat.pipelines[name]
    services = select_services(cat, name)
    return {"name": name, **_schedule(pipeline, now), "on_event": list(pipeline.on_event),
            "services": len(services),
            "platforms": sorted({cat.services[s].platform for s in services})}


def _pipeline_detail(cat, name: str, now: datetime) -> dict:
    from tower.cli.plan_cmds import deadline_report, pipeline_graph, plan_report

    pg = pipeline_graph(cat, name)
    report = plan_report(pg)
    report.update(deadline_report(cat.pipelines[name], report["makespan"]["critical_path_first"], now))
    return {
        **_pipeline_summary(cat, name, now),
        "params": cat.pipelines[name].params,
        "services": {s: {"platform": pg.platform_of[s], "deps": list(pg.deps[s]), "expected": pg.durations[s],
                         "tags": list(cat.services[s].tags)} for s in pg.deps},
        "critical_path": [step["service"] for step in report["critical_path"]],
        "critical_path_seconds": report["critical_path_length"],
        "predicted_makespan": report["makespan"]["critical_path_first"],
        "lower_bound": report["lower_bound"],
        "platforms": report["platforms"],
        "deadline": report.get("deadline"),  # its next run's predicted end against it (tower.deadlines)
    }


def _with_catalog(read):
    try:
        return read(catalog())
    except CatalogError as exc:
        return _error(500, f"the catalog is invalid:\n{exc}")


@bp.function_name(API_LIST_PIPELINES)
@bp.route(route="pipelines", methods=["GET"], auth_level=AUTH)
def list_pipelines(req: func.HttpRequest) -> func.HttpResponse:
    now = datetime.now(timezone.utc)
    return _with_catalog(lambda cat: _json({"pipelines": [_pipeline_summary(cat, name, now) for name in cat.pipelines]}))


@bp.function_name(API_GET_PIPELINE)
@bp.route(route="pipelines/{name}", methods=["GET"], auth_level=AUTH)
def get_pipeline(req: func.HttpRequest) -> func.HttpResponse:
    from tower.runs.plan import names_hint

    name = req.route_params["name"]

    def read(cat):
        if name not in cat.pipelines:
            return _error(404, f"unknown pipeline {name!r} ({names_hint(name, cat.pipelines, 'pipelines')})")
        return _json(_pipeline_detail(cat, name, datetime.now(timezone.utc)))

    return _with_catalog(read)


# --- runs ---------------------------------------------------------------------------------------

@bp.function_name(API_RUN_BOARD)
@bp.route(route="runs/{run_id}/board", methods=["GET"], auth_level=AUTH)
async def run_board(req: func.HttpRequest) -> func.HttpResponse:
    """Read from the run ledger only (one load, nothing written): cheap enough to poll."""
    from tower.board import run_view

    run_id = req.route_params["run_id"]
    if not is_safe_instance_id(run_id):
        return _error(404, f"no run {run_id!r}")
    found = await asyncio.to_thread(lambda: run_view(app_runtime.current().ledger, run_id, datetime.now(timezone.utc)))
    if found is None:
        return _error(404, f"no run {run_id!r} in the run ledger (not started yet, or purged)")
    return _json(found)


def _repair_source(status) -> tuple[dict | None, dict | None]:
    """The ended run's frozen plan and its result with every service's status (what `repair_plan`
    reads): both are in the run ledger (Durable has a plan reference and a summary). Blocking."""
    from tower.errors import RunNotInLedger
    from tower.runner import RunInfo
    from tower.runs.ledger import load_plan

    ledger = app_runtime.current().ledger
    info = RunInfo.from_status(status.to_json()).with_services(ledger)
    try:
        plan = load_plan(ledger, info.run_id)
    except RunNotInLedger:
        return None, None
    return plan, info.to_result() if isinstance(info.result, dict) and info.services is not None else None


@bp.function_name(API_REPAIR_RUN)
@bp.route(route="runs/{run_id}/repair", methods=["POST"], auth_level=AUTH)
@bp.durable_client_input(client_name="client")
async def repair_run(req: func.HttpRequest, client: df.DurableOrchestrationClient) -> func.HttpResponse:
    """Start a new run of the original run's frozen plan, limited to what did not succeed
    (tower.runner.repair_plan): the specs and limits of that run, not of today's catalog. The
    original points to its repair in the runs index, which refuses a second repair unless
    ``{"again": true}`` (as `tower repair --again`)."""
    from tower.durable_errors import instance_exists
    from tower.runner import repair_plan
    from tower.runs.index import link_repair, row_for, start_once, unlink_repair
    from tower.states import UNFINISHED_RUNTIMES
    from triggers.common import start_pipeline_run

    run_id = req.route_params["run_id"]
    if not is_safe_instance_id(run_id):
        return _error(404, f"no run {run_id!r}")
    try:
        body = json.loads(req.get_body() or b"{}")
    except ValueError as exc:
        return _error(400, f"POST /api/runs/{run_id}/repair: body is not JSON ({exc})")
    if not isinstance(body, dict) or not isinstance(body.get("again", False), bool):
        return _error(400, f'POST /api/runs/{run_id}/repair: expected {{}} or {{"again": true}}')
    status = await client.get_status(run_id)  # its input is a plan reference: the plan is in the ledger
    if not status or status.runtime_status is None or status.name != PIPELINE_RUN:
        return _error(404, f"no run {run_id!r}")
    if status.runtime_status.name in UNFINISHED_RUNTIMES:
        return _error(409, f"run {run_id!r} is still running: cancel it or wait for its end, then repair it")
    frozen, result = await asyncio.to_thread(_repair_source, status)
    if frozen is None or result is None:
        return _error(409, f"run {run_id!r} has no plan or result to repair from ({status.runtime_status.name});"
                           " start a new run")
    try:
        plan = repair_plan(frozen, result)
    except UsageError as exc:
        return _error(409, str(exc))
    repair_id = plan["run_id"]
    index = await asyncio.to_thread(lambda: app_runtime.current().runs_index)
    try:
        previous = await asyncio.to_thread(link_repair, index, run_id, repair_id, body.get("again", False))
    except RunExists as exc:
        return _error(409, f"{exc}; POST {{\"again\": true}} to repair it once more")
    try:
        await start_once(index, row_for(plan, "repair", datetime.now(timezone.utc), repair_of=run_id),
                         lambda: start_pipeline_run(client, plan), lambda: instance_exists(client, repair_id))
    except BaseException:
        await asyncio.to_thread(unlink_repair, index, run_id, repair_id, previous)
        raise
    url = req.url.split("?", 1)[0]
    status_url = url[: url.index("/runs/")] + f"/runs/{repair_id}" if "/runs/" in url else repair_id
    return _json({"run_id": repair_id, "repair_of": run_id, "services": list(plan["services"]),
                  "status_url": status_url}, 202, {"Location": status_url})
