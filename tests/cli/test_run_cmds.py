"""`tower run / runs / status / cancel / repair / resume` on the local engine, as a user runs them."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tower.cli.main import main

REPO = Path(__file__).resolve().parents[2]

CATALOG = """\
platforms:
  lake: {{type: sim, max_concurrency: 2}}
  sh: {{type: command}}
services:
  extract: {{platform: lake, expected_duration: 2s, duration: 0.2}}
  clean: {{platform: lake, expected_duration: 1s, depends_on: [extract], duration: 0.1}}
  report:
    platform: sh
    depends_on: [clean]
    params: {{day: monday}}
    run: 'printf "%s" "$TOWER_PARAM_DAY" > {work}/day.txt'
  side: {{platform: lake, duration: 0.05}}
  doomed: {{platform: lake, duration: 0.05, outcome: fail}}
  after_doomed: {{platform: lake, depends_on: [doomed]}}
  flaky: {{platform: sh, run: 'test -f {work}/fixed'}}
  after_flaky: {{platform: lake, depends_on: [flaky]}}
  slow: {{platform: lake, expected_duration: 30s, duration: 30}}
  after_slow: {{platform: lake, depends_on: [slow]}}
pipelines:
  nightly: {{services: [extract, clean, report, side], params: {{day: sunday}}}}
  broken: {{services: [side, doomed, after_doomed]}}
  fixable: {{services: [side, flaky, after_flaky]}}
  long: {{services: [slow, after_slow, side]}}
"""
SERVICE_FIELDS = {"status", "attempts", "started", "finished", "remote_id", "error"}


@pytest.fixture
def work(tmp_path, monkeypatch):
    (tmp_path / "catalog.yaml").write_text(CATALOG.format(work=tmp_path))
    monkeypatch.setenv("TOWER_CATALOG", str(tmp_path / "catalog.yaml"))
    monkeypatch.setenv("TOWER_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("TOWER_HISTORY_TABLE_URL", raising=False)
    monkeypatch.delenv("TOWER_RUNS_TABLE_URL", raising=False)
    return tmp_path


def tower(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    assert "Traceback" not in err
    return code, out, err


def tower_process(work, *argv, **kwargs):
    env = {**os.environ, "PYTHONPATH": str(REPO), "TOWER_HOME": str(work / "home"),
           "TOWER_CATALOG": str(work / "catalog.yaml"), "PYTHONFAULTHANDLER": "1"}
    return subprocess.Popen([sys.executable, "-m", "tower", *argv], env=env, cwd=work,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kwargs)


def wait_for_running(capsys, work, timeout=20.0) -> str:
    """The id of the first run that is running, once the engine has written it."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if (work / "home" / "state.db").exists():
            code, out, _ = tower(capsys, "runs", "--json")
            running = [r for r in json.loads(out or "[]") if r["status"] == "running"]
            if code == 0 and running:
                return running[0]["run_id"]
        time.sleep(0.1)
    raise AssertionError("no run started")


@pytest.mark.slow
def test_simulated_run_prints_one_json_object(work, capsys):
    code, out, err = tower(capsys, "run", "nightly", "--simulate", "--time-scale", "0.01", "--json")
    assert code == 0, err
    result = json.loads(out)
    assert set(result) == {"run_id", "pipeline", "status", "started", "finished", "services"}
    assert (result["pipeline"], result["status"]) == ("nightly", "succeeded")
    assert list(result["services"]) == ["extract", "clean", "report", "side"]
    for name, svc in result["services"].items():
        assert set(svc) == SERVICE_FIELDS, name
        assert svc["status"] == "succeeded" and svc["attempts"] == 1
        assert svc["started"].endswith("Z") and svc["finished"] >= svc["started"]
    assert result["services"]["clean"]["started"] >= result["services"]["extract"]["finished"]
    assert not (work / "day.txt").exists()  # simulated: the command never ran
    assert f"run {result['run_id']}: succeeded" in err


