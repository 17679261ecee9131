"""The typed activity contracts read what the code wrote before they were typed (in-flight
orchestrations replay those inputs) and write the same JSON back, key for key."""

import json

import pytest

from tower.catalog.model import Catalog, Pipeline, Platform, RetryPolicy, Service
from tower.contracts import (
    CancelRequest,
    FirstAttempt,
    Observed,
    PlatformEntry,
    PollRequest,
    PollSettings,
    RunReference,
    RunRequest,
    ServiceJob,
    ServiceReport,
    ServiceResult,
    StepSummary,
    SubmitOutcome,
    SubmitRequest,
)
from tower.platforms.base import Handle, Status
from tower.polling import Expectation
from tower.runs.plan import build_plan, service_job

# A service_run input as `tower.runs.plan.service_job` and the dispatch wrote it, as JSON.
RECORDED_JOB = {
    "run_id": "run~nightly@20261201T020000Z", "pipeline": "nightly", "service": "load",
    "platform": {"name": "wh", "type": "snowflake", "max_concurrency": 4, "settings": {"account": "${SF_ACCOUNT}"},
                 "poll": {"first": 1.0, "factor": 1.5, "max": 60.0, "linger": 0.5, "scale": 1.0}},
    "spec": {"sql": "select 1"}, "params": {"day": "2026-12-01"}, "timeout": 3600.0,
    "retry": {"retries": 2, "backoff": 30.0, "max_backoff": 600.0}, "simulated": False,
    "expect": {"median": 12.0, "spread": 3.0},
}
FIRST = {"handle": {"remote_id": "01b2-q", "url": "https://sf/q/01b2-q", "data": {"started_at": 1.5}},
         "at": "2026-12-01T02:00:01.250000Z"}


def test_a_recorded_job_reads_into_its_fields_and_writes_back_key_for_key():
    job = ServiceJob.from_json(json.loads(json.dumps(RECORDED_JOB)))
    assert (job.run_id, job.service, job.platform.name, job.platform.type, job.timeout) == (
        "run~nightly@20261201T020000Z", "load", "wh", "snowflake", 3600.0)
    assert job.retry == RetryPolicy(retries=2, backoff=30.0, max_backoff=600.0)
    assert job.expect == Expectation(12.0, 3.0) and job.first is None and job.poll.linger == 0.5
    assert job.to_json() == RECORDED_JOB and list(job.to_json()) == list(RECORDED_JOB)


def test_a_recorded_platform_entry_reads_into_attributes_and_writes_back_key_for_key():
    entry = PlatformEntry.from_json(json.loads(json.dumps(RECORDED_JOB["platform"])))
    assert entry == PlatformEntry("wh", "snowflake", 4, {"account": "${SF_ACCOUNT}"},
                                  PollSettings(first=1.0, factor=1.5, max=60.0, linger=0.5, scale=1.0))
    assert entry.to_json() == RECORDED_JOB["platform"]
    assert list(entry.to_json()) == list(RECORDED_JOB["platform"])
    assert list(entry.poll.to_json()) == list(RECORDED_JOB["platform"]["poll"])


def test_a_poll_entry_written_before_linger_and_scale_existed_reads_with_their_old_defaults():
    older = {"first": 2.0, "factor": 2.0, "max": 30.0}
    assert PollSettings.from_json(older) == PollSettings(2.0, 2.0, 30.0, linger=0.0, scale=1.0)


def test_a_job_with_its_first_attempt_round_trips():
    recorded = {**RECORDED_JOB, "expect": None, "timeout": None, "first": FIRST}
    job = ServiceJob.from_json(recorded)
    assert job.first == FirstAttempt(Handle("01b2-q", "https://sf/q/01b2-q", {"started_at": 1.5}),
                                     "2026-12-01T02:00:01.250000Z")
    assert job.to_json() == recorded
    without = {key: value for key, value in recorded.items() if key != "first"}
    assert job.with_first(None).to_json() == without  # no first attempt: no key, as before


def test_a_job_written_before_expect_and_simulated_existed_still_reads():
    older = {key: value for key, value in RECORDED_JOB.items() if key not in ("expect", "simulated")}
    job = ServiceJob.from_json(older)
    assert (job.expect, job.simulated) == (None, False)


def test_the_submission_of_an_attempt_is_the_shape_both_submitters_send():
    job = ServiceJob.from_json(RECORDED_JOB)
    assert job.submission(2).to_json() == {"run_id": "run~nightly@20261201T020000Z", "service": "load",
                                           "attempt": 2, "spec": {"sql": "select 1"},
                                           "params": {"day": "2026-12-01"}}
    assert job.submission(2).idempotency_key == "run~nightly@20261201T020000Z/load/2"


