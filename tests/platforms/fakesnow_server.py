"""The local Snowflake stand-in: fakesnow's own server, plus the two things Tower's adapter relies on
that fakesnow does not have.

- ``INFORMATION_SCHEMA.QUERY_HISTORY_BY_USER``: every statement the server runs is recorded with the
  session's ``QUERY_TAG`` (set at login through ``session_parameters``, or by ``ALTER SESSION SET
  QUERY_TAG``), its text as the client sent it, its user and start time. A query on the table function
  is answered from that record by fakesnow itself (the call is rewritten to a table that holds it), so
  the caller's WHERE clause and binds are evaluated for real. As in Snowflake, the function lives in a
  database's INFORMATION_SCHEMA: a session without a current database gets Snowflake's error 090105,
  and it lists the calling user's queries only, most recent first, at most ``RESULT_LIMIT`` (100).
- ``SYSTEM$CANCEL_QUERY(id)``: recorded (``cancelled``) and answered with one text row. fakesnow ends
  every query inside its request, so there is never anything left to stop.

Snowflake reference: https://docs.snowflake.com/en/sql-reference/functions/query_history (columns,
RESULT_LIMIT) and https://docs.snowflake.com/en/sql-reference/functions/system_cancel_query.

The server runs in this process (uvicorn on a thread, 127.0.0.1, a free port), on a fresh in-memory
fakesnow instance: one stand-in at a time per process. ``start``/``stop``/``free_port`` are the
subprocess helper the example uses (plain fakesnow, no query history), re-exported for old callers.
"""

from __future__ import annotations

import gzip
import json
import re
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone

from examples.local.fakesnow_process import free_port, start, stop

__all__ = ["QueryRecord", "SnowflakeStandIn", "free_port", "start", "stop"]

LOGIN = "/session/v1/login-request"
QUERY = "/queries/v1/query-request"
HISTORY_TABLE = "_fs_global.tower_standin.query_history"

_HISTORY_CALL = re.compile(
    r"TABLE\s*\(\s*(?:\w+\s*\.\s*)?INFORMATION_SCHEMA\s*\.\s*QUERY_HISTORY_BY_USER\s*\((?P<args>[^()]*)\)\s*\)",
    re.IGNORECASE,
)
_RESULT_LIMIT = re.compile(r"RESULT_LIMIT\s*=>\s*(\d+)", re.IGNORECASE)
_CANCEL = re.compile(r"^\s*SELECT\s+SYSTEM\$CANCEL_QUERY\s*\(\s*(?P<arg>\?|'[^']*')\s*\)\s*;?\s*$", re.IGNORECASE)
_SET_TAG = re.compile(r"^\s*ALTER\s+SESSION\s+SET\s+QUERY_TAG\s*=\s*'(?P<tag>(?:[^']|'')*)'\s*;?\s*$", re.IGNORECASE)
_UNSET_TAG = re.compile(r"^\s*ALTER\s+SESSION\s+UNSET\s+QUERY_TAG\s*;?\s*$", re.IGNORECASE)


@dataclass(frozen=True)
class QueryRecord:
    """One row of the stand-in's query history."""

    query_id: str
    query_text: str
    query_tag: str
    user_name: str
    database_name: str | None
    schema_name: str | None
    start_time: datetime


@dataclass
class _Session:
    user: str
    database: str | None
    schema: str | None
    query_tag: str = ""


