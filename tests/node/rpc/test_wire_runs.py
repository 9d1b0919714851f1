"""Run events, plans, records and agent outputs on the control wire: they come back unchanged, and
hostile ones (forged by whatever holds the socket, or corrupted) only ever raise WireError."""

from __future__ import annotations

from types import MappingProxyType

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from wire_samples import BOUND_RECORD, PLANNED, RECORD, SHA

from orc.node.protocol.events import AgentEnded, AgentPlacedOn, BudgetReport, RunFinished, RunResult
from orc.node.rpc import wire
from orc.node.protocol.errors import WireError
from orc.node.rpc.wire.checks import MAX_AGENTS, MAX_PEERS_LISTED, MAX_REASON, MAX_VALUE_DEPTH
from orc.node.rpc.wire.values import value_from_wire, value_to_wire
from orc.proto.v1 import control_pb2
from orc.scheduler.placement import Estimate, Exclusion
from orc.scheduler.run import AgentRecord, AgentStatus, RunId, Usage
from orc.scheduler.values import freeze



def _round_trip(event):
    message = wire.to_wire(event)
    return wire.from_wire(wire.parse(control_pb2.RunEvent, message.SerializeToString()))


def test_frozen_outputs_come_back_frozen() -> None:
    event = _round_trip(AgentEnded("a", RECORD))
    assert isinstance(event.record.output, MappingProxyType)
    assert isinstance(event.record.output["answer"], tuple)
    assert event.record.output["answer"][0] == 1 and isinstance(event.record.output["answer"][0], int)


def test_a_plan_comes_back_with_its_estimates_and_exclusions() -> None:
    again = _round_trip(PLANNED)
    assert again == PLANNED
    best, second = again.agents[0].candidates
    assert isinstance(best, Estimate) and best.warm and not best.preferred and best.runtime == "llama_cpp"
    assert best.sha256 == SHA and second.sha256 == ""  # the digest scored travels too
    assert second.finish_s == PLANNED.agents[0].candidates[1].finish_s and second.network_s == 0.004
    assert [r.reason for r in again.agents[0].rejected] == [Exclusion.NO_MODEL, Exclusion.LOCAL_ONLY]
    assert [r.reason for r in again.agents[2].rejected] == list(Exclusion)  # every reason survives
    assert again.agents[1].note == PLANNED.agents[1].note and again.agents[1].candidates == ()


def test_records_carry_their_nodes_and_failovers() -> None:
    again = _round_trip(AgentEnded("summarize", BOUND_RECORD)).record
    assert again.nodes == ("b" * 20, "c" * 20) and again.failovers == 1 and again.tries == 2
    finished = RunFinished(RunResult(RunId("r"), "e", "completed", "ok", (("summarize", BOUND_RECORD),), 1.0, 4.0))
    assert _round_trip(finished).result.results[0][1] == BOUND_RECORD


def test_a_run_stopped_by_its_budget_comes_back_with_its_usage_budgets_and_reason() -> None:
    spent = "budget: the run's max_tokens 40 is spent (52 used)"
    finished = RunFinished(RunResult(
        RunId("r"), "e", "completed_with_errors", None, (("a", AgentRecord(AgentStatus.FAILED, error=spent)),), 1.0, 2.0,
        usage=Usage(30, 22), budget=BudgetReport(40, None, 52, 1.25, spent),
        agent_budgets=(("a", BudgetReport(None, 2.5, 0, 0.0, None)),), reason=spent))
    again = _round_trip(finished)
    assert again == finished and again.result.to_json()["budget"]["exhausted"] == spent
    # A result without them (an older coordinator, a run with no budget) stays without them.
    plain = RunFinished(RunResult(RunId("r"), "e", "completed", "ok", (), 1.0, 2.0))
    assert _round_trip(plain) == plain and "budget" not in plain.result.to_json()


def test_a_failed_run_without_a_deliverable_comes_back() -> None:
    finished = RunFinished(RunResult(RunId("r"), "e", "failed", None, (("a", AgentRecord(AgentStatus.FAILED)),), 1.0, 2.0))
    assert _round_trip(finished) == finished


