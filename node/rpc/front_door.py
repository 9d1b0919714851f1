"""The front door of a public port: it owns the listening socket and relays to gRPC on loopback.

grpcio gives no hook on accept, no per-address connection limit and no way to close one
connection from the server side, so a gRPC server facing the network can be made to hold as
many idle connections as strangers open, until the process runs out of file descriptors. Each
public port of a node (the mesh port, the join port) is therefore served by a `FrontDoor`:

- it owns the listening socket, bound without SO_REUSEPORT, so a second daemon on the same
  port gets EADDRINUSE (`PortInUse`) instead of silently sharing the port;
- it accepts each connection, asks the pure core (`orc.node.rpc.connections.Connections`)
  whether to keep it, and relays its bytes, untouched, to the gRPC server, which listens only
  on 127.0.0.1 on an ephemeral port. TLS stays end to end: the relay never sees plaintext;
- each relayed connection reaches the gRPC server from its own loopback port, so the peer
  gRPC reports for a call ("ipv4:127.0.0.1:PORT") names the front-door connection. The
  authorization interceptor tells the door, through the `ConnectionGate` methods, which node a
  connection belongs to (`authenticated`) and which connections to close (`close_connection`,
  `close_node`); the door keeps the real source address for the logs (`source`).

A closed connection first stops reading (no further calls reach the server), lingers a moment
so the status of the refused call still goes out, then is cut. Relaying uses asyncio protocols,
each side's bytes written straight to the other transport with reading paused while the other
side's buffer is full: it is on every mesh byte, so it does as little as it can.
"""

from __future__ import annotations

import asyncio
import ipaddress
import itertools
import logging
import time
from collections.abc import Callable, Sequence

from typing_extensions import assert_never

from orc.node.protocol.ids import NodeId
from orc.node.rpc.connections import (
    Admit,
    ConnectionId,
    Connections,
    DoorLimits,
    OverNodeCap,
    Promoted,
    Refuse,
    Unknown,
)
from orc.node.rpc.log_sampling import SampledLog
from orc.node.rpc.sockets import listening_socket

log = logging.getLogger(__name__)

UPSTREAM_HOST = "127.0.0.1"
# Accepted connections the kernel queues before the door takes them.
LISTEN_BACKLOG = 512
# How long a connection being closed still carries the server's last bytes (the status of the
# refused call) before it is cut; it reads nothing from the client meanwhile.
CLOSE_LINGER_S = 0.5
# What a client may send before its relay to the gRPC server is connected (a TLS ClientHello
# is a few hundred bytes); past it, reading pauses until the relay is up.
EARLY_BYTES = 64 << 10


def upstream_port_of(peer: str) -> int | None:
    """The loopback port in a gRPC peer string ("ipv4:127.0.0.1:PORT"); None for any other peer."""
    host, _, port = peer.rpartition(":")
    if host != "ipv4:" + UPSTREAM_HOST or not port.isdigit():
        return None
    return int(port)


def address_key(host: str) -> str:
    """What counts as one source for the per-address cap: an IPv4 address (also when it comes
    IPv4-mapped), or an IPv6 /64, since anyone with one IPv6 address usually has its whole /64."""
    try:
        address = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return host
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network((address, 64), strict=False))
    return str(address)


# ---- the relay ---------------------------------------------------------------------------

