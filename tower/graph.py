"""DAG algorithms for planning and dispatch: selection, order, critical path, bounds, simulation.

A graph is a plain mapping ``service -> the services it depends on``, in catalog (file) order. File
order is the tie-breaker everywhere, so every result is deterministic. A dependency on a name that
is not a key of the mapping is ignored (treated as satisfied): that is how a run's selection works,
and it lets the validator report unknown names separately.

Everything here is pure and iterative (no recursion), and linear or ``n log n`` in the size of the
graph, so it stays fast at thousands of services. No I/O, no heavy imports: the CLI imports it.
"""

from __future__ import annotations

import heapq
import re
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass

Deps = Mapping[str, Sequence[str]]

_SELECTOR_NAME = re.compile(r"[^\s+:*]+")


# --- structure ---------------------------------------------------------------------------------


def _known_deps(deps: Deps, name: str) -> list[str]:
    """The dependencies of ``name`` that are nodes of the graph, without duplicates, in order."""
    return list(dict.fromkeys(d for d in deps[name] if d in deps))


def dependents(deps: Deps) -> dict[str, list[str]]:
    """The reverse graph: service -> the services that depend on it, in file order."""
    children: dict[str, list[str]] = {name: [] for name in deps}
    for name in deps:
        for dep in _known_deps(deps, name):
            children[dep].append(name)
    return children


def find_cycle(deps: Deps) -> list[str] | None:
    """One dependency cycle as a path that repeats its first node (``[a, b, c, a]``), else None.

    ``a -> b`` means a depends on b. The search starts from nodes in file order, so the same
    catalog always reports the same cycle.
    """
    state: dict[str, int] = {}  # absent: unvisited, 1: on the current path, 2: done
    for root in deps:
        if root in state:
            continue
        path = [root]
        state[root] = 1
        pending = [iter(_known_deps(deps, root))]
        while pending:
            dep = next(pending[-1], None)
            if dep is None:
                state[path.pop()] = 2
                pending.pop()
            elif state.get(dep) == 1:
                return path[path.index(dep) :] + [dep]
            elif dep not in state:
                state[dep] = 1
                path.append(dep)
                pending.append(iter(_known_deps(deps, dep)))
    return None


def topological_order(deps: Deps) -> list[str]:
    """Every node after its dependencies; among nodes ready at once, file order first.

    Raises ValueError naming a cycle if there is one.
    """
    position = {name: i for i, name in enumerate(deps)}
    waiting = {name: len(_known_deps(deps, name)) for name in deps}
    children = dependents(deps)
    ready = [position[name] for name, count in waiting.items() if count == 0]
    heapq.heapify(ready)
    names = list(deps)
    order: list[str] = []
    while ready:
        name = names[heapq.heappop(ready)]
        order.append(name)
        for child in children[name]:
            waiting[child] -= 1
            if waiting[child] == 0:
                heapq.heappush(ready, position[child])
    if len(order) < len(deps):
        cycle = find_cycle(deps) or []
        raise ValueError(f"dependency cycle: {' -> '.join(cycle)}")
    return order


def levels(deps: Deps) -> dict[str, int]:
    """Level of each node: 0 without dependencies, else 1 + the highest level among them."""
    level: dict[str, int] = {}
    for name in topological_order(deps):
        level[name] = 1 + max((level[d] for d in _known_deps(deps, name)), default=-1)
    return level


def level_groups(deps: Deps) -> list[list[str]]:
    """The nodes of each level, level 0 first, file order within a level."""
    groups: list[list[str]] = []
    by_level = levels(deps)
    for name in deps:
        while len(groups) <= by_level[name]:
            groups.append([])
        groups[by_level[name]].append(name)
    return groups


def restrict(deps: Deps, selected: Collection[str]) -> dict[str, tuple[str, ...]]:
    """The subgraph of ``selected``; dependencies outside it are dropped (treated as satisfied)."""
    chosen = set(selected)
    return {name: tuple(d for d in _known_deps(deps, name) if d in chosen) for name in deps if name in chosen}


def _reachable(edges: Mapping[str, Sequence[str]], starts: Iterable[str]) -> set[str]:
    seen: set[str] = set()
    stack = [s for s in starts if s in edges]
    while stack:
        for nxt in edges[stack.pop()]:
            if nxt not in seen and nxt in edges:
                seen.add(nxt)
                stack.append(nxt)
    return seen


