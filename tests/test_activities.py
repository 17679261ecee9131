"""The activities' plumbing: adapters kept per process, signals that wait for their instance."""

import asyncio
import logging
import time
from dataclasses import replace

import pytest

from activities import remote, runs
from tests.runs.jobs import job_json
from tower.contracts import PlatformEntry, ServiceJob
from tower.platforms import Platforms
from tower.platforms.base import FunctionAdapter, Handle, Status
from tower.platforms.sim import SimAdapter


def test_adapters_are_kept_per_type_and_resolved_settings():
    platforms = Platforms()
    platform = PlatformEntry("s", "sim", settings={"time_scale": 0.25})
    adapter = remote.adapter(platform, platforms)
    assert isinstance(adapter, SimAdapter) and remote.adapter(replace(platform, name="t"), platforms) is adapter
    assert remote.adapter(replace(platform, settings={"time_scale": 0.5}), platforms) is not adapter
    assert remote.adapter(platform, Platforms()) is not adapter  # kept by the registry, not the process


def test_an_override_is_asked_each_time():
    built = []

    def factory(settings):
        built.append(settings)
        return FunctionAdapter(submit=lambda s: Handle("x"), poll=lambda h: Status("succeeded"))

    platforms = Platforms(overrides={"factory": factory})
    platform = PlatformEntry("f", "factory", settings={"a": 1})
    assert remote.adapter(platform, platforms) is not remote.adapter(platform, platforms)
    assert built == [{"a": 1}, {"a": 1}]


def test_a_submission_spec_is_resolved_at_use(monkeypatch):
    monkeypatch.setenv("TOWER_TEST_TOKEN", "t0k")
    data = {"run_id": "r", "service": "s", "attempt": 1, "params": {},
            "spec": {"headers": {"Authorization": "Bearer ${TOWER_TEST_TOKEN}"}, "body": ["${TOWER_TEST_TOKEN:-x}"]}}
    submission = remote.submission(data)
    assert submission.spec == {"headers": {"Authorization": "Bearer t0k"}, "body": ["t0k"]}
    assert data["spec"]["headers"]["Authorization"] == "Bearer ${TOWER_TEST_TOKEN}"  # the request is untouched
    monkeypatch.delenv("TOWER_TEST_TOKEN")
    with pytest.raises(Exception, match="service 's' field 'headers.Authorization': environment variable"):
        remote.submission(data)


class FakeClient:
    """raise_event answers 404 for an instance until it has been asked `missing_for` times."""

    def __init__(self, missing_for: dict[str, int], gone: tuple[str, ...] = ()):
        self.missing_for, self.gone, self.raised = dict(missing_for), gone, []

    async def raise_event(self, instance_id, event, data=None):
        if instance_id in self.gone:
            raise Exception(f"Instance with ID {instance_id} is gone: either completed or failed")
        if self.missing_for.get(instance_id, 0) > 0:
            self.missing_for[instance_id] -= 1
            raise Exception(f"No instance with ID {instance_id} found.")
        self.raised.append((instance_id, event, data))


def test_a_signal_waits_briefly_for_an_instance_about_to_start(caplog):
    caplog.set_level(logging.INFO, logger="tower.activities")
    client = FakeClient({"r:late": 2, "r:never": 99}, gone=("r:done",))
    reached = asyncio.run(runs.raise_events(client, ["r:late", "r:never", "r:done", "r:now"], "cancel",
                                            retry_delays=(0.0, 0.0, 0.0)))
    assert reached == ["r:late", "r:now"]
    assert client.missing_for["r:never"] == 99 - 4  # the first try and one per delay, then given up
    assert sorted(client.raised) == [("r:late", "cancel", None), ("r:now", "cancel", None)]
    # the operator reads which signal reached no instance, and why (a cancel may leave work running)
    assert [(r.levelname, r.getMessage()) for r in caplog.records] == [
        ("INFO", "signal cancel: r:done already finished"),
        ("INFO", "signal cancel: r:never never started (or was purged)")]


class SlowClient:
    """A Durable client whose calls take a while; counts how many are in flight at once."""

    def __init__(self):
        self.in_flight = self.most = self.calls = 0

    async def _call(self):
        self.calls += 1
        self.in_flight += 1
        self.most = max(self.most, self.in_flight)
        await asyncio.sleep(0.01)
        self.in_flight -= 1

    async def raise_event(self, instance_id, event, data=None):
        await self._call()

    async def get_status(self, instance_id):
        await self._call()
        return type("Status", (), {"runtime_status": "Running"})()


