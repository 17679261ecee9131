"""The app settings the Python code reads, found in its syntax tree: `os.environ[...]`,
`os.environ.get(...)`, `os.getenv(...)`, `env.get(...)` on a mapping named env/environ, binding
expressions `%NAME%`, and the `connection=` of trigger decorators (an app-setting prefix).

A name is resolved through string literals, module constants (also imported ones), f-strings made
of those, a loop over a constant collection (`for name in MARKERS`, `for name, _ in D.items()`),
and a function parameter whose callers pass a constant (`location("TOWER_X_URL", ...)`).
A read that stays unresolved is reported, so no setting escapes the check by indirection.
"""

from __future__ import annotations

import ast
import re
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from tests.deploy.bicep_tree import ROOT

SOURCES = ("tower", "triggers", "activities", "orchestrators", "function_app.py")
BINDING = re.compile(r"^%([A-Za-z_][A-Za-z0-9_]*)%$")
ENV_NAMES = {"env", "environ"}


@dataclass(frozen=True)
class Read:
    name: str
    where: str  # file:line
    kind: str  # "env", "binding" or "connection"


def python_files(root: Path = ROOT) -> list[Path]:
    files = []
    for entry in SOURCES:
        path = root / entry
        files.extend([path] if path.is_file() else sorted(path.rglob("*.py")))
    return files


def _is_environ(node) -> bool:
    """`os.environ`, or a mapping called env/environ (how Tower passes the environment around)."""
    if isinstance(node, ast.Attribute):
        return node.attr == "environ"
    return isinstance(node, ast.Name) and node.id in ENV_NAMES


class _Module:
    def __init__(self, path: Path, root: Path):
        self.path = path
        self.rel = str(path.relative_to(root))
        self.tree = ast.parse(path.read_text(), filename=str(path))
        self.constants: dict[str, ast.AST] = {}
        self.imports: dict[str, str] = {}  # local name -> name in the module it comes from
        for node in self.tree.body:
            if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
                self.constants[node.targets[0].id] = node.value
            elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and node.value is not None:
                self.constants[node.target.id] = node.value
        for node in ast.walk(self.tree):
            if isinstance(node, ast.ImportFrom):
                for alias in node.names:
                    self.imports[alias.asname or alias.name] = alias.name


