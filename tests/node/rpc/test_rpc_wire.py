"""Domain values survive the wire unchanged, and hostile messages only ever raise WireError."""

from __future__ import annotations

from pathlib import Path
from types import MappingProxyType

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from rpc_helpers import description_of, new_member

from orc.node.protocol.description import Load, ModelOffer, NodeDescription, PeerAddress
from orc.node.protocol.events import (
    AgentBegan,
    AgentEnded,
    AgentPlacedOn,
    AgentWorking,
    AgentPlan,
    AgentRetrying,
    RunBegan,
    RunFinished,
    RunPlanned,
    RunResult,
    TokenStreamed,
)
from orc.node.models.hardware import Hardware
from orc.node.trust.certificates import generate_key, make_csr
from orc.node.protocol.ids import MeshId, NodeId
from orc.node.rpc import wire
from orc.node.protocol.errors import WireError
from orc.node.protocol.messages import (
    AgentPayload,
    Beat,
    CancelReply,
    CancelRequest,
    ExecuteRequest,
    ExecutionFailed,
    ExecutionResult,
    ExecutionStarted,
    ExecutionTokens,
    Invitation,
    InviteRequest,
    JoinGrant,
    JoinRequest,
    NodeStatus,
    OfferReply,
    OfferRequest,
    PeersReply,
    PeerView,
    RenewReply,
    RenewRequest,
    RevocationsReply,
    RevocationsRequest,
    RevokeReply,
    RevokeRequest,
    RunRequest,
)
from orc.node.models.runtimes.base import ChatMessage, GenerationParams
from orc.proto.v1 import control_pb2, mesh_pb2
from orc.scheduler.placement import Estimate, Exclusion, Rejection
from orc.scheduler.run import AgentRecord, AgentStatus, RunId, Usage
from orc.scheduler.values import freeze

NODE = NodeId("abcdefghijklmnopqrst")
MESH = MeshId("abcdefghijklmnop")
SHA = "0123456789abcdef" * 4


def _description(**changes) -> NodeDescription:
    values = dict(
        protocol_version=1, node_id=NODE, name="mac-mini", mesh_id=MESH,
        addresses=("10.0.0.2:7733", "[fd00::2]:7733"),
        hardware=Hardware("arm64", 8, 16 << 30, 9 << 30, "metal", "Darwin"),
        models=(ModelOffer("smollm2-135m", "llama_cpp", SHA, 145_000_000, True, 1200.0, 61.5),),
        load=Load(1, 0, 1.25), revocation_seq=2, version=9, started_at=1_700_000_000.25,
        tags=("desk",), known_peers=(PeerAddress(NodeId("b" * 20), "10.0.0.3:7733"),), certificate_authority=True,
    )
    values.update(changes)
    return NodeDescription(**values)


_MINIMAL = _description(
    hardware=Hardware("x86_64", 2, None, None, "none", "Linux"),
    models=(ModelOffer("gemma3-270m", "llama_cpp", SHA, 1, False),),
    load=Load(), addresses=(), tags=(), known_peers=(),
)
_PAYLOAD = AgentPayload("smollm2-135m", SHA, (ChatMessage("system", "Be brief."), ChatMessage("user", "Hi\n")),
                        GenerationParams(0.2, 64, 7, ("\n\n", "END"), 0.9))
_RECORD = AgentRecord(AgentStatus.COMPLETED, 2, freeze({"answer": [1, 2.5, None, True, "x"], "n": {"k": "v"}}),
                      None, str(NODE), "smollm2-135m", 1.5, 2.5, Usage(10, 20))
_BOUND_RECORD = AgentRecord(AgentStatus.COMPLETED, 1, "ok", None, "c" * 20, "smollm2-135m", 1.0, 4.0, Usage(5, 6),
                            nodes=("b" * 20, "c" * 20), failovers=1)
_PLANNED = RunPlanned("digest", str(NODE), 1_700_000_000.5, (
    AgentPlan("summarize", "llm", "smollm2-135m",
              (Estimate(str(NODE), "mac-mini", 1_700_000_000.5, 0.0, 0.25, 1.5, 0.0, True, False, "llama_cpp"),
               Estimate("b" * 20, "pi", 1_700_000_002.0, 3.5, 1.25, 6.0, 0.004, False, True, "mlx")),
              (Rejection("c" * 20, "laptop", Exclusion.NO_MODEL, "no model 'smollm2-135m'"),
               Rejection("d" * 20, "nas", Exclusion.LOCAL_ONLY, "local_only: the agent stays on the coordinator's device"))),
    AgentPlan("split", "script", None, note="runs on this node: scripts never leave the coordinator"),
    AgentPlan("nowhere", "llm", "llama3:70b", (),
              tuple(Rejection(n * 20, n, reason, reason.value) for n, reason in zip("efghijk", Exclusion))),
))
_CSR = make_csr(generate_key(), "joiner")

