"""The front door with real sockets on loopback: strangers' idle connections are capped and
closed, members keep being served over mutual TLS, revoked members lose their connections.

Strangers connect from 127.0.0.2 and 127.0.0.3 (all of 127/8 is loopback on Linux), members from
127.0.0.1, so the per-address caps tell them apart as they would on a LAN.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import socket
import sys
from collections.abc import Iterator

import grpc
import pytest
from rpc_helpers import FakeJoin, FakeNode, Member, description_of, eventually, front_door, new_member, run, serving

from orc.node.trust.certificates import generate_key, make_csr
from orc.node.protocol.ids import NodeId
from orc.node.trust.tokens import JoinToken, new_secret
from orc.node.rpc import client as rpc_client
from orc.node.rpc.authorization import Authorizer
from orc.node.trust.rate_limits import RateLimits
from orc.node.rpc.client import PeerClient
from orc.node.rpc.credentials import probe_node_id
from orc.node.rpc.connections import JOIN_LIMITS, DoorLimits
from orc.node.protocol.errors import ResourceExhausted, Revoked
from orc.node.rpc.front_door import FrontDoor, address_key, upstream_port_of
from orc.node.rpc.sockets import PortInUse, raise_open_file_limit
from orc.node.rpc.servers import start_join_server

linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"),
                                reason="strangers connect from 127.0.0.2, which only Linux routes to loopback")


def _client(member: Member, server: Member, port: int) -> PeerClient:
    return PeerClient(server.node_id, f"127.0.0.1:{port}", member.key_pem, member.cert_pem, member.ca_pem)


def _authorizer(limits: DoorLimits | None = None, revoked: set[NodeId] | None = None) -> Authorizer:
    door = FrontDoor(limits) if limits is not None else front_door()
    revoked_ids = revoked if revoked is not None else set()
    return Authorizer(revoked_ids.__contains__, RateLimits(rate=1000, burst=1000), gate=door)


def _limits(**changes) -> DoorLimits:
    values = dict(pending_per_address=4, pending_total=8, connections_total=64, per_node=32, deadline_s=10.0)
    values.update(changes)
    return DoorLimits(**values)


@contextlib.contextmanager
def idle_connections(port: int, count: int, source: str = "127.0.0.2") -> Iterator[list[socket.socket]]:
    """`count` TCP connections from `source` that send nothing; all closed at the end."""
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket()
            sockets.append(sock)
            sock.bind((source, 0))
            sock.connect(("127.0.0.1", port))
            sock.setblocking(False)
        yield sockets
    finally:
        for sock in sockets:
            sock.close()


def closed_by_server(sock: socket.socket) -> bool:
    try:
        return sock.recv(1) == b""
    except BlockingIOError:
        return False
    except OSError as error:
        return error.errno in (errno.ECONNRESET, errno.EPIPE)


async def _channel_closed(client: PeerClient) -> bool:
    return client._channel.get_state(try_to_connect=False) != grpc.ChannelConnectivity.READY


@linux_only
def test_idle_strangers_are_capped_per_address_and_members_are_still_served(mesh) -> None:
    server, member = new_member(mesh), new_member(mesh)
    node = FakeNode(description_of(server, mesh))

    async def scenario() -> None:
        async with serving(node, server) as (port, authorizer):
            door = authorizer.gate
            per_address = door.limits.pending_per_address
            with idle_connections(port, per_address + 24) as strangers:
                await eventually(lambda: sum(closed_by_server(s) for s in strangers) == 24)
                assert door.pending == per_address
                async with _client(member, server, port) as client:
                    assert (await client.describe()).node_id == server.node_id
                    assert door.pending == per_address and door.connections == per_address + 1
                assert sum(closed_by_server(s) for s in strangers) == 24  # the kept ones are still open

    run(scenario())


@linux_only
def test_a_newcomer_from_a_crowded_address_closes_that_address_s_oldest(mesh) -> None:
    """Stale connections of a member's own address (abandoned probes, a reconnect racing the old
    connection) never shut it out: the oldest gives way."""
    server, member = new_member(mesh), new_member(mesh)
    authorizer = _authorizer(_limits(pending_per_address=4, pending_total=8))

    async def scenario() -> None:
        async with serving(FakeNode(description_of(server, mesh)), server, authorizer) as (port, _):
            with idle_connections(port, 4, "127.0.0.1") as stale:
                await eventually(lambda: authorizer.gate.pending == 4)
                for _ in range(3):  # TLS probes, as peering makes them
                    assert await probe_node_id("127.0.0.1", port, member.key_pem, member.cert_pem,
                                               member.ca_pem) == server.node_id
                async with _client(member, server, port) as client:
                    assert (await client.describe()).node_id == server.node_id
                # The first probe found the address full and closed its oldest stale connection.
                await eventually(lambda: closed_by_server(stale[0]))
                assert authorizer.gate.pending <= 4

    run(scenario())


@linux_only
def test_an_idle_connection_costs_the_grpc_server_nothing(mesh) -> None:
    server = new_member(mesh)

    async def scenario() -> None:
        async with serving(FakeNode(description_of(server, mesh)), server) as (port, authorizer):
            door = authorizer.gate
            with idle_connections(port, 10) as strangers:
                await eventually(lambda: door.connections == 10)
                await asyncio.sleep(0.1)
                assert door._by_upstream_port == {}  # no relay to gRPC until a byte arrives
                strangers[0].send(b"\x16\x03\x01")
                await eventually(lambda: len(door._by_upstream_port) == 1)
            await eventually(lambda: door.connections == 0)  # closing is noticed at once

    run(scenario())


@linux_only
def test_when_the_door_is_full_a_newcomer_evicts_the_oldest_idle_stranger(mesh) -> None:
    server, member = new_member(mesh), new_member(mesh)
    authorizer = _authorizer(_limits(pending_per_address=4, pending_total=8))

    async def scenario() -> None:
        async with serving(FakeNode(description_of(server, mesh)), server, authorizer) as (port, _):
            with idle_connections(port, 4, "127.0.0.2") as first, idle_connections(port, 4, "127.0.0.3") as second:
                await eventually(lambda: authorizer.gate.pending == 8)
                async with _client(member, server, port) as client:
                    assert (await client.describe()).node_id == server.node_id
                await eventually(lambda: closed_by_server(first[0]))  # the oldest made room
                assert not any(closed_by_server(s) for s in second)

    run(scenario())


@linux_only
def test_a_connection_that_makes_no_admitted_call_is_closed_at_its_deadline(mesh) -> None:
    server, member = new_member(mesh), new_member(mesh)
    authorizer = _authorizer(_limits(deadline_s=0.3))

    async def scenario() -> None:
        async with serving(FakeNode(description_of(server, mesh)), server, authorizer) as (port, _):
            door = authorizer.gate
            async with _client(member, server, port) as client:
                await client.describe()
                with idle_connections(port, 1) as [idle]:
                    await eventually(lambda: closed_by_server(idle))
                await asyncio.sleep(0.5)
                await client.describe()  # authenticated: it outlives the deadline
                assert door.connections == 1 and door.pending == 0
                assert not await _channel_closed(client)

    run(scenario())


@linux_only
def test_revoking_a_member_closes_its_connections_from_the_server_side(mesh) -> None:
    server, member, bystander = new_member(mesh), new_member(mesh), new_member(mesh)
    revoked: set[NodeId] = set()
    authorizer = _authorizer(revoked=revoked)

    async def scenario() -> None:
        async with serving(FakeNode(description_of(server, mesh)), server, authorizer) as (port, _):
            door = authorizer.gate
            clients = [_client(member, server, port) for _ in range(5)]
            other = _client(bystander, server, port)
            try:
                for client in (*clients, other):
                    await client.describe()
                assert door.connections == 6 and door.pending == 0
                revoked.add(member.node_id)
                authorizer.cut_off(member.node_id)  # what Membership.on_revoked does in the daemon
                await eventually(lambda: door.connections == 1)
                for client in clients:
                    await eventually_async(lambda c=client: _channel_closed(c))
                assert (await other.describe()).node_id == server.node_id  # the bystander is untouched
            finally:
                for client in (*clients, other):
                    await client.close()

    run(scenario())


async def eventually_async(condition, timeout: float = 5.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not await condition():
        assert loop.time() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


@linux_only
def test_a_revoked_caller_is_refused_and_its_connection_closed(mesh, caplog) -> None:
    server, member = new_member(mesh), new_member(mesh)
    authorizer = _authorizer(revoked={member.node_id})

    async def scenario() -> None:
        async with serving(FakeNode(description_of(server, mesh)), server, authorizer) as (port, _):
            async with _client(member, server, port) as client:
                with pytest.raises(Revoked):
                    await client.describe()
                await eventually(lambda: authorizer.gate.connections == 0)
                await eventually_async(lambda: _channel_closed(client))

    run(scenario())
    refused = [r.getMessage() for r in caplog.records if "refused /orc.v1.Node/Describe" in r.getMessage()]
    assert len(refused) == 1 and "127.0.0.1:" in refused[0]  # the real source, from the front door


@linux_only
def test_a_node_holding_too_many_connections_is_refused_one_more(mesh) -> None:
    server, member = new_member(mesh), new_member(mesh)
    authorizer = _authorizer(_limits(per_node=2))

    async def scenario() -> None:
        async with serving(FakeNode(description_of(server, mesh)), server, authorizer) as (port, _):
            clients = [_client(member, server, port) for _ in range(3)]
            try:
                await clients[0].describe()
                await clients[1].describe()
                with pytest.raises(ResourceExhausted):
                    await clients[2].describe()
                await eventually(lambda: authorizer.gate.connections == 2)
                await clients[0].describe()  # the ones it had still work
            finally:
                for client in clients:
                    await client.close()

    run(scenario())


@linux_only
def test_calls_that_do_not_come_through_the_front_door_are_refused(mesh) -> None:
    server, member = new_member(mesh), new_member(mesh)

    async def scenario() -> None:
        async with serving(FakeNode(description_of(server, mesh)), server) as (_, authorizer):
            async with _client(member, server, authorizer.gate.upstream_port) as client:
                with pytest.raises(ResourceExhausted, match="did not come through"):
                    await client.describe()

    run(scenario())


@linux_only
def test_one_port_one_server(mesh) -> None:
    server = new_member(mesh)

    async def scenario() -> None:
        async with serving(FakeNode(description_of(server, mesh)), server) as (port, _):
            with pytest.raises(PortInUse, match=f"port {port} on 127.0.0.1 is in use"):
                await FrontDoor(_limits()).open([("127.0.0.1", port)], 1)
            with pytest.raises(PortInUse):
                await FrontDoor(_limits()).open([("0.0.0.0", port)], 1)

    run(scenario())


@linux_only
def test_the_join_server_caps_idle_strangers_and_still_admits_a_joiner(mesh) -> None:
    secret = new_secret()
    backend = FakeJoin(mesh, secret)

    async def scenario() -> None:
        server, (port,) = await start_join_server(backend, ["127.0.0.1:0"], mesh.key_pem, mesh.certificate_pem)
        try:
            with idle_connections(port, JOIN_LIMITS.pending_per_address + 6) as strangers:
                await eventually(lambda: sum(closed_by_server(s) for s in strangers) == 6)
                grant = await rpc_client.join("127.0.0.1", port, JoinToken(mesh.pin, secret),
                                              make_csr(generate_key(), "newcomer"), "newcomer", timeout=5)
                assert grant.ca_certificate_pem == mesh.certificate_pem
            assert backend.calls and backend.calls[0][1].startswith("127.0.0.1:")  # the real source address
        finally:
            await server.stop(None)

    run(scenario())


# ---- pieces ----

def test_the_open_file_limit_is_raised_to_the_hard_limit() -> None:
    applied: list[tuple[int, int]] = []
    assert raise_open_file_limit(lambda: (1024, 65536), applied.append) == 65536
    assert applied == [(65536, 65536)]


def test_a_kernel_that_refuses_the_hard_limit_gets_the_highest_value_it_takes() -> None:
    import resource

    tried: list[int] = []

    def set_limits(pair: tuple[int, int]) -> None:  # macOS: "unlimited", but no more than 24576
        tried.append(pair[0])
        if pair[0] > 24576:
            raise ValueError("not allowed to raise maximum limit")

    assert raise_open_file_limit(lambda: (256, resource.RLIM_INFINITY), set_limits) == 1 << 14
    assert tried == [1 << 20, 1 << 19, 1 << 18, 1 << 17, 1 << 16, 1 << 15, 1 << 14]
    assert raise_open_file_limit(lambda: (4096, 4096), set_limits) == 4096  # nothing to raise
    assert raise_open_file_limit(lambda: (1024, 2048), lambda _: (_ for _ in ()).throw(OSError())) == 1024


def test_peers_and_addresses() -> None:
    assert upstream_port_of("ipv4:127.0.0.1:40123") == 40123
    assert upstream_port_of("ipv4:10.0.0.1:40123") is None
    assert upstream_port_of("ipv6:[::1]:40123") is None
    assert address_key("10.0.0.9") == "10.0.0.9"
    assert address_key("::ffff:10.0.0.9") == "10.0.0.9"
    assert address_key("2001:db8:1:2:aaaa::1") == address_key("2001:db8:1:2:bbbb::2") == "2001:db8:1:2::/64"
