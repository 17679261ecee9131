"""``${VAR}`` and ``${VAR:-default}`` references to the environment, in catalog values.

References are checked for syntax when the catalog loads (``syntax_error``) but read only when a
platform is used (``resolve``), so a catalog validates on a laptop without production secrets and
a missing variable is reported by the run that needs it. ``$${`` writes a literal ``${``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import Any

from tower.errors import ConfigError

_REFERENCE = re.compile(r"\$\$\{|\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?::-(?P<default>[^}]*))?\}")
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def syntax_error(text: str) -> str | None:
    """What is wrong with the ``${...}`` references in ``text``, or None when they are fine."""
    position = 0
    while (start := text.find("${", position)) >= 0:
        if start > 0 and text[start - 1] == "$":  # $${ is an escaped, literal ${
            position = start + 2
            continue
        match = _REFERENCE.match(text, start)
        if match:
            position = match.end()
            continue
        end = text.find("}", start)
        if end < 0:
            return f"unclosed '${{' at character {start + 1}: write ${{NAME}} or ${{NAME:-default}}"
        inner = text[start + 2 : end]
        name = re.split(r":-|:|-", inner, maxsplit=1)[0]
        if not name:
            return "empty variable name in '${}': write ${NAME} or ${NAME:-default}"
        if not _NAME.fullmatch(name):
            return (
                f"invalid variable name '{name}' in '${{{inner}}}': use letters, digits and '_', "
                "not starting with a digit"
            )
        return f"bad reference '${{{inner}}}': write ${{{name}}} or ${{{name}:-default}}"
    return None


def references(value: Any) -> list[str]:
    """Names of the variables a value refers to (recursively), in order."""
    if isinstance(value, str):
        return [m["name"] for m in _REFERENCE.finditer(value) if m["name"]]
    if isinstance(value, dict):
        return [name for item in value.values() for name in references(item)]
    if isinstance(value, list):
        return [name for item in value for name in references(item)]
    return []


def defaulted(value: str) -> list[str]:
    """Names of the variables in ``value`` written with a non-empty ``:-default`` (``${VAR:-}``, an
    optional value such as a key's passphrase, holds nothing)."""
    return [m["name"] for m in _REFERENCE.finditer(value) if m["name"] and m["default"]]


def resolve(value: Any, environ: Mapping[str, str] | None = None, where: str = "value") -> Any:
    """``value`` with every reference replaced from ``environ`` (default: ``os.environ``).

    Recurses into dicts and lists. ``${VAR:-default}`` uses the default when VAR is unset or empty.
    Raises ConfigError naming the field and the variable (never a value) when VAR is unset.
    """
    return _resolve(value, os.environ if environ is None else environ, where, "")


def _resolve(value: Any, environ: Mapping[str, str], where: str, field: str) -> Any:
    if isinstance(value, dict):
        return {
            key: _resolve(item, environ, where, f"{field}.{key}" if field else str(key))
            for key, item in value.items()
        }
    if isinstance(value, list):
        return [_resolve(item, environ, where, f"{field}[{i}]") for i, item in enumerate(value)]
    if not isinstance(value, str) or "${" not in value:
        return value
    place = f"{where} field '{field}'" if field else where

    def substitute(match: re.Match) -> str:
        name = match["name"]
        if name is None:  # $${ -> ${
            return "${"
        found = environ.get(name)
        if match["default"] is not None:
            return found if found else match["default"]
        if found is None:
            # A secret never gets a default (it would be a literal secret in the catalog).
            how = "export it" if _is_secret(field) else f"export it or use ${{{name}:-default}}"
            raise ConfigError(f"{place}: environment variable {name} is not set ({how})")
        return found

    problem = syntax_error(value)
    if problem:
        raise ConfigError(f"{place}: {problem}")
    return _REFERENCE.sub(substitute, value)


def _is_secret(field: str) -> bool:
    """Whether a dotted field path (``password``, ``headers.Authorization``) holds a credential."""
    from tower.catalog.fields import SECRET_FIELDS, is_secret_header

    leaf = field.rsplit(".", 1)[-1].split("[", 1)[0]
    return leaf in SECRET_FIELDS or (field.startswith("headers.") and is_secret_header(leaf))