def test_a_plans_service_job_is_the_recorded_shape():
    catalog = Catalog("t.yaml", {"wh": Platform("wh", "snowflake", max_concurrency=4,
                                                settings={"account": "${SF_ACCOUNT}"})},
                      {"load": Service("load", "wh", timeout=3600.0, retry=RetryPolicy(retries=2),
                                       expected_duration=12.0, params={"day": "2026-12-01"},
                                       spec={"sql": "select 1"})},
                      {"nightly": Pipeline("nightly")})
    plan = build_plan(catalog, "nightly", run_id="run~nightly@20261201T020000Z")
    written = service_job(plan, "load").to_json()
    assert set(written) == set(RECORDED_JOB)
    assert {key: written[key] for key in RECORDED_JOB if key != "expect"} == {
        key: value for key, value in RECORDED_JOB.items() if key != "expect"}
    assert written["expect"] == plan["services"]["load"]["expect"]
    assert ServiceJob.from_json(json.loads(json.dumps(written))) == service_job(plan, "load")


# The requests service_run sent before they were typed (orchestrators/pipeline.py), as JSON.
RESULT = {"service": "load", "status": None, "attempts": 2, "started": "2026-12-01T02:00:01Z",
          "attempt_started": "2026-12-01T02:05:00Z", "finished": None, "remote_id": "01b2-q",
          "url": None, "error": "HTTP 503", "output": None}
RECORDED_REPORT = {"run_id": "run~nightly@20261201T020000Z", "pipeline": "nightly", "simulated": False,
                   "result": RESULT, "before": "2026-12-01T03:00:01Z"}
HANDLE = FIRST["handle"]
RECORDED_SUBMIT = {"platform": RECORDED_JOB["platform"],
                   "submission": {"run_id": "run~nightly@20261201T020000Z", "service": "load", "attempt": 2,
                                  "spec": {"sql": "select 1"}, "params": {"day": "2026-12-01"}},
                   "watch_until": "2026-12-01T02:05:00.5Z", "report": RECORDED_REPORT,
                   "previous": {"attempt": 1, "started": "2026-12-01T02:00:01Z", "finished": "2026-12-01T02:04:30Z",
                                "error": "HTTP 503", "remote_id": "01b2-p", "url": None}}
RECORDED_POLLS = [
    {"platform": RECORDED_JOB["platform"], "handle": HANDLE, "report": RECORDED_REPORT},
    {"platform": RECORDED_JOB["platform"], "handle": HANDLE, "report": {**RECORDED_REPORT, "before": None},
     "first": True, "watch_until": "2026-12-01T02:00:02Z"},
    {"platform": RECORDED_JOB["platform"], "handle": HANDLE, "report": RECORDED_REPORT,
     "watch_until": "2026-12-01T02:10:00Z", "look": 0.25},
]
RECORDED_CANCEL = {"platform": RECORDED_JOB["platform"], "handle": HANDLE, "run_id": "run~nightly@20261201T020000Z",
                   "service": "load", "attempt": 2}


def test_a_recorded_report_round_trips():
    report = ServiceReport.from_json(json.loads(json.dumps(RECORDED_REPORT)))
    assert (report.run_id, report.service, report.before, report.simulated) == (
        "run~nightly@20261201T020000Z", "load", "2026-12-01T03:00:01Z", False)
    assert report.to_json() == RECORDED_REPORT
    done = report.with_result(ServiceResult.from_json({**RESULT, "status": "succeeded"}))
    assert done.to_json() == {**RECORDED_REPORT, "result": {**RESULT, "status": "succeeded"}}
    older = {key: value for key, value in RECORDED_REPORT.items() if key not in ("simulated", "before")}
    assert ServiceReport.from_json(older) == ServiceReport(report.run_id, "nightly", ServiceResult.from_json(RESULT))


# service_run's outputs as a recorded history holds them: a success, a timeout after a retry.
RECORDED_RESULTS = [
    {"service": "load", "status": "succeeded", "attempts": 1, "started": "2026-12-01T02:00:01Z",
     "attempt_started": "2026-12-01T02:00:01Z", "finished": "2026-12-01T02:04:00Z", "remote_id": "01b2-q",
     "url": "https://app.snowflake.com/q/01b2-q", "error": None, "output": "3 rows"},
    {"service": "load", "status": "failed", "attempts": 2, "started": "2026-12-01T02:00:01Z",
     "attempt_started": "2026-12-01T02:05:00Z", "finished": "2026-12-01T03:00:01Z", "remote_id": "01b2-p",
     "url": None, "error": "timed out after 1h", "output": None},
]


@pytest.mark.parametrize("recorded", RECORDED_RESULTS)
def test_a_recorded_service_result_round_trips(recorded):
    result = ServiceResult.from_json(json.loads(json.dumps(recorded)))
    assert (result.service, result.status, result.attempts, result.remote_id) == (
        "load", recorded["status"], recorded["attempts"], recorded["remote_id"])
    assert result.to_json() == recorded
    assert list(result.to_json()) == list(recorded)  # the same keys, in the order service_run wrote them
    assert json.dumps(ServiceResult.from_json(result.to_json()).to_json()) == json.dumps(recorded)