SAMPLES = [
    _description(),
    _MINIMAL,
    Beat(1_700_000_000_000, 9, 2, Load(0, 3, None)),
    Beat(1_700_000_000_000, 9, 2, Load(2, 1, 0.5, backlog_ms=12_345)),
    RevocationsRequest(0),
    RevocationsRequest(17),
    RevocationsReply(b"\x91\x96"),
    RenewRequest(_CSR),
    RenewReply(b"-----BEGIN CERTIFICATE-----\n..."),
    OfferRequest("run-1", "summarize", "smollm2-135m", SHA, 120, 256),
    OfferReply(True, "lease-9", 1500, 1_700_000_002_000),
    OfferReply(False, reason="queue full"),
    OfferReply(False, reason="max_tokens 9999 is more than the model's context window here", permanent=True),
    ExecuteRequest("exec-1", "run-1", "summarize", "lease-9", 30_000, _PAYLOAD),
    ExecuteRequest("exec-2", "run-1", "p/child[3]", "", 0,
                   AgentPayload("m", SHA, (), GenerationParams(seed=None, top_p=None))),
    ExecutionStarted(NODE, "smollm2-135m"),
    ExecutionTokens("Hello, \u4e16\u754c"),
    ExecutionResult("Hello", Usage(4, 1), "length"),
    ExecutionFailed("model_not_found", "no such model here", False),
    CancelRequest("exec-1"),
    CancelReply(True),
    JoinRequest("s" * 26, _CSR, "new-node"),
    JoinGrant(b"cert", b"ca", b"\x90"),
    NodeStatus(_description(), True, "10.0.0.2:7734", 2, 3, "/home/me/.local/share/orc"),
    NodeStatus(_MINIMAL, False, None, 0, 0, ""),
    PeerView(_description(), "verified", "10.0.0.2:7733", 1_700_000_001.5, True, 0, NODE),
    PeerView(None, "discovered", "10.0.0.9:7733", None, False, 2, NodeId("c" * 20)),
    PeerView(None, "discovered", "peer.local:7733", None, False, 0, None),
    PeersReply((PeerView(None, "gone", "10.0.0.9:7733", 5.0, True, 3, NODE),)),
    PeersReply(()),
    InviteRequest(900),
    Invitation("orc1-" + "a" * 26 + "-" + "b" * 26, 1_700_000_900.0, "10.0.0.2:7734"),
    RevokeRequest(NODE, "laptop stolen"),
    RevokeReply(5),
    RunRequest("perspectives", "Should we?", "/tmp/work", json=True, explain=True, local=False, seed=-3, threads=4),
    RunRequest("./review.yaml", None, "/"),
    RunRequest("ignored", None, "/home/me", resume="0123456789abcdef"),
    RunRequest("perspectives", "Should we?", "/tmp/work", plan=True),
    RunBegan(RunId("r1"), "digest", ("split", "summarize"), Path("/tmp/runs/r1.jsonl"), 1.5, resumed=True),
    RunBegan(RunId("r1"), "digest", (), None, 1.5),
    AgentBegan("split", str(NODE), "smollm2-135m", 1, None),
    AgentBegan("fan[2]", None, None, 2, 5),
    TokenStreamed("parent/child", "tok"),
    AgentEnded("summarize", _RECORD, reused=True),
    AgentEnded("skipped", AgentRecord(AgentStatus.SKIPPED, error="branch off")),
    AgentRetrying("summarize", "peer lost", 2),
    AgentEnded("summarize", _BOUND_RECORD),
    AgentPlacedOn("summarize", "b" * 20, "pi"),
    AgentPlacedOn("fan[3]", "c" * 20, "laptop", replaces="pi: peer lost"),
    AgentWorking("fan[3]", "c" * 20, 1.25),
    _PLANNED,
    RunPlanned("empty", "local", 0.0, ()),
    RunFinished(RunResult(RunId("r1"), "digest", "completed_with_errors", freeze({"text": "done", "items": [1]}),
                          (("split", _RECORD), ("other", AgentRecord(AgentStatus.FAILED, 3, None, "boom"))), 1.0, 9.0)),
]


@pytest.mark.parametrize("value", SAMPLES, ids=lambda v: type(v).__name__)
def test_every_domain_value_round_trips(value) -> None:
    message = wire.to_wire(value)
    again = wire.from_wire(wire.parse(type(message), message.SerializeToString()))
    assert again == value


