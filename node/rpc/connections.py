"""Who may hold a connection to a public port: the pure core of the front door.

A connection is *pending* from the moment it is accepted until the gRPC server admits a call
on it (the authorization interceptor then names the node it belongs to); it is then
*authenticated*. Strangers can only ever hold pending connections, so pending ones are what is
capped hardest:

    accepted ──open()──> pending ──authenticated()──> authenticated(node)
                            │                               │
                            └── deadline, evicted ──┐       └── close_node(), per-node cap
                                                    v
                                                 closed()

- per source address: a few pending connections (one stranger cannot fill the table); a new
  one from an address that has its share closes that address's oldest, so a member that opens
  connections quickly (probes, reconnects) is never shut out by its own abandoned ones;
- in total: a share of the file descriptors the process may open (many strangers cannot
  exhaust them); when that share is full, the oldest pending connection makes room for the new
  one, so idle strangers cannot keep the door shut for members;
- by deadline: a connection that has not made an admitted call within `deadline_s` (TLS
  handshake plus first call) is closed. On the join server nobody authenticates, so there it is
  simply every connection's lifetime;
- per node: authenticated connections of one node id are capped (a member cannot hold
  thousands of idle connections either).

Everything here takes `now` and returns decisions as data; `orc.node.rpc.front_door` owns the
sockets and performs them.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Union

from orc.node.protocol.ids import NodeId

ConnectionId = int

# File descriptors kept out of the connection budget: the control socket and its clients
# (`orc` commands, the dashboard), log and journal files, the execution log, model files being
# hashed, pipes to runner processes and scripts, mDNS sockets, gRPC's own event fds, and this
# node's outgoing connections to its peers (one or two per peer).
RESERVED_FILES = 256
# Each relayed connection holds up to three descriptors in this process: the accepted socket,
# the relay's socket to the loopback gRPC server, and the gRPC server's end of that (the last
# two only once the client has sent something).
FILES_PER_CONNECTION = 3
# Pending connections take at most this share of the connection budget, and never more than
# MAX_PENDING: the rest is for members, whatever strangers do.
PENDING_SHARE = 0.5
MAX_PENDING = 1024
# A member opens a handful of connections to a node (its peer link, its coordinator's link, a
# TLS probe, a renewal); a few more than that cover reconnects racing old connections.
PENDING_PER_ADDRESS = 16
CONNECTIONS_PER_NODE = 32
# TLS handshake plus the first call; gRPC's own handshake timeout is shorter.
AUTHENTICATION_DEADLINE_S = 10.0

# The join server: opened only while an invitation is pending, and nobody authenticates there.
JOIN_CONNECTIONS = 32
JOIN_PER_ADDRESS = 4
JOIN_LIFETIME_S = 15.0


@dataclass(frozen=True)
class DoorLimits:
    """The caps of one front door."""

    pending_per_address: int
    pending_total: int
    connections_total: int  # pending and authenticated together
    per_node: int | None  # authenticated connections per node id; None where nobody authenticates
    deadline_s: float  # a connection not authenticated by then is closed

    def __post_init__(self) -> None:
        if min(self.pending_per_address, self.pending_total, self.connections_total) < 1:
            raise ValueError("every connection cap must be at least 1")
        if self.pending_total > self.connections_total:
            raise ValueError("pending connections cannot outnumber all connections")
        if self.per_node is not None and self.per_node < 1:
            raise ValueError("per_node must be at least 1 (or None)")
        if self.deadline_s <= 0:
            raise ValueError("the deadline must be positive")


def connection_budget(open_files: int, reserve: int = RESERVED_FILES) -> int:
    """Connections the process can relay with a soft limit of `open_files` descriptors.

    `reserve` descriptors are kept for everything else (halved for very low limits, so a tiny
    limit still leaves a few connections), and each relayed connection costs
    FILES_PER_CONNECTION of the rest.
    """
    if open_files < 1:
        raise ValueError("the open-file limit must be positive")
    kept = min(reserve, open_files // 2)
    return max(1, (open_files - kept) // FILES_PER_CONNECTION)


def mesh_limits(open_files: int, join_connections: int = JOIN_CONNECTIONS) -> DoorLimits:
    """The mesh port's caps for a process allowed `open_files` descriptors.

    The join server's connections (`join_connections`) come out of the same budget, since both
    doors may be open at once.
    """
    total = max(2, connection_budget(open_files) - join_connections)
    pending = max(1, min(MAX_PENDING, int(total * PENDING_SHARE)))
    return DoorLimits(pending_per_address=min(PENDING_PER_ADDRESS, pending), pending_total=pending,
                      connections_total=total, per_node=CONNECTIONS_PER_NODE,
                      deadline_s=AUTHENTICATION_DEADLINE_S)


JOIN_LIMITS = DoorLimits(pending_per_address=JOIN_PER_ADDRESS, pending_total=JOIN_CONNECTIONS,
                         connections_total=JOIN_CONNECTIONS, per_node=None, deadline_s=JOIN_LIFETIME_S)


# ---- decisions ---------------------------------------------------------------------------

@dataclass(frozen=True)
class Admit:
    """Relay the new connection; close `evict` first (the oldest pending ones) to make room.

    `crowded`: the address already had its share of pending connections (its oldest is in `evict`).
    """

    evict: tuple[ConnectionId, ...] = ()
    crowded: bool = False


@dataclass(frozen=True)
class Refuse:
    """Close the new connection at once."""

    reason: str


Opening = Union[Admit, Refuse]


@dataclass(frozen=True)
class Promoted:
    """The connection now belongs to the node (or already did): let the call through."""


@dataclass(frozen=True)
class OverNodeCap:
    """The node already has its share of connections: refuse the call and close this one."""

    limit: int


@dataclass(frozen=True)
class Unknown:
    """No such connection here (closed meanwhile, or it did not come through the door)."""


Authentication = Union[Promoted, OverNodeCap, Unknown]


@dataclass
class _Entry:
    address: str  # the source host, as the network gave it
    opened_at: float
    node_id: NodeId | None = None


class Connections:
    """The connections of one front door, and what each new event means for them."""

    def __init__(self, limits: DoorLimits) -> None:
        self.limits = limits
        self._entries: dict[ConnectionId, _Entry] = {}
        # Pending connections, oldest first: deadlines and eviction both start from the front.
        self._pending: OrderedDict[ConnectionId, float] = OrderedDict()
        # Pending connections of each address, oldest first.
        self._pending_by_address: dict[str, OrderedDict[ConnectionId, None]] = {}
        self._by_node: dict[NodeId, set[ConnectionId]] = {}

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def pending(self) -> int:
        return len(self._pending)

    def pending_from(self, address: str) -> int:
        return len(self._pending_by_address.get(address, ()))

    def node_of(self, connection: ConnectionId) -> NodeId | None:
        entry = self._entries.get(connection)
        return None if entry is None else entry.node_id

    def address_of(self, connection: ConnectionId) -> str | None:
        entry = self._entries.get(connection)
        return None if entry is None else entry.address

    def open(self, connection: ConnectionId, address: str, now: float) -> Opening:
        """A connection from `address` was accepted: admit it (maybe evicting others) or refuse it."""
        if connection in self._entries:
            raise ValueError(f"connection {connection} is already open")
        limits = self.limits
        evict: list[ConnectionId] = []
        crowded = self.pending_from(address) >= limits.pending_per_address
        if crowded:
            evict.append(next(iter(self._pending_by_address[address])))
        pending, total = len(self._pending) - len(evict), len(self._entries) - len(evict)
        oldest = (c for c in self._pending if c not in evict)
        while pending >= limits.pending_total or total >= limits.connections_total:
            victim = next(oldest, None)
            if victim is None:  # every connection is authenticated: the members come first
                return Refuse(f"this node holds its maximum of {limits.connections_total} connections")
            evict.append(victim)
            pending, total = pending - 1, total - 1
        for victim in evict:
            self.closed(victim)
        self._entries[connection] = _Entry(address, now)
        self._pending[connection] = now
        self._pending_by_address.setdefault(address, OrderedDict())[connection] = None
        return Admit(tuple(evict), crowded)

    def authenticated(self, connection: ConnectionId, node_id: NodeId) -> Authentication:
        """A call of `node_id` was admitted on `connection`."""
        entry = self._entries.get(connection)
        if entry is None:
            return Unknown()
        if entry.node_id == node_id:
            return Promoted()
        if entry.node_id is not None:
            # TLS authenticates a connection once: one connection cannot carry two node ids.
            raise ValueError(f"connection {connection} belongs to {entry.node_id}, not {node_id}")
        cap = self.limits.per_node
        held = self._by_node.get(node_id, set())
        if cap is not None and len(held) >= cap:
            return OverNodeCap(cap)
        self._unpend(connection, entry)
        entry.node_id = node_id
        self._by_node.setdefault(node_id, set()).add(connection)
        return Promoted()

    def closed(self, connection: ConnectionId) -> None:
        """The connection is gone (closed by either side); forgetting it twice is harmless."""
        entry = self._entries.pop(connection, None)
        if entry is None:
            return
        if entry.node_id is None:
            self._unpend(connection, entry)
        else:
            held = self._by_node.get(entry.node_id)
            if held is not None:
                held.discard(connection)
                if not held:
                    del self._by_node[entry.node_id]

    def of_node(self, node_id: NodeId) -> tuple[ConnectionId, ...]:
        """Every authenticated connection of `node_id`."""
        return tuple(sorted(self._by_node.get(node_id, ())))

    def expired(self, now: float) -> tuple[ConnectionId, ...]:
        """Pending connections past their deadline at `now`, oldest first (still in the table
        until `closed`)."""
        due = []
        for connection, opened_at in self._pending.items():
            if now - opened_at < self.limits.deadline_s:
                break  # oldest first: the rest are younger
            due.append(connection)
        return tuple(due)

    def next_deadline(self) -> float | None:
        """When the oldest pending connection's deadline falls, if any is pending."""
        for opened_at in self._pending.values():
            return opened_at + self.limits.deadline_s
        return None

    def _unpend(self, connection: ConnectionId, entry: _Entry) -> None:
        if self._pending.pop(connection, None) is None:
            return
        same_address = self._pending_by_address.get(entry.address)
        if same_address is not None:
            same_address.pop(connection, None)
            if not same_address:
                del self._pending_by_address[entry.address]
