"""Kill -9 a real engine process mid-run, start it again: the instance completes, every completed
activity's side effect happened exactly once, the one running at the kill ran again."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

RUNNER = Path(__file__).parent / "apps" / "run_engine.py"


def lines(path: Path) -> Counter:
    return Counter(path.read_text().splitlines()) if path.exists() else Counter()


def kill_when(proc, side: Path, line: str, grace: float) -> None:
    deadline = time.monotonic() + 30
    while line not in lines(side):
        assert proc.poll() is None, proc.stderr.read()
        assert time.monotonic() < deadline, "the engine made no progress"
        time.sleep(0.01)
    time.sleep(grace)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(10)


@pytest.mark.slow
def test_kill_minus_nine_and_restart_completes_with_each_side_effect_once(tmp_path):
    home, side = tmp_path / "home", tmp_path / "side.txt"
    command = [sys.executable, str(RUNNER), str(home), str(side)]
    first = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    kill_when(first, side, "done 2", 0.1)              # step 3 is running (0.3 s) when we kill
    assert json.loads((home / "engine.json").read_text())["pid"] == first.pid   # left behind by the kill

    second = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    kill_when(second, side, "begin 101", 0.05)          # now kill inside the fan-out

    third = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert third.returncode == 0, third.stderr
    result = json.loads(third.stdout.splitlines()[-1])
    assert result == {"runtimeStatus": "Completed", "output": sum(range(6)) + sum(range(100, 104))}

    seen = lines(side)
    for i in [*range(6), *range(100, 104)]:
        assert seen[f"done {i}"] == 1, (i, seen)
    assert seen["begin 3"] == 2                          # running at the first kill: ran again
    assert seen["begin 101"] == 2
    assert not (home / "engine.json").exists()          # clean stop removes it
