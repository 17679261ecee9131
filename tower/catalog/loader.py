"""Read a catalog file: every way it can fail is a CatalogError naming the path, never a traceback."""

from __future__ import annotations

import os
from pathlib import Path

from tower.catalog.model import Catalog
from tower.catalog.validate import build_catalog
from tower.catalog.yamlsource import describe, parse
from tower.errors import CatalogError, Problem

MAX_CATALOG_BYTES = 16 * 1024 * 1024


def load_catalog(path: str | os.PathLike, *, for_azure: bool = False) -> Catalog:
    """Load and validate a catalog; CatalogError with every problem found. `for_azure`: as the
    Functions app loads it in Azure, where some platforms cannot run (`azure_problems`)."""
    name = str(path)
    data, problems = parse(_read(name), name)
    if problems and data is None:  # a syntax error stops here; duplicate keys go on with the rest
        raise CatalogError(problems)
    try:
        catalog = build_catalog(data, name)
    except CatalogError as exc:
        raise CatalogError(problems + exc.problems) from None
    problems += azure_problems(catalog) if for_azure else []
    if problems:
        raise CatalogError(problems)
    return catalog


# Platforms whose work runs on the machine that runs Tower: in Azure, a Functions worker. It may be
# replaced at any moment (a scale-in, a deployment), the worker that polls the work next may be
# another one, which cannot see its process or its files, and the app folder is read-only.
ON_TOWERS_MACHINE = ("command",)


def azure_problems(catalog: Catalog) -> list[Problem]:
    """What a valid catalog declares that the Functions app cannot run in Azure."""
    return [Problem(catalog.path, p.location.line if p.location else 1, p.location.column if p.location else 1,
                    describe(("platforms", p.name)),
                    f"a {p.type} platform runs its work on the machine that runs Tower, which in Azure is a "
                    "Functions worker: it may be replaced at any moment, another worker could not see the work, "
                    "and the app folder is read-only",
                    "run this work where it can live, as an http service or a Databricks job; command platforms "
                    "are for catalogs run with `tower run` or `tower serve`")
            for p in catalog.platforms.values() if p.type in ON_TOWERS_MACHINE]


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
