"""The join server: open while an invitation is pending, on the node that holds the mesh CA.

One server serves every pending invitation. `open()` starts it (or returns the one running);
it closes itself once no invitation is pending (checked every `JOIN_CHECK_INTERVAL`), and
`close()` stops it at shutdown. Opening and closing are serialized under one lock, and the
closer re-checks for a pending invitation under that lock, so an invitation issued while the
server is closing gets a running server.

Its port is the mesh port + 1 when free (the same number whether or not the mesh server is up
yet: an invitation can come first), else any free port; the invitation and the mDNS advert name
the one it got.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from orc.node.links.static import Endpoint
from orc.node.protocol.errors import NotCertificateAuthority, Unavailable
from orc.node.protocol.messages import JoinGrant
from orc.node.trust.membership import Membership

log = logging.getLogger(__name__)

JOIN_CHECK_INTERVAL = 1.0  # seconds between checks whether the server may close


class JoinServer:
    """The join server's lifetime; the control service opens it on `orc-node invite`."""

    def __init__(self, *, host: str, port: Callable[[], int], advertised_ip: Callable[[], str],
                 membership: Callable[[], Membership | None], on_change: Callable[[], None]) -> None:
        """`port()`: the mesh port (the server takes the next one); `membership()`: this node's,
        once it is a member; `on_change()`: the port changed (it is in the mDNS advert)."""
        self._host = host
        self._mesh_port = port
        self._advertised_ip = advertised_ip
        self._membership = membership
        self._on_change = on_change
        self._server = None  # grpc.aio.Server while open
        self._closer: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()
        self.port: int | None = None

    def address(self) -> str | None:
        """Where the server listens while an invitation is pending, else None."""
        if self.port is None:
            return None
        return str(Endpoint(self._advertised_ip(), self.port))

    async def open(self) -> str:
        """Start the server unless it runs; its address. Raises NotCertificateAuthority on a plain member."""
        from orc.node.rpc.servers import start_join_server

        membership = self._membership()
        assert membership is not None, "invitations exist only once this node is a member"
        authority = membership.identity.authority
        if authority is None:
            raise NotCertificateAuthority("only the node holding the mesh CA can invite")
        async with self._lock:
            if self._server is None:
                backend = _JoinBackend(membership)
                try:
                    server, ports = await start_join_server(
                        backend, [str(Endpoint(self._host, self._mesh_port() + 1))],
                        authority.key_pem, authority.certificate_pem)
                except Unavailable:  # that port is taken: any free one
                    server, ports = await start_join_server(
                        backend, [str(Endpoint(self._host, 0))], authority.key_pem, authority.certificate_pem)
                self._server, self.port = server, ports[0]
                log.info("join server open on port %d while an invitation is pending", self.port)
                self._closer = asyncio.create_task(self._close_when_done(membership), name="join server closer")
                self._on_change()
            return str(Endpoint(self._advertised_ip(), self.port or 0))

    async def close(self) -> None:
        """Close the server now (shutting down), pending invitations or not."""
        async with self._lock:
            closer, self._closer = self._closer, None
            if closer is not None:
                closer.cancel()
            await self._stop()

    async def _close_when_done(self, membership: Membership) -> None:
        while True:
            await asyncio.sleep(JOIN_CHECK_INTERVAL)
            async with self._lock:
                if membership.invitation_open():
                    continue
                self._closer = None
                await self._stop()
                return

    async def _stop(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            await server.stop(0.5)
            self.port = None
            log.info("join server closed (no invitation pending)")
            self._on_change()


class _JoinBackend:
    def __init__(self, membership: Membership) -> None:
        self.membership = membership

    async def join(self, secret: str, csr_pem: bytes, name: str, peer_address: str) -> JoinGrant:
        return self.membership.join(secret, csr_pem, name, peer_address)
