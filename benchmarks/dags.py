"""Seeded random DAGs for the benchmarks: the same seed gives the same graph on every machine.

Every generator returns ``(deps, durations)``: ``deps`` maps ``s000``, ``s001``, ... to the
names they depend on, and edges only run from a lower to a higher index, so the graph is acyclic
and its key order is already a topological order. Durations are seconds.
"""

from __future__ import annotations

import math
import random

Deps = dict[str, list[str]]
Durations = dict[str, float]


def names(n: int) -> list[str]:
    """``s000`` ... with at least three digits, zero-padded so they sort in index order."""
    width = max(3, len(str(max(n - 1, 0))))
    return [f"s{i:0{width}d}" for i in range(n)]


def _check(n: int) -> None:
    if n < 1:
        raise ValueError(f"a DAG needs at least one node, got n={n}")


def _durations(rng: random.Random, nodes: list[str], low: float, high: float) -> Durations:
    return {name: round(rng.uniform(low, high), 3) for name in nodes}


def random_dag(
    n: int,
    seed: int,
    edge_probability: float = 0.08,
    min_duration: float = 0.05,
    max_duration: float = 0.5,
) -> tuple[Deps, Durations]:
    """Each earlier node is a dependency of a later one with ``edge_probability`` (Erdős–Rényi
    on the upper triangle). Durations uniform in [min, max], drawn first, rounded to ms."""
    _check(n)
    rng = random.Random(seed)
    nodes = names(n)
    durations = _durations(rng, nodes, min_duration, max_duration)
    deps: Deps = {}
    for j, name in enumerate(nodes):
        deps[name] = [nodes[i] for i in range(j) if rng.random() < edge_probability]
    return deps, durations


def wide_dag(n: int, seed: int) -> tuple[Deps, Durations]:
    """Three tiers, like ingest -> transform -> publish: ~5% sources, a wide middle where each node
    reads one or two sources, and ~5% sinks that each join three middle nodes."""
    _check(n)
    rng = random.Random(seed)
    nodes = names(n)
    durations = _durations(rng, nodes, 0.05, 0.5)
    tier = max(1, n // 20)
    sources = nodes[:tier]
    sinks = nodes[n - tier :] if n > 2 * tier else []
    middle = nodes[tier : n - len(sinks)]
    deps: Deps = {name: [] for name in sources}
    for name in middle:
        deps[name] = sorted(rng.sample(sources, min(len(sources), rng.randint(1, 2))))
    for name in sinks:
        deps[name] = sorted(rng.sample(middle, min(len(middle), 3)))
    return deps, durations


def deep_dag(n: int, seed: int) -> tuple[Deps, Durations]:
    """A long chain with short cross-links: node i needs i-1, and with probability 0.3 also one of
    the four nodes before that. The critical path runs through almost every node."""
    _check(n)
    rng = random.Random(seed)
    nodes = names(n)
    durations = _durations(rng, nodes, 0.05, 0.5)
    deps: Deps = {nodes[0]: []}
    for i in range(1, n):
        needs = {i - 1}
        if i >= 2 and rng.random() < 0.3:
            needs.add(rng.randint(max(0, i - 5), i - 2))
        deps[nodes[i]] = [nodes[k] for k in sorted(needs)]
    return deps, durations


def _poisson(rng: random.Random, mean: float) -> int:
    """Knuth's method: fine for the small means used here."""
    limit, count, product = math.exp(-mean), 0, rng.random()
    while product > limit:
        count += 1
        product *= rng.random()
    return count


def zero_duration_dag(n: int, seed: int, mean_in_degree: float = 2) -> tuple[Deps, Durations]:
    """For scaling runs, where only orchestration overhead should count: every duration is 0 and
    node j draws a Poisson(mean_in_degree) number of dependencies among the nodes before it.
    Linear in the number of edges, so 5,000 nodes take milliseconds to build."""
    _check(n)
    rng = random.Random(seed)
    nodes = names(n)
    deps: Deps = {}
    for j, name in enumerate(nodes):
        count = min(j, _poisson(rng, mean_in_degree))
        deps[name] = [nodes[i] for i in sorted(rng.sample(range(j), count))]
    return deps, dict.fromkeys(nodes, 0.0)
