"""The OpenAPI 3.1 document of Tower's HTTP API (served at ``GET /api/openapi.json``).

Written by hand, route by route, next to nothing else: a test holds it equal to the HTTP routes
registered on ``function_app.app`` (tests/test_api_contract.py), so a route added without its
documentation, or documentation left behind by a removed route, fails the suite. Paths are relative
to the server URL ``/api``. Azure's Functions host and `tower serve` authenticate alike: a function
key (Azure) or ``TOWER_API_KEY`` (`tower serve`) in the ``x-functions-key`` header or the ``code``
query parameter.

One path, ``/runs/{id}``, carries two operations: ``POST`` (``id`` is a pipeline: start a run of
it) and ``GET`` (``id`` is a run id): OpenAPI holds two templates that differ only in a parameter's
name to be the same path, and the Functions routes ``runs/{pipeline}`` and ``runs/{run_id}`` are.
"""

from __future__ import annotations

from enum import Enum
from typing import Any

from tower.states import RunState, ServiceState

API_PREFIX = "/api"


def _ref(name: str) -> dict:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict, description: str) -> dict:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _error(description: str) -> dict:
    return _json(_ref("Error"), description)


def _states(states: type[Enum] | list[Enum]) -> dict:
    """A state field, its values read from the enum (`tower.states`), so the two cannot drift apart."""
    return {"type": "string", "enum": [state.value for state in states]}


RESULT_STATES = [state for state in RunState if state is not RunState.STARTING]  # a run with an orchestration


def _param(name: str, where: str, description: str, schema: dict | None = None, required: bool | None = None) -> dict:
    return {"name": name, "in": where, "description": description,
            "required": where == "path" if required is None else required, "schema": schema or {"type": "string"}}


RUN_ID = _param("id", "path", "the run id (`run~...`)")
BAD_REQUEST = _error("what the caller sent is wrong: the message says what and how to fix it")
NOT_FOUND = _error("no such run or pipeline")
UNAUTHORIZED = _error("no valid key (x-functions-key header or code query parameter)")