# ---- values --------------------------------------------------------------------------------------

def _nested(depth: int) -> object:
    value: object = "leaf"
    for _ in range(depth):
        value = [value]
    return value


@pytest.mark.parametrize("value", [None, True, False, 0, -(2**63), 2**63 - 1, 1.0, -0.5, "", "x\n\u4e16",
                                   [], {}, {"": 1}, [[], {}, [None]], {"a": {"b": [1, {"c": None}]}},
                                   _nested(MAX_VALUE_DEPTH)])
def test_json_like_values_round_trip_with_their_types(value) -> None:
    again = value_from_wire(control_pb2.Value.FromString(value_to_wire(value).SerializeToString()), "output")
    assert again == freeze(value)
    assert type(again) is type(freeze(value))


@pytest.mark.parametrize("value", [object(), b"bytes", 2**63, -(2**63) - 1, _nested(MAX_VALUE_DEPTH + 1),
                                   {"k": {1, 2}}])
def test_what_is_not_a_json_like_value_cannot_be_sent(value) -> None:
    with pytest.raises(WireError, match="cannot encode"):
        wire.to_wire(AgentEnded("a", AgentRecord(AgentStatus.COMPLETED, 1, value)))


def test_an_output_nested_deeper_than_protobuf_allows_still_travels_within_the_cap() -> None:
    # Flat nodes: 64 levels of nesting are 65 nodes, not 130 nested messages (protobuf stops at 100).
    deep = AgentEnded("a", AgentRecord(AgentStatus.COMPLETED, 1, freeze(_nested(MAX_VALUE_DEPTH))))
    assert _round_trip(deep) == deep


def _value(*nodes: dict) -> control_pb2.Value:
    return control_pb2.Value(nodes=[control_pb2.ValueNode(**n) for n in nodes])


BAD_VALUES = {
    "empty": _value(),
    "a node of no kind": _value({}),
    "nodes after the end": _value({"null": True}, {"null": True}),
    "a list that ends early": _value({"list_length": 2}, {"null": True}),
    "a list claiming billions": _value({"list_length": 2**32 - 1}, {"null": True}),
    "a map that ends early": _value({"map_length": 1}),
    "a key outside a map": _value({"list_length": 1}, {"key": "k", "null": True}),
    "a key on the root": _value({"key": "k", "text": "x"}),
    "a key twice": _value({"map_length": 2}, {"key": "k", "null": True}, {"key": "k", "null": True}),
    "too deep": _value(*[{"list_length": 1}] * (MAX_VALUE_DEPTH + 1), {"null": True}),
}


@pytest.mark.parametrize("value", BAD_VALUES.values(), ids=BAD_VALUES.keys())
def test_malformed_values_raise_wire_error(value) -> None:
    with pytest.raises(WireError, match="output"):
        value_from_wire(value, "output")
    record = control_pb2.AgentRecord(status="completed", output=value)
    with pytest.raises(WireError):
        wire.from_wire(control_pb2.RunEvent(agent_ended=control_pb2.RunEvent.AgentEnded(agent="a", record=record)))


# ---- hostile events ------------------------------------------------------------------------------

def _mutated(event, change) -> control_pb2.RunEvent:
    """`event`'s message with `change` applied to it."""
    message = wire.to_wire(event)
    change(message)
    return message


def _planned(change) -> control_pb2.RunEvent:
    return _mutated(PLANNED, lambda m: change(m.run_planned))


def _candidate(change):
    return _planned(lambda p: change(p.agents[0].candidates[0]))


def _rejection(change):
    return _planned(lambda p: change(p.agents[0].rejected[0]))


def _record(change):
    return _mutated(AgentEnded("a", BOUND_RECORD), lambda m: change(m.agent_ended.record))


def _set(**fields):
    def change(message):
        for name, value in fields.items():
            setattr(message, name, value)
    return change


