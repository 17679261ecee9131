"""Logs from Tower's threads name their invocation, run and service (`tower.logcontext`), as the
Python worker needs them to reach Application Insights tied to the invocation."""

import logging
import threading
import uuid

import pytest

from tower import logcontext, names
from tower.local import engine as local_engine
from tower.platforms.base import FunctionAdapter, Handle, Status

from .conftest import run, sim_catalog


class Lines(logging.Handler):
    """Each record with the invocation id the worker would attach to it: the thread-local one
    (`dispatcher.get_current_invocation_id`; these records come from pool threads, not tasks)."""

    def __init__(self):
        super().__init__(logging.DEBUG)
        self.seen = []

    def emit(self, record):
        self.seen.append({"message": record.getMessage(), "level": record.levelname,
                          "thread": threading.current_thread().name,
                          "invocation_id": getattr(local_engine.INVOCATION_LOCAL, "invocation_id", None),
                          "run_id": getattr(record, logcontext.RUN_ID, None),
                          "service": getattr(record, logcontext.SERVICE, None)})


@pytest.fixture
def lines():
    logger = logging.getLogger("tower.activities")
    handler, level = Lines(), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    yield handler
    logger.removeHandler(handler)
    logger.setLevel(level)


def test_a_line_from_the_platform_pool_names_the_invocation_and_run(engine, lines, monkeypatch):
    given = []

    def invocation_context(function_name):
        context = real(function_name)
        given.append((function_name, context.invocation_id))
        return context

    real = local_engine.invocation_context
    monkeypatch.setattr(local_engine, "invocation_context", invocation_context)

    def submit(submission):
        if submission.attempt == 1 and not submitted:
            submitted.append(submission)
            raise ConnectionError("connection reset by peer")  # logged on the pool by the dispatch
        return Handle(remote_id="r-1")

    submitted = []
    with engine.runtime.platforms.overridden("timed", FunctionAdapter(submit=submit,
                                                                      poll=lambda handle: Status("succeeded"))):
        result = run(engine, sim_catalog({"only": {"platform": "tp", "type": "timed"}}))
    failed = [line for line in lines.seen if "submit at dispatch failed" in line["message"]]
    assert len(failed) == 1, lines.seen
    line = failed[0]
    assert (line["level"], line["message"]) == (
        "INFO", f"{result['run_id']}/only: submit at dispatch failed, service_run submits: connection reset by peer")
    assert line["thread"].startswith("tower-platform")
    open_runs = [invocation_id for name, invocation_id in given if name == names.OPEN_RUN]
    assert line["invocation_id"] in open_runs and line["invocation_id"] is not None
    assert (line["run_id"], line["service"]) == (result["run_id"], "only")


def test_the_orchestrators_say_each_step_of_a_run_once_whatever_the_replays(engine):
    """What an operator reads of a run in Application Insights: each line once (an orchestrator is
    replayed at every episode, and logs only when it is not replaying), naming the run and service."""
    lines = Lines()
    logger = logging.getLogger("tower.orchestrators")
    level = logger.level
    logger.addHandler(lines)
    logger.setLevel(logging.INFO)
    try:
        result = run(engine, sim_catalog({"flaky": {"fail_attempts": 5, "retries": 1}, "next": {"deps": ["flaky"]},
                                          "other": {"duration": 0.0}}))
    finally:
        logger.removeHandler(lines)
        logger.setLevel(level)
    run_id = result["run_id"]
    said = [line["message"] for line in lines.seen if run_id in line["message"]]
    assert sorted(said) == sorted([f"run {run_id}: 2 service(s) started",
                                   f"{run_id}/flaky: failed after 2 attempt(s)",
                                   f"{run_id}/other: succeeded after 1 attempt(s)",
                                   f"run {run_id}: failed"]), said


def test_a_service_activitys_lines_name_its_run_and_service(engine, lines, ledger_faults):
    """A submit or poll is asked about a service by its report: its lines say which (here the
    first look's warning that the run's cancel flag could not be read)."""
    import sqlite3

    from tests.faults import run_is
    from tower.runs.plan import build_plan

    from .conftest import run_plan

    plan = build_plan(sim_catalog({"only": {"duration": 0.05}}), "p", run_id=f"logs-{uuid.uuid4().hex[:6]}")
    ledger_faults.fail("meta", sqlite3.OperationalError("database is locked"), skip=1, when=run_is(plan["run_id"]))
    run_plan(engine, plan)
    warned = [line for line in lines.seen if "could not read the run's cancel flag" in line["message"]]
    assert len(warned) == 1, lines.seen
    assert warned[0]["message"].endswith("going on: database is locked")
    assert (warned[0]["run_id"], warned[0]["service"]) == (plan["run_id"], "only")
