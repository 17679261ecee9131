"""Run notifications (tower.notify): what `tower run` publishes, that a failed send neither fails
the run nor is lost, that the ids make repeats droppable, and that a finished run chains."""

import json

import pytest

from tests.notifications import published
from tower import notify
from tower.cli.main import main
from tower.contracts import ServiceResult
from tower.events import local_bus_path
from tower.local.bus import LocalBus

CATALOG = """\
platforms:
  lake: {type: sim, max_concurrency: 2}
services:
  extract: {platform: lake, expected_duration: 1s, duration: 0.05}
  clean: {platform: lake, depends_on: [extract], duration: 0.05}
  doomed: {platform: lake, duration: 0.05, outcome: fail}
  wobbly: {platform: lake, duration: 0.05, fail_attempts: 1, retries: {attempts: 1, backoff: 0.1s}}
  after_doomed: {platform: lake, depends_on: [doomed]}
  report: {platform: lake, duration: 0.05}
pipelines:
  nightly: {services: [extract, clean]}
  broken: {services: [wobbly, doomed, after_doomed]}
  reports: {services: [report], on_event: ["tower.run.finished:nightly"]}
  loopy: {services: [report], on_event: ["tower.run.finished:*"]}
"""


@pytest.fixture
def work(tmp_path, monkeypatch):
    (tmp_path / "catalog.yaml").write_text(CATALOG)
    monkeypatch.setenv("TOWER_CATALOG", str(tmp_path / "catalog.yaml"))
    monkeypatch.setenv("TOWER_HOME", str(tmp_path / "home"))
    for name in ("TOWER_RUNS_TABLE_URL", "TOWER_HISTORY_TABLE_URL", "TOWER_NOTIFICATIONS_TOPIC",
                 "ServiceBusConnection__fullyQualifiedNamespace"):
        monkeypatch.delenv(name, raising=False)
    return tmp_path


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    assert "Traceback" not in err
    return code, out, err


def tail(work) -> list[dict]:
    return published(work / "home")


def test_a_run_publishes_started_and_finished_and_tail_shows_them(work, capsys):
    code, out, _ = run(capsys, "run", "nightly", "--json")
    assert code == 0
    run_id = json.loads(out)["run_id"]
    messages = tail(work)
    assert [m["type"] for m in messages] == ["tower.run.started", "tower.run.finished"]
    started, finished = messages
    assert started["id"] == f"{run_id}|tower.run.started" and started["data"]["pipeline"] == "nightly"
    assert started["data"]["trigger"] == "manual" and started["data"]["services"] == 2
    assert finished["id"] == f"{run_id}|tower.run.finished"
    assert finished["props"] == {"type": "tower.run.finished", "pipeline": "nightly", "status": "succeeded"}
    data = finished["data"]
    assert data["status"] == "succeeded" and data["counts"] == {"succeeded": 2} and data["failed"] == []
    assert data["duration_s"] > 0
    assert notify.outbox_from_environment().pending() == []  # sent: nothing left to send

    code, out, err = run(capsys, "events", "tail", "--json")
    assert code == 0
    assert [json.loads(line)["type"] for line in out.splitlines()] == ["tower.run.started", "tower.run.finished"]
    code, out, _ = run(capsys, "events", "tail", "--limit", "1")
    assert code == 0 and out.count("\n") == 1 and "tower.run.finished" in out and "status=succeeded" in out


def test_a_failed_service_is_announced_once_after_its_retries_with_its_error(work, capsys):
    code, out, _ = run(capsys, "run", "broken", "--json")
    assert code == 1
    messages = tail(work)
    failed = [m for m in messages if m["type"] == "tower.service.failed"]
    assert len(failed) == 1  # wobbly failed once, then succeeded on its retry: not announced
    assert failed[0]["data"]["service"] == "doomed" and failed[0]["data"]["attempts"] == 1
    assert failed[0]["data"]["error"]
    finished = next(m for m in messages if m["type"] == "tower.run.finished")["data"]
    assert finished["status"] == "failed"
    assert finished["failed"] == [{"service": "doomed", "error": failed[0]["data"]["error"]}]
    assert (failed[0]["data"]["pipeline"], failed[0]["data"]["run_id"]) == ("broken", finished["run_id"])
    assert finished["counts"]["upstream_failed"] == 1 and finished["counts"]["succeeded"] == 1


def test_a_send_that_fails_is_kept_and_sent_later(work):
    calls = []

    class Down:
        def send(self, notification):
            calls.append(notification.type)
            raise ConnectionError("the namespace is unreachable")

    outbox = notify.outbox_from_environment()
    down = notify.Notifier(outbox, sender=Down())
    down.run_started({"run_id": "run~p@1", "pipeline": "p", "services": {}}, "2026-01-01T00:00:00Z")
    down.run_finished({"run_id": "run~p@1", "pipeline": "p", "status": "succeeded", "services": {}})
    assert down.drain(10)
    assert calls  # it was tried
    assert [n.type for n in outbox.pending()] == ["tower.run.started", "tower.run.finished"]

    up = notify.Notifier(outbox, home=work / "home")  # the topic is back (a TopicSender on the local bus)
    up.retry_pending()  # what the schedule tick does every minute
    assert up.drain(10)
    assert [m["type"] for m in tail(work)] == ["tower.run.started", "tower.run.finished"]
    assert outbox.pending() == []