def test_a_result_that_says_little_reads_with_the_old_defaults():
    """What an ended service run without a result left in the ledger (`activities.runs._ensure`)."""
    fallback = {"service": "load", "status": "failed", "attempts": 0, "error": "its service run ended terminated: x"}
    result = ServiceResult.from_json(fallback)
    assert result == ServiceResult("load", "failed", 0, error="its service run ended terminated: x")
    assert result.to_json() == {**dict.fromkeys(RESULT), **fallback}


def test_a_recorded_submit_request_round_trips():
    asked = SubmitRequest.from_json(json.loads(json.dumps(RECORDED_SUBMIT)))
    assert asked.submission.idempotency_key == "run~nightly@20261201T020000Z/load/2"
    assert asked.report == ServiceReport.from_json(RECORDED_REPORT) and asked.previous["remote_id"] == "01b2-p"
    assert asked.to_json() == RECORDED_SUBMIT
    bare = {**RECORDED_SUBMIT, "report": None, "previous": None, "watch_until": None}
    assert SubmitRequest.from_json(bare).to_json() == bare


@pytest.mark.parametrize("recorded", RECORDED_POLLS)
def test_a_recorded_poll_request_round_trips(recorded):
    asked = PollRequest.from_json(json.loads(json.dumps(recorded)))
    assert asked.handle == Handle.from_json(HANDLE)
    assert (asked.first, asked.watch_until, asked.look) == (
        recorded.get("first", False), recorded.get("watch_until"), recorded.get("look"))
    assert asked.to_json() == recorded


def test_a_recorded_cancel_request_round_trips():
    asked = CancelRequest.from_json(json.loads(json.dumps(RECORDED_CANCEL)))
    assert (asked.handle.remote_id, asked.service, asked.attempt) == ("01b2-q", "load", 2)
    assert asked.to_json() == RECORDED_CANCEL


def test_the_run_reference_and_the_ledger_activities_requests_round_trip():
    for recorded in ({"run_id": "r", "pipeline": "p"}, {"run_id": "r", "pipeline": "p", "reconcile_after": 0.5}):
        assert RunReference.from_json(recorded).to_json() == recorded
    assert RunReference.from_json({"run_id": "r", "pipeline": "p", "reconcile_after": 0.5}).reconcile_after == 0.5
    for recorded in ({"run_id": "r", "started": "2026-12-01T02:00:00Z"}, {"run_id": "r"}, {"run_id": "r", "after": 0},
                     {"run_id": "r", "after": 499}, {"run_id": "r", "finished": "2026-12-01T03:00:00Z"}):
        assert RunRequest.from_json(recorded).to_json() == recorded
    assert RunRequest.from_json({"run_id": "r", "after": 0}).after == 0     # position 0 is a position


def test_a_step_summary_round_trips_and_an_open_without_a_plan_is_its_error_alone():
    for recorded in ({"started": 2, "stopping": 0, "done": False, "status": "running", "more": None},
                     {"started": 0, "stopping": 500, "done": False, "status": "running", "more": 499},
                     {"started": 0, "stopping": 0, "done": True, "status": "failed", "more": None}):
        summary = StepSummary.from_json(json.loads(json.dumps(recorded)))
        assert summary.to_json() == recorded
    gone = StepSummary.from_json({"error": "run 'r' has no plan in the run ledger"})
    assert gone.error and gone.to_json() == {"error": "run 'r' has no plan in the run ledger"}


# What the submit and poll activities returned before their outputs were typed, as JSON.
SEEN = {"state": "running", "message": "", "retryable": False, "output": "", "url": "https://sf/q/01b2-q",
        "poll_after": 2.0, "observed_at": "2026-12-01T02:00:01.5Z"}


@pytest.mark.parametrize("recorded", [SEEN, {**SEEN, "state": "succeeded", "poll_after": None, "reported": True}])
def test_a_recorded_observation_round_trips(recorded):
    seen = Observed.from_json(json.loads(json.dumps(recorded)))
    assert (seen.state, seen.observed_at, seen.reported) == (
        recorded["state"], "2026-12-01T02:00:01.5Z", recorded.get("reported", False))
    assert seen.done == (recorded["state"] != "running")
    assert seen.to_json() == recorded


def test_a_recorded_submit_outcome_round_trips_and_a_cancelled_one_has_no_handle():
    recorded = {"handle": HANDLE, "status": SEEN}
    outcome = SubmitOutcome.from_json(json.loads(json.dumps(recorded)))
    assert outcome.handle == Handle.from_json(HANDLE) and outcome.status.poll_after == 2.0
    assert outcome.to_json() == recorded
    cancelled = {"handle": None, "status": {"state": "cancelled", "message": "run cancelled before it was submitted",
                                            "retryable": False, "output": "", "url": None, "poll_after": None}}
    outcome = SubmitOutcome.from_json(cancelled)
    assert outcome.handle is None and outcome.status.observed_at is None and outcome.to_json() == cancelled
    assert SubmitOutcome(None, Observed.of(Status("cancelled", message="run cancelled before it was submitted"))
                         ).to_json() == cancelled
