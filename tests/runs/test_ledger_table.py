"""TableRunLedger against Azurite's real Table API: the RunLedger contract, limits, and concurrency."""

import base64
import json
import os
import threading
import uuid
from datetime import datetime, timedelta, timezone

import pytest

from tests.conftest import AZURITE_ACCOUNT, AZURITE_KEY
from tests.runs.jobs import job_json, named
from tower.contracts import ServiceResult
from tower.errors import RecordTooLarge, RunNotInLedger, ServiceNotInLedger
from tower.runs import ledger as dispatch
from tower.runs.ledger import Snapshot, ledger_from_environment
from tower.runs.ledger_table import (
    MAX_ENTITY,
    TableRunLedger,
    pack,
    partition_key,
    stored_size,
    unpack,
)
from tower.runtime import Runtime
from tower.states import ServiceState

T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)


@pytest.fixture
def table_url(azurite_table_url):
    return f"{azurite_table_url}/ledger{uuid.uuid4().hex[:8]}"


def open_ledger(table_url: str) -> TableRunLedger:
    from azure.core.credentials import AzureNamedKeyCredential

    return TableRunLedger(table_url, credential=AzureNamedKeyCredential(AZURITE_ACCOUNT, AZURITE_KEY))


@pytest.fixture
def ledger(table_url):
    return open_ledger(table_url)


def run_of(names, run_id="run-1"):
    """(core, meta, inputs, records) of a run whose services are `names`, a chain in that order."""
    services = {name: {"deps": [prev] if prev is not None else [], "expected": 1.0, "platform": "sim",
                       "iid": f"{run_id}:{i}"}
                for i, (prev, name) in enumerate(zip([None, *names[:-1]], names, strict=True))}
    core = {"run_id": run_id, "pipeline": "p", "simulated": False,
            "platforms": {"sim": {"max_concurrency": None}}, "services": services}
    inputs = {name: {"service": name, "position": i} for i, name in enumerate(names)}
    records = {name: {"status": "pending", "attempts": 0} for name in names}
    return core, {"started": "2026-01-01T00:00:00Z", "cancel": False}, inputs, records


def test_create_load_round_trip(ledger):
    core, meta, inputs, records = run_of(["a", "b", "c"])
    assert ledger.version("run-1") is None and ledger.load("run-1") is None
    assert ledger.create("run-1", core, meta, inputs, records) is True
    assert ledger.version("run-1") == 1
    assert ledger.load("run-1") == Snapshot(1, core, meta, records)
    assert ledger.load("run-1", since=1) == Snapshot(1, None, meta, records)  # a since-load carries no core
    assert ledger.meta("run-1") == meta
    assert ledger.service_inputs("run-1", ["b"])["b"] == {"service": "b", "position": 1}
    with pytest.raises(ServiceNotInLedger, match="has no service 'zzz'"):
        ledger.service_inputs("run-1", ["zzz"])["zzz"]
    with pytest.raises(RunNotInLedger, match="'nope' is not in the run ledger"):
        ledger.service_inputs("nope", ["a"])["a"]


def test_create_twice_keeps_the_first(ledger, table_url):
    core, meta, inputs, records = run_of(["a", "b"])
    assert ledger.create("run-1", core, meta, inputs, records) is True
    other_meta = {**meta, "cancel": True}
    other_inputs = {name: {"other": True} for name in inputs}
    assert ledger.create("run-1", core, other_meta, other_inputs, records) is False
    assert open_ledger(table_url).create("run-1", core, other_meta, other_inputs, records) is False
    assert ledger.load("run-1").meta == meta
    assert ledger.service_inputs("run-1", ["a"])["a"] == inputs["a"]


def test_a_conflict_on_insert_means_the_run_exists(table_url):
    core, meta, inputs, records = run_of(["a", "b"])
    first, late = open_ledger(table_url), open_ledger(table_url)
    late._run_entity = lambda *args, **kwargs: None  # its check ran before `first` inserted the run
    assert first.create("run-1", core, meta, inputs, records) is True
    assert late.create("run-1", core, {**meta, "cancel": True}, inputs, records) is False
    assert first.load("run-1") == Snapshot(1, core, meta, records)