def test_a_run_whose_notifications_cannot_be_sent_still_succeeds_and_keeps_them(work, capsys):
    (work / "home").mkdir()
    local_bus_path(work / "home").mkdir()  # the local bus cannot be opened: no sender
    code, out, _ = run(capsys, "run", "nightly", "--json")
    assert code == 0 and json.loads(out)["status"] == "succeeded"
    assert [n.type for n in notify.outbox_from_environment().pending()] == ["tower.run.started",
                                                                            "tower.run.finished"]


def test_a_repeat_has_the_same_message_id_and_the_outbox_keeps_it_once(work):
    result = {"run_id": "run~p@x", "pipeline": "p", "status": "succeeded", "started": "2026-01-01T00:00:00Z",
              "finished": "2026-01-01T00:01:00Z", "services": {}}
    one, two = notify.run_finished(result), notify.run_finished(dict(result))
    assert one.message_id == two.message_id == "run~p@x|tower.run.finished"
    outbox = notify.outbox_from_environment()
    outbox.add(one)
    outbox.add(two)
    assert len(outbox.pending()) == 1
    outbox.mark_sent(one, 2000.0)
    outbox.add(two)  # its cause repeated after it went out: it does not go out again
    assert outbox.pending() == []
    long_id = notify.message_id("run~" + "x" * 200, notify.SERVICE_FAILED, "s" * 50)
    assert len(long_id) == 128 and long_id != notify.message_id("run~" + "x" * 200, notify.SERVICE_FAILED, "t" * 50)


def test_an_old_unsent_notification_is_dropped(work):
    outbox = notify.outbox_from_environment()
    outbox.add(notify.Notification("tower.run.started", {"pipeline": "p"}, "a|b", added=1000.0))

    class Never:
        def send(self, notification):
            raise AssertionError("an expired notification is not sent")

    assert notify.flush(outbox, Never(), now=1000.0 + 8 * 86400) == 0
    assert outbox.pending() == []


def test_publishing_never_raises_even_with_no_outbox(work):
    class Broken:
        def __getattr__(self, name):
            def fail(*a, **k):
                raise OSError("disk full")
            return fail

    notifier = notify.Notifier(Broken(), sender=Broken())
    notifier.run_started({"run_id": "r", "pipeline": "p", "services": {}}, "2026-01-01T00:00:00Z")
    notifier.run_finished({"nonsense": True})  # a malformed result: logged, not raised
    notifier.service_failed("r", "p", ServiceResult("s", "failed"))


def test_a_succeeded_run_chains_the_pipelines_listening_for_its_end_and_no_other(work, capsys):
    from tower.catalog import load_catalog
    from triggers.events import listeners, requested_runs

    code, out, _ = run(capsys, "run", "nightly", "--json")
    assert code == 0
    code, out, _ = run(capsys, "run", "broken", "--json")
    bus = LocalBus(local_bus_path(work / "home"))
    try:
        forwarded = bus.active("tower-events")  # the chain subscription forwards to the events queue
    finally:
        bus.close()
    assert len(forwarded) == 1  # nightly's succeeded end; broken's failed end is not forwarded
    message = forwarded[0]
    assert message.message_id.endswith("|tower.run.finished") and "nightly" in message.message_id
    event = json.loads(message.body)
    cat = load_catalog(work / "catalog.yaml")
    assert sorted(listeners(cat, event["type"], event["data"])) == ["loopy", "reports"]
    # a run never chains on itself, and a bare type does not name a pipeline's end
    assert listeners(cat, "tower.run.finished", {"pipeline": "loopy"}) == []
    assert listeners(cat, "tower.run.finished", None) == []
    assert [r[0] for r in requested_runs(cat, event["type"], event["data"])] == ["reports", "loopy"]


@pytest.fixture(params=["sqlite", "table"])
def outbox_and_index(request, tmp_path):
    """An outbox in the same store as a runs index: the SQLite file, or one Azurite table."""
    import uuid

    from tower.runs import index as ri

    if request.param == "sqlite":
        return notify.SqliteOutbox(tmp_path / "runs.db"), ri.SqliteRunsIndex(tmp_path / "runs.db")
    from azure.core.credentials import AzureNamedKeyCredential

    from tests.conftest import AZURITE_ACCOUNT, AZURITE_KEY

    url = f"{request.getfixturevalue('azurite_table_url')}/runs{uuid.uuid4().hex[:8]}"
    key = AzureNamedKeyCredential(AZURITE_ACCOUNT, AZURITE_KEY)
    return notify.TableOutbox(url, credential=key), ri.TableRunsIndex(url, credential=key)


