"""Fixtures shared by the test packages: a real Table API (Azurite) for the Table Storage stores.

A test that cannot run here is never silent: the session ends with a banner naming every test that
did not run and why, and under CI (``CI`` set, as ``.ci/run`` does) a skip fails the session, and a
missing Azurite is an error in the tests that need it.
"""

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest

# --- Azure Table Storage, against Azurite (npm install azurite; or set AZURITE to its binary) ---

AZURITE_ACCOUNT = "devstoreaccount1"
AZURITE_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="


def ci() -> bool:
    """True under CI, where every test must run: a skip there would hide what was never checked."""
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def azurite_binary():
    candidates = [os.environ.get("AZURITE"), shutil.which("azurite-table"),
                  str(Path(__file__).resolve().parents[1] / "node_modules/.bin/azurite-table")]
    return next((c for c in candidates if c and Path(c).exists()), None)


@pytest.fixture(scope="module")
def azurite_table_url(tmp_path_factory):
    binary = azurite_binary()
    if binary is None:
        reason = ("Azurite is not installed, so the Azure Table Storage tests cannot run "
                  "(`make test` installs it; or npm install azurite, or set AZURITE=path/to/azurite-table)")
        if ci():
            pytest.fail(reason, pytrace=False)
        pytest.skip(reason)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    workdir = tmp_path_factory.mktemp("azurite")
    proc = subprocess.Popen(
        [binary, "--silent", "--inMemoryPersistence", "--disableTelemetry", "--skipApiVersionCheck",
         "--tableHost", "127.0.0.1", "--tablePort", str(port)],
        cwd=workdir, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 15
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise RuntimeError("Azurite did not start") from None
                time.sleep(0.05)
        yield f"http://127.0.0.1:{port}/{AZURITE_ACCOUNT}"
    finally:
        proc.terminate()
        proc.wait(timeout=10)


# --- Local engines: every test stops what it starts ---

@pytest.fixture(autouse=True)
def no_engine_left_running():
    """A test that starts a local engine stops it. One left running keeps the process loop, and its
    activities go on calling a host that is gone (the Durable SDK then closes the one client session
    every later test shares): a failure far from its cause."""
    from tower.local.engine import running_engines

    before = running_engines()
    yield
    left = running_engines() - before
    assert left <= 0, f"this test left {left} local engine(s) running: stop every Engine and Host it starts"


# --- Two hosts over one home: another engine process beside the test's (tests/local/hosts.py) ---

@pytest.fixture
def other_host():
    """`other_host(home, app="module:factory", activities_only=True, max_activities=None, env=None)`
    starts another host process over `home` (stopped at teardown) and returns its HostProcess (pid,
    leader, stderr()). Give the test's own engine `max_activities=1` so the next work item goes there."""
    import contextlib

    from tests.local.hosts import host_process

    with contextlib.ExitStack() as stack:
        yield lambda home, **options: stack.enter_context(host_process(home, **options))


# --- Tests that did not run: said loudly, and fatal under CI ---


def start_app_host(tmp_path: Path, monkeypatch, catalog_text: str):
    """The app (`function_app.py`) on the local host, with `catalog_text` as its catalog, its state
    under tmp_path/home and every Azure store setting cleared (so the stores are local files)."""
    import textwrap

    from tower.events import EVENTS_QUEUE
    from tower.local.host import Host, load_app

    catalog = tmp_path / "catalog.yaml"
    catalog.write_text(textwrap.dedent(catalog_text))
    monkeypatch.setenv("TOWER_CATALOG", str(catalog))
    monkeypatch.setenv("TOWER_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("TOWER_EVENTS_QUEUE", EVENTS_QUEUE)
    monkeypatch.delenv("TOWER_API_KEY", raising=False)
    for name in ("TOWER_RUNS_TABLE_URL", "TOWER_HISTORY_TABLE_URL", "TOWER_LEDGER_TABLE_URL",
                 "TOWER_REJECTED_TABLE_URL", "ServiceBusConnection__fullyQualifiedNamespace"):
        monkeypatch.delenv(name, raising=False)
    root = Path(__file__).resolve().parents[1]
    return Host(load_app(root / "function_app.py"), tmp_path / "home", port=0, log=lambda line: None).start()


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    skipped = terminalreporter.stats.get("skipped", [])
    if not skipped:
        return
    by_reason: dict[str, list[str]] = {}
    for report in skipped:
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        by_reason.setdefault(reason.removeprefix("Skipped: "), []).append(report.nodeid)
    terminalreporter.write_sep("!", f"{len(skipped)} TEST(S) DID NOT RUN", red=True, bold=True)
    for reason, nodeids in by_reason.items():
        terminalreporter.write_line(f"{len(nodeids)} not run: {reason}", red=True, bold=True)
        for nodeid in nodeids:
            terminalreporter.write_line(f"    {nodeid}")
    if ci():
        terminalreporter.write_line("CI is set: a test that did not run fails the session.", red=True, bold=True)


def pytest_sessionfinish(session, exitstatus):
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if ci() and exitstatus == pytest.ExitCode.OK and reporter is not None and reporter.stats.get("skipped"):
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
