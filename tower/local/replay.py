"""A re-enactment of what the Durable extension does with the actions a Python orchestrator returns.

The extension's out-of-process shim (`ProcessAsyncActionsV2`) walks the outer action list and, for
each top-level action, invokes it and *awaits it before invoking the next one*. WhenAll/WhenAny map
to `Task.WhenAll`/`Task.WhenAny` of their children; one event-id counter numbers every task and
timer in invocation order; `*WithRetry` actions go through DTFx's retry interceptor, which schedules
a timer after every failed attempt, the last one included. DTFx replays that code against the
history on every episode, so we do the same: walk the history, complete nodes, invoke further
actions as top-level ones finish, and see which ids are new (work to start now) and whether the
recorded TaskScheduled / TimerCreated / SubOrchestrationInstanceCreated events still match.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import timedelta

from tower.errors import EngineError, NonDeterminismError
from tower.local import history as h

ACTIVITY, TIMER, SUB_ORCHESTRATION = "activity", "timer", "suborchestration"
_RECORDED_KIND = {h.TASK_SCHEDULED: ACTIVITY, h.TIMER_CREATED: TIMER, h.SUB_CREATED: SUB_ORCHESTRATION}
_KIND_EVENT_NAME = {ACTIVITY: "TaskScheduled", TIMER: "TimerCreated",
                    SUB_ORCHESTRATION: "SubOrchestrationInstanceCreated"}


# What .NET's Task.WhenAny says when the shim hands it no tasks; the extension lets it fail the
# orchestration (the SDK itself never sends one: a task_any of scheduled tasks adds no action).
EMPTY_WHEN_ANY = "The tasks argument contains no tasks. (Parameter 'tasks')"


class EmptyWhenAny(EngineError):
    """Raised where Azure's shim throws: the orchestration fails."""


@dataclass(frozen=True)
class Work:
    """One numbered thing the shim asked the runtime for: an activity, a timer or a sub-orchestration."""

    event_id: int
    kind: str
    name: str | None = None
    input: str | None = None
    fire_at: str | None = None
    instance_id: str | None = None


@dataclass(frozen=True)
class Outcome:
    new_work: tuple[Work, ...]     # invoked for the first time in this episode, in id order
    cancelled_timers: tuple[int, ...]  # scheduled earlier, not fired, cancelled by the orchestrator


class _Node:
    """A C# task in the shim: a leaf (task/timer/event), a compound (all/any) or a retry loop."""

    __slots__ = ("kind", "parent", "children", "done", "failed", "action", "attempt", "event_id")

    def __init__(self, kind: str, parent: _Node | None):
        self.kind, self.parent = kind, parent
        self.children: list[_Node] | None = None
        self.done = self.failed = False


