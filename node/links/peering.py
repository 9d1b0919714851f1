"""The links to other nodes: dial what the peer table says to dial, watch beats, gossip revocations.

The decisions (who is verified, degraded, dead, whom to dial and when) are made by the pure
`orc.node.links.peer_table.PeerTable`; this module performs them: it identifies address-only
peers with a TLS probe, calls `Describe` over mTLS, keeps one `Watch` stream per verified
peer, feeds beats and failures back into the table, fetches revocation entries when a peer's
beat shows a newer log, and passes on the peers other nodes know (peer exchange).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable
from typing import Protocol

from orc.node.protocol.description import Load, NodeDescription, PeerAddress
from orc.node.links.peer_events import (
    BeatReceived,
    ConnectFailed,
    Dial,
    Dialing,
    Hint,
    LinkState,
    PeerEvent,
    Revoked,
    Source,
    Tick,
    Verified,
)
from orc.node.links.peer_table import PeerTable
from orc.node.trust.errors import IdentityError
from orc.node.protocol.ids import NodeId
from orc.node.trust.membership import Membership
from orc.node.protocol.errors import NodeError, WireError
from orc.node.protocol.messages import Beat, PeerView

log = logging.getLogger(__name__)

TICK_INTERVAL = 0.25  # seconds between Tick events: a dead peer is noticed within 3 s + this
DESCRIBE_TIMEOUT = 5.0
# Peers passed on by one Describe; the table caps what it keeps, this caps the work per reply.
MAX_EXCHANGED_PER_DESCRIBE = 64


class PeerLink(Protocol):
    """One authenticated connection to one node."""

    async def describe(self) -> NodeDescription: ...

    def watch(self, addresses: tuple[str, ...] = ()) -> AsyncIterator[Beat]: ...

    async def revocations(self, after_seq: int) -> bytes: ...

    async def close(self) -> None: ...


class PeerConnector(Protocol):
    """Opens links; the daemon gives the mTLS implementation, tests may give another."""

    async def identify(self, address: str) -> NodeId:
        """The node id of whoever answers at `address` (its certificate proves it)."""
        ...

    def link(self, node_id: NodeId, address: str) -> PeerLink: ...


class Peering:
    """Keeps this node linked to every peer it hears of, and its view of them current."""

    def __init__(self, *, membership: Membership, connector: PeerConnector,
                 own_addresses: Callable[[], tuple[str, ...]] = tuple, clock: Callable[[], float] = time.monotonic, wall: Callable[[], float] = time.time) -> None:
        identity = membership.identity
        self.membership = membership
        self.table = PeerTable.new(identity.node_id, identity.mesh_id, membership.revocations.revoked_ids)
        self._connector = connector
        self._own_addresses = own_addresses
        self._listeners: list[Callable[[], None]] = []
        self._clock = clock
        self._wall = wall
        self._dialing: dict[str, asyncio.Task[None]] = {}
        self._links: dict[NodeId, asyncio.Task[None]] = {}
        self._loads: dict[NodeId, tuple[Load, float]] = {}  # last beat's load, when it came (this clock)
        self._verified: frozenset[NodeId] = frozenset()
        membership.on_revoked(self._revoked)

    # ---- inputs ----

    def hint(self, hint: Hint) -> None:
        """Something (mDNS, a static peer, peer exchange) named a peer; unauthenticated."""
        self._apply(hint.at(self._clock()))

    def _apply(self, event: PeerEvent) -> None:
        self.table = self.table.apply(event)
        verified = frozenset(p.node_id for p in self.table.live())
        if verified != self._verified:
            self._verified = verified
            for listener in self._listeners:  # our known peers changed: watchers re-Describe us
                listener()

    def on_change(self, listener: Callable[[], None]) -> None:
        """Call `listener()` whenever the set of verified peers changes."""
        self._listeners.append(listener)

    def inbound(self, node_id: NodeId, addresses: tuple[str, ...]) -> None:
        """A verified peer started watching us; make sure we link back to it."""
        for address in addresses:
            self.hint(Hint(node_id, address, Source.INBOUND))

    def _revoked(self, node_ids: frozenset[NodeId]) -> None:
        for node_id in node_ids:
            self._apply(Revoked(node_id))
            task = self._links.pop(node_id, None)
            if task is not None:
                task.cancel()

    # ---- queries ----

    def views(self) -> tuple[PeerView, ...]:
        """Every peer as `orc peers` shows it."""
        now, wall = self._clock(), self._wall()
        views = [
            PeerView(description=peer.description, state=peer.state.value,
                     address=peer.addresses[0] if peer.addresses else "",
                     last_seen=wall - (now - peer.last_seen), verified=peer.verified,
                     missed_beats=peer.missed_beats, node_id=peer.node_id)
            for peer in self.table.peers()
        ]
        views.extend(
            PeerView(description=None, state=LinkState.DISCOVERED.value, address=hint.address,
                     last_seen=wall - (now - hint.last_seen), verified=False, missed_beats=0, node_id=None)
            for hint in self.table.address_hints.values())
        return tuple(views)

    def load_of(self, node_id: NodeId) -> tuple[Load | None, float | None]:
        """The load a peer's last beat reported and when it arrived (`clock`), if any beat did."""
        load, at = self._loads.get(node_id, (None, None))
        return load, at

    def known_peers(self) -> tuple[PeerAddress, ...]:
        """Verified peers and where we reach them, for other nodes (peer exchange)."""
        return tuple(PeerAddress(peer.node_id, peer.addresses[0]) for peer in self.table.live() if peer.addresses)

    # ---- the loop ----

    async def run(self) -> None:
        """Tick, dial and watch until cancelled."""
        try:
            while True:
                self._apply(Tick(self._clock()))
                for node_id, task in list(self._links.items()):
                    peer = self.table.get(node_id)
                    if peer is None or peer.state is LinkState.DEAD:
                        task.cancel()  # a stalled stream: the table already gave up on it
                        self._links.pop(node_id, None)
                for dial in self.table.to_connect(self._clock()):
                    if dial.target not in self._dialing and dial.node_id not in self._links:
                        self._apply(Dialing(dial.target, self._clock()))
                        task = asyncio.create_task(self._dial(dial), name=f"dial {dial.target}")
                        self._dialing[dial.target] = task
                        task.add_done_callback(lambda _t, target=dial.target: self._dialing.pop(target, None))
                await asyncio.sleep(TICK_INTERVAL)
        finally:
            for task in [*self._dialing.values(), *self._links.values()]:
                task.cancel()
            await asyncio.gather(*self._dialing.values(), *self._links.values(), return_exceptions=True)

    async def _dial(self, dial: Dial) -> None:
        for address in dial.addresses:
            link: PeerLink | None = None
            try:
                node_id = dial.node_id or await self._connector.identify(address)
                if node_id == self.membership.identity.node_id or self.membership.is_revoked(node_id):
                    if dial.node_id is None:
                        # An address that turned out to be us (or a revoked node): stop dialing it.
                        self._apply(ConnectFailed(dial.target, self._clock()))
                    return
                link = self._connector.link(node_id, address)
                description = await asyncio.wait_for(link.describe(), DESCRIBE_TIMEOUT)
                if description.node_id != node_id:
                    raise NodeError(f"{address} described itself as {description.node_id}, its certificate says {node_id}")
            except (NodeError, IdentityError, OSError, asyncio.TimeoutError) as error:
                log.debug("dial %s at %s failed: %s", dial.target, address, error)
                if link is not None:
                    await link.close()
                continue
            self._apply(Verified(node_id, description, address, self._clock()))
            if node_id in self.table.entries:
                log.info("peer %s (%s) verified at %s", node_id, description.name, address)
                self._exchange(description)
                old = self._links.pop(node_id, None)
                if old is not None:
                    old.cancel()
                self._links[node_id] = asyncio.create_task(self._watch(node_id, link, description),
                                                           name=f"watch {node_id}")
            else:
                await link.close()
            return
        self._apply(ConnectFailed(dial.target, self._clock()))

    async def _watch(self, node_id: NodeId, link: PeerLink, description: NodeDescription) -> None:
        try:
            async for beat in link.watch(self._own_addresses()):
                self._apply(BeatReceived(node_id, self._clock()))
                self._loads[node_id] = (beat.load, self._clock())
                if beat.revocation_seq > self.membership.revocations.seq:
                    await self._fetch_revocations(node_id, link)
                if beat.description_version != description.version:
                    description = await asyncio.wait_for(link.describe(), DESCRIBE_TIMEOUT)
                    if description.node_id != node_id:
                        raise NodeError(f"peer {node_id} now describes itself as {description.node_id}")
                    self._apply(Verified(node_id, description, self._address_of(node_id), self._clock()))
                    self._exchange(description)
        except asyncio.CancelledError:
            raise
        except (NodeError, OSError, asyncio.TimeoutError) as error:
            log.info("link to %s lost: %s", node_id, error)
        finally:
            if self._links.get(node_id) is asyncio.current_task():
                del self._links[node_id]
            self._apply(ConnectFailed(node_id, self._clock()))
            await link.close()

    def _address_of(self, node_id: NodeId) -> str:
        peer = self.table.get(node_id)
        return peer.addresses[0] if peer is not None and peer.addresses else ""

    async def _fetch_revocations(self, node_id: NodeId, link: PeerLink) -> None:
        try:
            newly = self.membership.merge(await link.revocations(self.membership.revocations.seq))
        except (IdentityError, WireError) as error:  # a malformed entry, or one that does not verify
            log.warning("revocation entries from %s refused: %s", node_id, error)
            return
        if newly:
            log.info("learned from %s that %s are revoked", node_id, ", ".join(sorted(newly)))

    def _exchange(self, description: NodeDescription) -> None:
        for known in description.known_peers[:MAX_EXCHANGED_PER_DESCRIBE]:
            self.hint(Hint(known.node_id, known.address, Source.EXCHANGE))
