"""examples/local runs for real, as a user would run it: the stand-ins in one process (a fakesnow
server the real Snowflake connector talks to, and a 202-pattern HTTP service), `tower run` in another."""

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CATALOG = ROOT / "examples" / "local" / "catalog.yaml"

pytestmark = pytest.mark.slow


def _two_free_ports() -> int:
    """A port p with p and p + 1 both free on 127.0.0.1."""
    for _ in range(50):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        try:
            with socket.socket() as a, socket.socket() as b:
                a.bind(("127.0.0.1", port))
                b.bind(("127.0.0.1", port + 1))
            return port
        except OSError:
            continue
    raise RuntimeError("no two consecutive free ports")


@pytest.fixture
def standins(tmp_path):
    port = _two_free_ports()
    process = subprocess.Popen(
        [sys.executable, str(ROOT / "examples" / "local" / "standins.py"), "--port-base", str(port),
         "--env-file", str(tmp_path / "standins.env")],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    env = {}
    try:
        for line in process.stdout:  # the exports, then the stand-ins run until stopped
            if line.startswith("export "):
                for pair in line.split("#")[0].split()[1:]:
                    key, value = pair.split("=", 1)
                    env[key] = value
            if "SCORING_URL" in env:
                break
        assert "SCORING_URL" in env, process.stderr.read()
        yield env
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=15)


def test_the_local_example_runs_for_real(standins, tmp_path):
    env = {**os.environ, **standins, "TOWER_HOME": str(tmp_path / "home")}
    done = subprocess.run(
        [sys.executable, "-m", "tower", "--catalog", str(CATALOG), "run", "daily", "--param", "day=2024-07-01",
         "--json"],
        capture_output=True, text=True, env=env, timeout=120, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["status"] == "succeeded"
    assert {s["status"] for s in result["services"].values()} == {"succeeded"}
    assert result["services"]["score_customers"]["remote_id"]  # the HTTP service's job id
    assert "Traceback" not in done.stderr

    import snowflake.connector

    with snowflake.connector.connect(
        user="tower", password="local", account="fakesnow", host="127.0.0.1", port=int(standins["FAKESNOW_PORT"]),
        protocol="http", database="local_demo", schema="sales",
        session_parameters={"CLIENT_OUT_OF_BAND_TELEMETRY_ENABLED": False},
    ) as conn:
        rows = conn.cursor().execute("SELECT day, region, total FROM daily_totals ORDER BY region").fetchall()
    assert rows == [("2024-07-01", "amer", 80), ("2024-07-01", "emea", 165)]


def test_running_for_real_as_the_readme_writes_it(standins, tmp_path):
    """A second shell with no venv active: source the stand-ins' env file, call .venv/bin/tower."""
    tower = Path(sys.executable).with_name("tower")
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "TOWER_HOME": str(tmp_path / "home")}
    script = (f". {tmp_path / 'standins.env'} && "
              f"exec {tower} --catalog examples/local/catalog.yaml run daily --param day=2024-06-30")
    done = subprocess.run(["sh", "-c", script], capture_output=True, text=True, env=env, timeout=120, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    assert "succeeded" in done.stdout + done.stderr
    assert (tmp_path / "standins.env").stat().st_mode & 0o077 == 0  # the password file is the owner's alone
