"""Every error Tower raises on purpose, in one tree, so callers branch on types, not message text.

    TowerError                      base: a message meant for a person
    ├── CatalogError                the catalog is invalid: carries every Problem found
    ├── ConfigError                 a setting is missing or wrong when used (e.g. an unset ${VAR})
    ├── UsageError                  bad command-line or API input (unknown pipeline, bad --param)
    ├── RunExists                   a run id was used already (the runs index): nothing started
    ├── PlatformError               a remote platform call failed; `retryable` says what to do
    │   ├── RetryableError          throttling, 5xx, network: worth another attempt
    │   └── NonRetryableError       auth, not found, SQL error, job FAILED: retrying won't help
    └── EngineError                 the local Durable host refused or failed something
        ├── InstanceNotFound        no orchestration instance with that id
        ├── InstanceExists          an unfinished instance already has that id
        ├── InstanceGone            the instance has finished: it takes no more events (HTTP 410)
        └── NonDeterminismError     replayed actions no longer match the recorded history
"""

from __future__ import annotations

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

    def to_payload(self) -> dict:
        """JSON form carried across the activity boundary, where the SDK keeps only the message."""
        return {"error": str(self), "retryable": self.retryable, "platform": self.platform}


class RetryableError(PlatformError):
    retryable = True


class NonRetryableError(PlatformError):
    retryable = False


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


class RunNotInLedger(EngineError):
    """The run ledger has no such run (never opened there, or another ledger's)."""
