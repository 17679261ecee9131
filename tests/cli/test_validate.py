"""`tower validate`: exit codes, output streams, and no traceback for any bad input."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tower.cli.main import main

ROOT = Path(__file__).resolve().parents[2]
REFINERY = ROOT / "examples" / "refinery" / "catalog.yaml"

BROKEN = """\
platforms:
  sim: {type: sim}
services:
  a: {platform: simm}
  b: {platform: sim, depends_on: [a, c]}
"""


def test_a_valid_catalog_says_ok_on_stdout(capsys):
    assert main(["--catalog", str(REFINERY), "validate"]) == 0
    out, err = capsys.readouterr()
    assert out == "ok: 27 services, 3 pipelines, 3 platforms\n" and err == ""


def test_azure_checks_the_catalog_as_the_functions_app_loads_it_in_azure(tmp_path, capsys):
    assert main(["--catalog", str(REFINERY), "validate", "--azure"]) == 0  # the catalog azd deploys
    assert capsys.readouterr().out == "ok: 27 services, 3 pipelines, 3 platforms\n"
    path = tmp_path / "catalog.yaml"
    path.write_text("platforms:\n  sim: {type: sim}\n  scripts: {type: command}\n"
                    "services:\n  a: {platform: scripts, run: 'echo hi'}\n")
    assert main(["--catalog", str(path), "validate"]) == 0
    capsys.readouterr()
    assert main(["--catalog", str(path), "validate", "--azure"]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.startswith(f"{path}:3:3: platform 'scripts': a command platform runs its work")
    assert err.endswith("1 problem found\n")


def test_problems_go_to_stderr_one_per_line_then_a_count(tmp_path, capsys):
    path = tmp_path / "catalog.yaml"
    path.write_text(BROKEN)
    assert main(["--catalog", str(path), "validate"]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err.splitlines() == [
        f"{path}:4:17: service 'a' field 'platform': unknown platform 'simm' (did you mean 'sim'?)",
        f"{path}:5:38: service 'b' field 'depends_on': depends on unknown service 'c' (declared services: a)",
        "2 problems found",
    ]


def test_the_catalog_comes_from_the_environment_when_not_given(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("TOWER_CATALOG", str(REFINERY))
    assert main(["validate"]) == 0
    monkeypatch.delenv("TOWER_CATALOG")
    monkeypatch.chdir(tmp_path)  # no ./catalog.yaml here
    assert main(["validate"]) == 2
    assert "catalog.yaml:1:1: catalog: file not found" in capsys.readouterr().err


def test_json_output(tmp_path, capsys):
    path = tmp_path / "catalog.yaml"
    path.write_text(BROKEN)
    assert main(["--catalog", str(path), "validate", "--json"]) == 2
    result = json.loads(capsys.readouterr().out)
    assert result["ok"] is False
    assert result["problems"][0] == {
        "path": str(path), "line": 4, "column": 17, "where": "service 'a' field 'platform'",
        "what": "unknown platform 'simm'", "hint": "did you mean 'sim'?",
    }
    assert main(["--catalog", str(REFINERY), "validate", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == {
        "ok": True, "catalog": str(REFINERY), "services": 27, "pipelines": 3, "platforms": 3,
    }


def _tower(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tower", *args], cwd=cwd, capture_output=True, text=True,
                          env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)}, timeout=30)


@pytest.mark.parametrize(
    "setup, message",
    [
        (lambda d: d, "is a directory, not a catalog file"),
        (lambda d: (d / "c.yaml").write_bytes(b"\x00\x01binary\xff") and d / "c.yaml", "binary file"),
        (lambda d: d / "nope.yaml", "file not found"),
        (lambda d: (d / "c.yaml").write_text("services:\n  a: [unclosed\n") and d / "c.yaml", "YAML: "),
        (lambda d: (d / "c.yaml").write_text("- just\n- a list\n") and d / "c.yaml", "expected a mapping"),
    ],
    ids=["directory", "binary", "missing", "bad-yaml", "list"],
)
def test_bad_input_exits_2_without_a_traceback(tmp_path, setup, message):
    path = setup(tmp_path)
    result = _tower("--catalog", str(path), "validate", cwd=tmp_path)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr and result.stdout == ""
    assert result.stderr.startswith(f"{path}:") and message in result.stderr
    assert result.stderr.endswith("1 problem found\n")


def test_validate_imports_no_platform_or_functions_sdk(tmp_path):
    code = (
        "import sys; from tower.cli.main import main; "
        f"code = main(['--catalog', {str(REFINERY)!r}, 'validate']); "
        "heavy = sorted({m.split('.')[0] for m in sys.modules} & "
        "{'databricks', 'snowflake', 'azure', 'aiohttp', 'requests', 'rich'}); "
        "print(heavy); sys.exit(code)"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True,
                            env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)}, timeout=30)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-1] == "[]"
