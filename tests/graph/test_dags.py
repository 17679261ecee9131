"""The benchmarks' seeded DAG generators: reproducible, acyclic, and the shapes they promise."""

import pytest

from benchmarks.dags import deep_dag, names, random_dag, wide_dag, zero_duration_dag
from tower.graph import critical_path, levels

GENERATORS = [random_dag, wide_dag, deep_dag, zero_duration_dag]


@pytest.mark.parametrize("generate", GENERATORS)
def test_same_seed_same_graph_other_seed_other_graph(generate):
    assert generate(200, 3) == generate(200, 3)
    assert generate(200, 3) != generate(200, 4)


@pytest.mark.parametrize("generate", GENERATORS)
@pytest.mark.parametrize("n", [1, 2, 3, 50])
def test_edges_only_go_from_lower_to_higher_index(generate, n):
    deps, durations = generate(n, 11)
    assert list(deps) == list(durations) == names(n)
    index = {name: i for i, name in enumerate(deps)}
    for name, needs in deps.items():
        assert needs == sorted(needs)
        assert all(index[d] < index[name] for d in needs)


def test_names_are_zero_padded_to_sort_in_order():
    assert names(3) == ["s000", "s001", "s002"]
    assert names(1001)[-1] == "s1000"
    assert names(5000)[:2] == ["s0000", "s0001"]


def test_random_dag_durations_and_density():
    deps, durations = random_dag(300, 5, edge_probability=0.02, min_duration=1, max_duration=2)
    assert all(1 <= d <= 2 for d in durations.values())
    edges = sum(map(len, deps.values()))
    expected = 0.02 * 300 * 299 / 2
    assert 0.8 * expected < edges < 1.2 * expected


def test_wide_is_shallow_and_deep_is_a_long_chain():
    wide, _ = wide_dag(400, 2)
    assert max(levels(wide).values()) == 2
    assert sum(1 for needs in wide.values() if not needs) == 20
    deep, seconds = deep_dag(400, 2)
    assert max(levels(deep).values()) == 399
    assert len(critical_path(deep, seconds)[0]) == 400


def test_zero_duration_dag_has_the_requested_mean_in_degree():
    deps, durations = zero_duration_dag(5000, 9, mean_in_degree=2)
    assert set(durations.values()) == {0.0}
    assert 1.9 < sum(map(len, deps.values())) / 5000 < 2.1


@pytest.mark.parametrize("generate", GENERATORS)
def test_at_least_one_node(generate):
    with pytest.raises(ValueError, match="at least one node"):
        generate(0, 1)
