"""Shared pieces of the RPC tests (imported by the test modules here): real certificates from orc.node.trust, in-memory backends.

The backends are recording fakes standing in for the daemon; everything between them and the
test (TLS, grpc, the interceptor, wire conversion) is the real thing on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Coroutine
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

from orc.node.protocol.description import Load, ModelOffer, NodeDescription, PeerAddress
from orc.node.protocol.events import RunBegan, RunFinished, RunProgress, RunResult, TokenStreamed
from orc.node.models.hardware import Hardware
from orc.node.trust.certificates import MeshAuthority, generate_key, key_to_pem
from orc.node.protocol.ids import NodeId
from orc.node.trust.ids import node_id_for
from orc.node.protocol.revocation_entry import RevocationEntry
from orc.node.rpc.authorization import Authorizer
from orc.node.trust.rate_limits import RateLimits
from orc.node.rpc.connections import mesh_limits
from orc.node.protocol.errors import JoinRefused, NotCertificateAuthority
from orc.node.rpc.front_door import FrontDoor
from orc.node.rpc.servers import start_mesh_server
from orc.node.protocol.messages import (
    Beat,
    ExecuteEvent,
    ExecuteRequest,
    ExecutionResult,
    ExecutionStarted,
    ExecutionTokens,
    Invitation,
    JoinGrant,
    NodeStatus,
    OfferReply,
    OfferRequest,
    PeerView,
    RunRequest,
)
from orc.scheduler.run import RunId, Usage

NOW = datetime.now(timezone.utc)


def run(coroutine: Coroutine[Any, Any, Any], timeout: float = 60.0) -> Any:
    """Run one async test scenario on a fresh event loop, bounded in time."""
    return asyncio.run(asyncio.wait_for(coroutine, timeout))


async def eventually(condition, timeout: float = 5.0) -> None:
    """Wait until `condition()` holds (the server side of a stream ends asynchronously)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():
        assert loop.time() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


@dataclass(frozen=True)
class Member:
    """A node identity: its key and a certificate from some CA, all PEM."""

    node_id: NodeId
    key_pem: bytes
    cert_pem: bytes
    ca_pem: bytes


def new_member(ca: MeshAuthority, *, now: datetime = NOW, lifetime: timedelta = timedelta(days=30)) -> Member:
    key = generate_key()
    cert = ca.issue_for_key(key.public_key(), now, lifetime)
    return Member(node_id_for(key.public_key()), key_to_pem(key), cert, ca.certificate_pem)


def description_of(member: Member, mesh: MeshAuthority, **changes: Any) -> NodeDescription:
    values: dict[str, Any] = dict(
        protocol_version=1,
        node_id=member.node_id,
        name="kitchen-pi",
        mesh_id=mesh.mesh_id,
        addresses=("192.168.1.20:7733", "[fe80::1]:7733"),
        hardware=Hardware("aarch64", 4, 8 << 30, 5 << 30, "none", "Linux"),
        models=(ModelOffer("smollm2-135m", "llama_cpp", "ab" * 32, 145_000_000, True, 910.5, 48.25),
                ModelOffer("gemma3-270m", "llama_cpp", "cd" * 32, 253_000_000, False)),
        load=Load(1, 2, 0.75),
        revocation_seq=3,
        version=7,
        started_at=1_700_000_000.5,
        tags=("kitchen", "arm"),
        known_peers=(PeerAddress(NodeId("a" * 20), "192.168.1.21:7733"),),
    )
    values.update(changes)
    return NodeDescription(**values)


