"""Start and stop a fakesnow server (the local Snowflake stand-in) as a subprocess on a free port."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path

FAKESNOW = Path(sys.executable).with_name("fakesnow")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start(timeout: float = 15.0) -> tuple[subprocess.Popen, int]:
    """A running server and its port; stop it with ``stop(process)``."""
    port = free_port()
    process = subprocess.Popen(
        [str(FAKESNOW), "-s", "-p", str(port), "--host", "127.0.0.1"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"fakesnow exited: {process.stderr.read().decode()[-2000:]}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return process, port
        except OSError:
            time.sleep(0.05)
    stop(process)
    raise RuntimeError(f"fakesnow did not listen on port {port} within {timeout} s")


def stop(process: subprocess.Popen) -> None:
    process.terminate()
    try:
        process.wait(timeout=5)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
    if process.stderr:
        process.stderr.close()
