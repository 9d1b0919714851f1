"""The one place that touches generated protobuf messages: domain values to and from orc.v1.

`to_wire(value)` turns a frozen domain value (orc.node.protocol.description, orc.node.protocol.messages,
orc.node.protocol.events) into its message; `from_wire(message)` turns a message back, checking
everything: a message comes from another machine or process and is hostile until proven
otherwise. Whatever is wrong with it (wrong type, absurd length, an invalid node id, too many
entries, a control character in a name that would end up on someone's terminal, a `oneof` case
this node does not know), `from_wire` raises `WireError` and nothing else.

The conversions live by subject: `nodes` (descriptions, beats), `executions` (offers, Execute
and its payload and events), `runs` (run progress events, with plans and records), `values`
(agent outputs), `trust` (revocation entries, joins), `control` (the control socket's own
messages); `checks` holds the caps and field checks they share. This package may import the
generated code, the domain values it converts and `orc.node.rpc.errors`; nothing else in orc
imports the generated code.
"""

from __future__ import annotations

from typing import TypeVar, Union, overload

from google.protobuf.message import DecodeError, Message
from typing_extensions import assert_never

from orc.node.protocol.description import NodeDescription
from orc.node.protocol.events import (
    AgentBegan,
    AgentEnded,
    AgentPlacedOn,
    AgentRetrying,
    AgentWorking,
    RunBegan,
    RunFinished,
    RunPlanned,
    RunProgress,
    TokenStreamed,
)
from orc.node.protocol.messages import (
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
from orc.node.protocol.errors import WireError
from orc.node.rpc.wire import checks as check
from orc.node.rpc.wire.checks import MAX_REASON
from orc.node.rpc.wire.control import (
    node_status_from_wire,
    node_status_to_wire,
    peer_view_from_wire,
    peer_view_to_wire,
    peers_reply_from_wire,
    run_request_from_wire,
    run_request_to_wire,
)
from orc.node.rpc.wire.executions import (
    execute_event_from_wire,
    execute_event_to_wire,
    execute_request_from_wire,
    execute_request_to_wire,
    offer_reply_from_wire,
    offer_reply_to_wire,
    offer_request_from_wire,
    offer_request_to_wire,
)
from orc.node.rpc.wire.nodes import (
    beat_from_wire,
    beat_to_wire,
    description_from_wire,
    description_to_wire,
    watch_addresses,
    watch_request,
)
from orc.node.rpc.wire.runs import run_event_from_wire, run_event_to_wire
from orc.node.rpc.wire.trust import (
    join_grant_from_wire,
    join_grant_to_wire,
    join_request_from_wire,
    revocations_from_wire,
    revocations_to_wire,
)
from orc.proto.v1 import control_pb2 as cpb
from orc.proto.v1 import mesh_pb2 as pb

__all__ = ["Domain", "from_wire", "parse", "to_wire", "watch_addresses", "watch_request", "describe_request",
           "status_request", "peers_request"]

Domain = Union[
    NodeDescription, Beat, RevocationsRequest, RevocationsReply, RenewRequest, RenewReply,
    OfferRequest, OfferReply, ExecuteRequest, ExecutionStarted, ExecutionTokens, ExecutionResult,
    ExecutionFailed, CancelRequest, CancelReply, JoinRequest, JoinGrant, NodeStatus, PeerView,
    PeersReply, InviteRequest, Invitation, RevokeRequest, RevokeReply, RunRequest,
    RunBegan, RunPlanned, AgentBegan, AgentPlacedOn, AgentWorking, TokenStreamed, AgentEnded, AgentRetrying,
    RunFinished,
]

_T = TypeVar("_T")


def to_wire(value: Domain) -> Message:
    """The orc.v1 message for a domain value; WireError when a value cannot be represented
    (an agent output that is not JSON-like, or a number out of its field's range)."""
    try:
        return _to_wire(value)
    except (ValueError, TypeError, OverflowError) as error:  # protobuf refusing a field's value
        raise WireError(f"cannot encode {type(value).__name__}: {error}") from None


def _to_wire(value: Domain) -> Message:
    match value:
        case NodeDescription():
            return description_to_wire(value)
        case Beat():
            return beat_to_wire(value)
        case RevocationsRequest():
            return pb.RevocationsRequest(after_seq=value.after_seq)
        case RevocationsReply():
            return pb.RevocationsReply(entries=revocations_to_wire(value.entries))
        case RenewRequest():
            return pb.RenewRequest(csr_pem=value.csr_pem)
        case RenewReply():
            return pb.RenewReply(certificate_pem=value.certificate_pem)
        case OfferRequest():
            return offer_request_to_wire(value)
        case OfferReply():
            return offer_reply_to_wire(value)
        case ExecuteRequest():
            return execute_request_to_wire(value)
        case ExecutionStarted() | ExecutionTokens() | ExecutionResult() | ExecutionFailed():
            return execute_event_to_wire(value)
        case CancelRequest():
            return pb.CancelRequest(execution_id=value.execution_id)
        case CancelReply():
            return pb.CancelReply(cancelled=value.cancelled)
        case JoinRequest():
            return pb.JoinRequest(secret=value.secret, csr_pem=value.csr_pem, name=value.name)
        case JoinGrant():
            return join_grant_to_wire(value)
        case NodeStatus():
            return node_status_to_wire(value)
        case PeerView():
            return peer_view_to_wire(value)
        case PeersReply():
            return cpb.PeersReply(peers=[peer_view_to_wire(p) for p in value.peers])
        case InviteRequest():
            return cpb.InviteRequest(ttl_seconds=value.ttl_seconds)
        case Invitation():
            return cpb.InviteReply(token=value.token, expires_at=value.expires_at, join_address=value.join_address)
        case RevokeRequest():
            return cpb.RevokeRequest(node_id=value.node_id, reason=value.reason)
        case RevokeReply():
            return cpb.RevokeReply(seq=value.seq)
        case RunRequest():
            return run_request_to_wire(value)
        case (RunBegan() | RunPlanned() | AgentBegan() | AgentPlacedOn() | AgentWorking() | TokenStreamed()
              | AgentEnded() | AgentRetrying() | RunFinished()):
            return run_event_to_wire(value)
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
            return description_from_wire(message)
        case pb.Beat():
            return beat_from_wire(message)
        case pb.RevocationsRequest():
            return RevocationsRequest(message.after_seq)
        case pb.RevocationsReply():
            return RevocationsReply(revocations_from_wire(message.entries, "revocation entries"))
        case pb.RenewRequest():
            return RenewRequest(check.pem(message.csr_pem, "certificate request"))
        case pb.RenewReply():
            return RenewReply(check.pem(message.certificate_pem, "certificate"))
        case pb.OfferRequest():
            return offer_request_from_wire(message)
        case pb.OfferReply():
            return offer_reply_from_wire(message)
        case pb.ExecuteRequest():
            return execute_request_from_wire(message)
        case pb.ExecuteEvent():
            return execute_event_from_wire(message)
        case pb.CancelRequest():
            return CancelRequest(check.label(message.execution_id, "execution_id"))
        case pb.CancelReply():
            return CancelReply(message.cancelled)
        case pb.JoinRequest():
            return join_request_from_wire(message)
        case pb.JoinReply():
            return join_grant_from_wire(message)
        case cpb.NodeStatus():
            return node_status_from_wire(message)
        case cpb.PeerView():
            return peer_view_from_wire(message)
        case cpb.PeersReply():
            return peers_reply_from_wire(message)
        case cpb.InviteRequest():
            return InviteRequest(message.ttl_seconds)
        case cpb.InviteReply():
            return Invitation(check.label(message.token, "join token"), check.timestamp("expires_at")(message.expires_at),
                              check.address(message.join_address, "join address"))
        case cpb.RevokeRequest():
            return RevokeRequest(check.node_id(message.node_id, "node_id"),
                                 check.text(message.reason, "reason", MAX_REASON))
        case cpb.RevokeReply():
            return RevokeReply(message.seq)
        case cpb.RunRequest():
            return run_request_from_wire(message)
        case cpb.RunEvent():
            return run_event_from_wire(message)
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


def status_request() -> cpb.StatusRequest:
    return cpb.StatusRequest()


def peers_request() -> cpb.PeersRequest:
    return cpb.PeersRequest()
