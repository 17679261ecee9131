"""Deadlines (tower.deadlines): the catalog field, the deadline of a run, the prediction against it,
the one `tower.run.at_risk` notification, and what `tower plan` and `tower status` show."""

import json
from datetime import datetime, timedelta, timezone

import pytest

from tests.notifications import published
from tests.runs.jobs import job_json
from tower import deadlines, notify
from tower.catalog import load_catalog
from tower.catalog.model import Deadline
from tower.cli.main import main
from tower.contracts import ServiceResult
from tower.errors import CatalogError
from tower.runs.scheduler import Scheduler
from tower.timestamps import iso

UTC = timezone.utc
HEAD = "platforms:\n  sim: {type: sim}\nservices:\n  a: {platform: sim}\npipelines:\n"


def problems_of(tmp_path, text: str) -> list[str]:
    path = tmp_path / "catalog.yaml"
    path.write_text(HEAD + text)
    try:
        load_catalog(path)
    except CatalogError as exc:
        return [str(p) for p in exc.problems]
    return []


@pytest.mark.parametrize("text, line, message", [
    ("  p: {deadline: '6am'}\n", 6, "pipeline 'p' field 'deadline': expected a time of day HH:MM (00:00 to 23:59), got '6am'"),
    ("  p:\n    deadline: {time: '24:00'}\n", 7, "field 'deadline.time': expected a time of day HH:MM"),
    ("  p:\n    deadline: {timezone: UTC}\n", 7, "field 'deadline': missing 'time'"),
    ("  p:\n    deadline: {time: '06:00', timezone: Europe/Londn}\n", 7,
     "field 'deadline.timezone': unknown time zone 'Europe/Londn' (did you mean 'Europe/London'?)"),
    ("  p:\n    deadline: {time: '06:00', tz: UTC}\n", 7, "field 'deadline': unknown field 'tz'"),
    ("  p:\n    timezone: UTC\n    deadline: {time: '06:00', timezone: UTC}\n", 8,
     "time zone set both here and on the pipeline"),
    ("  p: {deadline: 360}\n", 6, "got a number"),
    ("  p: {deadline: 6:00}\n", 6, "YAML reads an unquoted 06:00 as a number"),
])
def test_a_bad_deadline_is_reported_with_its_place(tmp_path, text, line, message):
    found = problems_of(tmp_path, text)
    assert any(f"catalog.yaml:{line}:" in p and message in p for p in found), found


def test_good_deadlines_take_the_pipeline_zone_or_their_own(tmp_path):
    path = tmp_path / "catalog.yaml"
    path.write_text(HEAD + "  p: {deadline: '6:30', timezone: America/New_York}\n"
                           "  q:\n    deadline: {time: '23:59', timezone: Europe/London}\n  r: {services: [a]}\n")
    cat = load_catalog(path)
    assert cat.pipelines["p"].deadline == Deadline("06:30", "America/New_York")
    assert cat.pipelines["q"].deadline == Deadline("23:59", "Europe/London")
    assert cat.pipelines["r"].deadline is None


def test_the_deadline_of_a_run_is_the_first_one_after_it_started_in_the_zone():
    london = Deadline("06:00", "Europe/London")
    # winter: London is UTC
    assert deadlines.deadline_after(london, datetime(2026, 1, 10, 2, 30, tzinfo=UTC)) == \
        datetime(2026, 1, 10, 6, 0, tzinfo=UTC)
    # summer: 06:00 BST is 05:00 UTC
    assert deadlines.deadline_after(london, datetime(2026, 7, 10, 2, 30, tzinfo=UTC)) == \
        datetime(2026, 7, 10, 5, 0, tzinfo=UTC)
    # started after today's: tomorrow's
    assert deadlines.deadline_after(london, datetime(2026, 7, 10, 5, 0, tzinfo=UTC)) == \
        datetime(2026, 7, 11, 5, 0, tzinfo=UTC)
    # the spring-forward night: 01:30 does not exist in London on 2026-03-29; shifted forward by the gap
    assert deadlines.deadline_after(Deadline("01:30", "Europe/London"), datetime(2026, 3, 29, 0, 10, tzinfo=UTC)) == \
        datetime(2026, 3, 29, 1, 30, tzinfo=UTC)
    # a zone east of UTC whose local day differs from UTC's
    tokyo = Deadline("08:00", "Asia/Tokyo")
    assert deadlines.deadline_after(tokyo, datetime(2026, 1, 10, 22, 0, tzinfo=UTC)) == \
        datetime(2026, 1, 10, 23, 0, tzinfo=UTC)


def _core(deadline: str | None, limit=None) -> dict:
    core = {"run_id": "run~p@x", "pipeline": "p", "platforms": {"sim": {"max_concurrency": limit}},
            "services": {"a": {"deps": [], "expected": 600.0, "platform": "sim", "iid": "a"},
                         "b": {"deps": ["a"], "expected": 1800.0, "platform": "sim", "iid": "b"},
                         "c": {"deps": [], "expected": 60.0, "platform": "sim", "iid": "c"}}}
    if deadline:
        core["deadline"] = deadline
    return core