@pytest.mark.slow
def test_real_run_passes_params_and_prints_a_summary(work, capsys):
    code, out, err = tower(capsys, "run", "nightly", "--param", "day=friday")
    assert code == 0, err
    assert (work / "day.txt").read_text() == "friday"
    assert ": succeeded in" in out
    lines = out.splitlines()
    assert any(line.startswith("report") and "succeeded" in line for line in lines)
    assert any(line.startswith("extract") and "│" in line and "█" in line for line in lines)  # the Gantt
    assert "started run run~nightly@" in err


@pytest.mark.slow
def test_failed_pipeline_exits_1_and_other_branches_go_on(work, capsys):
    code, out, err = tower(capsys, "run", "broken", "--json")
    assert code == 1
    services = json.loads(out)["services"]
    assert json.loads(out)["status"] == "failed"
    assert services["side"]["status"] == "succeeded"
    assert services["doomed"]["status"] == "failed"
    assert "simulated failure" in services["doomed"]["error"]
    assert services["after_doomed"]["status"] == "upstream_failed"


@pytest.mark.parametrize("argv, message", [
    (["run", "nope"], "unknown pipeline 'nope'"),
    (["run", "nightly", "--param", "day"], "bad param 'day': write KEY=VALUE"),
    (["run", "nightly", "--param", "colour=red"], "unknown param 'colour'"),
    (["run", "nightly", "--services", "ghost"], "selector 'ghost' matches no service"),
    (["run", "nightly", "--time-scale", "0.1"], "add --simulate"),
    (["status", "no-such-run"], "no run"),
    (["cancel", "no-such-run"], "no run"),
    (["repair", "no-such-run"], "no run"),
])
def test_bad_input_exits_2_with_a_clear_message(work, capsys, argv, message):
    code, out, err = tower(capsys, *argv)
    assert (code, out) == (2, "")
    assert message in err


def test_bad_time_scale_is_a_usage_error(work, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["run", "nightly", "--simulate", "--time-scale", "-1"])
    assert exit_info.value.code == 2
    assert "expected a number > 0" in capsys.readouterr().err


def test_runs_on_an_empty_home(work, capsys):
    code, out, err = tower(capsys, "runs")
    assert (code, out) == (0, "")
    assert "no runs" in err


@pytest.mark.slow
def test_runs_status_and_repair(work, capsys):
    code, out, _ = tower(capsys, "run", "fixable", "--json")
    assert code == 1
    first = json.loads(out)
    assert first["services"]["flaky"]["status"] == "failed"
    assert first["services"]["flaky"]["error"] == "exit code 1"

    code, out, _ = tower(capsys, "status", first["run_id"], "--json")
    assert code == 0
    assert json.loads(out) == first

    code, out, _ = tower(capsys, "status", first["run_id"])
    assert code == 0 and "flaky" in out and "exit code 1" in out

    (work / "fixed").touch()
    code, out, err = tower(capsys, "repair", first["run_id"], "--json")
    assert code == 0, err
    repaired = json.loads(out)
    assert repaired["run_id"] != first["run_id"]
    assert list(repaired["services"]) == ["flaky", "after_flaky"]  # side had succeeded: not re-run
    assert {svc["status"] for svc in repaired["services"].values()} == {"succeeded"}

    code, out, _ = tower(capsys, "repair", repaired["run_id"])
    assert code == 2  # nothing left to repair

    code, out, _ = tower(capsys, "runs", "--json")
    runs = json.loads(out)
    assert [(r["run_id"], r["status"], r["trigger"]) for r in runs] == [
        (repaired["run_id"], "succeeded", "repair"), (first["run_id"], "failed", "cli")]
    assert runs[0]["repair_of"] == first["run_id"] and runs[1]["repaired_by"] == repaired["run_id"]
    assert runs[1]["counts"] == {"succeeded": 1, "failed": 1, "upstream_failed": 1}
    code, out, _ = tower(capsys, "runs")
    assert first["run_id"] in out and "fixable" in out and f"repaired by {repaired['run_id']}" in out

    code, out, _ = tower(capsys, "status", first["run_id"], "--json")
    assert json.loads(out)["repaired_by"] == repaired["run_id"]
    code, out, _ = tower(capsys, "status", first["run_id"])
    assert f"repaired by {repaired['run_id']}" in out

    code, out, err = tower(capsys, "repair", first["run_id"])  # a second repair re-runs nothing
    assert code == 2 and f"already repaired by {repaired['run_id']}" in err and "--again" in err
    assert len(json.loads(tower(capsys, "runs", "--json")[1])) == 2

    (work / "fixed").unlink()
    code, out, err = tower(capsys, "repair", first["run_id"], "--again", "--json")
    assert code == 1 and "plan frozen when it started (catalog edits are not applied)" in err
    again = json.loads(out)
    code, out, _ = tower(capsys, "status", first["run_id"], "--json")
    assert json.loads(out)["repaired_by"] == again["run_id"]


