"""The runtime: what one process shares, built once by its composition root and handed in
(tower/runtime.py), and the one place the app's functions find it (app_runtime.py)."""

from __future__ import annotations

import pytest

import app_runtime
from tower.errors import CatalogError, ConfigError
from tower.platforms import Platforms
from tower.platforms.base import FunctionAdapter, Handle, Status
from tower.runs.ledger import create_run, live_status
from tower.runtime import Runtime
from tower.timestamps import utcnow

TABLE_SETTINGS = ("TOWER_LEDGER_TABLE_URL", "TOWER_HISTORY_TABLE_URL", "TOWER_RUNS_TABLE_URL",
                  "TOWER_REJECTED_TABLE_URL")


@pytest.fixture(autouse=True)
def local_stores(monkeypatch):
    for name in TABLE_SETTINGS:
        monkeypatch.delenv(name, raising=False)


def plan(run_id: str) -> dict:
    return {"run_id": run_id, "pipeline": "p", "platforms": {"sim": {"max_concurrency": None}},
            "services": {"a": {"deps": [], "expected": 1.0, "platform": "sim", "iid": f"{run_id}:a"}}}


def test_each_store_is_built_on_first_use_then_kept(tmp_path):
    runtime = Runtime.from_environment(tmp_path)
    assert list(tmp_path.iterdir()) == []  # nothing opened until asked for
    ledger = runtime.ledger
    assert runtime.ledger is ledger and ledger.location == str(tmp_path.absolute() / "ledger.db")
    assert [p.name for p in tmp_path.iterdir() if p.suffix == ".db"] == ["ledger.db"]
    assert runtime.history is runtime.history and runtime.runs_index is runtime.runs_index
    assert runtime.rejected is runtime.rejected and runtime.push_keys is runtime.push_keys
    assert runtime.outbox is runtime.outbox


def test_home_defaults_to_tower_home_read_when_built(tmp_path, monkeypatch):
    monkeypatch.setenv("TOWER_HOME", str(tmp_path / "first"))
    runtime = Runtime.from_environment()
    monkeypatch.setenv("TOWER_HOME", str(tmp_path / "second"))  # a later change is not this runtime's
    assert runtime.ledger.location == str((tmp_path / "first" / "ledger.db").absolute())


def test_two_runtimes_over_one_home_keep_their_own_scheduler_cache(tmp_path):
    """The ledger's memory of its runs belongs to the ledger object, not to the process: a second
    runtime (another host, a status reader) sees changes through the store, as another process would."""
    one, other = Runtime(tmp_path), Runtime(tmp_path)
    assert one.ledger is not other.ledger
    create_run(one.ledger, plan("r1"), {"a": {"service": "a"}}, utcnow())
    assert one.ledger.schedulers.get("r1") is not None
    assert other.ledger.schedulers.get("r1") is None
    assert live_status(other.ledger, "r1", utcnow())["states"] == "p"  # read from the store


def test_an_engine_hands_its_runtime_to_the_app_functions_while_it_runs(tmp_path, monkeypatch):
    from tower.local.driver import run_app
    from tower.local.engine import Engine

    monkeypatch.setattr(app_runtime, "_installed", None)  # the process's runtime comes back after the test
    monkeypatch.setattr(app_runtime, "_engines", [])  # as if no other engine ran in this process (a session's)
    installed = app_runtime.install(Runtime(tmp_path / "installed"))
    ours = Runtime(tmp_path / "engine")
    with Engine(run_app(), tmp_path / "engine", runtime=ours) as engine:
        assert engine.runtime is ours and app_runtime.current() is ours
    assert app_runtime.current() is installed  # the process's again once the engine stopped


def test_without_a_runtime_the_functions_say_who_installs_one(monkeypatch):
    monkeypatch.setattr(app_runtime, "_installed", None)
    monkeypatch.setattr(app_runtime, "_engines", [])
    with pytest.raises(ConfigError, match="function_app.py installs one"):
        app_runtime.current()


