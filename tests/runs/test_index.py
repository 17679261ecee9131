"""The runs index on both stores (SQLite, and Table Storage against Azurite): start once by a
conditional insert, newest-first listing with filters and continuation, repair links, retention."""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import replace
from datetime import datetime, timedelta, timezone

import pytest

from tests.conftest import AZURITE_ACCOUNT, AZURITE_KEY
from tests.ports import free_port
from tower.errors import RunExists
from tower.runs import index as ri
from tower.states import RunState
from tower.timestamps import iso

NOW = datetime.now(timezone.utc).replace(microsecond=0)


@pytest.fixture(params=["sqlite", "table"])
def index(request, tmp_path):
    if request.param == "sqlite":
        return ri.SqliteRunsIndex(tmp_path / "runs.db")
    from azure.core.credentials import AzureNamedKeyCredential

    url = f"{request.getfixturevalue('azurite_table_url')}/runs{uuid.uuid4().hex[:8]}"
    return ri.TableRunsIndex(url, credential=AzureNamedKeyCredential(AZURITE_ACCOUNT, AZURITE_KEY))


def row(run_id: str, started: datetime = NOW, pipeline: str = "p", status: str = RunState.STARTING, **more) -> ri.RunRow:
    return ri.RunRow(run_id=run_id, pipeline=pipeline, trigger="api", params_digest=ri.params_digest({"day": 1}),
                     status=status, started=iso(started), **more)


def run(coroutine):
    return asyncio.run(coroutine)


class Durable:
    """Stands in for Durable's start and status of one instance id (what start_once is given)."""

    def __init__(self, exists=False, fail=None, failures: int | None = None):
        self.exists, self.fail, self.starts = exists, fail, 0
        self.failures = failures    # how many starts fail with `fail` (None: all of them)

    async def start(self):
        self.starts += 1
        if self.fail and (self.failures is None or self.starts <= self.failures):
            raise self.fail
        self.exists = True

    async def instance(self) -> bool:
        return self.exists


# --- the store contract ------------------------------------------------------------------------

def test_insert_is_conditional_and_rows_round_trip(index):
    first = row("r-1", repair_of="r-0")
    assert index.get("r-1") is None
    assert index.insert(first) is None
    stored = index.get("r-1")
    assert stored == first and stored.tag is not None
    other = replace(first, pipeline="q")
    assert index.insert(other).pipeline == "p"  # the existing row, untouched
    assert index.get("r-1").pipeline == "p"


def test_replace_and_delete_refuse_a_row_changed_since_it_was_read(index):
    index.insert(row("r-1"))
    seen = index.get("r-1")
    assert index.replace(seen, replace(seen, status=RunState.RUNNING))
    assert not index.replace(seen, replace(seen, status="failed"))  # stale tag
    assert index.get("r-1").status == RunState.RUNNING
    assert not index.delete(seen)
    assert index.delete(index.get("r-1"))
    assert index.get("r-1") is None
    assert index.list()[0] == []  # the listing copy went too


def test_listing_is_newest_first_with_filters_since_and_continuation(index):
    starts = [NOW - timedelta(days=d, minutes=m) for d, m in ((40, 0), (33, 5), (20, 0), (2, 0), (0, 3), (0, 1))]
    for i, started in enumerate(starts):  # spans at least two months
        index.insert(row(f"r-{i}", started, pipeline="even" if i % 2 == 0 else "odd",
                         status="failed" if i == 2 else RunState.RUNNING))
    newest_first = [f"r-{i}" for i in reversed(range(len(starts)))]
    assert [r.run_id for r in index.list()[0]] == newest_first

    seen, token = [], None
    while True:
        page, token = index.list(limit=2, continuation=token)
        assert len(page) <= 2
        seen += [r.run_id for r in page]
        if token is None:
            break
    assert seen == newest_first

    assert [r.run_id for r in index.list(pipeline="even")[0]] == ["r-4", "r-2", "r-0"]
    assert [r.run_id for r in index.list(status="failed")[0]] == ["r-2"]
    assert [r.run_id for r in index.list(since=NOW - timedelta(days=21))[0]] == ["r-5", "r-4", "r-3", "r-2"]
    page, token = index.list(pipeline="odd", limit=1)
    assert [r.run_id for r in page] == ["r-5"] and token is not None
    assert [r.run_id for r in index.list(pipeline="odd", continuation=token)[0]] == ["r-3", "r-1"]