class _Relay:
    """One accepted connection and its twin to the loopback gRPC server."""

    __slots__ = ("door", "id", "client", "source", "upstream", "upstream_port", "closed", "quiet",
                 "early", "early_bytes", "waiting", "throttled")

    def __init__(self, door: FrontDoor, connection: ConnectionId, client: asyncio.Transport, source: str) -> None:
        self.door = door
        self.id = connection
        self.client = client
        self.source = source  # "host:port" of the other end, for the logs
        self.upstream: asyncio.Transport | None = None
        self.upstream_port: int | None = None
        self.closed = False
        self.quiet = False  # being closed: reads nothing more from the client
        # The relay to the gRPC server is made when the client first sends something (an idle
        # connection costs one descriptor and no gRPC work); what it sends meanwhile waits here.
        self.early: list[bytes] | None = None
        self.early_bytes = 0
        self.waiting = False  # EARLY_BYTES are waiting for the relay: read nothing more until it is up
        self.throttled = False  # the upstream side's buffer is full

    def client_may_read(self) -> None:
        if not (self.closed or self.quiet or self.waiting or self.throttled):
            self.client.resume_reading()

    def linger_then_cut(self) -> None:
        """Stop reading from the client now; cut both sides once the server's last bytes went out."""
        if self.closed or self.quiet:
            return
        self.quiet = True
        self.client.pause_reading()
        asyncio.get_running_loop().call_later(CLOSE_LINGER_S, self.cut)

    def cut(self) -> None:
        """Close both sides at once, dropping anything not yet sent."""
        if self.closed:
            return
        self.closed = True
        self.client.abort()
        if self.upstream is not None:
            self.upstream.abort()
        self.door._forget(self)

    def finish(self) -> None:
        """One side ended: close both after sending what is buffered."""
        if self.closed:
            return
        self.closed = True
        self.client.close()
        if self.upstream is not None:
            self.upstream.close()
        self.door._forget(self)


class _ClientSide(asyncio.Protocol):
    __slots__ = ("door", "relay")

    def __init__(self, door: FrontDoor) -> None:
        self.door = door
        self.relay: _Relay | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.relay = self.door._accepted(transport)  # type: ignore[arg-type]

    def data_received(self, data: bytes) -> None:
        relay = self.relay
        if relay is None or relay.closed:
            return
        if relay.upstream is not None:
            relay.upstream.write(data)
            return
        if relay.early is None:
            relay.early = []
            self.door._relay_upstream(relay)
        relay.early.append(data)
        relay.early_bytes += len(data)
        if relay.early_bytes >= EARLY_BYTES:
            relay.waiting = True
            relay.client.pause_reading()

    def eof_received(self) -> bool:
        if self.relay is not None:
            self.relay.finish()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        if self.relay is not None:
            self.relay.finish()

    def pause_writing(self) -> None:
        upstream = self.relay.upstream if self.relay is not None else None
        if upstream is not None:
            upstream.pause_reading()

    def resume_writing(self) -> None:
        relay = self.relay
        if relay is not None and relay.upstream is not None and not relay.closed:
            relay.upstream.resume_reading()


class _UpstreamSide(asyncio.Protocol):
    __slots__ = ("relay",)

    def __init__(self, relay: _Relay) -> None:
        self.relay = relay

    def data_received(self, data: bytes) -> None:
        if not self.relay.closed:
            self.relay.client.write(data)

    def eof_received(self) -> bool:
        self.relay.finish()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.relay.finish()

    def pause_writing(self) -> None:
        self.relay.throttled = True
        self.relay.client.pause_reading()

    def resume_writing(self) -> None:
        self.relay.throttled = False
        self.relay.client_may_read()


# ---- the door ----------------------------------------------------------------------------

