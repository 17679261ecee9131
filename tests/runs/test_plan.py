"""The frozen plan: selection, params, durations, simulation, instance ids."""

import json
import re
import urllib.parse
from datetime import datetime, timezone

import pytest

from tower.catalog.model import Catalog, Pipeline, Platform, RetryPolicy, Service
from tower.errors import UsageError
from tower.events import event_run_id
from tower.runs.plan import (
    MAX_INSTANCE_ID,
    RUN_PREFIX,
    build_plan,
    fit_instance_id,
    given_run_id,
    is_safe_instance_id,
    is_valid_instance_id,
    new_run_id,
    service_instance_id,
    timed_run_id,
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
        "iid": service_instance_id("nightly-1", "transform"),
        "expect": {"median": 100.0, "spread": 20.0},     # expected_duration, +-20 %: a guess
    }
    assert plan["services"]["extract"]["params"]["region"] == "eu"
    assert plan["services"]["report"]["expected"] == 60.0  # the default when nothing says
    assert plan["services"]["report"]["expect"] is None    # ... but no poll schedule is built on it
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
    for bad in ("a/b", "a b", "a%2Fb", "@x", "x."):
        with pytest.raises(UsageError, match="letters, digits and"):
            build_plan(catalog(), "nightly", run_id=bad)


def test_key_value_params_take_the_type_of_their_default():
    plan = build_plan(catalog(), "nightly", params=["limit=5", "full=yes", "date=2024-01-02"], run_id="r")
    assert plan["params"] == {"date": "2024-01-02", "limit": 5, "full": True}


def test_history_durations_override_expected_durations():
    plan = build_plan(catalog(), "nightly", durations={"transform": 42.5}, run_id="r")
    assert plan["services"]["transform"]["expected"] == 42.5
    assert plan["services"]["extract"]["expected"] == 10.0


def test_recent_durations_set_the_expected_end_of_the_polls_and_stand_in_for_the_median():
    recent = {"transform": [50.0, 52.0, 48.0, 51.0, 49.0], "report": [7.0]}
    plan = build_plan(catalog(), "nightly", recent=lambda names: {n: recent[n] for n in names if n in recent},
                      durations={"report": 8.0}, run_id="r")
    transform = plan["services"]["transform"]
    assert transform["expected"] == 50.0                   # their median beats expected_duration
    assert transform["expect"]["median"] == 50.0
    assert transform["expect"]["spread"] == pytest.approx(1.4826)   # 1.4826 x the median absolute deviation
    assert plan["services"]["report"]["expected"] == 8.0   # given durations win for priorities
    assert plan["services"]["report"]["expect"]["median"] == 7.0
    assert plan["services"]["extract"]["expect"] == {"median": 10.0, "spread": 2.0}


def test_a_simulated_plan_scales_the_expected_end_and_the_poll_schedule():
    plan = build_plan(catalog(), "nightly", simulate=True, time_scale=0.01, run_id="r")
    assert plan["services"]["transform"]["expect"] == {"median": 1.0, "spread": pytest.approx(0.2)}
    assert plan["platforms"]["dbx"]["poll"]["scale"] == 0.01


def test_history_durations_may_be_asked_for_the_selected_services_only():
    asked = []

    def durations(names):
        asked.append(list(names))
        return {"transform": 42.5}

    plan = build_plan(catalog(), "nightly", selectors=["transform+"], durations=durations, run_id="r")
    assert asked == [["transform", "report"]]
    assert plan["services"]["transform"]["expected"] == 42.5


def test_free_form_parts_of_ids_are_kept_only_when_url_safe_else_rewritten_and_hashed():
    assert fit_instance_id("run~", "plain") == "run~plain"
    fitted = fit_instance_id("run~", "a/b" + "x" * 200, "@20260329T013000Z")
    assert is_safe_instance_id(fitted) and len(fitted) == MAX_INSTANCE_ID
    assert fitted.startswith("run~a-bxx") and fitted.endswith("@20260329T013000Z")
    assert fitted != fit_instance_id("run~", "a/b" + "x" * 199 + "y", "@20260329T013000Z")
    # characters Azure accepts but a URL path would read differently are never kept as they are
    for odd in ("a b", "a%2Fb", "a+b", "caf\u00e9", "x.", "a'b"):
        fitted = fit_instance_id("run~", odd)
        assert is_safe_instance_id(fitted) and fitted != "run~" + odd
        assert urllib.parse.quote(fitted, safe="~:@") == fitted  # nothing to encode
    assert fit_instance_id("run~", "a b") != fit_instance_id("run~", "a-b")  # rewritten ids stay distinct