def downstream(deps: Deps, names: Iterable[str]) -> set[str]:
    """Every node that depends, directly or not, on one of ``names`` (not ``names`` themselves)."""
    return _reachable(dependents(deps), names)


def upstream(deps: Deps, names: Iterable[str]) -> set[str]:
    """Every node that one of ``names`` depends on, directly or not (not ``names`` themselves)."""
    return _reachable({name: _known_deps(deps, name) for name in deps}, names)


# --- selection ---------------------------------------------------------------------------------


def resolve_selector(selector: str, deps: Deps, tags: Mapping[str, Sequence[str]]) -> set[str]:
    """The services one selector picks: ``name``, ``name+``, ``+name``, ``+name+``, ``tag:x``, ``*``.

    An unknown name or tag selects nothing (an empty set; the validator reports it). Bad syntax
    raises ValueError saying what is wrong.
    """
    text = selector.strip() if isinstance(selector, str) else selector
    if not isinstance(text, str) or not text:
        raise ValueError(f"empty selector {selector!r} (write a service name, 'tag:NAME' or '*')")
    if text == "*":
        return set(deps)
    if text.startswith("tag:"):
        tag = text[4:].strip()
        if not _SELECTOR_NAME.fullmatch(tag):
            raise ValueError(f"bad selector {selector!r}: 'tag:' needs a tag name, e.g. 'tag:nightly'")
        return {name for name in deps if tag in tags.get(name, ())}
    with_upstream = text.startswith("+")
    with_downstream = text.endswith("+")
    name = text[1 if with_upstream else 0 : len(text) - (1 if with_downstream else 0)]
    if not _SELECTOR_NAME.fullmatch(name):
        raise ValueError(
            f"bad selector {selector!r} (write 'name', 'name+', '+name', '+name+', 'tag:NAME' or '*';"
            " '+' only at the start or end of a service name)"
        )
    if name not in deps:
        return set()
    chosen = {name}
    if with_upstream:
        chosen |= upstream(deps, [name])
    if with_downstream:
        chosen |= downstream(deps, [name])
    return chosen


def select(selectors: Iterable[str], deps: Deps, tags: Mapping[str, Sequence[str]]) -> list[str]:
    """The union of what ``selectors`` pick, in topological order (file order among ready nodes)."""
    chosen: set[str] = set()
    for selector in selectors:
        chosen |= resolve_selector(selector, deps, tags)
    return topological_order(restrict(deps, chosen))


# --- durations ---------------------------------------------------------------------------------


def _duration(durations: Mapping[str, float], name: str) -> float:
    try:
        value = float(durations[name])
    except KeyError:
        raise ValueError(f"no expected duration for service {name!r}") from None
    if value < 0:
        raise ValueError(f"negative expected duration for service {name!r}: {value}")
    return value


def remaining_path(deps: Deps, durations: Mapping[str, float]) -> dict[str, float]:
    """For each node, the longest path from its start to the end of the DAG, its own duration
    included. This is the dispatch priority: the higher it is, the sooner a node should start."""
    children = dependents(deps)
    remaining: dict[str, float] = {}
    for name in reversed(topological_order(deps)):
        tail = max((remaining[c] for c in children[name]), default=0.0)
        remaining[name] = _duration(durations, name) + tail
    return remaining


def critical_path(deps: Deps, durations: Mapping[str, float]) -> tuple[list[str], float]:
    """The longest dependency chain by duration, first service first, and its length."""
    remaining = remaining_path(deps, durations)
    if not remaining:
        return [], 0.0
    children = dependents(deps)
    node = max(deps, key=lambda n: remaining[n])  # max() keeps the first of equals: file order
    path = [node]
    while children[node]:
        node = max(children[node], key=lambda n: remaining[n])
        path.append(node)
    return path, remaining[path[0]]


def total_work(durations: Mapping[str, float]) -> float:
    """The sum of all durations: what one worker would take."""
    return float(sum(durations.values()))


def _check_limits(limits: Mapping[str, int | None]) -> None:
    for platform, limit in limits.items():
        if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
            raise ValueError(
                f"concurrency limit of platform {platform!r} must be >= 1 or None, got {limit!r}"
            )


