"""The run state machine, driven by hand: no sockets, no sleeps, time passed in."""

from pathlib import Path

import pytest

from orc.scheduler.loader import load_ensemble_text
from orc.scheduler.run import (
    AgentBound,
    AgentFailed,
    AgentSkipped,
    AgentStarted,
    AgentStatus,
    AgentSucceeded,
    FailAgent,
    SkipAgent,
    StartAgent,
    apply,
    deliverable,
    initial_state,
    is_finished,
    plan,
    resumable,
    run_status,
)


def spec_of(text: str):
    return load_ensemble_text(text, Path("t.yaml"))


DIAMOND = """
name: diamond
agents:
  - {name: a, model: m}
  - {name: slow, model: m, depends_on: [a]}
  - {name: fast, model: m, depends_on: [a]}
  - {name: after-fast, model: m, depends_on: [fast]}
  - {name: end, model: m, depends_on: [slow, after-fast]}
"""


def started(steps):
    return sorted(s.input.agent for s in steps if isinstance(s, StartAgent))


def run_to(state, *events):
    for event in events:
        state = apply(state, event)
    return state


def test_dependency_driven_not_level_by_level():
    state = initial_state("r", spec_of(DIAMOND), "in", now=0.0)
    assert started(plan(state)) == ["a"]
    state = run_to(state, AgentStarted("a", 1.0), AgentSucceeded("a", "A", 2.0))
    assert started(plan(state)) == ["fast", "slow"]
    state = run_to(state, AgentStarted("slow", 2.0), AgentStarted("fast", 2.0), AgentSucceeded("fast", "F", 3.0))
    # 'after-fast' starts while 'slow' (same level as 'fast') is still running.
    assert started(plan(state)) == ["after-fast"]


def test_snapshot_is_immutable_and_holds_only_own_dependencies():
    state = initial_state("r", spec_of(DIAMOND), "in", now=0.0)
    state = run_to(state, AgentStarted("a", 1), AgentSucceeded("a", {"k": [1, 2]}, 2))
    step = next(s for s in plan(state) if s.input.agent == "slow")
    (name, result), = step.input.dependencies
    assert name == "a" and result.output["k"] == (1, 2)
    with pytest.raises(TypeError):
        result.output["k"] = "changed"


def test_failure_is_isolated_and_dependents_get_a_note():
    state = initial_state("r", spec_of(DIAMOND), "in", now=0.0)
    state = run_to(state, AgentStarted("a", 1), AgentFailed("a", "boom", 2))
    assert state.agents["a"].status is AgentStatus.FAILED
    steps = plan(state)
    assert started(steps) == ["fast", "slow"]
    dep = dict(steps[0].input.dependencies)["a"]
    assert dep.status == "failed" and dep.error == "boom"


def test_retries_explicit_and_default():
    spec = spec_of("name: r\nagents:\n  - {name: a, model: m, retries: 2}\n  - {name: b, model: m}\n")
    state = initial_state("r", spec, "x", now=0)
    for attempt in (1, 2):
        state = run_to(state, AgentStarted("a", attempt), AgentFailed("a", "nope", attempt))
        assert state.agents["a"].status is AgentStatus.PENDING
    state = run_to(state, AgentStarted("a", 3), AgentFailed("a", "nope", 3))
    assert state.agents["a"].status is AgentStatus.FAILED and state.agents["a"].attempts == 3
    # Default policy: a plain failure is final, a failure of the machinery is retried twice.
    state = run_to(state, AgentStarted("b", 1), AgentFailed("b", "crash", 1, retryable=True))
    assert state.agents["b"].status is AgentStatus.PENDING
    state = run_to(state, AgentStarted("b", 2), AgentFailed("b", "exit 1", 2))
    assert state.agents["b"].status is AgentStatus.FAILED


BRANCH = """
name: branch
agents:
  - {name: c, script: c.py}
  - {name: yes-branch, model: m, depends_on: [c], when: "${c.is_code}"}
  - {name: no-branch, model: m, depends_on: [c], when: "${c.kind} == prose"}
  - {name: below-yes, model: m, depends_on: [yes-branch]}
  - {name: join, model: m, depends_on: [yes-branch, no-branch]}
"""


def test_when_branches_skip_and_propagate():
    state = initial_state("r", spec_of(BRANCH), "x", now=0)
    state = run_to(state, AgentStarted("c", 0), AgentSucceeded("c", '{"is_code": false, "kind": "Prose"}', 1))
    steps = {getattr(s, "agent", None) or s.input.agent: s for s in plan(state)}
    assert isinstance(steps["yes-branch"], SkipAgent) and "is false" in steps["yes-branch"].reason
    assert isinstance(steps["no-branch"], StartAgent)
    state = run_to(state, AgentSkipped("yes-branch", "false", 2))
    skip = next(s for s in plan(state) if getattr(s, "agent", None) == "below-yes")
    assert isinstance(skip, SkipAgent) and "all of its dependencies were skipped" in skip.reason
    state = run_to(state, AgentSkipped("below-yes", "x", 2), AgentStarted("no-branch", 2),
                   AgentSucceeded("no-branch", "answer", 3))
    assert started(plan(state)) == ["join"]
    state = run_to(state, AgentStarted("join", 3), AgentSucceeded("join", "done", 4))
    assert is_finished(state) and run_status(state) == "completed"
    assert deliverable(state) == "done"  # below-yes was skipped: only join delivers


