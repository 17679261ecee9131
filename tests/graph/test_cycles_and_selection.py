"""Cycle detection and selectors: what the catalog validator relies on."""

import pytest

from tower.graph import find_cycle, resolve_selector, select

# extract -> clean -> {report, model} -> publish ; audit stands alone
DEPS = {
    "extract": [],
    "clean": ["extract"],
    "report": ["clean"],
    "model": ["clean"],
    "publish": ["report", "model"],
    "audit": [],
}
TAGS = {"extract": ["ingest", "nightly"], "clean": ["nightly"], "audit": ["ops"]}


# --- find_cycle ----------------------------------------------------------------------------------


def test_acyclic_graph_has_no_cycle():
    assert find_cycle(DEPS) is None
    assert find_cycle({}) is None


def test_self_loop():
    assert find_cycle({"a": ["a"]}) == ["a", "a"]


def test_three_cycle_follows_dependencies_from_the_first_node():
    assert find_cycle({"a": ["b"], "b": ["c"], "c": ["a"]}) == ["a", "b", "c", "a"]


def test_cycle_reachable_after_an_acyclic_part():
    deps = {"start": ["mid"], "mid": ["x"], "x": ["y"], "y": ["z"], "z": ["x"], "other": []}
    assert find_cycle(deps) == ["x", "y", "z", "x"]


def test_cycle_found_from_a_later_root_after_finished_subgraphs():
    deps = {"a": ["b"], "b": [], "c": ["d"], "d": ["b", "c"]}
    assert find_cycle(deps) == ["c", "d", "c"]


def test_unknown_dependencies_are_ignored():
    assert find_cycle({"a": ["ghost"], "b": ["a", "phantom"]}) is None


def test_is_deterministic_in_file_order():
    deps = {"p": ["q"], "q": ["p"], "r": ["s"], "s": ["r"]}
    assert find_cycle(deps) == ["p", "q", "p"]
    assert find_cycle(dict(reversed(list(deps.items())))) == ["s", "r", "s"]


def test_5000_node_chain_needs_no_recursion():
    n = 5000
    chain = {f"s{i}": [f"s{i + 1}"] if i + 1 < n else [] for i in range(n)}
    assert find_cycle(chain) is None
    chain[f"s{n - 1}"] = ["s0"]
    cycle = find_cycle(chain)
    assert len(cycle) == n + 1
    assert cycle[0] == cycle[-1] == "s0"


# --- resolve_selector ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("selector", "expected"),
    [
        ("clean", {"clean"}),
        ("clean+", {"clean", "report", "model", "publish"}),
        ("+report", {"report", "clean", "extract"}),
        ("+report+", {"report", "clean", "extract", "publish"}),
        ("tag:nightly", {"extract", "clean"}),
        ("*", set(DEPS)),
        ("  audit ", {"audit"}),
        ("audit+", {"audit"}),
    ],
)
def test_selector_forms(selector, expected):
    assert resolve_selector(selector, DEPS, TAGS) == expected


@pytest.mark.parametrize("selector", ["nowhere", "nowhere+", "+nowhere", "tag:missing"])
def test_selector_matching_nothing_is_empty(selector):
    assert resolve_selector(selector, DEPS, TAGS) == set()


@pytest.mark.parametrize(
    ("selector", "message"),
    [
        ("", "empty selector"),
        ("   ", "empty selector"),
        ("tag:", "'tag:' needs a tag name"),
        ("tag: ", "'tag:' needs a tag name"),
        ("+", "bad selector '+'"),
        ("++", "bad selector"),
        ("++clean", "'+' only at the start or end"),
        ("clean++", "'+' only at the start or end"),
        ("cl+ean", "'+' only at the start or end"),
        ("+tag:x", "bad selector"),
        ("a b", "bad selector"),
        ("**", "bad selector"),
    ],
)
def test_bad_selector_syntax_is_a_clear_value_error(selector, message):
    with pytest.raises(ValueError, match=message.replace("+", r"\+").replace("*", r"\*")):
        resolve_selector(selector, DEPS, TAGS)


def test_non_string_selector_is_a_value_error():
    with pytest.raises(ValueError, match="empty selector"):
        resolve_selector(None, DEPS, TAGS)


# --- select --------------------------------------------------------------------------------------


def test_select_is_a_union_in_topological_order():
    assert select(["publish", "tag:nightly"], DEPS, TAGS) == ["extract", "clean", "publish"]


def test_select_uses_file_order_among_ready_nodes():
    deps = {"z": ["b"], "a": [], "b": [], "y": ["a"]}
    assert select(["*"], deps, {}) == ["a", "b", "z", "y"]


def test_select_everything_and_nothing():
    assert select(["*"], DEPS, TAGS) == ["extract", "clean", "report", "model", "publish", "audit"]
    assert select(["nowhere"], DEPS, TAGS) == []
    assert select([], DEPS, TAGS) == []


def test_select_rejects_bad_syntax():
    with pytest.raises(ValueError):
        select(["clean", "tag:"], DEPS, TAGS)
