"""The one place that touches generated protobuf messages: domain values to and from orc.v1.

`to_wire(value)` turns a frozen domain value (orc.node.protocol.description, orc.node.protocol.messages,
orc.node.protocol.events) into its message; `from_wire(message)` turns a message back, checking
everything: a message comes from another machine or process and is hostile until proven
otherwise. Whatever is wrong with it (wrong type, absurd length, an invalid node id, too many
entries, a control character in a name that would end up on someone's terminal), `from_wire`
raises `WireError` and nothing else. `encode_run_event` / `decode_run_event` do the same for
run progress events, which travel as msgpack bytes inside `RunEvent`.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, NoReturn, TypeVar, Union, overload

import msgpack
from google.protobuf.message import DecodeError, Message
from typing_extensions import assert_never

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
    RunProgress,
    RunResult,
    TokenStreamed,
)
from orc.node.models.hardware import Hardware
from orc.node.protocol.ids import MeshId, NodeId, is_mesh_id, is_node_id
from orc.node.protocol.errors import WireError
from orc.scheduler.placement import Estimate, Exclusion, Rejection
from orc.node.protocol.messages import (
    AgentPayload,
    Beat,
    CancelReply,
    CancelRequest,
    ExecuteEvent,
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
from orc.proto.v1 import control_pb2 as cpb
from orc.proto.v1 import mesh_pb2 as pb
from orc.scheduler.run import AgentRecord, AgentStatus, RunId, Usage
from orc.scheduler.values import freeze, thaw

# ---- caps: every repeated field and string a peer sends is bounded --------------------------
# Each stops a peer from making this node hold, parse or print an unbounded amount of data per
# message (gRPC already caps a whole message at 4 MiB; these keep single tables small).
MAX_MODELS = 64  # models offered in one description (a device holds a handful)
MAX_KNOWN_PEERS = 256  # peer-exchange entries per description: stops address-book flooding
MAX_ADDRESSES = 16  # listen addresses per node (interfaces x families)
MAX_TAGS = 32
MAX_LABEL = 128  # ids, names, tags, runtimes: short, printable, one line
MAX_ADDRESS = 262  # "[" + 253-character host + "]:" + 5-digit port
MAX_REASON = 4096  # human-readable reasons and error messages
MAX_PATH = 4096  # file system paths (PATH_MAX on Linux)
MAX_PEM = 16 * 1024  # certificates and requests are under 1 KiB; same bound as orc.node.trust
MAX_SECRET = 64  # a join secret is 26 characters
MAX_MESSAGES = 1024  # conversation turns in one agent payload
MAX_STOP = 16  # stop strings per generation
MAX_STOP_CHARS = 256
MAX_PEERS_LISTED = 4096  # peers in one `orc peers` answer
MAX_AGENTS = 4096  # agents in one run event (ensembles are validated far below that)
MAX_VALUE_DEPTH = 64  # nesting of agent outputs: stops recursion bombs in msgpack values
MAX_RUN_EVENT_BYTES = 64 << 20  # one RunFinished carries every output of a run
MAX_PAYLOAD_BYTES = 4 << 20
MAX_THREADS = 1024  # --threads
# Nodes one agent was bound to (a fan-out spreads over many; each failover adds one): as many as
# a mesh may list, so a real record always decodes while a forged one stays bounded.
MAX_NODES_PER_AGENT = 4096
MAX_RUN_ID = 64  # run ids are 16 hex characters; a prefix is enough
MAX_BACKLOG_MS = 7 * 24 * 3600 * 1000

_SHA256 = re.compile(r"[0-9a-f]{64}")
_NODE_NAME = re.compile(r"[A-Za-z0-9._-]{1,63}")  # orc.node.trust.certificates.check_node_name
_ROLES = frozenset({"system", "user", "assistant"})

Domain = Union[
    NodeDescription, Beat, RevocationsRequest, RevocationsReply, RenewRequest, RenewReply,
    OfferRequest, OfferReply, ExecuteRequest, ExecutionStarted, ExecutionTokens, ExecutionResult,
    ExecutionFailed, CancelRequest, CancelReply, JoinRequest, JoinGrant, NodeStatus, PeerView,
    PeersReply, InviteRequest, Invitation, RevokeRequest, RevokeReply, RunRequest,
    RunBegan, RunPlanned, AgentBegan, AgentPlacedOn, AgentWorking, TokenStreamed, AgentEnded, AgentRetrying,
    RunFinished,
]

_T = TypeVar("_T")


def _fail(what: str, problem: str) -> NoReturn:
    raise WireError(f"malformed {what}: {problem}")


# ---- field checks -----------------------------------------------------------------------------

def _text(value: object, what: str, limit: int, *, empty: bool = True) -> str:
    """Free text: a str of at most `limit` characters, without NUL."""
    if not isinstance(value, str):
        _fail(what, f"expected text, got {type(value).__name__}")
    if len(value) > limit:
        _fail(what, f"{len(value)} characters, more than {limit}")
    if not empty and not value:
        _fail(what, "empty")
    if "\x00" in value:
        _fail(what, "contains a NUL character")
    return value


def _label(value: object, what: str, limit: int = MAX_LABEL, *, empty: bool = False) -> str:
    """A one-line printable name (shown on terminals: no control or formatting characters)."""
    text = _text(value, what, limit, empty=empty)
    if not text.isprintable():
        _fail(what, f"{ascii(text[:40])} contains control or formatting characters")
    return text


def _node_id(value: object, what: str) -> NodeId:
    if not isinstance(value, str) or not is_node_id(value):
        _fail(what, f"{ascii(str(value)[:40])} is not a node id (20 base32 characters)")
    return NodeId(value)


def _mesh_id(value: object, what: str) -> MeshId:
    if not isinstance(value, str) or not is_mesh_id(value):
        _fail(what, f"{ascii(str(value)[:40])} is not a mesh id (16 base32 characters)")
    return MeshId(value)


def _sha256(value: object, what: str) -> str:
    if not isinstance(value, str) or _SHA256.fullmatch(value) is None:
        _fail(what, f"{ascii(str(value)[:70])} is not a SHA-256 digest (64 lowercase hex digits)")
    return value


def _node_name(value: object, what: str) -> str:
    if not isinstance(value, str) or _NODE_NAME.fullmatch(value) is None:
        _fail(what, f"{ascii(str(value)[:70])} is not a node name (1-63 of letters, digits, '.', '_', '-')")
    return value


def _address(value: object, what: str, *, empty: bool = False) -> str:
    """"host:port" or "[v6]:port", port 1-65535."""
    text = _label(value, what, MAX_ADDRESS, empty=empty)
    if not text:
        return text
    if text.startswith("["):
        host, sep, port = text[1:].partition("]:")
        valid = bool(sep) and "]" not in host and "[" not in host
    else:
        host, sep, port = text.rpartition(":")
        valid = bool(sep) and ":" not in host
    if not (valid and host and " " not in host and port.isascii() and port.isdigit()
            and len(port) <= 5 and 1 <= int(port) <= 65535):
        _fail(what, f"{ascii(text[:70])} is not a host:port address")
    return text


def _number(value: object, what: str, *, minimum: float = 0.0, maximum: float = math.inf) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        _fail(what, f"expected a number, got {type(value).__name__}")
    number = float(value)
    if not math.isfinite(number) or not minimum <= number <= maximum:
        _fail(what, f"{number!r} is out of range")
    return number


def _integer(value: object, what: str, *, minimum: int = 0, maximum: int = 2**64 - 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        _fail(what, f"expected an integer, got {type(value).__name__}")
    if not minimum <= value <= maximum:
        _fail(what, f"{value} is out of range")
    return value


def _pem(value: object, what: str) -> bytes:
    if not isinstance(value, bytes):
        _fail(what, f"expected bytes, got {type(value).__name__}")
    if not value:
        _fail(what, "empty")
    if len(value) > MAX_PEM:
        _fail(what, f"{len(value)} bytes, more than {MAX_PEM}")
    return value


def _capped(items: Any, what: str, limit: int) -> Any:
    if len(items) > limit:
        _fail(what, f"{len(items)} entries, more than {limit}")
    return items


def _optional(message: Message, field: str, read: Callable[[Any], _T]) -> _T | None:
    return read(getattr(message, field)) if message.HasField(field) else None


# ---- node descriptions --------------------------------------------------------------------------

def _hardware_to_wire(hardware: Hardware) -> pb.Hardware:
    message = pb.Hardware(arch=hardware.arch, cores=hardware.cores, accelerator=hardware.accelerator,
                          system=hardware.system)
    if hardware.ram_total_bytes is not None:
        message.ram_total_bytes = hardware.ram_total_bytes
    if hardware.ram_available_bytes is not None:
        message.ram_available_bytes = hardware.ram_available_bytes
    return message


def _hardware_from_wire(message: pb.Hardware) -> Hardware:
    return Hardware(
        arch=_label(message.arch, "hardware arch"),
        cores=_integer(message.cores, "hardware cores", minimum=1, maximum=65536),
        ram_total_bytes=_optional(message, "ram_total_bytes", int),
        ram_available_bytes=_optional(message, "ram_available_bytes", int),
        accelerator=_label(message.accelerator, "hardware accelerator"),
        system=_label(message.system, "hardware system"),
    )


def _model_to_wire(model: ModelOffer) -> pb.ModelOffer:
    message = pb.ModelOffer(id=model.id, runtime=model.runtime, sha256=model.sha256,
                            size_bytes=model.size_bytes, loaded=model.loaded)
    if model.prefill_tokens_per_s is not None:
        message.prefill_tokens_per_s = model.prefill_tokens_per_s
    if model.decode_tokens_per_s is not None:
        message.decode_tokens_per_s = model.decode_tokens_per_s
    return message


def _speed(what: str) -> Callable[[float], float]:
    return lambda value: _number(value, what, maximum=1e9)


def _model_from_wire(message: pb.ModelOffer) -> ModelOffer:
    return ModelOffer(
        id=_label(message.id, "model id"),
        runtime=_label(message.runtime, "model runtime"),
        sha256=_sha256(message.sha256, "model sha256"),
        size_bytes=message.size_bytes,
        loaded=message.loaded,
        prefill_tokens_per_s=_optional(message, "prefill_tokens_per_s", _speed("model prefill speed")),
        decode_tokens_per_s=_optional(message, "decode_tokens_per_s", _speed("model decode speed")),
    )


def _load_to_wire(load: Load) -> pb.Load:
    message = pb.Load(active_generations=load.active_generations, queued=load.queued, backlog_ms=load.backlog_ms)
    if load.cpu_load_1m is not None:
        message.cpu_load_1m = load.cpu_load_1m
    return message


def _load_from_wire(message: pb.Load) -> Load:
    return Load(
        active_generations=message.active_generations,
        queued=message.queued,
        cpu_load_1m=_optional(message, "cpu_load_1m", lambda v: _number(v, "cpu load", maximum=1e6)),
        # A week: a larger backlog is a lie or a broken clock, and would only push work away.
        backlog_ms=min(message.backlog_ms, MAX_BACKLOG_MS),
    )


def _description_to_wire(description: NodeDescription) -> pb.NodeDescription:
    return pb.NodeDescription(
        protocol_version=description.protocol_version,
        node_id=description.node_id,
        name=description.name,
        mesh_id=description.mesh_id,
        addresses=list(description.addresses),
        hardware=_hardware_to_wire(description.hardware),
        models=[_model_to_wire(m) for m in description.models],
        load=_load_to_wire(description.load),
        revocation_seq=description.revocation_seq,
        version=description.version,
        started_at=description.started_at,
        tags=list(description.tags),
        known_peers=[pb.PeerAddress(node_id=p.node_id, address=p.address) for p in description.known_peers],
        certificate_authority=description.certificate_authority,
    )


def _description_from_wire(message: pb.NodeDescription) -> NodeDescription:
    if not message.HasField("hardware"):
        _fail("node description", "no hardware")
    return NodeDescription(
        protocol_version=message.protocol_version,
        node_id=_node_id(message.node_id, "node description node_id"),
        name=_node_name(message.name, "node description name"),
        mesh_id=_mesh_id(message.mesh_id, "node description mesh_id"),
        addresses=tuple(_address(a, "node address")
                        for a in _capped(message.addresses, "node addresses", MAX_ADDRESSES)),
        hardware=_hardware_from_wire(message.hardware),
        models=tuple(_model_from_wire(m) for m in _capped(message.models, "models", MAX_MODELS)),
        load=_load_from_wire(message.load),
        revocation_seq=message.revocation_seq,
        version=message.version,
        started_at=_number(message.started_at, "started_at"),
        tags=tuple(_label(t, "tag") for t in _capped(message.tags, "tags", MAX_TAGS)),
        known_peers=tuple(
            PeerAddress(_node_id(p.node_id, "known peer node_id"), _address(p.address, "known peer address"))
            for p in _capped(message.known_peers, "known peers", MAX_KNOWN_PEERS)),
        certificate_authority=message.certificate_authority,
    )


# ---- agent payloads (msgpack inside ExecuteRequest) ----------------------------------------------

def encode_payload(payload: AgentPayload) -> bytes:
    params = payload.params
    body = {
        "model_id": payload.model_id,
        "model_sha256": payload.model_sha256,
        "messages": [{"role": m.role, "content": m.content} for m in payload.messages],
        "params": {"temperature": params.temperature, "max_tokens": params.max_tokens, "seed": params.seed,
                   "top_p": params.top_p, "stop": list(params.stop)},
    }
    return msgpack.packb(body, use_bin_type=True)


def _unpack(data: object, what: str, limit: int) -> object:
    if not isinstance(data, (bytes, bytearray, memoryview)):
        _fail(what, f"expected bytes, got {type(data).__name__}")
    if len(data) > limit:
        _fail(what, f"{len(data)} bytes, more than {limit}")
    try:
        # ext types (timestamps, custom) never belong here: refuse them up front.
        return msgpack.unpackb(bytes(data), raw=False, use_list=True, strict_map_key=True, max_ext_len=0)
    except Exception as error:  # noqa: BLE001 - msgpack raises several types for junk input
        _fail(what, f"not valid msgpack ({type(error).__name__})")


def _map(value: object, what: str) -> Mapping[str, object]:
    if not isinstance(value, dict):
        _fail(what, f"expected a map, got {type(value).__name__}")
    return value


def _list(value: object, what: str, limit: int) -> list:
    if not isinstance(value, list):
        _fail(what, f"expected a list, got {type(value).__name__}")
    return _capped(value, what, limit)


def decode_payload(data: object) -> AgentPayload:
    body = _map(_unpack(data, "agent payload", MAX_PAYLOAD_BYTES), "agent payload")
    messages = []
    for item in _list(body.get("messages"), "agent payload messages", MAX_MESSAGES):
        turn = _map(item, "agent payload message")
        role = _label(turn.get("role"), "message role")
        if role not in _ROLES:
            _fail("message role", f"{role!r} is not one of {sorted(_ROLES)}")
        messages.append(ChatMessage(role, _text(turn.get("content"), "message content", MAX_PAYLOAD_BYTES)))
    raw = _map(body.get("params"), "agent payload params")
    seed, top_p = raw.get("seed"), raw.get("top_p")
    params = GenerationParams(
        temperature=_number(raw.get("temperature"), "temperature", maximum=100.0),
        max_tokens=_integer(raw.get("max_tokens"), "max_tokens", minimum=1, maximum=1 << 24),
        seed=None if seed is None else _integer(seed, "seed", minimum=-(2**63), maximum=2**64 - 1),
        stop=tuple(_text(s, "stop string", MAX_STOP_CHARS, empty=False)
                   for s in _list(raw.get("stop", []), "stop strings", MAX_STOP)),
        top_p=None if top_p is None else _number(top_p, "top_p", maximum=1.0),
    )
    return AgentPayload(
        model_id=_label(body.get("model_id"), "payload model_id"),
        model_sha256=_sha256(body.get("model_sha256"), "payload model_sha256"),
        messages=tuple(messages),
        params=params,
    )


# ---- execution events ------------------------------------------------------------------------

def _execute_event_to_wire(event: ExecuteEvent) -> pb.ExecuteEvent:
    match event:
        case ExecutionStarted(node_id=node_id, model=model):
            return pb.ExecuteEvent(started=pb.ExecuteEvent.Started(node_id=node_id, model=model))
        case ExecutionTokens(text=text):
            return pb.ExecuteEvent(tokens=pb.ExecuteEvent.TokenChunk(text=text))
        case ExecutionResult(output=output, usage=usage, finish_reason=finish_reason):
            return pb.ExecuteEvent(result=pb.ExecuteEvent.Result(
                output=output, finish_reason=finish_reason,
                usage=pb.ExecuteEvent.Usage(prompt_tokens=usage.prompt_tokens,
                                            completion_tokens=usage.completion_tokens)))
        case ExecutionFailed(code=code, message=text, retryable=retryable):
            return pb.ExecuteEvent(error=pb.ExecuteEvent.Error(code=code, message=text, retryable=retryable))
        case _:
            assert_never(event)


def _execute_event_from_wire(message: pb.ExecuteEvent) -> ExecuteEvent:
    kind = message.WhichOneof("event")
    if kind == "started":
        return ExecutionStarted(_node_id(message.started.node_id, "started node_id"),
                                _label(message.started.model, "started model"))
    if kind == "tokens":
        return ExecutionTokens(message.tokens.text)
    if kind == "result":
        result = message.result
        return ExecutionResult(result.output, Usage(result.usage.prompt_tokens, result.usage.completion_tokens),
                               _label(result.finish_reason, "finish reason", 32, empty=True))
    if kind == "error":
        error = message.error
        return ExecutionFailed(_label(error.code, "error code", 64), _text(error.message, "error message", MAX_REASON),
                               error.retryable)
    _fail("execute event", "no event set")


# ---- run events (msgpack inside RunEvent) -----------------------------------------------------

def _record_to_body(record: AgentRecord) -> dict:
    return {
        "status": record.status.value,
        "attempts": record.attempts,
        "output": thaw(record.output),
        "error": record.error,
        "node_id": record.node_id,
        "model": record.model,
        "started_at": record.started_at,
        "finished_at": record.finished_at,
        "usage": [record.usage.prompt_tokens, record.usage.completion_tokens],
        "nodes": list(record.nodes),
        "failovers": record.failovers,
    }


def encode_run_event(event: RunProgress) -> bytes:
    """A run progress event as msgpack bytes (a map tagged by "kind")."""
    match event:
        case RunBegan():
            body = {"kind": "run_began", "run_id": event.run_id, "ensemble": event.ensemble,
                    "agents": list(event.agents), "at": event.at, "resumed": event.resumed,
                    "journal": None if event.journal is None else str(event.journal)}
        case AgentBegan():
            body = {"kind": "agent_began", "agent": event.agent, "node_id": event.node_id, "model": event.model,
                    "attempt": event.attempt, "instances": event.instances}
        case TokenStreamed():
            body = {"kind": "token", "agent": event.agent, "text": event.text}
        case AgentPlacedOn():
            body = {"kind": "agent_placed", "agent": event.agent, "node_id": event.node_id,
                    "node_name": event.node_name, "replaces": event.replaces}
        case AgentWorking():
            body = {"kind": "agent_working", "agent": event.agent, "node_id": event.node_id,
                    "waited_s": event.waited_s}
        case RunPlanned():
            body = {"kind": "run_planned", "ensemble": event.ensemble, "coordinator": event.coordinator,
                    "at": event.at, "agents": [_plan_to_body(plan) for plan in event.agents]}
        case AgentEnded():
            body = {"kind": "agent_ended", "agent": event.agent, "record": _record_to_body(event.record),
                    "reused": event.reused}
        case AgentRetrying():
            body = {"kind": "agent_retrying", "agent": event.agent, "error": event.error, "attempt": event.attempt}
        case RunFinished(result=result):
            body = {"kind": "run_finished", "result": {
                "run_id": result.run_id, "ensemble": result.ensemble, "status": result.status,
                "deliverable": thaw(result.deliverable),
                "results": [[name, _record_to_body(record)] for name, record in result.results],
                "started_at": result.started_at, "finished_at": result.finished_at}}
        case _:
            assert_never(event)
    try:
        return msgpack.packb(body, use_bin_type=True)
    except (TypeError, ValueError, OverflowError) as error:
        raise WireError(f"cannot encode {type(event).__name__}: {error}") from None


def _value(value: object, what: str, depth: int = 0) -> object:
    """A JSON-like value (agent output), checked and frozen."""
    if depth > MAX_VALUE_DEPTH:
        _fail(what, f"nested deeper than {MAX_VALUE_DEPTH} levels")
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value
    if isinstance(value, list):
        return tuple(_value(v, what, depth + 1) for v in value)
    if isinstance(value, dict):
        if not all(isinstance(k, str) for k in value):
            _fail(what, "a map key is not text")
        return freeze({k: _value(v, what, depth + 1) for k, v in value.items()})
    _fail(what, f"{type(value).__name__} is not a JSON-like value")


def _opt(value: object, read: Callable[[object], _T]) -> _T | None:
    return None if value is None else read(value)


def _time(what: str) -> Callable[[object], float]:
    return lambda value: _number(value, what, minimum=-1e12, maximum=1e12)


def _record_from_body(value: object, agent: str) -> AgentRecord:
    body = _map(value, f"record of {agent}")
    try:
        status = AgentStatus(body.get("status"))
    except ValueError:
        _fail(f"record of {agent}", f"unknown status {ascii(str(body.get('status'))[:40])}")
    usage = _list(body.get("usage"), "usage", 2)
    if len(usage) != 2:
        _fail("usage", "expected [prompt_tokens, completion_tokens]")
    return AgentRecord(
        status=status,
        attempts=_integer(body.get("attempts"), "attempts", maximum=1 << 20),
        output=_value(body.get("output"), f"output of {agent}"),
        error=_opt(body.get("error"), lambda v: _text(v, "agent error", MAX_PAYLOAD_BYTES)),
        node_id=_opt(body.get("node_id"), lambda v: _label(v, "agent node_id")),
        model=_opt(body.get("model"), lambda v: _label(v, "agent model")),
        started_at=_opt(body.get("started_at"), _time("started_at")),
        finished_at=_opt(body.get("finished_at"), _time("finished_at")),
        usage=Usage(_integer(usage[0], "prompt_tokens"), _integer(usage[1], "completion_tokens")),
        nodes=tuple(_label(n, "agent node") for n in _list(body.get("nodes", []), "agent nodes", MAX_NODES_PER_AGENT)),
        failovers=_integer(body.get("failovers", 0), "failovers", maximum=1 << 20),
    )


def _plan_to_body(plan: AgentPlan) -> dict:
    return {"agent": plan.agent, "kind": plan.kind, "model": plan.model, "note": plan.note,
            "candidates": [[c.node_id, c.name, c.start_s, c.load_s, c.prefill_s, c.decode_s, c.network_s, c.warm,
                            c.preferred, c.runtime] for c in plan.candidates],
            "rejected": [[r.node_id, r.name, r.reason.value, r.detail] for r in plan.rejected]}


def _plan_from_body(value: object) -> AgentPlan:
    body = _map(value, "agent plan")
    agent = _agent_name(body.get("agent"))
    seconds = _time("estimate")
    duration = lambda v: _number(v, "estimate", minimum=0.0, maximum=1e9)  # noqa: E731
    candidates = []
    for item in _list(body.get("candidates"), "candidates", MAX_PEERS_LISTED):
        row = _list(item, "candidate", 10)
        if len(row) != 10:
            _fail("candidate", "expected 10 fields")
        candidates.append(Estimate(
            node_id=_label(row[0], "candidate node"), name=_label(row[1], "candidate name"), start_s=seconds(row[2]),
            load_s=duration(row[3]), prefill_s=duration(row[4]), decode_s=duration(row[5]), network_s=duration(row[6]),
            warm=_bool(row[7], "warm"), preferred=_bool(row[8], "preferred"), runtime=_label(row[9], "runtime")))
    rejected = []
    for item in _list(body.get("rejected"), "rejected", MAX_PEERS_LISTED):
        row = _list(item, "rejection", 4)
        if len(row) != 4:
            _fail("rejection", "expected 4 fields")
        try:
            reason = Exclusion(row[2])
        except ValueError:
            _fail("rejection", f"unknown reason {ascii(str(row[2])[:40])}")
        rejected.append(Rejection(_label(row[0], "rejected node"), _label(row[1], "rejected name"), reason,
                                  _text(row[3], "rejection detail", MAX_REASON)))
    return AgentPlan(agent, _label(body.get("kind"), "agent kind", 32),
                     _opt(body.get("model"), lambda v: _label(v, "model")), tuple(candidates), tuple(rejected),
                     _opt(body.get("note"), lambda v: _text(v, "plan note", MAX_REASON)))


def _agent_name(value: object) -> str:
    return _label(value, "agent name", 1024)


def decode_run_event(data: object) -> RunProgress:
    """The event `encode_run_event` made; raise WireError for anything else."""
    body = _map(_unpack(data, "run event", MAX_RUN_EVENT_BYTES), "run event")
    kind = body.get("kind")
    if kind == "run_began":
        return RunBegan(
            run_id=RunId(_label(body.get("run_id"), "run_id")),
            ensemble=_text(body.get("ensemble"), "ensemble", MAX_PATH, empty=False),
            agents=tuple(_agent_name(a) for a in _list(body.get("agents"), "agents", MAX_AGENTS)),
            journal=_opt(body.get("journal"), lambda v: Path(_text(v, "journal path", MAX_PATH, empty=False))),
            at=_time("at")(body.get("at")),
            resumed=_bool(body.get("resumed"), "resumed"),
        )
    if kind == "agent_began":
        return AgentBegan(
            agent=_agent_name(body.get("agent")),
            node_id=_opt(body.get("node_id"), lambda v: _label(v, "node_id")),
            model=_opt(body.get("model"), lambda v: _label(v, "model")),
            attempt=_integer(body.get("attempt"), "attempt", maximum=1 << 20),
            instances=_opt(body.get("instances"), lambda v: _integer(v, "instances", maximum=1 << 20)),
        )
    if kind == "agent_placed":
        return AgentPlacedOn(_agent_name(body.get("agent")), _label(body.get("node_id"), "node_id"),
                             _label(body.get("node_name"), "node name"),
                             _opt(body.get("replaces"), lambda v: _text(v, "failover reason", MAX_REASON)))
    if kind == "agent_working":
        return AgentWorking(_agent_name(body.get("agent")), _label(body.get("node_id"), "node_id"),
                            _number(body.get("waited_s"), "waited_s", maximum=1e9))
    if kind == "run_planned":
        return RunPlanned(_text(body.get("ensemble"), "ensemble", MAX_PATH, empty=False),
                          _label(body.get("coordinator"), "coordinator"), _time("at")(body.get("at")),
                          tuple(_plan_from_body(p) for p in _list(body.get("agents"), "plans", MAX_AGENTS)))
    if kind == "token":
        return TokenStreamed(_agent_name(body.get("agent")), _text(body.get("text"), "token text", MAX_PAYLOAD_BYTES))
    if kind == "agent_ended":
        agent = _agent_name(body.get("agent"))
        return AgentEnded(agent, _record_from_body(body.get("record"), agent), _bool(body.get("reused"), "reused"))
    if kind == "agent_retrying":
        return AgentRetrying(_agent_name(body.get("agent")), _text(body.get("error"), "retry error", MAX_REASON),
                             _integer(body.get("attempt"), "attempt", maximum=1 << 20))
    if kind == "run_finished":
        result = _map(body.get("result"), "run result")
        results = []
        for pair in _list(result.get("results"), "run results", MAX_AGENTS):
            if not isinstance(pair, list) or len(pair) != 2:
                _fail("run results", "expected [agent, record] pairs")
            name = _agent_name(pair[0])
            results.append((name, _record_from_body(pair[1], name)))
        return RunFinished(RunResult(
            run_id=RunId(_label(result.get("run_id"), "run_id")),
            ensemble=_text(result.get("ensemble"), "ensemble", MAX_PATH, empty=False),
            status=_label(result.get("status"), "run status", 32),
            deliverable=_value(result.get("deliverable"), "deliverable"),
            results=tuple(results),
            started_at=_time("started_at")(result.get("started_at")),
            finished_at=_time("finished_at")(result.get("finished_at")),
        ))
    _fail("run event", f"unknown kind {ascii(str(kind)[:40])}")


def _bool(value: object, what: str) -> bool:
    if not isinstance(value, bool):
        _fail(what, f"expected true or false, got {type(value).__name__}")
    return value


# ---- control socket ---------------------------------------------------------------------------

def _peer_view_to_wire(peer: PeerView) -> cpb.PeerView:
    message = cpb.PeerView(node_id=peer.node_id or "", state=peer.state, address=peer.address,
                           verified=peer.verified, missed_beats=peer.missed_beats)
    if peer.description is not None:
        message.description.CopyFrom(_description_to_wire(peer.description))
    if peer.last_seen is not None:
        message.last_seen = peer.last_seen
    return message


def _peer_view_from_wire(message: cpb.PeerView) -> PeerView:
    return PeerView(
        description=_optional(message, "description", _description_from_wire),
        state=_label(message.state, "peer state", 32),
        address=_address(message.address, "peer address", empty=True),
        last_seen=_optional(message, "last_seen", _time("last_seen")),
        verified=message.verified,
        missed_beats=message.missed_beats,
        node_id=_node_id(message.node_id, "peer node_id") if message.node_id else None,
    )


def _run_request_to_wire(request: RunRequest) -> cpb.RunRequest:
    message = cpb.RunRequest(reference=request.reference, cwd=request.cwd, json=request.json,
                             explain=request.explain, local=request.local)
    if request.input is not None:
        message.input = request.input
    if request.seed is not None:
        message.seed = request.seed
    if request.threads is not None:
        message.threads = request.threads
    if request.resume is not None:
        message.resume = request.resume
    message.plan = request.plan
    return message


def _run_request_from_wire(message: cpb.RunRequest) -> RunRequest:
    return RunRequest(
        reference=_text(message.reference, "ensemble reference", MAX_PATH, empty=False),
        input=message.input if message.HasField("input") else None,
        cwd=_text(message.cwd, "working folder", MAX_PATH),
        json=message.json,
        explain=message.explain,
        local=message.local,
        seed=message.seed if message.HasField("seed") else None,
        threads=_optional(message, "threads",
                          lambda v: _integer(v, "threads", minimum=1, maximum=MAX_THREADS)),
        resume=_optional(message, "resume", lambda v: _text(v, "run id", MAX_RUN_ID, empty=False)),
        plan=message.plan,
    )


# ---- the two entry points ---------------------------------------------------------------------

def to_wire(value: Domain) -> Message:
    """The orc.v1 message for a domain value."""
    match value:
        case NodeDescription():
            return _description_to_wire(value)
        case Beat():
            return pb.Beat(sent_at_ms=value.sent_at_ms, description_version=value.description_version,
                           revocation_seq=value.revocation_seq, load=_load_to_wire(value.load))
        case RevocationsRequest():
            return pb.RevocationsRequest(after_seq=value.after_seq)
        case RevocationsReply():
            return pb.RevocationsReply(entries=value.entries)
        case RenewRequest():
            return pb.RenewRequest(csr_pem=value.csr_pem)
        case RenewReply():
            return pb.RenewReply(certificate_pem=value.certificate_pem)
        case OfferRequest():
            return pb.OfferRequest(run_id=value.run_id, agent=value.agent, model_id=value.model_id,
                                   model_sha256=value.model_sha256, prompt_tokens=value.prompt_tokens,
                                   max_tokens=value.max_tokens)
        case OfferReply():
            return pb.OfferReply(accepted=value.accepted, lease_id=value.lease_id,
                                 estimated_finish_ms=value.estimated_finish_ms, expires_at_ms=value.expires_at_ms,
                                 reason=value.reason, permanent=value.permanent)
        case ExecuteRequest():
            return pb.ExecuteRequest(execution_id=value.execution_id, run_id=value.run_id, agent=value.agent,
                                     lease_id=value.lease_id, deadline_ms=value.deadline_ms,
                                     payload=encode_payload(value.payload))
        case ExecutionStarted() | ExecutionTokens() | ExecutionResult() | ExecutionFailed():
            return _execute_event_to_wire(value)
        case CancelRequest():
            return pb.CancelRequest(execution_id=value.execution_id)
        case CancelReply():
            return pb.CancelReply(cancelled=value.cancelled)
        case JoinRequest():
            return pb.JoinRequest(secret=value.secret, csr_pem=value.csr_pem, name=value.name)
        case JoinGrant():
            return pb.JoinReply(certificate_pem=value.certificate_pem, ca_certificate_pem=value.ca_certificate_pem,
                                revocation_log=value.revocation_entries)
        case NodeStatus():
            message = cpb.NodeStatus(description=_description_to_wire(value.description), ca_holder=value.ca_holder,
                                     peers_verified=value.peers_verified, peers_known=value.peers_known,
                                     home=value.home)
            if value.join_address is not None:
                message.join_address = value.join_address
            return message
        case PeerView():
            return _peer_view_to_wire(value)
        case PeersReply():
            return cpb.PeersReply(peers=[_peer_view_to_wire(p) for p in value.peers])
        case InviteRequest():
            return cpb.InviteRequest(ttl_seconds=value.ttl_seconds)
        case Invitation():
            return cpb.InviteReply(token=value.token, expires_at=value.expires_at, join_address=value.join_address)
        case RevokeRequest():
            return cpb.RevokeRequest(node_id=value.node_id, reason=value.reason)
        case RevokeReply():
            return cpb.RevokeReply(seq=value.seq)
        case RunRequest():
            return _run_request_to_wire(value)
        case (RunBegan() | RunPlanned() | AgentBegan() | AgentPlacedOn() | AgentWorking() | TokenStreamed()
              | AgentEnded() | AgentRetrying() | RunFinished()):
            return cpb.RunEvent(event=encode_run_event(value))
        case _:
            assert_never(value)


@overload
def from_wire(message: pb.NodeDescription) -> NodeDescription: ...
@overload
def from_wire(message: pb.Beat) -> Beat: ...
@overload
def from_wire(message: pb.RevocationsRequest) -> RevocationsRequest: ...
@overload
def from_wire(message: pb.RevocationsReply) -> RevocationsReply: ...
@overload
def from_wire(message: pb.RenewRequest) -> RenewRequest: ...
@overload
def from_wire(message: pb.RenewReply) -> RenewReply: ...
@overload
def from_wire(message: pb.OfferRequest) -> OfferRequest: ...
@overload
def from_wire(message: pb.OfferReply) -> OfferReply: ...
@overload
def from_wire(message: pb.ExecuteRequest) -> ExecuteRequest: ...
@overload
def from_wire(message: pb.ExecuteEvent) -> ExecuteEvent: ...
@overload
def from_wire(message: pb.CancelRequest) -> CancelRequest: ...
@overload
def from_wire(message: pb.CancelReply) -> CancelReply: ...
@overload
def from_wire(message: pb.JoinRequest) -> JoinRequest: ...
@overload
def from_wire(message: pb.JoinReply) -> JoinGrant: ...
@overload
def from_wire(message: cpb.NodeStatus) -> NodeStatus: ...
@overload
def from_wire(message: cpb.PeerView) -> PeerView: ...
@overload
def from_wire(message: cpb.PeersReply) -> PeersReply: ...
@overload
def from_wire(message: cpb.InviteRequest) -> InviteRequest: ...
@overload
def from_wire(message: cpb.InviteReply) -> Invitation: ...
@overload
def from_wire(message: cpb.RevokeRequest) -> RevokeRequest: ...
@overload
def from_wire(message: cpb.RevokeReply) -> RevokeReply: ...
@overload
def from_wire(message: cpb.RunRequest) -> RunRequest: ...
@overload
def from_wire(message: cpb.RunEvent) -> RunProgress: ...


def from_wire(message: object) -> object:
    """The domain value of a received message; raise WireError if it is not a valid one."""
    try:
        return _from_wire(message)
    except WireError:
        raise
    except Exception as error:  # noqa: BLE001 - a checker missed something: still only WireError out
        raise WireError(f"malformed {type(message).__name__}: {type(error).__name__}: {error}") from None


def _from_wire(message: object) -> object:
    match message:
        case pb.NodeDescription():
            return _description_from_wire(message)
        case pb.Beat():
            return Beat(message.sent_at_ms, message.description_version, message.revocation_seq,
                        _load_from_wire(message.load))
        case pb.RevocationsRequest():
            return RevocationsRequest(message.after_seq)
        case pb.RevocationsReply():
            return RevocationsReply(message.entries)
        case pb.RenewRequest():
            return RenewRequest(_pem(message.csr_pem, "certificate request"))
        case pb.RenewReply():
            return RenewReply(_pem(message.certificate_pem, "certificate"))
        case pb.OfferRequest():
            return OfferRequest(
                run_id=_label(message.run_id, "run_id"),
                agent=_agent_name(message.agent),
                model_id=_label(message.model_id, "model_id"),
                model_sha256=_sha256(message.model_sha256, "model_sha256"),
                prompt_tokens=message.prompt_tokens,
                max_tokens=message.max_tokens,
            )
        case pb.OfferReply():
            if message.accepted and not message.lease_id:
                _fail("offer reply", "accepted without a lease id")
            return OfferReply(
                accepted=message.accepted,
                lease_id=_label(message.lease_id, "lease_id", empty=True),
                estimated_finish_ms=message.estimated_finish_ms,
                expires_at_ms=message.expires_at_ms,
                reason=_text(message.reason, "offer reason", MAX_REASON),
                permanent=message.permanent and not message.accepted,
            )
        case pb.ExecuteRequest():
            return ExecuteRequest(
                execution_id=_label(message.execution_id, "execution_id"),
                run_id=_label(message.run_id, "run_id"),
                agent=_agent_name(message.agent),
                lease_id=_label(message.lease_id, "lease_id", empty=True),
                deadline_ms=message.deadline_ms,
                payload=decode_payload(message.payload),
            )
        case pb.ExecuteEvent():
            return _execute_event_from_wire(message)
        case pb.CancelRequest():
            return CancelRequest(_label(message.execution_id, "execution_id"))
        case pb.CancelReply():
            return CancelReply(message.cancelled)
        case pb.JoinRequest():
            return JoinRequest(
                secret=_label(message.secret, "join secret", MAX_SECRET),
                csr_pem=_pem(message.csr_pem, "certificate request"),
                name=_node_name(message.name, "node name"),
            )
        case pb.JoinReply():
            return JoinGrant(_pem(message.certificate_pem, "certificate"),
                             _pem(message.ca_certificate_pem, "CA certificate"), message.revocation_log)
        case cpb.NodeStatus():
            if not message.HasField("description"):
                _fail("node status", "no description")
            return NodeStatus(
                description=_description_from_wire(message.description),
                ca_holder=message.ca_holder,
                join_address=_optional(message, "join_address", lambda v: _address(v, "join address")),
                peers_verified=message.peers_verified,
                peers_known=message.peers_known,
                home=_text(message.home, "home", MAX_PATH),
            )
        case cpb.PeerView():
            return _peer_view_from_wire(message)
        case cpb.PeersReply():
            return PeersReply(tuple(_peer_view_from_wire(p)
                                    for p in _capped(message.peers, "peers", MAX_PEERS_LISTED)))
        case cpb.InviteRequest():
            return InviteRequest(message.ttl_seconds)
        case cpb.InviteReply():
            return Invitation(_label(message.token, "join token"), _time("expires_at")(message.expires_at),
                              _address(message.join_address, "join address"))
        case cpb.RevokeRequest():
            return RevokeRequest(_node_id(message.node_id, "node_id"), _text(message.reason, "reason", MAX_REASON))
        case cpb.RevokeReply():
            return RevokeReply(message.seq)
        case cpb.RunRequest():
            return _run_request_from_wire(message)
        case cpb.RunEvent():
            return decode_run_event(message.event)
        case _:
            raise WireError(f"no orc.v1 message converts from a {type(message).__name__}")


def parse(message_type: type[_T], data: object) -> _T:
    """A message of `message_type` from serialized bytes; raise WireError for junk."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise WireError(f"malformed {message_type.__name__}: expected bytes, got {type(data).__name__}")
    try:
        return message_type.FromString(bytes(data))  # type: ignore[attr-defined]
    except (DecodeError, ValueError, RuntimeError) as error:
        raise WireError(f"malformed {message_type.__name__}: {error}") from None


# ---- requests without arguments ---------------------------------------------------------------

def describe_request() -> pb.DescribeRequest:
    return pb.DescribeRequest()


def watch_request(addresses: tuple[str, ...] = ()) -> pb.WatchRequest:
    return pb.WatchRequest(addresses=list(addresses[:MAX_ADDRESSES]))


def watch_addresses(message: pb.WatchRequest) -> tuple[str, ...]:
    """The caller's listen addresses from a WatchRequest (WireError if malformed)."""
    return tuple(_address(a, "watch address") for a in _capped(message.addresses, "watch addresses", MAX_ADDRESSES))


def status_request() -> cpb.StatusRequest:
    return cpb.StatusRequest()


def peers_request() -> cpb.PeersRequest:
    return cpb.PeersRequest()
