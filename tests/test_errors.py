"""Tower's error tree: a PlatformError crosses the activity boundary as text and comes back as the
same type with the same fields; the text's form is the one orchestration histories hold."""

import json

import pytest

from tower.errors import (
    ActivityFailure,
    NonRetryableError,
    PlatformError,
    RetryableError,
    TowerError,
)

# What the activities wrote before the encoding moved to tower.errors: in-flight histories hold it.
RECORDED = 'tower-failure:{"error":"HTTP 503 from workspace","retryable":true,"platform":"databricks"}'


def test_the_activity_message_is_compact_ascii_json_behind_the_mark():
    text = RetryableError("café down", platform="http").to_activity_message()
    assert text == 'tower-failure:{"error":"caf\\u00e9 down","retryable":true,"platform":"http"}'
    assert RetryableError("HTTP 503 from workspace", platform="databricks").to_activity_message() == RECORDED


@pytest.mark.parametrize("error", [RetryableError("HTTP 503", platform="databricks"),
                                   NonRetryableError("Job 41 does not exist.", platform="dbx"),
                                   NonRetryableError("no platform named")])
def test_an_error_comes_back_as_the_same_type_with_its_fields(error):
    host_text = f"Activity function 'submit_service' failed: ActivityFailure: {error.to_activity_message()} \n Tb"
    back = PlatformError.from_activity_failure(Exception(host_text))
    assert (type(back), str(back), back.retryable, back.platform) == (
        type(error), str(error), error.retryable, error.platform)


def test_a_recorded_failure_reads_back_as_it_was_written():
    back = PlatformError.from_activity_failure(f"Activity function 'poll_service' failed: {RECORDED}\nTraceback")
    assert (type(back), str(back), back.platform) == (RetryableError, "HTTP 503 from workspace", "databricks")
    again = PlatformError.from_activity_failure(json.loads(json.dumps(RECORDED)))  # as history JSON keeps it
    assert (type(again), again.platform) == (RetryableError, "databricks")


def test_the_first_mark_wins_and_an_unmarked_failure_is_not_retried():
    inner = RetryableError("inner").to_activity_message()
    wrapped = NonRetryableError(f"wrapped: {inner}").to_activity_message()
    back = PlatformError.from_activity_failure(Exception(f"Activity failed: {wrapped}"))
    assert (type(back), str(back)) == (NonRetryableError, f"wrapped: {inner}")
    unmarked = PlatformError.from_activity_failure(Exception("Activity function 'x' failed: KeyError: 'job_id'\nTb"))
    assert (type(unmarked), str(unmarked), unmarked.platform) == (
        NonRetryableError, "Activity function 'x' failed: KeyError: 'job_id'", "")
    assert str(PlatformError.from_activity_failure(Exception(""))) == "unknown error"
    assert str(PlatformError.from_activity_failure('tower-failure:{"code": 1}\nmore')) == 'tower-failure:{"code": 1}'
    assert str(PlatformError.from_activity_failure("tower-failure:{broken")) == "tower-failure:{broken"
    assert str(PlatformError.from_activity_failure("x" * 600)) == "x" * 500


def test_an_activity_failure_carries_the_error_and_says_it_in_its_message():
    error = NonRetryableError("SQL compilation error", platform="snowflake")
    failure = ActivityFailure(error)
    assert isinstance(failure, TowerError) and failure.error is error
    assert str(failure) == error.to_activity_message()


def test_of_picks_the_class_that_retryable_says():
    assert type(PlatformError.of("x", retryable=True)) is RetryableError
    assert type(PlatformError.of("x", retryable=False, platform="p")) is NonRetryableError
    assert PlatformError.of("x", retryable=False, platform="p").platform == "p"
