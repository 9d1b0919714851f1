"""The peering shell, driven with a recording fake connector (the real one is tested in tests/mesh)."""

from __future__ import annotations

import asyncio
from datetime import datetime, timezone

from orc.node.protocol.description import Load, NodeDescription, PeerAddress
from orc.node.links.peer_events import Hint, LinkState, Source
from orc.node.models.hardware import probe
from orc.node.trust.certificates import make_csr
from orc.node.trust.store import IdentityStore
from orc.node.trust.membership import Membership
from orc.node.links.peering import Peering
from orc.node.protocol.errors import Unavailable
from orc.node.protocol.messages import Beat

NOW = datetime(2026, 11, 21, 12, 0, tzinfo=timezone.utc)


class FakeLink:
    def __init__(self, peer: "FakePeer") -> None:
        self.peer = peer
        self.closed = False

    async def describe(self) -> NodeDescription:
        if self.peer.down or self.peer.silent:  # a hung machine: its stream stalls, new calls fail
            raise Unavailable("down")
        return self.peer.description

    async def watch(self, addresses=()):
        self.peer.watchers.append(addresses)
        while not self.peer.down:
            if self.peer.silent:
                await asyncio.sleep(0.05)
                continue
            yield Beat(0, self.peer.description.version, self.peer.revocation_seq, Load())
            await asyncio.sleep(0.05)
        raise Unavailable("connection reset")

    async def revocations(self, after_seq: int) -> bytes:
        return self.peer.entries(after_seq)

    async def close(self) -> None:
        self.closed = True


class FakePeer:
    def __init__(self, description: NodeDescription) -> None:
        self.description = description
        self.down = False
        self.silent = False
        self.revocation_seq = 0
        self.entries = lambda seq: ()
        self.watchers: list = []


class FakeConnector:
    def __init__(self) -> None:
        self.peers: dict[str, FakePeer] = {}  # by address
        self.identified: list[str] = []

    async def identify(self, address: str):
        self.identified.append(address)
        peer = self.peers.get(address)
        if peer is None or peer.down:
            raise Unavailable(f"nothing at {address}")
        return peer.description.node_id

    def link(self, node_id, address):
        return FakeLink(self.peers[address])


def member(tmp_path, ca: Membership, name: str) -> Membership:
    from orc.node.trust.revocation import RevocationLog

    token, _ = ca.invite(None)
    store = IdentityStore(tmp_path / name)
    grant = ca.join(token.secret, make_csr(store.pending_key(), name), name, "test")
    log = RevocationLog.verified(grant.revocation_entries, ca.identity.authority.public_key)
    return Membership(store, store.save_membership(name, grant.certificate_pem, grant.ca_certificate_pem, log))


def describe(identity, address: str, known=(), version: int = 1) -> NodeDescription:
    return NodeDescription(1, identity.node_id, identity.name, identity.mesh_id, (address,), probe(), (), Load(),
                           0, version, 0.0, known_peers=tuple(known))


