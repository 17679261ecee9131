"""The retry schedule of service_run, read off its durable timers: each wait exactly as the policy
says (backoff doubling per retry, capped), and none after the last attempt."""

from tower.runs.plan import service_instance_id
from tower.timestamps import parse_iso

from .conftest import run, sim_catalog

TIMER_CREATED = 10


def timer_waits(engine, run_id: str, service: str) -> list[float]:
    """Each durable timer's wait: its fire time less the time of the episode that created it."""
    return [round((parse_iso(event["FireAt"]) - parse_iso(event["Timestamp"])).total_seconds(), 6)
            for event in engine.history(service_instance_id(run_id, service))
            if event["EventType"] == TIMER_CREATED]


def test_each_retry_waits_the_backoff_of_its_step_doubling_up_to_the_cap(engine):
    result = run(engine, sim_catalog({"flaky": {"fail_attempts": 3, "retries": 3, "backoff": 0.05,
                                                "max_backoff": 0.15}}))
    assert (result["services"]["flaky"]["status"], result["services"]["flaky"]["attempts"]) == ("succeeded", 4)
    assert timer_waits(engine, result["run_id"], "flaky") == [0.05, 0.1, 0.15]  # 0.2 capped at 0.15


def test_no_wait_follows_the_last_attempt(engine):
    result = run(engine, sim_catalog({"flaky": {"fail_attempts": 9, "retries": 2, "backoff": 0.02,
                                                "max_backoff": 1.0}}))
    assert (result["services"]["flaky"]["status"], result["services"]["flaky"]["attempts"]) == ("failed", 3)
    assert timer_waits(engine, result["run_id"], "flaky") == [0.02, 0.04]
