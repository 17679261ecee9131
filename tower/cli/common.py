"""Helpers shared by the sub-commands: where the catalog is, where state lives, how to print."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

DEFAULT_CATALOG = "catalog.yaml"


def catalog_path(args) -> Path:
    """--catalog, else $TOWER_CATALOG, else ./catalog.yaml."""
    return Path(getattr(args, "catalog", None) or os.environ.get("TOWER_CATALOG") or DEFAULT_CATALOG)


def tower_home() -> Path:
    """Where local state lives: $TOWER_HOME, else ./.tower."""
    return Path(os.environ.get("TOWER_HOME") or ".tower")


def load_catalog(args):
    from tower.catalog import load_catalog as load

    return load(catalog_path(args))


def print_json(data) -> None:
    json.dump(data, sys.stdout, indent=2, sort_keys=False, default=str)
    sys.stdout.write("\n")


def err(message: str) -> None:
    print(message, file=sys.stderr)
