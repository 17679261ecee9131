"""The frozen plan: selection, params, durations, simulation, instance ids."""

import json
from datetime import datetime, timezone

import pytest

from tower.catalog.model import Catalog, Pipeline, Platform, RetryPolicy, Service
from tower.errors import UsageError
from tower.plan import (
    MAX_INSTANCE_ID,
    build_plan,
    fit_instance_id,
    is_valid_instance_id,
    new_run_id,
    service_instance_id,
)

NOW = datetime(2024, 6, 1, 3, 4, 5, tzinfo=timezone.utc)


def catalog() -> Catalog:
    platforms = {
        "dbx": Platform("dbx", "databricks", max_concurrency=2,
                        settings={"host": "https://x.azuredatabricks.net", "token": "${DATABRICKS_TOKEN}"}),
        "local": Platform("local", "command"),
    }
    services = {
        "extract": Service("extract", "local", expected_duration=10.0, spec={"run": "echo hi"},
                           params={"region": "eu"}),
        "transform": Service("transform", "dbx", depends_on=("extract",), timeout=900.0,
                             retry=RetryPolicy(retries=2, backoff=30, max_backoff=120),
                             expected_duration=100.0, spec={"job_id": 7}, tags=("heavy",)),
        "report": Service("report", "local", depends_on=("transform",), spec={"run": "echo report"}),
        "other": Service("other", "local", expected_duration=1.0, spec={"run": "true"}),
    }
    pipelines = {
        "nightly": Pipeline("nightly", selectors=("+report",), params={"date": "today", "limit": 10,
                                                                       "full": False}),
        "all": Pipeline("all"),
    }
    return Catalog("catalog.yaml", platforms, services, pipelines)


def test_plan_freezes_services_platforms_and_params():
    plan = build_plan(catalog(), "nightly", params={"date": "2024-06-01"}, run_id="nightly-1", now=NOW)
    assert plan["run_id"] == "nightly-1" and plan["pipeline"] == "nightly"
    assert plan["created"] == "2024-06-01T03:04:05Z"
    assert list(plan["services"]) == ["extract", "transform", "report"]
    transform = plan["services"]["transform"]
    assert transform == {
        "platform": "dbx", "deps": ["extract"], "timeout": 900.0,
        "retry": {"retries": 2, "backoff": 30, "max_backoff": 120}, "expected": 100.0,
        "spec": {"job_id": 7}, "params": {"date": "2024-06-01", "limit": 10, "full": False},
        "iid": "nightly-1:transform",
    }
    assert plan["services"]["extract"]["params"]["region"] == "eu"
    assert plan["services"]["report"]["expected"] == 60.0  # the default when nothing says
    assert plan["params"] == {"date": "2024-06-01", "limit": 10, "full": False}
    assert plan["platforms"]["dbx"]["settings"]["token"] == "${DATABRICKS_TOKEN}"  # never resolved
    assert plan["platforms"]["dbx"]["max_concurrency"] == 2 and plan["platforms"]["dbx"]["type"] == "databricks"
    json.dumps(plan)  # plain JSON


def test_run_selectors_narrow_the_pipeline_and_outside_deps_count_as_satisfied():
    plan = build_plan(catalog(), "nightly", selectors=["transform+"], run_id="r")
    assert list(plan["services"]) == ["transform", "report"]
    assert plan["services"]["transform"]["deps"] == []
    plan = build_plan(catalog(), "all", selectors=["tag:heavy"], run_id="r")
    assert list(plan["services"]) == ["transform"]


def test_bad_input_is_a_usage_error_that_says_what_to_do():
    with pytest.raises(UsageError, match="unknown pipeline 'nope'.*pipelines: nightly, all"):
        build_plan(catalog(), "nope")
    with pytest.raises(UsageError, match="selector 'other' matches no service of pipeline 'nightly'"):
        build_plan(catalog(), "nightly", selectors=["other"])
    with pytest.raises(UsageError, match="bad selector"):
        build_plan(catalog(), "nightly", selectors=["a+b"])
    with pytest.raises(UsageError, match="unknown param 'colour'.*known params: date, full, limit, region"):
        build_plan(catalog(), "nightly", params={"colour": "red"})
    with pytest.raises(UsageError, match="bad param 'date'.*KEY=VALUE"):
        build_plan(catalog(), "nightly", params=["date"])
    with pytest.raises(UsageError, match="param 'limit' must be an integer, got 'ten'"):
        build_plan(catalog(), "nightly", params=["limit=ten"])
    with pytest.raises(UsageError, match="not a valid instance id"):
        build_plan(catalog(), "nightly", run_id="a/b")


