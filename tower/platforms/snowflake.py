"""Snowflake SQL through snowflake-connector-python: execute_async → get_query_status → cancel.

Platform settings: ``account``, ``user``, ``password`` or ``private_key`` (PEM text, or a path to a
PEM file; ``private_key_passphrase`` if encrypted), optional ``warehouse``, ``database``, ``schema``,
``role``, ``host``, ``port``, ``protocol``, ``login_timeout`` (s, default 30), ``network_timeout``
(s, default 60).

Service fields: ``sql`` (one statement) and optional ``bind`` (the run params, by name, that fill the
statement's ``?`` placeholders in order). Values are bound by the server (qmark style), never
formatted into the SQL text.

Sessions are short: one connection per call, closed at once. A query started by ``execute_async``
keeps running after its session closes (Snowflake's ``ABORT_DETACHED_QUERY`` defaults to false).

Idempotency: the session's ``QUERY_TAG`` is the submission key. Before executing, submit looks in
``INFORMATION_SCHEMA.QUERY_HISTORY_BY_USER`` (the last 7 days) for this statement with this tag and,
if found, returns that query instead of starting another. Guaranteed only where the history can be
read (a database in the session, a user allowed to see its own queries; history is near real time but
not instantaneous): there, a resubmit after a crash re-attaches. Where the lookup fails (no database,
no privilege, or a stand-in such as fakesnow that has no query history) submit logs a warning and
executes: at-least-once, so statements should be idempotent (MERGE, INSERT OVERWRITE, CREATE OR
REPLACE) as good Snowflake pipelines are anyway.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Callable
from contextlib import contextmanager
from typing import Any

from tower.errors import ConfigError, NonRetryableError, RetryableError
from tower.platforms.base import Handle, Status, Submission, tail
from tower.states import RemoteState

PLATFORM = "snowflake"
log = logging.getLogger(__name__)

PREVIEW_ROWS = 5

FIND_TAGGED_QUERY = (
    "SELECT query_id FROM TABLE(INFORMATION_SCHEMA.QUERY_HISTORY_BY_USER(RESULT_LIMIT => 1000)) "
    "WHERE query_tag = ? AND query_text = ? ORDER BY start_time DESC LIMIT 1"
)
CANCEL_QUERY = "SELECT SYSTEM$CANCEL_QUERY(?)"

# QueryStatus names (snowflake.connector.constants.QueryStatus) by what they mean for Tower.
_STILL_RUNNING = {"RUNNING", "QUEUED", "RESUMING_WAREHOUSE", "QUEUED_REPARING_WAREHOUSE", "BLOCKED",
                  "RESTARTED", "NO_DATA"}
_CANCELLED = {"ABORTED", "ABORTING"}
_PLATFORM_FAULTS = {"FAILED_WITH_INCIDENT", "DISCONNECTED"}  # not the statement's fault: retry helps
# A failed statement is retried under the service's policy unless the statement itself is wrong or
# not allowed (Snowflake's texts for compilation errors, missing objects and privileges): then never.
_NEVER_RETRIED = re.compile(r"SQL compilation error|does not exist or not authorized|Insufficient privileges|"
                            r"not authorized|syntax error", re.IGNORECASE)


def status_from_query(status_name: str, message: str = "", output: str = "") -> Status:
    """Map a Snowflake QueryStatus name onto Tower's states."""
    if status_name in _STILL_RUNNING:
        return Status(RemoteState.RUNNING, message=status_name.lower().replace("_", " "))
    if status_name == "SUCCESS":
        return Status(RemoteState.SUCCEEDED, output=output)
    if status_name in _CANCELLED:
        return Status(RemoteState.CANCELLED, message=message or "query cancelled")
    return Status(
        RemoteState.FAILED, message=message or f"query ended {status_name}",
        retryable=status_name in _PLATFORM_FAULTS or (status_name == "FAILED_WITH_ERROR"
                                                      and not _NEVER_RETRIED.search(message)),
    )


