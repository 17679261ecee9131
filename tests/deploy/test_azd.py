"""azure.yaml (azd) and .funcignore (what a publish ships)."""

import fnmatch

import yaml

from tests.deploy.bicep_tree import BICEP, ROOT


def test_azure_yaml_points_at_the_app_and_the_templates():
    project = yaml.safe_load((ROOT / "azure.yaml").read_text())
    service = project["services"]["tower"]
    assert (service["host"], service["language"], service["project"]) == ("function", "python", ".")
    infra = project["infra"]
    assert (infra["provider"], infra["path"], infra["module"]) == ("bicep", "bicep", "main")
    assert (ROOT / infra["path"] / f"{infra['module']}.bicep").exists()
    # azd reads <module>.bicepparam beside the module for the parameters
    assert (ROOT / infra["path"] / f"{infra['module']}.bicepparam").exists()
    # azd finds the app to deploy by this tag
    assert "'azd-service-name': 'tower'" in (BICEP / "modules/functionapp.bicep").read_text()


def ignored(patterns: list[str], path: str) -> bool:
    """Whether a .funcignore (gitignore syntax, the subset used here) leaves `path` out."""
    parts = path.split("/")
    for pattern in patterns:
        directory = pattern.endswith("/")
        pattern = pattern.rstrip("/")
        for i, part in enumerate(parts):
            if fnmatch.fnmatch(part, pattern) and (not directory or i < len(parts) - 1):
                return True
    return False


def funcignore() -> list[str]:
    lines = (ROOT / ".funcignore").read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


def test_funcignore_ships_the_app_only():
    patterns = funcignore()
    shipped = ["function_app.py", "app_runtime.py", "host.json", "requirements.txt", "tower/catalog/load.py", "triggers/events.py",
               "orchestrators/pipeline.py", "activities/runs.py", "examples/refinery/catalog.yaml"]
    left_out = [".venv/lib/python3.11/site.py", "tests/runs/test_plan.py", "benchmarks/RESULTS.md",
                "node_modules/azurite/package.json", ".tower/ledger.db", "local.settings.json",
                "tower.egg-info/PKG-INFO", "docs/deploy.md", "bicep/main.bicep", ".git/HEAD",
                "tower/__pycache__/plan.cpython-311.pyc"]
    assert [p for p in shipped if ignored(patterns, p)] == []
    assert [p for p in left_out if not ignored(patterns, p)] == []


def test_ignore_matcher_can_fail():
    assert ignored(["tests/"], "tests/x.py") and not ignored(["tests/"], "tests")
    assert not ignored(["*.egg-info/"], "tower/runs/plan.py")
