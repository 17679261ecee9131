"""The service catalog: load a YAML catalog into a validated, frozen model.

    load_catalog(path) -> Catalog           CatalogError listing every problem, with file:line:column
    parse_duration(text) / format_duration(seconds)
    resolve(value, environ, where)          ${VAR} / ${VAR:-default} at use, ConfigError if unset
"""

from tower.catalog.durations import format_duration, parse_duration
from tower.catalog.env import resolve
from tower.catalog.loader import load_catalog
from tower.catalog.model import Catalog, Pipeline, Platform, RetryPolicy, Schedule, Service

__all__ = [
    "Catalog",
    "Pipeline",
    "Platform",
    "RetryPolicy",
    "Schedule",
    "Service",
    "format_duration",
    "load_catalog",
    "parse_duration",
    "resolve",
]