class SnowflakeAdapter:
    """One Snowflake account (or a fakesnow server). `connect` is injectable for boundary tests."""

    def __init__(self, settings: dict[str, Any], *, connect: Callable[..., Any] | None = None):
        # Settings as adapter_for checked them: account, user and a credential set, numbers numeric.
        self._settings = dict(settings)
        self._connect_fn = connect
        self._key: Any = None  # the private key object, read and parsed on first use, then kept
        self._history_unreadable = False  # warned that the query history cannot be read (once)

    # -- the three operations -------------------------------------------------------------

    def submit(self, submission: Submission) -> Handle:
        sql = _statement(submission)
        binds = _binds(submission)
        key = submission.idempotency_key
        with self._session(f"submit of service {submission.service!r}", query_tag=key) as conn:
            existing = self._find_tagged(conn, key, sql)
            if existing:
                log.info("service %s: re-attached to Snowflake query %s", submission.service, existing)
                return Handle(remote_id=existing, data={"reattached": True})
            cursor = conn.cursor()
            cursor.execute_async(sql, binds or None)
            query_id = cursor.sfqid
        log.info("service %s: Snowflake query %s", submission.service, query_id)
        return Handle(remote_id=query_id)

    def poll(self, handle: Handle) -> Status:
        query_id = handle.remote_id
        with self._session(f"status of query {query_id}") as conn:
            name = conn.get_query_status(query_id).name
            if name == "SUCCESS":
                return status_from_query(name, output=_preview(conn, query_id))
            if name in _STILL_RUNNING:
                return status_from_query(name)
            return status_from_query(name, message=_error_message(conn, query_id))

    def cancel(self, handle: Handle) -> None:
        with self._session(f"cancel of query {handle.remote_id}") as conn:
            conn.cursor().execute(CANCEL_QUERY, [handle.remote_id])

    # -- helpers ------------------------------------------------------------------------------

    def _find_tagged(self, conn: Any, key: str, sql: str) -> str | None:
        """The query already started for this key, when the account lets us read query history."""
        from snowflake.connector.errors import ProgrammingError

        try:
            cursor = conn.cursor()
            cursor.execute(FIND_TAGGED_QUERY, [key, sql])
            row = cursor.fetchone()
        except ProgrammingError as exc:
            level = logging.DEBUG if self._history_unreadable else logging.WARNING
            self._history_unreadable = True  # warned once per adapter: one per account in a process
            log.log(level, "Snowflake query history not readable (%s): submitting without the re-attach check",
                    str(exc.msg or exc).splitlines()[0])
            return None
        return row[0] if row else None

    @contextmanager
    def _session(self, action: str, *, query_tag: str | None = None):
        """A short session; Snowflake's exceptions leave as Tower's, with Snowflake's message kept."""
        from snowflake.connector import errors

        conn = None
        try:
            conn = self._open(query_tag)
            yield conn
        except errors.Error as exc:
            retryable = isinstance(exc, (errors.OperationalError, errors.InterfaceError, errors.InternalError,
                                         errors.ServiceUnavailableError, errors.InternalServerError,
                                         errors.GatewayTimeoutError, errors.BadGatewayError,
                                         errors.OtherHTTPRetryableError, errors.RequestTimeoutError))
            error = RetryableError if retryable else NonRetryableError
            where = "" if conn is not None else f" (connecting to {self._endpoint()})"
            raise error(f"Snowflake {action} failed{where}: {exc.msg or exc}", platform=PLATFORM) from None
        finally:
            if conn is not None:
                try:
                    conn.close()
                except Exception as exc:  # a failed close must not hide the real outcome
                    log.debug("closing the Snowflake session failed: %s", exc)

    def _endpoint(self) -> str:
        """Where a connection goes: host and port as set, else the account's own host (port 443)."""
        s = self._settings
        host = s.get("host") or f"{s['account']}.snowflakecomputing.com"
        port = s.get("port") or (80 if s.get("protocol") == "http" else 443)
        return f"{s.get('protocol') or 'https'}://{host}:{port}, account {s['account']}"

    def _open(self, query_tag: str | None) -> Any:
        s = self._settings
        kwargs: dict[str, Any] = {
            "account": s["account"],
            "user": s["user"],
            "paramstyle": "qmark",  # server-side binding
            "login_timeout": int(s.get("login_timeout", 30)),
            "network_timeout": int(s.get("network_timeout", 60)),
            "client_session_keep_alive": False,
            "session_parameters": {"CLIENT_OUT_OF_BAND_TELEMETRY_ENABLED": False},
        }
        if query_tag:
            kwargs["session_parameters"]["QUERY_TAG"] = query_tag
        for name in ("warehouse", "database", "schema", "role", "host", "port", "protocol"):
            if s.get(name) not in (None, ""):
                kwargs[name] = s[name]
        if s.get("private_key"):
            if self._key is None:
                self._key = _private_key(s["private_key"], s.get("private_key_passphrase"))
            kwargs["private_key"] = self._key
        else:
            kwargs["password"] = s["password"]
        if self._connect_fn is not None:
            return self._connect_fn(**kwargs)
        import snowflake.connector

        return snowflake.connector.connect(**kwargs)