def test_delete_before_keeps_unfinished_and_recent_rows(index):
    index.insert(row("old-done", NOW - timedelta(days=50), status="succeeded"))
    index.insert(row("old-running", NOW - timedelta(days=50), status=RunState.RUNNING))
    index.insert(row("new-done", NOW - timedelta(days=1), status="succeeded"))
    assert index.delete_before(NOW - timedelta(days=45)) == 1
    assert index.get("old-done") is None
    assert index.get("old-running") is not None and index.get("new-done") is not None


# --- start once ---------------------------------------------------------------------------------

def test_a_run_starts_once_and_its_row_follows_it(index):
    durable = Durable()
    assert run(ri.start_once(index, row("r-1"), durable.start, durable.instance)) is True
    assert durable.starts == 1 and index.get("r-1").status == RunState.RUNNING
    with pytest.raises(RunExists, match="'r-1' exists already \\(running\\)"):
        run(ri.start_once(index, row("r-1"), durable.start, durable.instance))
    ri.record_end(index, "r-1", "p", "succeeded", iso(NOW), {"succeeded": 2})
    durable.exists = False  # purged: Durable no longer knows the id, the index does
    with pytest.raises(RunExists, match="succeeded"):
        run(ri.start_once(index, row("r-1"), durable.start, durable.instance))
    assert durable.starts == 1
    ended = index.get("r-1")
    assert (ended.status, ended.finished, ended.counts) == ("succeeded", iso(NOW), {"succeeded": 2})


def test_a_failed_start_leaves_no_claim_behind(index):
    durable = Durable(fail=RuntimeError("host unreachable"))
    with pytest.raises(RuntimeError, match="unreachable"):
        run(ri.start_once(index, row("r-1"), durable.start, durable.instance))
    assert index.get("r-1") is None
    durable.fail = None
    assert run(ri.start_once(index, row("r-1"), durable.start, durable.instance)) is True
    assert durable.starts == 2 and index.get("r-1").status == RunState.RUNNING


def _refused_connection() -> Exception:
    """The error aiohttp really raises when nothing listens where the client connects."""
    import aiohttp

    async def connect():
        async with aiohttp.ClientSession() as session:
            await session.get(f"http://127.0.0.1:{free_port()}/")  # nothing listens there

    try:
        run(connect())
    except Exception as exc:
        return exc
    raise AssertionError("a connection to a closed port succeeded")


@pytest.mark.parametrize("unsent", ["connector closed", "connection refused"])
def test_a_start_that_never_left_the_client_is_sent_again_once(index, unsent, caplog):
    import aiohttp

    error = aiohttp.ClientConnectionError("Connector is closed.") if unsent == "connector closed" else _refused_connection()
    durable = Durable(fail=error, failures=1)
    assert run(ri.start_once(index, row("r-1"), durable.start, durable.instance)) is True
    assert durable.starts == 2 and index.get("r-1").status == RunState.RUNNING
    assert "run r-1: its start never reached Durable" in caplog.text

    durable = Durable(fail=error)   # unsent twice: the caller hears of it, and the claim is gone
    with pytest.raises(type(error)):
        run(ri.start_once(index, row("r-2"), durable.start, durable.instance))
    assert durable.starts == 2 and index.get("r-2") is None


