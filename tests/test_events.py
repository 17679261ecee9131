"""The event format, the publishers' choice, and idempotent run ids for events."""

from __future__ import annotations

import json

import pytest

from tower.errors import ConfigError, UsageError
from tower.events import (
    NAMESPACE_SETTING,
    LocalBusPublisher,
    ServiceBusPublisher,
    decode_event,
    encode_event,
    event_run_id,
    publisher_from_settings,
)
from tower.runs.plan import is_safe_instance_id


def test_encode_then_decode_round_trips():
    message_id, body, props = encode_event("files.landed", {"day": "2026-11-24"}, "m-1")
    assert (message_id, props) == ("m-1", {"type": "files.landed"})
    assert json.loads(body) == {"type": "files.landed", "data": {"day": "2026-11-24"}}
    assert decode_event(body, props) == ("files.landed", {"day": "2026-11-24"})


def test_decode_accepts_a_type_property_with_a_plain_body_or_a_typed_body_alone():
    assert decode_event(b'{"n": 1}', {"type": b"orders.in"}) == ("orders.in", {"n": 1})
    assert decode_event(b'{"type": "x", "data": [1]}', {}) == ("x", [1])
    with pytest.raises(UsageError, match="no event type"):
        decode_event(b'{"n": 1}', {})


def test_bad_events_are_usage_errors():
    with pytest.raises(UsageError, match="non-empty"):
        encode_event("  ")
    with pytest.raises(UsageError, match="not JSON-serialisable"):
        encode_event("t", {1, 2})
    with pytest.raises(UsageError, match="1 to 128"):
        encode_event("t", None, "x" * 129)


def test_publisher_is_service_bus_only_with_a_namespace_and_never_takes_a_connection_string(tmp_path):
    local = publisher_from_settings({}, home=tmp_path)
    assert isinstance(local, LocalBusPublisher)
    local.bus.close()
    remote = publisher_from_settings({NAMESPACE_SETTING: "tower-dev.servicebus.windows.net"})
    assert isinstance(remote, ServiceBusPublisher) and remote._client is None  # no connection until a send
    with pytest.raises(ConfigError, match="connection strings are not supported"):
        ServiceBusPublisher("Endpoint=sb://x/;SharedAccessKeyName=k;SharedAccessKey=secret")


def test_event_run_ids_are_stable_url_safe_and_distinct():
    assert event_run_id("on_files", "msg-7") == "run~on_files:msg-7"
    assert event_run_id("on_files", "evt-7") == "run~on_files:evt-7"  # no second 'evt-'
    odd = event_run_id("on_files", "a/b#c?" + "x" * 200)
    assert is_safe_instance_id(odd) and odd == event_run_id("on_files", "a/b#c?" + "x" * 200)
    assert odd != event_run_id("on_files", "a/b#c?" + "x" * 199)
    for message_id in ("a b", "a%20b", "a+b", "caf\u00e9", "id/../other"):  # what a URL would read otherwise
        run_id = event_run_id("on_files", message_id)
        assert is_safe_instance_id(run_id) and run_id.startswith("run~on_files:")
    assert event_run_id("on_files", "a b") != event_run_id("on_files", "a%20b")
