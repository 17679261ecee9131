"""What the Durable client's bare exceptions mean, as Tower errors.

The Python SDK (`azure-functions-durable`) raises a plain `Exception` for every failed management
call, carrying either a sentence of its own or the extension's error body. Callers must branch on
what happened, not on a word in that text ("already" also appears in unrelated failures), so this
module recognises the exact texts and nothing else:

- start on an id that is Running/Pending/Suspended/ContinuedAsNew: the extension answers 500 with
  `OrchestrationAlreadyExistsException` "An Orchestration instance with the status S already
  exists." (DurableTask.AzureStorage `CreateTaskOrchestrationAsync`); the gRPC path (Durable Task
  Scheduler) says "An Orchestration instance with the ID X already exists." (`LocalGrpcListener`).
  SDK `start_new` raises `Exception(<the body dict>)`.
- raise_event on an unknown id (404): "No instance with ID X found."; on a finished one (410):
  "Instance with ID X is gone: either completed or failed" (SDK `raise_event`).
- terminate on an unknown id (404): "No instance with ID 'X' found." (SDK `terminate`).
- get_status on an unknown id does not raise: the SDK turns the 404 into a status whose fields are
  all None (`instance_exists` reads that).

Callers wrap a client call in `translated()` and catch the Tower types; nothing else in Tower
reads the SDK's texts. Library code: it imports no Functions SDK, it only reads the exception.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager

from tower.errors import InstanceExists, InstanceGone, InstanceNotFound, TowerError

_EXISTS = re.compile(r"An Orchestration instance with the (?:status \w+|ID .+) already exists\.")
_EXISTS_TYPE = "OrchestrationAlreadyExistsException"
_NOT_FOUND = re.compile(r"No instance with ID '?(?P<id>.+?)'? found\.")
_GONE = re.compile(r"Instance with ID (?P<id>.+) is gone: either completed or failed")


def translate(exc: BaseException) -> BaseException:
    """The Tower error `exc` (raised by a DurableOrchestrationClient call) stands for, chained to it;
    `exc` itself when it is none of the known failures (a transport error, a 5xx, anything else)."""
    if isinstance(exc, TowerError) or type(exc) is not Exception or len(exc.args) != 1:
        return exc
    detail = exc.args[0]
    if isinstance(detail, dict):                    # the extension's error body, passed on by start_new
        message = str(detail.get("ExceptionMessage") or "")
        if _EXISTS.fullmatch(message) and str(detail.get("ExceptionType", _EXISTS_TYPE)).endswith(_EXISTS_TYPE):
            return _chained(InstanceExists(message), exc)
        return exc
    if not isinstance(detail, str):
        return exc
    if _EXISTS.fullmatch(detail):
        return _chained(InstanceExists(detail), exc)
    if _NOT_FOUND.fullmatch(detail):
        return _chained(InstanceNotFound(detail), exc)
    if _GONE.fullmatch(detail):
        return _chained(InstanceGone(detail), exc)
    return exc


def never_sent(exc: BaseException) -> bool:
    """Did a client call fail before its request left, so Durable never saw it? Either no connection
    could be made, or the SDK's one shared session was closed under the call as it connected: the
    SDK closes it on any failed call (`http_utils._handle_request_error`), so one call's lost reply
    fails the others in flight on that worker with "Connector is closed" (aiohttp's connector)."""
    import aiohttp

    if isinstance(exc, aiohttp.ClientConnectorError):
        return True
    return isinstance(exc, aiohttp.ClientConnectionError) and str(exc).rstrip(".") == "Connector is closed"


async def instance_exists(client, instance_id: str) -> bool:
    """Is there an instance with this id, whatever its state? (A failed lookup raises.)"""
    status = await client.get_status(instance_id)
    return bool(status and status.runtime_status is not None)


@contextmanager
def translated() -> Iterator[None]:
    """Around a DurableOrchestrationClient call (awaited inside): its known failures raised as
    InstanceExists / InstanceNotFound / InstanceGone (chained to the SDK's exception), anything else
    as it was."""
    try:
        yield
    except Exception as exc:
        error = translate(exc)
        if error is exc:
            raise
        raise error from exc


def _chained(error: TowerError, cause: BaseException) -> TowerError:
    error.__cause__ = cause
    return error