class Scan:
    def __init__(self, root: Path = ROOT):
        self.root = root
        self.modules = [_Module(p, root) for p in python_files(root)]
        self.reads: list[Read] = []
        self.unresolved: list[str] = []
        self._parameter_reads: list[tuple[str, str, int, str]] = []  # (function, param, position, where)
        for module in self.modules:
            self._scan(module)
        self._resolve_parameter_reads()

    # constants across modules: a name imported from another module resolves there
    def _resolve(self, node, module: _Module, seen=()) -> str | None:
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            return node.value
        if isinstance(node, ast.JoinedStr):
            parts = []
            for value in node.values:
                if isinstance(value, ast.Constant):
                    parts.append(str(value.value))
                elif isinstance(value, ast.FormattedValue):
                    part = self._resolve(value.value, module, seen)
                    if part is None:
                        return None
                    parts.append(part)
            return "".join(parts)
        if isinstance(node, ast.Name) and node.id not in seen:
            if node.id in module.constants:
                return self._resolve(module.constants[node.id], module, seen + (node.id,))
            original = module.imports.get(node.id)
            if original:
                values = {self._resolve(m.constants[original], m, seen + (node.id,))
                          for m in self.modules if original in m.constants}
                values.discard(None)
                if len(values) == 1:
                    return values.pop()
        return None

    def _scan(self, module: _Module) -> None:
        functions = {}
        for node in ast.walk(module.tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                for child in ast.walk(node):
                    functions.setdefault(id(child), node)
        for node in ast.walk(module.tree):
            key = None
            if isinstance(node, ast.Subscript) and isinstance(node.ctx, ast.Load) and _is_environ(node.value):
                key = node.slice
            elif isinstance(node, ast.Call):
                func = node.func
                if isinstance(func, ast.Attribute) and func.attr == "get" and _is_environ(func.value) and node.args:
                    key = node.args[0]
                elif isinstance(func, ast.Attribute) and func.attr == "getenv" and node.args:
                    key = node.args[0]
                for kw in node.keywords:
                    if kw.arg == "connection":
                        name = self._resolve(kw.value, module)
                        if name:
                            self.reads.append(Read(name, f"{module.rel}:{node.lineno}", "connection"))
            elif isinstance(node, ast.Constant) and isinstance(node.value, str):
                match = BINDING.match(node.value)
                if match:
                    self.reads.append(Read(match.group(1), f"{module.rel}:{node.lineno}", "binding"))
            if key is None:
                continue
            where = f"{module.rel}:{node.lineno}"
            name = self._resolve(key, module)
            if name is not None:
                self.reads.append(Read(name, where, "env"))
                continue
            function = functions.get(id(node))
            looped = self._loop_values(key, function or module.tree, module)
            if looped:
                self.reads.extend(Read(name, where, "env") for name in sorted(looped))
                continue
            params = [a.arg for a in function.args.args] if function is not None else []
            if isinstance(key, ast.Name) and key.id in params:
                self._parameter_reads.append((function.name, key.id, params.index(key.id), where))
            else:
                self.unresolved.append(f"{where}: reads a setting whose name is not a constant: "
                                       f"{ast.unparse(key)!r} (name it with a module constant, or add this read "
                                       "to DYNAMIC_READS in tests/deploy/test_app_settings.py saying why)")

    def _collection(self, node, module: _Module) -> list[str] | None:
        """The strings of a constant tuple/list/set, or the keys of a constant dict (also through
        a module constant, and `.keys()` / `.items()` of one)."""
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in {"keys", "items"}:
            node = node.func.value
        if isinstance(node, ast.Name):
            if node.id in module.constants:
                return self._collection(module.constants[node.id], module)
            original = module.imports.get(node.id)
            owner = next((m for m in self.modules if original and original in m.constants), None)
            return self._collection(owner.constants[original], owner) if owner else None
        elements = node.keys if isinstance(node, ast.Dict) else node.elts if isinstance(
            node, (ast.Tuple, ast.List, ast.Set)) else None
        if elements is None:
            return None
        values = [self._resolve(e, module) for e in elements]
        return None if any(v is None for v in values) else values

    def _loop_values(self, key, scope, module: _Module) -> set[str]:
        """The setting names a loop variable takes: `for name in NAMES`, `(... for name, _ in D.items())`."""
        if not isinstance(key, ast.Name):
            return set()
        found = set()
        for node in ast.walk(scope):
            if isinstance(node, (ast.For, ast.AsyncFor, ast.comprehension)):
                target = node.target
                first = target.elts[0] if isinstance(target, ast.Tuple) and target.elts else target
                if isinstance(first, ast.Name) and first.id == key.id:
                    values = self._collection(node.iter, module)
                    if values:
                        found.update(values)
        return found

    def _resolve_parameter_reads(self) -> None:
        calls = defaultdict(list)
        for module in self.modules:
            for node in ast.walk(module.tree):
                if isinstance(node, ast.Call):
                    func = node.func
                    name = func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else None
                    if name:
                        calls[name].append((module, node))
        for function, param, position, where in self._parameter_reads:
            resolved = False
            for module, call in calls.get(function, []):
                arg = call.args[position] if position < len(call.args) else next(
                    (kw.value for kw in call.keywords if kw.arg == param), None)
                name = self._resolve(arg, module) if arg is not None else None
                if name is not None:
                    self.reads.append(Read(name, f"{module.rel}:{call.lineno} (via {where})", "env"))
                    resolved = True
            if not resolved:
                self.unresolved.append(f"{where}: reads the setting named by parameter {param!r} of {function}(), "
                                       "and no caller passes a constant (pass the setting name as a constant)")
