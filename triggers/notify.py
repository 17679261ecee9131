"""Push completion (tower.push): a platform tells Tower that remote work ended.

    POST /api/notify/databricks      a Databricks job's webhook notification (a notification
                                     destination of type webhook, on the job's success and failure)
                                     -> 202 when the service run was woken, 404 when the payload
                                     names no run Tower submitted
    POST /api/notify/http/{token}    an HTTP service's callback (the `Tower-Callback` URL of its
                                     submit) -> 202 when woken, 404 for a token Tower never gave

The callback route is anonymous: its token (144 random bits, one per submit) is the credential, as
a SAS URL's signature is. A function key in a URL handed to every HTTP service would let each of
them start and cancel runs; the token lets its holder only make one service run poll once more.

The service run named is woken to poll at once; the notification is not trusted for anything else
(the poll asks the platform).
"""

from __future__ import annotations

import asyncio
import json
import logging
import re

import azure.durable_functions as df
import azure.functions as func

import app_runtime
from tower import durable_errors, names, push
from tower.errors import InstanceGone, InstanceNotFound

bp = df.Blueprint()
log = logging.getLogger("tower.triggers")
AUTH = func.AuthLevel.FUNCTION
TOKEN = re.compile(r"[A-Za-z0-9_-]{16,64}")  # tower.push.new_token's alphabet
ENDS = ("jobs.on_success", "jobs.on_failure")  # a start or a duration warning ends nothing


def _json(body: dict, status: int) -> func.HttpResponse:
    return func.HttpResponse(json.dumps(body), status_code=status, mimetype="application/json")


def databricks_run_id(body) -> tuple[str | None, str | None]:
    """(run id, event type) of a Databricks webhook payload; (None, why) when it is not one. A job's
    notification is {"event_type", "workspace_id", "run": {"run_id"}, "job": {"job_id", "name"}}; one
    set on a task names the task's run in run.run_id and the job's in run.parent_run_id (Databricks,
    "HTTP webhook payloads"). The job's run is the one Tower submitted (run-now answers its id)."""
    if not isinstance(body, dict):
        return None, "the body is not a JSON object"
    run = body.get("run")
    if isinstance(run, dict):
        run_id = run.get("parent_run_id") if run.get("parent_run_id") is not None else run.get("run_id")
    else:
        run_id = body.get("run_id")
    if isinstance(run_id, bool) or not isinstance(run_id, (int, str)) or not str(run_id).isdigit():
        return None, "it names no run (expected run.run_id, a number, or a task's run.parent_run_id)"
    event = body.get("event_type")
    if event is not None and not isinstance(event, str):
        return None, "event_type is not a string"
    return str(run_id), event


@bp.function_name(names.NOTIFY_DATABRICKS)
@bp.route(route="notify/databricks", methods=["POST"], auth_level=AUTH)
@bp.durable_client_input(client_name="client")
async def notify_databricks(req: func.HttpRequest, client: df.DurableOrchestrationClient) -> func.HttpResponse:
    try:
        body = json.loads(req.get_body() or b"null")
    except ValueError as exc:
        return _json({"error": f"POST /api/notify/databricks: the body is not JSON ({exc})"}, 400)
    run_id, event = databricks_run_id(body)
    if run_id is None:
        return _json({"error": f"POST /api/notify/databricks: not a Databricks job notification: {event}"}, 400)
    if event is not None and event not in ENDS:
        return _json({"run_id": run_id, "woken": False, "why": f"{event} ends no run"}, 202)
    return await wake(client, push.DATABRICKS, run_id, f"Databricks run {run_id}")


@bp.function_name(names.NOTIFY_HTTP)
@bp.route(route="notify/http/{token}", methods=["POST"], auth_level=func.AuthLevel.ANONYMOUS)
@bp.durable_client_input(client_name="client")
async def notify_http(req: func.HttpRequest, client: df.DurableOrchestrationClient) -> func.HttpResponse:
    token = req.route_params.get("token", "")
    if not TOKEN.fullmatch(token):
        return _json({"error": "no such callback"}, 404)
    return await wake(client, push.HTTP, token, "an HTTP callback")


async def wake(client, kind: str, remote_id: str, what: str) -> func.HttpResponse:
    """Raise REMOTE_ENDED_EVENT on the service run that submitted `remote_id`; 404 (logged) if none did."""
    target = await asyncio.to_thread(lambda: push.find(app_runtime.current().push_keys, kind, remote_id))
    if target is None:
        log.warning("push completion: refused a notification about %s: Tower submitted no such run", what)
        return _json({"error": f"{what} is not a run Tower submitted"}, 404)
    try:
        with durable_errors.translated():
            await client.raise_event(target["instance_id"], names.REMOTE_ENDED_EVENT,
                                     {"kind": kind, "remote_id": remote_id})
    except (InstanceGone, InstanceNotFound):   # the service run has ended (or was purged): nothing to wake
        return _json({"run_id": target["run_id"], "service": target["service"], "woken": False,
                      "why": "the service run has ended"}, 202)
    log.info("%s/%s: %s ended (pushed), polling now", target["run_id"], target["service"], what)
    return _json({"run_id": target["run_id"], "service": target["service"], "woken": True}, 202)
