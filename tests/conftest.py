"""Fixtures shared by the test packages: a real Table API (Azurite) for the Table Storage stores."""

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


def azurite_binary():
    candidates = [os.environ.get("AZURITE"), shutil.which("azurite-table"),
                  str(Path(__file__).resolve().parents[1] / "node_modules/.bin/azurite-table")]
    return next((c for c in candidates if c and Path(c).exists()), None)


@pytest.fixture(scope="module")
def azurite_table_url(tmp_path_factory):
    binary = azurite_binary()
    if binary is None:
        pytest.skip("Azurite is not installed (npm install azurite, or set AZURITE=path/to/azurite-table)")
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
