"""Bicep and .bicepparam files read with tree-sitter-bicep: syntax errors with file:line, and the
declarations the deployment checks look at (parameters, outputs, modules, settings, roles).

No Bicep compiler can be installed here, so this is the offline stand-in for `az bicep build`:
it cannot type-check, but it sees every declaration and every property as the compiler would.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BICEP = ROOT / "bicep"

# tree-sitter-bicep 1.1 has no rule for a .bicepparam assignment (`param NAME = value`). Each one is
# read as `var NAME = value`, padded to the same length, so lines and columns stay those of the file.
_PARAM_ASSIGNMENT = re.compile(r"(?m)^param(\s+[A-Za-z_]\w*\s*=)")


@functools.lru_cache(maxsize=1)
def _parser():
    import tree_sitter_bicep
    from tree_sitter import Language, Parser

    return Parser(Language(tree_sitter_bicep.language()))


@dataclass
class Param:
    name: str
    line: int
    has_default: bool
    decorators: list[str]
    type: str = ""


@dataclass
class Output:
    name: str
    line: int
    decorators: list[str]
    expression: str


@dataclass
class Module:
    symbol: str
    path: str
    line: int
    params: dict[str, int] = field(default_factory=dict)  # passed param -> line


@dataclass
class Setting:
    name: str
    line: int
    value: str


class BicepFile:
    def __init__(self, path: Path, text: str | None = None):
        self.path = Path(path)
        self.text = self.path.read_text() if text is None else text
        source = self.text
        self.is_params = self.path.suffix == ".bicepparam"
        if self.is_params:
            source = _PARAM_ASSIGNMENT.sub(lambda m: "var  " + m.group(1), source)
        self.source = source.encode()
        self.tree = _parser().parse(self.source)
        self._string_variables: dict[str, str] | None = None

    # --- plumbing ---

    @property
    def rel(self) -> str:
        try:
            return str(self.path.relative_to(ROOT))
        except ValueError:
            return str(self.path)

    def where(self, node_or_line) -> str:
        line = node_or_line if isinstance(node_or_line, int) else node_or_line.start_point[0] + 1
        return f"{self.rel}:{line}"

    def src(self, node) -> str:
        return self.source[node.start_byte:node.end_byte].decode()

    def walk(self, node=None):
        node = self.tree.root_node if node is None else node
        yield node
        for child in node.children:
            yield from self.walk(child)

    def top(self, kind: str):
        return [n for n in self.tree.root_node.named_children if n.type == kind]

    def decorators_of(self, node) -> list[str]:
        prev = node.prev_named_sibling
        if prev is None or prev.type != "decorators":
            return []
        return [self.src(d) for d in prev.named_children if d.type == "decorator"]

    def string_value(self, node) -> str | None:
        """The text of a string literal, `${var}` interpolations resolved from this file's string
        variables (None when something cannot be resolved)."""
        if node.type != "string":
            return None
        out = []
        for child in node.named_children:
            if child.type == "string_content":
                out.append(self.src(child))
            elif child.type == "interpolation":
                inner = child.named_children[0] if child.named_children else None
                value = self.string_variables().get(self.src(inner)) if inner is not None else None
                if value is None:
                    return None
                out.append(value)
            elif child.type == "escape_sequence":
                out.append(self.src(child)[1:])
        return "".join(out)

    def string_variables(self) -> dict[str, str]:
        if self._string_variables is not None:
            return self._string_variables
        found = self._string_variables = {}
        for var in self.top("variable_declaration"):
            name, value = var.named_children[0], var.named_children[-1]
            if value.type == "string" and not any(c.type == "interpolation" for c in value.named_children):
                found[self.src(name)] = "".join(self.src(c) for c in value.named_children)
        return found

    def key_of(self, prop) -> str | None:
        key = prop.named_children[0]
        if key.type == "identifier":
            return self.src(key)
        return self.string_value(key)

    # --- what the checks ask ---

    def syntax_errors(self) -> list[str]:
        problems = []
        for node in self.walk():
            if node.type == "ERROR" or node.is_missing:
                what = f"missing {node.type}" if node.is_missing else f"cannot parse {self.src(node)[:40]!r}"
                problems.append(f"{self.where(node)}:{node.start_point[1] + 1}: syntax error: {what} "
                                "(fix the Bicep syntax here; `az bicep build` shows the same place)")
                if not node.is_missing:
                    continue
        return problems

    def params(self) -> dict[str, Param]:
        found = {}
        for decl in self.top("parameter_declaration"):
            kids = decl.named_children
            type_node = next((k for k in kids if k.type == "type"), None)
            after_type = kids[kids.index(type_node) + 1:] if type_node is not None else []
            found[self.src(kids[0])] = Param(
                self.src(kids[0]), decl.start_point[0] + 1, bool(after_type), self.decorators_of(decl),
                self.src(type_node) if type_node is not None else "")
        return found

    def assigned_params(self) -> dict[str, int]:
        """A .bicepparam file's `param NAME = value` assignments: name -> line."""
        return {self.src(v.named_children[0]): v.start_point[0] + 1 for v in self.top("variable_declaration")} \
            if self.is_params else {}

    def assigned_value(self, name: str):
        for v in self.top("variable_declaration"):
            if self.src(v.named_children[0]) == name:
                return v.named_children[-1]
        return None

    def using(self) -> str | None:
        for u in self.top("using_statement"):
            return self.string_value(u.named_children[0])
        return None

    def outputs(self) -> list[Output]:
        found = []
        for decl in self.top("output_declaration"):
            kids = decl.named_children
            found.append(Output(self.src(kids[0]), decl.start_point[0] + 1, self.decorators_of(decl),
                                self.src(kids[-1])))
        return found

    def modules(self) -> list[Module]:
        found = []
        for decl in self.top("module_declaration"):
            kids = decl.named_children
            module = Module(self.src(kids[0]), self.string_value(kids[1]) or "", decl.start_point[0] + 1)
            body = next((n for n in self.walk(decl) if n.type == "object"), None)
            for prop in body.named_children if body is not None else []:
                if prop.type == "object_property" and self.key_of(prop) == "params":
                    for passed in prop.named_children[-1].named_children:
                        if passed.type == "object_property":
                            module.params[self.key_of(passed)] = passed.start_point[0] + 1
            found.append(module)
        return found

    def settings(self, variable_suffix: str = "Settings") -> list[Setting]:
        """App settings: the properties of every object held by a variable named `*Settings`."""
        found = []
        for var in self.top("variable_declaration"):
            if not self.src(var.named_children[0]).endswith(variable_suffix):
                continue
            for node in self.walk(var):
                if node.type == "object" and node.parent is not None and node.parent.type != "object_property":
                    for prop in node.named_children:
                        if prop.type == "object_property":
                            name = self.key_of(prop)
                            found.append(Setting(name if name is not None else self.src(prop.named_children[0]),
                                                 prop.start_point[0] + 1, self.src(prop.named_children[-1])))
        return found

    def role_assignments(self) -> list:
        return [n for n in self.top("resource_declaration")
                if (self.string_value(n.named_children[1]) or "").startswith("Microsoft.Authorization/roleAssignments@")]


def bicep_files() -> list[Path]:
    return sorted(BICEP.rglob("*.bicep"))


def param_files() -> list[Path]:
    return sorted(BICEP.rglob("*.bicepparam"))


@functools.cache
def load(path: Path) -> BicepFile:
    return BicepFile(path)
