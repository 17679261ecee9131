"""Where Tower finds its catalog and keeps local state, unless told otherwise."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

DEFAULT_HOME = ".tower"
DEFAULT_CATALOG = "catalog.yaml"


def tower_home(environ: Mapping[str, str] | None = None) -> Path:
    """Where local state lives (engine store, run history, command logs, local bus): $TOWER_HOME,
    else ./.tower."""
    environ = os.environ if environ is None else environ
    return Path(environ.get("TOWER_HOME") or DEFAULT_HOME)


def catalog_path(explicit: str | os.PathLike | None = None) -> Path:
    """``explicit`` (e.g. --catalog), else $TOWER_CATALOG, else ./catalog.yaml."""
    return Path(explicit or os.environ.get("TOWER_CATALOG") or DEFAULT_CATALOG)