def test_every_message_class_is_covered_by_the_samples() -> None:
    covered = {type(wire.to_wire(v)).__name__ for v in SAMPLES}
    empty = {"DescribeRequest", "WatchRequest", "StatusRequest", "PeersRequest"}
    defined = set(mesh_pb2.DESCRIPTOR.message_types_by_name) | set(control_pb2.DESCRIPTOR.message_types_by_name)
    parts = {"Hardware", "ModelOffer", "Load", "PeerAddress"}  # inside NodeDescription
    assert defined - covered - empty - parts == set()


SAME_FIELDS = [
    (NodeDescription, mesh_pb2.NodeDescription), (Hardware, mesh_pb2.Hardware), (ModelOffer, mesh_pb2.ModelOffer),
    (Load, mesh_pb2.Load), (PeerAddress, mesh_pb2.PeerAddress), (Beat, mesh_pb2.Beat),
    (OfferRequest, mesh_pb2.OfferRequest), (OfferReply, mesh_pb2.OfferReply),
    (ExecuteRequest, mesh_pb2.ExecuteRequest), (NodeStatus, control_pb2.NodeStatus),
    (PeerView, control_pb2.PeerView), (RunRequest, control_pb2.RunRequest), (Invitation, control_pb2.InviteReply),
]


@pytest.mark.parametrize("domain, message", SAME_FIELDS, ids=lambda c: c.__name__)
def test_domain_types_and_messages_have_the_same_fields(domain, message) -> None:
    # A field added on one side only would be silently dropped on the wire.
    assert set(domain.__dataclass_fields__) == set(message.DESCRIPTOR.fields_by_name)


def test_a_real_description_with_real_ids_round_trips(mesh) -> None:
    value = description_of(new_member(mesh), mesh)
    assert wire.from_wire(wire.to_wire(value)) == value


def test_frozen_outputs_come_back_frozen() -> None:
    event = wire.decode_run_event(wire.encode_run_event(AgentEnded("a", _RECORD)))
    assert isinstance(event.record.output, MappingProxyType)
    assert isinstance(event.record.output["answer"], tuple)


# ---- hostile messages ------------------------------------------------------------------------

def _bad_description(**changes) -> mesh_pb2.NodeDescription:
    message = wire.to_wire(_description())
    for name, value in changes.items():
        if callable(value):
            value(message)
        elif isinstance(value, list):
            del getattr(message, name)[:]
            getattr(message, name).extend(value)
        else:
            setattr(message, name, value)
    return message


BAD_MESSAGES = {
    "short node id": _bad_description(node_id="abc"),
    "upper-case node id": _bad_description(node_id="ABCDEFGHIJKLMNOPQRST"),
    "mesh id": _bad_description(mesh_id="!" * 16),
    "escape in name": _bad_description(name="pi\x1b[31m"),
    "long name": _bad_description(name="n" * 64),
    "address without port": _bad_description(addresses=["10.0.0.2"]),
    "address with port 0": _bad_description(addresses=["10.0.0.2:0"]),
    "address port too big": _bad_description(addresses=["10.0.0.2:70000"]),
    "too many addresses": _bad_description(addresses=[f"10.0.0.{i}:1" for i in range(17)]),
    "tag with newline": _bad_description(tags=["a\nb"]),
    "bidi override in tag": _bad_description(tags=["\u202eevil"]),
    "too many models": _bad_description(models=lambda m: m.models.extend([m.models[0]] * 64)),
    "upper-case digest": _bad_description(models=lambda m: setattr(m.models[0], "sha256", SHA.upper())),
    "nan speed": _bad_description(models=lambda m: setattr(m.models[0], "decode_tokens_per_s", float("nan"))),
    "negative speed": _bad_description(models=lambda m: setattr(m.models[0], "prefill_tokens_per_s", -1.0)),
    "no hardware": _bad_description(hardware=lambda m: m.ClearField("hardware")),
    "zero cores": _bad_description(hardware=lambda m: setattr(m.hardware, "cores", 0)),
    "infinite start": _bad_description(started_at=float("inf")),
    "too many known peers": _bad_description(known_peers=lambda m: m.known_peers.extend(
        [mesh_pb2.PeerAddress(node_id=NODE, address="h:1")] * 257)),
    "known peer with bad id": _bad_description(known_peers=lambda m: m.known_peers.extend(
        [mesh_pb2.PeerAddress(node_id="x", address="h:1")])),
    "accepted offer without lease": mesh_pb2.OfferReply(accepted=True),
    "execute with junk payload": mesh_pb2.ExecuteRequest(execution_id="e", run_id="r", agent="a", payload=b"\xc1"),
    "execute with a list payload": mesh_pb2.ExecuteRequest(execution_id="e", run_id="r", agent="a",
                                                           payload=msgpack.packb([1, 2])),
    "execute event with nothing": mesh_pb2.ExecuteEvent(),
    "started by a non-node": mesh_pb2.ExecuteEvent(started=mesh_pb2.ExecuteEvent.Started(node_id="me", model="m")),
    "join with a bad name": mesh_pb2.JoinRequest(secret="s", csr_pem=b"x", name="../../etc"),
    "join without a request": mesh_pb2.JoinRequest(secret="s", name="ok"),
    "join with a huge request": mesh_pb2.JoinRequest(secret="s", csr_pem=b"x" * 20_000, name="ok"),
    "empty certificate": mesh_pb2.RenewReply(),
    "revoke a non-node": control_pb2.RevokeRequest(node_id="all", reason="x"),
    "status without description": control_pb2.NodeStatus(),
    "peer with a bad id": control_pb2.PeerView(node_id="zz", state="gone", address="h:1"),
    "run without reference": control_pb2.RunRequest(cwd="/"),
    "run with 0 threads": control_pb2.RunRequest(reference="x", cwd="/", threads=0),
    "resume of an empty run id": control_pb2.RunRequest(reference="x", cwd="/", resume=""),
    "resume of an absurd run id": control_pb2.RunRequest(reference="x", cwd="/", resume="r" * 65),
    "resume with a NUL": control_pb2.RunRequest(reference="x", cwd="/", resume="ab\x00cd"),
    "run event junk": control_pb2.RunEvent(event=b"junk"),
    "an empty request": mesh_pb2.DescribeRequest(),
}


