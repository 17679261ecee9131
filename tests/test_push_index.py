"""tower.push's keys: a notification's remote id -> the service run to wake, on both stores; in
Azure they share the runs table without showing up in its listings."""

from __future__ import annotations

import uuid
from datetime import datetime, timezone

import pytest

from tests.conftest import AZURITE_ACCOUNT, AZURITE_KEY
from tower import push
from tower.runs import index as ri
from tower.runs.plan import service_instance_id
from tower.states import RunState
from tower.timestamps import iso


@pytest.fixture(params=["sqlite", "table"])
def stores(request, tmp_path):
    if request.param == "sqlite":
        return push.SqlitePushIndex(tmp_path / "push.db")
    from azure.core.credentials import AzureNamedKeyCredential

    url = f"{request.getfixturevalue('azurite_table_url')}/runs{uuid.uuid4().hex[:8]}"
    return push.TablePushIndex(url, credential=AzureNamedKeyCredential(AZURITE_ACCOUNT, AZURITE_KEY))


def test_a_key_finds_its_service_run_and_nothing_else(stores):
    index = stores
    target = {"instance_id": service_instance_id("run~p@1", "load"), "run_id": "run~p@1", "service": "load"}
    index.put(push.key(push.DATABRICKS, "1001"), target)
    assert index.get(push.key(push.DATABRICKS, "1001")) == target
    assert index.get(push.key(push.DATABRICKS, "1002")) is None
    assert index.get(push.key(push.HTTP, "1001")) is None     # each platform's names are its own


def test_keys_in_the_runs_table_stay_out_of_its_listings(azurite_table_url):
    from azure.core.credentials import AzureNamedKeyCredential

    url, credential = f"{azurite_table_url}/runs{uuid.uuid4().hex[:8]}", AzureNamedKeyCredential(AZURITE_ACCOUNT, AZURITE_KEY)
    index, runs = push.TablePushIndex(url, credential=credential), ri.TableRunsIndex(url, credential=credential)
    index.put(push.key(push.HTTP, push.new_token()), {"instance_id": "i", "run_id": "r", "service": "s"})
    runs.insert(ri.RunRow(run_id="run~p@2", pipeline="p", trigger="api", params_digest=ri.params_digest({}),
                          status=RunState.STARTING, started=iso(datetime.now(timezone.utc))))
    rows, _ = runs.list()
    assert [row.run_id for row in rows] == ["run~p@2"]


def test_retention_forgets_the_keys_written_before_the_cutoff(stores, monkeypatch):
    index = stores
    target = {"instance_id": service_instance_id("run~p@1", "load"), "run_id": "run~p@1", "service": "load"}
    cutoff = datetime(2026, 11, 1, tzinfo=timezone.utc)
    monkeypatch.setattr(push.time, "time", lambda: cutoff.timestamp() - 60)    # written before the cutoff
    index.put(push.key(push.DATABRICKS, "old"), target)
    monkeypatch.setattr(push.time, "time", lambda: cutoff.timestamp() + 60)
    index.put(push.key(push.DATABRICKS, "new"), target)
    assert index.delete_before(cutoff) == 1
    assert index.get(push.key(push.DATABRICKS, "old")) is None
    assert index.get(push.key(push.DATABRICKS, "new")) == target
    assert index.delete_before(cutoff) == 0