PATHS: dict[str, dict[str, Any]] = {
    "/runs": {
        "get": {
            "operationId": "listRuns",
            "summary": "Runs, newest first, from the runs index",
            "parameters": [
                _param("pipeline", "query", "only this pipeline's runs"),
                _param("status", "query", "only runs in this state",
                       _states(RunState)),
                _param("since", "query", "only runs started since: ISO-8601 time, or an age such as 2h or 7d"),
                _param("limit", "query", "at most this many (1 to 1000, default 20)",
                       {"type": "integer", "minimum": 1, "maximum": 1000}),
                _param("continuation", "query", "the `continuation` of the previous page"),
            ],
            "responses": {"200": _json(_ref("RunList"), "a page of runs"), "400": BAD_REQUEST,
                          "401": UNAUTHORIZED},
        },
    },
    "/runs/{id}": {
        "post": {
            "operationId": "startRun",
            "summary": "Start a run of a pipeline",
            "parameters": [_param("id", "path", "the pipeline to run")],
            "requestBody": {"required": False, "content": {"application/json": {"schema": _ref("StartRun")}}},
            "responses": {
                "202": {**_json(_ref("RunStarted"), "started; poll `status_url`"),
                        "headers": {"Location": {"description": "the run's status URL", "schema": {"type": "string"}}}},
                "400": BAD_REQUEST, "401": UNAUTHORIZED, "404": _error("no such pipeline"),
                "409": _error("that run id was used before"),
                "500": _error("the deployed catalog is invalid (the message lists its problems)"),
            },
        },
        "get": {
            "operationId": "getRun",
            "summary": "One run: its status, each service's state, and its deadline",
            "parameters": [RUN_ID],
            "responses": {"200": _json(_ref("Run"), "the run"), "401": UNAUTHORIZED, "404": NOT_FOUND},
        },
    },
    "/runs/{id}/cancel": {
        "post": {
            "operationId": "cancelRun",
            "summary": "Ask a running run to cancel",
            "parameters": [RUN_ID],
            "responses": {"202": _json(_ref("Cancelling"), "the run is cancelling"), "401": UNAUTHORIZED,
                          "404": NOT_FOUND, "409": _error("the run has already finished")},
        },
    },
    "/runs/{id}/repair": {
        "post": {
            "operationId": "repairRun",
            "summary": "A new run of what failed, was held back or was cancelled, with the run's frozen plan",
            "parameters": [RUN_ID],
            "requestBody": {"required": False, "content": {"application/json": {"schema": {
                "type": "object", "properties": {"again": {"type": "boolean",
                                                           "description": "repair a run repaired before"}}}}}},
            "responses": {
                "202": {**_json(_ref("RepairStarted"), "the repair started; poll `status_url`"),
                        "headers": {"Location": {"description": "the repair's status URL", "schema": {"type": "string"}}}},
                "400": BAD_REQUEST, "401": UNAUTHORIZED, "404": NOT_FOUND,
                "409": _error("still running, nothing to repair, or repaired before (send {\"again\": true})"),
            },
        },
    },
    "/runs/{id}/board": {
        "get": {
            "operationId": "runBoard",
            "summary": "The run page's data: each service's platform, dependencies, expected time and remote "
                       "link; the remaining critical path; the ETA; the board (why each waiting service waits)",
            "parameters": [RUN_ID],
            "responses": {"200": _json({"type": "object"}, "the run's view"), "401": UNAUTHORIZED, "404": NOT_FOUND},
        },
    },
    "/pipelines": {
        "get": {
            "operationId": "listPipelines",
            "summary": "Each pipeline: schedule, next due times, event types, services and platforms",
            "responses": {"200": _json({"type": "object", "properties": {"pipelines": {"type": "array"}}},
                                       "the pipelines"), "401": UNAUTHORIZED,
                          "500": _error("the deployed catalog is invalid")},
        },
    },
    "/pipelines/{name}": {
        "get": {
            "operationId": "getPipeline",
            "summary": "One pipeline: its services, schedule, next due times, critical path, predicted "
                       "makespan and, with a deadline, its next run's slack against it",
            "parameters": [_param("name", "path", "the pipeline")],
            "responses": {"200": _json({"type": "object"}, "the pipeline"), "401": UNAUTHORIZED,
                          "404": _error("no such pipeline"), "500": _error("the deployed catalog is invalid")},
        },
    },
    "/dashboard": {
        "get": {
            "operationId": "dashboard",
            "summary": "The dashboard page (open it with ?code=<key>: it passes the key to every call)",
            "responses": {"200": {"description": "the page", "content": {"text/html": {"schema": {"type": "string"}}}},
                          "401": UNAUTHORIZED},
        },
    },
    "/dashboard/{asset}": {
        "get": {
            "operationId": "dashboardAsset",
            "summary": "The dashboard's script and stylesheet (static files, no key)",
            "security": [],
            "parameters": [_param("asset", "path", "app.js or style.css")],
            "responses": {"200": {"description": "the file", "content": {
                "text/javascript": {"schema": {"type": "string"}}, "text/css": {"schema": {"type": "string"}}}},
                "404": _error("no such file")},
        },
    },
    "/events": {
        "post": {
            "operationId": "sendEvent",
            "summary": "Put an event on the events queue (TOWER_EVENTS_QUEUE) with the app's identity",
            "requestBody": {"required": True, "content": {"application/json": {"schema": _ref("Event")}}},
            "responses": {"202": _json(_ref("EventSent"), "the event is on the queue"), "400": BAD_REQUEST,
                          "401": UNAUTHORIZED},
        },
    },
    "/notify/databricks": {
        "post": {
            "operationId": "notifyDatabricks",
            "summary": "A Databricks job's webhook notification: the service run of that remote run polls at once",
            "requestBody": {"required": True, "content": {"application/json": {"schema": _ref("DatabricksNotification")}}},
            "responses": {"202": _json(_ref("Woken"), "the service run was woken (or had ended)"), "400": BAD_REQUEST,
                          "401": UNAUTHORIZED, "404": _error("the payload names no run Tower submitted")},
        },
    },
    "/notify/http/{token}": {
        "post": {
            "operationId": "notifyHttp",
            "summary": "An HTTP service's callback (its submit's Tower-Callback URL): that service run polls at once",
            "security": [],
            "parameters": [_param("token", "path", "the token of the callback URL (its credential)")],
            "responses": {"202": _json(_ref("Woken"), "the service run was woken (or had ended)"),
                          "404": _error("no such callback")},
        },
    },
    "/events/rejected": {
        "get": {
            "operationId": "listRejectedEvents",
            "summary": "Messages the events trigger rejected (they can never work), newest first, with the reason",
            "parameters": [
                _param("limit", "query", "at most this many (default 50)", {"type": "integer", "minimum": 1}),
                _param("queue", "query", "only those received on this queue"),
            ],
            "responses": {"200": _json({"type": "array", "items": _ref("RejectedEvent")}, "rejected messages"),
                          "400": BAD_REQUEST, "401": UNAUTHORIZED},
        },
    },
    "/health": {
        "get": {
            "operationId": "health",
            "summary": "Is this app able to run pipelines: the catalog valid, every store reachable",
            "responses": {"200": _json(_ref("Health"), "all is well"), "401": UNAUTHORIZED,
                          "503": _json(_ref("Health"), "something is not: `checks` says what")},
        },
    },
    "/openapi.json": {
        "get": {
            "operationId": "openapi",
            "summary": "This document",
            "responses": {"200": {"description": "the OpenAPI 3.1 document",
                                  "content": {"application/json": {"schema": {"type": "object"}}}},
                          "401": UNAUTHORIZED},
        },
    },
}

