"""The wire vocabulary the Durable extension and the Python SDK share: history event and action
type numbers, the runtime statuses, and the one timestamp format both sides parse.

Values are read off `azure.durable_functions.models.history.HistoryEventType` and
`models.actions.ActionType`; kept here as plain ints so the engine never imports the SDK for them.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

# History event types (HistoryEventType)
EXECUTION_STARTED = 0
EXECUTION_COMPLETED = 1
EXECUTION_FAILED = 2
EXECUTION_TERMINATED = 3
TASK_SCHEDULED = 4
TASK_COMPLETED = 5
TASK_FAILED = 6
SUB_CREATED = 7
SUB_COMPLETED = 8
SUB_FAILED = 9
TIMER_CREATED = 10
TIMER_FIRED = 11
ORCHESTRATOR_STARTED = 12
ORCHESTRATOR_COMPLETED = 13
EVENT_SENT = 14
EVENT_RAISED = 15
CONTINUE_AS_NEW = 16
EXECUTION_SUSPENDED = 19
EXECUTION_RESUMED = 20

EVENT_TYPE_NAMES = {
    0: "ExecutionStarted", 1: "ExecutionCompleted", 2: "ExecutionFailed", 3: "ExecutionTerminated",
    4: "TaskScheduled", 5: "TaskCompleted", 6: "TaskFailed", 7: "SubOrchestrationInstanceCreated",
    8: "SubOrchestrationInstanceCompleted", 9: "SubOrchestrationInstanceFailed", 10: "TimerCreated",
    11: "TimerFired", 12: "OrchestratorStarted", 13: "OrchestratorCompleted", 14: "EventSent",
    15: "EventRaised", 16: "ContinueAsNew", 19: "ExecutionSuspended", 20: "ExecutionResumed",
}

# Action types (ActionType)
CALL_ACTIVITY = 0
CALL_ACTIVITY_WITH_RETRY = 1
CALL_SUB_ORCHESTRATOR = 2
CALL_SUB_ORCHESTRATOR_WITH_RETRY = 3
CONTINUE_AS_NEW_ACTION = 4
CREATE_TIMER = 5
WAIT_FOR_EXTERNAL_EVENT = 6
CALL_ENTITY = 7
CALL_HTTP = 8
SIGNAL_ENTITY = 9
WHEN_ANY = 11
WHEN_ALL = 12

# Runtime statuses (OrchestrationRuntimeStatus values)
PENDING = "Pending"
RUNNING = "Running"
SUSPENDED = "Suspended"
COMPLETED = "Completed"
FAILED = "Failed"
TERMINATED = "Terminated"
TERMINAL = frozenset({COMPLETED, FAILED, TERMINATED, "Canceled"})
ALL_STATUSES = (PENDING, RUNNING, SUSPENDED, "ContinuedAsNew", COMPLETED, FAILED, TERMINATED, "Canceled")

# The marker the SDK puts between an orchestrator's error text and its state JSON.
OUT_OF_PROC_MARK = "$OutOfProcData$:"

# azure.durable_functions.constants.DATETIME_STRING_FORMAT: always UTC, with a literal Z.
TIME_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def fmt_time(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).strftime(TIME_FORMAT)


def parse_time(text: str) -> datetime:
    """Parse the SDK's format, and the ISO variants a person or a client may send."""
    try:
        return datetime.strptime(text, TIME_FORMAT).replace(tzinfo=timezone.utc)
    except ValueError:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
        return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


def after(moment: datetime, last: datetime | None) -> datetime:
    """`moment`, nudged past `last`: OrchestratorStarted timestamps must only move forward."""
    if last is not None and moment <= last:
        return last + timedelta(microseconds=1)
    return moment


def event(event_type: int, timestamp: str, event_id: int = -1, **fields) -> dict:
    """A history event in the PascalCase shape the SDK's HistoryEvent reads."""
    return {"EventType": event_type, "EventId": event_id, "IsPlayed": False, "Timestamp": timestamp,
            **fields}