def test_a_platform_stand_in_is_given_to_the_registry_not_to_a_module():
    stand_in = FunctionAdapter(submit=lambda s: Handle("x"), poll=lambda h: Status("succeeded"))
    runtime = Runtime(platforms=Platforms(overrides={"fake": stand_in}))
    assert runtime.platforms.adapter("fake", {}) is stand_in
    with pytest.raises(ConfigError, match="unknown platform type 'fake'"):
        Runtime().platforms.adapter("fake", {})


def test_a_command_keeps_its_files_under_the_runtimes_home_whatever_tower_home_says_later(tmp_path, monkeypatch):
    from tower.platforms.base import Submission

    monkeypatch.setenv("TOWER_HOME", str(tmp_path / "elsewhere"))
    runtime = Runtime(tmp_path / "home")
    adapter = runtime.platforms.adapter("command", {})
    monkeypatch.setenv("TOWER_HOME", str(tmp_path / "later"))  # read at submit, it would move the files
    handle = adapter.submit(Submission("r1", "s", 1, {"run": "true"}))
    assert sorted(p.suffix for p in (tmp_path / "home" / "commands").glob("*.json")) == [".json"]
    assert not (tmp_path / "elsewhere").exists() and not (tmp_path / "later").exists()
    assert adapter.poll(handle).state in ("running", "succeeded")


def test_the_catalog_is_parsed_once_per_change_of_its_file(tmp_path):
    import os

    path = tmp_path / "catalog.yaml"
    text = ("platforms: {sim: {type: sim}}\nservices: {a: {platform: sim, expected_duration: 1s}}\n"
            "pipelines: {p: {services: [a]}, PIPELINES}\n")
    path.write_text(text.replace(", PIPELINES", ""))
    runtime = Runtime(tmp_path)
    first = runtime.catalog(path)
    assert runtime.catalog(path) is first
    path.write_text(text.replace("PIPELINES", "q: {services: [a]}"))
    os.utime(path, (1, 1))  # a different mtime, whatever the clock's resolution
    assert runtime.catalog(path) is not first and set(runtime.catalog(path).pipelines) == {"p", "q"}


COMMANDS = """\
platforms:
  sim: {type: sim}
  scripts: {type: command}
services:
  a: {platform: sim, expected_duration: 1s}
  b: {platform: scripts, run: "echo hi"}
"""


def test_an_azure_host_refuses_a_catalog_with_a_command_platform_and_says_where(tmp_path, monkeypatch):
    path = tmp_path / "catalog.yaml"
    path.write_text(COMMANDS)
    for marker in ("WEBSITE_INSTANCE_ID", "WEBSITE_SKU", "LEGION_SERVICE_HOST", "WEBSITE_POD_NAME",
                   "CONTAINER_APP_NAME", "FUNCTIONS_CORETOOLS_ENVIRONMENT"):
        monkeypatch.delenv(marker, raising=False)
    assert set(Runtime(tmp_path).catalog(path).platforms) == {"sim", "scripts"}  # a laptop runs commands
    monkeypatch.setenv("WEBSITE_INSTANCE_ID", "0f1e2d")  # an Azure host
    with pytest.raises(CatalogError) as refused:
        Runtime(tmp_path).catalog(path)
    [problem] = refused.value.problems
    assert (problem.line, problem.where) == (3, "platform 'scripts'")
    assert "a command platform runs its work on the machine that runs Tower" in problem.what
    assert "http service" in problem.hint


def test_an_engine_lets_the_platform_threads_of_the_runtime_it_built_go(tmp_path):
    from tower.local.driver import run_app
    from tower.local.engine import Engine

    given = Runtime(tmp_path / "given")
    with Engine(run_app(), tmp_path / "own") as engine, Engine(run_app(), tmp_path / "given", runtime=given):
        own = engine.runtime.platform_threads
        assert own.submit(lambda: 42).result(timeout=5) == 42
        assert own is engine.runtime.platform_threads and own is not given.platform_threads
    with pytest.raises(RuntimeError, match="shutdown"):
        own.submit(lambda: 1)  # the engine built that runtime: its threads went with it
    assert given.platform_threads.submit(lambda: 7).result(timeout=5) == 7  # a given runtime is its owner's
    given.close()
