"""The body of `POST /api/runs/{pipeline}`, read as strictly as the CLI reads its options.

A misspelled key (``param`` for ``params``) must not start the whole pipeline with its defaults:
an unknown field is refused with "did you mean". Unknown params are refused later, by the plan
(tower.runs.plan.build_plan), with the same message the CLI's ``--param`` gets; a ``run_id`` by
tower.runs.plan.given_run_id.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tower.catalog.checks import did_you_mean
from tower.errors import UsageError

START_FIELDS = ("params", "services", "run_id")
EXAMPLE = '{"params": {"day": "2026-11-24"}, "services": ["+publish_report"]}'


@dataclass(frozen=True)
class StartRequest:
    params: dict[str, Any] | None
    services: list[str] | None


def parse_start_body(body: Any) -> StartRequest:
    """The request, or UsageError saying what is wrong with the body and what to write."""
    if body is None:
        body = {}
    if not isinstance(body, dict):
        raise UsageError(f"expected a JSON object, e.g. {EXAMPLE}")
    for key in body:
        if key not in START_FIELDS:
            raise UsageError(f"unknown field {key!r} ({did_you_mean(str(key), START_FIELDS, 'known fields')})")
    params, services = body.get("params"), body.get("services")
    if params is not None and not isinstance(params, dict):
        raise UsageError('field \'params\' must be an object of name: value, e.g. {"params": {"day": "2026-11-24"}}')
    if services is not None and not (isinstance(services, list) and all(isinstance(s, str) for s in services)):
        raise UsageError('field \'services\' must be a list of selectors, e.g. {"services": ["+publish_report"]}')
    return StartRequest(params or None, services or None)
