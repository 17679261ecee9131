"""Start and stop a fakesnow server (the local Snowflake stand-in) as a subprocess.

Used by ``standins.py`` beside it (run as a script, so imported as a sibling module) and by the tests
(``examples.local.fakesnow_process``). Needs ``fakesnow[server]`` in the running interpreter's env.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

FAKESNOW = Path(sys.executable).with_name("fakesnow")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start(port: int | None = None, timeout: float = 15.0) -> tuple[subprocess.Popen, int]:
    """A running server on 127.0.0.1 and its port (a free one unless given); stop it with ``stop``.

    Raises RuntimeError, with the end of fakesnow's own output, if it exits or does not listen in time.
    """
    port = port or free_port()
    # stderr to a file, not a pipe: nobody reads it while the server runs, and a full pipe would stall it.
    stderr_file = tempfile.TemporaryFile()
    try:
        process = subprocess.Popen([str(FAKESNOW), "-s", "-p", str(port), "--host", "127.0.0.1"],
                                   stdout=subprocess.DEVNULL, stderr=stderr_file)
    except OSError as exc:
        stderr_file.close()
        raise RuntimeError(f"fakesnow could not start ({exc}): is fakesnow[server] installed?") from None
    process.stderr = stderr_file  # so stop() closes it
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            stderr_file.seek(0)
            output = stderr_file.read().decode(errors="replace")
            stop(process)
            raise RuntimeError(f"fakesnow exited (is port {port} free?): {output[-2000:]}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return process, port
        except OSError:
            time.sleep(0.05)
    stop(process)
    raise RuntimeError(f"fakesnow did not listen on port {port} within {timeout} s")


def stop(process: subprocess.Popen) -> None:
    """Terminate (kill if it is still there after 5 s), wait, and close its stderr file."""
    process.terminate()
    try:
        process.wait(timeout=5)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
    if process.stderr:
        process.stderr.close()