def _payload(**changes) -> bytes:
    body = {"model_id": "m", "model_sha256": SHA, "messages": [{"role": "user", "content": "hi"}],
            "params": {"temperature": 0.5, "max_tokens": 8, "seed": None, "top_p": None, "stop": []}}
    for key, value in changes.items():
        if key in body["params"]:
            body["params"][key] = value
        else:
            body[key] = value
    return msgpack.packb(body)


BAD_PAYLOADS = {
    "role root": _payload(messages=[{"role": "root", "content": "x"}]),
    "content not text": _payload(messages=[{"role": "user", "content": 5}]),
    "too many turns": _payload(messages=[{"role": "user", "content": ""}] * 1025),
    "zero max tokens": _payload(max_tokens=0),
    "bool max tokens": _payload(max_tokens=True),
    "nan temperature": _payload(temperature=float("nan")),
    "top_p above one": _payload(top_p=1.5),
    "too many stops": _payload(stop=["x"] * 17),
    "empty stop": _payload(stop=[""]),
    "bad digest": _payload(model_sha256="abc"),
    "no params": msgpack.packb({"model_id": "m", "model_sha256": SHA, "messages": []}),
    "timestamp ext": msgpack.packb({"model_id": msgpack.Timestamp(1, 0)}, datetime=False),
}


@pytest.mark.parametrize("message", BAD_MESSAGES.values(), ids=BAD_MESSAGES.keys())
def test_hostile_messages_raise_wire_error(message) -> None:
    with pytest.raises(WireError):
        wire.from_wire(message)


@pytest.mark.parametrize("payload", BAD_PAYLOADS.values(), ids=BAD_PAYLOADS.keys())
def test_hostile_agent_payloads_raise_wire_error(payload) -> None:
    message = mesh_pb2.ExecuteRequest(execution_id="e", run_id="r", agent="a", payload=payload)
    with pytest.raises(WireError):
        wire.from_wire(message)


def test_a_valid_payload_is_accepted() -> None:
    message = mesh_pb2.ExecuteRequest(execution_id="e", run_id="r", agent="a", payload=_payload())
    assert wire.from_wire(message).payload.params.max_tokens == 8


@pytest.mark.parametrize("thing", ["text", b"bytes", None, 3, object(), {"node_id": NODE}])
def test_things_that_are_not_messages_raise_wire_error(thing) -> None:
    with pytest.raises(WireError):
        wire.from_wire(thing)


def _nested(depth: int) -> object:
    value: object = "leaf"
    for _ in range(depth):
        value = [value]
    return value