def test_the_prediction_follows_what_finished_and_what_runs():
    start = datetime(2026, 1, 10, 5, 0, tzinfo=UTC)
    scheduler = Scheduler(_core("2026-01-10T05:45:00Z"), start)
    scheduler.take_ready(start)
    fields = deadlines.of_scheduler(scheduler, start)
    # a (10m) then b (30m): 40 minutes from now, 5 minutes to spare
    assert fields["predicted_end"] == "2026-01-10T05:40:00Z" and fields["slack_s"] == 300.0
    assert fields["at_risk"] is False and fields["critical_path"] == ["a", "b"]
    # a runs 15 minutes (5 more than expected) and is still running: its remaining time is taken as 0
    later = start + timedelta(minutes=15)
    fields = deadlines.of_scheduler(scheduler, later)
    assert fields["predicted_end"] == "2026-01-10T05:45:00Z" and fields["at_risk"] is False
    later = start + timedelta(minutes=16)
    fields = deadlines.of_scheduler(scheduler, later)
    assert fields["at_risk"] is True and fields["slack_s"] == -60.0 and fields["critical_path"] == ["a", "b"]
    # a finishes: b alone decides the end
    scheduler.finish("a", ServiceResult("a", "succeeded"), later)
    scheduler.take_ready(later)
    fields = deadlines.of_scheduler(scheduler, later)
    assert fields["critical_path"] == ["b"] and fields["predicted_end"] == "2026-01-10T05:46:00Z"
    # no deadline, no fields
    assert deadlines.of_scheduler(Scheduler(_core(None), start), start) == {}


def test_a_platform_limit_counts_in_the_prediction():
    start = datetime(2026, 1, 10, 5, 0, tzinfo=UTC)
    core = _core("2026-01-10T05:40:00Z", limit=1)
    scheduler = Scheduler(core, start)
    fields = deadlines.of_scheduler(scheduler, start)
    # one slot: 10m + 30m + 1m of work in a row, 41 minutes: a minute late
    assert fields["slack_s"] == -60.0 and fields["at_risk"] is True


@pytest.fixture
def work(tmp_path, monkeypatch):
    monkeypatch.setenv("TOWER_HOME", str(tmp_path / "home"))
    for name in ("TOWER_RUNS_TABLE_URL", "TOWER_HISTORY_TABLE_URL", "TOWER_LEDGER_TABLE_URL",
                 "TOWER_NOTIFICATIONS_TOPIC", "ServiceBusConnection__fullyQualifiedNamespace"):
        monkeypatch.delenv(name, raising=False)

    def write(deadline: datetime):
        text = f"""\
platforms:
  lake: {{type: sim, max_concurrency: 4}}
services:
  first: {{platform: lake, expected_duration: 1s, duration: 0.05}}
  second: {{platform: lake, expected_duration: 1s, duration: 0.05}}
  long_one: {{platform: lake, expected_duration: 2h, duration: 0.3, depends_on: [first, second]}}
  quick: {{platform: lake, expected_duration: 1s, duration: 0.05}}
  alone: {{platform: lake, expected_duration: 2h, duration: 0.2}}
pipelines:
  late: {{services: [first, second, long_one], deadline: "{deadline:%H:%M}"}}
  early: {{services: [quick], deadline: "{deadline:%H:%M}"}}
  hopeless: {{services: [alone], deadline: "{deadline:%H:%M}"}}
"""
        (tmp_path / "catalog.yaml").write_text(text)
        monkeypatch.setenv("TOWER_CATALOG", str(tmp_path / "catalog.yaml"))

    return write


def test_a_run_predicted_to_miss_its_deadline_is_announced_once_early(work, tmp_path, capsys):
    deadline = (datetime.now(UTC) + timedelta(minutes=3)).replace(second=0, microsecond=0)
    work(deadline)
    code = main(["run", "late", "--json"])
    out, err = capsys.readouterr()
    assert code == 0, err
    run_id = json.loads(out)["run_id"]
    found = [m for m in published(tmp_path / "home") if m["type"] == "tower.run.at_risk"]
    # two reports (first, second) found it at risk, and the reconcile may too: one notification
    assert len(found) == 1
    data = found[0]["data"]
    assert found[0]["id"] == f"{run_id}|tower.run.at_risk"
    assert data["pipeline"] == "late" and data["deadline"] == iso(deadline)
    assert data["slack_s"] < -3600 and data["critical_path"][-1] == "long_one"  # [second,] long_one
    assert datetime.fromisoformat(data["predicted_end"].replace("Z", "+00:00")) > deadline

    # it finished well before the deadline in the end: status says so
    assert main(["status", run_id, "--json"]) == 0
    status = json.loads(capsys.readouterr().out)
    assert status["deadline"] == iso(deadline) and status["missed"] is False and status["slack_s"] > 0
    assert main(["status", run_id]) == 0
    assert f"deadline {iso(deadline)}: finished" in capsys.readouterr().out


