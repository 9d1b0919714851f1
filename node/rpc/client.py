"""Clients: a channel to one mesh peer, the join handshake, and the local control socket.

Every failed call raises an `orc.node.protocol.errors.NodeError` subclass (mapped in one place,
`errors.error_from_rpc`); every reply is checked by `wire.from_wire`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import grpc

from orc.node.metrics.observers import UNOBSERVED, RpcObserver
from orc.node.protocol.description import NodeDescription
from orc.node.protocol.events import RunProgress
from orc.node.trust.certificates import ca_pin_of, certificate_node_id, csr_public_key, issued_by
from orc.node.trust.errors import IdentityError
from orc.node.protocol.ids import NodeId
from orc.node.trust.ids import mesh_id_from_pin, node_id_for
from orc.node.protocol.revocation_entry import RevocationEntry
from orc.node.trust.tokens import JoinToken
from orc.node.rpc import credentials, wire
from orc.node.protocol.errors import (
    DaemonNotRunning,
    DaemonStarting,
    JoinRefused,
    NodeError,
    PinMismatch,
    Unavailable,
    WireError,
)
from orc.node.rpc.errors import error_from_rpc
from orc.node.protocol.messages import (
    Beat,
    CancelRequest,
    ExecuteEvent,
    ExecuteRequest,
    Invitation,
    InviteRequest,
    JoinGrant,
    JoinRequest,
    NodeStatus,
    OfferReply,
    OfferRequest,
    PeerView,
    RenewRequest,
    RevocationsRequest,
    RevokeRequest,
    RunRequest,
)
from orc.proto.v1 import control_pb2_grpc as control_grpc
from orc.proto.v1 import mesh_pb2_grpc as mesh_grpc

log = logging.getLogger(__name__)

_T = TypeVar("_T")

DEFAULT_TIMEOUT = 10.0  # unary calls on a LAN; Offer is a probe and should be faster
OFFER_TIMEOUT = 2.0


def target(host: str, port: int) -> str:
    """A grpc target for host and port (IPv6 literals in brackets)."""
    return f"[{host}]:{port}" if ":" in host and not host.startswith("[") else f"{host}:{port}"


_Failed = Callable[[grpc.StatusCode], None]  # told the status of every call that failed


async def _call(call: Callable[[], Awaitable[Any]], translate: Callable[[NodeError], NodeError] | None = None,
                failed: _Failed | None = None) -> Any:
    try:
        return await call()
    except grpc.aio.AioRpcError as error:
        if failed is not None:
            failed(error.code())
        mapped = error_from_rpc(error)
        raise (translate(mapped) if translate else mapped) from None


async def _stream(call: Any, translate: Callable[[NodeError], NodeError] | None = None,
                  failed: _Failed | None = None) -> AsyncIterator[Any]:
    """The messages of a server stream; the call is cancelled when the consumer stops early."""
    try:
        async for message in call:
            yield message
    except grpc.aio.AioRpcError as error:
        if failed is not None:
            failed(error.code())
        mapped = error_from_rpc(error)
        raise (translate(mapped) if translate else mapped) from None
    finally:
        call.cancel()


class PeerClient:
    """One mutual-TLS channel to exactly one node (`node_id`) at one address.

    The TLS handshake fails unless the server's certificate names `node_id` and chains to our
    CA, so a client can never talk to a different node than it meant to. `observer` is told of
    every call that fails with a status (the node's metrics); calls this client's own `close` or
    its consumer cut off end with CancelledError instead, and are not failures of the peer.
    """

    def __init__(self, node_id: NodeId, address: str, key_pem: bytes, cert_pem: bytes, ca_pem: bytes, *,
                 observer: RpcObserver = UNOBSERVED) -> None:
        self.node_id = node_id
        self.address = address
        self._observer = observer
        self._channel = grpc.aio.secure_channel(
            address, credentials.channel_credentials(key_pem, cert_pem, ca_pem),
            options=credentials.channel_options(node_id))
        self._stub = mesh_grpc.NodeStub(self._channel)

    def __repr__(self) -> str:
        return f"PeerClient({self.node_id!r}, {self.address!r})"

    async def __aenter__(self) -> PeerClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def _failed(self, method: str) -> _Failed:
        def failed(code: grpc.StatusCode) -> None:
            self._observer.rpc_failed(method, getattr(code, "name", "UNKNOWN"))
        return failed

    async def describe(self, timeout: float = DEFAULT_TIMEOUT) -> NodeDescription:
        message = await _call(lambda: self._stub.Describe(wire.describe_request(), timeout=timeout),
                              failed=self._failed("Describe"))
        description = wire.from_wire(message)
        if description.node_id != self.node_id:  # TLS proved who answered; the message must agree
            raise WireError(f"node {self.node_id} described itself as {description.node_id}")
        return description

    async def watch(self, addresses: tuple[str, ...] = ()) -> AsyncIterator[Beat]:
        """The peer's beats (one a second) until the stream breaks; the caller times liveness.

        `addresses`: where our own mesh server listens, so the peer can dial us back."""
        async for message in _stream(self._stub.Watch(wire.watch_request(addresses)), failed=self._failed("Watch")):
            yield wire.from_wire(message)

    async def revocations(self, after_seq: int, timeout: float = DEFAULT_TIMEOUT) -> tuple[RevocationEntry, ...]:
        """The peer's revocation entries after `after_seq`, well-formed (the log checks signatures and chain)."""
        message = await _call(lambda: self._stub.Revocations(wire.to_wire(RevocationsRequest(after_seq)),
                                                             timeout=timeout), failed=self._failed("Revocations"))
        return wire.from_wire(message).entries

    async def renew(self, csr_pem: bytes, timeout: float = DEFAULT_TIMEOUT) -> bytes:
        message = await _call(lambda: self._stub.Renew(wire.to_wire(RenewRequest(csr_pem)), timeout=timeout),
                              failed=self._failed("Renew"))
        return wire.from_wire(message).certificate_pem

    async def offer(self, request: OfferRequest, timeout: float = OFFER_TIMEOUT) -> OfferReply:
        message = await _call(lambda: self._stub.Offer(wire.to_wire(request), timeout=timeout),
                              failed=self._failed("Offer"))
        return wire.from_wire(message)

    async def execute(self, request: ExecuteRequest, timeout: float | None = None) -> AsyncIterator[ExecuteEvent]:
        """The execution's events; stop iterating (or close) to abandon it."""
        call = self._stub.Execute(wire.to_wire(request), timeout=timeout)
        async for message in _stream(call, failed=self._failed("Execute")):
            yield wire.from_wire(message)

    async def cancel(self, execution_id: str, timeout: float = DEFAULT_TIMEOUT) -> bool:
        message = await _call(lambda: self._stub.Cancel(wire.to_wire(CancelRequest(execution_id)), timeout=timeout),
                              failed=self._failed("Cancel"))
        return wire.from_wire(message).cancelled

    async def close(self) -> None:
        """Close the channel; open calls end with CANCELLED."""
        await self._channel.close(grace=None)


async def join(host: str, join_port: int, token: JoinToken, csr_pem: bytes, name: str,
               timeout: float = 10.0) -> JoinGrant:
    """Join the mesh `token` was made for, via the join server at host:join_port.

    The server's certificate is fetched first and its pin compared with the token's: on a
    mismatch, PinMismatch is raised before the secret or the request is sent anywhere.
    """
    ca_pem = await credentials.fetch_join_certificate(host, join_port, timeout)
    try:
        pin = ca_pin_of(ca_pem)
    except IdentityError as error:
        raise PinMismatch(f"{target(host, join_port)} presented an unusable certificate ({error}); "
                          "nothing was sent to it") from None
    if pin != token.pin:
        raise PinMismatch(f"{target(host, join_port)} is not the mesh this token was made for "
                          f"(its pin starts {pin[:6]}, the token's {token.pin[:6]}); nothing was sent to it")
    channel = grpc.aio.secure_channel(target(host, join_port), credentials.join_channel_credentials(ca_pem),
                                      options=credentials.join_channel_options(mesh_id_from_pin(token.pin)))
    try:
        request = wire.to_wire(JoinRequest(token.secret, csr_pem, name))
        message = await _call(lambda: mesh_grpc.JoinStub(channel).Join(request, timeout=timeout))
    finally:
        await channel.close(grace=None)
    grant = wire.from_wire(message)
    _check_grant(grant, token, csr_pem)
    return grant


def _check_grant(grant: JoinGrant, token: JoinToken, csr_pem: bytes) -> None:
    """The grant must be for our key, from the CA we pinned."""
    try:
        if ca_pin_of(grant.ca_certificate_pem) != token.pin:
            raise JoinRefused("the join server sent back a CA certificate other than the pinned one")
        if not issued_by(grant.certificate_pem, grant.ca_certificate_pem):
            raise JoinRefused("the certificate the join server sent is not signed by the mesh CA")
        if certificate_node_id(grant.certificate_pem) != node_id_for(csr_public_key(csr_pem)):
            raise JoinRefused("the certificate the join server sent is not for this node's key")
    except IdentityError as error:
        raise JoinRefused(f"the join server's answer is unusable: {error}") from None


class ControlClient:
    """The local CLI's connection to the running daemon, over its control socket."""

    def __init__(self, socket_path: str | Path) -> None:
        self.socket_path = Path(socket_path)
        self._channel: grpc.aio.Channel | None = None
        self._stub: control_grpc.ControlStub | None = None

    async def __aenter__(self) -> ControlClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def _not_running(self, error: NodeError) -> NodeError:
        if isinstance(error, Unavailable) and not isinstance(error, DaemonStarting):
            return DaemonNotRunning(f"no orc-node daemon answers on {self.socket_path}; "
                                    "start it with `orc-node start`")
        return error

    def _connect(self) -> control_grpc.ControlStub:
        if self._stub is None:
            if not self.socket_path.exists():  # a refusing socket surfaces as UNAVAILABLE
                raise self._not_running(Unavailable())
            self._channel = grpc.aio.secure_channel(credentials.socket_target(self.socket_path),
                                                    credentials.control_channel_credentials(),
                                                    options=credentials.control_options())
            self._stub = control_grpc.ControlStub(self._channel)
        return self._stub

    async def status(self, timeout: float = DEFAULT_TIMEOUT) -> NodeStatus:
        stub = self._connect()
        message = await _call(lambda: stub.Status(wire.status_request(), timeout=timeout), self._not_running)
        return wire.from_wire(message)

    async def peers(self, timeout: float = DEFAULT_TIMEOUT) -> tuple[PeerView, ...]:
        stub = self._connect()
        message = await _call(lambda: stub.Peers(wire.peers_request(), timeout=timeout), self._not_running)
        return wire.from_wire(message).peers

    async def invite(self, ttl_seconds: int = 0, timeout: float = DEFAULT_TIMEOUT) -> Invitation:
        stub = self._connect()
        message = await _call(lambda: stub.Invite(wire.to_wire(InviteRequest(ttl_seconds)), timeout=timeout),
                              self._not_running)
        return wire.from_wire(message)

    async def revoke(self, node_id: NodeId, reason: str, timeout: float = DEFAULT_TIMEOUT) -> int:
        stub = self._connect()
        message = await _call(lambda: stub.Revoke(wire.to_wire(RevokeRequest(node_id, reason)), timeout=timeout),
                              self._not_running)
        return wire.from_wire(message).seq

    async def run(self, request: RunRequest) -> AsyncIterator[RunProgress]:
        """The run's progress events, ending with RunFinished."""
        stub = self._connect()
        async for message in _stream(stub.Run(wire.to_wire(request)), self._not_running):
            yield wire.from_wire(message)

    async def close(self) -> None:
        if self._channel is not None:
            await self._channel.close(grace=None)
            self._channel = self._stub = None


async def daemon_answers(socket_path: str | Path, timeout: float = 2.0) -> bool:
    """Whether something accepts connections on the control socket (False: absent or stale)."""
    try:
        _, writer = await asyncio.wait_for(asyncio.open_unix_connection(str(socket_path)), timeout)
    except (OSError, asyncio.TimeoutError):
        return False
    writer.close()
    return True