def test_concurrent_creates_one_wins(table_url):
    core, meta, inputs, records = run_of([f"s{i}" for i in range(120)])  # two transactions each
    ledgers = [open_ledger(table_url) for _ in range(3)]
    barrier, outcomes = threading.Barrier(3), []

    def create(ledger):
        barrier.wait()
        outcomes.append(ledger.create("run-1", core, meta, inputs, records))

    threads = [threading.Thread(target=create, args=(ledger,)) for ledger in ledgers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(outcomes) == [False, False, True]
    assert ledgers[0].load("run-1") == Snapshot(1, core, meta, records)


def test_save_bumps_version_and_writes_only_given_records(ledger, table_url):
    core, meta, inputs, records = run_of(["a", "b", "c"])
    ledger.create("run-1", core, meta, inputs, records)
    running = {"status": "running", "attempts": 0, "started": "2026-01-01T00:00:01Z"}
    assert ledger.save("run-1", 1, {**meta, "cancel": True}, {"b": running}) is True
    snapshot = open_ledger(table_url).load("run-1")
    assert snapshot.version == 2 and snapshot.meta == {**meta, "cancel": True}
    assert snapshot.records == {**records, "b": running}
    assert ledger.save("run-1", 2, meta, {}) is True  # meta alone still bumps the version
    assert ledger.version("run-1") == 3
    with pytest.raises(ServiceNotInLedger, match="no service 'zzz'"):
        ledger.save("run-1", 3, meta, {"zzz": running})
    assert ledger.version("run-1") == 3


def test_save_with_a_stale_version_writes_nothing(ledger, table_url):
    core, meta, inputs, records = run_of(["a", "b"])
    ledger.create("run-1", core, meta, inputs, records)
    assert ledger.save("run-1", 1, meta, {"a": {"status": "running"}}) is True
    before = ledger.load("run-1")
    stale = {"a": {"status": "failed"}, "b": {"status": "failed"}}
    assert ledger.save("run-1", 1, {**meta, "cancel": True}, stale) is False  # this object knows v2
    assert open_ledger(table_url).save("run-1", 1, {**meta, "cancel": True}, stale) is False  # fresh object
    assert ledger.save("missing-run", 1, meta, stale) is False
    assert ledger.load("run-1") == before


def test_two_ledgers_racing_one_wins(table_url):
    first, second = open_ledger(table_url), open_ledger(table_url)
    core, meta, inputs, records = run_of(["a", "b"])
    first.create("run-1", core, meta, inputs, records)
    # In turn: both saw version 1 (and cached its ETag); the second save finds the ETag moved.
    assert first.version("run-1") == second.version("run-1") == 1
    assert first.save("run-1", 1, meta, {"a": {"status": "running", "by": "first"}}) is True
    assert second.save("run-1", 1, meta, {"a": {"status": "running", "by": "second"}}) is False
    assert second.load("run-1").records["a"]["by"] == "first"
    # At the same time, from two threads, several rounds.
    for version in range(2, 7):
        assert first.version("run-1") == second.version("run-1") == version
        barrier, outcomes = threading.Barrier(2), {}

        def save(who, ledger, version=version, barrier=barrier, outcomes=outcomes):
            barrier.wait()
            outcomes[who] = ledger.save("run-1", version, meta, {"b": {"status": "running", "by": who}})

        threads = [threading.Thread(target=save, args=(who, ledger))
                   for who, ledger in (("first", first), ("second", second))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert sorted(outcomes.values()) == [False, True]
        (winner,) = [who for who, won in outcomes.items() if won]
        snapshot = first.load("run-1")
        assert snapshot.version == version + 1 and snapshot.records["b"]["by"] == winner


def test_a_services_input_is_read_without_its_record(ledger):
    """A dispatch reads each service's input; the service's record (errors, tracebacks, up to
    hundreds of KB) shares its entity and stays on the server."""
    core, meta, inputs, records = run_of(["a", "b"])
    records["a"] = {"status": "failed", "error": base64.b64encode(os.urandom(60_000)).decode()}  # compresses little
    assert ledger.create("run-1", core, meta, inputs, records)
    received = []
    read = ledger.table.get_entity
    ledger.table.get_entity = lambda *args, **kwargs: read(
        *args, raw_response_hook=lambda response: received.append(len(response.http_response.body())), **kwargs)
    assert ledger.service_inputs("run-1", ["a"]) == {"a": inputs["a"]}
    assert len(received) == 1 and received[0] < 2_000


def test_long_json_round_trips(ledger):
    core, meta, inputs, records = run_of(["a", "b"])
    inputs["a"] = {"sql": "select 1 -- " + "x" * 80_000 + " ☃ 𝄞 \"quoted\""}
    long_record = {"status": "failed", "error": "".join(f"line {i}: Traceback ü\n" for i in range(6_000))}
    assert len(json.dumps(inputs["a"])) > 70_000 and len(json.dumps(long_record)) > 100_000
    assert ledger.create("run-1", core, meta, inputs, records)
    assert ledger.service_inputs("run-1", ["a"])["a"] == inputs["a"]
    assert ledger.save("run-1", 1, meta, {"b": long_record})
    assert ledger.load("run-1").records["b"] == long_record
    assert ledger.save("run-1", 2, meta, {"b": {"status": "succeeded"}})  # shorter again: old parts ignored
    assert ledger.load("run-1").records["b"] == {"status": "succeeded"}


def test_a_5000_service_core_fits_one_entity():
    names = [f"warehouse.load_customer_table_{i}" for i in range(5000)]
    core = run_of(names, run_id="nightly-20260101-000000-abcdef")[0]
    assert 2 * len(json.dumps(core)) > MAX_ENTITY  # as UTF-16 text it would not fit
    entity = {"PartitionKey": "nightly-20260101-000000-abcdef", "RowKey": "run", **pack("core", core)}
    assert stored_size(entity) < MAX_ENTITY / 4
    assert unpack(entity, "core") == core


@pytest.mark.slow
def test_a_5000_service_run_round_trips(ledger):
    names = [f"warehouse.load_customer_table_{i}" for i in range(5000)]
    core, meta, inputs, records = run_of(names, run_id="nightly-20260101-000000-abcdef")
    assert ledger.create(core["run_id"], core, meta, inputs, records)
    assert ledger.load(core["run_id"]) == Snapshot(1, core, meta, records)
    wide = names[::150]  # 34 services, more than one query's worth of row keys
    assert ledger.service_inputs(core["run_id"], wide) == {name: inputs[name] for name in wide}


def test_200_changed_records_in_one_save(ledger, table_url):
    names = [f"s{i}" for i in range(250)]
    core, meta, inputs, records = run_of(names)
    assert ledger.create("run-1", core, meta, inputs, records)  # 251 entities: three transactions
    assert ledger.load("run-1") == Snapshot(1, core, meta, records)
    changed = {name: {"status": "succeeded", "attempts": 1, "output": name} for name in names[:200]}
    assert ledger.save("run-1", 1, meta, changed) is True
    snapshot = open_ledger(table_url).load("run-1")
    assert snapshot.version == 2
    assert snapshot.records == {**records, **changed}
    assert open_ledger(table_url).service_inputs("run-1", ["s249"])["s249"] == inputs["s249"]


def test_awkward_service_names_and_run_ids(ledger):
    names = ["a/b", "c#d", "e?f", "g\\h", "tab\tname", "Ünïcødé ☃ 𝄞", "quote'it", "%41", "run", "svc-000000"]
    for run_id in ["run/1#x?y", "run~2Fx", "ünï'code%20☃"]:
        core, meta, inputs, records = run_of(names, run_id=run_id)
        assert ledger.create(run_id, core, meta, inputs, records)
        changed = {name: {"status": "running", "name": name} for name in names}
        assert ledger.save(run_id, 1, meta, changed)
        assert ledger.load(run_id) == Snapshot(2, core, meta, changed)
        for name in names:
            assert ledger.service_inputs(run_id, [name])[name] == inputs[name]
    assert partition_key("run/1#x?y") == "run~2F1~23x~3Fy"
    assert partition_key("run~2Fx") != partition_key("run/x")


def test_a_create_that_died_half_way_is_finished_by_the_next(table_url):
    names = [f"s{i}" for i in range(150)]
    core, meta, inputs, records = run_of(names)
    dying = open_ledger(table_url)
    real_submit, calls = dying.table.submit_transaction, []

    def submit_then_die(batch):
        calls.append(len(batch))
        if len(calls) > 1:
            raise ConnectionError("host died")
        return real_submit(batch)

    dying.table.submit_transaction = submit_then_die
    with pytest.raises(ConnectionError):
        dying.create("run-1", core, meta, inputs, records)
    assert calls == [100, 51]
    other = open_ledger(table_url)
    assert other.version("run-1") is None and other.load("run-1") is None  # half a run is no run
    assert other.create("run-1", core, meta, inputs, records) is True
    assert other.load("run-1") == Snapshot(1, core, meta, records)
    assert other.create("run-1", core, meta, inputs, records) is False


def test_a_create_finished_by_another_while_still_writing_gives_way(table_url):
    names = [f"s{i}" for i in range(250)]
    core, meta, inputs, records = run_of(names)
    slow, other = open_ledger(table_url), open_ledger(table_url)
    real_submit, calls, outcomes = slow.table.submit_transaction, [], []

    def submit_slowly(batch):
        calls.append(len(batch))
        if len(calls) == 2:  # another host opens the same run between our transactions
            outcomes.append(other.create("run-1", core, {**meta, "by": "other"}, inputs, records))
        return real_submit(batch)

    slow.table.submit_transaction = submit_slowly
    assert slow.create("run-1", core, meta, inputs, records) is False  # its next insert conflicts
    assert outcomes == [True]
    assert slow.load("run-1") == Snapshot(1, core, {**meta, "by": "other"}, records)


def test_entities_over_1_mib_are_refused_with_a_clear_error(ledger):
    import os

    core, meta, inputs, records = run_of(["a"])
    ledger.create("run-1", core, meta, inputs, records)
    noise = os.urandom(1_000_000).hex()  # does not compress
    with pytest.raises(RecordTooLarge, match=r"run 'run-1', service 'a' \(record\): [\d,]+ bytes .* over the 1 MiB"):
        ledger.save("run-1", 1, meta, {"a": {"status": "failed", "error": noise}})
    assert ledger.version("run-1") == 1


def diamond_plan(run_id):
    services = {"a": [], "b": ["a"], "c": ["a"], "d": ["b", "c"]}
    return {"run_id": run_id, "pipeline": "p", "platforms": {"sim": {"max_concurrency": None}},
            "services": {name: {"deps": deps, "expected": 1.0, "platform": "sim", "iid": f"{run_id}:{name}"}
                         for name, deps in services.items()}}


def done(name, at) -> ServiceResult:
    return ServiceResult(name, ServiceState.SUCCEEDED, attempts=1, started=(at - timedelta(seconds=1)).isoformat(),
                         finished=at.isoformat(), output=f"{name} ok")


def test_dispatch_on_a_diamond_across_two_hosts(table_url):
    host1, host2 = open_ledger(table_url), open_ledger(table_url)
    plan = diamond_plan("diamond-1")
    inputs = {name: job_json(plan["run_id"], name) for name in plan["services"]}

    dispatch.create_run(host1, plan, inputs, T0)
    step = dispatch.open_run(host1, plan["run_id"], T0)
    assert named(step.start) == {"diamond-1:a": "a"} and not step.done
    assert dispatch.open_run(host2, plan["run_id"], T0).ensure == step.start  # opened once, asked again

    step = dispatch.finish_service(host2, "diamond-1", "a", done("a", T0 + timedelta(seconds=1)), T0)
    assert named(step.start) == {"diamond-1:b": "b", "diamond-1:c": "c"}
    step = dispatch.finish_service(host1, "diamond-1", "b", done("b", T0 + timedelta(seconds=2)), T0)
    assert step.start == {} and not step.done
    repeated = dispatch.finish_service(host2, "diamond-1", "b", done("b", T0 + timedelta(seconds=2)), T0)
    assert set(repeated.ensure) == {"diamond-1:c"}  # a repeated report asks again for what runs
    step = dispatch.finish_service(host1, "diamond-1", "c", done("c", T0 + timedelta(seconds=3)), T0)
    assert named(step.start) == {"diamond-1:d": "d"}
    step = dispatch.finish_service(host2, "diamond-1", "d", done("d", T0 + timedelta(seconds=4)), T0)
    assert step.done and step.status == "succeeded"

    result = dispatch.run_result(host1, "diamond-1", T0 + timedelta(seconds=5))
    assert result["status"] == "succeeded"
    assert {name: svc["output"] for name, svc in dispatch.run_services(host2, "diamond-1", T0).items()} == {
        name: f"{name} ok" for name in "abcd"}
    assert host2.load("diamond-1").version == 6  # stored, opened, then one save per finished service
    assert dispatch.live_status(host2, "diamond-1", T0)["states"] == "ssss"


def test_environment_chooses_table_storage(monkeypatch):
    monkeypatch.setenv("TOWER_LEDGER_TABLE_URL", "https://acct.table.core.windows.net/towerledger")
    ledger = ledger_from_environment()
    assert isinstance(ledger, TableRunLedger)
    assert ledger._table.client.table_name == "towerledger"
    runtime = Runtime.from_environment()
    assert isinstance(runtime.ledger, TableRunLedger) and runtime.ledger is runtime.ledger  # one per process


def test_a_host_behind_reads_only_what_changed_and_sees_a_cancel(table_url):
    host1, host2 = open_ledger(table_url), open_ledger(table_url)
    host2.location = "another host"  # its own cache, as in another process
    plan = diamond_plan("behind-1")
    dispatch.create_run(host1, plan, {name: job_json(plan["run_id"], name) for name in plan["services"]}, T0)
    dispatch.open_run(host1, plan["run_id"], T0)
    dispatch.finish_service(host2, "behind-1", "a", done("a", T0), T0)  # host2 caches version 3
    dispatch.finish_service(host1, "behind-1", "b", done("b", T0), T0)  # version 4
    assert set(host2.load("behind-1", since=4).records) == {"b"}
    assert not dispatch.is_cancelled(host2, "behind-1")
    step = dispatch.cancel_run(host1, "behind-1", T0)
    assert step.stop == ["behind-1:c"]
    assert dispatch.is_cancelled(host2, "behind-1")
    assert dispatch.live_status(host2, "behind-1", T0)["states"] == "ssrc"


class Reads:
    """What a ledger's table client was asked and answered: query filters, the row keys read by key,
    and every property read."""

    def __init__(self, ledger: TableRunLedger):
        table = ledger.table
        self.queries, self.keys, self.properties = [], [], set()
        query, get = table.query_entities, table.get_entity

        def query_entities(query_filter, **kwargs):
            self.queries.append(query_filter)
            entities = list(query(query_filter, **kwargs))
            for entity in entities:
                self.properties.update(entity)
            return entities

        def get_entity(partition_key, row_key, **kwargs):
            self.keys.append(row_key)
            entity = get(partition_key, row_key, **kwargs)
            self.properties.update(entity)
            return entity

        table.query_entities, table.get_entity = query_entities, get_entity


def test_loads_never_download_the_services_inputs(table_url):
    writer, reader = open_ledger(table_url), open_ledger(table_url)
    reader.location = "a status reader"
    plan = diamond_plan("inputs-1")
    dispatch.create_run(writer, plan, {name: {**job_json(plan["run_id"], name), "spec": {"sql": "x" * 5000}}
                                         for name in plan["services"]}, T0)
    dispatch.open_run(writer, plan["run_id"], T0)
    reads = Reads(reader)
    assert dispatch.live_status(reader, "inputs-1", T0)["states"] == "rppp"
    dispatch.finish_service(writer, "inputs-1", "a", done("a", T0), T0)
    assert dispatch.live_status(reader, "inputs-1", T0)["states"] == "srrp"
    assert reads.properties and not any(name.startswith("input_") for name in reads.properties)


def test_a_host_behind_reads_what_changed_by_key(table_url):
    host1, host2 = open_ledger(table_url), open_ledger(table_url)
    host2.location = "another host"
    plan = diamond_plan("keyed-1")
    dispatch.create_run(host1, plan, {name: job_json(plan["run_id"], name) for name in plan["services"]}, T0)
    dispatch.open_run(host1, plan["run_id"], T0)
    dispatch.finish_service(host2, "keyed-1", "a", done("a", T0), T0)  # host2 caches version 3
    dispatch.finish_service(host1, "keyed-1", "b", done("b", T0), T0)  # version 4
    dispatch.finish_service(host1, "keyed-1", "c", done("c", T0), T0)  # version 5: d dispatched
    reads = Reads(host2)
    assert set(host2.load("keyed-1", since=4).records) == {"b", "c", "d"}
    assert dispatch.live_status(host2, "keyed-1", T0)["states"] == "sssr"
    assert reads.queries == []  # point reads only: no query filtered on `written` (a partition scan)
    assert set(host2.load("keyed-1", since=1).records) == set(plan["services"])  # before the list: a query
    assert reads.queries == ["PartitionKey eq @pk and written ge @since"]


def test_the_list_of_recent_rows_keeps_the_newest_and_says_from_when_it_is_complete(monkeypatch):
    from tower.runs import ledger_table

    monkeypatch.setattr(ledger_table, "RECENT_ROWS", 4)
    recent = ledger_table.recent_after({"from": 2, "written": {}}, 2, [0, 1])
    recent = ledger_table.recent_after(recent, 3, [1, 2])
    assert recent == {"from": 2, "written": {0: 2, 1: 3, 2: 3}}
    recent = ledger_table.recent_after(recent, 4, [3, 4])
    assert recent == {"from": 3, "written": {1: 3, 2: 3, 3: 4, 4: 4}}
    assert ledger_table.recent_after(recent, 5, [1, 2]) == {"from": 3, "written": {1: 5, 2: 5, 3: 4, 4: 4}}
    assert ledger_table.recent_after(recent, 5, range(5)) == {"from": 6, "written": {}}  # one save too wide
    assert ledger_table.recent_after(None, 7, [1]) == {"from": 7, "written": {1: 7}}


def test_a_stored_plan_reads_back_whole_from_the_table(ledger):
    from tests.runs.test_ledger import catalog_plan
    from tower.runs.plan import service_job

    plan = catalog_plan("stored-t", services=250)  # several transactions
    plan["platforms"]["cmd"]["settings"]["notes"] = "n" * 70_000  # a head over one property: split
    assert dispatch.store_plan(ledger, plan, T0) == {"run_id": "stored-t", "pipeline": "p"}
    assert dispatch.load_plan(ledger, "stored-t") == json.loads(json.dumps(plan))
    outline = dispatch.plan_outline(ledger, "stored-t")  # the run entity alone: no service's spec
    assert outline["platforms"] == plan["platforms"] and outline["params"] == plan["params"]
    assert outline["services"]["s7"] == {key: plan["services"]["s7"][key] for key in ("deps", "expected", "platform", "iid")}
    assert dispatch.open_run(ledger, "stored-t", T0).start == {
        plan["services"]["s0"]["iid"]: service_job(plan, "s0")}


# --- What the store promises in detail: keys, stored form, limits, refusals, caches, reads ------------


def test_partition_keys_escape_exactly_what_table_keys_refuse_and_never_collide():
    # Table keys refuse / \ # ? and the control characters U+0000..U+001F and U+007F..U+009F.
    escaped = "/\\#?%~" + "".join(map(chr, range(0x20))) + "".join(map(chr, range(0x7F, 0xA0)))
    for ch in escaped:
        assert partition_key(f"a{ch}b") == f"a~{ord(ch):02X}b"
    for ch in " !$&'()*+,-.:;<=>@[]^_`{|}AZaz09\xa0ü☃𝄞":
        assert partition_key(f"a{ch}b") == f"a{ch}b"
    awkward = ["a/b", "a~2Fb", "a%2Fb", "a~7E2Fb", "a\x7fb", "a~7Fb", "a\x9fb", "a~9Fb", "a~b", "a~7Eb"]
    assert len({partition_key(run_id) for run_id in awkward}) == len(awkward)


def test_json_is_stored_compact_as_text_while_it_fits_one_property():
    from tower.runs.ledger_table import TEXT_PART

    fits = {"k": "x" * (TEXT_PART - len('{"k":""}'))}  # exactly one property of compact JSON
    packed = pack("p", fits)
    assert packed["p_n"] == 1 and isinstance(packed["p_0"], str) and len(packed["p_0"]) == TEXT_PART
    assert unpack(packed, "p") == fits
    over = {"k": fits["k"] + "x"}
    packed = pack("p", over)
    assert isinstance(packed["p_0"], bytes) and unpack(packed, "p") == over


def test_a_select_names_every_part_of_the_largest_value_an_entity_holds():
    from tower.runs.ledger_table import packed_properties

    value = base64.b64encode(os.urandom(750_000)).decode()  # compresses little
    packed = pack("record", value)
    assert packed["record_n"] > 10 and stored_size({"PartitionKey": "p", "RowKey": "r", **packed}) <= MAX_ENTITY
    assert set(packed) <= set(packed_properties("record"))


def test_an_entitys_size_is_counted_as_table_storage_counts_it():
    # 4 bytes, the keys as UTF-16, then per property 8 bytes + its name as UTF-16 + its value: a string
    # 4 bytes + UTF-16, binary 4 bytes + its base64 text (as Azurite counts it), anything else 8 bytes.
    entity = {"PartitionKey": "pk", "RowKey": "rk", "s": "a☃𝄞", "b": b"xyz", "n": 5}
    assert stored_size(entity) == 4 + 4 + 4 + (8 + 2 + 4 + 8) + (8 + 2 + 4 + 4) + (8 + 2 + 8)


def test_transactions_are_cut_at_100_operations_and_before_the_size_limit():
    from tower.runs.ledger_table import MAX_BATCH_SIZE, batches

    small = [("create", {"PartitionKey": "p", "RowKey": str(i)}) for i in range(250)]
    assert [len(batch) for batch in batches(small)] == [100, 100, 50]
    big = ("create", {"PartitionKey": "p", "RowKey": "r", "x": b"\0" * 700_000})  # 933 KB as stored
    cut = batches([big] * 5)
    assert [len(batch) for batch in cut] == [2, 2, 1]
    assert all(sum(stored_size(op[1]) for op in batch) <= MAX_BATCH_SIZE for batch in cut)


def test_a_refusal_is_told_by_its_status_and_its_code_as_the_sdk_raises_them(ledger):
    from azure.core import MatchConditions
    from azure.core.exceptions import HttpResponseError
    from azure.data.tables import UpdateMode

    from tower.runs.ledger_table import _refused

    table = ledger.table
    stale = table.submit_transaction([("create", {"PartitionKey": "p", "RowKey": "r", "v": 1})])[0]["etag"]
    table.update_entity({"PartitionKey": "p", "RowKey": "r", "v": 2}, mode=UpdateMode.MERGE)
    guarded = {"mode": UpdateMode.MERGE, "etag": stale, "match_condition": MatchConditions.IfNotModified}

    def refusal(call):
        with pytest.raises(HttpResponseError) as caught:
            call()
        return caught.value

    exists = refusal(lambda: table.submit_transaction([("create", {"PartitionKey": "p", "RowKey": "q"}),
                                                       ("create", {"PartitionKey": "p", "RowKey": "r"})]))
    moved_in_a_transaction = refusal(lambda: table.submit_transaction(
        [("update", {"PartitionKey": "p", "RowKey": "r", "v": 3}, guarded)]))
    moved = refusal(lambda: table.update_entity({"PartitionKey": "p", "RowKey": "r", "v": 3}, **guarded))
    table_exists = refusal(lambda: ledger._table.client.create_table())  # a 409 about the table
    assert _refused(exists, 409, "EntityAlreadyExists")
    assert _refused(moved_in_a_transaction, 412, "UpdateConditionNotSatisfied")
    assert _refused(moved, 412, "UpdateConditionNotSatisfied")  # its code is a TableErrorCode
    assert not _refused(exists, 412, "UpdateConditionNotSatisfied") and not _refused(moved, 409, "EntityAlreadyExists")
    assert table_exists.status_code == 409 and not _refused(table_exists, 409, "EntityAlreadyExists")


def half_created(table_url, names, run_id="run-1"):
    """A run whose create died after its first transaction (version 0: no run yet)."""
    core, meta, inputs, records = run_of(names, run_id=run_id)
    dying = open_ledger(table_url)
    real_submit = dying.table.submit_transaction

    def submit_then_die(batch):
        if batch[0][1]["RowKey"] != "run":
            raise ConnectionError("host died")
        return real_submit(batch)

    dying.table.submit_transaction = submit_then_die
    with pytest.raises(ConnectionError):
        dying.create(run_id, core, meta, inputs, records)
    return core, meta, inputs, records


def test_two_hosts_finishing_one_half_done_create_one_wins_and_the_other_says_so(table_url):
    core, meta, inputs, records = half_created(table_url, [f"s{i}" for i in range(150)])
    slow, fast = open_ledger(table_url), open_ledger(table_url)
    assert slow.stored_plan("run-1") is None and slow.stored_plan("run-1", inputs=False) is None
    assert slow.stored_plan("never-stored") is None and slow.stored_plan("never-stored", inputs=False) is None
    real_update, outcomes = slow.table.update_entity, []

    def update_after_the_other(*args, **kwargs):  # `fast` raises the run to version 1 first
        outcomes.append(fast.create("run-1", core, {**meta, "by": "fast"}, inputs, records))
        return real_update(*args, **kwargs)

    slow.table.update_entity = update_after_the_other
    assert slow.create("run-1", core, {**meta, "by": "slow"}, inputs, records) is False
    assert outcomes == [True]
    assert open_ledger(table_url).load("run-1") == Snapshot(1, core, {**meta, "by": "fast"}, records)
    assert slow.stored_plan("run-1", inputs=False)[0] == core


def test_each_read_downloads_only_the_properties_it_uses(table_url):
    core, meta, inputs, records = half_created(table_url, [f"s{i}" for i in range(120)], run_id="half")
    writer, reader = open_ledger(table_url), open_ledger(table_url)
    reads = Reads(reader)

    def downloaded(call):  # the kinds of packed JSON `call` read: core, head, input, recent, record
        reads.properties.clear()
        call()
        assert reads.properties
        return {name.split("_")[0] for name in reads.properties if name[-1].isdigit() or name.endswith("_n")}

    assert downloaded(lambda: reader.create("half", core, meta, inputs, records)) == set()  # row keys only
    core, meta, inputs, records = run_of(["a", "b", "c"])
    writer.create("run-1", core, meta, inputs, records)
    assert downloaded(lambda: reader.create("run-1", core, meta, inputs, records)) == set()
    assert downloaded(lambda: reader.version("run-1")) == set()
    assert downloaded(lambda: reader.meta("run-1")) == set()
    assert downloaded(lambda: reader.save("run-1", 1, meta, {"a": {"status": "running"}})) == {"recent", "core"}
    assert downloaded(lambda: reader.load("run-1", since=2)) == {"recent", "record"}
    assert downloaded(lambda: reader.load("run-1")) == {"core", "recent", "record"}
    assert downloaded(lambda: reader.delete_runs(["run-1"])) == set()


def test_a_host_that_created_or_saved_a_run_saves_it_again_without_reading(table_url):
    host = open_ledger(table_url)
    reads = Reads(host)
    running = {"status": "running", "attempts": 1}
    for run_id, names in (("small", ["a", "b"]), ("large", [f"s{i}" for i in range(150)])):  # 1 and 2 transactions
        core, meta, inputs, records = run_of(names, run_id=run_id)
        assert host.create(run_id, core, meta, inputs, records)
        reads.keys.clear()
        assert host.save(run_id, 1, meta, {names[0]: running})
        assert host.save(run_id, 2, meta, {names[1]: running})
        assert reads.keys == [] and reads.queries == []
        assert host.version(run_id) == 3 and reads.keys == ["run"]  # a read that keeps what the cache knew
        assert host.save(run_id, 3, meta, {names[0]: {**running, "attempts": 2}})
        assert reads.keys == ["run"] and reads.queries == []
        assert open_ledger(table_url).load(run_id).records == {**records, names[0]: {**running, "attempts": 2},
                                                               names[1]: running}


def test_a_host_whose_cache_another_host_moved_on_lists_what_both_wrote(table_url):
    host1, host2 = open_ledger(table_url), open_ledger(table_url)
    core, meta, inputs, records = run_of(["a", "b", "c", "d"])
    host1.create("run-1", core, meta, inputs, records)
    assert host2.save("run-1", 1, meta, {"a": {"status": "running", "by": 2}})
    assert host1.save("run-1", 2, meta, {"b": {"status": "running", "by": 1}})
    assert host2.version("run-1") == 3  # host2's cache held version 2
    assert host2.save("run-1", 3, meta, {"c": {"status": "running", "by": 2}})
    fresh = open_ledger(table_url)
    assert set(fresh.load("run-1", since=3).records) == {"b", "c"}
    assert set(fresh.load("run-1", since=2).records) == {"a", "b", "c"}


def test_the_stored_layout_is_the_one_the_module_describes(ledger):
    import time

    core, meta, inputs, records = run_of(["a", "b", "c"], run_id="run/1")
    ledger.create("run/1", core, meta, inputs, records)
    ledger.save("run/1", 1, meta, {"b": {"status": "running"}})
    pk = partition_key("run/1")
    run = ledger.table.get_entity(pk, "run")
    assert (run["run_id"], run["version"], run["services"]) == ("run/1", 2, 3)
    assert abs(run["created"] - time.time()) < 60
    rows = {e["RowKey"]: e for e in ledger.table.query_entities("PartitionKey eq @pk and RowKey ne 'run'",
                                                                 parameters={"pk": pk})}
    assert {key: (e["name"], e["position"], e["written"]) for key, e in rows.items()} == {
        "svc-000000": ("a", 0, 1), "svc-000001": ("b", 1, 2), "svc-000002": ("c", 2, 1)}


def test_a_host_far_behind_the_list_of_recent_rows_reads_by_query_what_was_written_since(table_url, monkeypatch):
    from tower.runs import ledger_table

    monkeypatch.setattr(ledger_table, "RECENT_ROWS", 2)
    writer = open_ledger(table_url)
    core, meta, inputs, records = run_of(["a", "b", "c", "d", "e"])
    writer.create("run-1", core, meta, inputs, records)
    writer.save("run-1", 1, meta, {"a": {"status": "running"}})  # version 2
    writer.save("run-1", 2, meta, {name: {"status": "running"} for name in "bcd"})  # 3: the list overflows
    reader = open_ledger(table_url)
    reads = Reads(reader)
    assert set(reader.load("run-1", since=2).records) == {"a", "b", "c", "d"}
    assert set(reader.load("run-1", since=3).records) == {"b", "c", "d"}
    assert reader.load("run-1", since=4).records == {}
    assert reads.queries == ["PartitionKey eq @pk and written ge @since"] * 2  # the list is complete from 4 on


def test_a_host_one_version_behind_reads_by_key_from_the_create_on(table_url):
    writer, reader = open_ledger(table_url), open_ledger(table_url)
    core, meta, inputs, records = run_of(["a", "b"])
    writer.create("run-1", core, meta, inputs, records)
    reads = Reads(reader)
    assert reader.load("run-1", since=2).records == {}
    writer.save("run-1", 1, meta, {"a": {"status": "running"}})
    assert reader.load("run-1", since=2).records == {"a": {"status": "running"}}
    assert reads.queries == []


def test_a_create_too_large_for_an_entity_names_what_and_stores_nothing(ledger):
    import os

    core, meta, inputs, records = run_of(["a", "b"])
    noise = os.urandom(1_000_000).hex()  # does not compress
    with pytest.raises(RecordTooLarge, match=r"^run 'run-1', service 'b' \(input and record\): [\d,]+ bytes in Table "
                                             r"Storage, over the 1 MiB one entity may hold; keep large data"):
        ledger.create("run-1", core, meta, {**inputs, "b": {"sql": noise}}, records)
    with pytest.raises(RecordTooLarge, match=r"^run 'run-1', the core and head of the plan: [\d,]+ bytes"):
        ledger.create("run-1", core, meta, inputs, records, head={"notes": noise})
    assert ledger.version("run-1") is None and list(ledger.table.query_entities(
        "PartitionKey eq @pk", parameters={"pk": "run-1"})) == []
    assert ledger.create("run-1", core, meta, inputs, records)


def test_a_service_row_gone_from_the_table_is_named_with_its_run_and_row(ledger, table_url):
    core, meta, inputs, records = run_of(["a", "b"])
    ledger.create("run-1", core, meta, inputs, records)
    ledger.table.delete_entity("run-1", "svc-000001")
    table = ledger.table.table_name
    for host in (ledger, open_ledger(table_url)):
        with pytest.raises(ServiceNotInLedger) as caught:
            host.service_inputs("run-1", ["a", "b"])
        assert str(caught.value) == (f"run 'run-1': service 'b' is missing from the run ledger ({table}, row "
                                     "svc-000001); start the run again")


def test_the_inputs_of_several_services_are_read_at_once_and_of_one_alone(ledger):
    core, meta, inputs, records = run_of(["a", "b", "c"])
    ledger.create("run-1", core, meta, inputs, records)
    real_get, both = ledger.table.get_entity, threading.Barrier(2, timeout=10)

    def get_entity(partition_key, row_key, **kwargs):
        if row_key in ("svc-000000", "svc-000002"):
            both.wait()  # returns only when the other read has started too
        return real_get(partition_key, row_key, **kwargs)

    ledger.table.get_entity = get_entity
    assert ledger.service_inputs("run-1", ["a", "c"]) == {"a": inputs["a"], "c": inputs["c"]}
    assert ledger.service_inputs("run-1", ["b"]) == {"b": inputs["b"]}


def test_delete_runs_deletes_big_runs_over_several_transactions_and_counts_the_runs_there(ledger):
    for run_id, size in (("big", 250), ("small", 2)):  # big: 251 entities, three transactions
        core, meta, inputs, records = run_of([f"s{i}" for i in range(size)], run_id=run_id)
        ledger.create(run_id, core, meta, inputs, records)
    assert ledger.delete_runs(["big", "never-stored", "small"]) == 2
    for run_id in ("big", "small"):
        assert list(ledger.table.query_entities("PartitionKey eq @pk", parameters={"pk": run_id})) == []
    assert ledger.delete_runs(["big", "small"]) == 0


def test_a_load_that_a_save_overtakes_between_pages_reads_again(table_url):
    reader, other = open_ledger(table_url), open_ledger(table_url)
    core, meta, inputs, records = run_of(["a", "b"])
    other.create("run-1", core, meta, inputs, records)
    real_query, pages = reader.table.query_entities, []

    def paged(query_filter, **kwargs):  # the run entity on one page, the services on the next
        first = [entity for entity in real_query(query_filter, **kwargs) if entity["RowKey"] == "run"]
        if not pages:
            pages.append(other.save("run-1", 1, meta, {"b": {"status": "running"}}))  # between the pages
        return first + [entity for entity in real_query(query_filter, **kwargs) if entity["RowKey"] != "run"]

    reader.table.query_entities = paged
    assert reader.load("run-1") == Snapshot(2, core, meta, {**records, "b": {"status": "running"}})
    assert pages == [True]


def test_a_save_from_a_cache_another_host_moved_on_is_refused_and_writes_nothing(table_url):
    host1, host2 = open_ledger(table_url), open_ledger(table_url)
    core, meta, inputs, records = run_of(["a", "b", "c"])
    host1.create("run-1", core, meta, inputs, records)
    assert host2.save("run-1", 1, meta, {"a": {"status": "running", "by": 2}})  # host2 caches version 2
    assert host1.save("run-1", 2, meta, {"b": {"status": "running", "by": 1}})
    late = {"a": {"status": "failed", "by": 2}, "c": {"status": "running", "by": 2}}
    assert host2.save("run-1", 2, {**meta, "cancel": True}, late) is False  # its ETag is version 2's: refused
    expected = Snapshot(3, core, meta, {**records, "a": {"status": "running", "by": 2}, "b": {"status": "running", "by": 1}})
    assert open_ledger(table_url).load("run-1") == expected
    assert host2.save("run-1", 3, meta, {"c": late["c"]})
    assert open_ledger(table_url).load("run-1").records["c"] == late["c"]


def test_a_create_finishing_a_run_another_host_is_finishing_looks_again_and_gives_way(table_url):
    core, meta, inputs, records = half_created(table_url, [f"s{i}" for i in range(150)])  # 50 rows missing
    slow, fast = open_ledger(table_url), open_ledger(table_url)
    real_submit, outcomes = slow.table.submit_transaction, []

    def submit_after_the_other(batch):  # `fast` inserts the missing rows and finishes the run first
        if not outcomes:
            outcomes.append(fast.create("run-1", core, {**meta, "by": "fast"}, inputs, records))
        return real_submit(batch)

    slow.table.submit_transaction = submit_after_the_other
    assert slow.create("run-1", core, {**meta, "by": "slow"}, inputs, records) is False
    assert outcomes == [True]
    assert open_ledger(table_url).load("run-1") == Snapshot(1, core, {**meta, "by": "fast"}, records)