def test_key_value_params_take_the_type_of_their_default():
    plan = build_plan(catalog(), "nightly", params=["limit=5", "full=yes", "date=2024-01-02"], run_id="r")
    assert plan["params"] == {"date": "2024-01-02", "limit": 5, "full": True}


def test_history_durations_override_expected_durations():
    plan = build_plan(catalog(), "nightly", durations={"transform": 42.5}, run_id="r")
    assert plan["services"]["transform"]["expected"] == 42.5
    assert plan["services"]["extract"]["expected"] == 10.0


def test_history_durations_may_be_asked_for_the_selected_services_only():
    asked = []

    def durations(names):
        asked.append(list(names))
        return {"transform": 42.5}

    plan = build_plan(catalog(), "nightly", selectors=["transform+"], durations=durations, run_id="r")
    assert asked == [["transform", "report"]]
    assert plan["services"]["transform"]["expected"] == 42.5


def test_long_or_odd_instance_ids_are_fitted_with_a_hash():
    assert fit_instance_id("plain", "k") == "plain"
    fitted = fit_instance_id("a/b" + "x" * 200, "k1", suffix="@2026-03-29T013000Z")
    assert is_valid_instance_id(fitted) and len(fitted) == MAX_INSTANCE_ID
    assert fitted.startswith("a-bxx") and fitted.endswith("@2026-03-29T013000Z")
    assert fitted != fit_instance_id("a/b" + "x" * 200, "k2", suffix="@2026-03-29T013000Z")
    assert is_valid_instance_id(fit_instance_id("@lead", "k"))


def test_simulate_runs_everything_on_the_simulator_and_keeps_the_limits():
    plan = build_plan(catalog(), "nightly", simulate=True, time_scale=0.01, run_id="r")
    transform = plan["services"]["transform"]
    assert plan["platforms"][transform["platform"]]["type"] == "sim" and transform["platform"] == "dbx"
    assert transform["spec"] == {"duration": 100.0}  # the sim adapter scales it by its time_scale
    assert transform["expected"] == pytest.approx(1.0) and transform["timeout"] == pytest.approx(9.0)
    assert plan["platforms"]["dbx"] == {
        "type": "sim", "max_concurrency": 2, "settings": {"time_scale": 0.01},
        "poll": {"first": 0.01, "factor": 1.5, "max": 0.6, "linger": 0.5}}
    assert "${DATABRICKS_TOKEN}" not in json.dumps(plan)


def test_generated_run_ids_are_readable_and_valid():
    run_id = new_run_id("nightly", NOW)
    assert run_id.startswith("nightly-20240601T030405-") and len(run_id) == len("nightly-20240601T030405-") + 6
    assert new_run_id("nightly", NOW) != run_id
    odd = new_run_id("@a/b#c?" + "x" * 200, NOW)
    assert is_valid_instance_id(odd) and len(odd) == MAX_INSTANCE_ID
    assert build_plan(catalog(), "nightly")["run_id"].startswith("nightly-")


@pytest.mark.parametrize("service", ["plain", "a/b", "q?x", "#hash", "x" * 150, "back\\slash"])
@pytest.mark.parametrize("run_id", ["r1", "y" * 100])
def test_service_instance_ids_are_always_valid_and_distinct(run_id, service):
    iid = service_instance_id(run_id, service)
    assert is_valid_instance_id(iid)
    assert iid != service_instance_id(run_id, service + "2")
    if run_id == "r1" and service == "plain":
        assert iid == "r1:plain"


def test_instance_id_rules_match_azure():
    assert is_valid_instance_id("a" * 100) and not is_valid_instance_id("a" * 101)
    for bad in ("", "@x", "a/b", "a\\b", "a#b", "a?b", "a\nb"):
        assert not is_valid_instance_id(bad)