class FrontDoor:
    """Accepts the connections of one public port, caps them, and relays them to a loopback port.

    Use on one event loop: `await open(listen, upstream_port)`, `point_to(port)` to send new
    connections to another server, `await stop()`. The `authenticated`, `close_connection`,
    `close_node` and `source` methods are the `ConnectionGate` the authorization interceptor uses.
    """

    def __init__(self, limits: DoorLimits, *, name: str = "mesh",
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.limits = limits
        self.name = name
        self._clock = clock
        self._core = Connections(limits)
        self._relays: dict[ConnectionId, _Relay] = {}
        self._by_upstream_port: dict[int, _Relay] = {}
        self._ids = itertools.count(1)
        self._upstream_port: int | None = None
        self._servers: list[asyncio.base_events.Server] = []
        self._sweep: asyncio.TimerHandle | None = None
        self._refusals = SampledLog()
        self._report: asyncio.TimerHandle | None = None
        self._connecting: set[asyncio.Task[None]] = set()

    def __repr__(self) -> str:
        return f"FrontDoor({self.name!r}, {len(self._core)} connections)"

    @property
    def pending(self) -> int:
        """Connections that have not authenticated (yet)."""
        return self._core.pending

    @property
    def connections(self) -> int:
        return len(self._core)

    @property
    def upstream_port(self) -> int | None:
        """The loopback port new connections are relayed to."""
        return self._upstream_port

    # ---- life ----

    async def open(self, listen: Sequence[tuple[str, int]], upstream_port: int) -> tuple[int, ...]:
        """Listen on every (host, port) of `listen` (port 0: any free one); returns the ports bound.

        Raises PortInUse or AddressNotHere (nothing stays open then).
        """
        loop = asyncio.get_running_loop()
        self._upstream_port = upstream_port
        ports = []
        try:
            for host, port in listen:
                sock = listening_socket(host, port)
                server = await loop.create_server(lambda: _ClientSide(self), sock=sock, backlog=LISTEN_BACKLOG)
                self._servers.append(server)
                ports.append(sock.getsockname()[1])
        except BaseException:
            await self.stop()
            raise
        return tuple(ports)

    def point_to(self, upstream_port: int) -> None:
        """Relay new connections to `upstream_port` (those already open stay where they are)."""
        self._upstream_port = upstream_port

    async def stop_listening(self) -> None:
        """Accept no more connections; those open go on."""
        for server in self._servers:
            server.close()

    async def stop(self) -> None:
        """Stop listening and cut every connection."""
        servers, self._servers = self._servers, []
        for server in servers:
            server.close()
        for relay in list(self._relays.values()):
            relay.cut()
        for task in list(self._connecting):
            task.cancel()
        for handle in (self._sweep, self._report):
            if handle is not None:
                handle.cancel()
        self._sweep = self._report = None
        self._report_refusals()
        for server in servers:
            await server.wait_closed()

    # ---- the gate the authorization interceptor uses ----

    def authenticated(self, peer: str, node_id: NodeId) -> bool:
        """A call of `node_id` was admitted on the connection gRPC calls `peer`: it belongs to that
        node from now on. False when the call must be refused: the connection did not come
        through this door, or the node holds too many (that connection is then closed)."""
        relay = self._relay_of(peer)
        if relay is None:
            return False
        match self._core.authenticated(relay.id, node_id):
            case Promoted():
                return True
            case Unknown():
                return False
            case OverNodeCap(limit=limit):
                self._crowding(relay.source.rsplit(":", 1)[0],
                               f"closed a connection of node {node_id} from {relay.source}: it holds {limit}")
                relay.linger_then_cut()
                return False
            case other:
                assert_never(other)

    def close_connection(self, peer: str) -> None:
        """Close the connection gRPC calls `peer`, after the status of its last call went out."""
        relay = self._relay_of(peer)
        if relay is not None:
            relay.linger_then_cut()

    def close_node(self, node_id: NodeId) -> int:
        """Close every connection that belongs to `node_id`; returns how many."""
        closing = [self._relays[c] for c in self._core.of_node(node_id) if c in self._relays]
        for relay in closing:
            relay.linger_then_cut()
        if closing:  # the caller logs why (a revocation, a refusal, itself sampled)
            log.debug("%s: closing %d connection(s) of node %s", self.name, len(closing), node_id)
        return len(closing)

    def source(self, peer: str) -> str:
        """Where the connection gRPC calls `peer` really comes from ("host:port"), for the logs."""
        relay = self._relay_of(peer)
        return relay.source if relay is not None else peer

    # ---- the shell around the core ----

    def _relay_of(self, peer: str) -> _Relay | None:
        port = upstream_port_of(peer)
        return None if port is None else self._by_upstream_port.get(port)

    def _accepted(self, client: asyncio.Transport) -> _Relay | None:
        peername = client.get_extra_info("peername") or ("?", 0)
        host, port = str(peername[0]), peername[1]
        source = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        connection = next(self._ids)
        now = self._clock()
        decision = self._core.open(connection, address_key(host), now)
        match decision:
            case Refuse(reason=reason):
                client.abort()
                self._crowding(host, f"refused a connection from {source}: {reason}")
                return None
            case Admit(evict=evict, crowded=crowded):
                if crowded:
                    self._crowding(host, f"{host} has {self.limits.pending_per_address} connections that have not "
                                         "authenticated: closed its oldest")
                for victim in evict:
                    evicted = self._relays.get(victim)
                    if evicted is not None:
                        log.debug("%s: closing %s to make room", self.name, evicted.source)
                        evicted.cut()
            case other:
                assert_never(other)
        relay = _Relay(self, connection, client, source)
        self._relays[connection] = relay
        self._schedule_sweep()
        return relay

    def _relay_upstream(self, relay: _Relay) -> None:
        task = asyncio.get_running_loop().create_task(self._connect(relay))
        self._connecting.add(task)
        task.add_done_callback(self._connecting.discard)

    async def _connect(self, relay: _Relay) -> None:
        port = self._upstream_port
        if port is None:
            relay.cut()
            return
        loop = asyncio.get_running_loop()
        try:
            upstream, _ = await loop.create_connection(lambda: _UpstreamSide(relay), UPSTREAM_HOST, port)
        except OSError as error:
            log.warning("%s: cannot reach the local server on port %d: %s", self.name, port, error)
            relay.cut()
            return
        if relay.closed:
            upstream.abort()
            return
        relay.upstream = upstream
        relay.upstream_port = upstream.get_extra_info("sockname")[1]
        self._by_upstream_port[relay.upstream_port] = relay
        early, relay.early, relay.early_bytes = relay.early or [], None, 0
        upstream.write(b"".join(early))
        relay.waiting = False
        relay.client_may_read()

    def _forget(self, relay: _Relay) -> None:
        self._relays.pop(relay.id, None)
        if relay.upstream_port is not None and self._by_upstream_port.get(relay.upstream_port) is relay:
            del self._by_upstream_port[relay.upstream_port]
        self._core.closed(relay.id)

    def _schedule_sweep(self) -> None:
        if self._sweep is not None:
            return
        deadline = self._core.next_deadline()
        if deadline is None:
            return
        delay = max(0.05, deadline - self._clock())
        self._sweep = asyncio.get_running_loop().call_later(delay, self._sweep_now)

    def _sweep_now(self) -> None:
        self._sweep = None
        for connection in self._core.expired(self._clock()):
            relay = self._relays.get(connection)
            if relay is None:
                self._core.closed(connection)
                continue
            log.debug("%s: %s did not authenticate within %g s", self.name, relay.source, self.limits.deadline_s)
            relay.cut()
        self._schedule_sweep()

    def _crowding(self, host: str, message: str) -> None:
        """Log a refused or evicted connection: the first per source host a minute, then a count."""
        now = self._clock()
        if self._refusals.event(host, now):
            log.warning("%s: %s", self.name, message)
        elif self._report is None:
            self._report = asyncio.get_running_loop().call_later(self._refusals.window_s, self._report_refusals)

    def _report_refusals(self) -> None:
        self._report = None
        now = self._clock()
        for summary in self._refusals.due(now):
            log.warning("%s: refused or closed %d more connection(s) from %s in the last minute", self.name,
                        summary.count, summary.source)
        next_due = self._refusals.next_due()
        if next_due is not None and self._servers:
            delay = max(1.0, next_due - now)
            self._report = asyncio.get_running_loop().call_later(delay, self._report_refusals)