def _statement(submission: Submission) -> str:
    sql = submission.spec.get("sql")
    if not isinstance(sql, str) or not sql.strip():
        raise NonRetryableError(
            f"service {submission.service!r}: field 'sql' must be one SQL statement", platform=PLATFORM
        )
    return sql.strip().rstrip(";").strip()


def _binds(submission: Submission) -> list[Any]:
    names = submission.spec.get("bind") or []
    if isinstance(names, str):
        names = [names]
    missing = [name for name in names if name not in submission.params]
    if missing:
        raise NonRetryableError(
            f"service {submission.service!r}: field 'bind' names param(s) {', '.join(map(repr, missing))} "
            f"that the run does not have (pass them with --param or set them in the catalog's params)",
            platform=PLATFORM,
        )
    return [submission.params[name] for name in names]


def _private_key(value: str, passphrase: str | None) -> Any:
    """PEM text, or a path to a PEM file, → the key object the connector takes."""
    from cryptography.hazmat.primitives import serialization

    text = value
    if "-----BEGIN" not in value:
        if not os.path.isfile(value):
            raise ConfigError("snowflake platform: 'private_key' is neither PEM text nor a readable file path")
        with open(value, encoding="ascii") as handle:
            text = handle.read()
    try:
        return serialization.load_pem_private_key(
            text.encode("ascii"), password=passphrase.encode() if passphrase else None
        )
    except (ValueError, TypeError) as exc:
        # The library's message names the problem (bad decrypt, wrong format), never the key itself.
        raise ConfigError(f"snowflake platform: 'private_key' could not be loaded: {exc}") from None


def _preview(conn: Any, query_id: str) -> str:
    """A few rows of the result, for the service's status: what a person checks first."""
    try:
        cursor = conn.cursor()
        cursor.get_results_from_sfqid(query_id)
        rows = cursor.fetchmany(PREVIEW_ROWS)
        columns = [column.name for column in cursor.description or []]
    except Exception as exc:  # results expire or may be unreadable: the query still succeeded
        log.debug("no result preview for %s: %s", query_id, exc)
        return ""
    lines = [", ".join(columns)] if columns else []
    lines += [", ".join(map(str, row)) for row in rows]
    count = cursor.rowcount
    if count is not None and count >= 0:
        lines.append(f"({count} row{'s' if count != 1 else ''})")
    return tail("\n".join(lines))


def _error_message(conn: Any, query_id: str) -> str:
    from snowflake.connector.errors import Error

    try:
        conn.get_query_status_throw_if_error(query_id)
    except Error as exc:
        return str(exc.msg or exc)
    return ""
