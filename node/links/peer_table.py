"""The peer link state machine: what this node knows about every other node, and how sure it is.

Pure: no sockets, no clock (every event carries `now`, in seconds of any monotonic clock). The
daemon feeds events in with `PeerTable.apply` and asks `to_connect(now)` whom to dial; it
performs the dials and reports back. Diagram: docs/peer-link.dot.

    GONE ──hint──> DISCOVERED ──described──> VERIFIED ──beat late──> DEGRADED ──beats lost──> DEAD
                        │                     ^   ^                     │                      │
                        │                     │   └────────beat─────────┘                      │
                        │                     └──────────────beat / described──────────────────┘
                        └──forgotten / expired──> GONE <──forgotten── DEAD   (revoked: any -> GONE)

* DISCOVERED: a hint (mDNS, a static `--peer`, or another peer's list) named it. Unproven.
* VERIFIED: an mTLS `Describe` succeeded, so it holds the key its node id is derived from,
  and beats arrive on its `Watch` stream.
* DEGRADED: a beat is late (no beat for more than 1.5 beat intervals).
* DEAD: 3 beats missed (no beat for more than 3 x 1 s), or the connection broke.
* GONE: not in the table. Unverified and dead entries are forgotten after 10 minutes of
  silence, static peers never; a revoked node is removed and every later hint for it ignored.
* Expired: an entry that never verified (a ghost: a failed join, a forged advert, a node gone
  for good) is dropped after UNVERIFIED_MAX_FAILURES failed dials or UNVERIFIED_TTL seconds since
  it was first hinted, whichever comes first, however often mDNS or peers re-announce it; for
  COOL_DOWN seconds after, mDNS and peer-exchange hints for it are ignored. A peer that proves
  itself (it calls us, or a dial verifies it) is always taken. Static peers never expire: they
  stay and back off.

Hints that carry no node id (a static `HOST:PORT`, an address from peer exchange) wait in a
separate list of address hints until a dial identifies the node behind them.

`apply` returns the very same table object when it ignored an event (own id, other mesh,
revoked node, a cap reached, an event that does not apply in the peer's state), so the shell
can log what was dropped.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType

from typing_extensions import assert_never

from orc.node.links.errors import BadPeerAddress
from orc.node.links.peer_events import (
    TRANSITIONS,
    AddressHint,
    BeatReceived,
    ConnectFailed,
    Dial,
    Dialing,
    Hinted,
    LinkState,
    Peer,
    PeerEvent,
    Revoked,
    Signal,
    Source,
    Tick,
    Verified,
)
from orc.node.links.static import parse_endpoint
from orc.node.protocol.ids import MeshId, NodeId

__all__ = [
    "BEAT_INTERVAL",
    "COOL_DOWN",
    "UNVERIFIED_MAX_FAILURES",
    "UNVERIFIED_TTL",
    "PeerTable",
]

BEAT_INTERVAL = 1.0  # the `Watch` stream sends a Beat every second
# Half a beat of slack for scheduling jitter, so a peer beating on time does not flap.
DEGRADED_AFTER = 1.5 * BEAT_INTERVAL
DEAD_AFTER = 3 * BEAT_INTERVAL  # 3 missed beats
FORGET_AFTER = 600.0  # seconds of silence before an unverified or dead peer is forgotten
# A peer never verified is dropped after this many failed dials in a row (with the backoff below,
# about 15 s of dialing) or this long after it was first hinted, whichever comes first ...
UNVERIFIED_MAX_FAILURES = 5
UNVERIFIED_TTL = 120.0
# ... and the mDNS and peer-exchange hints that keep re-announcing it are ignored this long.
COOL_DOWN = 600.0
DIAL_TIMEOUT = 10.0  # a dial in flight is not repeated before this, unless it reports back
BACKOFF_BASE = 1.0
EARLY_REDIAL_GAP = 1.0  # seconds between dials a fresh hint for a dead peer may bring forward
BACKOFF_MAX = 60.0

# Caps. Hints come from the network (mDNS is unauthenticated, peer exchange comes from peers
# that may lie), and every entry costs memory and dials.
# A LAN host announcing thousands of fake node ids cannot grow the table without bound; new
# hints are dropped when it is full, and only a proven (verified) peer may evict an unproven one.
MAX_PEERS = 256
# One node id announced with endless addresses cannot turn us into a port scanner by proxy.
MAX_ADDRESSES_PER_PEER = 4
# One lying peer's exchange list cannot fill the table with unproven ids that crowd out real peers.
MAX_EXCHANGE_UNVERIFIED = 64
# Address-only hints are dialed blind; peers cannot make us dial more than this many strangers.
MAX_EXCHANGE_ADDRESSES = 32
# Static peers come from the user's own config, itself capped at 64 (static.MAX_STATIC_PEERS).
MAX_STATIC_ADDRESSES = 64
# Expired ghosts cooling down: a LAN host forging endless node ids cannot grow this list without
# bound; past the cap the ghost whose cool-down ends first is let go early.
MAX_COOLING = MAX_PEERS


def backoff(failures: int) -> float:
    """Seconds to wait before the next dial after `failures` consecutive failures."""
    if failures <= 0:
        return 0.0
    return min(BACKOFF_MAX, BACKOFF_BASE * 2 ** min(failures - 1, 32))


# ---- the table ----

@dataclass(frozen=True)
class PeerTable:
    self_id: NodeId
    mesh_id: MeshId
    entries: Mapping[NodeId, Peer] = field(default_factory=lambda: MappingProxyType({}))
    address_hints: Mapping[str, AddressHint] = field(default_factory=lambda: MappingProxyType({}))
    revoked: frozenset[NodeId] = frozenset()  # bounded by the CA-signed revocation log
    # Expired ghosts (node ids, or addresses of address-only hints) -> until when their mDNS and
    # peer-exchange hints are ignored. At most MAX_COOLING.
    cooling: Mapping[str, float] = field(default_factory=lambda: MappingProxyType({}))

    @classmethod
    def new(cls, self_id: NodeId, mesh_id: MeshId, revoked: frozenset[NodeId] = frozenset()) -> PeerTable:
        return cls(self_id, mesh_id, revoked=revoked)

    # ---- queries ----

    def peers(self) -> tuple[Peer, ...]:
        return tuple(self.entries[node_id] for node_id in sorted(self.entries))

    def get(self, node_id: NodeId) -> Peer | None:
        return self.entries.get(node_id)

    def live(self) -> tuple[Peer, ...]:
        """Verified peers whose link is up (VERIFIED or DEGRADED), by node id."""
        return tuple(peer for peer in self.peers() if peer.live)

    def to_connect(self, now: float) -> tuple[Dial, ...]:
        """Who needs a dial now: unverified or dead peers and address hints past their backoff."""
        dials = [
            Dial(peer.node_id, peer.addresses)
            for peer in self.peers()
            if peer.state in (LinkState.DISCOVERED, LinkState.DEAD) and peer.addresses and peer.next_attempt_at <= now
        ]
        dials.extend(
            Dial(None, (hint.address,))
            for address, hint in sorted(self.address_hints.items())
            if hint.next_attempt_at <= now
        )
        return tuple(dials)

    # ---- the reducer ----

    def apply(self, event: PeerEvent) -> PeerTable:
        """The table after `event`; the same object if the event was ignored."""
        match event:
            case Hinted():
                return self._hinted(event)
            case Verified():
                return self._verified(event)
            case BeatReceived(node_id=node_id, now=now):
                return self._signal(node_id, Signal.BEAT, lambda p: replace(
                    p, last_beat=now, last_seen=max(p.last_seen, now), missed_beats=0, failures=0, next_attempt_at=now))
            case Tick(now=now):
                return self._tick(now)
            case Dialing(target=target, now=now):
                return self._dialing(target, now)
            case ConnectFailed(target=target, now=now):
                return self._connect_failed(target, now)
            case Revoked(node_id=node_id):
                return self._revoked(node_id)
            case _:
                assert_never(event)

    def _hinted(self, event: Hinted) -> PeerTable:
        address = _canonical(event.address)
        if address is None:
            return self
        advert = event.advert
        if advert is not None and (advert.mesh_id != self.mesh_id or advert.node_id != event.node_id):
            return self  # another mesh's node, or a record naming someone else: not ours to dial
        node_id = event.node_id if event.node_id is not None else self._owner_of(address)
        if node_id is None:
            if self._cooling(address, event):
                return self
            return self._address_hinted(address, event.source, event.now)
        if node_id == self.self_id or node_id in self.revoked or self._cooling(node_id, event):
            return self
        current = self.entries.get(node_id)
        state = current.state if current is not None else LinkState.GONE
        target = TRANSITIONS.get((state, Signal.HINT))
        if target is None:
            return self
        if current is None:
            if len(self.entries) >= MAX_PEERS:
                return self
            if event.source is Source.EXCHANGE and self._count_unverified(Source.EXCHANGE) >= MAX_EXCHANGE_UNVERIFIED:
                return self
            peer = Peer(node_id, (address,), target, event.source, event.now, None, None, advert, False, 0,
                        next_attempt_at=event.now, first_seen=event.now)
        else:
            next_attempt_at = current.next_attempt_at
            if current.state is LinkState.DEAD and event.source in (Source.MDNS, Source.INBOUND):
                # A dead peer announcing itself (or calling us) is probably back: dial soon
                # instead of waiting out a backoff that may have grown to a minute. At most one
                # early dial a second, so forged announcements cannot make us dial in a loop.
                next_attempt_at = min(next_attempt_at, max(event.now, current.last_seen + EARLY_REDIAL_GAP))
            peer = replace(
                current,
                addresses=_merge_address(current.addresses, address, pinned_first=current.verified),
                state=target,
                source=Source.STATIC if event.source is Source.STATIC else current.source,
                last_seen=max(current.last_seen, event.now),
                advert=advert if advert is not None else current.advert,
                next_attempt_at=next_attempt_at,
            )
        return self._with(peer)

    def _address_hinted(self, address: str, source: Source, now: float) -> PeerTable:
        existing = self.address_hints.get(address)
        if existing is not None:
            keep = Source.STATIC if Source.STATIC in (source, existing.source) else existing.source
            hint = replace(existing, source=keep, last_seen=max(existing.last_seen, now))
        else:
            if source is Source.STATIC:
                if self._count_addresses(Source.STATIC) >= MAX_STATIC_ADDRESSES:
                    return self
            elif self._count_addresses(Source.EXCHANGE, Source.MDNS, Source.INBOUND) >= MAX_EXCHANGE_ADDRESSES:
                return self
            hint = AddressHint(address, source, now, next_attempt_at=now, first_seen=now)
        hints = dict(self.address_hints)
        hints[address] = hint
        return replace(self, address_hints=MappingProxyType(hints))

    def _verified(self, event: Verified) -> PeerTable:
        node_id, description = event.node_id, event.description
        address = _canonical(event.address)
        if node_id == self.self_id:
            # A static peer or an exchanged address that turned out to be this very node.
            if address is None or address not in self.address_hints:
                return self
            hints = {a: h for a, h in self.address_hints.items() if a != address}
            return replace(self, address_hints=MappingProxyType(hints))
        if node_id in self.revoked:
            return self
        if description.node_id != node_id or description.mesh_id != self.mesh_id:
            return self  # the certificate proved node_id; a description claiming otherwise is broken
        current = self.entries.get(node_id)
        state = current.state if current is not None else LinkState.GONE
        target = TRANSITIONS.get((state, Signal.DESCRIBED))
        if target is None:
            return self
        hints = dict(self.address_hints)
        claimed = hints.pop(address, None) if address is not None else None
        entries = dict(self.entries)
        if current is None and len(entries) >= MAX_PEERS:
            victim = _eviction_candidate(entries.values())
            if victim is None:
                return self
            del entries[victim]
        if current is None:
            source = claimed.source if claimed is not None else Source.INBOUND
            addresses = (address,) if address is not None else ()
            peer = Peer(node_id, addresses, target, source, event.now, event.now, description, None, True, 0,
                        next_attempt_at=event.now, first_seen=event.now)
        else:
            source = current.source
            if claimed is not None and claimed.source is Source.STATIC:
                source = Source.STATIC
            addresses = current.addresses
            if address is not None:
                addresses = (address,) + tuple(a for a in addresses if a != address)
            peer = replace(
                current, addresses=addresses[:MAX_ADDRESSES_PER_PEER], state=target, source=source,
                last_seen=max(current.last_seen, event.now), last_beat=event.now, description=description,
                verified=True, missed_beats=0, failures=0, next_attempt_at=event.now,
            )
        entries[node_id] = peer
        cooling = self.cooling
        if node_id in cooling or (address is not None and address in cooling):  # proven: no ghost after all
            cooling = MappingProxyType({k: v for k, v in cooling.items() if k not in (node_id, address)})
        return replace(self, entries=MappingProxyType(entries), address_hints=MappingProxyType(hints),
                       cooling=cooling)

    def _revoked(self, node_id: NodeId) -> PeerTable:
        peer = self.entries.get(node_id)
        if peer is None and node_id in self.revoked:
            return self
        entries = dict(self.entries)
        if peer is not None and TRANSITIONS.get((peer.state, Signal.REVOKED)) is LinkState.GONE:
            del entries[node_id]
        return replace(self, entries=MappingProxyType(entries), revoked=self.revoked | {node_id})

    def _tick(self, now: float) -> PeerTable:
        entries: dict[NodeId, Peer] = {}
        cooling = {key: until for key, until in self.cooling.items() if until > now}
        changed = len(cooling) != len(self.cooling)
        for node_id, peer in self.entries.items():
            if _expired(peer.verified, peer.source, peer.failures, peer.first_seen, now) and \
                    TRANSITIONS.get((peer.state, Signal.EXPIRED)) is LinkState.GONE:
                cooling[node_id] = now + COOL_DOWN
                changed = True
                continue
            updated = _aged(peer, now)
            changed = changed or updated is not peer
            if updated is not None:
                entries[node_id] = updated
        hints: dict[str, AddressHint] = {}
        for address, hint in self.address_hints.items():
            if _expired(False, hint.source, hint.failures, hint.first_seen, now):
                cooling[address] = now + COOL_DOWN
            elif hint.source is Source.STATIC or now - hint.last_seen <= FORGET_AFTER:
                hints[address] = hint
        if not changed and len(hints) == len(self.address_hints):
            return self
        if len(cooling) > MAX_COOLING:
            cooling = dict(sorted(cooling.items(), key=lambda item: (item[1], item[0]))[-MAX_COOLING:])
        return replace(self, entries=MappingProxyType(entries), address_hints=MappingProxyType(hints),
                       cooling=MappingProxyType(cooling))

    def _dialing(self, target: str, now: float) -> PeerTable:
        def hold(failures: int) -> float:
            return now + max(DIAL_TIMEOUT, backoff(failures))

        peer = self.entries.get(NodeId(target))
        if peer is not None:
            return self._with(replace(peer, next_attempt_at=hold(peer.failures)))
        hint = self.address_hints.get(target)
        if hint is not None:
            return self._with_hint(replace(hint, next_attempt_at=hold(hint.failures)))
        return self

    def _connect_failed(self, target: str, now: float) -> PeerTable:
        if NodeId(target) in self.entries:
            return self._signal(NodeId(target), Signal.CONNECT_FAILED, lambda p: replace(
                p, failures=p.failures + 1, next_attempt_at=now + backoff(p.failures + 1)))
        hint = self.address_hints.get(target)
        if hint is None:
            return self
        return self._with_hint(replace(hint, failures=hint.failures + 1, next_attempt_at=now + backoff(hint.failures + 1)))

    # ---- helpers ----

    def _signal(self, node_id: NodeId, signal: Signal, update: Callable[[Peer], Peer]) -> PeerTable:
        """Apply `signal` to a stored peer through TRANSITIONS; `update` sets the other fields."""
        peer = self.entries.get(node_id)
        if peer is None:
            return self
        target = TRANSITIONS.get((peer.state, signal))
        if target is None:
            return self
        return self._with(replace(update(peer), state=target))

    def _with(self, peer: Peer) -> PeerTable:
        entries = dict(self.entries)
        entries[peer.node_id] = peer
        return replace(self, entries=MappingProxyType(entries))

    def _with_hint(self, hint: AddressHint) -> PeerTable:
        hints = dict(self.address_hints)
        hints[hint.address] = hint
        return replace(self, address_hints=MappingProxyType(hints))

    def _cooling(self, key: str, event: Hinted) -> bool:
        """Whether a hint for an expired ghost comes too soon after it expired (proof always counts)."""
        if event.source not in (Source.MDNS, Source.EXCHANGE):
            return False
        return self.cooling.get(key, float("-inf")) > event.now

    def _owner_of(self, address: str) -> NodeId | None:
        for peer in self.entries.values():
            if address in peer.addresses:
                return peer.node_id
        return None

    def _count_unverified(self, source: Source) -> int:
        return sum(1 for p in self.entries.values() if p.source is source and not p.verified)

    def _count_addresses(self, *sources: Source) -> int:
        return sum(1 for h in self.address_hints.values() if h.source in sources)


def _expired(verified: bool, source: Source, failures: int, first_seen: float, now: float) -> bool:
    """Whether an entry that never verified has had its chance: too many failed dials, or too long."""
    if verified or source is Source.STATIC:
        return False
    return failures >= UNVERIFIED_MAX_FAILURES or now - first_seen > UNVERIFIED_TTL


def _aged(peer: Peer, now: float) -> Peer | None:
    """The peer after time passed until `now`, or None when it is forgotten."""
    signal: Signal | None = None
    missed = peer.missed_beats
    if peer.state in (LinkState.VERIFIED, LinkState.DEGRADED) and peer.last_beat is not None:
        silence = now - peer.last_beat
        missed = max(0, int(silence // BEAT_INTERVAL))
        if silence > DEAD_AFTER:
            signal = Signal.BEATS_LOST
        elif silence > DEGRADED_AFTER:
            signal = Signal.BEAT_LATE
    elif peer.source is not Source.STATIC and now - peer.last_seen > FORGET_AFTER:
        signal = Signal.FORGOTTEN
    target = TRANSITIONS.get((peer.state, signal)) if signal is not None else None
    if target is LinkState.GONE:
        return None
    if target is None or target is peer.state:
        return peer if missed == peer.missed_beats else replace(peer, missed_beats=missed)
    if target is LinkState.DEAD:
        # Redial at once: the link was fine a moment ago, so the peer is likely just restarting.
        return replace(peer, state=target, missed_beats=missed, next_attempt_at=now)
    return replace(peer, state=target, missed_beats=missed)


def _eviction_candidate(peers: Iterable[Peer]) -> NodeId | None:
    """The unproven or dead non-static peer heard from least recently, if any."""
    candidates = [
        p for p in peers
        if p.source is not Source.STATIC and p.state in (LinkState.DISCOVERED, LinkState.DEAD)
    ]
    if not candidates:
        return None
    return min(candidates, key=lambda p: (p.verified, p.last_seen, p.node_id)).node_id


def _merge_address(addresses: tuple[str, ...], address: str, pinned_first: bool) -> tuple[str, ...]:
    """Add a hinted address, newest first (after the verified one), at most MAX_ADDRESSES_PER_PEER."""
    if address in addresses:
        return addresses
    if pinned_first and addresses:
        merged = addresses[:1] + (address,) + addresses[1:]
    else:
        merged = (address,) + addresses
    return merged[:MAX_ADDRESSES_PER_PEER]


def _canonical(address: str) -> str | None:
    try:
        return str(parse_endpoint(address))
    except BadPeerAddress:
        return None
