"""The vocabulary of the peer link state machine: link states, what can happen to a peer, and the
events the daemon feeds `orc.node.links.peer_table.PeerTable` with.

Pure data: frozen dataclasses and enums, the transition table (docs/peer-link.dot).
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Union

from orc.node.links.txt import Advert
from orc.node.protocol.description import NodeDescription
from orc.node.protocol.ids import NodeId


class LinkState(enum.Enum):
    DISCOVERED = "discovered"
    VERIFIED = "verified"
    DEGRADED = "degraded"
    DEAD = "dead"
    GONE = "gone"  # never stored: the state of every node id not in the table


class Source(enum.Enum):
    """Where we first heard of a peer. Static peers are never forgotten."""

    MDNS = "mdns"
    STATIC = "static"
    EXCHANGE = "exchange"  # another peer's `known_peers`
    INBOUND = "inbound"  # verified without a hint: it called us


class Signal(enum.Enum):
    """What happened to one peer; the events below are translated into these."""

    HINT = "hint"
    DESCRIBED = "described"
    BEAT = "beat"
    BEAT_LATE = "beat late"
    BEATS_LOST = "beats lost"
    CONNECT_FAILED = "connect failed"
    FORGOTTEN = "forgotten"
    EXPIRED = "expired"  # never verified: too many failed dials, or hinted too long ago
    REVOKED = "revoked"


_D, _V, _G, _X, _GONE = LinkState.DISCOVERED, LinkState.VERIFIED, LinkState.DEGRADED, LinkState.DEAD, LinkState.GONE

# The whole state machine. A (state, signal) pair not listed is ignored: the event is dropped
# and nothing about the peer changes (a beat from a peer never verified, a hint for a node
# that is not here and not proven, and so on).
TRANSITIONS: Mapping[tuple[LinkState, Signal], LinkState] = MappingProxyType({
    (_GONE, Signal.HINT): _D,
    (_GONE, Signal.DESCRIBED): _V,

    (_D, Signal.HINT): _D,
    (_D, Signal.DESCRIBED): _V,
    (_D, Signal.CONNECT_FAILED): _D,
    (_D, Signal.FORGOTTEN): _GONE,
    (_D, Signal.EXPIRED): _GONE,
    (_D, Signal.REVOKED): _GONE,

    (_V, Signal.HINT): _V,
    (_V, Signal.DESCRIBED): _V,
    (_V, Signal.BEAT): _V,
    (_V, Signal.BEAT_LATE): _G,
    (_V, Signal.BEATS_LOST): _X,
    (_V, Signal.CONNECT_FAILED): _X,
    (_V, Signal.REVOKED): _GONE,

    (_G, Signal.HINT): _G,
    (_G, Signal.DESCRIBED): _V,
    (_G, Signal.BEAT): _V,
    (_G, Signal.BEATS_LOST): _X,
    (_G, Signal.CONNECT_FAILED): _X,
    (_G, Signal.REVOKED): _GONE,

    (_X, Signal.HINT): _X,
    (_X, Signal.DESCRIBED): _V,
    (_X, Signal.BEAT): _V,
    (_X, Signal.CONNECT_FAILED): _X,
    (_X, Signal.FORGOTTEN): _GONE,
    (_X, Signal.REVOKED): _GONE,
})


# ---- inputs ----

@dataclass(frozen=True)
class Hint:
    """A discovery result without a time: the shell stamps it with `at(now)`."""

    node_id: NodeId | None
    address: str  # "host:port"
    source: Source
    advert: Advert | None = None

    def at(self, now: float) -> Hinted:
        return Hinted(self.node_id, self.address, self.source, now, self.advert)


@dataclass(frozen=True)
class Hinted:
    """Something unauthenticated named a peer (and maybe its node id and advert)."""

    node_id: NodeId | None
    address: str
    source: Source
    now: float
    advert: Advert | None = None


@dataclass(frozen=True)
class Verified:
    """An mTLS `Describe` of the node at `address` succeeded and returned `description`."""

    node_id: NodeId
    description: NodeDescription
    address: str
    now: float


@dataclass(frozen=True)
class BeatReceived:
    node_id: NodeId
    now: float


@dataclass(frozen=True)
class Tick:
    """Time passed: late beats degrade and kill links, long silence forgets peers."""

    now: float


@dataclass(frozen=True)
class Dialing:
    """The shell started dialing a `Dial` target (node id, or address for address-only hints)."""

    target: str
    now: float


@dataclass(frozen=True)
class ConnectFailed:
    """A dial, a `Describe` or a `Watch` stream to `target` (node id or address) failed."""

    target: str
    now: float


@dataclass(frozen=True)
class Revoked:
    """The revocation log now names this node: forget it and ignore it from now on."""

    node_id: NodeId


PeerEvent = Union[Hinted, Verified, BeatReceived, Tick, Dialing, ConnectFailed, Revoked]


# ---- table entries and outputs ----

@dataclass(frozen=True)
class Peer:
    node_id: NodeId
    addresses: tuple[str, ...]  # "host:port", best first (the one that verified leads)
    state: LinkState
    source: Source
    last_seen: float  # last hint, Describe or beat
    last_beat: float | None  # last beat or successful Describe
    description: NodeDescription | None  # from the last Describe: the authoritative view
    advert: Advert | None  # from the last mDNS hint: unauthenticated
    verified: bool  # a Describe has succeeded at least once
    missed_beats: int
    failures: int = 0  # consecutive failed dials, for backoff
    next_attempt_at: float = 0.0
    first_seen: float = 0.0  # when it entered the table; an unverified entry expires counting from here

    @property
    def live(self) -> bool:
        return self.state in (LinkState.VERIFIED, LinkState.DEGRADED)


@dataclass(frozen=True)
class AddressHint:
    """An address named without a node id: dialed until a dial tells who answers there."""

    address: str
    source: Source
    last_seen: float
    failures: int = 0
    next_attempt_at: float = 0.0
    first_seen: float = 0.0


@dataclass(frozen=True)
class Dial:
    """Whom to dial: a known node at one of its addresses, or an unknown node at one address.

    Report `Dialing(target)` when starting, then `Verified` on success or `ConnectFailed(target)`.
    When the certificate that answers names another node than `node_id`, the dial failed (report
    `ConnectFailed(target)`); the node that did answer may still be reported `Verified`.
    """

    node_id: NodeId | None
    addresses: tuple[str, ...]

    @property
    def target(self) -> str:
        return self.node_id if self.node_id is not None else self.addresses[0]
