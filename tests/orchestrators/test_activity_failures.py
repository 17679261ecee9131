"""A PlatformError an adapter raises in an activity reaches the orchestrator as the same type with
the same fields, through the real SDK and the local engine (the activity fails with its message only)."""

from __future__ import annotations

import json
import uuid

import pytest

from tower import names
from tower.errors import NonRetryableError, PlatformError, RetryableError
from tower.platforms.base import FunctionAdapter, Handle

PROBE = "failure_probe"


def probe_app():
    """The app's activities, and an orchestrator that calls one and returns what it failed with, as
    `service_run` reads it."""
    import azure.durable_functions as df

    from activities import blueprints

    app = df.DFApp()
    for blueprint in blueprints:
        app.register_functions(blueprint)

    @app.function_name(PROBE)
    @app.orchestration_trigger(context_name="context")
    def failure_probe(context: df.DurableOrchestrationContext):
        asked = context.get_input()
        try:
            yield context.call_activity(asked["activity"], asked["request"])
        except Exception as exc:
            error = PlatformError.from_activity_failure(exc)
            return {"type": type(error).__name__, "message": str(error), "retryable": error.retryable,
                    "platform": error.platform}
        return None

    return app


@pytest.fixture(scope="module")
def probe_engine(tmp_path_factory):
    from tower.local.engine import Engine

    home = tmp_path_factory.mktemp("probe-home")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TOWER_HOME", str(home))
        engine = Engine(probe_app(), home, activity_workers=2).start()
        try:
            yield engine
        finally:
            engine.stop()


@pytest.fixture
def failing(probe_engine):
    """Platform type "failing" on the probe engine: submit and poll raise what the test puts in `raises`."""
    raises: dict[str, BaseException] = {}

    def fail(what):
        def call(_):
            raise raises[what]
        return call

    stand_in = FunctionAdapter(submit=fail("submit"), poll=fail("poll"))
    with probe_engine.runtime.platforms.overridden("failing", stand_in):
        yield raises


def _probe(engine, activity: str, request: dict) -> dict | None:
    instance = f"probe-{uuid.uuid4().hex[:8]}"
    engine.start_new(PROBE, instance, json.dumps({"activity": activity, "request": request}))
    status = engine.wait(instance, 30)
    assert status["runtimeStatus"] == "Completed", status
    return status["output"]


PLATFORM = {"name": "flaky-dbx", "type": "failing", "settings": {}, "max_concurrency": None,
            "poll": {"first": 1.0, "factor": 1.5, "max": 60.0, "linger": 0.0, "scale": 1.0}}  # as a plan has it
SUBMISSION = {"run_id": "r", "service": "s", "attempt": 1, "spec": {}, "params": {}}


@pytest.mark.parametrize("raised", [RetryableError("HTTP 503 from workspace", platform="databricks"),
                                    NonRetryableError("Job 41 does not exist.", platform="databricks")])
def test_a_submit_failure_arrives_as_the_same_error(probe_engine, failing, raised):
    failing["submit"] = raised
    seen = _probe(probe_engine, names.SUBMIT_SERVICE, {"platform": PLATFORM, "submission": SUBMISSION})
    assert seen == {"type": type(raised).__name__, "message": str(raised), "retryable": raised.retryable,
                    "platform": "databricks"}


def test_a_poll_failure_without_a_platform_is_named_after_the_plan_entry(probe_engine, failing):
    failing["poll"] = RetryableError("HTTP 429: slow down")
    seen = _probe(probe_engine, names.POLL_SERVICE, {"platform": PLATFORM, "handle": Handle("q-1").to_json()})
    assert seen == {"type": "RetryableError", "message": "HTTP 429: slow down", "retryable": True,
                    "platform": "flaky-dbx"}


def test_a_setting_that_cannot_be_read_is_not_retried(probe_engine, failing, monkeypatch):
    monkeypatch.delenv("TOWER_TEST_UNSET_TOKEN", raising=False)
    platform = {**PLATFORM, "settings": {"token": "${TOWER_TEST_UNSET_TOKEN}"}}
    seen = _probe(probe_engine, names.SUBMIT_SERVICE, {"platform": platform, "submission": SUBMISSION})
    assert (seen["type"], seen["retryable"], seen["platform"]) == ("NonRetryableError", False, "flaky-dbx")
    assert "TOWER_TEST_UNSET_TOKEN" in seen["message"]


def test_an_unclassified_failure_arrives_as_not_retryable(probe_engine, failing):
    failing["submit"] = KeyError("job_id")              # a bug, not a platform's answer
    seen = _probe(probe_engine, names.SUBMIT_SERVICE, {"platform": PLATFORM, "submission": SUBMISSION})
    assert (seen["type"], seen["retryable"], seen["platform"]) == ("NonRetryableError", False, "")
    assert "job_id" in seen["message"]
