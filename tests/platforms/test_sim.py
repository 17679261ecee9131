import hashlib
import time

import pytest

from tower.errors import NonRetryableError
from tower.platforms import adapter_for
from tower.platforms import sim as sim_module
from tower.platforms.base import Handle, Status, Submission
from tower.platforms.sim import SimAdapter
from tower.states import RemoteState


def submission(attempt=1, **spec):
    return Submission(run_id="r1", service="load", attempt=attempt, spec=spec)


class Clock:
    """A wall clock that moves only when told: polls at an exact time."""

    def __init__(self, now=1_000_000.0):
        self.now = now

    def __call__(self):
        return self.now


def test_runs_for_its_duration_and_says_when_to_poll_again():
    clock = Clock()
    adapter = SimAdapter({}, clock=clock)
    handle = adapter.submit(submission(duration=2.0))
    clock.now += 0.5
    assert adapter.poll(handle) == Status(RemoteState.RUNNING, poll_after=1.5)
    clock.now += 1.5                                   # exactly the planned end: done, not one more poll
    assert adapter.poll(handle) == Status(RemoteState.SUCCEEDED)   # no message, nothing to retry


def test_zero_duration_is_done_at_the_first_poll_even_in_the_same_clock_tick():
    adapter = SimAdapter({}, clock=Clock())            # a coarse clock: submit and poll read the same time
    assert adapter.poll(adapter.submit(submission())) == Status(RemoteState.SUCCEEDED)


def test_first_attempts_fail_retryably_then_succeed():
    adapter = SimAdapter({})
    states = [adapter.poll(adapter.submit(submission(attempt=n, fail_attempts=2))) for n in (1, 2, 3)]
    assert states == [Status(RemoteState.FAILED, message="simulated failure of attempt 1 of 2", retryable=True),
                      Status(RemoteState.FAILED, message="simulated failure of attempt 2 of 2", retryable=True),
                      Status(RemoteState.SUCCEEDED)]


def test_outcome_fail_is_not_retryable_and_says_so():
    adapter = SimAdapter({})
    status = adapter.poll(adapter.submit(submission(outcome="fail")))
    assert status == Status(RemoteState.FAILED, message="simulated failure (outcome: fail)", retryable=False)


def test_state_survives_a_round_trip_through_json_like_another_process():
    adapter = SimAdapter({})
    handle = Handle.from_json(adapter.submit(submission(duration=0.05)).to_json())
    assert SimAdapter({}).poll(handle).state == RemoteState.RUNNING
    time.sleep(0.06)
    assert SimAdapter({}).poll(handle).state == RemoteState.SUCCEEDED


def test_time_scale_shrinks_durations():
    adapter = SimAdapter({"time_scale": 0.001})
    handle = adapter.submit(submission(duration=3600))
    assert handle.data["ends_at"] - handle.data["started_at"] == pytest.approx(3.6)


def test_cancel_is_recorded_and_reported():
    adapter = SimAdapter({})
    handle = adapter.submit(submission(duration=10))
    adapter.cancel(handle)
    assert handle.remote_id in adapter.cancelled_remote_ids()
    assert adapter.poll(handle) == Status(RemoteState.CANCELLED, message="cancelled (simulated)")
    assert not SimAdapter({}).cancelled_remote_ids()  # each adapter keeps its own record


def test_same_key_same_remote_id():
    adapter = SimAdapter({})
    assert adapter.submit(submission()).remote_id == adapter.submit(submission()).remote_id
    assert adapter.submit(submission()).remote_id != adapter.submit(submission(attempt=2)).remote_id


def test_the_remote_id_is_sim_and_16_hex_digits_of_the_keys_digest():
    handle = SimAdapter({}).submit(submission())
    assert handle.remote_id == "sim-" + hashlib.sha256(b"r1/load/1").hexdigest()[:16]


@pytest.mark.parametrize(("spec", "message"), [
    ({"duration": -1}, "service 'load': sim field 'duration' must be a number >= 0, got -1"),
    ({"duration": "soon"}, "service 'load': sim field 'duration' must be a number >= 0, got 'soon'"),
    ({"jitter": "wide"}, "service 'load': sim field 'jitter' must be a number >= 0, got 'wide'"),
    ({"fail_attempts": True}, "service 'load': sim field 'fail_attempts' must be a number >= 0, got True"),
    ({"outcome": "maybe"}, "service 'load': sim field 'outcome' must be one of ('succeed', 'fail'), got 'maybe'"),
])
def test_a_bad_spec_names_the_service_field_and_platform(spec, message):
    with pytest.raises(NonRetryableError) as raised:
        SimAdapter({}).submit(submission(**spec))
    assert (str(raised.value), raised.value.platform) == (message, "sim")


def test_a_bad_time_scale_names_the_platform_settings():
    with pytest.raises(NonRetryableError) as raised:
        SimAdapter({"time_scale": -2})
    assert (str(raised.value), raised.value.platform) == (
        "service '(platform settings)': sim field 'time_scale' must be a number >= 0, got -2", "sim")


def test_registered_as_the_sim_platform():
    assert isinstance(adapter_for("sim", {}), SimAdapter)


def by_the_documented_rule(duration, jitter, key):
    """duration x (1 + u), u = jitter x (2f - 1), f the first 12 hex digits of sha256("jitter/<key>") / 16^12."""
    f = int(hashlib.sha256(f"jitter/{key}".encode()).hexdigest()[:12], 16) / 16 ** 12
    return duration * (1 + jitter * (2 * f - 1))


def test_jitter_moves_the_end_repeatably_within_its_bounds():
    ends = {sim_module.jittered(100.0, 0.05, f"r/s/{i}") for i in range(50)}
    assert all(95.0 <= end <= 105.0 for end in ends) and len(ends) == 50
    assert sim_module.jittered(100.0, 0.05, "r/s/1") == sim_module.jittered(100.0, 0.05, "r/s/1")


@pytest.mark.parametrize("key", ["r/s/1", "r/s/2", "r/s/3", "r/s/4"])
def test_jitter_draws_its_end_by_the_documented_rule(key):
    assert sim_module.jittered(100.0, 0.5, key) == pytest.approx(by_the_documented_rule(100.0, 0.5, key), rel=1e-12)


def test_a_jittered_submit_plans_its_end_by_the_rule_for_its_key():
    clock = Clock()
    handle = SimAdapter({"time_scale": 0.5}, clock=clock).submit(submission(duration=20.0, jitter=0.5))
    assert handle.data["ends_at"] - clock.now == pytest.approx(by_the_documented_rule(10.0, 0.5, "r1/load/1"), abs=1e-6)


def test_blind_work_gives_no_hint_of_its_end_and_every_poll_is_counted():
    adapter = SimAdapter({})
    handle = adapter.submit(submission(duration=5.0, blind=True))
    assert adapter.poll(handle).poll_after is None
    assert adapter.poll(adapter.submit(submission(attempt=2, duration=5.0))).poll_after > 4
    assert adapter.poll_counts()[handle.remote_id] == 1


def test_polls_are_counted_per_remote_id():
    adapter = SimAdapter({})
    first, second = (adapter.submit(submission(attempt=n, duration=5.0)) for n in (1, 2))
    for handle in (first, first, second, first):
        adapter.poll(handle)
    assert adapter.poll_counts() == {first.remote_id: 3, second.remote_id: 1}
