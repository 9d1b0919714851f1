"""The peer link state machine, driven with `now` values (no sockets, no sleeping)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from orc.node.protocol.description import Load, NodeDescription
from orc.node.links.peer_events import (
    TRANSITIONS,
    BeatReceived,
    ConnectFailed,
    Dial,
    Dialing,
    Hint,
    Hinted,
    LinkState,
    Revoked,
    Signal,
    Source,
    Tick,
    Verified,
)
from orc.node.links.peer_table import (
    BACKOFF_MAX,
    COOL_DOWN,
    DIAL_TIMEOUT,
    FORGET_AFTER,
    MAX_ADDRESSES_PER_PEER,
    MAX_EXCHANGE_ADDRESSES,
    MAX_EXCHANGE_UNVERIFIED,
    MAX_COOLING,
    MAX_PEERS,
    UNVERIFIED_MAX_FAILURES,
    UNVERIFIED_TTL,
    PeerTable,
    backoff,
)
from orc.node.links.txt import Advert
from orc.node.models.hardware import Hardware
from orc.node.protocol.ids import MeshId, NodeId

REPO = Path(__file__).resolve().parents[3]
SELF = NodeId("selfselfselfselfself")
MESH = MeshId("meshmeshmeshmesh")
OTHER_MESH = MeshId("othermeshothermm")
A, B, C = NodeId("aaaaaaaaaaaaaaaaaaaa"), NodeId("bbbbbbbbbbbbbbbbbbbb"), NodeId("cccccccccccccccccccc")


def node(i: int) -> NodeId:
    """A distinct valid node id per integer."""
    alphabet = "abcdefghijklmnopqrstuvwxyz234567"
    digits = "".join(alphabet[(i >> (5 * k)) & 31] for k in range(4))
    return NodeId("n" * 16 + digits)


def describe(node_id: NodeId, mesh: MeshId = MESH) -> NodeDescription:
    return NodeDescription(1, node_id, "n", mesh, ("10.0.0.9:7733",), Hardware("x86_64", 4, None, None, "none", "Linux"),
                           (), Load(), 0, 1, 0.0)


def advert(node_id: NodeId, mesh: MeshId = MESH) -> Advert:
    return Advert(1, node_id, mesh, 7733, 0, None, None, False, 0, None)


def table() -> PeerTable:
    return PeerTable.new(SELF, MESH)


def run(events, start: PeerTable | None = None) -> PeerTable:
    state = start or table()
    for event in events:
        state = state.apply(event)
    return state


def mdns(node_id: NodeId, address: str = "10.0.0.1:7733", now: float = 0.0, mesh: MeshId = MESH) -> Hinted:
    return Hinted(node_id, address, Source.MDNS, now, advert(node_id, mesh))


def verified_at(now: float, node_id: NodeId = A, address: str = "10.0.0.1:7733") -> PeerTable:
    return run([mdns(node_id, address, 0.0), Verified(node_id, describe(node_id), address, now)])


# ---- the happy path ----

def test_a_hint_discovers_and_a_describe_verifies() -> None:
    state = run([mdns(A, now=1.0)])
    peer = state.get(A)
    assert peer.state is LinkState.DISCOVERED and peer.source is Source.MDNS and not peer.verified
    assert peer.addresses == ("10.0.0.1:7733",) and peer.advert == advert(A) and peer.description is None
    assert state.live() == ()
    assert state.to_connect(1.0) == (Dial(A, ("10.0.0.1:7733",)),)

    state = state.apply(Verified(A, describe(A), "10.0.0.1:7733", 2.0))
    peer = state.get(A)
    assert peer.state is LinkState.VERIFIED and peer.verified and peer.description == describe(A)
    assert peer.last_beat == 2.0 and peer.last_seen == 2.0
    assert state.live() == (peer,)
    assert state.to_connect(2.0) == ()


def test_hint_stamped_by_the_shell() -> None:
    hint = Hint(A, "10.0.0.1:7733", Source.MDNS, advert(A))
    assert hint.at(5.0) == Hinted(A, "10.0.0.1:7733", Source.MDNS, 5.0, advert(A))


def test_beats_degrade_kill_and_revive_a_link() -> None:
    state = verified_at(100.0)
    assert state.apply(Tick(101.5)).get(A).state is LinkState.VERIFIED  # on time, with jitter slack
    degraded = state.apply(Tick(101.6))
    assert degraded.get(A).state is LinkState.DEGRADED and degraded.get(A).missed_beats == 1
    assert degraded.live() == (degraded.get(A),)  # still usable, just suspicious
    still = degraded.apply(Tick(103.0))
    assert still.get(A).state is LinkState.DEGRADED and still.get(A).missed_beats == 3
    dead = still.apply(Tick(103.01))
    assert dead.get(A).state is LinkState.DEAD
    assert dead.live() == ()
    assert dead.to_connect(103.01) == (Dial(A, ("10.0.0.1:7733",)),)  # redial at once
    revived = dead.apply(BeatReceived(A, 104.0))
    assert revived.get(A).state is LinkState.VERIFIED and revived.get(A).missed_beats == 0
    assert revived.apply(Tick(105.4)).get(A).state is LinkState.VERIFIED


def test_a_degraded_link_recovers_on_a_beat_and_a_dead_one_on_describe() -> None:
    degraded = verified_at(0.0).apply(Tick(2.0))
    assert degraded.apply(BeatReceived(A, 2.1)).get(A).state is LinkState.VERIFIED
    dead = degraded.apply(Tick(10.0))
    assert dead.get(A).state is LinkState.DEAD
    again = dead.apply(Verified(A, describe(A), "10.0.0.2:7733", 11.0))
    assert again.get(A).state is LinkState.VERIFIED
    assert again.get(A).addresses[0] == "10.0.0.2:7733"  # the address that answered leads


def test_jumping_straight_past_three_beats_is_death() -> None:
    assert verified_at(0.0).apply(Tick(50.0)).get(A).state is LinkState.DEAD


def test_a_broken_stream_kills_the_link_at_once() -> None:
    state = verified_at(0.0).apply(ConnectFailed(A, 0.5))
    assert state.get(A).state is LinkState.DEAD
    assert state.to_connect(0.5) == () and state.to_connect(1.5) == (Dial(A, ("10.0.0.1:7733",)),)


def test_beats_from_an_unverified_peer_are_ignored() -> None:
    state = run([mdns(A)])
    assert state.apply(BeatReceived(A, 1.0)) is state
    assert state.apply(BeatReceived(B, 1.0)) is state


# ---- dialing and backoff ----

def test_dials_back_off_exponentially_up_to_a_cap() -> None:
    assert [backoff(n) for n in range(9)] == [0, 1, 2, 4, 8, 16, 32, 60, 60]
    state, now = run([mdns(A, now=0.0)]), 0.0
    waits = []
    for _ in range(9):
        (dial,) = state.to_connect(now)
        state = state.apply(Dialing(dial.target, now))
        assert state.to_connect(now + DIAL_TIMEOUT - 0.01) == ()  # in flight: not dialed twice
        state = state.apply(ConnectFailed(dial.target, now + 0.5))
        due = state.get(A).next_attempt_at
        waits.append(due - (now + 0.5))
        assert state.to_connect(due - 0.01) == ()
        now = due
    assert waits == [1, 2, 4, 8, 16, 32, 60, 60, 60]
    assert state.get(A).failures == 9 and state.get(A).state is LinkState.DISCOVERED
    assert max(waits) == BACKOFF_MAX
    recovered = state.apply(Verified(A, describe(A), "10.0.0.1:7733", now))
    assert recovered.get(A).failures == 0


def test_a_dial_that_never_reports_back_is_retried_after_the_timeout() -> None:
    state = run([mdns(A)]).apply(Dialing(A, 0.0))
    assert state.to_connect(DIAL_TIMEOUT) == (Dial(A, ("10.0.0.1:7733",)),)


def test_to_connect_lists_unverified_dead_and_address_only_peers_in_order() -> None:
    state = run([
        mdns(B, "10.0.0.2:7733"), mdns(A, "10.0.0.1:7733"),
        Hinted(None, "pi.local", Source.STATIC, 0.0),
        Hinted(None, "10.0.0.7:7000", Source.EXCHANGE, 0.0),
        Verified(C, describe(C), "10.0.0.3:7733", 0.0),
    ])
    assert state.to_connect(0.0) == (
        Dial(A, ("10.0.0.1:7733",)), Dial(B, ("10.0.0.2:7733",)),
        Dial(None, ("10.0.0.7:7000",)), Dial(None, ("pi.local:7733",)),
    )
    assert [d.target for d in state.to_connect(0.0)] == [A, B, "10.0.0.7:7000", "pi.local:7733"]


def test_address_hints_back_off_too() -> None:
    state = run([Hinted(None, "pi.local:7733", Source.STATIC, 0.0), Dialing("pi.local:7733", 0.0),
                 ConnectFailed("pi.local:7733", 1.0), ConnectFailed("pi.local:7733", 2.0)])
    assert state.address_hints["pi.local:7733"].failures == 2
    assert state.to_connect(3.99) == () and len(state.to_connect(4.0)) == 1


def test_unknown_dial_targets_are_ignored() -> None:
    state = run([mdns(A)])
    assert state.apply(ConnectFailed("10.9.9.9:1", 1.0)) is state
    assert state.apply(Dialing(B, 1.0)) is state


# ---- static peers and address-only hints ----

def test_a_static_address_becomes_a_static_peer_once_verified() -> None:
    state = run([Hinted(None, "PI.local:7733", Source.STATIC, 0.0)])
    assert list(state.address_hints) == ["pi.local:7733"] and state.peers() == ()
    state = state.apply(Verified(A, describe(A), "pi.local:7733", 1.0))
    assert state.address_hints == {}
    peer = state.get(A)
    assert peer.source is Source.STATIC and peer.addresses == ("pi.local:7733",)
    # Static peers are never forgotten, however long they stay dead.
    state = state.apply(Tick(10.0)).apply(Tick(10 * FORGET_AFTER))
    assert state.get(A).state is LinkState.DEAD
    assert state.to_connect(10 * FORGET_AFTER) == (Dial(A, ("pi.local:7733",)),)


def test_a_static_hint_upgrades_a_known_peer_at_that_address() -> None:
    state = run([mdns(A, "10.0.0.1:7733"), Hinted(None, "10.0.0.1:7733", Source.STATIC, 1.0)])
    assert state.get(A).source is Source.STATIC and state.address_hints == {}


def test_a_static_address_that_is_this_node_stops_being_dialed() -> None:
    state = run([Hinted(None, "10.0.0.9:7733", Source.STATIC, 0.0)])
    state = state.apply(Verified(SELF, describe(SELF), "10.0.0.9:7733", 1.0))
    assert state.address_hints == {} and state.peers() == ()


def test_a_node_that_called_us_is_inbound() -> None:
    state = table().apply(Verified(A, describe(A), "10.0.0.1:51000", 0.0))
    assert state.get(A).source is Source.INBOUND and state.get(A).state is LinkState.VERIFIED


def test_peer_exchange_hints_are_hints_like_any_other() -> None:
    state = run([Hinted(B, "10.0.0.2:7733", Source.EXCHANGE, 0.0)])
    assert state.get(B).source is Source.EXCHANGE and state.get(B).state is LinkState.DISCOVERED


# ---- forgetting ----

def test_dead_peers_are_forgotten_after_long_silence() -> None:
    dead = verified_at(0.0, C).apply(Tick(10.0))
    assert dead.get(C).state is LinkState.DEAD
    assert dead.apply(Tick(FORGET_AFTER)).get(C) is not None
    assert dead.apply(Tick(FORGET_AFTER + 0.01)).get(C) is None


def test_a_new_hint_postpones_forgetting_a_dead_peer() -> None:
    state = verified_at(0.0).apply(Tick(10.0)).apply(mdns(A, now=500.0)).apply(Tick(FORGET_AFTER + 50))
    assert state.get(A) is not None and state.get(A).last_seen == 500.0


def test_exchanged_addresses_are_forgotten_static_ones_kept() -> None:
    state = run([Hinted(None, "10.0.0.5:1", Source.EXCHANGE, 0.0), Hinted(None, "10.0.0.6:1", Source.STATIC, 0.0)])
    state = state.apply(Tick(FORGET_AFTER + 1))
    assert list(state.address_hints) == ["10.0.0.6:1"]


# ---- ghosts: entries that never verify expire ----

def fail_dials(state: PeerTable, target: str, times: int, now: float) -> tuple[PeerTable, float]:
    """Dial `target` `times` times as the shell would, each failing; the table and the time after."""
    for _ in range(times):
        now = max(now, state.get(NodeId(target)).next_attempt_at if state.get(NodeId(target)) else now)
        state = state.apply(Dialing(target, now)).apply(ConnectFailed(target, now + 0.1)).apply(Tick(now + 0.1))
    return state, now + 0.1


def test_a_ghost_that_fails_its_dials_expires_and_mdns_cannot_bring_it_back_for_a_while() -> None:
    state, now = fail_dials(run([mdns(A, now=0.0)]), A, UNVERIFIED_MAX_FAILURES - 1, 0.0)
    assert state.get(A) is not None  # one failure short
    state, now = fail_dials(state, A, 1, now)
    assert state.get(A) is None and A in state.cooling
    # mDNS keeps re-announcing it (zeroconf caches records for many minutes): ignored ...
    assert state.apply(mdns(A, now=now + 1)) is state
    assert state.apply(Hinted(A, "10.0.0.1:7733", Source.EXCHANGE, now + 1)) is state
    # ... until the cool-down is over.
    later = now + COOL_DOWN + 1
    assert state.apply(Tick(later)).cooling == {}
    assert state.apply(mdns(A, now=later)).get(A).state is LinkState.DISCOVERED


def test_a_ghost_that_is_re_announced_forever_still_expires_after_its_time() -> None:
    state = run([mdns(A, now=0.0)])
    for t in range(1, int(UNVERIFIED_TTL) + 1, 5):  # a fresh announcement every 5 s, no dial ever answers
        state = state.apply(mdns(A, now=float(t))).apply(Tick(float(t)))
    assert state.get(A) is not None and state.get(A).first_seen == 0.0  # hints do not reset its age
    state = state.apply(Tick(UNVERIFIED_TTL + 0.01))
    assert state.get(A) is None and state.cooling[A] == UNVERIFIED_TTL + 0.01 + COOL_DOWN


def test_a_peer_that_proves_itself_is_taken_even_while_cooling_down() -> None:
    state = run([mdns(A, now=0.0)]).apply(Tick(UNVERIFIED_TTL + 1))
    assert A in state.cooling
    inbound = state.apply(Hinted(A, "10.0.0.1:7733", Source.INBOUND, UNVERIFIED_TTL + 2))
    assert inbound.get(A) is not None  # it called us over mTLS: not a ghost
    verified = state.apply(Verified(A, describe(A), "10.0.0.1:7733", UNVERIFIED_TTL + 2))
    assert verified.get(A).state is LinkState.VERIFIED and verified.cooling == {}


def test_verified_and_static_peers_never_expire() -> None:
    dead = verified_at(0.0).apply(Tick(10.0))
    dead, now = fail_dials(dead, A, UNVERIFIED_MAX_FAILURES + 3, 10.0)
    assert dead.apply(Tick(UNVERIFIED_TTL + 20)).get(A).state is LinkState.DEAD  # once proven, only forgotten
    static = run([Hinted(None, "pi.local:7733", Source.STATIC, 0.0)])
    for n in range(UNVERIFIED_MAX_FAILURES + 3):
        static = static.apply(Dialing("pi.local:7733", n * 100.0)).apply(ConnectFailed("pi.local:7733", n * 100.0))
    static = static.apply(Tick(10 * UNVERIFIED_TTL))
    hint = static.address_hints["pi.local:7733"]
    assert hint.failures == UNVERIFIED_MAX_FAILURES + 3 and static.cooling == {}
    assert hint.next_attempt_at - (UNVERIFIED_MAX_FAILURES + 2) * 100.0 == BACKOFF_MAX  # stays, backs off


def test_exchanged_addresses_that_never_answer_expire_and_cool_down() -> None:
    state = run([Hinted(None, "10.0.0.5:1", Source.EXCHANGE, 0.0)])
    for n in range(UNVERIFIED_MAX_FAILURES):
        state = state.apply(Dialing("10.0.0.5:1", float(n))).apply(ConnectFailed("10.0.0.5:1", float(n)))
    state = state.apply(Tick(10.0))
    assert state.address_hints == {} and "10.0.0.5:1" in state.cooling
    assert state.apply(Hinted(None, "10.0.0.5:1", Source.EXCHANGE, 11.0)) is state


def test_a_flood_of_forged_ids_cannot_grow_the_cool_down_list_without_bound() -> None:
    state = table()
    for wave in range(3):
        start = wave * (UNVERIFIED_TTL + 1)
        for i in range(MAX_PEERS):
            state = state.apply(mdns(node(wave * MAX_PEERS + i), now=start))
        state = state.apply(Tick(start + UNVERIFIED_TTL + 0.5))
        assert state.peers() == ()
    assert len(state.cooling) == MAX_COOLING
    assert node(3 * MAX_PEERS - 1) in state.cooling and node(0) not in state.cooling  # the newest kept


def test_ticks_that_change_nothing_return_the_same_table() -> None:
    state = verified_at(0.0)
    assert state.apply(Tick(0.5)) is state


# ---- what is dropped ----

def test_hints_for_this_node_or_from_another_mesh_are_dropped() -> None:
    state = table()
    assert state.apply(mdns(SELF)) is state
    assert state.apply(mdns(A, mesh=OTHER_MESH)) is state
    assert state.apply(Hinted(A, "10.0.0.1:7733", Source.MDNS, 0.0, advert(B))) is state  # advert names B
    assert state.apply(Hinted(None, "10.0.0.1:7733", Source.MDNS, 0.0, advert(B))) is state
    assert state.apply(Verified(A, describe(A, OTHER_MESH), "10.0.0.1:7733", 0.0)) is state
    assert state.apply(Verified(A, describe(B), "10.0.0.1:7733", 0.0)) is state
    assert state.apply(Verified(SELF, describe(SELF), "10.0.0.1:7733", 0.0)) is state


@pytest.mark.parametrize("address", ["", "not an address!", "::1", "host:0", "[::1"])
def test_hints_with_bad_addresses_are_dropped(address: str) -> None:
    state = table()
    assert state.apply(Hinted(A, address, Source.MDNS, 0.0, advert(A))) is state
    assert state.apply(Hinted(None, address, Source.STATIC, 0.0)) is state


def test_a_revoked_node_is_removed_and_stays_out() -> None:
    state = verified_at(0.0).apply(Revoked(A))
    assert state.get(A) is None and A in state.revoked
    assert state.apply(mdns(A, now=1.0)) is state
    assert state.apply(Verified(A, describe(A), "10.0.0.1:7733", 1.0)) is state
    assert state.apply(BeatReceived(A, 1.0)) is state
    assert state.apply(Hinted(A, "10.0.0.1:7733", Source.EXCHANGE, 1.0)) is state
    assert state.apply(Revoked(A)) is state
    assert PeerTable.new(SELF, MESH, revoked=frozenset({B})).apply(mdns(B)).peers() == ()
    assert table().apply(Revoked(C)).apply(mdns(C)).peers() == ()  # revoked before ever seen


# ---- caps ----

def test_the_table_holds_at_most_max_peers_and_proven_peers_evict_unproven_ones() -> None:
    state = run(mdns(node(i), f"10.1.{i // 250}.{i % 250 + 1}:7733", now=float(i)) for i in range(MAX_PEERS + 50))
    assert len(state.peers()) == MAX_PEERS
    assert state.get(node(MAX_PEERS)) is None  # the flood beyond the cap was dropped
    newcomer = NodeId("zzzzzzzzzzzzzzzzzzzz")
    state = state.apply(Verified(newcomer, describe(newcomer), "10.2.0.1:7733", 1000.0))
    assert len(state.peers()) == MAX_PEERS
    assert state.get(newcomer).state is LinkState.VERIFIED
    assert state.get(node(0)) is None  # the unproven peer heard from least recently made room


def test_a_full_table_of_live_peers_evicts_nothing() -> None:
    state = run(Verified(node(i), describe(node(i)), f"10.1.{i // 250}.{i % 250 + 1}:7733", 0.0)
                for i in range(MAX_PEERS))
    newcomer = NodeId("zzzzzzzzzzzzzzzzzzzz")
    assert state.apply(Verified(newcomer, describe(newcomer), "10.2.0.1:7733", 0.5)) is state


def test_one_peer_keeps_at_most_a_few_addresses() -> None:
    state = run(mdns(A, f"10.0.0.{i}:7733", now=float(i)) for i in range(1, 20))
    assert len(state.get(A).addresses) == MAX_ADDRESSES_PER_PEER
    assert state.get(A).addresses[0] == "10.0.0.19:7733"  # newest first
    state = state.apply(Verified(A, describe(A), "10.0.0.2:7733", 30.0))
    state = run((mdns(A, f"10.0.1.{i}:7733", now=40.0 + i) for i in range(10)), state)
    assert state.get(A).addresses[0] == "10.0.0.2:7733"  # the proven address stays first
    assert len(state.get(A).addresses) == MAX_ADDRESSES_PER_PEER


def test_one_exchange_list_cannot_fill_the_table() -> None:
    state = run(Hinted(node(i), f"10.1.0.{i % 250 + 1}:{i + 1}", Source.EXCHANGE, 0.0) for i in range(200))
    assert len(state.peers()) == MAX_EXCHANGE_UNVERIFIED
    assert state.apply(mdns(A)).get(A) is not None  # mDNS peers still get in


def test_blind_addresses_from_peers_are_capped_static_ones_separately() -> None:
    state = run(Hinted(None, f"10.3.0.{i + 1}:7733", Source.EXCHANGE, 0.0) for i in range(100))
    assert len(state.address_hints) == MAX_EXCHANGE_ADDRESSES
    state = run((Hinted(None, f"10.4.0.{i + 1}:7733", Source.STATIC, 0.0) for i in range(10)), state)
    assert len(state.address_hints) == MAX_EXCHANGE_ADDRESSES + 10


# ---- the table and its diagram ----

def test_gone_is_never_stored() -> None:
    assert all(target is not LinkState.GONE or signal in (Signal.FORGOTTEN, Signal.EXPIRED, Signal.REVOKED)
               for (_, signal), target in TRANSITIONS.items())
    assert all(source is not LinkState.GONE or signal in (Signal.HINT, Signal.DESCRIBED)
               for (source, signal) in TRANSITIONS)


def test_the_diagram_shows_exactly_the_transition_table() -> None:
    dot = (REPO / "docs" / "peer-link.dot").read_text()
    edges = set()
    for source, target, label in re.findall(r'^\s*(\w+)\s*->\s*(\w+)\s*\[label="([^"]+)"', dot, re.M):
        for signal in label.split(" / "):
            edges.add((LinkState[source.upper()], Signal(signal), LinkState[target.upper()]))
    assert edges == {(s, signal, t) for (s, signal), t in TRANSITIONS.items()}


# ---- invariants under any sequence of events ----

ids = st.sampled_from([A, B, C, SELF, node(7)])
addresses = st.sampled_from(["10.0.0.1:7733", "10.0.0.2:7733", "pi.local:7733", "bad address", "[fd00::1]:1"])
times = st.floats(0, 2000, allow_nan=False)
events = st.one_of(
    st.builds(Hinted, st.one_of(st.none(), ids), addresses, st.sampled_from(list(Source)), times,
              st.one_of(st.none(), st.builds(advert, ids, st.sampled_from([MESH, OTHER_MESH])))),
    st.builds(lambda n, a, t, m: Verified(n, describe(n, m), a, t), ids, addresses, times,
              st.sampled_from([MESH, MESH, OTHER_MESH])),
    st.builds(BeatReceived, ids, times),
    st.builds(Tick, times),
    st.builds(Dialing, st.one_of(ids, addresses), times),
    st.builds(ConnectFailed, st.one_of(ids, addresses), times),
    st.builds(Revoked, st.sampled_from([B, node(7)])),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(events, max_size=40))
def test_invariants_hold_after_any_events(sequence) -> None:
    state = run(sequence)
    for peer in state.peers():
        assert peer.node_id != SELF and peer.node_id not in state.revoked
        assert peer.state is not LinkState.GONE
        assert 1 <= len(peer.addresses) <= MAX_ADDRESSES_PER_PEER or (peer.source is Source.INBOUND)
        assert len(set(peer.addresses)) == len(peer.addresses)
        assert peer.advert is None or peer.advert.mesh_id == MESH
        assert peer.description is None or peer.description.mesh_id == MESH
        assert peer.verified == (peer.description is not None)
        assert peer.live == (peer.state in (LinkState.VERIFIED, LinkState.DEGRADED))
        if peer.state is not LinkState.DISCOVERED:
            assert peer.verified
    assert all(isinstance(d, Dial) and d.addresses for d in state.to_connect(10**6))
    assert set(state.live()) <= set(state.peers())



def test_a_dead_peer_that_announces_itself_is_dialled_soon_not_after_its_backoff():
    from orc.node.links.peer_events import ConnectFailed, Dialing
    from orc.node.links.peer_table import EARLY_REDIAL_GAP

    state = verified_at(100.0)
    now = 101.0
    for _ in range(7):  # the link broke, then six redials failed: the backoff has grown to 60 s
        state = state.apply(ConnectFailed(A, now)).apply(Dialing(A, now))
    state = state.apply(ConnectFailed(A, now))
    peer = state.get(A)
    assert peer.state is LinkState.DEAD and peer.next_attempt_at - now >= 60
    later = now + 5
    assert state.to_connect(later) == ()
    # Its mDNS announcement (or its own call to us) brings the next dial forward.
    announced = state.apply(mdns(A, now=later))
    assert announced.to_connect(later) == (Dial(A, ("10.0.0.1:7733",)),)
    inbound = state.apply(Hinted(A, "10.0.0.1:7733", Source.INBOUND, later))
    assert inbound.to_connect(later) == (Dial(A, ("10.0.0.1:7733",)),)
    # A flood of announcements cannot make it more often than one dial per EARLY_REDIAL_GAP.
    dialled = announced.apply(Dialing(A, later)).apply(ConnectFailed(A, later + 0.1))
    flooded = dialled.apply(mdns(A, now=later + 0.2))
    assert flooded.get(A).next_attempt_at >= later + EARLY_REDIAL_GAP
    # What another node says (peer exchange) does not shorten the wait.
    assert state.apply(Hinted(A, "10.0.0.1:7733", Source.EXCHANGE, later)).to_connect(later) == ()