class FakeNode:
    """A NodeBackend that records who called what."""

    def __init__(self, description: NodeDescription, beat_interval: float = 0.02,
                 authority: MeshAuthority | None = None) -> None:
        self.description = description
        self.beat_interval = beat_interval
        self.authority = authority
        self.calls: list[tuple[str, NodeId | None, Any]] = []
        self.watching: set[NodeId] = set()
        self.entries: tuple[RevocationEntry, ...] = ()

    def describe(self) -> NodeDescription:
        self.calls.append(("describe", None, None))
        return self.description

    async def beats(self, caller: NodeId, addresses: tuple[str, ...] = ()) -> AsyncIterator[Beat]:
        self.calls.append(("watch", caller, None))
        self.watching.add(caller)
        try:
            sent = 0
            while True:
                yield Beat(sent, self.description.version, self.description.revocation_seq, self.description.load)
                sent += 1
                await asyncio.sleep(self.beat_interval)
        finally:
            self.watching.discard(caller)

    def revocations_after(self, seq: int) -> tuple[RevocationEntry, ...]:
        self.calls.append(("revocations", None, seq))
        return self.entries

    async def renew(self, caller: NodeId, csr_pem: bytes) -> bytes:
        self.calls.append(("renew", caller, len(csr_pem)))
        if self.authority is None:
            raise NotCertificateAuthority()
        return self.authority.issue(csr_pem, NOW)

    async def offer(self, caller: NodeId, request: OfferRequest) -> OfferReply:
        self.calls.append(("offer", caller, request))
        return OfferReply(True, "lease-1", 1_250, 1_700_000_005_000)

    async def execute(self, caller: NodeId, request: ExecuteRequest) -> AsyncIterator[ExecuteEvent]:
        self.calls.append(("execute", caller, request))
        yield ExecutionStarted(self.description.node_id, request.payload.model_id)
        for piece in ("Hel", "lo"):
            yield ExecutionTokens(piece)
        yield ExecutionResult("Hello", Usage(5, 2), "stop")

    async def cancel(self, caller: NodeId, execution_id: str) -> bool:
        self.calls.append(("cancel", caller, execution_id))
        return execution_id == "running"


class FakeJoin:
    """A JoinBackend backed by a real MeshAuthority and one valid secret."""

    def __init__(self, authority: MeshAuthority, secret: str) -> None:
        self.authority = authority
        self.secret = secret
        self.calls: list[tuple[str, str]] = []

    async def join(self, secret: str, csr_pem: bytes, name: str, peer_address: str) -> JoinGrant:
        self.calls.append((name, peer_address))
        if secret != self.secret:
            raise JoinRefused()
        return JoinGrant(self.authority.issue(csr_pem, NOW), self.authority.certificate_pem, ())


@dataclass
class FakeControl:
    """A ControlBackend with canned answers."""

    node_status: NodeStatus
    peer_views: tuple[PeerView, ...] = ()
    calls: list[tuple[str, Any]] = field(default_factory=list)

    def status(self) -> NodeStatus:
        return self.node_status

    def peers(self) -> tuple[PeerView, ...]:
        return self.peer_views

    async def invite(self, ttl_seconds: int) -> Invitation:
        self.calls.append(("invite", ttl_seconds))
        if not self.node_status.ca_holder:
            raise NotCertificateAuthority()
        return Invitation("orc1-" + "a" * 26 + "-" + "b" * 26, 1_700_000_900.0, "192.168.1.20:7734")

    async def revoke(self, node_id: NodeId, reason: str) -> int:
        self.calls.append(("revoke", (node_id, reason)))
        return 4

    async def run(self, request: RunRequest) -> AsyncIterator[RunProgress]:
        self.calls.append(("run", request))
        yield RunBegan(RunId("r1"), "demo", ("a",), None, 1.0)
        yield TokenStreamed("a", request.input or "")
        yield RunFinished(RunResult(RunId("r1"), "demo", "completed", request.input, (), 1.0, 2.0))


def front_door(open_files: int = 1024) -> FrontDoor:
    """A mesh front door with the caps of a process allowed `open_files` descriptors."""
    return FrontDoor(mesh_limits(open_files))


@contextlib.asynccontextmanager
async def serving(backend: Any, server: Member, authorizer: Authorizer | None = None,
                  revoked: set[NodeId] | None = None) -> AsyncIterator[tuple[int, Authorizer]]:
    """A started mesh server for `server` on 127.0.0.1 (random port), behind its front door.

    An `authorizer` passed in must have been made with a front door as its gate."""
    if authorizer is None:
        revoked_ids = revoked if revoked is not None else set()
        authorizer = Authorizer(revoked_ids.__contains__, RateLimits(rate=1000, burst=1000), gate=front_door())
    assert isinstance(authorizer.gate, FrontDoor)
    mesh_server, ports = await start_mesh_server(backend, ["127.0.0.1:0"], server.key_pem, server.cert_pem,
                                                 server.ca_pem, authorizer, authorizer.gate)
    try:
        yield ports[0], authorizer
    finally:
        await mesh_server.stop(None)
