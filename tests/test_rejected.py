"""The rejected-events store: SQLite locally, Azure Table Storage (Azurite here) in Azure, one behaviour."""

from __future__ import annotations

import uuid

import pytest

from tests.conftest import AZURITE_ACCOUNT, AZURITE_KEY
from tower.errors import ConfigError
from tower.rejected import (
    MAX_TABLE_BODY,
    RejectedEvent,
    SqliteRejected,
    TableRejected,
    rejected_from_environment,
)


def event(message_id: str, at: float, queue: str = "tower-events", body: bytes = b'{"x": 1}', **fields) -> RejectedEvent:
    return RejectedEvent(queue=queue, message_id=message_id, reason=f"bad {message_id}", body=body,
                         application_properties={"type": "t"}, content_type="application/json",
                         event_type="t", delivery_count=1, rejected_at=at, **fields)


def exercise(store) -> None:
    store.add(event("a", 100.0))
    store.add(event("b/#?", 300.0))                      # a message id no Table key would take
    store.add(event("c", 200.0, queue="other"))
    store.add(RejectedEvent(queue="tower-events", message_id="bin", reason="undecodable", body=b"\xff\x00",
                            rejected_at=150.0))
    assert [e.message_id for e in store.list()] == ["b/#?", "c", "bin", "a"]   # newest first
    assert [e.message_id for e in store.list("tower-events", limit=2)] == ["b/#?", "bin"]
    got = store.list("other")[0]
    assert (got.reason, got.body, got.application_properties, got.content_type, got.event_type) == (
        "bad c", b'{"x": 1}', {"type": "t"}, "application/json", "t")
    assert store.list(limit=10)[2].to_json()["body_encoding"] == "base64"      # binary bodies survive JSON
    store.add(event("a", 400.0, ))                         # rejected again: one row, the newest
    assert [e.message_id for e in store.list()].count("a") == 1 and store.list()[0].message_id == "a"
    assert store.remove("tower-events", "b/#?") is True
    assert store.remove("tower-events", "b/#?") is False
    assert store.remove("other", "a") is False             # a message id is per queue
    assert sorted(e.message_id for e in store.list()) == ["a", "bin", "c"]


def test_sqlite_store(tmp_path):
    store = SqliteRejected(tmp_path / "rejected.db")
    exercise(store)
    store.add(event("huge", 500.0, body=b"x" * (MAX_TABLE_BODY + 1)))  # a file keeps it whole
    assert not store.list(limit=1)[0].truncated and len(store.list(limit=1)[0].body) == MAX_TABLE_BODY + 1


def test_table_store_against_azurite(azurite_table_url):
    from azure.core.credentials import AzureNamedKeyCredential

    table = f"rejected{uuid.uuid4().hex[:8]}"
    store = TableRejected(f"{azurite_table_url}/{table}", credential=AzureNamedKeyCredential(AZURITE_ACCOUNT, AZURITE_KEY))
    exercise(store)
    store.add(event("huge", 500.0, body=b"x" * (MAX_TABLE_BODY + 1)))  # a Service Bus message may be 256 KB
    huge = store.list(limit=1)[0]
    assert huge.truncated and len(huge.body) == MAX_TABLE_BODY and huge.to_json()["body_truncated"] is True


def test_in_azure_the_table_setting_is_required(monkeypatch, tmp_path):
    monkeypatch.delenv("TOWER_REJECTED_TABLE_URL", raising=False)
    monkeypatch.setenv("WEBSITE_SKU", "FlexConsumption")
    with pytest.raises(ConfigError, match="TOWER_REJECTED_TABLE_URL is not set.*WEBSITE_SKU"):
        rejected_from_environment(tmp_path)