def test_a_run_on_time_is_not_announced(work, tmp_path, capsys):
    deadline = (datetime.now(UTC) + timedelta(minutes=3)).replace(second=0, microsecond=0)
    work(deadline)
    assert main(["run", "early", "--json"]) == 0
    capsys.readouterr()
    types = [m["type"] for m in published(tmp_path / "home")]
    assert "tower.run.at_risk" not in types and "tower.run.finished" in types


def test_plan_prints_the_slack_against_the_deadline(work, capsys):
    deadline = (datetime.now(UTC) + timedelta(minutes=30)).replace(second=0, microsecond=0)
    work(deadline)
    assert main(["plan", "late", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)["deadline"]
    assert report["deadline"] == iso(deadline) and report["start_is"] == "a run started now"
    # 1s + 2h of critical path against a deadline within 30 minutes
    assert -2 * 3600 < report["slack_s"] < -1.5 * 3600
    assert main(["plan", "early"]) == 0
    out = capsys.readouterr().out
    assert f"deadline {deadline:%H:%M} UTC: {iso(deadline)}" in out and "to spare" in out


def test_a_run_late_from_its_start_is_announced_before_any_service_reports(work, tmp_path, capsys):
    # one service: its report ends the run, so only the check at the run's opening can warn
    deadline = (datetime.now(UTC) + timedelta(minutes=3)).replace(second=0, microsecond=0)
    work(deadline)
    assert main(["run", "hopeless", "--json"]) == 0
    capsys.readouterr()
    found = [m for m in published(tmp_path / "home") if m["type"] == "tower.run.at_risk"]
    assert len(found) == 1 and found[0]["data"]["critical_path"] == ["alone"]


def test_the_reconcile_check_sees_a_service_running_long_without_a_report(tmp_path, monkeypatch):
    from tower.runs.ledger import create_run, open_run, reconcile_run
    from tower.runs.ledger_sqlite import SqliteRunLedger

    monkeypatch.setenv("TOWER_HOME", str(tmp_path / "home"))
    for name in ("TOWER_RUNS_TABLE_URL", "TOWER_NOTIFICATIONS_TOPIC", "ServiceBusConnection__fullyQualifiedNamespace"):
        monkeypatch.delenv(name, raising=False)
    start = datetime(2026, 1, 10, 5, 0, tzinfo=UTC)
    ledger = SqliteRunLedger(tmp_path / "ledger.db")
    core = _core("2026-01-10T05:45:00Z")
    plan = {**core, "run_id": "run~p@silent", "platforms": {"sim": {"max_concurrency": None}}}
    create_run(ledger, plan, {name: job_json(plan["run_id"], name) for name in plan["services"]}, start)
    open_run(ledger, plan["run_id"], start)
    notifier = notify.Notifier(notify.outbox_from_environment(), home=tmp_path / "home")
    watch = deadlines.DeadlineWatch(ledger, notifier)
    assert watch.watch("run~p@silent", start)["at_risk"] is False
    assert watch.watch("run~p@silent", start) == {}  # checked a moment ago: not again yet
    watch.every = 0.0
    later = start + timedelta(minutes=20)  # a (10m expected) still runs, nothing reported
    reconcile_run(ledger, "run~p@silent", later)
    fields = watch.watch("run~p@silent", later)
    assert fields["at_risk"] is True and fields["slack_s"] == -300.0
    assert watch.watch("run~p@silent", later + timedelta(minutes=1))["at_risk"] is True
    assert notifier.drain(10)
    sent = [m for m in published(tmp_path / "home") if m["type"] == "tower.run.at_risk"]
    assert [m["id"] for m in sent] == ["run~p@silent|tower.run.at_risk"]  # once
    assert sent[0]["data"]["critical_path"] == ["a", "b"]


def test_no_warning_once_the_deadline_itself_has_passed(tmp_path, monkeypatch):
    """A repair keeps its run's deadline: started after it, it is late, and there is nothing left to warn."""
    from tower.runs.ledger import create_run, open_run
    from tower.runs.ledger_sqlite import SqliteRunLedger

    monkeypatch.setenv("TOWER_HOME", str(tmp_path / "home"))
    for name in ("TOWER_RUNS_TABLE_URL", "TOWER_NOTIFICATIONS_TOPIC", "ServiceBusConnection__fullyQualifiedNamespace"):
        monkeypatch.delenv(name, raising=False)
    start = datetime(2026, 1, 10, 7, 0, tzinfo=UTC)
    ledger = SqliteRunLedger(tmp_path / "ledger.db")
    plan = {**_core("2026-01-10T05:45:00Z"), "run_id": "run~p@repair"}
    create_run(ledger, plan, {name: job_json(plan["run_id"], name) for name in plan["services"]}, start)
    open_run(ledger, plan["run_id"], start)
    notifier = notify.Notifier(notify.outbox_from_environment(), home=tmp_path / "home")
    fields = deadlines.DeadlineWatch(ledger, notifier).watch("run~p@repair", start)
    assert fields["at_risk"] is True and fields["slack_s"] < 0
    assert notifier.drain(10)
    assert [m for m in published(tmp_path / "home") if m["type"] == "tower.run.at_risk"] == []
