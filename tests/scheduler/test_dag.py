from pathlib import Path

from orc.scheduler.dag import critical_path_lengths, find_cycle, levels, to_mermaid, topological_order
from orc.scheduler.loader import load_ensemble_text

SPEC = load_ensemble_text("""
name: g
agents:
  - {name: a, script: a.py}
  - {name: b, model: m, depends_on: [a], when: "${a.go}"}
  - {name: c, model: m, depends_on: [a], fan_out: true}
  - {name: d, model: m, depends_on: [b, c]}
""", Path("g.yaml"))


def test_find_cycle_returns_closed_path_or_none():
    assert find_cycle({"a": ["b"], "b": ["c"], "c": ["a"]}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": ["a"]}) == ["a", "a"]
    assert find_cycle({"a": ["b"], "b": []}) is None
    chain = {str(i): [str(i + 1)] for i in range(50_000)}  # deep chains must not hit recursion limits
    assert find_cycle(chain) is None


def test_orders_and_critical_path():
    assert topological_order(SPEC) == ("a", "b", "c", "d")
    assert levels(SPEC) == (("a",), ("b", "c"), ("d",))
    rank = critical_path_lengths(SPEC, {"a": 1, "b": 5, "c": 1, "d": 1})
    assert rank["a"] == 7 and rank["b"] == 6 and rank["c"] == 2


def test_mermaid():
    text = to_mermaid(SPEC)
    assert text.startswith("flowchart TD\n")
    assert "a0 -.->|${a.go}| a1" in text and "a0 -->|fan-out| a2" in text and "a1 --> a3" in text