_SERVICE = {
    "type": "object",
    "properties": {
        "status": _states(ServiceState),
        "attempts": {"type": ["integer", "null"]},
        "started": {"type": ["string", "null"], "format": "date-time"},
        "finished": {"type": ["string", "null"], "format": "date-time"},
        "remote_id": {"type": ["string", "null"]},
        "error": {"type": ["string", "null"]},
    },
}

SCHEMAS: dict[str, Any] = {
    "Error": {"type": "object", "required": ["error"],
              "properties": {"error": {"type": "string", "description": "what is wrong and what to do"}}},
    "StartRun": {"type": "object", "additionalProperties": False, "properties": {
        "params": {"type": "object", "description": "run parameters the pipeline or its services declare"},
        "services": {"type": "array", "items": {"type": "string"},
                     "description": "selectors narrowing the pipeline: name, name+, +name, tag:x"},
        "run_id": {"type": "string", "description": "an id of your own; a second start with it is a 409"}}},
    "RunStarted": {"type": "object", "required": ["run_id", "pipeline", "status_url"], "properties": {
        "run_id": {"type": "string"}, "pipeline": {"type": "string"}, "status_url": {"type": "string"}}},
    "Run": {"type": "object", "required": ["run_id", "pipeline", "status"], "properties": {
        "run_id": {"type": "string"}, "pipeline": {"type": "string"},
        "status": _states(RESULT_STATES),
        "runtime_status": {"type": "string"},
        "started": {"type": ["string", "null"], "format": "date-time"},
        "finished": {"type": ["string", "null"], "format": "date-time"},
        "services": {"type": "object", "additionalProperties": _SERVICE},
        "repair_of": {"type": ["string", "null"]}, "repaired_by": {"type": ["string", "null"]},
        "deadline": {"type": "string", "format": "date-time", "description": "present when the pipeline has one"},
        "predicted_end": {"type": "string", "format": "date-time", "description": "the finish, once finished"},
        "slack_s": {"type": "number", "description": "deadline - predicted end; negative: late"},
        "at_risk": {"type": "boolean"}, "missed": {"type": "boolean"},
        "critical_path": {"type": "array", "items": {"type": "string"},
                          "description": "the unfinished services that decide the predicted end"},
        "slots": {"type": "object", "description": "while services wait for a platform's slots (shared by "
                  "every run): per platform its limit, slots busy, and the runs holding them",
                  "additionalProperties": {"type": "object", "properties": {
                      "limit": {"type": ["integer", "null"]}, "busy": {"type": "integer"},
                      "held_by": {"type": "object", "additionalProperties": {"type": "integer"}}}}}}},
    "RunRow": {"type": "object", "description": "a run as the runs index keeps it", "properties": {
        "run_id": {"type": "string"}, "pipeline": {"type": "string"}, "trigger": {"type": "string"},
        "status": _states(RunState), "started": {"type": "string"}, "finished": {"type": ["string", "null"]},
        "counts": {"type": "object", "additionalProperties": {"type": "integer"}}}},
    "RunList": {"type": "object", "required": ["runs", "continuation"], "properties": {
        "runs": {"type": "array", "items": _ref("RunRow")}, "continuation": {"type": ["string", "null"]}}},
    "RepairStarted": {"type": "object", "required": ["run_id", "repair_of", "status_url"], "properties": {
        "run_id": {"type": "string"}, "repair_of": {"type": "string"},
        "services": {"type": "array", "items": {"type": "string"}}, "status_url": {"type": "string"}}},
    "Cancelling": {"type": "object", "properties": {
        "run_id": {"type": "string"}, "cancelling": {"type": "boolean"}, "status_url": {"type": "string"}}},
    "DatabricksNotification": {"type": "object", "required": ["run"], "properties": {
        "event_type": {"type": "string", "description": "jobs.on_success or jobs.on_failure wake; others are noted"},
        "run": {"type": "object", "required": ["run_id"], "properties": {
            "run_id": {"type": ["integer", "string"]},
            "parent_run_id": {"type": ["integer", "string"],
                              "description": "a task's notification: the job run's id, the run Tower submitted"}}},
        "task": {"type": "object", "properties": {"task_key": {"type": "string"}}},
        "job": {"type": "object", "properties": {"job_id": {"type": ["integer", "string"]}}}}},
    "Woken": {"type": "object", "properties": {
        "run_id": {"type": "string"}, "service": {"type": "string"}, "woken": {"type": "boolean"},
        "why": {"type": "string"}}},
    "Event": {"type": "object", "required": ["type"], "properties": {
        "type": {"type": "string", "description": "the event type, e.g. files.landed"},
        "data": {"description": "any JSON"},
        "id": {"type": "string", "maxLength": 128,
               "description": "the message id (default: a new one): resending an id starts no second run"}}},
    "EventSent": {"type": "object", "properties": {
        "id": {"type": "string"}, "type": {"type": "string"}, "sent_to": {"type": "array", "items": {"type": "string"}}}},
    "RejectedEvent": {"type": "object", "properties": {
        "message_id": {"type": "string"}, "queue": {"type": "string"}, "event_type": {"type": ["string", "null"]},
        "reason": {"type": "string"}, "rejected_at": {"type": "number"}}},
    "Health": {"type": "object", "required": ["ok", "version", "checks"], "properties": {
        "ok": {"type": "boolean"}, "version": {"type": "string"},
        "checks": {"type": "object", "additionalProperties": {"type": "object", "properties": {
            "ok": {"type": "boolean"}, "error": {"type": "string"}}}}}},
}


def document(version: str) -> dict:
    """The OpenAPI 3.1 document, every operation behind the function key."""
    return {
        "openapi": "3.1.0",
        "info": {"title": "Tower", "version": version,
                 "description": "Start, follow and cancel pipeline runs; send events; check the app's health."},
        "servers": [{"url": API_PREFIX}],
        "security": [{"functionKey": []}, {"functionKeyQuery": []}],
        "paths": PATHS,
        "components": {
            "schemas": SCHEMAS,
            "securitySchemes": {
                "functionKey": {"type": "apiKey", "in": "header", "name": "x-functions-key",
                                "description": "a function key in Azure; TOWER_API_KEY under tower serve"},
                "functionKeyQuery": {"type": "apiKey", "in": "query", "name": "code"},
            },
        },
    }


def operations(doc: dict) -> set[tuple[str, str]]:
    """(METHOD, path with every parameter written {}) of each documented operation."""
    import re

    return {(method.upper(), re.sub(r"\{[^}]*\}", "{}", path))
            for path, item in doc["paths"].items() for method in item}
