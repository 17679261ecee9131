"""The Durable extension's HTTP management API, as aiohttp routes over the local engine, so that the
unmodified `DurableOrchestrationClient` (built from `binding_string`) works against it.

Status codes follow the host's `HttpApiHandler`: 202 + management URLs on start, 400 for an unknown
orchestrator or a bad id, 202 running / 200 finished / 404 unknown on status, 410 for operations on
a finished instance. Request bodies arrive JSON-encoded twice (the client `json=`-posts JSON text).
"""

from __future__ import annotations

import base64
import json
from collections.abc import Awaitable, Callable
from datetime import datetime
from urllib.parse import quote

from aiohttp import web

from tower.errors import EngineError, InstanceExists, InstanceNotFound
from tower.local import history as h
from tower.local import store as st
from tower.local.engine import PayloadTooLarge

PREFIX = "/runtime/webhooks/durabletask/"
RUNNING_STATES = frozenset(h.ALL_STATUSES) - h.TERMINAL
_ID = "INSTANCEID"
# Instance queries (HttpApiHandler.HandleGetStatusRequestAsync, OrchestrationStatusQueryCondition):
# `top` is the page size, 100 by default; the token comes back in, and goes out as, this header.
PAGE_SIZE, MAX_PAGE_SIZE = 100, 1000      # Table Storage returns at most 1,000 entities per request
CONTINUATION_HEADER = "x-ms-continuation-token"
# The extension's catch-all (HttpApiHandler.HandleRequestAsync): any exception it does not map,
# a duplicate start included, is a 500 with this message and the exception's own text and type.
SOMETHING_WENT_WRONG = "Something went wrong while processing your request"
ALREADY_EXISTS_TYPE = "DurableTask.Core.Exceptions.OrchestrationAlreadyExistsException"
RPC_EXCEPTION_TYPE = "Grpc.Core.RpcException"     # a payload over the scheduler's message limit

# What Azure's Durable HTTP API does to a start now and then, and a client must survive (the
# extension answers from a Functions host that shares its instance and its storage account with the
# app): a start is slow (storage latency, throttling), refused (a storage failure reaches the
# extension's catch-all: 500 "Something went wrong" with the exception's text and type), or done
# without the caller ever hearing so (the connection drops after the extension acted; the SDK raises
# aiohttp's ServerDisconnectedError and closes its one session, `http_utils._handle_request_error`).
# `Engine.unreliable_starts` re-enacts them: a `StartTrouble` is awaited with the orchestrator's
# name and the instance id before each start through this API: it may wait (a slow start), raise (a
# refused one), or return LOST_REPLY (the instance is created, the reply is never sent).
StartTrouble = Callable[[str, "str | None"], Awaitable["str | None"]]
LOST_REPLY = "lost reply"


def binding_string(base_url: str, hub: str = "TowerHub") -> str:
    """The `durableClient` binding JSON the host hands to client functions (the SDK reads
    `rpcBaseUrl` and `managementUrls`; the rest is there for fidelity)."""
    base = base_url.rstrip("/") + PREFIX
    query = f"taskHub={hub}&connection=Storage"
    instance = base + "instances/" + _ID
    return json.dumps({
        "taskHubName": hub,
        "creationUrls": {
            "createNewInstancePostUri": base + "orchestrators/{functionName}[/{instanceId}]?" + query,
            "createAndWaitOnNewInstancePostUri": base + "orchestrators/{functionName}[/{instanceId}]"
                                                 "?timeout={timeoutInSeconds}&pollingInterval={intervalInSeconds}&"
                                                 + query,
        },
        "managementUrls": {
            "id": _ID,
            "statusQueryGetUri": f"{instance}?{query}",
            "sendEventPostUri": f"{instance}/raiseEvent/{{eventName}}?{query}",
            "terminatePostUri": f"{instance}/terminate?reason={{text}}&{query}",
            "rewindPostUri": f"{instance}/rewind?reason={{text}}&{query}",
            "purgeHistoryDeleteUri": f"{instance}?{query}",
            "restartPostUri": f"{instance}/restart?{query}",
            "suspendPostUri": f"{instance}/suspend?reason={{text}}&{query}",
            "resumePostUri": f"{instance}/resume?reason={{text}}&{query}",
        },
        "rpcBaseUrl": base,
        "baseUrl": base.rstrip("/"),
        "requiredQueryStringParameters": query,
    })


