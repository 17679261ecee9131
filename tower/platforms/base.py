"""The adapter interface: every platform is three methods with one shape.

    submit(Submission) -> Handle     start the remote work (idempotent per Submission.idempotency_key)
    poll(Handle)       -> Status     where is it now (never blocks for long)
    cancel(Handle)     -> None       stop it on the remote platform (best effort, idempotent)

Activities call these; orchestrators only ever see the JSON forms (``to_json``/``from_json``).
Failures raise ``tower.errors.RetryableError`` or ``NonRetryableError`` with the platform's message.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

from tower.states import TERMINAL_STATES, RemoteState


@dataclass(frozen=True)
class Submission:
    """One attempt of one service in one run, with everything the platform needs."""

    run_id: str
    service: str
    attempt: int
    spec: dict[str, Any]  # the service's platform fields (job_id, sql, run, path, duration, ...)
    params: dict[str, Any] = field(default_factory=dict)  # pipeline params < service params < run params
    callback: str | None = None  # a URL the service may call when the work ends (tower.push; HTTP services)

    @property
    def idempotency_key(self) -> str:
        """Same run, service and attempt -> same key -> never a second remote run."""
        return f"{self.run_id}/{self.service}/{self.attempt}"

    def to_json(self) -> dict:
        """Without a callback, no `callback` key: the shape submit requests have always had."""
        data = asdict(self)
        if data["callback"] is None:
            del data["callback"]
        return data

    @classmethod
    def from_json(cls, data: dict) -> Submission:
        return cls(**data)


@dataclass(frozen=True)
class Handle:
    """What a submit returns: enough to poll and cancel the remote work later, from any process."""

    remote_id: str
    url: str | None = None  # a page a person can open (Databricks run page, query history, ...)
    data: dict[str, Any] = field(default_factory=dict)  # adapter-specific (status URL, started_at, ...)

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict) -> Handle:
        return cls(**data)


@dataclass(frozen=True)
class Status:
    """Where the remote work is now."""

    state: RemoteState  # a plain str once read back from JSON (equal to the member)
    message: str = ""  # the platform's own words (state message, SQL error, HTTP body excerpt)
    retryable: bool = False  # only meaningful for RemoteState.FAILED: is another attempt worth it?
    output: str = ""  # a short tail of the work's output, kept in status (a few hundred chars)
    url: str | None = None
    poll_after: float | None = None  # seconds until a poll is worth it, when the platform knows

    @property
    def done(self) -> bool:
        return self.state in TERMINAL_STATES

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict) -> Status:
        return cls(**data)


class Adapter(Protocol):
    """One platform. Constructed with the platform's resolved settings (``${VAR}`` already read)."""

    def submit(self, submission: Submission) -> Handle: ...

    def poll(self, handle: Handle) -> Status: ...

    def cancel(self, handle: Handle) -> None: ...


@dataclass
class FunctionAdapter:
    """An adapter made of three plain functions: the test double for orchestration tests."""

    submit: Callable[[Submission], Handle]
    poll: Callable[[Handle], Status]
    cancel: Callable[[Handle], None] = lambda handle: None


OUTPUT_TAIL_CHARS = 500


def param_text(value: Any) -> str:
    """A run param as the text a platform takes: strings as they are, anything else as JSON
    (``true``, ``3``, ``{"a": 1}``, ``null``), the same on every platform."""
    return value if isinstance(value, str) else json.dumps(value)


def tail(text: str, limit: int = OUTPUT_TAIL_CHARS) -> str:
    """The last `limit` characters of some output, for status payloads that must stay small."""
    return text if len(text) <= limit else "…" + text[-(limit - 1):]