def work_by_platform(durations: Mapping[str, float], platform_of: Mapping[str, str]) -> dict[str, float]:
    """Total duration per platform, platforms in order of first appearance."""
    work: dict[str, float] = {}
    for name, seconds in durations.items():
        platform = platform_of[name]
        work[platform] = work.get(platform, 0.0) + float(seconds)
    return work


def lower_bound(
    deps: Deps,
    durations: Mapping[str, float],
    platform_of: Mapping[str, str],
    limits: Mapping[str, int | None],
) -> float:
    """No schedule can beat max(critical path, work_p / m_p for every limited platform p)."""
    _check_limits(limits)
    _, bound = critical_path(deps, durations)
    chosen = {name: durations[name] for name in deps}
    for platform, work in work_by_platform(chosen, platform_of).items():
        limit = limits.get(platform)
        if limit is not None:
            bound = max(bound, work / limit)
    return bound


# --- simulation --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Simulation:
    """The outcome of a simulated run: when each service starts and finishes, and the makespan."""

    makespan: float
    starts: dict[str, float]
    finishes: dict[str, float]


PriorityKey = Callable[[str, float], tuple]  # (name, ready time) -> sort key, smallest starts first


def _list_schedule(
    deps: Deps,
    durations: Mapping[str, float],
    platform_of: Mapping[str, str],
    limits: Mapping[str, int | None],
    key: PriorityKey,
    start: float = 0.0,
) -> Simulation:
    """Event simulation: a node is ready when its last dependency finishes; a free slot on its
    platform goes to the ready node with the smallest key. Finishes at the same instant are all
    processed before anyone is dispatched, so simultaneous arrivals compete fairly."""
    order = topological_order(deps)  # also rejects cycles, which would never finish
    children = dependents(deps)
    waiting = {name: len(_known_deps(deps, name)) for name in deps}
    position = {name: i for i, name in enumerate(deps)}
    free = {platform_of[name]: limits.get(platform_of[name]) for name in order}  # None: unlimited
    ready: dict[str, list] = {platform: [] for platform in free}
    running: list[tuple[float, int, str]] = []
    starts: dict[str, float] = {}
    finishes: dict[str, float] = {}

    def make_ready(name: str, now: float) -> None:
        heapq.heappush(ready[platform_of[name]], (key(name, now), position[name], name))

    for name in order:
        if waiting[name] == 0:
            make_ready(name, start)
    now = start
    while True:
        for platform, queue in ready.items():
            while queue and free[platform] != 0:
                *_, name = heapq.heappop(queue)
                if free[platform] is not None:
                    free[platform] -= 1
                starts[name] = now
                heapq.heappush(running, (now + _duration(durations, name), position[name], name))
        if not running:
            break
        now = running[0][0]
        while running and running[0][0] == now:
            _, _, name = heapq.heappop(running)
            finishes[name] = now
            if free[platform_of[name]] is not None:
                free[platform_of[name]] += 1
            for child in children[name]:
                waiting[child] -= 1
                if waiting[child] == 0:
                    make_ready(child, now)
    return Simulation(makespan=max(finishes.values(), default=start), starts=starts, finishes=finishes)


def simulate(
    deps: Deps,
    durations: Mapping[str, float],
    platform_of: Mapping[str, str],
    limits: Mapping[str, int | None],
    priority: str = "critical",
) -> Simulation:
    """Predict a start-when-ready run under per-platform limits (a platform absent from ``limits``,
    or mapped to None, is unlimited).

    priority "critical": the ready node with the longest remaining path starts first (Tower's
    dispatch rule); "fifo": the earliest ready first. Ties go to file order.
    """
    _check_limits(limits)
    if priority == "critical":
        remaining = remaining_path(deps, durations)

        def key(name: str, ready_at: float) -> tuple:
            return (-remaining[name],)

    elif priority == "fifo":

        def key(name: str, ready_at: float) -> tuple:
            return (ready_at,)

    else:
        raise ValueError(f"unknown priority {priority!r} (use 'critical' or 'fifo')")
    return _list_schedule(deps, durations, platform_of, limits, key)


