from pathlib import Path

import pytest

from orc.scheduler.dag import (
    critical_path_lengths,
    critical_path_lengths_of,
    dependency_graph,
    dependents_of,
    find_cycle,
    levels,
    levels_of,
    to_mermaid,
    topological_order,
    topological_order_of,
)
from orc.scheduler.loader import load_ensemble_text

SPEC = load_ensemble_text("""
name: g
agents:
  - {name: a, script: a.py}
  - {name: b, model: m, depends_on: [a], when: "${a.go}"}
  - {name: c, model: m, depends_on: [a], fan_out: true}
  - {name: d, model: m, depends_on: [b, c]}
""", Path("g.yaml"))

# top -> (left, right) -> bottom, with the mapping order not topological.
DIAMOND = {"bottom": ["left", "right"], "right": ["top"], "left": ["top"], "top": []}
# Two components that share nothing, interleaved in mapping order, plus a lone node.
APART = {"x2": ["x1"], "y1": [], "x1": [], "lone": [], "y2": ["y1"], "y3": ["y2", "y1"]}


def test_find_cycle_returns_closed_path_or_none():
    assert find_cycle({"a": ["b"], "b": ["c"], "c": ["a"]}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": ["a"]}) == ["a", "a"]
    assert find_cycle({"a": ["b"], "b": []}) is None
    chain = {str(i): [str(i + 1)] for i in range(50_000)}  # deep chains must not hit recursion limits
    assert find_cycle(chain) is None
    assert find_cycle(DIAMOND) is None and find_cycle(APART) is None


def test_orders_and_critical_path():
    assert topological_order(SPEC) == ("a", "b", "c", "d")
    assert levels(SPEC) == (("a",), ("b", "c"), ("d",))
    rank = critical_path_lengths(SPEC, {"a": 1, "b": 5, "c": 1, "d": 1})
    assert rank["a"] == 7 and rank["b"] == 6 and rank["c"] == 2


def test_an_ensemble_is_its_dependency_mapping_in_file_order():
    assert dependency_graph(SPEC) == {"a": (), "b": ("a",), "c": ("a",), "d": ("b", "c")}
    assert list(dependency_graph(SPEC)) == ["a", "b", "c", "d"]


def test_a_diamond_on_a_plain_mapping():
    assert topological_order_of(DIAMOND) == ("top", "right", "left", "bottom")  # ties keep mapping order
    assert levels_of(DIAMOND) == (("top",), ("right", "left"), ("bottom",))
    assert dependents_of(DIAMOND) == {"bottom": [], "right": ["bottom"], "left": ["bottom"], "top": ["right", "left"]}
    rank = critical_path_lengths_of(DIAMOND, {"top": 1.0, "left": 4.0, "right": 2.0, "bottom": 0.5})
    assert rank == {"bottom": 0.5, "left": 4.5, "right": 2.5, "top": 5.5}  # top's longest path goes left
    assert critical_path_lengths_of(DIAMOND, {})["top"] == 3.0  # a node without a cost costs 1


def test_disconnected_parts_are_ordered_independently():
    assert topological_order_of(APART) == ("y1", "x1", "lone", "x2", "y2", "y3")
    assert levels_of(APART) == (("y1", "x1", "lone"), ("x2", "y2"), ("y3",))
    rank = critical_path_lengths_of(APART, {"x1": 1, "x2": 2, "y1": 1, "y2": 1, "y3": 3, "lone": 7})
    assert rank == {"x1": 3, "x2": 2, "y1": 5, "y2": 4, "y3": 3, "lone": 7}  # no path crosses between parts
    assert topological_order_of({}) == () and levels_of({}) == () and critical_path_lengths_of({}, {}) == {}


def test_a_cycle_or_an_unknown_dependency_is_refused_by_name():
    with pytest.raises(ValueError, match="dependency cycle: b -> c -> b"):
        topological_order_of({"a": [], "b": ["a", "c"], "c": ["b"]})
    with pytest.raises(ValueError, match="dependency cycle: s -> s"):
        levels_of({"s": ["s"]})
    with pytest.raises(ValueError, match="dependency cycle"):
        critical_path_lengths_of({"a": ["b"], "b": ["a"]}, {})
    with pytest.raises(ValueError, match="a depends on ghost, which is not in the graph"):
        topological_order_of({"a": ["ghost"]})


def test_mermaid():
    text = to_mermaid(SPEC)
    assert text.startswith("flowchart TD\n")
    assert "a0 -.->|${a.go}| a1" in text and "a0 -->|fan-out| a2" in text and "a1 --> a3" in text
