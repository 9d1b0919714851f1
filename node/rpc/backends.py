"""What the RPC servicers delegate to: the daemon implements these, tests fake them.

Servicers only translate (orc.node.rpc.wire) and map errors (orc.node.rpc.errors); every
decision is made behind one of these seams. A backend refuses with an `NodeError` subclass
(e.g. `NotCertificateAuthority`, `JoinRefused`, `InvalidRequest`); anything else it raises is
a bug and reaches the caller as INTERNAL.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Protocol

from orc.node.protocol.description import NodeDescription
from orc.node.protocol.events import RunProgress
from orc.node.protocol.ids import NodeId
from orc.node.protocol.revocation_entry import RevocationEntry
from orc.node.protocol.messages import (
    Beat,
    ExecuteEvent,
    ExecuteRequest,
    Invitation,
    JoinGrant,
    NodeStatus,
    OfferReply,
    OfferRequest,
    PeerView,
    RunRequest,
)


class NodeBackend(Protocol):
    """The mesh services of this node; `caller` is the authenticated node id of the peer."""

    def describe(self) -> NodeDescription:
        """This node's current description."""
        ...

    def beats(self, caller: NodeId, addresses: tuple[str, ...] = ()) -> AsyncIterator[Beat]:
        """One beat a second for as long as the caller listens; `addresses` are where it says it listens."""
        ...

    def revocations_after(self, seq: int) -> tuple[RevocationEntry, ...]:
        """The revocation-log entries after `seq` (possibly a bounded prefix)."""
        ...

    async def renew(self, caller: NodeId, csr_pem: bytes) -> bytes:
        """A new certificate (PEM) for the caller's own key; NotCertificateAuthority if we hold no CA key."""
        ...

    async def offer(self, caller: NodeId, request: OfferRequest) -> OfferReply:
        ...

    def execute(self, caller: NodeId, request: ExecuteRequest) -> AsyncIterator[ExecuteEvent]:
        """Started, token chunks, then one ExecutionResult or ExecutionFailed."""
        ...

    async def cancel(self, caller: NodeId, execution_id: str) -> bool:
        """Stop the caller's execution; False if there is none running."""
        ...


class JoinBackend(Protocol):
    async def join(self, secret: str, csr_pem: bytes, name: str, peer_address: str) -> JoinGrant:
        """Redeem an invitation; JoinRefused for a wrong, used or expired secret.

        `peer_address` is where the request came from, for the log only.
        """
        ...


class ControlBackend(Protocol):
    """What the local CLI asks of the running daemon."""

    def status(self) -> NodeStatus:
        ...

    def peers(self) -> tuple[PeerView, ...]:
        ...

    async def invite(self, ttl_seconds: int) -> Invitation:
        """Open the join server with a new invitation (0: the default lifetime)."""
        ...

    async def revoke(self, node_id: NodeId, reason: str) -> int:
        """Append a revocation; return its sequence number."""
        ...

    def run(self, request: RunRequest) -> AsyncIterator[RunProgress]:
        ...