def test_a_start_that_may_have_reached_durable_is_not_sent_again(index):
    import aiohttp

    durable = Durable(fail=aiohttp.ServerDisconnectedError())   # sent; Durable may be acting on it
    with pytest.raises(aiohttp.ServerDisconnectedError):
        run(ri.start_once(index, row("r-1"), durable.start, durable.instance))
    assert durable.starts == 1 and index.get("r-1") is None


def test_a_start_refused_because_a_twin_took_the_claim_over_and_started_it_is_a_duplicate(index):
    durable = Durable(fail=Exception({"Message": "Something went wrong"}))  # the host's 500

    async def refused_while_a_twin_starts():
        twin = row("r-1", NOW + timedelta(seconds=1))  # it found the claim without an instance
        assert index.replace(index.get("r-1"), twin)
        durable.exists = True
        await durable.start()

    with pytest.raises(RunExists):
        run(ri.start_once(index, row("r-1"), refused_while_a_twin_starts, durable.instance))
    assert index.get("r-1").status == RunState.RUNNING and index.get("r-1").started == iso(NOW + timedelta(seconds=1))


@pytest.mark.parametrize("twin_saw_it", [False, True], ids=["alone", "a-twin-saw-it-started"])
def test_a_start_whose_reply_was_lost_is_this_calls_start(index, twin_saw_it):
    durable = Durable()

    async def reply_lost():
        durable.exists = True  # the instance was created; the caller never hears of it
        if twin_saw_it:  # a twin found the claim with an instance: a duplicate, and it marks the run running
            with pytest.raises(RunExists):
                await ri.start_once(index, row("r-1", NOW + timedelta(seconds=1)), durable.start, durable.instance)
        raise ConnectionResetError("Server disconnected")

    assert run(ri.start_once(index, row("r-1"), reply_lost, durable.instance)) is True
    assert durable.starts == 0 and index.get("r-1").status == RunState.RUNNING


def test_a_failed_start_over_a_claim_taken_over_is_a_duplicate_even_if_it_was_ours(index):
    # the claim's first starter may still be alive and have started it: this call cannot tell
    index.insert(row("r-1", NOW - timedelta(seconds=1)))
    durable = Durable()

    async def reply_lost():
        durable.exists = True
        raise ConnectionResetError("Server disconnected")

    with pytest.raises(RunExists):
        run(ri.start_once(index, row("r-1"), reply_lost, durable.instance))
    assert index.get("r-1").status == RunState.RUNNING


def test_a_claim_whose_starter_died_is_taken_over_unless_the_run_started(index):
    index.insert(row("died", NOW - timedelta(minutes=5)))  # claimed, then the process was killed
    durable = Durable()
    assert run(ri.start_once(index, row("died"), durable.start, durable.instance)) is True
    assert durable.starts == 1 and index.get("died").status == RunState.RUNNING
    assert [r.run_id for r in index.list()[0]] == ["died"]  # one listing row, at the new start

    index.insert(row("started", NOW - timedelta(minutes=5)))  # killed after the start worked
    durable = Durable(exists=True)
    with pytest.raises(RunExists):
        run(ri.start_once(index, row("started"), durable.start, durable.instance))
    assert durable.starts == 0 and index.get("started").status == RunState.RUNNING


def test_a_failed_starter_releases_only_its_own_claim(index):
    mine = row("r-1", NOW - timedelta(seconds=2))
    index.insert(mine)
    theirs = row("r-1", NOW)  # another starter took the claim over meanwhile
    assert index.replace(index.get("r-1"), theirs)
    ri.release(index, mine)  # my start failed
    assert index.get("r-1") == theirs
    ri.release(index, theirs)
    assert index.get("r-1") is None


def test_the_end_of_a_run_the_index_never_saw_makes_its_row(index):
    ri.record_end(index, "old", "p", "failed", iso(NOW), {"failed": 1}, started=iso(NOW - timedelta(hours=1)))
    found = index.get("old")
    assert (found.status, found.trigger, found.started) == ("failed", "unknown", iso(NOW - timedelta(hours=1)))


