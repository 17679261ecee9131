import textwrap
from pathlib import Path

import pytest

from tower.catalog import load_catalog
from tower.errors import CatalogError


@pytest.fixture
def write(tmp_path: Path):
    """Write a dedented catalog text to a file and return its path."""

    def write(text: str, name: str = "catalog.yaml") -> Path:
        path = tmp_path / name
        path.write_text(textwrap.dedent(text).lstrip("\n"))
        return path

    return write


@pytest.fixture
def problems(write):
    """The problems a catalog text has (an empty list when it is valid)."""

    def problems(text: str) -> list:
        try:
            load_catalog(write(text))
        except CatalogError as exc:
            return exc.problems
        return []

    return problems