BAD_EVENTS = {
    "not a map": msgpack.packb([1, 2]),
    "unknown kind": msgpack.packb({"kind": "party"}),
    "no kind": msgpack.packb({"agent": "a"}),
    "token without text": msgpack.packb({"kind": "token", "agent": "a"}),
    "agent name with escape": msgpack.packb({"kind": "token", "agent": "\x1b]0;pwned\x07", "text": "x"}),
    "attempt as text": msgpack.packb({"kind": "agent_retrying", "agent": "a", "error": "e", "attempt": "2"}),
    "attempt as bool": msgpack.packb({"kind": "agent_retrying", "agent": "a", "error": "e", "attempt": True}),
    "unknown status": msgpack.packb({"kind": "agent_ended", "agent": "a", "reused": False, "record": {
        "status": "exploded", "attempts": 1, "usage": [0, 0]}}),
    "deep output": msgpack.packb({"kind": "agent_ended", "agent": "a", "reused": False, "record": {
        "status": "completed", "attempts": 1, "output": _nested(100), "usage": [0, 0]}}),
    "bytes key in output": msgpack.packb({"kind": "agent_ended", "agent": "a", "reused": False, "record": {
        "status": "completed", "attempts": 1, "output": {b"k": 1}, "usage": [0, 0]}}, use_bin_type=True),
    "bytes output": msgpack.packb({"kind": "agent_ended", "agent": "a", "reused": False, "record": {
        "status": "completed", "attempts": 1, "output": b"\x00", "usage": [0, 0]}}, use_bin_type=True),
    "usage of three": msgpack.packb({"kind": "agent_ended", "agent": "a", "reused": False, "record": {
        "status": "completed", "attempts": 1, "usage": [0, 0, 0]}}),
    "results not pairs": msgpack.packb({"kind": "run_finished", "result": {
        "run_id": "r", "ensemble": "e", "status": "completed", "deliverable": None, "results": [["a"]],
        "started_at": 1.0, "finished_at": 2.0}}),
    "infinite time": msgpack.packb({"kind": "run_began", "run_id": "r", "ensemble": "e", "agents": [],
                                    "journal": None, "at": float("inf"), "resumed": False}),
    "integer map keys": b"\x81\x01\x02",
    "truncated": msgpack.packb({"kind": "token", "agent": "a", "text": "xyz"})[:-2],
    "trailing junk": msgpack.packb({"kind": "token", "agent": "a", "text": "x"}) + b"\x00",
    "very deep": b"\x91" * 5000,
}


@pytest.mark.parametrize("data", BAD_EVENTS.values(), ids=BAD_EVENTS.keys())
def test_hostile_run_events_raise_wire_error(data) -> None:
    with pytest.raises(WireError):
        wire.decode_run_event(data)


def test_non_bytes_and_oversized_run_events_raise_wire_error() -> None:
    for data in ("text", None, 5, [1]):
        with pytest.raises(WireError):
            wire.decode_run_event(data)
    with pytest.raises(WireError):
        wire.decode_run_event(b"\x00" * (wire.MAX_RUN_EVENT_BYTES + 1))


def test_an_unencodable_output_raises_wire_error() -> None:
    record = AgentRecord(AgentStatus.COMPLETED, 1, object())
    with pytest.raises(WireError):
        wire.encode_run_event(AgentEnded("a", record))


# ---- plans, placements and bindings ------------------------------------------------------------

def test_a_plan_comes_back_with_its_estimates_and_exclusions() -> None:
    again = wire.decode_run_event(wire.encode_run_event(_PLANNED))
    assert again == _PLANNED
    best, second = again.agents[0].candidates
    assert isinstance(best, Estimate) and best.warm and not best.preferred and best.runtime == "llama_cpp"
    assert second.finish_s == _PLANNED.agents[0].candidates[1].finish_s and second.network_s == 0.004
    assert [r.reason for r in again.agents[0].rejected] == [Exclusion.NO_MODEL, Exclusion.LOCAL_ONLY]
    assert [r.reason for r in again.agents[2].rejected] == list(Exclusion)  # every reason survives
    assert again.agents[1].note == _PLANNED.agents[1].note and again.agents[1].candidates == ()


def test_a_placement_and_its_failover_reason_come_back() -> None:
    for event in (AgentPlacedOn("a", "b" * 20, "pi"), AgentPlacedOn("a[2]", "c" * 20, "nas", "pi: lease expired")):
        message = wire.to_wire(event)
        assert isinstance(message, control_pb2.RunEvent)
        assert wire.from_wire(wire.parse(control_pb2.RunEvent, message.SerializeToString())) == event


def test_records_carry_their_nodes_and_failovers() -> None:
    again = wire.decode_run_event(wire.encode_run_event(AgentEnded("summarize", _BOUND_RECORD))).record
    assert again.nodes == ("b" * 20, "c" * 20) and again.failovers == 1 and again.tries == 2
    finished = RunFinished(RunResult(RunId("r"), "e", "completed", "ok", (("summarize", _BOUND_RECORD),), 1.0, 4.0))
    assert wire.decode_run_event(wire.encode_run_event(finished)).result.results[0][1] == _BOUND_RECORD