def test_the_outbox_keeps_each_message_once_sends_in_order_and_stays_out_of_run_listings(outbox_and_index):
    from datetime import datetime, timezone

    from tower.runs import index as ri
    from tower.timestamps import iso

    outbox, index = outbox_and_index
    index.insert(ri.RunRow(run_id="run~p@1", pipeline="p", trigger="api", params_digest="x", status="running",
                           started=iso(datetime.now(timezone.utc))))
    first = notify.Notification("tower.run.started", {"pipeline": "p", "run_id": "run~p@1"},
                                notify.message_id("run~p@1/#?", notify.RUN_STARTED), added=100.0)
    second = notify.Notification("tower.run.finished", {"pipeline": "p", "status": "failed"},
                                 notify.message_id("run~p@1/#?", notify.RUN_FINISHED), added=200.0)
    outbox.add(second)
    outbox.add(first)
    outbox.add(first)
    assert [n.message_id for n in outbox.pending()] == [first.message_id, second.message_id]
    assert outbox.pending()[0].data == first.data

    sent = []

    class Recorder:
        def send(self, notification):
            sent.append(notification.message_id)

    assert notify.flush(outbox, Recorder(), now=300.0) == 2
    assert sent == [first.message_id, second.message_id] and outbox.pending() == []
    outbox.add(first)  # remembered as sent: not again
    assert outbox.pending() == []
    assert notify.flush(outbox, Recorder(), now=300.0 + 8 * 86400) == 0  # forgets what was sent long ago
    outbox.add(first)
    assert [n.message_id for n in outbox.pending()] == [first.message_id]
    rows, _ = index.list(limit=10)
    assert [r.run_id for r in rows] == ["run~p@1"]  # the outbox is no run


def test_under_the_local_host_a_finished_run_starts_the_pipeline_chained_on_it(work, monkeypatch):
    """The whole path: run_result publishes, the chain subscription forwards to the events queue, the
    events trigger starts `reports` as run~reports:<the notification's message id>, once."""
    import time
    import urllib.request
    from pathlib import Path

    from tower.events import EVENTS_QUEUE, event_run_id
    from tower.local.host import Host, load_app

    monkeypatch.setenv("TOWER_EVENTS_QUEUE", EVENTS_QUEUE)
    repo = Path(__file__).resolve().parents[1]
    host = Host(load_app(repo / "function_app.py"), work / "home", port=0, log=lambda line: None).start()
    try:
        request = urllib.request.Request(host.base_url + "/api/runs/nightly", method="POST", data=b"{}")
        with urllib.request.urlopen(request, timeout=10) as response:
            run_id = json.loads(response.read())["run_id"]
        chained = event_run_id("reports", notify.message_id(run_id, notify.RUN_FINISHED))
        give_up = time.monotonic() + 30
        while True:
            with urllib.request.urlopen(host.base_url + "/api/runs?limit=50", timeout=10) as response:
                runs = {r["run_id"]: r for r in json.loads(response.read())["runs"]}
            done = [r for r in runs.values() if r["status"] not in ("starting", "running")]
            if runs.get(chained, {}).get("status") == "succeeded" and len(done) >= 4:
                break
            assert time.monotonic() < give_up, f"no chained run {chained}: {sorted(runs)}"
            time.sleep(0.2)
        assert runs[chained]["pipeline"] == "reports" and runs[chained]["trigger"] == "event"
        time.sleep(1.0)  # loopy's own end has been published by now: nothing may chain on it
        with urllib.request.urlopen(host.base_url + "/api/runs?limit=50", timeout=10) as response:
            runs = {r["run_id"]: r for r in json.loads(response.read())["runs"]}
        # loopy chains on every pipeline's end but its own: it ran for nightly and for reports, not for itself
        assert sorted(r["pipeline"] for r in runs.values()) == ["loopy", "loopy", "nightly", "reports"]
    finally:
        host.stop()


def test_tail_follow_shows_notifications_as_they_come(work):
    import os
    import subprocess
    import sys
    import time
    from pathlib import Path

    repo = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": str(repo), "TOWER_HOME": str(work / "home")}
    tail_process = subprocess.Popen([sys.executable, "-m", "tower", "events", "tail", "--follow", "--json"],
                                    env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    import threading

    watchdog = threading.Timer(20, tail_process.kill)  # a tail that shows nothing fails, never hangs
    watchdog.start()
    try:
        time.sleep(1.0)  # it is following: what comes now must show
        notifier = notify.Notifier(notify.outbox_from_environment(), home=work / "home")
        notifier.publish(notify.run_finished({"run_id": "run~p@t", "pipeline": "p", "status": "succeeded",
                                              "started": "2026-01-01T00:00:00Z", "finished": "2026-01-01T00:00:05Z",
                                              "services": {}}))
        assert notifier.drain(10)
        line = json.loads(tail_process.stdout.readline())
        assert line["type"] == "tower.run.finished" and line["id"] == "run~p@t|tower.run.finished"
        assert line["data"]["duration_s"] == 5.0
    finally:
        watchdog.cancel()
        tail_process.terminate()
        tail_process.wait(timeout=10)