def test_a_run_id_a_caller_gives_gets_the_run_prefix_or_a_clear_error():
    assert given_run_id("backfill-2026-11-24") == "run~backfill-2026-11-24"
    assert given_run_id("run~backfill-2026-11-24") == "run~backfill-2026-11-24"  # resending the id given back
    for bad in ("", "a/b", "a b", "50%", "x" * 97, "x.", "run~", 7, None):
        with pytest.raises(UsageError, match="run_id"):
            given_run_id(bad)


def test_simulate_runs_everything_on_the_simulator_and_keeps_the_limits():
    plan = build_plan(catalog(), "nightly", simulate=True, time_scale=0.01, run_id="r")
    transform = plan["services"]["transform"]
    assert plan["platforms"][transform["platform"]]["type"] == "sim" and transform["platform"] == "dbx"
    assert transform["spec"] == {"duration": 100.0}  # the sim adapter scales it by its time_scale
    assert transform["expected"] == pytest.approx(1.0) and transform["timeout"] == pytest.approx(9.0)
    assert plan["platforms"]["dbx"] == {
        "type": "sim", "max_concurrency": 2, "settings": {"time_scale": 0.01},
        "poll": {"first": 0.01, "factor": 1.5, "max": 0.6, "linger": 0.005, "scale": 0.01}}
    assert "${DATABRICKS_TOKEN}" not in json.dumps(plan)


def test_generated_run_ids_have_one_shape_with_the_run_prefix():
    run_id = new_run_id("nightly", NOW)
    assert re.fullmatch(r"run~nightly@20240601T030405Z-[0-9a-f]{6}", run_id)
    assert new_run_id("nightly", NOW) != run_id
    assert run_id.startswith(timed_run_id("nightly", NOW))  # a scheduled run's id, plus a random tail
    odd = new_run_id("@a/b#c?" + "x" * 200, NOW)
    assert is_safe_instance_id(odd) and len(odd) == MAX_INSTANCE_ID and odd.startswith("run~")
    assert build_plan(catalog(), "nightly")["run_id"].startswith("run~nightly@")


@pytest.mark.parametrize("service", ["plain", "a/b", "q?x", "#hash", "x" * 150, "back\\slash", "sp ace"])
@pytest.mark.parametrize("run_id", ["run~r1", "run~" + "y" * 96])
def test_service_instance_ids_are_safe_distinct_and_hash_led(run_id, service):
    iid = service_instance_id(run_id, service)
    assert is_safe_instance_id(iid)
    assert iid != service_instance_id(run_id, service + "2")
    assert re.match(r"[0-9a-f]{16}~", iid) and not iid.startswith(RUN_PREFIX)
    if run_id == "run~r1" and service == "plain":
        assert iid.endswith("~run~r1:plain")


def test_a_runs_service_runs_never_sort_among_runs():
    runs = [new_run_id("a", NOW), timed_run_id("zz", NOW), event_run_id("m", "msg"), given_run_id("0x")]
    services = [service_instance_id(run, name) for run in runs for name in ("a", "zz", "0")]
    assert all(r.startswith(RUN_PREFIX) for r in runs)
    assert max(services) < min(runs)  # the Azure Storage backend lists instances in id order
    assert not any(s.startswith(RUN_PREFIX) for s in services)
    # the services of one run spread over the id space instead of sitting next to each other
    firsts = {service_instance_id(runs[0], f"svc{i}")[0] for i in range(64)}
    assert len(firsts) >= 12


def test_instance_id_rules_match_azure():
    assert is_valid_instance_id("a" * 100) and not is_valid_instance_id("a" * 101)
    for bad in ("", "@x", "a/b", "a\\b", "a#b", "a?b", "a\nb"):
        assert not is_valid_instance_id(bad)
