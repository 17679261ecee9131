"""Read YAML into plain dicts and lists that remember where every key and value was written.

PyYAML's composer gives nodes with line/column marks; we turn them into ``Mapping``/``Sequence``
(subclasses of ``dict``/``list``) that keep those marks, so the validator works on ordinary Python
values yet can point at ``file:line:column`` for any of them. Along the way we report what plain
``yaml.safe_load`` silently accepts: duplicate keys, non-scalar keys, recursive aliases.

Two YAML 1.1 surprises are switched off: ``yes/no/on/off`` stay strings (only ``true``/``false``
are booleans) and dates stay strings (``date: 2026-11-24`` is a parameter, not a datetime).
"""

from __future__ import annotations

import re
from typing import Any

import yaml

from tower.catalog.model import Location
from tower.errors import Problem

try:  # libyaml when present: same marks, faster
    _BaseLoader = yaml.CSafeLoader
except AttributeError:  # pragma: no cover - pure-Python PyYAML
    _BaseLoader = yaml.SafeLoader

_MERGE_TAG = "tag:yaml.org,2002:merge"
_BOOL_TAG = "tag:yaml.org,2002:bool"
_TIMESTAMP_TAG = "tag:yaml.org,2002:timestamp"


class _Loader(_BaseLoader):
    """SafeLoader with YAML 1.2-style booleans and no implicit timestamps."""