async def until(check, timeout: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not check():
        assert asyncio.get_running_loop().time() < deadline, "condition not reached"
        await asyncio.sleep(0.02)


def test_links_verify_watch_exchange_and_notice_death(tmp_path):
    ca_store = IdentityStore(tmp_path / "ca")
    ca = Membership(ca_store, ca_store.init_mesh("ca", NOW))
    me, b, c = (member(tmp_path, ca, n) for n in ("me", "b", "c"))
    connector = FakeConnector()
    peer_c = FakePeer(describe(c.identity, "10.0.0.3:7733"))
    peer_b = FakePeer(describe(b.identity, "10.0.0.2:7733",
                               known=[PeerAddress(c.identity.node_id, "10.0.0.3:7733")]))
    connector.peers = {"10.0.0.2:7733": peer_b, "10.0.0.3:7733": peer_c}
    changes: list[int] = []
    peering = Peering(membership=me, connector=connector,
                      own_addresses=lambda: ("10.0.0.1:7733",))
    peering.on_change(lambda: changes.append(1))

    async def scenario():
        runner = asyncio.create_task(peering.run())
        try:
            # A static peer known by address only: identified, verified, and it tells us about C.
            peering.hint(Hint(None, "10.0.0.2:7733", Source.STATIC))
            await until(lambda: {p.node_id for p in peering.table.live()} == {b.identity.node_id,
                                                                             c.identity.node_id})
            assert connector.identified == ["10.0.0.2:7733"]  # C came with its id: no probe needed
            assert peer_b.watchers[0] == ("10.0.0.1:7733",)  # we tell peers where to reach us
            assert changes, "the set of verified peers changed: our description must too"
            assert {pa.node_id for pa in peering.known_peers()} == {b.identity.node_id, c.identity.node_id}
            # C hangs (its stream stalls, new calls fail): degraded, then dead after 3 missed beats.
            peer_c.silent = True
            await until(lambda: peering.table.get(c.identity.node_id).state is LinkState.DEAD, timeout=6)
            views = {v.node_id: v for v in peering.views()}
            assert views[c.identity.node_id].state == "dead" and views[b.identity.node_id].state == "verified"
            # C comes back: redialled with backoff and verified again.
            peer_c.silent = False
            await until(lambda: peering.table.get(c.identity.node_id).state is LinkState.VERIFIED, timeout=8)
        finally:
            runner.cancel()
            await asyncio.gather(runner, return_exceptions=True)

    asyncio.run(scenario())


def test_a_newer_revocation_log_is_fetched_from_a_beat_and_applied(tmp_path):
    ca_store = IdentityStore(tmp_path / "ca")
    ca = Membership(ca_store, ca_store.init_mesh("ca", NOW))
    me, b, c = (member(tmp_path, ca, n) for n in ("me", "b", "c"))
    connector = FakeConnector()
    peer_b = FakePeer(describe(b.identity, "10.0.0.2:7733"))
    peer_c = FakePeer(describe(c.identity, "10.0.0.3:7733"))
    connector.peers = {"10.0.0.2:7733": peer_b, "10.0.0.3:7733": peer_c}
    peering = Peering(membership=me, connector=connector)

    async def scenario():
        runner = asyncio.create_task(peering.run())
        try:
            peering.hint(Hint(b.identity.node_id, "10.0.0.2:7733", Source.MDNS))
            peering.hint(Hint(c.identity.node_id, "10.0.0.3:7733", Source.MDNS))
            await until(lambda: len(peering.table.live()) == 2)
            ca.revoke(c.identity.node_id, "stolen")
            peer_b.entries = ca.entries_after
            peer_b.revocation_seq = 1  # B's beats now carry the newer sequence number
            await until(lambda: me.is_revoked(c.identity.node_id))
            await until(lambda: peering.table.get(c.identity.node_id) is None)
            # Hints for a revoked node are ignored from now on.
            peering.hint(Hint(c.identity.node_id, "10.0.0.3:7733", Source.MDNS))
            await asyncio.sleep(0.3)
            assert peering.table.get(c.identity.node_id) is None
        finally:
            runner.cancel()
            await asyncio.gather(runner, return_exceptions=True)

    asyncio.run(scenario())


def test_forged_revocation_entries_are_refused(tmp_path):
    ca_store = IdentityStore(tmp_path / "ca")
    ca = Membership(ca_store, ca_store.init_mesh("ca", NOW))
    other_store = IdentityStore(tmp_path / "other-ca")
    other = Membership(other_store, other_store.init_mesh("other", NOW))
    me, b = member(tmp_path, ca, "me"), member(tmp_path, ca, "b")
    other.revoke(b.identity.node_id, "forged by another mesh's CA")
    connector = FakeConnector()
    peer_b = FakePeer(describe(b.identity, "10.0.0.2:7733"))
    peer_b.entries = other.entries_after
    peer_b.revocation_seq = 1
    connector.peers = {"10.0.0.2:7733": peer_b}
    peering = Peering(membership=me, connector=connector)

    async def scenario():
        runner = asyncio.create_task(peering.run())
        try:
            peering.hint(Hint(b.identity.node_id, "10.0.0.2:7733", Source.MDNS))
            await until(lambda: len(peer_b.watchers) >= 1)
            await asyncio.sleep(0.5)  # several beats, each showing the higher sequence number
            assert not me.is_revoked(b.identity.node_id) and me.revocations.seq == 0
            assert peering.table.get(b.identity.node_id).live
        finally:
            runner.cancel()
            await asyncio.gather(runner, return_exceptions=True)

    asyncio.run(scenario())