def test_a_record_from_a_node_that_knows_no_bindings_gets_the_defaults() -> None:
    body = msgpack.unpackb(wire.encode_run_event(AgentEnded("a", _BOUND_RECORD)), raw=False)
    del body["record"]["nodes"], body["record"]["failovers"]
    record = wire.decode_run_event(msgpack.packb(body, use_bin_type=True)).record
    assert record.nodes == () and record.failovers == 0 and record.node_id == "c" * 20


def test_run_requests_carry_resume_and_plan() -> None:
    for request in (RunRequest("x", None, "/", resume="0123456789abcdef"), RunRequest("x", "in", "/", plan=True)):
        message = wire.to_wire(request)
        assert wire.from_wire(wire.parse(control_pb2.RunRequest, message.SerializeToString())) == request
    plain = wire.from_wire(control_pb2.RunRequest(reference="x", cwd="/"))
    assert plain.resume is None and plain.plan is False
    assert not wire.to_wire(RunRequest("x", None, "/")).HasField("resume")


def test_a_backlog_round_trips_and_an_absurd_one_is_capped() -> None:
    load = Load(1, 2, None, backlog_ms=90_000)
    assert wire.from_wire(wire.to_wire(_description(load=load))).load.backlog_ms == 90_000
    for claimed in (wire.MAX_BACKLOG_MS + 1, 2**64 - 1):
        beat = mesh_pb2.Beat(sent_at_ms=1, load=mesh_pb2.Load(backlog_ms=claimed))
        assert wire.from_wire(beat).load.backlog_ms == wire.MAX_BACKLOG_MS
        described = _bad_description(load=lambda m, c=claimed: setattr(m.load, "backlog_ms", c))
        assert wire.from_wire(described).load.backlog_ms == wire.MAX_BACKLOG_MS
    at_cap = mesh_pb2.Beat(load=mesh_pb2.Load(backlog_ms=wire.MAX_BACKLOG_MS))
    assert wire.from_wire(at_cap).load.backlog_ms == wire.MAX_BACKLOG_MS


def _mutated(event, change) -> bytes:
    """`event` encoded, with `change` applied to its msgpack body first."""
    body = msgpack.unpackb(wire.encode_run_event(event), raw=False)
    change(body)
    return msgpack.packb(body, use_bin_type=True)


def _set(path: str, value):
    """A change that sets body[path] (keys and list indexes, dot-separated) to `value`."""
    *parents, last = [int(k) if k.isdigit() else k for k in path.split(".")]

    def change(body):
        for key in parents:
            body = body[key]
        body[last] = value
    return change


def _planned(path: str, value) -> bytes:
    return _mutated(_PLANNED, _set(path, value))


_CANDIDATE = "agents.0.candidates.0"
_REJECTION = "agents.0.rejected.0"
_ROW = msgpack.unpackb(wire.encode_run_event(_PLANNED), raw=False)["agents"][0]

