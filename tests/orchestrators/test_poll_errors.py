"""A poll that fails: `service_run` gives up at once on an error a retry cannot fix, and only after
`MAX_POLL_ERRORS` transient ones in a row; on the local engine against a real HTTP service (the
202 pattern, tests/platforms/async_http_service.py) whose status URL answers what each test injects."""

from __future__ import annotations

from datetime import datetime

import pytest

from orchestrators.pipeline import MAX_POLL_ERRORS
from tests.orchestrators.conftest import run_plan
from tests.platforms.async_http_service import AsyncHttpService
from tower.catalog.model import Catalog, Pipeline, Platform, RetryPolicy, Service
from tower.runs.plan import build_plan

STATUS = "/jobs/job-1"  # the status URL of the service's first (and only) job


@pytest.fixture
def service():
    running = AsyncHttpService().start()
    yield running
    running.stop()


def _plan(service: AsyncHttpService, retries: int = 0) -> dict:
    # max_retries 0: a 5xx fails the poll at once (retryable), so each poll activity is one GET
    platform = Platform("api", "http", settings={"base_url": service.url, "max_retries": 0})
    spec = {"path": "/jobs", "body": {"polls": 0}, "cancel_path": "/cancel"}
    built = Service("load", "api", retry=RetryPolicy(retries=retries, backoff=0.05, max_backoff=0.05), spec=spec)
    plan = build_plan(Catalog("test.yaml", {"api": platform}, {"load": built}, {"p": Pipeline("p")}), "p",
                      run_id=f"poll-errors-{datetime.now():%H%M%S%f}")
    plan["platforms"]["api"]["poll"].update(first=0.05, max=0.05)   # polls 50 ms apart: a quick test
    return plan


def _status_reads(service: AsyncHttpService) -> int:
    return sum(1 for method, path, _ in service.state.seen if (method, path) == ("GET", STATUS))


def test_a_poll_error_a_retry_cannot_fix_fails_the_service_after_one_poll(engine, service):
    service.state.faults += [(STATUS, 403, None)] * (MAX_POLL_ERRORS + 1)
    result = run_plan(engine, _plan(service, retries=2))
    load = result["services"]["load"]
    assert (load["status"], load["attempts"]) == ("failed", 1)
    assert load["error"].startswith(f"HTTP status of job-1: GET {service.url}{STATUS} answered 403")
    assert _status_reads(service) == 1                           # not polled again, not resubmitted
    assert service.state.jobs["job-1"].cancelled                 # the remote job is stopped on giving up
    assert [path for method, path, _ in service.state.seen if method == "POST"] == ["/jobs", f"{STATUS}/cancel"]


def test_transient_poll_errors_are_polled_through_up_to_the_limit(engine, service):
    service.state.faults += [(STATUS, 503, None)] * (MAX_POLL_ERRORS - 1)
    result = run_plan(engine, _plan(service))
    load = result["services"]["load"]
    assert (load["status"], load["attempts"], load["error"]) == ("succeeded", 1, None)
    assert _status_reads(service) == MAX_POLL_ERRORS             # four errors, then the answer
    assert not service.state.jobs["job-1"].cancelled


def test_as_many_transient_poll_errors_in_a_row_as_the_limit_fail_the_attempt(engine, service):
    service.state.faults += [(STATUS, 503, None)] * (MAX_POLL_ERRORS + 1)
    result = run_plan(engine, _plan(service))
    load = result["services"]["load"]
    assert (load["status"], load["attempts"]) == ("failed", 1)
    assert "answered 503" in load["error"]
    assert _status_reads(service) == MAX_POLL_ERRORS
    assert service.state.jobs["job-1"].cancelled
