import uuid

import pytest

from tests.conftest import AZURITE_ACCOUNT, AZURITE_KEY
from tower.runs.history import (
    AttemptRecord,
    SqliteRunHistory,
    TableRunHistory,
    history_from_environment,
)
from tower.runtime import Runtime


def result(run, service, status="succeeded", duration=1.0, attempt=1, **extra):
    return {"run_id": run, "pipeline": "nightly", "service": service, "status": status, "attempt": attempt,
            "started": 1_700_000_000.0, "finished": 1_700_000_000.0 + duration, **extra}


def exercise_store(store):
    """The behaviour both stores share."""
    for i, duration in enumerate([10.0, 12.0, 11.0, 500.0, 13.0]):
        store.record(result(f"run-{i}", "load", duration=duration))
    store.record(result("run-5", "load", status="failed", duration=1.0, error="boom"))
    store.record(result("run-5", "other/svc#1", duration=4.0))
    expected = store.expected_durations(["load", "other/svc#1", "never-ran"])
    assert expected == {"load": 12.0, "other/svc#1": 4.0}  # median ignores the 500 s blip and failures
    recent = store.recent_durations(["load", "never-ran"])
    assert list(recent) == ["load"] and sorted(recent["load"]) == [10.0, 11.0, 12.0, 13.0, 500.0]  # successes only

    store.record(result("run-5", "load", status="succeeded", duration=2.5, attempt=2, remote_id="sim-1"))
    store.record(result("run-5", "load", status="succeeded", duration=2.5, attempt=2, remote_id="sim-1"))
    attempts = store.attempts("run-5", ["load", "other/svc#1", "never-ran"])
    assert [(a.service, a.attempt, a.status) for a in attempts] == [
        ("load", 1, "failed"), ("load", 2, "succeeded"), ("other/svc#1", 1, "succeeded")]
    assert attempts[0].error == "boom"
    assert attempts[1].remote_id == "sim-1"
    assert attempts[1].started == "2023-11-14T22:13:20Z"
    assert attempts[1].duration == 2.5


def test_sqlite_store(tmp_path):
    exercise_store(SqliteRunHistory(tmp_path / "history.db"))


def test_sqlite_keeps_only_recent_successes(tmp_path):
    store = SqliteRunHistory(tmp_path / "h.db")
    for i in range(20):
        store.record(result(f"old-{i}", "load", duration=100.0))
    for i in range(7):
        store.record(result(f"new-{i}", "load", duration=5.0))
    assert store.expected_durations(["load"]) == {"load": 5.0}


