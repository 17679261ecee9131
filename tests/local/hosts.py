"""Two hosts over one home, for tests: another engine in its own process beside the test's.

    with host_process(home, app="tests.local.apps.durable_app:make_app") as other:
        ...   # other.pid, other.leader (holds the orchestration lease), other.stderr()

`activities_only=True` makes it a second worker that never runs orchestrations (per-process state,
such as a ledger object's dispatches under way, then meets another process); `max_activities`
caps what a host takes at once, so that the next work item goes to the other host. The default
app is Tower's own (`tower.local.driver:run_app`). See tower/local/worker.py.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class HostProcess:
    proc: subprocess.Popen
    pid: int
    host_id: str
    leader: bool
    base_url: str
    log_path: Path

    def stderr(self) -> str:
        return self.log_path.read_text()


@contextmanager
def host_process(home, app: str = "tower.local.driver:run_app", *, activities_only: bool = False,
                 max_activities: int | None = None, env: dict | None = None, timeout: float = 60):
    """Start `python -m tower.local.worker` over `home`; stopped (SIGTERM, then SIGKILL) on exit."""
    command = [sys.executable, "-m", "tower.local.worker", str(home), "--app", app]
    if activities_only:
        command.append("--activities-only")
    if max_activities is not None:
        command += ["--max-activities", str(max_activities)]
    log = Path(tempfile.mkstemp(prefix="tower-host-", suffix=".log")[1])
    with open(log, "w") as err:
        proc = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=err, text=True,
                                env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})})
    try:
        line = proc.stdout.readline()     # the worker prints one JSON line when it is ready
        if not line:
            proc.wait(timeout)
            raise RuntimeError(f"the host process exited with {proc.returncode}:\n{log.read_text()}")
        info = json.loads(line)
        yield HostProcess(proc, info["pid"], info["ready"], info["leader"], info["base_url"], log)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
        proc.stdout.close()
        log.unlink(missing_ok=True)
