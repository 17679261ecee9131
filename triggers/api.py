"""The HTTP API: start a run, read one, list them, cancel one. Function-level keys in Azure.

    POST /api/runs/{pipeline}        body {"params": {...}, "services": [selectors], "run_id": id}
                                     -> 202 + run id; 409 if that run id was used before
    GET  /api/runs/{run_id}          the run: status and per-service results
    GET  /api/runs[?pipeline=&status=&since=&limit=&continuation=]
                                     runs newest first, from the runs index (tower.runs.index);
                                     {"runs": [...], "continuation": token or null}
    POST /api/runs/{run_id}/cancel   ask a running run to cancel -> 202
    GET  /api/health                 catalog valid, stores reachable, version -> 200, else 503
    GET  /api/openapi.json           the OpenAPI 3.1 document of every route (tower.openapi)

Every error is JSON ``{"error": ...}``: 4xx for what the caller sent, 5xx only for what is wrong
on this side (an invalid deployed catalog, an unreachable store).
"""

from __future__ import annotations

import asyncio
import json
from datetime import datetime, timezone

import azure.durable_functions as df
import azure.functions as func

import app_runtime
from tower import durable_errors
from tower.errors import CatalogError, InstanceGone, RunExists, UsageError
from tower.names import CANCEL_EVENT, PIPELINE_RUN
from tower.runs.plan import is_safe_instance_id
from triggers.common import catalog, start_new_run

bp = df.Blueprint()
AUTH = func.AuthLevel.FUNCTION
DEFAULT_LIMIT = 20


def _json(body, status: int = 200, headers: dict | None = None) -> func.HttpResponse:
    return func.HttpResponse(json.dumps(body, default=str), status_code=status, mimetype="application/json", headers=headers)


def _error(status: int, message: str) -> func.HttpResponse:
    return _json({"error": message}, status)


def _base(req: func.HttpRequest) -> str:
    url = req.url.split("?", 1)[0]
    return url[: url.index("/api/") + len("/api")] if "/api/" in url else url


def _run(status, live: bool = False) -> dict:
    """A run as the API shows it; `live` adds each service's record from the run ledger (Durable
    carries none: its input is a plan reference, its output the outcome)."""
    from tower.runner import RunInfo, json_result

    info = RunInfo.from_status(status.to_json())
    if live:
        ledger = app_runtime.current().ledger
        info = info.with_live_status(ledger).with_services(ledger)  # blocking: call through asyncio.to_thread
    from tower.deadlines import of_run

    return {**json_result(info.to_result()), "runtime_status": info.runtime_status, **of_run(info)}


@bp.function_name("api_start_run")
@bp.route(route="runs/{pipeline}", methods=["POST"], auth_level=AUTH)
@bp.durable_client_input(client_name="client")
async def start_run(req: func.HttpRequest, client: df.DurableOrchestrationClient) -> func.HttpResponse:
    from tower.run_request import parse_start_body
    from tower.runs.plan import given_run_id, new_run_id

    pipeline = req.route_params["pipeline"]
    try:
        body = json.loads(req.get_body() or b"{}")
    except ValueError as exc:
        return _error(400, f"POST /api/runs/{pipeline}: body is not JSON ({exc})")
    try:
        request = parse_start_body(body)
    except UsageError as exc:
        return _error(400, f"POST /api/runs/{pipeline}: {exc}")
    try:
        cat = catalog()
        if pipeline not in cat.pipelines:
            known = ", ".join(cat.pipelines) or "none"
            return _error(404, f"unknown pipeline {pipeline!r} (pipelines: {known})")
        run_id = given_run_id(body["run_id"]) if "run_id" in body else new_run_id(pipeline, datetime.now(timezone.utc))
        await start_new_run(client, cat, pipeline, run_id, trigger="api", params=request.params,
                            selectors=request.services)
    except RunExists as exc:
        return _error(409, str(exc))
    except UsageError as exc:
        return _error(400, str(exc))
    except CatalogError as exc:
        return _error(500, f"the catalog is invalid:\n{exc}")
    status_url = f"{_base(req)}/runs/{run_id}"
    return _json({"run_id": run_id, "pipeline": pipeline, "status_url": status_url}, 202, {"Location": status_url})


