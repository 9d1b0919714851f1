"""Identifying a peer known only by address with a raw TLS handshake against the mesh CA."""

from __future__ import annotations

import asyncio

import pytest
from rpc_helpers import FakeJoin, FakeNode, description_of, new_member, run, serving

from orc.node.trust.certificates import ca_pin_of
from orc.node.trust.tokens import new_secret
from orc.node.rpc.credentials import fetch_join_certificate, probe_node_id
from orc.node.protocol.errors import PeerNotInMesh, TimedOut, Unavailable
from orc.node.rpc.servers import start_join_server


def test_the_probe_names_the_node_behind_an_address(mesh) -> None:
    server, member = new_member(mesh), new_member(mesh)

    async def scenario() -> None:
        async with serving(FakeNode(description_of(server, mesh)), server) as (port, _):
            found = await probe_node_id("127.0.0.1", port, member.key_pem, member.cert_pem, member.ca_pem)
        assert found == server.node_id

    run(scenario())


def test_a_node_of_another_mesh_is_not_taken_for_a_peer(mesh, other_mesh) -> None:
    stranger, member = new_member(other_mesh), new_member(mesh)

    async def scenario() -> None:
        async with serving(FakeNode(description_of(stranger, other_mesh)), stranger) as (port, _):
            with pytest.raises(PeerNotInMesh):
                await probe_node_id("127.0.0.1", port, member.key_pem, member.cert_pem, member.ca_pem)

    run(scenario())


def test_the_ca_certificate_is_not_a_node(mesh) -> None:
    member = new_member(mesh)

    async def scenario() -> None:
        server, (port,) = await start_join_server(FakeJoin(mesh, new_secret()), ["127.0.0.1:0"], mesh.key_pem,
                                                  mesh.certificate_pem)
        try:
            with pytest.raises(PeerNotInMesh, match="not a node's"):
                await probe_node_id("127.0.0.1", port, member.key_pem, member.cert_pem, member.ca_pem)
            fetched = await fetch_join_certificate("127.0.0.1", port)
            assert ca_pin_of(fetched) == mesh.pin
        finally:
            await server.stop(None)

    run(scenario())


def test_silence_closed_ports_and_non_tls_servers_are_clear_errors(mesh) -> None:
    member = new_member(mesh)

    async def silent(reader, writer) -> None:
        await asyncio.sleep(30)

    async def rude(reader, writer) -> None:
        writer.write(b"HTTP/1.1 400 Bad Request\r\n\r\n")
        writer.close()

    async def scenario() -> None:
        quiet = await asyncio.start_server(silent, "127.0.0.1", 0)
        noisy = await asyncio.start_server(rude, "127.0.0.1", 0)
        closed = await asyncio.start_server(rude, "127.0.0.1", 0)
        closed_port = closed.sockets[0].getsockname()[1]
        closed.close()
        await closed.wait_closed()
        try:
            with pytest.raises(TimedOut):
                await probe_node_id("127.0.0.1", quiet.sockets[0].getsockname()[1], member.key_pem,
                                    member.cert_pem, member.ca_pem, timeout=0.5)
            with pytest.raises(Unavailable):
                await probe_node_id("127.0.0.1", noisy.sockets[0].getsockname()[1], member.key_pem,
                                    member.cert_pem, member.ca_pem, timeout=3)
            with pytest.raises(Unavailable):
                await fetch_join_certificate("127.0.0.1", closed_port, timeout=3)
        finally:
            for server in (quiet, noisy):
                server.close()

    run(scenario())
