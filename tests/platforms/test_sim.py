import time

import pytest

from tower.errors import NonRetryableError
from tower.platforms import adapter_for
from tower.platforms import sim as sim_module
from tower.platforms.base import Handle, Submission
from tower.platforms.sim import SimAdapter
from tower.states import RemoteState


def submission(attempt=1, **spec):
    return Submission(run_id="r1", service="load", attempt=attempt, spec=spec)


def test_runs_for_its_duration_and_says_when_to_poll_again():
    adapter = SimAdapter({})
    handle = adapter.submit(submission(duration=0.2))
    first = adapter.poll(handle)
    assert first.state == RemoteState.RUNNING
    assert 0.1 < first.poll_after <= 0.2
    time.sleep(first.poll_after)
    assert adapter.poll(handle).state == RemoteState.SUCCEEDED


def test_zero_duration_is_done_at_the_first_poll():
    adapter = SimAdapter({})
    status = adapter.poll(adapter.submit(submission()))
    assert status.state == RemoteState.SUCCEEDED and status.done


def test_first_attempts_fail_retryably_then_succeed():
    adapter = SimAdapter({})
    states = [adapter.poll(adapter.submit(submission(attempt=n, fail_attempts=2))) for n in (1, 2, 3)]
    assert [(s.state, s.retryable) for s in states] == [(RemoteState.FAILED, True), (RemoteState.FAILED, True), (RemoteState.SUCCEEDED, False)]
    assert "attempt 1" in states[0].message


def test_outcome_fail_is_not_retryable():
    adapter = SimAdapter({})
    status = adapter.poll(adapter.submit(submission(outcome="fail")))
    assert (status.state, status.retryable) == (RemoteState.FAILED, False)


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
    assert adapter.poll(handle).state == RemoteState.CANCELLED
    assert not SimAdapter({}).cancelled_remote_ids()  # each adapter keeps its own record


def test_same_key_same_remote_id():
    adapter = SimAdapter({})
    assert adapter.submit(submission()).remote_id == adapter.submit(submission()).remote_id
    assert adapter.submit(submission()).remote_id != adapter.submit(submission(attempt=2)).remote_id


@pytest.mark.parametrize("spec", [{"duration": -1}, {"duration": "soon"}, {"outcome": "maybe"}])
def test_bad_spec_is_a_clear_non_retryable_error(spec):
    with pytest.raises(NonRetryableError, match="service 'load'"):
        SimAdapter({}).submit(submission(**spec))


def test_registered_as_the_sim_platform():
    assert isinstance(adapter_for("sim", {}), SimAdapter)


def test_jitter_moves_the_end_repeatably_within_its_bounds():
    ends = {sim_module.jittered(100.0, 0.05, f"r/s/{i}") for i in range(50)}
    assert all(95.0 <= end <= 105.0 for end in ends) and len(ends) == 50
    assert sim_module.jittered(100.0, 0.05, "r/s/1") == sim_module.jittered(100.0, 0.05, "r/s/1")
    handle = SimAdapter({}).submit(submission(duration=10.0, jitter=0.05))
    planned = handle.data["ends_at"] - handle.data["started_at"]
    assert planned == pytest.approx(sim_module.jittered(10.0, 0.05, submission().idempotency_key))


def test_blind_work_gives_no_hint_of_its_end_and_every_poll_is_counted():
    adapter = SimAdapter({})
    handle = adapter.submit(submission(duration=5.0, blind=True))
    assert adapter.poll(handle).poll_after is None
    assert adapter.poll(adapter.submit(submission(attempt=2, duration=5.0))).poll_after > 4
    assert adapter.poll_counts()[handle.remote_id] == 1
