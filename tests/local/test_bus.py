"""The local Service Bus: peek-lock, delivery counts, dead letters, topics, persistence."""

from __future__ import annotations

import time

import pytest

from tower.local.bus import MAX_DELIVERY_REASON, LocalBus, LockLost, subscription_path


@pytest.fixture
def bus(tmp_path):
    b = LocalBus(tmp_path / "bus.db", max_deliveries=3)
    yield b
    b.close()


def test_send_then_receive_keeps_id_body_and_properties(bus):
    mid = bus.send("q", b'{"x":1}', message_id="m-1", application_properties={"type": "t"}, content_type="application/json")
    assert mid == "m-1"
    [msg] = bus.receive("q")
    assert (msg.message_id, msg.body, msg.application_properties, msg.content_type) == (
        "m-1",
        b'{"x":1}',
        {"type": "t"},
        "application/json",
    )
    assert msg.delivery_count == 1 and msg.lock_token


def test_a_locked_message_is_not_delivered_twice_and_complete_removes_it(bus):
    bus.send("q", "a")
    [msg] = bus.receive("q")
    assert bus.receive("q") == []
    bus.complete(msg)
    assert bus.active("q") == [] and bus.receive("q") == []


def test_messages_come_oldest_first_and_per_entity(bus):
    for body in ("1", "2", "3"):
        bus.send("q", body)
    bus.send("other", "x")
    assert [m.body for m in bus.receive("q", max_messages=10)] == [b"1", b"2", b"3"]
    assert [m.body for m in bus.receive("other", max_messages=10)] == [b"x"]


def test_abandon_redelivers_with_a_higher_count_then_dead_letters(bus):
    bus.send("q", "poison", message_id="p")
    counts = []
    for _ in range(3):
        [msg] = bus.receive("q")
        counts.append(msg.delivery_count)
        went_back = bus.abandon(msg)
    assert counts == [1, 2, 3]
    assert went_back is False
    assert bus.receive("q") == []
    [dead] = bus.dead_letters("q")
    assert (dead.message_id, dead.delivery_count) == ("p", 3)
    assert dead.dead_letter_reason == MAX_DELIVERY_REASON
    # what Service Bus writes: a generic description, nothing of the function's error
    assert dead.dead_letter_description == "Message could not be consumed after 3 delivery attempts."


def test_redrive_sends_dead_letters_back_as_new_messages_and_purge_deletes_them(tmp_path):
    bus = LocalBus(tmp_path / "bus.db", max_deliveries=1)
    for entity, message_id in (("q", "a"), ("q", "b"), ("other", "c")):
        bus.send(entity, f"body-{message_id}", message_id=message_id, application_properties={"type": "t"},
                 content_type="application/json")
        [msg] = bus.receive(entity)
        assert bus.abandon(msg) is False
    assert [m.message_id for m in bus.dead_letters()] == ["a", "b", "c"]

    [redriven] = bus.redrive("q", ["b"])
    assert redriven.message_id == "b" and [m.message_id for m in bus.dead_letters()] == ["a", "c"]
    [again] = bus.receive("q")
    assert (again.message_id, again.body, again.delivery_count) == ("b", b"body-b", 1)
    assert (again.application_properties, again.content_type) == ({"type": "t"}, "application/json")
    bus.complete(again)

    assert [m.message_id for m in bus.purge_dead_letters(entity="other")] == ["c"]
    assert [m.message_id for m in bus.redrive()] == ["a"]
    assert bus.dead_letters() == [] and [m.message_id for m in bus.active()] == ["a"]
    assert bus.purge_dead_letters() == []


def test_an_expired_lock_makes_the_message_available_again(tmp_path):
    bus = LocalBus(tmp_path / "bus.db", max_deliveries=2, lock_seconds=0.05)
    bus.send("q", "slow")
    [first] = bus.receive("q")
    time.sleep(0.08)
    [second] = bus.receive("q")
    assert second.delivery_count == 2
    with pytest.raises(LockLost):
        bus.complete(first)  # its lock was taken over
    time.sleep(0.08)
    assert bus.receive("q") == []  # the last allowed delivery's lock expired: dead-lettered
    assert [m.dead_letter_reason for m in bus.dead_letters()] == [MAX_DELIVERY_REASON]
    bus.close()


def test_receive_locks_at_most_max_messages_and_expired_last_deliveries_take_no_slot(tmp_path):
    bus = LocalBus(tmp_path / "bus.db", max_deliveries=1, lock_seconds=0.05)
    bus.send("q", "stale")
    [stale] = bus.receive("q")
    time.sleep(0.08)
    for body in ("1", "2", "3"):
        bus.send("q", body)
    batch = bus.receive("q", max_messages=2)
    assert [(m.body, m.delivery_count) for m in batch] == [(b"1", 1), (b"2", 1)]
    assert [m.body for m in bus.dead_letters("q")] == [b"stale"]
    assert [(m.body, m.delivery_count, m.lock_token is None) for m in bus.active("q")] == [
        (b"1", 1, False), (b"2", 1, False), (b"3", 0, True)]
    for message in batch:
        bus.complete(message)  # the lock tokens returned are the stored ones
    assert [m.body for m in bus.active("q")] == [b"3"]
    bus.close()


def test_explicit_dead_letter_keeps_the_reason(bus):
    bus.send("q", "x")
    [msg] = bus.receive("q")
    bus.dead_letter(msg, "BadEvent", "no type")
    [dead] = bus.dead_letters()
    assert (dead.dead_letter_reason, dead.dead_letter_description) == ("BadEvent", "no type")


def test_topic_copies_to_each_subscription(bus):
    a = bus.add_subscription("t", "a")
    b = bus.add_subscription("t", "b")
    assert a == subscription_path("t", "a") == "t/Subscriptions/a"
    bus.send("t", "hello", message_id="h")
    assert [m.message_id for m in bus.receive(a)] == ["h"]
    assert [m.message_id for m in bus.receive(b)] == ["h"]
    assert bus.receive("t") == []


def test_messages_and_counts_survive_reopening(tmp_path):
    path = tmp_path / "bus.db"
    first = LocalBus(path)
    first.send("q", "kept", message_id="k")
    [msg] = first.receive("q")
    first.abandon(msg)
    first.close()
    second = LocalBus(path)
    [again] = second.receive("q")
    assert (again.message_id, again.body, again.delivery_count) == ("k", b"kept", 2)
    second.close()


def test_two_connections_never_lock_the_same_message(tmp_path):
    path = tmp_path / "bus.db"
    one, two = LocalBus(path), LocalBus(path)
    for i in range(20):
        one.send("q", str(i))
    got = []
    while True:
        batch = one.receive("q", max_messages=3) + two.receive("q", max_messages=3)
        if not batch:
            break
        got += [m.body for m in batch]
    assert sorted(got, key=int) == [str(i).encode() for i in range(20)]
    one.close()
    two.close()