BAD_PLANS = {
    "candidate of 9 fields": _planned(_CANDIDATE, _ROW["candidates"][0][:9]),
    "candidate of 11 fields": _planned(_CANDIDATE, _ROW["candidates"][0] + [0.0]),
    "candidate not a list": _planned(_CANDIDATE, "mac-mini"),
    "candidates not a list": _planned("agents.0.candidates", {"a": 1}),
    "rejection of 3 fields": _planned(_REJECTION, _ROW["rejected"][0][:3]),
    "rejection of 5 fields": _planned(_REJECTION, _ROW["rejected"][0] + ["more"]),
    "unknown exclusion reason": _planned(f"{_REJECTION}.2", "bored"),
    "exclusion by enum name": _planned(f"{_REJECTION}.2", "NO_MODEL"),
    "exclusion as a number": _planned(f"{_REJECTION}.2", 1),
    "rejection detail not text": _planned(f"{_REJECTION}.3", 5),
    "rejection detail too long": _planned(f"{_REJECTION}.3", "x" * (wire.MAX_REASON + 1)),
    "rejected node with an escape": _planned(f"{_REJECTION}.1", "nas\x1b[2J"),
    "warm as 1": _planned(f"{_CANDIDATE}.7", 1),
    "preferred as nil": _planned(f"{_CANDIDATE}.8", None),
    "start as text": _planned(f"{_CANDIDATE}.2", "0"),
    "load as a bool": _planned(f"{_CANDIDATE}.3", True),
    "infinite decode": _planned(f"{_CANDIDATE}.5", float("inf")),
    "nan network": _planned(f"{_CANDIDATE}.6", float("nan")),
    "candidate name with a newline": _planned(f"{_CANDIDATE}.1", "mac\nmini"),
    "empty runtime": _planned(f"{_CANDIDATE}.9", ""),
    "too many candidates": _planned("agents.0.candidates", _ROW["candidates"][:1] * (wire.MAX_PEERS_LISTED + 1)),
    "too many rejections": _planned("agents.0.rejected", _ROW["rejected"][:1] * (wire.MAX_PEERS_LISTED + 1)),
    "too many plans": _planned("agents", [_ROW] * (wire.MAX_AGENTS + 1)),
    "plans not a list": _planned("agents", {"summarize": _ROW}),
    "plan not a map": _planned("agents.0", ["summarize"]),
    "plan without a kind": _mutated(_PLANNED, lambda b: b["agents"][0].pop("kind")),
    "plan kind too long": _planned("agents.0.kind", "k" * 33),
    "plan model not text": _planned("agents.0.model", 7),
    "plan note not text": _planned("agents.1.note", ["runs here"]),
    "plan agent empty": _planned("agents.0.agent", ""),
    "empty coordinator": _planned("coordinator", ""),
    "no coordinator": _mutated(_PLANNED, lambda b: b.pop("coordinator")),
    "empty ensemble": _planned("ensemble", ""),
    "plan time as text": _planned("at", "now"),
    "placed without a node": _mutated(AgentPlacedOn("a", "b" * 20, "pi"), lambda b: b.pop("node_id")),
    "placed on a nameless node": _mutated(AgentPlacedOn("a", "b" * 20, "pi"), _set("node_name", "")),
    "placed node name with an escape": _mutated(AgentPlacedOn("a", "b" * 20, "pi"), _set("node_name", "\x1b]0;x\x07")),
    "failover reason not text": _mutated(AgentPlacedOn("a", "b" * 20, "pi", "x"), _set("replaces", 3)),
    "placed agent not text": _mutated(AgentPlacedOn("a", "b" * 20, "pi"), _set("agent", None)),
    "record nodes not a list": _mutated(AgentEnded("a", _BOUND_RECORD), _set("record.nodes", "pi")),
    "record node not text": _mutated(AgentEnded("a", _BOUND_RECORD), _set("record.nodes", ["pi", 3])),
    "record node with a newline": _mutated(AgentEnded("a", _BOUND_RECORD), _set("record.nodes", ["pi\nnas"])),
    "record with absurdly many nodes": _mutated(AgentEnded("a", _BOUND_RECORD),
                                                _set("record.nodes", [f"n{i}" for i in range(5000)])),
    "negative failovers": _mutated(AgentEnded("a", _BOUND_RECORD), _set("record.failovers", -1)),
    "failovers as a bool": _mutated(AgentEnded("a", _BOUND_RECORD), _set("record.failovers", True)),
    "failovers as text": _mutated(AgentEnded("a", _BOUND_RECORD), _set("record.failovers", "1")),
    "failovers beyond reason": _mutated(AgentEnded("a", _BOUND_RECORD), _set("record.failovers", 2**40)),
}


@pytest.mark.parametrize("data", BAD_PLANS.values(), ids=BAD_PLANS.keys())
def test_malformed_plans_placements_and_records_raise_wire_error(data) -> None:
    with pytest.raises(WireError):
        wire.decode_run_event(data)


def test_the_mutations_of_a_plan_are_decodable_before_they_are_broken() -> None:
    # The malformed bodies above differ from a valid one by one change: without it they decode.
    assert wire.decode_run_event(_planned("ensemble", "digest")) == _PLANNED
    assert wire.decode_run_event(_planned(f"{_REJECTION}.2", Exclusion.MEMORY.value)).agents[0].rejected[0].reason \
        is Exclusion.MEMORY
    assert wire.decode_run_event(_planned("agents", [_ROW] * 3)).agents[2].agent == "summarize"


_PLAN_PATHS = st.sampled_from([
    "agents", "agents.0", "agents.0.agent", "agents.0.kind", "agents.0.model", "agents.0.note", "agents.0.candidates",
    "agents.0.rejected", *(f"{_CANDIDATE}.{i}" for i in range(10)), *(f"{_REJECTION}.{i}" for i in range(4)),
    _CANDIDATE, _REJECTION, "coordinator", "at", "ensemble",
])


def _junk_into_plan(path: str, value) -> None:
    try:
        data = _planned(path, value)
    except (OverflowError, ValueError, TypeError):
        return
    try:
        wire.decode_run_event(data)
    except WireError:
        pass


def test_parse_turns_junk_bytes_into_wire_error() -> None:
    with pytest.raises(WireError):
        wire.parse(mesh_pb2.NodeDescription, b"\xff\xff\xff\xff")
    with pytest.raises(WireError):
        wire.parse(mesh_pb2.NodeDescription, "not bytes")