E = control_pb2.RunEvent
BAD_EVENTS = {
    "no event": E(),
    "token with an escape in the agent": E(token_streamed=E.TokenStreamed(agent="\x1b]0;pwned\x07", text="x")),
    "token with an empty agent": E(token_streamed=E.TokenStreamed(text="x")),
    "attempt beyond reason": E(agent_retrying=E.AgentRetrying(agent="a", error="e", attempt=2**21)),
    "ended without a record": E(agent_ended=E.AgentEnded(agent="a")),
    "unknown status": _record(_set(status="exploded")),
    "status by enum name": _record(_set(status="COMPLETED")),
    "record node with a newline": _record(lambda r: r.nodes.append("pi\nnas")),
    "record with absurdly many nodes": _record(lambda r: r.nodes.extend(f"n{i}" for i in range(5000))),
    "failovers beyond reason": _record(_set(failovers=2**21)),
    "infinite start": _record(_set(started_at=float("inf"))),
    "result without a deliverable": E(run_finished=E.RunFinished(run_id="r", ensemble="e", status="completed")),
    "result without a record": _mutated(
        RunFinished(RunResult(RunId("r"), "e", "completed", "ok", (("a", BOUND_RECORD),), 1.0, 2.0)),
        lambda m: m.run_finished.results[0].ClearField("record")),
    "infinite time": E(run_began=E.RunBegan(run_id="r", ensemble="e", at=float("inf"))),
    "began with an empty journal path": E(run_began=E.RunBegan(run_id="r", ensemble="e", journal="")),
    "too many agents": E(run_began=E.RunBegan(run_id="r", ensemble="e", agents=["a"] * (MAX_AGENTS + 1))),
    "unknown exclusion reason": _rejection(_set(reason="bored")),
    "exclusion by enum name": _rejection(_set(reason="NO_MODEL")),
    "rejection detail too long": _rejection(_set(detail="x" * (MAX_REASON + 1))),
    "rejected node with an escape": _rejection(_set(name="nas\x1b[2J")),
    "infinite decode": _candidate(_set(decode_s=float("inf"))),
    "nan network": _candidate(_set(network_s=float("nan"))),
    "negative load": _candidate(_set(load_s=-1.0)),
    "candidate name with a newline": _candidate(_set(name="mac\nmini")),
    "empty runtime": _candidate(_set(runtime="")),
    "candidate digest not a digest": _candidate(_set(sha256="abc")),
    "too many candidates": _planned(lambda p: p.agents[0].candidates.extend(
        [p.agents[0].candidates[0]] * MAX_PEERS_LISTED)),
    "too many rejections": _planned(lambda p: p.agents[0].rejected.extend(
        [p.agents[0].rejected[0]] * MAX_PEERS_LISTED)),
    "too many plans": _planned(lambda p: p.agents.extend([p.agents[0]] * MAX_AGENTS)),
    "plan kind too long": _planned(lambda p: setattr(p.agents[0], "kind", "k" * 33)),
    "plan agent empty": _planned(lambda p: setattr(p.agents[0], "agent", "")),
    "empty coordinator": _planned(_set(coordinator="")),
    "empty ensemble": _planned(_set(ensemble="")),
    "placed on a nameless node": _mutated(AgentPlacedOn("a", "b" * 20, "pi"), lambda m: m.agent_placed_on.ClearField("node_name")),
    "placed node name with an escape": _mutated(AgentPlacedOn("a", "b" * 20, "pi"),
                                                lambda m: setattr(m.agent_placed_on, "node_name", "\x1b]0;x\x07")),
    "negative wait": E(agent_working=E.AgentWorking(agent="a", node_id="n", waited_s=-1.0)),
}


@pytest.mark.parametrize("message", BAD_EVENTS.values(), ids=BAD_EVENTS.keys())
def test_hostile_run_events_raise_wire_error(message) -> None:
    wire.parse(control_pb2.RunEvent, message.SerializeToString())  # well-formed protobuf: the content is wrong
    with pytest.raises(WireError):
        wire.from_wire(message)


def test_an_event_of_a_kind_this_node_does_not_know_is_refused_by_name() -> None:
    # A newer daemon's oneof case (field 99 here) parses as an unknown field: no event set.
    newer = bytes([0x9a, 0x06, 0])  # field 99, length-delimited, empty
    with pytest.raises(WireError, match="does not know"):
        wire.from_wire(wire.parse(control_pb2.RunEvent, newer))


