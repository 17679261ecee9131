"""Every error Tower raises on purpose, in one tree, so callers branch on types, not message text.

    TowerError                      base: a message meant for a person
    ├── CatalogError                the catalog is invalid: carries every Problem found
    ├── ConfigError                 a setting is missing or wrong when used (e.g. an unset ${VAR})
    ├── UsageError                  bad command-line or API input (unknown pipeline, bad --param)
    ├── RunExists                   a run id was used already (the runs index): nothing started
    ├── PlatformError               a remote platform call failed; `retryable` says what to do
    │   ├── RetryableError          throttling, 5xx, network: worth another attempt
    │   └── NonRetryableError       auth, not found, SQL error, job FAILED: retrying won't help
    ├── ActivityFailure             a PlatformError on its way out of an activity (see below)
    ├── LedgerError                 a run-state store (tower.runs: ledger, slots, index) cannot do it
    │   ├── RunNotInLedger          no such run there (never stored there, or another ledger's)
    │   ├── ServiceNotInLedger      the run has no such service, or its row is missing
    │   ├── LedgerConflict          a conditional write lost every try (a run, a slot pool, the index)
    │   ├── RecordTooLarge          a record over what one store entity holds (Table Storage: 1 MiB)
    │   └── InconsistentPlan        a stored run in which no service can start
    └── EngineError                 the local Durable host refused or failed something
        ├── InstanceNotFound        no orchestration instance with that id
        ├── InstanceExists          an unfinished instance already has that id
        ├── InstanceGone            the instance has finished: it takes no more events (HTTP 410)
        └── NonDeterminismError     replayed actions no longer match the recorded history

Across the activity boundary the Durable SDK hands an orchestrator nothing of a failed activity but
its message (the Python worker's exception text, wrapped by the host). So a PlatformError crosses
as text: the activity raises `ActivityFailure(error)`, whose message is
`error.to_activity_message()`, and the orchestrator reads it back with
`PlatformError.from_activity_failure(task.result or exc)`, the same type with the same fields.
Those are the only writer and the only reader of that text. Its form (``tower-failure:`` and
compact JSON {error, retryable, platform}) is kept in orchestration histories, so it never changes.
Failures of the Durable client are translated once, in `tower.durable_errors`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass


class TowerError(Exception):
    """Base of every deliberate Tower error; `str()` is the message for a person."""


@dataclass(frozen=True)
class Problem:
    """One validation finding: where it is, what is wrong, and what to do about it."""

    path: str
    line: int
    column: int
    where: str
    what: str
    hint: str = ""

    def __str__(self) -> str:
        hint = f" ({self.hint})" if self.hint else ""
        return f"{self.path}:{self.line}:{self.column}: {self.where}: {self.what}{hint}"


class CatalogError(TowerError):
    """The catalog is invalid; `problems` holds every finding, in file order."""

    def __init__(self, problems: list[Problem]):
        self.problems = sorted(problems, key=lambda p: (p.path, p.line, p.column, p.where, p.what))
        super().__init__("\n".join(str(p) for p in self.problems))


class ConfigError(TowerError):
    """A setting is missing or invalid at the moment it is used."""


class UsageError(TowerError):
    """Bad input from the command line or an API request."""


class RunExists(TowerError):
    """A start of a run id the runs index has seen: started nothing. `row` is its index row."""

    def __init__(self, row, message: str | None = None):
        self.row = row
        super().__init__(message or f"run {row.run_id!r} exists already ({row.status}): not started again")


class PlatformError(TowerError):
    """A platform call failed. `retryable` decides whether the orchestration tries again."""

    retryable = False

    def __init__(self, message: str, *, platform: str = ""):
        super().__init__(message)
        self.platform = platform

    @staticmethod
    def of(message: str, *, retryable: bool, platform: str = "") -> PlatformError:
        """The RetryableError or NonRetryableError that `retryable` says."""
        return (RetryableError if retryable else NonRetryableError)(message, platform=platform)

    def to_activity_message(self) -> str:
        """This error as the text an activity fails with (see the module docstring): the mark, then
        compact ASCII JSON, so no host wrapping or encoding can split or garble it."""
        payload = {"error": str(self), "retryable": self.retryable, "platform": self.platform}
        return ACTIVITY_FAILURE_MARK + json.dumps(payload, ensure_ascii=True, separators=(",", ":"))

    @staticmethod
    def from_activity_failure(failure: BaseException | str) -> PlatformError:
        """The PlatformError a failed activity carried (the first mark in the text the orchestrator
        got, wherever the host put it). A failure without one (a bug in an activity, the host giving
        up) is a NonRetryableError with the first line of what the host said: retrying a bug wastes
        the run's time. Pure: orchestrators call it while replaying."""
        text = str(failure)
        start = text.find(ACTIVITY_FAILURE_MARK)
        if start >= 0:
            try:
                payload, _ = json.JSONDecoder().raw_decode(text, start + len(ACTIVITY_FAILURE_MARK))
            except ValueError:
                payload = None
            if isinstance(payload, dict) and "error" in payload:
                return PlatformError.of(str(payload["error"]), retryable=bool(payload.get("retryable")),
                                        platform=str(payload.get("platform") or ""))
        first_line = text.strip().splitlines()[0] if text.strip() else "unknown error"
        return NonRetryableError(first_line[:UNMARKED_FAILURE_CHARS])


class RetryableError(PlatformError):
    retryable = True


class NonRetryableError(PlatformError):
    retryable = False


ACTIVITY_FAILURE_MARK = "tower-failure:"
UNMARKED_FAILURE_CHARS = 500  # of an unmarked failure's first line: a host traceback is not a message


class ActivityFailure(TowerError):
    """What an activity raises for a PlatformError: its message is `error.to_activity_message()`,
    the only part of it the orchestrator gets (module docstring)."""

    def __init__(self, error: PlatformError):
        super().__init__(error.to_activity_message())
        self.error = error


class LedgerError(TowerError):
    """A run-state store (the run ledger, its shared slots, the runs index) cannot do what was
    asked: a run or service it does not hold, a change that lost every race, a record too large."""


class RunNotInLedger(LedgerError):
    """The run ledger has no such run (never opened there, or another ledger's)."""


class ServiceNotInLedger(LedgerError):
    """The run has no such service in the ledger (a name not in its plan, or a row gone missing)."""


class LedgerConflict(LedgerError):
    """A conditional write lost to other writers on every try (a run's version, a slot pool's or
    an index row's etag): the store is too contended, or something rewrites it in a loop."""


class RecordTooLarge(LedgerError):
    """A run's record, input or plan is over what one entity of the store may hold."""


class InconsistentPlan(LedgerError):
    """A stored run in which no service can start and none runs: its plan is not a DAG it can run."""


class EngineError(TowerError):
    """The local Durable host refused a request or could not carry it out."""


class InstanceNotFound(EngineError):
    pass


class InstanceExists(EngineError):
    pass


class InstanceGone(EngineError):
    """The instance finished (Completed, Failed or Terminated) and accepts no more events."""


class NonDeterminismError(EngineError):
    pass