def test_sqlite_shared_by_threads_and_reopened(tmp_path):
    import threading

    store = SqliteRunHistory(tmp_path / "h.db")
    threads = [threading.Thread(target=store.record, args=(result(f"r{i}", f"s{i}"),)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(SqliteRunHistory(tmp_path / "h.db").expected_durations(f"s{i}" for i in range(8))) == 8


def test_record_accepts_iso_times_and_derives_duration(tmp_path):
    store = SqliteRunHistory(tmp_path / "h.db")
    store.record({"run_id": "r", "service": "a", "status": "succeeded", "attempts": 2,
                  "started": "2026-01-01T00:00:00Z", "finished": "2026-01-01T00:01:30Z"})
    (record,) = store.attempts("r")
    assert record == AttemptRecord("r", "", "a", "succeeded", 2, "2026-01-01T00:00:00Z",
                                   "2026-01-01T00:01:30Z", 90.0)


def test_record_many_stores_every_result_in_one_go(tmp_path):
    store = SqliteRunHistory(tmp_path / "h.db")
    store.record_many([result("r", "a", duration=2.0), result("r", "b", duration=3.0)])
    assert [(a.service, a.duration) for a in store.attempts("r")] == [("a", 2.0), ("b", 3.0)]
    assert store.expected_durations(["a", "b"]) == {"a": 2.0, "b": 3.0}


def test_environment_chooses_sqlite_in_tower_home(tmp_path, monkeypatch):
    monkeypatch.delenv("TOWER_HISTORY_TABLE_URL", raising=False)
    monkeypatch.setenv("TOWER_HOME", str(tmp_path))
    store = history_from_environment()
    assert isinstance(store, SqliteRunHistory) and store.path == tmp_path / "history.db"
    runtime = Runtime.from_environment()
    assert runtime.history is runtime.history and runtime.history.path == store.path  # one per process
    assert Runtime.from_environment(tmp_path / "other").history.path == tmp_path / "other" / "history.db"


def test_environment_chooses_table_storage(monkeypatch):
    monkeypatch.setenv("TOWER_HISTORY_TABLE_URL", "https://acct.table.core.windows.net/towerhistory")
    store = history_from_environment()
    assert isinstance(store, TableRunHistory)
    assert store._table.client.table_name == "towerhistory"
    runtime = Runtime.from_environment()
    assert runtime.history is runtime.history  # no new credential and client per call


def test_table_store_against_azurite(azurite_table_url):
    from azure.core.credentials import AzureNamedKeyCredential

    table = f"history{uuid.uuid4().hex[:8]}"
    store = TableRunHistory(f"{azurite_table_url}/{table}", credential=AzureNamedKeyCredential(AZURITE_ACCOUNT, AZURITE_KEY))
    exercise_store(store)


def test_in_azure_a_store_without_its_table_is_a_clear_error(monkeypatch):
    from tower.errors import ConfigError

    monkeypatch.delenv("TOWER_HISTORY_TABLE_URL", raising=False)
    monkeypatch.setenv("WEBSITE_INSTANCE_ID", "abc123")
    with pytest.raises(ConfigError, match="TOWER_HISTORY_TABLE_URL is not set.*Storage Table Data Contributor"):
        history_from_environment()
    monkeypatch.setenv("TOWER_HISTORY_TABLE_URL", "https://acct.table.core.windows.net/h?sv=2024&sig=abc")
    with pytest.raises(ConfigError, match="without a query string \\(no SAS token\\)") as error:
        history_from_environment()
    assert "sig=abc" not in str(error.value)


def recent_successes_win(store):
    """The expected duration follows the newest successes, not the oldest."""
    for i in range(20):
        store.record({**result(f"old-{i}", "load"), "started": 1_700_000_000.0 + i, "finished": 1_700_000_100.0 + i})
    for i in range(7):
        store.record({**result(f"new-{i}", "load"), "started": 1_800_000_000.0 + i, "finished": 1_800_000_005.0 + i})
    assert store.expected_durations(["load"]) == {"load": 5.0}


def test_the_newest_successes_count_on_both_stores(tmp_path, azurite_table_url):
    from azure.core.credentials import AzureNamedKeyCredential

    recent_successes_win(SqliteRunHistory(tmp_path / "h.db"))
    recent_successes_win(TableRunHistory(f"{azurite_table_url}/history{uuid.uuid4().hex[:8]}",
                                         credential=AzureNamedKeyCredential(AZURITE_ACCOUNT, AZURITE_KEY)))


def test_table_reads_are_keyed_and_made_side_by_side(azurite_table_url):
    """Every query names its partition (no table scan), and planning reads several services at once."""
    import threading
    import time

    from azure.core.credentials import AzureNamedKeyCredential

    from tower.runs import history

    store = TableRunHistory(f"{azurite_table_url}/history{uuid.uuid4().hex[:8]}",
                            credential=AzureNamedKeyCredential(AZURITE_ACCOUNT, AZURITE_KEY))
    services = [f"s{i}" for i in range(24)]
    for service in services:
        store.record(result("r", service, duration=3.0))
    table, lock, filters, in_flight, most = store.table, threading.Lock(), [], [0], [0]
    query = table.query_entities

    def watched(query_filter, **kwargs):
        with lock:
            filters.append(query_filter)
            in_flight[0] += 1
            most[0] = max(most[0], in_flight[0])
        try:
            time.sleep(0.02)
            return list(query(query_filter, **kwargs))
        finally:
            with lock:
                in_flight[0] -= 1

    table.query_entities = watched
    assert store.expected_durations(services) == dict.fromkeys(services, 3.0)
    assert most[0] == history.HISTORY_READS
    assert [a.service for a in store.attempts("r", services)] == sorted(services)
    assert len(filters) == 2 * len(services) and all(f.startswith("PartitionKey eq @pk") for f in filters)
    with pytest.raises(Exception, match="name its services"):
        store.attempts("r")