def test_the_mutations_are_decodable_before_they_are_broken() -> None:
    # The malformed events above differ from a valid one by one change: without it they decode.
    assert wire.from_wire(_planned(lambda p: None)) == PLANNED
    assert wire.from_wire(_rejection(_set(reason=Exclusion.MEMORY.value))).agents[0].rejected[0].reason \
        is Exclusion.MEMORY
    assert len(wire.from_wire(_planned(lambda p: p.agents.extend([p.agents[0]] * 2))).agents) == 5


# ---- fuzzing: random bytes, and well-formed messages with hostile field values -------------------

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _only_wire_errors(message) -> None:
    try:
        wire.from_wire(message)
    except WireError:
        pass


@FUZZ
@given(st.binary(max_size=512))
def test_random_run_event_bytes_raise_only_wire_error(data) -> None:
    try:
        message = wire.parse(control_pb2.RunEvent, data)
    except WireError:
        return
    _only_wire_errors(message)


_TEXT = st.text(max_size=40) | st.sampled_from(["", "\x00", "\x1b[2J", "a" * 5000, "completed", "dead", SHA])
_FLOATS = st.floats(allow_nan=True, allow_infinity=True, width=64)
_INTS = st.integers(0, 2**32 - 1)


def _fill(message, draw, depth: int = 0) -> None:
    """Set random values in random fields of `message`, sub-messages and repeated fields included."""
    for descriptor in message.DESCRIPTOR.fields:
        if not draw(st.booleans()):
            continue
        count = draw(st.integers(1, 3)) if descriptor.is_repeated else 1
        for _ in range(count):
            if descriptor.message_type is not None:
                if depth > 4:
                    continue
                target = (getattr(message, descriptor.name).add() if descriptor.is_repeated
                          else getattr(message, descriptor.name))
                target.SetInParent()
                _fill(target, draw, depth + 1)
                continue
            strategy = {descriptor.TYPE_STRING: _TEXT, descriptor.TYPE_DOUBLE: _FLOATS,
                        descriptor.TYPE_BOOL: st.booleans(), descriptor.TYPE_SINT64: st.integers(-(2**63), 2**63 - 1),
                        descriptor.TYPE_UINT64: st.integers(0, 2**64 - 1)}.get(descriptor.type, _INTS)
            value = draw(strategy)
            if descriptor.is_repeated:
                getattr(message, descriptor.name).append(value)
            else:
                setattr(message, descriptor.name, value)


@FUZZ
@given(st.sampled_from([f.name for f in control_pb2.RunEvent.DESCRIPTOR.oneofs_by_name["event"].fields]), st.data())
def test_well_formed_events_with_hostile_values_raise_only_wire_error(case, data) -> None:
    message = control_pb2.RunEvent()
    getattr(message, case).SetInParent()
    _fill(getattr(message, case), data.draw)
    _only_wire_errors(message)


@FUZZ
@given(st.data())
def test_well_formed_values_with_hostile_shapes_raise_only_wire_error(data) -> None:
    nodes = data.draw(st.lists(st.fixed_dictionaries({}, optional={
        "key": st.sampled_from(["", "k", "j"]), "null": st.just(True), "integer": st.integers(-5, 5),
        "text": st.text(max_size=3), "list_length": st.integers(0, 4), "map_length": st.integers(0, 4)}), max_size=12))
    try:
        value = _value(*nodes)
    except (ValueError, TypeError):
        return
    try:
        value_from_wire(value, "output")
    except WireError:
        pass


_JSON = st.recursive(st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.floats() | st.text(max_size=8),
                     lambda children: st.lists(children, max_size=4)
                     | st.dictionaries(st.text(max_size=4), children, max_size=4), max_leaves=40)


@settings(max_examples=200, deadline=None)
@given(_JSON)
def test_any_json_like_value_round_trips(value) -> None:
    again = value_from_wire(control_pb2.Value.FromString(value_to_wire(value).SerializeToString()), "output")
    assert repr(again) == repr(freeze(value))  # repr: NaN is not equal to itself