class _Shim:
    def __init__(self, actions: list[dict]):
        self.actions = actions
        self.top: list[_Node] = []
        self.work: dict[int, Work] = {}
        self.nodes: dict[int, _Node] = {}
        self.cancelled: set[int] = set()
        self.waiters: dict[str, list[_Node]] = defaultdict(list)
        self.buffered: dict[str, int] = defaultdict(int)
        self.next_id = 0
        self.now = None

    # -- invoking actions
    def _leaf(self, node_kind: str, parent: _Node | None, **work) -> _Node:
        node = _Node(node_kind, parent)
        node.event_id = self.next_id
        self.next_id += 1
        self.nodes[node.event_id] = node
        self.work[node.event_id] = Work(node.event_id, **work)
        return node

    def _task(self, action: dict, parent: _Node | None) -> _Node:
        if action["actionType"] in (h.CALL_ACTIVITY, h.CALL_ACTIVITY_WITH_RETRY):
            return self._leaf("task", parent, kind=ACTIVITY, name=action["functionName"],
                              input=action.get("input"))
        return self._leaf("task", parent, kind=SUB_ORCHESTRATION, name=action["functionName"],
                          input=action.get("input"), instance_id=action.get("instanceId"))

    def invoke(self, action: dict, parent: _Node | None = None) -> _Node:
        kind = action["actionType"]
        if kind in (h.CALL_ACTIVITY, h.CALL_SUB_ORCHESTRATOR):
            return self._task(action, parent)
        if kind in (h.CALL_ACTIVITY_WITH_RETRY, h.CALL_SUB_ORCHESTRATOR_WITH_RETRY):
            loop = _Node("retry", parent)
            loop.action, loop.attempt = action, 1
            self._task(action, loop)
            return loop
        if kind == h.CREATE_TIMER:
            node = self._leaf("timer", parent, kind=TIMER, fire_at=action["fireAt"])
            if action.get("isCanceled"):        # the shim cancels its C# timer: the task ends at once
                self.cancelled.add(node.event_id)
                self.finish(node, False)
            return node
        if kind == h.WAIT_FOR_EXTERNAL_EVENT:   # no event id: matched by name, buffered when early
            node, name = _Node("event", parent), action["externalEventName"]
            if self.buffered[name]:
                self.buffered[name] -= 1
                self.finish(node, False)
            else:
                self.waiters[name].append(node)
            return node
        if kind == h.CONTINUE_AS_NEW_ACTION:    # fire-and-forget
            node = _Node("continue", parent)
            node.done = True
            return node
        if kind == h.WHEN_ANY and not action.get("compoundActions"):
            raise EmptyWhenAny(EMPTY_WHEN_ANY)
        if kind in (h.WHEN_ANY, h.WHEN_ALL):
            node = _Node("any" if kind == h.WHEN_ANY else "all", parent)
            node.children = [self.invoke(child, node) for child in action.get("compoundActions") or []]
            if node.children:
                self._settle(node)
            else:
                self.finish(node, False)
            return node
        raise EngineError(f"action type {kind} (entities, call_http) is not supported by the local "
                          "engine; run this orchestrator on Azure or remove the call")

    def advance(self) -> None:
        """ProcessAsyncActionsV2: `foreach (action in actions) { await Invoke(action); }`."""
        while len(self.top) < len(self.actions) and (not self.top or self.top[-1].done):
            self.top.append(self.invoke(self.actions[len(self.top)]))

    # -- completing tasks
    def finish(self, node: _Node, failed: bool) -> None:
        if node.done:
            return
        node.done, node.failed = True, failed
        parent = node.parent
        if parent is None:
            return
        if parent.kind == "retry":
            self._retry_step(parent, node, failed)
        elif parent.children is not None:       # compound whose children are all invoked
            self._settle(parent)

    def _retry_step(self, loop: _Node, node: _Node, failed: bool) -> None:
        options = loop.action["retryOptions"]
        if node.kind == "retry_timer":
            if loop.attempt < options["maxNumberOfAttempts"]:
                loop.attempt += 1
                self._task(loop.action, loop)
            else:
                self.finish(loop, True)
        elif failed:                            # DTFx: a timer after every failure, the last too
            fire_at = self.now + timedelta(milliseconds=options["firstRetryIntervalInMilliseconds"])
            self._leaf("retry_timer", loop, kind=TIMER, fire_at=h.fmt_time(fire_at))
        else:
            self.finish(loop, False)

    def _settle(self, node: _Node) -> None:
        children = node.children
        if node.kind == "all" and all(c.done for c in children):
            self.finish(node, any(c.failed for c in children))
        elif node.kind == "any" and any(c.done for c in children):
            self.finish(node, False)

    def complete(self, event_id: int, failed: bool, event: dict) -> None:
        node = self.nodes.get(event_id)
        if node is None:
            raise NonDeterminismError(
                f"history event {h.EVENT_TYPE_NAMES.get(event['EventType'])} refers to task #{event_id}, "
                "which the orchestrator no longer schedules")
        self.finish(node, failed)

    def raise_event(self, name: str) -> None:
        if self.waiters[name]:
            self.finish(self.waiters[name].pop(0), False)
        else:
            self.buffered[name] += 1


def replay(actions: list[dict], history: list[dict]) -> Outcome:
    """Re-enact the shim over `actions` (the SDK's single outer list) and the full `history`."""
    shim = _Shim(actions)
    recorded: set[int] = set()
    fired: set[int] = set()
    for event in history:
        kind = event["EventType"]
        if kind == h.ORCHESTRATOR_STARTED:
            shim.now = h.parse_time(event["Timestamp"])
        elif kind in _RECORDED_KIND:
            _check_recorded(shim, event, _RECORDED_KIND[kind])
            recorded.add(event["EventId"])
        elif kind in (h.TASK_COMPLETED, h.SUB_COMPLETED):
            shim.complete(event["TaskScheduledId"], False, event)
        elif kind in (h.TASK_FAILED, h.SUB_FAILED):
            shim.complete(event["TaskScheduledId"], True, event)
        elif kind == h.TIMER_FIRED:
            fired.add(event["TimerId"])
            shim.complete(event["TimerId"], False, event)
        elif kind == h.EVENT_RAISED:
            shim.raise_event(event["Name"])
        shim.advance()
    shim.advance()
    new = tuple(shim.work[i] for i in sorted(shim.work)
                if i not in recorded and i not in shim.cancelled)
    cancelled = tuple(sorted(i for i in shim.cancelled if i in recorded and i not in fired))
    return Outcome(new, cancelled)


def _check_recorded(shim: _Shim, event: dict, kind: str) -> None:
    """The host's non-determinism check: a recorded event must match the replayed action."""
    event_id = event["EventId"]
    work = shim.work.get(event_id)
    recorded = f"{_KIND_EVENT_NAME[kind]} #{event_id}" + (f" '{event['Name']}'" if event.get("Name") else "")
    if work is None:
        raise NonDeterminismError(
            f"the history has {recorded}, but the orchestrator no longer schedules anything with id "
            f"#{event_id}; orchestrator code must not change while an instance is in flight")
    if work.kind != kind or (kind != TIMER and work.name != event.get("Name")):
        now = f"{_KIND_EVENT_NAME[work.kind]}" + (f" '{work.name}'" if work.name else "")
        raise NonDeterminismError(
            f"the history has {recorded}, but replaying the orchestrator now schedules {now} with that "
            "id; orchestrator code must not change while an instance is in flight")
