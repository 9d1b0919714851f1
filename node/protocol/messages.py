"""The frozen values the daemon and the RPC servicers and clients exchange.

These are the domain side of the orc.v1 wire, next to `orc.node.protocol.description` (what a node says
about itself) and `orc.node.protocol.events` (what a run reports). Only `orc.node.rpc.wire` converts
them to and from generated protobuf messages; nothing else in orc sees a message.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Union

from orc.node.protocol.description import Load, NodeDescription
from orc.node.protocol.ids import NodeId
from orc.node.protocol.revocation_entry import RevocationEntry
from orc.node.models.runtimes.base import ChatMessage, GenerationParams
from orc.scheduler.run import Usage

# ---- liveness -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Beat:
    """One liveness beat of a `Watch` stream (one a second), also a change notice."""

    sent_at_ms: int  # sender's clock, for display only; liveness is timed by the receiver
    description_version: int  # a change means: call Describe again
    revocation_seq: int  # higher than ours means: fetch the new revocation entries
    load: Load


# ---- trust upkeep ---------------------------------------------------------------------------


@dataclass(frozen=True)
class RevocationsRequest:
    after_seq: int  # entries with a greater sequence number are wanted


@dataclass(frozen=True)
class RevocationsReply:
    entries: tuple[RevocationEntry, ...]  # oldest first; possibly not all of them (ask again from the last)


@dataclass(frozen=True)
class RenewRequest:
    csr_pem: bytes


@dataclass(frozen=True)
class RenewReply:
    certificate_pem: bytes


# ---- joining --------------------------------------------------------------------------------


@dataclass(frozen=True)
class JoinRequest:
    secret: str = ""
    csr_pem: bytes = b""
    name: str = ""

    def __repr__(self) -> str:  # the secret is a credential; keep it out of logs
        return f"JoinRequest(name={self.name!r}, secret='…', csr_pem=<{len(self.csr_pem)} bytes>)"


@dataclass(frozen=True)
class JoinGrant:
    """What a successful join hands back: everything a new member needs to take part."""

    certificate_pem: bytes  # the joiner's node certificate
    ca_certificate_pem: bytes  # the mesh CA certificate, the trust root from now on
    revocation_entries: tuple[RevocationEntry, ...]  # the whole revocation log so far, oldest first


# ---- running agents -------------------------------------------------------------------------


@dataclass(frozen=True)
class OfferRequest:
    """"Could you run this agent, and by when?" (a probe before late binding)."""

    run_id: str
    agent: str
    model_id: str
    model_sha256: str
    prompt_tokens: int
    max_tokens: int


@dataclass(frozen=True)
class OfferReply:
    accepted: bool
    lease_id: str = ""  # quote it in ExecuteRequest.lease_id; empty when refused
    estimated_finish_ms: int = 0  # a duration from now, on the offering node's estimate
    expires_at_ms: int = 0  # unix ms on the offering node's clock
    reason: str = ""  # why it was refused; empty when accepted
    permanent: bool = False  # refused for good: waiting cannot change it (no such model, too large)


@dataclass(frozen=True)
class AgentPayload:
    """What to generate: the model (by id and digest), the conversation and the sampling."""

    model_id: str
    model_sha256: str
    messages: tuple[ChatMessage, ...]
    params: GenerationParams


@dataclass(frozen=True)
class ExecuteRequest:
    execution_id: str  # chosen by the caller (derived from run, agent and attempt)
    run_id: str
    agent: str
    lease_id: str  # from an accepted offer; empty to execute without one
    deadline_ms: int  # how long the generation may take, ms from its start (ExecutionStarted); 0 = no limit
    payload: AgentPayload


@dataclass(frozen=True)
class ExecutionStarted:
    node_id: NodeId
    model: str


@dataclass(frozen=True)
class ExecutionTokens:
    text: str


@dataclass(frozen=True)
class ExecutionResult:
    """The last event of a successful execution; `output` is every token chunk concatenated."""

    output: str
    usage: Usage
    finish_reason: str  # "stop" | "length"


@dataclass(frozen=True)
class ExecutionFailed:
    """The last event of a failed execution. `code` is machine-readable (see mesh.proto)."""

    code: str
    message: str
    retryable: bool


ExecuteEvent = Union[ExecutionStarted, ExecutionTokens, ExecutionResult, ExecutionFailed]


@dataclass(frozen=True)
class CancelRequest:
    execution_id: str


@dataclass(frozen=True)
class CancelReply:
    cancelled: bool  # a running execution was found and stopped


# ---- the local control socket ---------------------------------------------------------------


@dataclass(frozen=True)
class PeerView:
    """One peer as this node sees it (`orc peers`)."""

    description: NodeDescription | None  # from its last Describe; None until verified
    state: str  # "discovered" | "verified" | "degraded" | "gone"
    address: str  # "host:port" this node reaches it at
    last_seen: float | None  # unix seconds of its last beat or reply; None if never
    verified: bool  # the mTLS handshake proved it holds the key its id derives from
    missed_beats: int
    node_id: NodeId | None = None  # None while known by address only

    @property
    def id(self) -> NodeId | None:
        """The peer's node id, from its description when there is one."""
        return self.description.node_id if self.description is not None else self.node_id


@dataclass(frozen=True)
class PeersReply:
    peers: tuple[PeerView, ...]


@dataclass(frozen=True)
class NodeStatus:
    """`orc-node status`: this node and its place in the mesh."""

    description: NodeDescription
    ca_holder: bool  # holds the mesh CA key: can invite, revoke and renew
    join_address: str | None  # the join server's "host:port" while an invitation is pending
    peers_verified: int
    peers_known: int
    home: str
    api_address: str | None = None  # "http(s)://host:port" of the HTTP API while it serves


@dataclass(frozen=True)
class InviteRequest:
    ttl_seconds: int  # 0 = the default (15 minutes)


@dataclass(frozen=True)
class Invitation:
    token: str  # "orc1-<pin>-<secret>", shown once
    expires_at: float  # unix seconds
    join_address: str  # "host:port" of the join server

    def __repr__(self) -> str:  # the token holds a secret; keep it out of logs
        return f"Invitation(token='orc1-…', expires_at={self.expires_at!r}, join_address={self.join_address!r})"


@dataclass(frozen=True)
class RevokeRequest:
    node_id: NodeId
    reason: str


@dataclass(frozen=True)
class RevokeReply:
    seq: int  # sequence number of the new log entry


@dataclass(frozen=True)
class RunRequest:
    """`orc run` as the command line gave it, for the daemon to run."""

    reference: str  # ensemble name, or a path relative to `cwd`
    input: str | None  # None: the ensemble's default_task
    cwd: str
    json: bool = False
    explain: bool = False
    local: bool = False
    seed: int | None = None
    threads: int | None = None
    resume: str | None = None  # a run id: continue that journaled run (`orc runs resume`)
    plan: bool = False  # `orc plan`: report the placement, run nothing