_Loader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag not in (_BOOL_TAG, _TIMESTAMP_TAG)]
    for first, resolvers in _BaseLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver(_BOOL_TAG, re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF"))


class Mapping(dict):
    """A YAML mapping: a dict, plus where it, each key and each value was written."""

    def __init__(self, location: Location):
        super().__init__()
        self.location = location
        self.key_locations: dict[str, Location] = {}
        self.value_locations: dict[str, Location] = {}

    def key_location(self, key: str) -> Location:
        return self.key_locations.get(key, self.location)

    def value_location(self, key: str) -> Location:
        return self.value_locations.get(key, self.key_location(key))


class Sequence(list):
    """A YAML sequence: a list, plus where it and each item were written."""

    def __init__(self, location: Location):
        super().__init__()
        self.location = location
        self.item_locations: list[Location] = []

    def item_location(self, index: int) -> Location:
        return self.item_locations[index] if index < len(self.item_locations) else self.location


def plain(value: Any) -> Any:
    """The same value as ordinary dicts and lists, for the model (JSON-able, no location baggage)."""
    if isinstance(value, dict):
        return {key: plain(item) for key, item in value.items()}
    if isinstance(value, list):
        return [plain(item) for item in value]
    return value


def parse(text: str, path: str) -> tuple[Any, list[Problem]]:
    """Parse one YAML document. Returns (data, problems); data is None when the text is not YAML."""
    loader = _Loader(text)
    try:
        node = loader.get_single_node()
    except yaml.MarkedYAMLError as exc:
        return None, [_syntax_problem(exc, text, path)]
    except yaml.YAMLError as exc:  # unmarked reader errors (e.g. a control character)
        return None, [Problem(path, 1, 1, "YAML", f"cannot parse: {exc}", "fix the YAML syntax")]
    finally:
        loader.dispose()
    if node is None:
        return None, []
    converter = _Converter(loader, path)
    return converter.convert(node, ()), converter.problems


def _syntax_problem(exc: yaml.MarkedYAMLError, text: str, path: str) -> Problem:
    mark = exc.problem_mark or exc.context_mark
    line, column = (mark.line, mark.column) if mark else (0, 0)
    what = exc.problem or "not valid YAML"
    if exc.context:
        what += f" {exc.context}"
    lines = text.splitlines()

    def char_at(m) -> str:
        return lines[m.line][m.column : m.column + 1] if m and m.line < len(lines) else ""

    starts = {char_at(exc.problem_mark), char_at(exc.context_mark)} & set("*@`&!%|>")
    if char_at(exc.problem_mark) == "\t":
        hint = "indent with spaces, not tabs"
    elif starts:
        hint = f"quote a value that starts with '{starts.pop()}', e.g. schedule: \"30 2 * * *\""
    elif "mapping values are not allowed" in what:
        hint = "quote a value that contains ': ', or fix the indentation"
    else:
        hint = "fix the YAML syntax (indentation, quotes, brackets)"
    return Problem(path, line + 1, column + 1, "YAML", what, hint)


def _location(node: yaml.Node, path: str) -> Location:
    return Location(path, node.start_mark.line + 1, node.start_mark.column + 1)


class _Converter:
    """Turns composed nodes into located values, collecting problems instead of raising."""

    def __init__(self, loader: yaml.SafeLoader, path: str):
        self.loader = loader
        self.path = path
        self.problems: list[Problem] = []
        self._active: set[int] = set()  # nodes being converted right now: a repeat is a recursive alias

    def problem(self, node: yaml.Node, where: tuple[str, ...], what: str, hint: str) -> None:
        loc = _location(node, self.path)
        self.problems.append(Problem(self.path, loc.line, loc.column, describe(where), what, hint))

    def convert(self, node: yaml.Node, where: tuple[str, ...]) -> Any:
        if id(node) in self._active:
            self.problem(node, where, "recursive alias", "an anchor cannot contain an alias to itself")
            return None
        if isinstance(node, yaml.ScalarNode):
            try:
                return self.loader.construct_object(node)
            except yaml.MarkedYAMLError as exc:
                self.problem(node, where, exc.problem or "cannot read this value", "remove the custom tag")
                return None
        self._active.add(id(node))
        try:
            if isinstance(node, yaml.SequenceNode):
                return self._sequence(node, where)
            return self._mapping(node, where)
        finally:
            self._active.discard(id(node))

    def _sequence(self, node: yaml.SequenceNode, where: tuple[str, ...]) -> Sequence:
        result = Sequence(_location(node, self.path))
        for index, item in enumerate(node.value):
            result.append(self.convert(item, (*where, f"[{index}]")))
            result.item_locations.append(_location(item, self.path))
        return result

    def _mapping(self, node: yaml.MappingNode, where: tuple[str, ...]) -> Mapping:
        result = Mapping(_location(node, self.path))
        merges = []
        for key_node, value_node in node.value:
            if key_node.tag == _MERGE_TAG:
                merges.append(value_node)
                continue
            if not isinstance(key_node, yaml.ScalarNode):
                self.problem(key_node, where, "a key must be a plain name", "write the key as a string")
                continue
            key = str(key_node.value)  # names are names: `2024:` and `true:` stay text
            if key in result:
                first = result.key_locations[key]
                self.problem(
                    key_node,
                    where,
                    f"duplicate key '{key}' (first written at line {first.line})",
                    "keep one of them; YAML would silently keep only the last",
                )
                continue
            result.key_locations[key] = _location(key_node, self.path)
            result.value_locations[key] = _location(value_node, self.path)
            result[key] = self.convert(value_node, (*where, key))
        for merge_node in merges:  # `<<: *anchor` fills in keys not written here
            self._merge(result, merge_node, where)
        return result

    def _merge(self, result: Mapping, node: yaml.Node, where: tuple[str, ...]) -> None:
        sources = node.value if isinstance(node, yaml.SequenceNode) else [node]
        for source in sources:
            value = self.convert(source, where)
            if not isinstance(value, Mapping):
                self.problem(source, where, "'<<' must merge a mapping", "merge an anchored mapping: <<: *name")
                continue
            for key, item in value.items():
                if key not in result:
                    result[key] = item
                    result.key_locations[key] = value.key_location(key)
                    result.value_locations[key] = value.value_location(key)


_SECTIONS = {"platforms": "platform", "services": "service", "pipelines": "pipeline"}


def describe(where: tuple[str, ...]) -> str:
    """A person's name for a place in the catalog: ("services", "x", "timeout") ->
    "service 'x' field 'timeout'"."""
    if not where:
        return "catalog"
    head, rest = where[0], where[1:]
    if head in _SECTIONS:
        if not rest:
            return head
        label = f"{_SECTIONS[head]} '{rest[0]}'"
        fields = rest[1:]
    elif head == "defaults":
        label, fields = "defaults", rest
    else:
        label, fields = f"top-level key '{head}'", rest
    if not fields:
        return label
    dotted = "".join(part if part.startswith("[") else f".{part}" for part in fields).lstrip(".")
    return f"{label} field '{dotted}'"