@dataclass
class SnowflakeStandIn:
    """A running stand-in: ``settings`` for the adapter, ``history`` and ``cancelled`` for asserts."""

    history: list[QueryRecord] = field(default_factory=list)
    cancelled: list[str] = field(default_factory=list)
    port: int = 0

    def __post_init__(self):
        self._sessions: dict[str, _Session] = {}
        self._lock = threading.Lock()
        self._server = None
        self._thread: threading.Thread | None = None

    # -- lifecycle ---------------------------------------------------------------------------

    def __enter__(self) -> SnowflakeStandIn:
        import fakesnow.server
        import uvicorn
        from fakesnow.instance import FakeSnow

        fakesnow.server.shared_fs = FakeSnow()  # fresh databases, so no state leaks between stand-ins
        fakesnow.server.sessions.clear()
        self._duck = fakesnow.server.shared_fs.duck_conn
        self._duck.execute("CREATE SCHEMA IF NOT EXISTS _fs_global.tower_standin")
        self._duck.execute(
            f"CREATE OR REPLACE TABLE {HISTORY_TABLE} (query_id VARCHAR, query_text VARCHAR, query_tag VARCHAR,"
            " user_name VARCHAR, database_name VARCHAR, schema_name VARCHAR, execution_status VARCHAR,"
            " start_time TIMESTAMP, seq BIGINT)"
        )
        self.port = free_port()
        config = uvicorn.Config(self._asgi(fakesnow.server.app), host="127.0.0.1", port=self.port,
                                log_level="warning", lifespan="off")
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, name="snowflake stand-in", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 15
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"the Snowflake stand-in did not start on port {self.port}")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc_info) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=10)

    def settings(self, **overrides) -> dict:
        """Tower platform settings for this stand-in (user ``tower``, database refinery.sales)."""
        return {"account": "fakesnow", "user": "tower", "password": "not-a-real-secret", "host": "127.0.0.1",
                "port": self.port, "protocol": "http", "database": "refinery", "schema": "sales", **overrides}

    def runs_of(self, text: str) -> list[QueryRecord]:
        """The recorded queries whose text is exactly ``text`` (the statement as the client sent it)."""
        with self._lock:
            return [record for record in self.history if record.query_text == text]

    # -- the ASGI layer in front of fakesnow --------------------------------------------------

    def _asgi(self, app):
        async def standin(scope, receive, send):
            if scope["type"] != "http" or scope["method"] != "POST" or scope["path"] not in (LOGIN, QUERY):
                return await app(scope, receive, send)
            body = b""
            while True:
                message = await receive()
                body += message.get("body", b"")
                if not message.get("more_body"):
                    break
            headers = [(k, v) for k, v in scope["headers"] if k not in (b"content-encoding", b"content-length")]
            if dict(scope["headers"]).get(b"content-encoding") == b"gzip":
                body = gzip.decompress(body)
            request = json.loads(body)
            token = _token(scope)
            if scope["path"] == QUERY:
                early, request, record = self._before_query(token, request)
                if early is not None:
                    return await _send_json(send, early)
            body = json.dumps(request).encode()
            inner_scope = {**scope, "headers": [*headers, (b"content-length", str(len(body)).encode())]}
            status, response_headers, response = await _call(app, inner_scope, body)
            if status == 200:
                reply = json.loads(response)
                if scope["path"] == LOGIN:
                    self._after_login(request, reply)
                else:
                    self._after_query(token, record, reply)
            await send({"type": "http.response.start", "status": status, "headers": response_headers})
            await send({"type": "http.response.body", "body": response})

        return standin

    def _after_login(self, request: dict, reply: dict) -> None:
        if not reply.get("success"):
            return
        data, info = request["data"], reply["data"].get("sessionInfo") or {}
        tag = str((data.get("SESSION_PARAMETERS") or {}).get("QUERY_TAG") or "")
        with self._lock:
            self._sessions[reply["data"]["token"]] = _Session(
                user=data.get("LOGIN_NAME", ""), database=info.get("databaseName"), schema=info.get("schemaName"),
                query_tag=tag)

    def _before_query(self, token: str, request: dict) -> tuple[dict | None, dict, dict | None]:
        """(a reply that ends the request here, the request to pass on, what to record once it ran)."""
        with self._lock:
            session = self._sessions.get(token)
        text = request.get("sqlText", "")
        if session is None or request.get("describeOnly"):
            return None, request, None
        record = {"text": text, "session": session}
        if cancel := _CANCEL.match(text):
            arg = cancel["arg"]
            query_id = (request.get("bindings") or {}).get("1", {}).get("value") if arg == "?" else arg[1:-1]
            record["cancel"] = query_id
            # Answered by fakesnow as a plain SELECT of the reply text, with the caller's bind kept.
            request = {**request, "sqlText": "SELECT 'query [' || ? || '] terminated.'" if arg == "?"
                       else f"SELECT 'query [{query_id}] terminated.'"}
        elif _HISTORY_CALL.search(text):
            if not session.database:
                return _error("090105", "22000", "Cannot perform SELECT. This session does not have a current "
                              "database. Call 'USE DATABASE', or use a qualified name."), request, None
            request = {**request, "sqlText": _HISTORY_CALL.sub(lambda m: self._history_source(session, m), text)}
        elif tag := _SET_TAG.match(text):
            record["tag"] = tag["tag"].replace("''", "'")
        elif _UNSET_TAG.match(text):
            record["tag"] = ""
        return None, request, record

    def _history_source(self, session: _Session, call: re.Match) -> str:
        limit = _RESULT_LIMIT.search(call["args"])
        user = session.user.replace("\\", "\\\\").replace("'", "''")
        return (f"(SELECT query_id, query_text, query_tag, user_name, database_name, schema_name, execution_status,"
                f" start_time FROM {HISTORY_TABLE} WHERE user_name = '{user}' ORDER BY seq DESC"
                f" LIMIT {int(limit[1]) if limit else 100})")

    def _after_query(self, token: str, record: dict | None, reply: dict) -> None:
        if record is None or not reply.get("success"):
            return
        session: _Session = record["session"]
        query_id = (reply.get("data") or {}).get("queryId")
        with self._lock:
            if not query_id or any(r.query_id == query_id for r in self.history):
                query_id = str(uuid.uuid4())  # fakesnow reuses the scanned query's id for RESULT_SCAN
            if "cancel" in record:
                self.cancelled.append(record["cancel"])
            entry = QueryRecord(query_id=query_id, query_text=record["text"], query_tag=session.query_tag,
                                user_name=session.user, database_name=session.database,
                                schema_name=session.schema, start_time=datetime.now(timezone.utc))
            self.history.append(entry)
            self._duck.cursor().execute(
                f"INSERT INTO {HISTORY_TABLE} VALUES (?, ?, ?, ?, ?, ?, 'SUCCESS', ?, ?)",
                [entry.query_id, entry.query_text, entry.query_tag, entry.user_name, entry.database_name,
                 entry.schema_name, entry.start_time.replace(tzinfo=None), len(self.history)],
            )
            if "tag" in record:  # the new tag applies from the next statement on
                session.query_tag = record["tag"]


def _token(scope) -> str:
    auth = dict(scope["headers"]).get(b"authorization", b"").decode()
    match = re.search(r'Token="([^"]*)"', auth)
    return match[1] if match else ""


def _error(code: str, sqlstate: str, message: str) -> dict:
    return {"data": {"errorCode": code, "sqlState": sqlstate}, "code": code, "message": message, "success": False}


async def _send_json(send, payload: dict) -> None:
    body = json.dumps(payload).encode()
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


async def _call(app, scope, body: bytes) -> tuple[int, list, bytes]:
    """Run the wrapped app on ``body``; its reply as (status, headers, body)."""
    sent = False
    reply: dict = {"status": 500, "headers": [], "body": b""}

    async def receive():
        nonlocal sent
        if sent:
            return {"type": "http.disconnect"}
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message):
        if message["type"] == "http.response.start":
            reply["status"], reply["headers"] = message["status"], message.get("headers", [])
        elif message["type"] == "http.response.body":
            reply["body"] += message.get("body", b"")

    await app(scope, receive, send)
    return reply["status"], reply["headers"], reply["body"]