@bp.function_name("api_get_run")
@bp.route(route="runs/{run_id}", methods=["GET"], auth_level=AUTH)
@bp.durable_client_input(client_name="client")
async def get_run(req: func.HttpRequest, client: df.DurableOrchestrationClient) -> func.HttpResponse:
    run_id = req.route_params["run_id"]
    if not is_safe_instance_id(run_id):  # no run has such an id, and the SDK would put it in a URL as is
        return _error(404, f"no run {run_id!r}")
    row = await asyncio.to_thread(lambda: app_runtime.current().runs_index.get(run_id))
    # The SDK cannot ask for showInput=false (it drops false arguments) and the extension then
    # sends the input; that input is a plan reference of a few hundred bytes, never the plan.
    status = await client.get_status(run_id)
    if not status or status.runtime_status is None or status.name != PIPELINE_RUN:
        if row is not None:  # its details were purged: what the runs index keeps
            return _json(row.to_json())
        return _error(404, f"no run {run_id!r}")
    links = {key: getattr(row, key) for key in ("repair_of", "repaired_by") if row is not None}
    return _json({**await asyncio.to_thread(_run, status, True), **links})


@bp.function_name("api_list_runs")
@bp.route(route="runs", methods=["GET"], auth_level=AUTH)
async def list_runs(req: func.HttpRequest) -> func.HttpResponse:
    """Runs newest first from the runs index (never a Durable instance query: tower.runs.index)."""
    from tower.runs.index import list_query

    try:
        query = list_query(req.params)
    except UsageError as exc:
        return _error(400, f"GET /api/runs: {exc}")
    index = await asyncio.to_thread(lambda: app_runtime.current().runs_index)
    rows, continuation = await asyncio.to_thread(lambda: index.list(**query))
    return _json({"runs": [row.to_json() for row in rows], "continuation": continuation})


@bp.function_name("api_cancel_run")
@bp.route(route="runs/{run_id}/cancel", methods=["POST"], auth_level=AUTH)
@bp.durable_client_input(client_name="client")
async def cancel_run(req: func.HttpRequest, client: df.DurableOrchestrationClient) -> func.HttpResponse:
    from tower.states import UNFINISHED_RUNTIMES

    run_id = req.route_params["run_id"]
    if not is_safe_instance_id(run_id):  # as in get_run
        return _error(404, f"no run {run_id!r}")
    status = await client.get_status(run_id)
    if not status or status.runtime_status is None or status.name != PIPELINE_RUN:
        return _error(404, f"no run {run_id!r}")
    if status.runtime_status.name not in UNFINISHED_RUNTIMES:
        return _error(409, f"run {run_id!r} has already finished ({status.runtime_status.name})")
    try:
        with durable_errors.translated():
            await client.raise_event(run_id, CANCEL_EVENT, None)
    except InstanceGone:  # it finished in between
        return _error(409, f"run {run_id!r} could not be cancelled: it has just finished")
    return _json({"run_id": run_id, "cancelling": True, "status_url": f"{_base(req)}/runs/{run_id}"}, 202)


def health_checks() -> dict[str, dict]:
    """Each thing a run needs, checked the cheapest way it can be: {name: {"ok": bool[, "error"]}}."""
    from tower.redact import redact

    checks = {
        "catalog": lambda: catalog(),
        "runs_index": lambda: app_runtime.current().runs_index.list(limit=1),
        "ledger": lambda: app_runtime.current().ledger.version("~health"),
        "history": lambda: app_runtime.current().history.expected_durations(["~health"]),
        "rejected_events": lambda: app_runtime.current().rejected.list(None, 1),
        "notifications_outbox": lambda: app_runtime.current().outbox.pending(1),
    }
    results = {}
    for name, check in checks.items():
        try:
            check()
            results[name] = {"ok": True}
        except Exception as exc:  # what is wrong is the answer here, never a 500
            results[name] = {"ok": False, "error": redact(str(exc))[:2000]}
    return results


@bp.function_name("api_health")
@bp.route(route="health", methods=["GET"], auth_level=AUTH)
async def health(req: func.HttpRequest) -> func.HttpResponse:
    from tower import __version__

    checks = await asyncio.to_thread(health_checks)
    ok = all(check["ok"] for check in checks.values())
    return _json({"ok": ok, "version": __version__, "checks": checks}, 200 if ok else 503)


@bp.function_name("api_openapi")
@bp.route(route="openapi.json", methods=["GET"], auth_level=AUTH)
def openapi(req: func.HttpRequest) -> func.HttpResponse:
    from tower import __version__
    from tower.openapi import document

    return _json(document(__version__))
