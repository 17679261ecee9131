"""Which invocation, run and service a log line belongs to, wherever Tower logs it from.

The Python worker ties a log record to its invocation by the id on the current asyncio task, else by
the id in a thread-local it hands every function as ``context.thread_local_storage``
(azure-functions-python-worker, ``dispatcher.py``: ``get_current_invocation_id``,
``ContextEnabledTask``, ``_run_sync_func``). Tower logs from threads the worker never sees (the
platform pool, the ledger read pool, ``asyncio.to_thread``) and from a task the early report
creates from a loop callback (no current task to inherit the id from), so each of those lines would
reach Application Insights with no invocation. Here an activity `begin`s its log origin (a context
variable, so the tasks it creates inherit it); `carried` takes it to a pool thread, setting the
worker's thread-local there for the call; `tag_task` gives a task created outside the invocation's
tasks its id; `RunFields` puts the run and service on every record (the ``extra`` fields ``run_id``
and ``service``, which `tower.telemetry` turns into the custom dimensions ``tower.run_id`` and
``tower.service``).
"""

from __future__ import annotations

import contextvars
import functools
import logging
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any, TypeVar

T = TypeVar("T")
# The log record attributes (`extra` fields) naming the run and service; `tower.telemetry` maps them to
# the custom dimensions tower.run_id and tower.service.
RUN_ID, SERVICE = "run_id", "service"


@dataclass(frozen=True)
class Origin:
    """Where log lines come from: the invocation (its id and the worker's thread-local that carries
    it on threads) and, where known, the run and the service."""

    invocation_id: str | None = None
    thread_local: Any = None
    run_id: str | None = None
    service: str | None = None


_NOWHERE = Origin()
_origin: contextvars.ContextVar[Origin | None] = contextvars.ContextVar("tower_log_origin", default=None)


def current() -> Origin:
    return _origin.get() or _NOWHERE


def begin(context: Any = None, run_id: str | None = None, service: str | None = None) -> Origin:
    """Start logging as this invocation (`context`: a ``func.Context``, or None) of this run and
    service, for the rest of the current task and what it starts. Returns the origin."""
    origin = Origin(getattr(context, "invocation_id", None), getattr(context, "thread_local_storage", None),
                    run_id, service)
    _origin.set(origin)
    return origin


def about(run_id: str | None = None, service: str | None = None) -> Origin:
    """The current origin, now also naming this run and service (for the rest of the current task)."""
    origin = replace(current(), **{k: v for k, v in {"run_id": run_id, "service": service}.items() if v})
    _origin.set(origin)
    return origin


def carried(fn: Callable[..., T]) -> Callable[..., T]:
    """`fn` bound to the log origin current now, to run on another thread: there the worker's
    thread-local gets the invocation id for the call (and is put back after, since pool threads
    serve many invocations)."""
    context = contextvars.copy_context()

    @functools.wraps(fn)
    def run(*args, **kwargs):
        return context.copy().run(_as_invocation, fn, args, kwargs)

    return run


def _as_invocation(fn, args, kwargs):
    origin = current()
    local = origin.thread_local
    if local is None or origin.invocation_id is None:
        return fn(*args, **kwargs)
    before = getattr(local, "invocation_id", None)
    local.invocation_id = origin.invocation_id
    try:
        return fn(*args, **kwargs)
    finally:
        local.invocation_id = before


def tag_task(task: Any) -> Any:
    """Give a task created outside the invocation's own tasks (from a loop callback) the current
    invocation id, the way the worker's task factory tags the tasks an invocation starts."""
    setter = getattr(task, "set_azure_invocation_id", None)
    invocation_id = current().invocation_id
    if setter is not None and invocation_id is not None:
        setter(invocation_id)
    return task


class RunFields(logging.Filter):
    """Puts ``run_id`` and ``service`` of the current origin on each record that does not carry them
    already (a line about another service names its own)."""

    def filter(self, record: logging.LogRecord) -> bool:
        origin = current()
        if getattr(record, RUN_ID, None) is None:
            setattr(record, RUN_ID, origin.run_id)
        if getattr(record, SERVICE, None) is None:
            setattr(record, SERVICE, origin.service)
        return True


def fields(run_id: str | None, service: str | None = None) -> dict:
    """``extra`` for a log call about a given run and service."""
    return {RUN_ID: run_id, SERVICE: service}
