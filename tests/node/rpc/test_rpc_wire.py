"""Domain values survive the wire unchanged, and hostile messages only ever raise WireError."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from rpc_helpers import description_of, new_member
from wire_samples import BOUND_RECORD, PLANNED, RECORD

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
from orc.node.trust.revocation import (
    MAX_ENTRIES_PER_MESSAGE,
    RevocationEntry,
    RevocationLog,
    decode_entries,
    encode_entries,
)
from orc.node.rpc import wire
from orc.node.protocol.errors import WireError
from orc.node.rpc.wire.checks import MAX_BACKLOG_MS
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
from orc.scheduler.placement import Estimate, Rejection
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
_BATCHED = _description(models=(
    ModelOffer("smollm2-135m", "llama_cpp", SHA, 145_000_000, True, 1200.0, 61.5, capacity=4,
               batch_decode_tokens_per_s=(61.5, 52.0, 46.5)),
    ModelOffer("qwen3-0.6b", "llama_cpp", SHA, 600_000_000, False, capacity=16,
               unavailable="its runner crashed 3 times in a row (SIGSEGV); restart the node to try again")))
_PAYLOAD = AgentPayload("smollm2-135m", SHA, (ChatMessage("system", "Be brief."), ChatMessage("user", "Hi\n")),
                        GenerationParams(0.2, 64, 7, ("\n\n", "END"), 0.9))
_CSR = make_csr(generate_key(), "joiner")
_ENTRY = RevocationEntry(1, NodeId("c" * 20), 1_700_000_000.5, "laptop stolen", bytes(32), b"signature")

SAMPLES = [
    _description(),
    _MINIMAL,
    _BATCHED,
    Beat(1_700_000_000_000, 9, 2, Load(0, 3, None)),
    Beat(1_700_000_000_000, 9, 2, Load(2, 1, 0.5, backlog_ms=12_345)),
    RevocationsRequest(0),
    RevocationsRequest(17),
    RevocationsReply((_ENTRY,)),
    RevocationsReply(()),
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
    JoinGrant(b"cert", b"ca", (_ENTRY,)),
    JoinGrant(b"cert", b"ca", ()),
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
    AgentEnded("summarize", RECORD, reused=True),
    AgentEnded("skipped", AgentRecord(AgentStatus.SKIPPED, error="branch off")),
    AgentRetrying("summarize", "peer lost", 2),
    AgentEnded("summarize", BOUND_RECORD),
    AgentPlacedOn("summarize", "b" * 20, "pi"),
    AgentPlacedOn("fan[3]", "c" * 20, "laptop", replaces="pi: peer lost"),
    AgentWorking("fan[3]", "c" * 20, 1.25),
    PLANNED,
    RunPlanned("empty", "local", 0.0, ()),
    RunFinished(RunResult(RunId("r1"), "digest", "completed_with_errors", freeze({"text": "done", "items": [1]}),
                          (("split", RECORD), ("other", AgentRecord(AgentStatus.FAILED, 3, None, "boom"))), 1.0, 9.0)),
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
    parts = {"Hardware", "ModelOffer", "Load", "PeerAddress",  # inside NodeDescription
             "ChatMessage", "GenerationParams", "AgentPayload",  # inside ExecuteRequest
             "RevocationEntry",  # inside RevocationsReply and JoinReply
             "Value", "ValueNode", "AgentRecord", "Candidate", "Rejection", "AgentPlan"}  # inside RunEvent
    assert defined - covered - empty - parts == set()


SAME_FIELDS = [
    (NodeDescription, mesh_pb2.NodeDescription), (Hardware, mesh_pb2.Hardware), (ModelOffer, mesh_pb2.ModelOffer),
    (Load, mesh_pb2.Load), (PeerAddress, mesh_pb2.PeerAddress), (Beat, mesh_pb2.Beat),
    (OfferRequest, mesh_pb2.OfferRequest), (OfferReply, mesh_pb2.OfferReply),
    (ExecuteRequest, mesh_pb2.ExecuteRequest), (NodeStatus, control_pb2.NodeStatus),
    (PeerView, control_pb2.PeerView), (RunRequest, control_pb2.RunRequest), (Invitation, control_pb2.InviteReply),
    (AgentPayload, mesh_pb2.AgentPayload), (ChatMessage, mesh_pb2.ChatMessage),
    (GenerationParams, mesh_pb2.GenerationParams), (RevocationEntry, mesh_pb2.RevocationEntry),
    (AgentRecord, control_pb2.AgentRecord), (Estimate, control_pb2.Candidate), (Rejection, control_pb2.Rejection),
    (AgentPlan, control_pb2.AgentPlan), (RunResult, control_pb2.RunEvent.RunFinished),
    *((event, getattr(control_pb2.RunEvent, event.__name__)) for event in (
        RunBegan, RunPlanned, AgentBegan, AgentPlacedOn, AgentWorking, TokenStreamed, AgentEnded, AgentRetrying)),
]


@pytest.mark.parametrize("domain, message", SAME_FIELDS, ids=lambda c: c.__name__)
def test_domain_types_and_messages_have_the_same_fields(domain, message) -> None:
    # A field added on one side only would be silently dropped on the wire. A record's parts (the
    # finished samples and levels of a running vote or cascade) stay with its coordinator's journal.
    coordinator_only = {"parts"} if domain is AgentRecord else set()
    assert set(domain.__dataclass_fields__) - coordinator_only == set(message.DESCRIPTOR.fields_by_name)


def test_a_real_description_with_real_ids_round_trips(mesh) -> None:
    value = description_of(new_member(mesh), mesh)
    assert wire.from_wire(wire.to_wire(value)) == value


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
    "capacity above 16": _bad_description(models=lambda m: setattr(m.models[0], "capacity", 17)),
    "more batch speeds than capacity": _bad_description(models=lambda m: (
        setattr(m.models[0], "capacity", 2), m.models[0].batch_decode_tokens_per_s.extend([9.0, 8.0, 7.0]))),
    "batch speeds of a model of one place": _bad_description(models=lambda m: (
        m.models[0].ClearField("capacity"), m.models[0].batch_decode_tokens_per_s.extend([9.0, 8.0]))),
    "17 batch speeds": _bad_description(models=lambda m: (
        setattr(m.models[0], "capacity", 16), m.models[0].batch_decode_tokens_per_s.extend([1.0] * 17))),
    "nan batch speed": _bad_description(models=lambda m: (
        setattr(m.models[0], "capacity", 2), m.models[0].batch_decode_tokens_per_s.extend([9.0, float("nan")]))),
    "infinite batch speed": _bad_description(models=lambda m: (
        setattr(m.models[0], "capacity", 2), m.models[0].batch_decode_tokens_per_s.extend([float("inf")]))),
    "absurd batch speed": _bad_description(models=lambda m: (
        setattr(m.models[0], "capacity", 2), m.models[0].batch_decode_tokens_per_s.extend([2e9]))),
    "negative batch speed": _bad_description(models=lambda m: (
        setattr(m.models[0], "capacity", 2), m.models[0].batch_decode_tokens_per_s.extend([-1.0]))),
    "long unavailable reason": _bad_description(models=lambda m: setattr(m.models[0], "unavailable", "x" * 513)),
    "escape in unavailable reason": _bad_description(
        models=lambda m: setattr(m.models[0], "unavailable", "crashed\x1b[2J")),
    "no hardware": _bad_description(hardware=lambda m: m.ClearField("hardware")),
    "zero cores": _bad_description(hardware=lambda m: setattr(m.hardware, "cores", 0)),
    "infinite start": _bad_description(started_at=float("inf")),
    "too many known peers": _bad_description(known_peers=lambda m: m.known_peers.extend(
        [mesh_pb2.PeerAddress(node_id=NODE, address="h:1")] * 257)),
    "known peer with bad id": _bad_description(known_peers=lambda m: m.known_peers.extend(
        [mesh_pb2.PeerAddress(node_id="x", address="h:1")])),
    "accepted offer without lease": mesh_pb2.OfferReply(accepted=True),
    "execute without a payload": mesh_pb2.ExecuteRequest(execution_id="e", run_id="r", agent="a"),
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
    "run event with no event": control_pb2.RunEvent(),
    "an empty request": mesh_pb2.DescribeRequest(),
}


def _payload(**changes) -> mesh_pb2.AgentPayload:
    """A valid payload message with `changes` applied (params fields go into params)."""
    message = mesh_pb2.AgentPayload(model_id="m", model_sha256=SHA,
                                    messages=[mesh_pb2.ChatMessage(role="user", content="hi")],
                                    params=mesh_pb2.GenerationParams(temperature=0.5, max_tokens=8))
    for key, value in changes.items():
        target = message.params if key in mesh_pb2.GenerationParams.DESCRIPTOR.fields_by_name else message
        if callable(value):
            value(target)
        else:
            setattr(target, key, value)
    return message


BAD_PAYLOADS = {
    "role root": _payload(messages=lambda m: m.messages.add(role="root", content="x")),
    "role with an escape": _payload(messages=lambda m: m.messages.add(role="user\x1b", content="x")),
    "content with a NUL": _payload(messages=lambda m: m.messages.add(role="user", content="a\x00b")),
    "too many turns": _payload(messages=lambda m: m.messages.extend([mesh_pb2.ChatMessage(role="user")] * 1025)),
    "zero max tokens": _payload(max_tokens=0),
    "absurd max tokens": _payload(max_tokens=(1 << 24) + 1),
    "nan temperature": _payload(temperature=float("nan")),
    "negative temperature": _payload(temperature=-1.0),
    "top_p above one": _payload(top_p=1.5),
    "too many stops": _payload(stop=lambda p: p.stop.extend(["x"] * 17)),
    "empty stop": _payload(stop=lambda p: p.stop.append("")),
    "long stop": _payload(stop=lambda p: p.stop.append("s" * 257)),
    "bad digest": _payload(model_sha256="abc"),
    "empty model id": _payload(model_id=""),
    "no params": _payload(params=lambda m: m.ClearField("params")),
}
@pytest.mark.parametrize("message", BAD_MESSAGES.values(), ids=BAD_MESSAGES.keys())
def test_hostile_messages_raise_wire_error(message) -> None:
    with pytest.raises(WireError):
        wire.from_wire(message)


@pytest.mark.parametrize("payload", BAD_PAYLOADS.values(), ids=BAD_PAYLOADS.keys())
def test_hostile_agent_payloads_raise_wire_error(payload) -> None:
    message = mesh_pb2.ExecuteRequest(execution_id="e", run_id="r", agent="a", payload=payload)
    wire.parse(mesh_pb2.ExecuteRequest, message.SerializeToString())  # well-formed protobuf, bad content
    with pytest.raises(WireError):
        wire.from_wire(message)


def test_a_valid_payload_is_accepted() -> None:
    message = mesh_pb2.ExecuteRequest(execution_id="e", run_id="r", agent="a", payload=_payload())
    assert wire.from_wire(message).payload.params.max_tokens == 8


@pytest.mark.parametrize("thing", ["text", b"bytes", None, 3, object(), {"node_id": NODE}])
def test_things_that_are_not_messages_raise_wire_error(thing) -> None:
    with pytest.raises(WireError):
        wire.from_wire(thing)


def test_an_execute_request_without_a_payload_is_refused() -> None:
    with pytest.raises(WireError, match="no payload"):
        wire.from_wire(mesh_pb2.ExecuteRequest(execution_id="e", run_id="r", agent="a"))


def test_a_seed_beyond_64_bits_cannot_be_sent() -> None:
    payload = AgentPayload("m", SHA, (), GenerationParams(seed=2**63))
    with pytest.raises(WireError, match="cannot encode"):
        wire.to_wire(ExecuteRequest("e", "r", "a", "", 0, payload))


# ---- revocation entries --------------------------------------------------------------------------

def test_a_signed_revocation_log_verifies_after_the_wire(mesh) -> None:
    # The CA signs the canonical msgpack of the fields, not the message: rebuilt on the far
    # side from the message's fields, it must be byte for byte what was signed.
    log = RevocationLog().append(mesh, "c" * 20, "laptop stolen", 1_700_000_000.123456789)
    log = log.append(mesh, "d" * 20, "", 1_700_000_100.0)
    for message in (wire.to_wire(RevocationsReply(log.entries)),
                    wire.to_wire(JoinGrant(b"cert", b"ca", log.entries))):
        again = wire.from_wire(wire.parse(type(message), message.SerializeToString()))
        entries = again.entries if isinstance(again, RevocationsReply) else again.revocation_entries
        assert [e.signed_bytes for e in entries] == [e.signed_bytes for e in log.entries]
        assert RevocationLog.verified(entries, mesh.public_key).revoked_ids == log.revoked_ids


def test_a_revocation_log_written_in_msgpack_still_verifies_after_the_wire(mesh) -> None:
    # Logs on disk stay msgpack (encode_entries): what was signed before stays verifiable.
    log = RevocationLog().append(mesh, "c" * 20, "old entry", 1_600_000_000.5)
    from_disk = decode_entries(encode_entries(log.entries))
    again = wire.from_wire(wire.to_wire(RevocationsReply(from_disk))).entries
    assert RevocationLog.verified(again, mesh.public_key) == log


def _entry_message(**changes) -> mesh_pb2.RevocationEntry:
    message = mesh_pb2.RevocationEntry(seq=1, node_id="c" * 20, revoked_at=1.5, reason="x", prev_hash=bytes(32),
                                       signature=b"sig")
    for key, value in changes.items():
        setattr(message, key, value)
    return message


BAD_ENTRIES = {
    "seq 0": _entry_message(seq=0),
    "seq past int64": _entry_message(seq=2**63),
    "not a node id": _entry_message(node_id="everyone"),
    "infinite time": _entry_message(revoked_at=float("inf")),
    "long reason": _entry_message(reason="r" * 201),
    "short hash": _entry_message(prev_hash=b"\x00" * 31),
    "no signature": _entry_message(signature=b""),
    "huge signature": _entry_message(signature=b"s" * 81),
}


@pytest.mark.parametrize("entry", BAD_ENTRIES.values(), ids=BAD_ENTRIES.keys())
def test_malformed_revocation_entries_raise_wire_error(entry) -> None:
    with pytest.raises(WireError, match="revocation"):
        wire.from_wire(mesh_pb2.RevocationsReply(entries=[entry]))
    with pytest.raises(WireError, match="revocation"):
        wire.from_wire(mesh_pb2.JoinReply(certificate_pem=b"c", ca_certificate_pem=b"a", revocation_log=[entry]))


def test_too_many_revocation_entries_in_one_message_are_refused() -> None:
    entries = [_entry_message()] * (MAX_ENTRIES_PER_MESSAGE + 1)
    with pytest.raises(WireError, match="more than"):
        wire.from_wire(mesh_pb2.RevocationsReply(entries=entries))
    assert len(wire.from_wire(mesh_pb2.RevocationsReply(entries=entries[1:])).entries) == MAX_ENTRIES_PER_MESSAGE


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
    for claimed in (MAX_BACKLOG_MS + 1, 2**64 - 1):
        beat = mesh_pb2.Beat(sent_at_ms=1, load=mesh_pb2.Load(backlog_ms=claimed))
        assert wire.from_wire(beat).load.backlog_ms == MAX_BACKLOG_MS
        described = _bad_description(load=lambda m, c=claimed: setattr(m.load, "backlog_ms", c))
        assert wire.from_wire(described).load.backlog_ms == MAX_BACKLOG_MS
    at_cap = mesh_pb2.Beat(load=mesh_pb2.Load(backlog_ms=MAX_BACKLOG_MS))
    assert wire.from_wire(at_cap).load.backlog_ms == MAX_BACKLOG_MS

def test_a_model_offer_from_a_node_without_capacities_runs_one_at_a_time() -> None:
    message = wire.to_wire(_description())
    message.models[0].ClearField("capacity")  # what a node from before the field sends
    offer = wire.from_wire(message).models[0]
    assert (offer.capacity, offer.batch_decode_tokens_per_s, offer.unavailable) == (1, (), "")


def test_a_model_offer_carries_capacity_batch_speeds_and_why_it_is_unavailable() -> None:
    busy, broken = wire.from_wire(wire.parse(mesh_pb2.NodeDescription,
                                             wire.to_wire(_BATCHED).SerializeToString())).models
    assert (busy.capacity, busy.batch_decode_tokens_per_s) == (4, (61.5, 52.0, 46.5))
    assert broken.unavailable.startswith("its runner crashed") and broken.capacity == 16


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



@FUZZ
@given(st.binary(max_size=512))
def test_random_bytes_as_revocation_entries_raise_only_wire_error(data) -> None:
    _only_wire_errors(mesh_pb2.RevocationsReply, data)


_LABELS = st.text(st.characters(codec="utf-8", categories=["L", "N", "P"]), min_size=1, max_size=20)
_IDS = st.text("abcdefghijklmnopqrstuvwxyz234567", min_size=20, max_size=20).map(NodeId)


@settings(max_examples=100, deadline=None)
@given(
    node_id=_IDS,
    name=st.from_regex(r"[A-Za-z0-9._-]{1,63}", fullmatch=True),
    ports=st.lists(st.integers(1, 65535), max_size=16),
    models=st.lists(st.integers(1, 16).flatmap(lambda capacity: st.builds(
        ModelOffer, _LABELS, _LABELS, st.text("0123456789abcdef", min_size=64, max_size=64),
        st.integers(0, 2**63), st.booleans(), st.none() | st.floats(0, 1e6), st.none() | st.floats(0, 1e6),
        st.just(capacity), st.lists(st.floats(0, 1e6), max_size=capacity).map(tuple),
        st.just("") | _LABELS)), max_size=64),
    tags=st.lists(_LABELS, max_size=32),
    peers=st.lists(st.builds(PeerAddress, _IDS, st.integers(1, 65535).map(lambda p: f"host:{p}")), max_size=20),
    ram=st.none() | st.integers(0, 2**64 - 1),
)
def test_any_valid_description_round_trips(node_id, name, ports, models, tags, peers, ram) -> None:
    value = _description(node_id=node_id, name=name, addresses=tuple(f"10.1.2.3:{p}" for p in ports),
                         models=tuple(models), tags=tuple(tags), known_peers=tuple(peers),
                         hardware=Hardware("arm64", 4, ram, None, "none", "Linux"))
    assert wire.from_wire(wire.parse(mesh_pb2.NodeDescription, wire.to_wire(value).SerializeToString())) == value
