"""Without Chromium the browser tests must not pass in silence: they are skipped with the reason,
and the run ends with a line that says they did not run."""

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_without_chromium_the_browser_tests_say_loudly_that_they_did_not_run(tmp_path):
    # a developer's machine: under CI (CI=true) a test that did not run fails the session (tests/conftest.py)
    env = {**{k: v for k, v in os.environ.items() if k != "CI"}, "TOWER_CHROMIUM": str(tmp_path / "no-chromium-here")}
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-k", "thousand",
         "tests/browser/test_dashboard.py"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    out = done.stdout + done.stderr
    assert done.returncode == 0, out
    assert out.rstrip().splitlines()[-1].startswith("1 skipped, 3 deselected")  # skipped, not passed
    assert "BROWSER TESTS DID NOT RUN" in out
    assert "browser tests NOT RUN: no chromium" in out  # the warning and the skip reason
