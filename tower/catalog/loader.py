"""Read a catalog file: every way it can fail is a CatalogError naming the path, never a traceback."""

from __future__ import annotations

import os
from pathlib import Path

from tower.catalog.model import Catalog
from tower.catalog.validate import build_catalog
from tower.catalog.yamlsource import parse
from tower.errors import CatalogError, Problem

MAX_CATALOG_BYTES = 16 * 1024 * 1024


def load_catalog(path: str | os.PathLike) -> Catalog:
    """Load and validate a catalog; CatalogError with every problem found."""
    name = str(path)
    data, problems = parse(_read(name), name)
    if problems and data is None:  # a syntax error stops here; duplicate keys go on with the rest
        raise CatalogError(problems)
    try:
        catalog = build_catalog(data, name)
    except CatalogError as exc:
        raise CatalogError(problems + exc.problems) from None
    if problems:
        raise CatalogError(problems)
    return catalog


def _fail(path: str, what: str, hint: str) -> CatalogError:
    return CatalogError([Problem(path, 1, 1, "catalog", what, hint)])


def _read(path: str) -> str:
    file = Path(path)
    try:
        if file.is_dir():
            raise _fail(path, "is a directory, not a catalog file", "pass the YAML file, e.g. --catalog DIR/catalog.yaml")
        if file.stat().st_size > MAX_CATALOG_BYTES:
            raise _fail(path, "file is too large for a catalog", f"keep it under {MAX_CATALOG_BYTES // 2**20} MiB")
        raw = file.read_bytes()
    except FileNotFoundError:
        raise _fail(path, "file not found", "pass --catalog PATH or set $TOWER_CATALOG") from None
    except PermissionError:
        raise _fail(path, "permission denied", "make the file readable") from None
    except OSError as exc:
        raise _fail(path, f"cannot read the file: {exc.strerror or exc}", "check the path") from None
    if b"\0" in raw:
        raise _fail(path, "this is a binary file, not YAML", "point --catalog at the catalog's YAML file")
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise CatalogError([Problem(path, line, 1, "catalog", "not valid UTF-8 text", "save the file as UTF-8")]) from None
