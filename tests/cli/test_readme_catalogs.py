"""Every YAML catalog snippet in README.md and docs/ validates, and the README's runs as written."""

import json
import re
from pathlib import Path

import pytest

from tower.cli.main import main

ROOT = Path(__file__).resolve().parents[2]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
FENCE = re.compile(r"^```ya?ml\n(.*?)^```", re.MULTILINE | re.DOTALL)


def snippets() -> list[tuple[str, str]]:
    found = []
    for doc in DOCS:
        for number, match in enumerate(FENCE.finditer(doc.read_text()), 1):
            found.append((f"{doc.relative_to(ROOT)}#{number}", match.group(1)))
    return found


def test_the_docs_have_catalog_snippets():
    assert any(name.startswith("README.md") for name, _ in snippets())


@pytest.mark.parametrize("name, text", snippets(), ids=[name for name, _ in snippets()])
def test_each_snippet_validates(name, text, tmp_path, capsys):
    path = tmp_path / "catalog.yaml"
    path.write_text(text)
    code = main(["--catalog", str(path), "validate"])
    assert code == 0, capsys.readouterr().err


def test_the_readme_catalog_runs_with_the_param_it_binds(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("TOWER_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("TOWER_HISTORY_TABLE_URL", raising=False)
    path = tmp_path / "catalog.yaml"
    path.write_text(snippets()[0][1])
    code = main(["--catalog", str(path), "run", "nightly", "--simulate", "--time-scale", "0.0001",
                 "--param", "business_date=2026-11-25", "--json"])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert json.loads(out)["status"] == "succeeded"