# --- repair links -------------------------------------------------------------------------------

def test_a_run_is_repaired_once_unless_asked_again(index):
    index.insert(row("orig", status="failed"))
    assert ri.link_repair(index, "orig", "fix-1") is None
    index.insert(row("fix-1", repair_of="orig"))
    with pytest.raises(RunExists, match="already repaired by fix-1"):
        ri.link_repair(index, "orig", "fix-2")
    assert ri.link_repair(index, "orig", "fix-2", again=True) == "fix-1"
    assert index.get("orig").repaired_by == "fix-2"
    ri.unlink_repair(index, "orig", "fix-2", "fix-1")  # fix-2 did not start
    assert index.get("orig").repaired_by == "fix-1"


def test_a_repair_that_never_started_does_not_block_the_next(index):
    index.insert(row("orig", status="failed"))
    ri.link_repair(index, "orig", "ghost")  # linked, but its claim was released
    assert ri.link_repair(index, "orig", "fix") == "ghost"
    assert index.get("orig").repaired_by == "fix"


# --- queries and settings ----------------------------------------------------------------------

def test_list_query_refuses_what_it_does_not_know():
    from tower.errors import UsageError

    query = ri.list_query({"pipeline": "p", "since": "7d", "limit": "5"})
    assert query["pipeline"] == "p" and query["limit"] == 5
    assert abs((datetime.now(timezone.utc) - timedelta(days=7) - query["since"]).total_seconds()) < 5
    assert ri.list_query({"since": "2026-12-01"})["since"] == datetime(2026, 12, 1, tzinfo=timezone.utc)
    for params, message in (({"pipline": "p"}, "unknown query parameter 'pipline'"),
                            ({"limit": "0"}, "limit: expected a whole number from 1 to 1000"),
                            ({"limit": "many"}, "limit"),
                            ({"since": "last week"}, "since: expected an ISO time"),
                            ({"continuation": "abc"}, "not a token this API returned")):
        with pytest.raises(UsageError, match=message):
            ri.list_query(params)


def test_params_digest_tells_params_apart_without_showing_them():
    digest = ri.params_digest({"password": "hunter2", "day": "1"})
    assert digest == ri.params_digest({"day": "1", "password": "hunter2"})
    assert digest != ri.params_digest({"day": "2", "password": "hunter2"}) and "hunter2" not in digest


def test_retention_setting(monkeypatch):
    from tower.errors import ConfigError

    monkeypatch.delenv("TOWER_RETENTION_DAYS", raising=False)
    assert ri.retention_days() == 30 and ri.tombstone_days() == 30 + ri.TOMBSTONE_EXTRA_DAYS
    monkeypatch.setenv("TOWER_RETENTION_DAYS", "7")
    assert ri.retention_days() == 7
    for bad in ("0", "-3", "a week"):
        monkeypatch.setenv("TOWER_RETENTION_DAYS", bad)
        with pytest.raises(ConfigError, match="TOWER_RETENTION_DAYS"):
            ri.retention_days()


def test_the_table_is_required_in_azure(monkeypatch, tmp_path):
    from tower.errors import ConfigError

    monkeypatch.delenv("TOWER_RUNS_TABLE_URL", raising=False)
    monkeypatch.setenv("WEBSITE_INSTANCE_ID", "abc")
    with pytest.raises(ConfigError, match="TOWER_RUNS_TABLE_URL is not set"):
        ri.index_from_environment(tmp_path)
    monkeypatch.delenv("WEBSITE_INSTANCE_ID")
    assert isinstance(ri.index_from_environment(tmp_path), ri.SqliteRunsIndex)
    monkeypatch.setenv("TOWER_RUNS_TABLE_URL", "https://acct.table.core.windows.net/runs")
    assert ri.index_from_environment(tmp_path).location == "https://acct.table.core.windows.net/runs"