def test_runs_filters_and_pages(work, capsys):
    for pipeline in ("nightly", "broken", "nightly"):
        tower(capsys, "run", pipeline, "--json")
    code, out, _ = tower(capsys, "runs", "--json")
    runs = json.loads(out)
    assert [r["pipeline"] for r in runs] == ["nightly", "broken", "nightly"]
    assert [r["started"] for r in runs] == sorted((r["started"] for r in runs), reverse=True)

    code, out, _ = tower(capsys, "runs", "--pipeline", "nightly", "--json")
    assert [r["run_id"] for r in json.loads(out)] == [runs[0]["run_id"], runs[2]["run_id"]]
    code, out, _ = tower(capsys, "runs", "--status", "failed", "--json")
    assert [r["run_id"] for r in json.loads(out)] == [runs[1]["run_id"]]

    code, out, err = tower(capsys, "runs", "--limit", "2", "--json")
    assert [r["run_id"] for r in json.loads(out)] == [runs[0]["run_id"], runs[1]["run_id"]]
    token = err.split("--continuation ", 1)[1].split()[0].strip("'")
    code, out, err = tower(capsys, "runs", "--limit", "2", "--continuation", token, "--json")
    assert [r["run_id"] for r in json.loads(out)] == [runs[2]["run_id"]] and "more:" not in err

    code, out, err = tower(capsys, "runs", "--since", "2999-01-01")
    assert (code, out) == (0, "") and "no runs match" in err


@pytest.mark.parametrize("argv, message", [
    (["runs", "--limit", "0"], "expected a whole number from 1 to 1000"),
    (["runs", "--since", "yesterday"], "since: expected an ISO time"),
    (["purge", "--older-than", "soon"], "invalid duration 'soon'"),
])
def test_runs_and_purge_refuse_bad_options(work, capsys, argv, message):
    try:
        code = main(argv)
    except SystemExit as exit_info:
        code = exit_info.code
    assert code == 2 and message in capsys.readouterr().err


def test_purge_leaves_a_tombstone_that_no_start_gets_past(work, capsys):
    from tower.errors import RunExists
    from tower.local.driver import LocalEngine
    from tower.local.store import read_status
    from tower.runner import plan_run, run_info

    code, out, _ = tower(capsys, "run", "nightly", "--simulate", "--time-scale", "0.001", "--json")
    run_id = json.loads(out)["run_id"]
    time.sleep(1.1)
    code, out, err = tower(capsys, "purge", "--older-than", "1s", "--json")
    report = json.loads(out)
    assert code == 0 and report["instances"] == 5 and report["ledger_runs"] == 1  # the run and its 4 services
    assert report["push_keys"] == 0  # the push keys are purged too (a simulated run writes none)
    assert read_status(work / "home", run_id) is None

    code, out, _ = tower(capsys, "runs", "--json")
    assert [(r["run_id"], r["status"], r["purged"]) for r in json.loads(out)] == [(run_id, "succeeded", True)]
    code, out, _ = tower(capsys, "status", run_id)
    assert code == 0 and "succeeded" in out and "details were purged" in out

    from tower.catalog import load_catalog

    plan = plan_run(load_catalog(work / "catalog.yaml"), "nightly", run_id=run_id, simulate=True,
                    time_scale=0.001, home=work / "home")
    with LocalEngine(work / "home") as local, pytest.raises(RunExists, match="exists already \\(succeeded\\)"):
        local.start_run(plan)  # as a late redelivery would: the purged id is not run again
    assert read_status(work / "home", run_id) is None
    with pytest.raises(Exception, match="no run"):
        run_info(work / "home", run_id)


