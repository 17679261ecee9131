"""The catalog's public model: frozen, validated values the rest of Tower reads.

The loader (``tower.catalog.loader``) builds these from YAML after validation succeeded, so every
field here is already the right type: durations are seconds (float), cron strings were parsed once.
Platform settings and service specs keep ``${VAR}`` references unresolved: the activities read
them when a service runs (``tower.catalog.env.resolve``), so a missing variable is an error at use,
not at load.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

PLATFORM_TYPES = ("databricks", "snowflake", "http", "command", "sim")
CATCHUP_POLICIES = ("latest", "all", "none")
DEFAULT_EXPECTED_DURATION = 60.0  # seconds, when neither run history nor the catalog says


@dataclass(frozen=True)
class Location:
    """Where a value was written: file, 1-based line and column."""

    path: str
    line: int
    column: int

    def __str__(self) -> str:
        return f"{self.path}:{self.line}:{self.column}"


@dataclass(frozen=True)
class RetryPolicy:
    """Retries after the first attempt (``retries: 2`` means up to 3 attempts in all).

    The wait before retry k (1-based) is ``min(backoff * 2**(k-1), max_backoff)`` seconds.
    """

    retries: int = 0
    backoff: float = 30.0
    max_backoff: float = 600.0

    @property
    def attempts(self) -> int:
        return self.retries + 1

    def delay(self, retry: int) -> float:
        return min(self.backoff * (2 ** (retry - 1)), self.max_backoff)


@dataclass(frozen=True)
class Platform:
    name: str
    type: str
    max_concurrency: int | None = None
    settings: dict[str, Any] = field(default_factory=dict)  # connection fields, ${VAR} unresolved
    location: Location | None = None


@dataclass(frozen=True)
class Service:
    name: str
    platform: str
    depends_on: tuple[str, ...] = ()
    timeout: float | None = None  # seconds; None = no deadline
    retry: RetryPolicy = RetryPolicy()
    expected_duration: float | None = None  # seconds
    tags: tuple[str, ...] = ()
    params: dict[str, Any] = field(default_factory=dict)
    spec: dict[str, Any] = field(default_factory=dict)  # the platform's own fields (job_id, sql, run, ...)
    location: Location | None = None

    @property
    def expected(self) -> float:
        """Seconds a run is expected to take by the catalog: expected_duration, else the default."""
        return float(self.expected_duration if self.expected_duration is not None else DEFAULT_EXPECTED_DURATION)


@dataclass(frozen=True)
class Schedule:
    cron: str  # 5 fields: minute hour day-of-month month day-of-week
    timezone: str = "UTC"  # IANA name
    catchup: str = "latest"  # latest | all | none


@dataclass(frozen=True)
class Deadline:
    """When a run's data must be ready: the first `time` (HH:MM, wall clock in `timezone`) after the
    run was started (tower.deadlines)."""

    time: str
    timezone: str = "UTC"


@dataclass(frozen=True)
class Pipeline:
    name: str
    selectors: tuple[str, ...] = ("*",)
    schedule: Schedule | None = None
    on_event: tuple[str, ...] = ()
    params: dict[str, Any] = field(default_factory=dict)
    priority: int = 0  # shared platform slots go to higher first (tower.runs.slots)
    location: Location | None = None
    deadline: Deadline | None = None


@dataclass(frozen=True)
class Catalog:
    path: str
    platforms: dict[str, Platform]
    services: dict[str, Service]  # in file order
    pipelines: dict[str, Pipeline]

    def deps(self) -> dict[str, tuple[str, ...]]:
        """The whole dependency graph: service -> the services it depends on."""
        return {name: svc.depends_on for name, svc in self.services.items()}