# --- retention ------------------------------------------------------------------------------------

class DurableStore:
    """Instances by id: runtime status and creation time (what the purge asks of Durable)."""

    def __init__(self, instances: dict[str, tuple[str, datetime]]):
        self.instances = dict(instances)
        self.purged_before: list[datetime] = []

    async def runtime(self, instance_id):
        found = self.instances.get(instance_id)
        return found[0] if found else None

    async def purge(self, created_before):
        self.purged_before.append(created_before)
        old = [i for i, (state, created) in self.instances.items()
               if state in ("Completed", "Failed", "Terminated") and created < created_before]
        for instance_id in old:
            del self.instances[instance_id]
        return len(old)


def test_purge_settles_keeps_running_runs_whole_and_leaves_tombstones(tmp_path):
    from tower.runs.history import SqliteRunHistory
    from tower.runs.ledger_sqlite import SqliteRunLedger

    index = ri.SqliteRunsIndex(tmp_path / "runs.db")
    ledger, history = SqliteRunLedger(tmp_path / "ledger.db"), SqliteRunHistory(tmp_path / "history.db")
    day = timedelta(days=1)
    index.insert(row("done", NOW - 40 * day, status="succeeded"))
    index.insert(row("ancient", NOW - 60 * day, status="failed"))
    index.insert(row("long", NOW - 35 * day, status=RunState.RUNNING))         # still running after 35 days
    index.insert(row("crashed", NOW - 38 * day, status=RunState.RUNNING))      # pipeline_run failed: no run_result
    index.insert(row("never", NOW - 2 * day))                            # claimed, never started
    index.insert(row("lost", NOW - 3 * day, status=RunState.RUNNING))          # its task hub was replaced
    index.insert(row("recent", NOW - day, status="succeeded"))
    for run_id in ("done", "long", "recent"):
        core = {"run_id": run_id, "pipeline": "p", "simulated": False, "platforms": {}, "services": {}}
        ledger.create(run_id, core, {"started": iso(NOW), "cancel": False}, {}, {})
    history.record({"run_id": "done", "service": "a", "status": "succeeded", "finished": iso(NOW - 40 * day)})
    history.record({"run_id": "recent", "service": "a", "status": "succeeded", "finished": iso(NOW - day)})
    with history._connect() as db:  # recorded when it finished
        db.execute("UPDATE attempts SET recorded = ? WHERE run_id = 'done'", ((NOW - 40 * day).timestamp(),))
    durable = DurableStore({
        "done": ("Completed", NOW - 40 * day), "done:a": ("Completed", NOW - 40 * day),
        "long": ("Running", NOW - 35 * day), "long:a": ("Completed", NOW - 35 * day),
        "crashed": ("Failed", NOW - 38 * day), "recent": ("Completed", NOW - day)})

    report = run(ri.purge(index, ledger, history, durable, NOW, retention=30))

    assert durable.purged_before == [NOW - 35 * day]  # not one service run of the running run goes
    assert set(durable.instances) == {"long", "long:a", "recent"}
    assert index.get("crashed").status == "failed" and index.get("never") is None
    assert index.get("lost").status == "failed"
    assert ledger.version("done") is None and ledger.version("long") == 1 and ledger.version("recent") == 1
    assert [a.run_id for a in history.attempts("done")] == [] and len(history.attempts("recent")) == 1
    assert index.get("done").purged and not index.get("recent").purged
    assert index.get("ancient") is None  # past the tombstone: 30 + 14 days
    assert report == {"settled": 3, "instances": 3, "ledger_runs": 1, "history_rows": 1, "index_rows": 1}

    durable2 = Durable()
    with pytest.raises(RunExists, match="succeeded"):  # a late redelivery of a purged run
        run(ri.start_once(index, row("done"), durable2.start, durable2.instance))
    assert durable2.starts == 0
    again = run(ri.purge(index, ledger, history, durable, NOW, retention=30))
    assert again["ledger_runs"] == 0 and again["settled"] == 0


