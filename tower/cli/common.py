"""Helpers shared by the sub-commands: where the catalog is, where state lives, how to print."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from tower import paths
from tower.paths import tower_home as tower_home  # re-exported: the sub-commands import it from here


def catalog_path(args) -> Path:
    """--catalog, else $TOWER_CATALOG, else ./catalog.yaml."""
    return paths.catalog_path(getattr(args, "catalog", None))


def load_catalog(args):
    from tower.catalog import load_catalog as load

    return load(catalog_path(args))


def print_json(data) -> None:
    json.dump(data, sys.stdout, indent=2, sort_keys=False, default=str)
    sys.stdout.write("\n")


def err(message: str) -> None:
    print(message, file=sys.stderr)


def plural(count: int, noun: str) -> str:
    """``1 pipeline``, ``3 pipelines``."""
    return f"{count} {noun}{'' if count == 1 else 's'}"
