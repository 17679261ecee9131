"""A v2-model Durable app exercising every engine feature; `make_app()` builds a fresh app object
(an app's functions can be listed only once). Activities record what happened in `RECORD`."""

from __future__ import annotations

import asyncio
import os
import threading
import time
from datetime import timedelta

import azure.durable_functions as df
import azure.functions as func

RECORD: list[tuple[str, object, float]] = []     # (what, detail, monotonic time)
ATTEMPTS: dict[str, int] = {}
TOGGLE = {"changed": False}
_lock = threading.Lock()

# node -> (dependencies, seconds). a finishes first and starts the long c; d becomes ready when b
# finishes (0.4 s), while c still runs: the question is whether d starts then or after c.
DAG = {"a": ([], 0.1), "b": ([], 0.4), "c": (["a"], 0.8), "d": (["b"], 0.1)}


def note(what: str, detail: object) -> None:
    with _lock:
        RECORD.append((what, detail, time.monotonic()))


def reset() -> None:
    RECORD.clear()
    ATTEMPTS.clear()
    TOGGLE["changed"] = False


def make_app() -> df.DFApp:
    app = df.DFApp(http_auth_level=func.AuthLevel.ANONYMOUS)
    bp = df.Blueprint()

    @bp.activity_trigger(input_name="job")
    def work(job: dict) -> str:
        note("start", job["node"])
        time.sleep(job.get("secs", 0))
        note("end", job["node"])
        return job["node"].upper()

    @bp.activity_trigger(input_name="key")
    async def flaky(key: str) -> str:
        n = ATTEMPTS[key] = ATTEMPTS.get(key, 0) + 1
        note("flaky", n)
        if n < int(key.split(":")[1]):
            raise RuntimeError(f"transient failure #{n}")
        return f"ok after {n}"

    @bp.activity_trigger(input_name="secs")
    async def linger(secs: float) -> str:
        note("linger", secs)
        try:
            await asyncio.sleep(secs)
        except asyncio.CancelledError:
            note("linger cancelled", secs)
            raise
        return "lingered"

    @bp.orchestration_trigger(context_name="context")
    def lingering(context: df.DurableOrchestrationContext):
        return (yield context.call_activity("linger", context.get_input()))

    @bp.activity_trigger(input_name="setting")
    def leaky(setting: str) -> str:
        raise RuntimeError(f"cannot connect with {os.environ[setting]}")

    @bp.orchestration_trigger(context_name="context")
    def leaking(context: df.DurableOrchestrationContext):
        return (yield context.call_activity("leaky", context.get_input()))

    @bp.activity_trigger(input_name="name")
    @bp.durable_client_input(client_name="client")
    async def spawn(name: str, client: df.DurableOrchestrationClient) -> str:
        return await client.start_new(name, None, {"n": 1})

    @bp.orchestration_trigger(context_name="context")
    def dag(context: df.DurableOrchestrationContext):
        """Start every node as soon as its dependencies are done: task_any in a loop. With `timer`,
        every batch of new work is yielded with a zero-delay timer, so the extension's top-level
        WhenAny completes at once and later actions are not held behind it."""
        with_timer = context.get_input()["timer"]
        done, running, order = {}, {}, []
        while len(done) < len(DAG):
            new = False
            for node, (deps, secs) in DAG.items():
                if node not in done and node not in running and all(d in done for d in deps):
                    running[node] = context.call_activity("work", {"node": node, "secs": secs})
                    new = True
            waiting = list(running.values())
            if new and with_timer:
                waiting.append(context.create_timer(context.current_utc_datetime))
            winner = yield context.task_any(waiting)
            node = next((n for n, t in running.items() if t is winner), None)
            if node is not None:
                done[node] = winner.result
                order.append(node)
                del running[node]
        return order

    @bp.orchestration_trigger(context_name="context")
    def sequence(context: df.DurableOrchestrationContext):
        results = []
        for i in range(context.get_input()["n"]):
            results.append((yield context.call_activity("work", {"node": f"s{i}"})))
        return results

    @bp.orchestration_trigger(context_name="context")
    def fan(context: df.DurableOrchestrationContext):
        n = context.get_input()["n"]
        return (yield context.task_all([context.call_activity("work", {"node": f"f{i}", "secs": 0.05})
                                        for i in range(n)]))

    @bp.orchestration_trigger(context_name="context")
    def retrying(context: df.DurableOrchestrationContext):
        options = df.RetryOptions(first_retry_interval_in_milliseconds=50, max_number_of_attempts=3)
        try:
            return (yield context.call_activity_with_retry("flaky", options, context.get_input()))
        except Exception as exc:
            return f"gave up: {exc}".split(" \n ")[0]

    @bp.orchestration_trigger(context_name="context")
    def timers(context: df.DurableOrchestrationContext):
        yield context.create_timer(context.current_utc_datetime + timedelta(milliseconds=200))
        deadline = context.create_timer(context.current_utc_datetime + timedelta(hours=1))
        approval = context.wait_for_external_event("approve")
        winner = yield context.task_any([approval, deadline])
        if winner is approval:
            deadline.cancel()
            return {"approved": approval.result}
        return "timed out"

    @bp.orchestration_trigger(context_name="context")
    def parent(context: df.DurableOrchestrationContext):
        first = yield context.call_sub_orchestrator("child", {"node": "x"}, context.instance_id + "-child")
        options = df.RetryOptions(first_retry_interval_in_milliseconds=50, max_number_of_attempts=2)
        try:
            yield context.call_sub_orchestrator_with_retry("child", options, {"fail": True})
            second = "no failure"
        except Exception as exc:
            second = str(exc).split(" \n ")[0]
        return [first, second]

    @bp.orchestration_trigger(context_name="context")
    def child(context: df.DurableOrchestrationContext):
        job = context.get_input()
        if job.get("fail"):
            raise ValueError("child refused")
        return (yield context.call_activity("work", job))

    @bp.orchestration_trigger(context_name="context")
    def events(context: df.DurableOrchestrationContext):
        context.set_custom_status({"stage": "waiting"})
        a = yield context.wait_for_external_event("a")
        b = yield context.wait_for_external_event("b")
        context.set_custom_status({"stage": "done"})
        return [a, b]

    @bp.orchestration_trigger(context_name="context")
    def counter(context: df.DurableOrchestrationContext):
        n = context.get_input()
        yield context.call_activity("work", {"node": f"c{n}"})
        if n < 3:
            context.continue_as_new(n + 1)
            return None
        return n

    @bp.orchestration_trigger(context_name="context")
    def waiter(context: df.DurableOrchestrationContext):
        value = yield context.wait_for_external_event("go")
        yield context.call_activity("work", {"node": "after-go"})
        return value

    @bp.orchestration_trigger(context_name="context")
    def changing(context: df.DurableOrchestrationContext):
        """Calls 'work', then waits; once TOGGLE changes, the same history replays a different call."""
        if TOGGLE["changed"]:
            yield context.call_activity("flaky", "k:1")
        else:
            yield context.call_activity("work", {"node": "v1"})
        yield context.wait_for_external_event("go")
        return "unreachable when changed"

    @bp.orchestration_trigger(context_name="context")
    def failing(context: df.DurableOrchestrationContext):
        yield context.call_activity("work", {"node": "before-failure"})
        raise ValueError("boom")

    @bp.orchestration_trigger(context_name="context")
    def spawner(context: df.DurableOrchestrationContext):
        return (yield context.call_activity("spawn", "sequence"))

    @bp.activity_trigger(input_name="job")
    def append(job: dict) -> int:
        """A side effect per run: 'begin i' when it starts, 'done i' when it completes."""
        with open(job["file"], "a") as out:
            out.write(f"begin {job['i']}\n")
        time.sleep(job["secs"])
        with open(job["file"], "a") as out:
            out.write(f"done {job['i']}\n")
        return job["i"]

    @bp.orchestration_trigger(context_name="context")
    def crashy(context: df.DurableOrchestrationContext):
        """Sequential steps, then a fan-out: a crash can land in either."""
        job = context.get_input()
        total = 0
        for i in range(job["steps"]):
            total += yield context.call_activity("append", {"file": job["file"], "i": i, "secs": job["secs"]})
        wave = [context.call_activity("append", {"file": job["file"], "i": 100 + i, "secs": job["secs"]})
                for i in range(job["fan"])]
        return total + sum((yield context.task_all(wave)))

    @bp.activity_trigger(input_name="job")
    def stamp(job: dict) -> int:
        """A side effect per run that says which process ran it: 'i pid'."""
        time.sleep(job.get("secs", 0))
        with open(job["file"], "a") as out:
            out.write(f"{job['i']} {os.getpid()}\n")
        return job["i"]

    @bp.orchestration_trigger(context_name="context")
    def stamped(context: df.DurableOrchestrationContext):
        """Steps with a short timer between them, then a fan-out (what a run's services look like)."""
        job = context.get_input()
        total = 0
        for i in range(job["steps"]):
            total += yield context.call_activity("stamp", {**job, "i": i})
            yield context.create_timer(context.current_utc_datetime + timedelta(milliseconds=30))
        wave = [context.call_activity("stamp", {**job, "i": 100 + i}) for i in range(job["fan"])]
        return total + sum((yield context.task_all(wave)))

    app.register_functions(bp)
    return app