@pytest.fixture
def stores(request, tmp_path):
    """(ledger, history) of one kind: SQLite files, or tables in Azurite."""
    from tower.runs.history import SqliteRunHistory, TableRunHistory
    from tower.runs.ledger_sqlite import SqliteRunLedger
    from tower.runs.ledger_table import TableRunLedger

    if request.param == "sqlite":
        return SqliteRunLedger(tmp_path / "ledger.db"), SqliteRunHistory(tmp_path / "history.db")
    from azure.core.credentials import AzureNamedKeyCredential

    base, key = request.getfixturevalue("azurite_table_url"), AzureNamedKeyCredential(AZURITE_ACCOUNT, AZURITE_KEY)
    return (TableRunLedger(f"{base}/ledger{uuid.uuid4().hex[:8]}", credential=key),
            TableRunHistory(f"{base}/history{uuid.uuid4().hex[:8]}", credential=key))


@pytest.mark.parametrize("stores", ["sqlite", "table"], indirect=True)
def test_ledger_and_history_delete_what_retention_asks(stores):
    ledger, history = stores
    names = [f"s{i}" for i in range(130)]  # more than one transaction of deletes
    services = {n: {"deps": [], "expected": 1.0, "platform": "sim", "iid": f"x:{n}"} for n in names}
    for run_id in ("old", "new"):
        core = {"run_id": run_id, "pipeline": "p", "simulated": False,
                "platforms": {"sim": {"max_concurrency": None}}, "services": services}
        ledger.create(run_id, core, {"started": iso(NOW), "cancel": False}, {n: {"n": n} for n in names},
                      {n: {"status": "pending", "attempts": 0} for n in names})
    assert ledger.delete_runs(["old", "missing"]) == 1
    assert ledger.version("old") is None and ledger.load("old") is None
    assert len(ledger.load("new").records) == 130

    for days, run_id in ((40, "old"), (1, "new")):
        history.record_many({"run_id": run_id, "service": n, "status": "succeeded", "duration": 1.0,
                             "finished": iso(NOW - timedelta(days=days))} for n in names[:110])
    if hasattr(history, "_connect"):  # SQLite keeps when a row was recorded: make it when it finished
        with history._connect() as db:
            db.execute("UPDATE attempts SET recorded = ? WHERE run_id = 'old'",
                       ((NOW - timedelta(days=40)).timestamp(),))
    assert history.delete_before(NOW - timedelta(days=30)) == 110
    assert history.attempts("old", names) == [] and len(history.attempts("new", names)) == 110


def test_threads_opening_a_fresh_index_at_once_all_get_it(tmp_path):
    """The first requests after a start open runs.db together: switching a new file to WAL does not
    wait on the busy timeout, so without a retry some of them failed with 'database is locked'."""
    import threading

    failures = []
    for attempt in range(60):
        path, barrier = tmp_path / f"runs{attempt}.db", threading.Barrier(8)

        def open_and_claim(path=path, barrier=barrier):
            barrier.wait()
            try:
                ri.SqliteRunsIndex(path).insert(row("r-1"))
            except Exception as exc:  # noqa: BLE001 - collected and asserted below
                failures.append(repr(exc))

        threads = [threading.Thread(target=open_and_claim) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert failures == []


def test_a_row_change_that_loses_every_race_is_a_ledger_conflict(tmp_path):
    from tower.errors import LedgerConflict

    class Losing(ri.SqliteRunsIndex):
        def replace(self, old, new) -> bool:
            return False

    index = Losing(tmp_path / "runs.db")
    index.insert(row("r-1"))
    with pytest.raises(LedgerConflict, match=r"'r-1': the runs index kept changing under this host"):
        ri.change(index, "r-1", lambda seen: replace(seen, status=RunState.RUNNING))
    assert index.get("r-1").status == RunState.STARTING