def add_routes(router: web.UrlDispatcher, engine) -> None:
    """Add the management routes for `engine` to an aiohttp router (the host's or the engine's own)."""
    api = _Api(engine)
    router.add_post(PREFIX + "orchestrators/{name}", api.start)
    router.add_post(PREFIX + "orchestrators/{name}/{instance_id}", api.start)
    for path in (PREFIX + "instances", PREFIX + "instances/"):
        router.add_get(path, api.list)
        router.add_delete(path, api.purge_many)
    router.add_get(PREFIX + "instances/{instance_id}", api.status)
    router.add_delete(PREFIX + "instances/{instance_id}", api.purge)
    router.add_post(PREFIX + "instances/{instance_id}/raiseEvent/{event}", api.raise_event)
    router.add_post(PREFIX + "instances/{instance_id}/{operation}", api.operate)


def _flag(request: web.Request, name: str, default: bool) -> bool:
    value = request.query.get(name)
    return default if value is None else value.lower() == "true"


def _time(request: web.Request, name: str) -> datetime | None:
    value = request.query.get(name)
    if not value:
        return None
    try:
        return h.parse_time(value)
    except ValueError:
        raise web.HTTPBadRequest(text=json.dumps({"Message": f"'{name}' is not a valid time: {value!r}"}),
                                 content_type="application/json") from None


def _int(request: web.Request, name: str, default: int) -> int:
    """An integer query parameter; one that does not parse is ignored, as the extension ignores it."""
    try:
        return int(request.query.get(name, default))
    except ValueError:
        return default


def _token(last_id: str) -> str:
    """An opaque continuation token: where the next page starts."""
    return base64.urlsafe_b64encode(json.dumps({"after": last_id}).encode()).decode()


def _after(token: str | None) -> str | None:
    if not token:
        return None
    try:
        return json.loads(base64.urlsafe_b64decode(token.encode()))["after"]
    except (ValueError, KeyError, TypeError):
        raise web.HTTPBadRequest(text=json.dumps({"Message": f"invalid {CONTINUATION_HEADER} header"}),
                                 content_type="application/json") from None


def _internal_error(exc: Exception, exception_type: str) -> web.Response:
    return web.json_response({"Message": SOMETHING_WENT_WRONG, "ExceptionMessage": str(exc),
                              "ExceptionType": exception_type, "StackTrace": None}, status=500)


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"Message": message, "ExceptionMessage": message}, status=status)


async def _body(request: web.Request) -> str | None:
    """The JSON text the client meant (it arrives encoded a second time), or None."""
    raw = await request.text()
    if not raw:
        return None
    try:
        value = json.loads(raw)
    except ValueError:
        return raw
    return value if isinstance(value, str) or value is None else json.dumps(value)