# ---- fuzzing ---------------------------------------------------------------------------------

MESSAGE_TYPES = sorted({type(wire.to_wire(v)) for v in SAMPLES}, key=lambda t: t.__name__)
ENCODED = [(type(m), m.SerializeToString()) for m in (wire.to_wire(v) for v in SAMPLES)]
FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _only_wire_errors(message_type, data: bytes) -> None:
    try:
        message = wire.parse(message_type, data)
    except WireError:
        return
    try:
        wire.from_wire(message)
    except WireError:
        pass


@FUZZ
@given(st.sampled_from(MESSAGE_TYPES), st.binary(max_size=512))
def test_random_bytes_never_raise_anything_but_wire_error(message_type, data) -> None:
    _only_wire_errors(message_type, data)


@FUZZ
@given(st.sampled_from(ENCODED), st.data())
def test_mutated_messages_never_raise_anything_but_wire_error(sample, data) -> None:
    message_type, encoded = sample
    mutated = bytearray(encoded)
    for _ in range(data.draw(st.integers(1, 8))):
        if not mutated:
            break
        position = data.draw(st.integers(0, len(mutated) - 1))
        choice = data.draw(st.sampled_from(["flip", "cut", "insert"]))
        if choice == "flip":
            mutated[position] = data.draw(st.integers(0, 255))
        elif choice == "cut":
            del mutated[position:position + data.draw(st.integers(1, 16))]
        else:
            mutated[position:position] = data.draw(st.binary(min_size=1, max_size=16))
    _only_wire_errors(message_type, bytes(mutated))


_JUNK = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.floats() | st.text(max_size=20)
    | st.binary(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=30,
)
_KINDS = st.sampled_from(["run_began", "agent_began", "token", "agent_ended", "agent_retrying", "run_finished",
                          "run_planned", "agent_placed"])
_FIELDS = st.sampled_from(["kind", "run_id", "ensemble", "agents", "journal", "at", "resumed", "agent", "node_id",
                           "model", "attempt", "instances", "text", "record", "reused", "error", "result", "status",
                           "attempts", "output", "usage", "started_at", "finished_at", "results", "deliverable",
                           "coordinator", "node_name", "replaces", "nodes", "failovers"])


@FUZZ
@given(st.dictionaries(_FIELDS, _JUNK, max_size=10), _KINDS)
def test_structured_junk_run_events_raise_only_wire_error(body, kind) -> None:
    body["kind"] = kind
    try:
        data = msgpack.packb(body, use_bin_type=True)
    except (OverflowError, ValueError, TypeError):
        return
    try:
        wire.decode_run_event(data)
    except WireError:
        pass


@FUZZ
@given(_PLAN_PATHS, _JUNK)
def test_junk_anywhere_in_a_plan_raises_only_wire_error(path, value) -> None:
    _junk_into_plan(path, value)


@FUZZ
@given(st.binary(max_size=512))
def test_random_run_event_bytes_raise_only_wire_error(data) -> None:
    try:
        wire.decode_run_event(data)
    except WireError:
        pass


_LABELS = st.text(st.characters(codec="utf-8", categories=["L", "N", "P"]), min_size=1, max_size=20)
_IDS = st.text("abcdefghijklmnopqrstuvwxyz234567", min_size=20, max_size=20).map(NodeId)


@settings(max_examples=100, deadline=None)
@given(
    node_id=_IDS,
    name=st.from_regex(r"[A-Za-z0-9._-]{1,63}", fullmatch=True),
    ports=st.lists(st.integers(1, 65535), max_size=16),
    models=st.lists(st.builds(ModelOffer, _LABELS, _LABELS, st.text("0123456789abcdef", min_size=64, max_size=64),
                              st.integers(0, 2**63), st.booleans(),
                              st.none() | st.floats(0, 1e6), st.none() | st.floats(0, 1e6)), max_size=64),
    tags=st.lists(_LABELS, max_size=32),
    peers=st.lists(st.builds(PeerAddress, _IDS, st.integers(1, 65535).map(lambda p: f"host:{p}")), max_size=20),
    ram=st.none() | st.integers(0, 2**64 - 1),
)
def test_any_valid_description_round_trips(node_id, name, ports, models, tags, peers, ram) -> None:
    value = _description(node_id=node_id, name=name, addresses=tuple(f"10.1.2.3:{p}" for p in ports),
                         models=tuple(models), tags=tuple(tags), known_peers=tuple(peers),
                         hardware=Hardware("arm64", 4, ram, None, "none", "Linux"))
    assert wire.from_wire(wire.parse(mesh_pb2.NodeDescription, wire.to_wire(value).SerializeToString())) == value