FAN = """
name: fan
agents:
  - {name: split, script: s.py}
  - {name: each, model: m, depends_on: [split], fan_out: true, input_key: items}
  - {name: whole, model: m, depends_on: [split], fan_out: true}
"""


def test_fan_out_expands_items_from_input_key():
    state = initial_state("r", spec_of(FAN), "x", now=0)
    state = run_to(state, AgentStarted("split", 0), AgentSucceeded("split", {"items": ["p", "q", "r"]}, 1))
    steps = {s.input.agent: s for s in plan(state) if isinstance(s, StartAgent)}
    assert steps["each"].input.items == ("p", "q", "r") and steps["each"].input.scope == "input"
    failing = [s for s in plan(state) if isinstance(s, FailAgent)]
    assert failing and failing[0].agent == "whole" and "needs a list" in failing[0].error


def test_missing_input_key_fails_the_agent_clearly():
    spec = spec_of("name: k\nagents:\n  - {name: a, script: a.py}\n"
                   "  - {name: b, model: m, depends_on: [a], input_key: topics}\n")
    state = run_to(initial_state("r", spec, "x", now=0), AgentStarted("a", 0), AgentSucceeded("a", {"x": 1}, 1))
    (step,) = plan(state)
    assert isinstance(step, FailAgent) and "input_key 'topics' not found in the output of a" in step.error


def test_status_and_resume():
    state = initial_state("r", spec_of(DIAMOND), "in", now=0.0)
    state = run_to(state, AgentStarted("a", 1), AgentSucceeded("a", "A", 2), AgentStarted("slow", 2),
                   AgentStarted("fast", 2), AgentFailed("fast", "x", 3))
    again = resumable(state)
    assert again.agents["a"].status is AgentStatus.COMPLETED
    assert again.agents["slow"].status is AgentStatus.PENDING and again.agents["fast"].attempts == 0
    assert started(plan(again)) == ["fast", "slow"]
    finished = run_to(state, AgentSucceeded("slow", "S", 4), AgentSkipped("after-fast", "x", 4),
                      AgentStarted("end", 4), AgentFailed("end", "y", 5))
    assert is_finished(finished) and run_status(finished) == "failed"


def test_binding_records_the_node_and_each_distinct_node_once():
    state = initial_state("r", spec_of(DIAMOND), "in", now=0.0)
    state = run_to(state, AgentStarted("a", 1.0, None, "m"))  # mesh mode: the node is known once bound
    assert state.agents["a"].node_id is None and state.agents["a"].nodes == ()
    state = run_to(state, AgentBound("a", "pi", 1.1))
    record = state.agents["a"]
    assert record.node_id == "pi" and record.nodes == ("pi",) and record.failovers == 0
    assert record.status is AgentStatus.RUNNING and record.attempts == 1 and record.model == "m"
    # A fan-out's instances bind one by one: the same node again is not listed twice.
    state = run_to(state, AgentBound("a", "pi", 1.2), AgentBound("a", "mac", 1.3), AgentBound("a", "pi", 1.4))
    record = state.agents["a"]
    assert record.nodes == ("pi", "mac") and record.node_id == "pi" and record.failovers == 0


def test_failovers_count_as_tries():
    state = initial_state("r", spec_of(DIAMOND), "in", now=0.0)
    state = run_to(state, AgentStarted("a", 1.0), AgentBound("a", "pi", 1.1),
                   AgentBound("a", "mac", 2.0, failover=True), AgentBound("a", "nuc", 3.0, failover=True))
    record = state.agents["a"]
    assert record.failovers == 2 and record.attempts == 1 and record.tries == 3
    assert record.node_id == "nuc" and record.nodes == ("pi", "mac", "nuc")
    # A failover back to a node used before counts, but does not repeat the node.
    state = run_to(state, AgentBound("a", "pi", 4.0, failover=True))
    assert state.agents["a"].failovers == 3 and state.agents["a"].nodes == ("pi", "mac", "nuc")
    # A retry of the whole agent is an attempt; its new binding adds to what came before.
    state = run_to(state, AgentFailed("a", "lost", 5.0, retryable=True), AgentStarted("a", 6.0),
                   AgentBound("a", "box", 6.1), AgentSucceeded("a", "A", 7.0))
    record = state.agents["a"]
    assert record.attempts == 2 and record.failovers == 3 and record.tries == 5
    assert record.nodes == ("pi", "mac", "nuc", "box") and record.node_id == "box"
    assert record.status is AgentStatus.COMPLETED


def test_resume_keeps_completed_records_with_their_nodes_and_resets_the_rest():
    state = initial_state("r", spec_of(DIAMOND), "in", now=0.0)
    state = run_to(state, AgentStarted("a", 1), AgentBound("a", "pi", 1), AgentBound("a", "mac", 2, failover=True),
                   AgentSucceeded("a", "A", 3), AgentStarted("slow", 3), AgentBound("slow", "nuc", 3),
                   AgentStarted("fast", 3), AgentBound("fast", "pi", 3), AgentBound("fast", "mac", 4, failover=True))
    kept = state.agents["a"]
    again = resumable(state)
    assert again.agents["a"] == kept
    assert again.agents["a"].nodes == ("pi", "mac") and again.agents["a"].failovers == 1 and again.agents["a"].tries == 2
    for name in ("slow", "fast", "after-fast", "end"):
        record = again.agents[name]
        assert record.status is AgentStatus.PENDING and record.node_id is None
        assert record.nodes == () and record.failovers == 0 and record.tries == 0
    assert started(plan(again)) == ["fast", "slow"]