def test_signals_and_lookups_fan_out_with_bounded_concurrency():
    from tower.runs.ledger import Step

    client = SlowClient()
    ids = [f"r:s{i}" for i in range(200)]
    assert asyncio.run(runs.raise_events(client, ids, "cancel")) == ids
    assert client.most == runs.CLIENT_CALLS and client.calls == 200
    client = SlowClient()
    step = Step(ensure={iid: ServiceJob.from_json(job_json("r", iid)) for iid in ids}, stop=ids[:50], more=7)
    summary = asyncio.run(runs.act(client, "r", step))
    assert client.most == runs.CLIENT_CALLS and client.calls == 250
    assert summary.to_json() == {"started": 0, "stopping": 50, "done": False, "status": "running", "more": 7}


def test_signal_retries_are_bounded_to_about_two_seconds():
    assert 1.5 <= sum(runs.SIGNAL_RETRY_DELAYS) <= 2.5


def test_a_history_row_is_the_last_attempt_or_the_service_when_no_attempt_started():
    from tower.contracts import ServiceReport, ServiceResult

    report = ServiceReport(run_id="r-1", pipeline="p", result=ServiceResult("a"))
    ran = {"service": "a", "status": "failed", "attempts": 3, "started": "t0", "attempt_started": "t2",
           "finished": "t3", "remote_id": "q-3", "error": "exit code 1"}
    assert runs.history_row(report, ServiceResult.from_json(ran)) == {"run_id": "r-1", "pipeline": "p", "service": "a", "status": "failed",
                                             "attempt": 3, "started": "t2", "finished": "t3", "remote_id": "q-3",
                                             "error": "exit code 1"}
    lost = {"service": "b", "status": "failed", "attempts": 0, "started": "t0", "error": "its service run ended"}
    assert runs.history_row(report, ServiceResult.from_json(lost)) == {"run_id": "r-1", "pipeline": "p", "service": "b", "status": "failed",
                                              "attempt": 1, "started": "t0", "finished": None, "remote_id": None,
                                              "error": "its service run ended"}


class EndsAt:
    """Work that ends `seconds` after it was created, answering each poll with `hint` as `poll_after`;
    counts the polls (what `linger` is judged by: looks, not wall time)."""

    def __init__(self, seconds: float, hint: float | None = None):
        self.ends, self.hint, self.polls = time.monotonic() + seconds, hint, 0

    def poll(self, handle):
        self.polls += 1
        if time.monotonic() >= self.ends:
            return Status("succeeded")
        return Status("running", poll_after=self.hint)


def test_a_watch_without_a_hint_looks_again_ever_later():
    work = EndsAt(0.7)  # looks at about 0.05, 0.15, 0.35 and 0.75 s (each pause doubles)
    assert remote.linger(work, Handle("w"), Status("running"), budget=5.0).state == "succeeded"
    assert 3 <= work.polls <= 4, work.polls  # 14 at a fixed 0.05 s


def test_a_watch_follows_the_platforms_hint_and_a_steady_pace_when_given_one():
    hinted = EndsAt(0.7, hint=0.4)  # looks at 0.4 and 0.8 s, not at 0.05, 0.15, 0.35, 0.75
    assert remote.linger(hinted, Handle("w"), Status("running", poll_after=0.4), budget=5.0).state == "succeeded"
    assert hinted.polls == 2
    steady = EndsAt(0.45)  # `every` 0.1 s (the window of the expected end): 0.1, 0.2 ... 0.5, not 0.1, 0.3, 0.7
    assert remote.linger(steady, Handle("w"), Status("running"), budget=5.0, every=0.1).state == "succeeded"
    assert steady.polls >= 4, steady.polls


def test_a_watch_leaves_work_not_done_within_its_budget_to_the_durable_timers():
    work = EndsAt(3.0)
    started = time.monotonic()
    assert remote.linger(work, Handle("w"), Status("running"), budget=0.5).state == "running"
    assert time.monotonic() - started < 0.5 and work.polls == 3  # at 0.05, 0.15, 0.35; the next (0.75) is over
