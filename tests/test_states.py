"""The state sets (tower.states): their words are stored data, so they never change; a member is its
word wherever it goes (text, JSON, a dict key, an Azure Table entity), and a word read back from a
store is the member."""

import json
import re
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

from tower.contracts import ServiceResult
from tower.runs.scheduler import CODE_STATES, STATE_CODES, Scheduler, expand_status
from tower.states import (
    DONE_FOR_DEPENDENTS,
    FINISHED_STATES,
    HOLDS_BACK_DEPENDENTS,
    TERMINAL_STATES,
    RemoteState,
    RunState,
    ServiceState,
)

T0 = datetime(2024, 6, 1, 12, 0, tzinfo=timezone.utc)
ROOT = Path(__file__).resolve().parent.parent


def test_the_words_are_the_ones_stored_ledgers_history_and_the_api_hold():
    assert [s.value for s in ServiceState] == ["pending", "running", "succeeded", "failed", "upstream_failed",
                                               "cancelled", "skipped"]
    assert [s.value for s in RemoteState] == ["running", "succeeded", "failed", "cancelled", "skipped"]
    assert [s.value for s in RunState] == ["starting", "running", "succeeded", "failed", "cancelled"]


def test_the_derived_sets():
    assert TERMINAL_STATES == (RemoteState.SUCCEEDED, RemoteState.FAILED, RemoteState.CANCELLED, RemoteState.SKIPPED)
    assert FINISHED_STATES == (ServiceState.SUCCEEDED, ServiceState.FAILED, ServiceState.UPSTREAM_FAILED,
                               ServiceState.CANCELLED, ServiceState.SKIPPED)
    assert DONE_FOR_DEPENDENTS == (ServiceState.SUCCEEDED, ServiceState.SKIPPED)
    assert HOLDS_BACK_DEPENDENTS == (ServiceState.FAILED, ServiceState.UPSTREAM_FAILED, ServiceState.CANCELLED)


def test_a_member_is_its_word_in_text_json_and_table_entities():
    from azure.data.tables._serialize import _add_entity_properties

    state = ServiceState.UPSTREAM_FAILED
    logged = "%s" % state  # noqa: UP031 (as logging formats it)
    assert (str(state), f"{state}", logged, format(state, ">16")) == (
        "upstream_failed", "upstream_failed", "upstream_failed", " upstream_failed")
    assert json.dumps({state: [RunState.CANCELLED, RemoteState.SKIPPED]}) == '{"upstream_failed": ["cancelled", "skipped"]}'
    # The Tables SDK writes an Enum as str(member): a plain (str, Enum) would store "ServiceState.FAILED".
    assert _add_entity_properties({"status": ServiceState.FAILED})["status"] == "failed"


def test_a_word_read_back_is_the_member():
    word = json.loads(json.dumps(ServiceState.CANCELLED))
    assert type(word) is str and word == ServiceState.CANCELLED and word in FINISHED_STATES
    assert {ServiceState.CANCELLED: 1}[word] == 1 and ServiceState(word) is ServiceState.CANCELLED
    assert RemoteState(word) is RemoteState.CANCELLED and RemoteState.CANCELLED is not ServiceState.CANCELLED


def test_every_service_state_has_one_compact_code():
    assert set(STATE_CODES) == set(ServiceState)
    assert all(len(code) == 1 for code in STATE_CODES.values()) and len(set(STATE_CODES.values())) == len(ServiceState)
    assert all(CODE_STATES[STATE_CODES[state]] is state for state in ServiceState)


def test_a_ledger_written_with_plain_words_restores_and_reports_the_same():
    """Records as any ledger stores them (JSON text): the scheduler takes them as they are."""
    plan = {"run_id": "r", "pipeline": "p", "platforms": {"x": {"max_concurrency": None}},
            "services": {name: {"deps": deps, "expected": 1.0, "platform": "x"}
                         for name, deps in (("a", []), ("b", ["a"]), ("c", ["b"]), ("d", []), ("e", []))}}
    records = json.loads('{"a": {"status": "succeeded"}, "b": {"status": "failed", "error": "boom"},'
                         ' "d": {"status": "running", "started": "2024-06-01T12:00:00Z"}, "e": {"status": "skipped"}}')
    scheduler = Scheduler.restore(plan, T0, records)
    status = json.loads(json.dumps(scheduler.compact_status(T0)))
    assert status["states"] == "sfurk" and status["status"] == "running"
    assert status["counts"] == {"running": 1, "succeeded": 1, "failed": 1, "upstream_failed": 1, "skipped": 1}
    assert [v["status"] for v in expand_status(plan, status).values()] == [
        "succeeded", "failed", "upstream_failed", "running", "skipped"]
    scheduler.finish("d", ServiceResult("d", "succeeded", attempts=1), T0)
    assert scheduler.status is RunState.FAILED and json.loads(json.dumps(scheduler.result(T0)))["status"] == "failed"


def test_the_state_sets_import_nothing_heavy():
    """Orchestrators import them on every replay: no SDK, no store, no other tower module."""
    code = ("import sys; import tower.states, tower.platforms.base, tower.runs.scheduler; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in "
            "('azure', 'snowflake', 'databricks', 'requests', 'sqlite3', 'opentelemetry', 'urllib3')))")
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout == "[]\n"
    code = "import sys; import tower.states; print(sorted(m for m in sys.modules if m.startswith('tower.')))"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout == \
        "['tower.states']\n"


def test_the_docs_list_the_states_the_code_has():
    readme = (ROOT / "README.md").read_text()
    lifecycle = re.search(r"`(pending → [^`]+)`", readme).group(1)
    assert re.split(r" → | \| ", lifecycle) == [state.value for state in ServiceState]
    assert re.search(r"`status` one of ([a-z_, ]+);", readme).group(1).split(", ") == [state.value for state in RunState]
    finished = ", ".join(FINISHED_STATES)  # the counts of `tower.run.finished`, in telemetry's order
    [monitoring] = [line for line in (ROOT / "docs/monitoring.md").read_text().splitlines() if "`tower.run.finished`" in line]
    assert ", ".join(f"`{state}`" for state in FINISHED_STATES) in monitoring
    assert finished in (ROOT / "docs/architecture.md").read_text()


def test_the_runtime_statuses_are_the_sdks():
    import azure.durable_functions as df

    from tower.states import ENDED_RUNTIMES, UNFINISHED_RUNTIMES, RuntimeStatus

    assert {status.value for status in RuntimeStatus} == {status.value for status in df.OrchestrationRuntimeStatus}
    assert set(UNFINISHED_RUNTIMES) | set(ENDED_RUNTIMES) == set(RuntimeStatus)
    assert not set(UNFINISHED_RUNTIMES) & set(ENDED_RUNTIMES)


def test_a_run_that_ended_without_its_result_failed_or_was_cancelled():
    from tower.runner import RunInfo
    from tower.states import RunState, run_state_of_ended

    assert run_state_of_ended("Terminated") is RunState.CANCELLED
    assert run_state_of_ended("Canceled") is RunState.CANCELLED
    assert run_state_of_ended("Failed") is RunState.FAILED
    assert run_state_of_ended("Completed") is RunState.FAILED  # pipeline_run always returns its result

    def info(runtime, result=None):
        return RunInfo.from_status({"instanceId": "run~p@1", "runtimeStatus": runtime, "output": result})

    assert info("Completed").status == "failed"  # was the runtime's own word, "completed", in no state set
    assert info("Completed", {"status": "succeeded"}).status == "succeeded"
    assert info("Suspended").status == "running" and not info("Suspended").finished
    assert info("Terminated").status == "cancelled" and info("Terminated").finished
