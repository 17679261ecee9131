"""The validator's toolbox: a problem collector and one checker per kind of value.

Each ``check_*`` function takes a value with its location and place (``where``), records what is
wrong on the ``Checker`` and returns the normalised value, or ``INVALID`` so callers can carry on
and report every other problem too.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from typing import Any

from tower.catalog import env
from tower.catalog.durations import HELP as DURATION_HELP
from tower.catalog.durations import parse_duration
from tower.catalog.fields import NAME, NAME_HINT, RETRY_FIELDS, SECRET_FIELDS, is_secret_header
from tower.catalog.model import Location, RetryPolicy
from tower.catalog.yamlsource import Mapping, Sequence, describe, plain
from tower.errors import Problem

INVALID = object()  # a value was reported as wrong; the caller skips whatever depends on it

Where = tuple[str, ...]


def close_match(word: str, choices: Iterable[str]) -> str | None:
    """The choice `word` is a near miss of (a typo), or None."""
    close = difflib.get_close_matches(str(word), list(choices), n=1, cutoff=0.6)
    return close[0] if close else None


def did_you_mean(word: str, choices: Iterable[str], noun: str = "use one of") -> str:
    """``did you mean 'x'?`` for a near miss, else the list of what is allowed."""
    choices = list(choices)
    close = close_match(word, choices)
    if close:
        return f"did you mean '{close}'?"
    if not choices:
        return "none are declared"
    return f"{noun}: " + ", ".join(choices[:12]) + (", ..." if len(choices) > 12 else "")


def kind(value: Any) -> str:
    """A person's word for a YAML value's type (never the value: it may be a secret)."""
    if value is None:
        return "nothing"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return type(value).__name__


class Checker:
    """Collects problems for one catalog file."""

    def __init__(self, path: str):
        self.path = path
        self.problems: list[Problem] = []

    def add(self, location: Location, where: Where, what: str, hint: str = "") -> None:
        self.problems.append(Problem(self.path, location.line, location.column, describe(where), what, hint))

    def unknown_keys(self, mapping: Mapping, allowed: Iterable[str], where: Where, explain=None) -> None:
        """Report keys outside ``allowed``: a near miss gets "did you mean", else ``explain(key)``
        (e.g. "'sql' is a snowflake field"), else the list of known fields."""
        allowed = tuple(allowed)
        for key in mapping:
            if key in allowed:
                continue
            hint = explain(key) if explain and not close_match(key, allowed) else None
            hint = hint or did_you_mean(key, allowed, "known fields")
            self.add(mapping.key_location(key), where, f"unknown field '{key}'", hint)

    def mapping(self, value: Any, location: Location, where: Where, example: str) -> Mapping | None:
        """``value`` if it is a mapping (an empty one for null), else None after reporting it."""
        if value is None:
            return Mapping(location)
        if isinstance(value, Mapping):
            return value
        self.add(location, where, f"expected a mapping, got {kind(value)}", f"write it as {example}")
        return None


def check_name(ck: Checker, name: str, location: Location, where: Where) -> None:
    if not NAME.fullmatch(name):
        ck.add(location, where, f"invalid name '{name}'", NAME_HINT)


def check_duration(ck: Checker, value: Any, location: Location, where: Where, *, positive=False):
    try:
        seconds = parse_duration(value)
    except ValueError as exc:
        what = str(exc).replace(f" ({DURATION_HELP})", "")
        ck.add(location, where, what, DURATION_HELP)
        return INVALID
    if positive and seconds <= 0:
        ck.add(location, where, "must be longer than 0s", "write a duration such as 30m, or remove the field")
        return INVALID
    return seconds


def check_int(ck: Checker, value: Any, location: Location, where: Where, minimum: int, example: str):
    if isinstance(value, bool) or not isinstance(value, int):
        ck.add(location, where, f"expected a whole number >= {minimum}, got {kind(value)}", f"e.g. {example}")
        return INVALID
    if value < minimum:
        ck.add(location, where, f"must be >= {minimum}, got {value}", f"e.g. {example}")
        return INVALID
    return value


def check_text(ck: Checker, value: Any, location: Location, where: Where, example: str, *, numbers=False):
    """A non-empty string (numbers allowed when ``numbers``), with well-formed ${VAR} references."""
    allowed = (str, int, float) if numbers else (str,)
    if isinstance(value, bool) or not isinstance(value, allowed):
        ck.add(location, where, f"expected a string, got {kind(value)}", f"e.g. {example}")
        return INVALID
    if isinstance(value, str) and not value.strip():
        ck.add(location, where, "is empty", f"e.g. {example}, or remove the field")
        return INVALID
    return value


def check_env_syntax(ck: Checker, value: Any, location: Location, where: Where) -> bool:
    """Check the ${VAR} references in every string of ``value``; True when all are well formed."""
    good = True
    if isinstance(value, str):
        problem = env.syntax_error(value)
        if problem:
            ck.add(location, where, problem, "fix the reference, or write $${ for a literal ${")
            good = False
    elif isinstance(value, dict):
        for key, item in value.items():
            loc = value.value_location(key) if isinstance(value, Mapping) else location
            good &= check_env_syntax(ck, item, loc, (*where, str(key)))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            loc = value.item_location(index) if isinstance(value, Sequence) else location
            good &= check_env_syntax(ck, item, loc, (*where, f"[{index}]"))
    return good


def check_secret(ck: Checker, value: Any, location: Location, where: Where, variable: str) -> None:
    """A credential must come from the environment: a literal is reported without being echoed."""
    if isinstance(value, str) and env.references(value):
        defaulted = env.defaulted(value)
        if defaulted:
            name = defaulted[0]
            ck.add(location, where, f"a secret has a default written in the catalog ('${{{name}:-...}}')",
                   f"a default is a literal secret: write ${{{name}}} and export {name}, or keep it in an env "
                   "file outside the repository")
        return
    ck.add(
        location,
        where,
        "a secret is written literally in the catalog",
        f"secrets never live in the catalog: put it in an environment variable and write ${{{variable}}}",
    )


def secret_variable(owner: str, field: str) -> str:
    """A suggested variable name: platform 'warehouse' field 'password' -> WAREHOUSE_PASSWORD."""
    return "".join(c if c.isalnum() else "_" for c in f"{owner}_{field}").upper()


def check_settings_secrets(ck: Checker, settings: Mapping, where: Where, owner: str) -> None:
    """Secret fields and secret-looking headers of one platform or service must be references."""
    for field in settings:
        if field in SECRET_FIELDS:
            check_secret(ck, settings[field], settings.value_location(field), (*where, field),
                         secret_variable(owner, field))
    headers = settings.get("headers")
    if isinstance(headers, Mapping):
        for name, value in headers.items():
            if is_secret_header(name):
                check_secret(ck, value, headers.value_location(name), (*where, "headers", name),
                             secret_variable(owner, name))


def check_string_map(ck: Checker, value: Any, location: Location, where: Where, example: str):
    """A mapping of names to strings (numbers allowed), e.g. HTTP headers or environment variables."""
    mapping = ck.mapping(value, location, where, example)
    if mapping is None:
        return INVALID
    for name, item in mapping.items():
        if isinstance(item, bool) or not isinstance(item, (str, int, float)):
            ck.add(mapping.value_location(name), (*where, name), f"expected a string, got {kind(item)}",
                   f"write the value as a string, e.g. {example}")
    return plain(mapping)


def check_string_list(ck: Checker, value: Any, location: Location, where: Where, example: str, noun: str,
                      item_noun: str = "a name"):
    """A list of non-empty strings without repeats; returns a tuple of (string, location) pairs."""
    if not isinstance(value, list):
        ck.add(location, where, f"expected a list of {noun}, got {kind(value)}", f"write it as {example}")
        return INVALID
    items, seen = [], {}
    for index, item in enumerate(value):
        item_location = value.item_location(index)
        if not isinstance(item, str) or not item.strip():
            ck.add(item_location, (*where, f"[{index}]"), f"expected {item_noun}, got {kind(item)}",
                   f"write it as {example}")
        elif item in seen:
            ck.add(item_location, where, f"'{item}' is listed twice", "remove the repeat")
        else:
            seen[item] = item_location
            items.append((item, item_location))
    return tuple(items)


def check_tags(ck: Checker, value: Any, location: Location, where: Where):
    items = check_string_list(ck, value, location, where, "tags: [finance, daily]", "tags", "a tag")
    if items is INVALID:
        return INVALID
    good = []
    for tag, tag_location in items:
        if not NAME.fullmatch(tag):
            ck.add(tag_location, where, f"invalid tag '{tag}'", f"{NAME_HINT}, so 'tag:{tag}' can select it")
        else:
            good.append(tag)
    return tuple(good)


def check_params(ck: Checker, value: Any, location: Location, where: Where):
    params = ck.mapping(value, location, where, "params: {date: '2026-11-24'}")
    return INVALID if params is None else plain(params)


def check_retries(ck: Checker, value: Any, location: Location, where: Where):
    """``retries: N`` or ``{attempts: N, backoff: 30s, max_backoff: 10m}``; N counts retries."""
    example = "retries: 2 or retries: {attempts: 2, backoff: 30s, max_backoff: 10m}"
    if isinstance(value, int) and not isinstance(value, bool):
        retries = check_int(ck, value, location, where, 0, "retries: 2")
        return INVALID if retries is INVALID else RetryPolicy(retries=retries)
    if not isinstance(value, Mapping):
        ck.add(location, where, f"expected a number of retries or a mapping, got {kind(value)}", example)
        return INVALID
    ck.unknown_keys(value, RETRY_FIELDS, where)
    defaults = RetryPolicy()
    fields: dict[str, Any] = {}
    if "attempts" not in value:
        ck.add(value.location, where, "missing 'attempts'", example)
        fields["retries"] = INVALID
    else:
        fields["retries"] = check_int(ck, value["attempts"], value.value_location("attempts"),
                                      (*where, "attempts"), 0, "attempts: 2")
    for field in ("backoff", "max_backoff"):
        if field in value:
            fields[field] = check_duration(ck, value[field], value.value_location(field), (*where, field))
    if INVALID in fields.values():
        return INVALID
    backoff = fields.get("backoff", defaults.backoff)
    if "max_backoff" not in fields:  # a long backoff alone raises the cap rather than being cut
        fields["max_backoff"] = max(defaults.max_backoff, backoff)
    elif backoff > fields["max_backoff"]:
        ck.add(value.value_location("backoff"), (*where, "backoff"),
               f"backoff ({value['backoff']}) is longer than max_backoff ({value['max_backoff']})",
               "make backoff <= max_backoff")
        return INVALID
    return RetryPolicy(**fields)
