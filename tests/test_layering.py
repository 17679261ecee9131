"""The shape of the code, checked: the library `tower/` registers no functions and only its local
host touches the Functions SDKs, and no two of its modules import each other at load time (a cycle
works until someone reorders imports, then fails with a half-initialised module)."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FUNCTIONS_SDKS = ("azure.functions", "azure.durable_functions")


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def library_modules() -> dict[str, Path]:
    return {module_name(path): path for path in sorted((ROOT / "tower").rglob("*.py"))}


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def imported(path: Path, module: str, *, at_load: bool) -> set[str]:
    """The modules `path` imports: every import, or only those that run when it is loaded (top
    level, outside `if TYPE_CHECKING:`; a function's own import runs when it is called)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    nodes: list[ast.AST] = []
    pending: list[ast.AST] = list(tree.body) if at_load else list(ast.walk(tree))
    while pending:
        node = pending.pop()
        if at_load and isinstance(node, ast.If) and not _is_type_checking(node):
            pending.extend(node.body + node.orelse)
        elif at_load and isinstance(node, ast.Try):
            pending.extend(node.body + node.orelse + node.finalbody + [n for h in node.handlers for n in h.body])
        else:
            nodes.append(node)
    names: set[str] = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([base] if base else [])])
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)  # `from pkg import module`
    return names


def load_time_graph() -> dict[str, set[str]]:
    modules = library_modules()
    return {name: {dep for dep in imported(path, name, at_load=True) if dep in modules and dep != name}
            for name, path in modules.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every strongly connected group of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for dep in sorted(graph[node]):
            if dep not in index:
                visit(dep)
                low[node] = min(low[node], low[dep])
            elif dep in on_stack:
                low[node] = min(low[node], index[dep])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_no_two_library_modules_import_each_other_at_load_time():
    graph = load_time_graph()
    # a package importing its own submodules (re-exports) is not a cycle with them
    for name in graph:
        graph[name] = {dep for dep in graph[name] if not (dep.startswith(name + ".") and (ROOT / Path(
            *name.split("."))).is_dir())}
    assert cycles(graph) == []


def test_the_cycle_finder_finds_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_only_the_local_host_touches_the_functions_sdks():
    offenders = {name for name, path in library_modules().items()
                 if not name.startswith("tower.local")
                 and any(dep == sdk or dep.startswith(sdk + ".") for dep in imported(path, name, at_load=False)
                         for sdk in FUNCTIONS_SDKS)}
    assert offenders == set()


def test_the_library_registers_no_functions():
    registering = {name for name, path in library_modules().items() if not name.startswith("tower.local")
                   and any(word in path.read_text(encoding="utf-8") for word in ("Blueprint(", "FunctionApp(", "DFApp("))}
    assert registering == set()
