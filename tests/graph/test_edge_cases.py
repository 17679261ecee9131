"""Edge cases of the DAG algorithms that the main graph tests do not reach: empty graphs, cycles met
before the validator has rejected them, names that need escaping, ordering inside a level. Each was
written against a mutant that survived the other tests (see tests/MUTATION.md)."""

import pytest

from tower.graph import (
    downstream,
    mermaid_ids,
    render_dot,
    resolve_selector,
    simulate,
    simulate_levels,
    upstream,
)

CYCLE = {"a": ["c"], "b": ["a"], "c": ["b"], "d": ["a"]}  # a -> c -> b -> a, and d after a


def test_selection_terminates_on_a_cycle():
    """The validator resolves pipeline selectors on a graph whose cycles it is still reporting."""
    assert downstream(CYCLE, ["a"]) == {"a", "b", "c", "d"}
    assert upstream(CYCLE, ["d"]) == {"a", "b", "c"}
    assert resolve_selector("+b", CYCLE, {}) == {"a", "b", "c"}


def test_an_empty_graph_simulates_to_nothing():
    result = simulate({}, {}, {}, {})
    assert (result.makespan, result.starts, result.finishes) == (0.0, {}, {})
    assert simulate_levels({}, {}, {}, {}) == 0.0


def test_levels_start_the_longest_service_of_a_level_first():
    deps = {"long": [], "short1": [], "short2": []}
    seconds = {"long": 3.0, "short1": 1.0, "short2": 1.0}
    platform_of = dict.fromkeys(deps, "p")
    # long and short1 first, short2 in the slot short1 frees: 3 s (shortest first would take 4 s)
    assert simulate_levels(deps, seconds, platform_of, {"p": 2}) == 3.0


def test_mermaid_ids_keep_upper_case():
    assert mermaid_ids(["LoadOrders", "load-orders"]) == {"LoadOrders": "s_LoadOrders", "load-orders": "s_load_orders"}


def test_dot_escapes_backslashes_before_quotes():
    dot = render_dot({'c:\\tmp\\"x"': []})
    assert '  "c:\\\\tmp\\\\\\"x\\"" [label="c:\\\\tmp\\\\\\"x\\""];' in dot.splitlines()


def test_a_misplaced_plus_says_where_plus_may_go():
    with pytest.raises(ValueError) as caught:
        resolve_selector("cl+ean", {"clean": []}, {})
    assert str(caught.value) == (
        "bad selector 'cl+ean' (write 'name', 'name+', '+name', '+name+', 'tag:NAME' or '*';"
        " '+' only at the start or end of a service name)")
