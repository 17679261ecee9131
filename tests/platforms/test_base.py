"""The adapter interface's JSON forms: what crosses the activity boundary comes back equal."""

from __future__ import annotations

from tower.platforms.base import Handle, Status, Submission, param_text, tail
from tower.states import RemoteState


def test_submission_handle_and_status_come_back_from_json_equal():
    submission = Submission("r-1", "load", 2, {"sql": "SELECT 1"}, {"day": "mon"}, callback="https://app/cb")
    assert Submission.from_json(submission.to_json()) == submission
    assert submission.to_json()["callback"] == "https://app/cb" and submission.idempotency_key == "r-1/load/2"
    plain = Submission("r-1", "load", 2, {"sql": "SELECT 1"}, {"day": "mon"})  # no callback: no key at all
    assert plain.to_json() == {"run_id": "r-1", "service": "load", "attempt": 2, "spec": {"sql": "SELECT 1"},
                               "params": {"day": "mon"}}
    assert Submission.from_json(plain.to_json()) == plain
    handle = Handle("q-1", "https://page", {"reattached": True})
    assert Handle.from_json(handle.to_json()) == handle
    status = Status(RemoteState.RUNNING, "queued", output="...", url="https://page", poll_after=2.5)
    assert Status.from_json(status.to_json()) == status and not status.done and Status(RemoteState.CANCELLED).done


def test_params_are_text_and_output_is_a_short_tail():
    assert [param_text(v) for v in ("mon", 3, True, None, {"a": 1})] == ["mon", "3", "true", "null", '{"a": 1}']
    assert tail("abc", limit=3) == "abc" and tail("abcd", limit=3) == "…cd"
    assert tail("abcdefgh", limit=4) == "…fgh" and len(tail("x" * 5000)) == 500  # the end, `limit` long
