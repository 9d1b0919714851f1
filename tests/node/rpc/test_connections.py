"""The front door's pure core: who may hold a connection, decided with a fake clock."""

from __future__ import annotations

import pytest

from orc.node.protocol.ids import NodeId
from orc.node.rpc.connections import (
    FILES_PER_CONNECTION,
    JOIN_LIMITS,
    MAX_PENDING,
    RESERVED_FILES,
    Admit,
    Connections,
    DoorLimits,
    OverNodeCap,
    Promoted,
    Refuse,
    Unknown,
    connection_budget,
    mesh_limits,
)

ALICE, BOB = NodeId("a" * 20), NodeId("b" * 20)


def limits(**changes) -> DoorLimits:
    values = dict(pending_per_address=2, pending_total=4, connections_total=6, per_node=2, deadline_s=10.0)
    values.update(changes)
    return DoorLimits(**values)


def test_pending_connections_are_capped_per_address_the_oldest_giving_way() -> None:
    table = Connections(limits())
    assert table.open(1, "10.0.0.9", 0.0) == Admit()
    assert table.open(2, "10.0.0.9", 1.0) == Admit()
    assert table.open(3, "10.0.0.9", 2.0) == Admit(evict=(1,), crowded=True)
    assert table.open(4, "10.0.0.7", 3.0) == Admit()  # another address is not affected
    assert table.pending_from("10.0.0.9") == 2 and len(table) == 3 and table.address_of(1) is None
    assert table.open(5, "10.0.0.9", 4.0) == Admit(evict=(2,), crowded=True)
    assert table.expired(13.0) == (3, 4)  # the survivors keep their own deadlines


def test_when_pending_connections_are_full_the_oldest_makes_room() -> None:
    table = Connections(limits(pending_per_address=4))
    for connection in range(4):
        assert table.open(connection, f"10.0.0.{connection}", float(connection)) == Admit()
    assert table.open(9, "10.0.0.50", 5.0) == Admit(evict=(0,))  # a newcomer always gets in
    assert table.pending == 4 and table.address_of(0) is None and table.pending_from("10.0.0.0") == 0
    assert table.open(10, "10.0.0.51", 6.0) == Admit(evict=(1,))


def test_authentication_frees_the_pending_budget_of_the_address() -> None:
    table = Connections(limits())
    table.open(1, "10.0.0.9", 0.0)
    table.open(2, "10.0.0.9", 0.0)
    assert table.authenticated(1, ALICE) == Promoted()
    assert table.pending_from("10.0.0.9") == 1 and table.pending == 1
    assert table.open(3, "10.0.0.9", 0.0) == Admit()  # no eviction: connection 1 is alice's now
    assert table.authenticated(1, ALICE) == Promoted()  # every later call on it: nothing changes
    assert table.node_of(1) == ALICE and table.of_node(ALICE) == (1,)


def test_members_keep_their_connections_when_everything_is_full() -> None:
    table = Connections(limits(pending_per_address=10, per_node=10))
    for connection in range(6):
        table.open(connection, "10.0.0.2", 0.0)
        if connection < 2:
            table.authenticated(connection, ALICE)  # alice's two connections
    # Four pending (the pending cap) plus two authenticated (the total): a newcomer evicts a stranger...
    assert table.open(6, "10.0.0.3", 1.0) == Admit(evict=(2,))
    for connection in (3, 4, 5, 6):
        table.authenticated(connection, BOB)
    # ...and when every connection is authenticated, a newcomer is refused: members come first.
    refused = table.open(7, "10.0.0.3", 2.0)
    assert isinstance(refused, Refuse) and "maximum of 6" in refused.reason
    assert len(table) == 6 and table.of_node(ALICE) == (0, 1)


def test_a_connection_that_does_not_authenticate_in_time_expires() -> None:
    table = Connections(limits(pending_per_address=10))
    table.open(1, "10.0.0.1", 0.0)
    table.open(2, "10.0.0.2", 4.0)
    table.open(3, "10.0.0.3", 8.0)
    table.authenticated(2, ALICE)
    assert table.next_deadline() == 10.0
    assert table.expired(9.9) == ()
    assert table.expired(10.0) == (1,)
    assert table.expired(100.0) == (1, 3)  # the authenticated one never expires
    table.closed(1)
    table.closed(1)  # forgetting twice is harmless
    assert table.next_deadline() == 18.0 and table.pending == 1


def test_authenticated_connections_are_capped_per_node() -> None:
    table = Connections(limits(pending_per_address=10))
    for connection in range(3):
        table.open(connection, "10.0.0.1", 0.0)
    assert table.authenticated(0, ALICE) == Promoted()
    assert table.authenticated(1, ALICE) == Promoted()
    assert table.authenticated(2, ALICE) == OverNodeCap(2)
    assert table.node_of(2) is None  # still pending: it will be closed
    table.closed(0)
    assert table.authenticated(2, ALICE) == Promoted()  # room again
    assert table.of_node(ALICE) == (1, 2)


def test_unknown_connections_and_closing_by_node() -> None:
    table = Connections(limits())
    assert table.authenticated(42, ALICE) == Unknown()
    table.open(1, "10.0.0.1", 0.0)
    table.open(2, "10.0.0.2", 0.0)
    table.authenticated(1, ALICE)
    table.authenticated(2, BOB)
    assert table.of_node(ALICE) == (1,)
    table.closed(1)
    assert table.of_node(ALICE) == () and table.of_node(BOB) == (2,)
    with pytest.raises(ValueError):
        table.authenticated(2, ALICE)  # one TLS connection cannot carry two identities
    with pytest.raises(ValueError):
        table.open(2, "10.0.0.2", 0.0)


def test_the_budget_keeps_a_reserve_of_descriptors() -> None:
    assert connection_budget(1024) == (1024 - RESERVED_FILES) // FILES_PER_CONNECTION == 256
    assert connection_budget(65536) == (65536 - RESERVED_FILES) // FILES_PER_CONNECTION
    assert connection_budget(256) == (256 - 128) // FILES_PER_CONNECTION  # a tiny limit keeps half
    assert connection_budget(4) == 1
    with pytest.raises(ValueError):
        connection_budget(0)


def test_mesh_limits_follow_the_open_file_limit() -> None:
    low = mesh_limits(1024)
    assert low.connections_total == 256 - JOIN_LIMITS.connections_total  # the join door shares the budget
    assert low.pending_total == low.connections_total // 2
    assert low.pending_per_address == 16 and low.per_node == 32 and low.deadline_s == 10.0
    high = mesh_limits(65536)
    assert high.pending_total == MAX_PENDING and high.connections_total > 20_000
    tiny = mesh_limits(64)
    assert tiny.connections_total >= 2 and tiny.pending_total >= 1
    # Every connection of both doors at once, and the reserve, still fit in the limit.
    for open_files in (256, 1024, 4096, 65536):
        door = mesh_limits(open_files)
        used = (door.connections_total + JOIN_LIMITS.connections_total) * FILES_PER_CONNECTION
        assert used + min(RESERVED_FILES, open_files // 2) <= open_files


def test_nonsense_limits_are_refused() -> None:
    with pytest.raises(ValueError):
        limits(pending_per_address=0)
    with pytest.raises(ValueError):
        limits(pending_total=10, connections_total=5)
    with pytest.raises(ValueError):
        limits(per_node=0)
    with pytest.raises(ValueError):
        limits(deadline_s=0)
