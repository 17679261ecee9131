"""A test that did not run is reported loudly, and under CI it fails the session (tests/conftest.py).

Each case runs pytest in a child process over a scratch suite that uses the real conftest, with no
Azurite reachable."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

CONFTEST = Path(__file__).with_name("conftest.py")


@pytest.fixture
def scratch_suite(tmp_path):
    suite = tmp_path / "tests"
    suite.mkdir()
    shutil.copy(CONFTEST, suite / "conftest.py")
    (suite / "test_table.py").write_text(
        "import pytest\n\n"
        "def test_needs_azurite(azurite_table_url):\n    assert azurite_table_url\n\n"
        "def test_runs_anywhere():\n    assert True\n")
    return suite


def run_suite(suite, *, ci):
    env = {k: v for k, v in os.environ.items() if k not in ("CI", "AZURITE")}
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), "/usr/bin", "/bin"])
    if ci:
        env["CI"] = "true"
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(suite)],
                          cwd=suite.parent, env=env, capture_output=True, text=True, timeout=120)


def test_without_azurite_the_table_tests_are_named_as_not_run(scratch_suite):
    result = run_suite(scratch_suite, ci=False)
    assert result.returncode == 0, result.stdout
    assert "1 TEST(S) DID NOT RUN" in result.stdout
    assert "1 not run: Azurite is not installed" in result.stdout
    assert "tests/test_table.py::test_needs_azurite" in result.stdout.split("DID NOT RUN", 1)[1]
    assert "1 passed, 1 skipped" in result.stdout


def test_under_ci_a_missing_azurite_fails_the_tests_that_need_it(scratch_suite):
    result = run_suite(scratch_suite, ci=True)
    assert result.returncode == 1, result.stdout
    assert "1 passed, 1 error" in result.stdout
    assert "Azurite is not installed" in result.stdout


def test_under_ci_any_skip_fails_the_session(scratch_suite):
    (scratch_suite / "test_table.py").write_text(
        "import pytest\n\ndef test_skips():\n    pytest.skip('no GPU here')\n")
    assert run_suite(scratch_suite, ci=False).returncode == 0
    result = run_suite(scratch_suite, ci=True)
    assert result.returncode == 1, result.stdout
    assert "1 not run: no GPU here" in result.stdout
    assert "CI is set: a test that did not run fails the session." in result.stdout