@pytest.mark.slow
def test_cancel_from_another_process(work, capsys):
    runner = tower_process(work, "run", "long", "--json")
    try:
        run_id = wait_for_running(capsys, work)
        code, _, err = tower(capsys, "cancel", run_id)
        assert code == 0 and "running engine is cancelling it" in err
        out, err = runner.communicate(timeout=30)
    finally:
        runner.kill()
    assert runner.returncode == 1, err
    result = json.loads(out)
    assert result["status"] == "cancelled"
    assert result["services"]["slow"]["status"] == "cancelled"
    assert result["services"]["after_slow"]["status"] == "cancelled"
    code, _, err = tower(capsys, "cancel", run_id)
    assert code == 0 and "already ended: cancelled" in err


@pytest.mark.slow
def test_resume_finishes_a_run_after_a_crash(work, capsys):
    runner = tower_process(work, "run", "long", "--simulate", "--time-scale", "0.03", start_new_session=True)
    try:
        run_id = wait_for_running(capsys, work)
        os.killpg(runner.pid, signal.SIGKILL)
        runner.wait(timeout=10)
    finally:
        runner.kill()
    code, out, _ = tower(capsys, "status", run_id, "--json")
    assert json.loads(out)["status"] == "running"
    code, out, err = tower(capsys, "resume", "--json")
    assert code == 0, err
    (result,) = json.loads(out)
    assert (result["run_id"], result["status"]) == (run_id, "succeeded")
    code, out, err = tower(capsys, "resume")
    assert code == 0 and "nothing to resume" in err


def test_gantt_bars_are_placed_and_scaled_on_the_run_time_line():
    from tower.cli.render import gantt, progress_text
    from tower.timestamps import parse_iso

    result = {"started": "2026-01-01T00:00:00Z", "finished": "2026-01-01T00:00:10Z", "services": {
        "a": {"status": "succeeded", "started": "2026-01-01T00:00:00Z", "finished": "2026-01-01T00:00:05Z"},
        "b": {"status": "failed", "started": "2026-01-01T00:00:05Z", "finished": "2026-01-01T00:00:10Z"},
        "c": {"status": "upstream_failed", "started": None, "finished": "2026-01-01T00:00:10Z"}}}
    rows = gantt(result, width=10).splitlines()
    assert rows[0] == "a │█████     │ succeeded"
    assert rows[1] == "b │     ▓▓▓▓▓│ failed"
    assert rows[2] == "c │          │ upstream_failed"
    assert rows[3].endswith("10s")
    status = {"counts": {"succeeded": 3, "running": 2, "failed": 1, "upstream_failed": 2, "pending": 2},
              "started": "2026-01-01T00:00:00Z", "eta": "2026-01-01T00:00:20Z"}
    assert progress_text(status, parse_iso("2026-01-01T00:00:05Z")) == (
        "6/10 done · 2 running · 1 failed, 2 held back · elapsed 5s · ETA 15s")


def test_times_are_read_from_iso_text_epoch_seconds_or_datetimes():
    from datetime import datetime, timezone

    from tower.cli.render import seconds_between, short_duration
    from tower.timestamps import parse_iso

    moment = datetime(2023, 11, 14, 22, 13, 20, tzinfo=timezone.utc)
    assert parse_iso("2023-11-14T22:13:20Z") == parse_iso(1_700_000_000) == parse_iso(moment) == moment
    assert parse_iso(None) is None and parse_iso("") is None
    assert seconds_between(1_700_000_000, "2023-11-14T22:13:22.5Z") == 2.5
    assert [short_duration(s) for s in (None, 0.04, 2.46, 9.96, 75)] == ["-", "0s", "2.5s", "10s", "1m15s"]