def simulate_levels(
    deps: Deps,
    durations: Mapping[str, float],
    platform_of: Mapping[str, str],
    limits: Mapping[str, int | None],
) -> float:
    """Makespan of level-by-level execution: each level starts when the previous one has finished
    completely; within a level, critical-path-first list scheduling. For comparison only."""
    _check_limits(limits)
    remaining = remaining_path(deps, durations)

    def key(name: str, ready_at: float) -> tuple:
        return (-remaining[name],)

    now = 0.0
    for group in level_groups(deps):
        now = _list_schedule(dict.fromkeys(group, ()), durations, platform_of, limits, key, now).makespan
    return now


# --- rendering ---------------------------------------------------------------------------------


def render_text(
    deps: Deps, annotations: Mapping[str, str] | None = None, highlight: Collection[str] = ()
) -> str:
    """A levelled listing: each level, its services (``*`` marks highlighted ones), what they need."""
    notes = {name: f"({annotations[name]})" if annotations and annotations.get(name) else "" for name in deps}
    name_width = max((len(name) for name in deps), default=0)
    note_width = max((len(note) for note in notes.values()), default=0)
    lines: list[str] = []
    for number, group in enumerate(level_groups(deps)):
        lines.append(f"level {number}")
        for name in group:
            mark = "*" if name in highlight else " "
            needs = _known_deps(deps, name)
            after = f"<- {', '.join(needs)}" if needs else ""
            columns = [f" {mark} {name:<{name_width}}"]
            if note_width:
                columns.append(f"{notes[name]:<{note_width}}")
            lines.append("  ".join([*columns, after]).rstrip())
    return "".join(line + "\n" for line in lines)


_MERMAID_ESCAPES = {'"': "#quot;", "<": "#lt;", ">": "#gt;", "&": "#amp;", "#": "#35;"}


def _mermaid_text(text: str) -> str:
    return "".join(_MERMAID_ESCAPES.get(ch, ch) for ch in text)


def mermaid_ids(names: Iterable[str]) -> dict[str, str]:
    """Safe, unique, readable Mermaid node ids: ``s_`` + the name with anything else than letters,
    digits and ``_`` replaced (the prefix keeps keywords like ``end`` from breaking the chart)."""
    ids: dict[str, str] = {}
    used: set[str] = set()
    for name in names:
        base = "s_" + re.sub(r"[^A-Za-z0-9_]", "_", name)
        candidate, n = base, 1
        while candidate in used:
            n += 1
            candidate = f"{base}_{n}"
        used.add(candidate)
        ids[name] = candidate
    return ids


def render_mermaid(
    deps: Deps, annotations: Mapping[str, str] | None = None, highlight: Collection[str] = ()
) -> str:
    """A Mermaid flowchart, left to right, edges from a dependency to what needs it."""
    annotations = annotations or {}
    ids = mermaid_ids(deps)
    lines = ["flowchart LR"]
    for name in deps:
        label = _mermaid_text(name)
        if annotations.get(name):
            label += "<br/>" + _mermaid_text(annotations[name])
        lines.append(f'  {ids[name]}["{label}"]')
    for name in deps:
        for dep in _known_deps(deps, name):
            lines.append(f"  {ids[dep]} --> {ids[name]}")
    marked = [ids[name] for name in deps if name in highlight]
    if marked:
        lines.append("  classDef critical stroke-width:3px")
        lines.append(f"  class {','.join(marked)} critical")
    return "\n".join(lines) + "\n"


def _dot_string(text: str) -> str:
    escaped = text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{escaped}"'


def render_dot(
    deps: Deps, annotations: Mapping[str, str] | None = None, highlight: Collection[str] = ()
) -> str:
    """A Graphviz digraph, left to right, edges from a dependency to what needs it."""
    annotations = annotations or {}
    lines = ["digraph pipeline {", "  rankdir=LR;", "  node [shape=box];"]
    for name in deps:
        label = name + (f"\n{annotations[name]}" if annotations.get(name) else "")
        style = ", penwidth=3" if name in highlight else ""
        lines.append(f"  {_dot_string(name)} [label={_dot_string(label)}{style}];")
    for name in deps:
        for dep in _known_deps(deps, name):
            lines.append(f"  {_dot_string(dep)} -> {_dot_string(name)};")
    lines.append("}")
    return "\n".join(lines) + "\n"