class _Api:
    def __init__(self, engine):
        self.engine = engine

    def _links(self, request: web.Request, instance_id: str) -> dict:
        urls = json.loads(self.engine.client_binding or binding_string(f"http://{request.host}"))
        return {key: value.replace(_ID, quote(instance_id, safe="@:")) if key != "id" else instance_id
                for key, value in urls["managementUrls"].items()}

    async def start(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        instance_id = request.match_info.get("instance_id")
        body, trouble, outcome = await _body(request), self.engine.start_trouble, None
        if trouble is not None:   # see StartTrouble
            try:
                outcome = await trouble(name, instance_id)
            except Exception as exc:
                return _internal_error(exc, type(exc).__name__)
        try:
            instance_id = self.engine.start_new(name, instance_id, body)
        except InstanceExists as exc:      # not mapped by the extension: its catch-all 500
            return _internal_error(exc, ALREADY_EXISTS_TYPE)
        except PayloadTooLarge as exc:
            return _internal_error(exc, RPC_EXCEPTION_TYPE)
        except EngineError as exc:        # an unknown orchestrator or a bad id
            return _error(400, str(exc))
        links = self._links(request, instance_id)
        if outcome == LOST_REPLY and request.transport is not None:
            request.transport.abort()     # started, and the caller never hears of it
        return web.json_response(links, status=202, headers={"Location": links["statusQueryGetUri"]})

    async def status(self, request: web.Request) -> web.Response:
        status = self.engine.status(
            request.match_info["instance_id"], show_history=_flag(request, "showHistory", False),
            show_history_output=_flag(request, "showHistoryOutput", False),
            show_input=_flag(request, "showInput", True))
        if status is None:
            return web.Response(status=404)
        code = 202 if status["runtimeStatus"] in RUNNING_STATES else 200
        if status["runtimeStatus"] == h.FAILED and _flag(request, "returnInternalServerErrorOnFailure", False):
            code = 500
        return web.json_response(status, status=code)

    def _filters(self, request: web.Request) -> dict:
        statuses = [s for s in request.query.get("runtimeStatus", "").split(",") if s]
        unknown = [s for s in statuses if s not in h.ALL_STATUSES]
        if unknown:
            raise web.HTTPBadRequest(text=json.dumps({"Message": f"unknown runtimeStatus {', '.join(unknown)} "
                                                                 f"(known: {', '.join(h.ALL_STATUSES)})"}),
                                     content_type="application/json")
        return {"runtime_status": statuses or None, "created_from": _time(request, "createdTimeFrom"),
                "created_to": _time(request, "createdTimeTo")}

    async def list(self, request: web.Request) -> web.Response:
        """One page, as the extension answers: `top` (default 100) instances in id order, inputs
        shown unless `showInput=false`, and a continuation token header while more remain. (The
        Python SDK's get_status_all/get_status_by read the first page only.)"""
        top = _int(request, "top", PAGE_SIZE)
        rows, last = self.engine.store.page(prefix=request.query.get("instanceIdPrefix") or None,
                                            after=_after(request.headers.get(CONTINUATION_HEADER)),
                                            top=min(top, MAX_PAGE_SIZE) if top > 0 else PAGE_SIZE,
                                            show_input=_flag(request, "showInput", True), **self._filters(request))
        found = [st.status_of(r, self.engine.store) for r in rows]
        headers = {CONTINUATION_HEADER: _token(last)} if last is not None else {}
        return web.json_response(found, headers=headers)

    async def purge(self, request: web.Request) -> web.Response:
        deleted = self.engine.purge(request.match_info["instance_id"])
        return web.json_response({"instancesDeleted": deleted}) if deleted else web.Response(status=404)

    async def purge_many(self, request: web.Request) -> web.Response:
        if not request.query.get("createdTimeFrom"):
            return _error(400, "Please provide value for 'createdTimeFrom' parameter.")
        deleted = self.engine.purge_many(**self._filters(request))
        return web.json_response({"instancesDeleted": deleted}) if deleted else web.Response(status=404)

    async def raise_event(self, request: web.Request) -> web.Response:
        data = await _body(request)
        return self._control(lambda i: self.engine.raise_event(i, request.match_info["event"], data), request)

    async def operate(self, request: web.Request) -> web.Response:
        operation = request.match_info["operation"]
        reason = request.query.get("reason")
        actions = {"terminate": self.engine.terminate, "suspend": self.engine.suspend, "resume": self.engine.resume}
        if operation not in actions:
            return _error(501 if operation in ("rewind", "restart") else 404,
                          f"'{operation}' is not supported by the local Durable host "
                          "(supported: terminate, suspend, resume, raiseEvent)")
        return self._control(lambda i: actions[operation](i, reason), request)

    def _control(self, act, request: web.Request) -> web.Response:
        instance_id = request.match_info["instance_id"]
        try:
            act(instance_id)
        except PayloadTooLarge as exc:
            return _internal_error(exc, RPC_EXCEPTION_TYPE)
        except InstanceNotFound as exc:
            return _error(404, str(exc))
        except EngineError as exc:
            return _error(410, str(exc))
        return web.Response(status=202)
