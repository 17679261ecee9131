"""The state sets, each named once: where remote work is, where a service of a run is, where a run is.

The sets share words but not meaning, so each is its own enum and a member says which set it is from:
``RemoteState.CANCELLED`` is the platform's word (someone cancelled the Databricks run),
``ServiceState.CANCELLED`` the run's (the service was stopped or never started because the run was
cancelled). Only the activities and ``service_run`` translate one into the other.

Members are ``str``s: equal to their value, hashed and JSON-encoded as it. Stored ledgers, history
rows, Durable payloads and the API carry the same text as before, and what is read back (a plain
string) compares equal to a member, so nothing converts on the way in: the scheduler's loops over
thousands of records compare strings, as before.
"""

from __future__ import annotations

import enum


class _State(str, enum.Enum):
    """``enum.StrEnum`` (Python 3.11) for 3.10 too: ``str()`` and f-strings give the value."""

    __str__ = str.__str__
    __format__ = str.__format__


class RemoteState(_State):
    """Where an adapter says the remote work is (``tower.platforms.base.Status.state``)."""

    RUNNING = "running"  # the only state that is not terminal
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    SKIPPED = "skipped"  # the platform chose not to run it (Databricks: EXCLUDED, a skipped run)


TERMINAL_STATES = tuple(state for state in RemoteState if state is not RemoteState.RUNNING)


class ServiceState(_State):
    """A service's state in a run: what the scheduler decides, the ledger stores, the API shows."""

    PENDING = "pending"  # not started: waiting for its dependencies or a free slot
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    UPSTREAM_FAILED = "upstream_failed"  # not run: a service it depends on failed or was cancelled
    CANCELLED = "cancelled"
    SKIPPED = "skipped"  # its remote work was skipped: counts as done for its dependents


FINISHED_STATES = tuple(state for state in ServiceState if state not in (ServiceState.PENDING, ServiceState.RUNNING))
DONE_FOR_DEPENDENTS = (ServiceState.SUCCEEDED, ServiceState.SKIPPED)  # a dependency in one lets dependents start
HOLDS_BACK_DEPENDENTS = tuple(state for state in FINISHED_STATES if state not in DONE_FOR_DEPENDENTS)  # -> upstream_failed


class RunState(_State):
    """A run's status: the runs index's, and a run's result (``Scheduler.status``: never STARTING)."""

    STARTING = "starting"  # claimed in the runs index; its orchestration not started yet
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"



class RuntimeStatus(_State):
    """Where Durable says an orchestration instance is (its ``runtimeStatus``): the backend's words,
    not Tower's. Only a run's own result says how it went; these say whether it still runs."""

    PENDING = "Pending"
    RUNNING = "Running"
    SUSPENDED = "Suspended"
    CONTINUED_AS_NEW = "ContinuedAsNew"
    COMPLETED = "Completed"
    FAILED = "Failed"
    CANCELED = "Canceled"
    TERMINATED = "Terminated"


UNFINISHED_RUNTIMES = (RuntimeStatus.PENDING, RuntimeStatus.RUNNING, RuntimeStatus.SUSPENDED,
                       RuntimeStatus.CONTINUED_AS_NEW)
ENDED_RUNTIMES = (RuntimeStatus.COMPLETED, RuntimeStatus.FAILED, RuntimeStatus.CANCELED, RuntimeStatus.TERMINATED)


def run_state_of_ended(runtime: str) -> RunState:
    """A run whose orchestration ended without the run's own result: terminated or canceled, the run
    was cancelled; failed, or completed with no result (which `pipeline_run` never does), it failed."""
    if runtime in (RuntimeStatus.TERMINATED, RuntimeStatus.CANCELED):
        return RunState.CANCELLED
    return RunState.FAILED
