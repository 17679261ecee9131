"""`tower serve` as a user runs it: a subprocess, stopped with SIGTERM, started again with its state."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.ports import free_port

APP = Path(__file__).parent / "apps" / "host_app.py"
REPO = Path(__file__).resolve().parents[2]


def start_serve(home: Path, port: int, record: Path) -> subprocess.Popen:
    env = {
        **os.environ,
        "TOWER_HOME": str(home),
        "HOST_APP_RECORD": str(record),
        "HOST_APP_TIMER": "0 0 0 1 1 *",
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "tower", "serve", "--app", str(APP), "--port", str(port)],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/api/echo/special", timeout=1).read()
            return process
        except OSError:
            if process.poll() is not None:
                raise AssertionError(process.stderr.read()) from None
            time.sleep(0.1)
    process.kill()
    raise AssertionError("tower serve did not start within 20 s")


def stop_serve(process: subprocess.Popen) -> tuple[int, str]:
    process.send_signal(signal.SIGTERM)
    try:
        _, stderr = process.communicate(timeout=20)
    except subprocess.TimeoutExpired:
        process.kill()
        raise
    return process.returncode, stderr


def get_json(url: str):
    with urllib.request.urlopen(url, timeout=5) as response:
        return json.loads(response.read())


@pytest.mark.slow
def test_sigterm_stops_cleanly_and_a_restart_keeps_the_state(tmp_path):
    home, record, port = tmp_path / "home", tmp_path / "record.jsonl", free_port()
    base = f"http://127.0.0.1:{port}"
    serve = start_serve(home, port, record)
    try:
        request = urllib.request.Request(f"{base}/api/hello/zoe?id=kept-1", method="POST", data=b"")
        assert urllib.request.urlopen(request, timeout=5).status == 202
        deadline = time.monotonic() + 10
        while get_json(f"{base}/api/hello-status/kept-1")["status"] != "Completed":
            assert time.monotonic() < deadline
            time.sleep(0.05)
    finally:
        code, stderr = stop_serve(serve)
    assert code == 0, stderr
    assert "Traceback" not in stderr
    assert "start_hello: ok" in stderr and "tower serve: stopped" in stderr
    assert not (home / "engine.json").exists()

    again = start_serve(home, port, record)
    try:
        status = get_json(f"{base}/runtime/webhooks/durabletask/instances/kept-1")
        assert (status["runtimeStatus"], status["output"]) == ("Completed", "hello zoe")
    finally:
        code, stderr = stop_serve(again)
    assert code == 0 and "Traceback" not in stderr


def test_serve_refuses_a_missing_app_without_a_traceback(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "tower", "serve", "--app", str(tmp_path), "--port", "0"],
        cwd=REPO, env={**os.environ, "TOWER_HOME": str(tmp_path / "home")},
        capture_output=True, text=True, timeout=30,
    )
    assert done.returncode == 2
    assert "no function_app.py here" in done.stderr and "Traceback" not in done.stderr


def test_serve_on_a_taken_port_says_so_without_a_traceback(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = subprocess.run(
            [sys.executable, "-m", "tower", "serve", "--app", str(APP), "--port", str(port)],
            cwd=REPO, capture_output=True, text=True, timeout=30,
            env={**os.environ, "TOWER_HOME": str(tmp_path / "home"), "HOST_APP_RECORD": str(tmp_path / "r"),
                 "HOST_APP_TIMER": "0 0 0 1 1 *"},
        )
    assert done.returncode == 2, done.stderr
    assert f"cannot listen on 127.0.0.1:{port}" in done.stderr and "Traceback" not in done.stderr
