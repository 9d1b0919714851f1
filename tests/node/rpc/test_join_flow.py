"""Joining over real TLS: the pin is checked before anything is sent, and the grant works."""

from __future__ import annotations

import grpc
import pytest
from rpc_helpers import FakeJoin, FakeNode, Member, description_of, new_member, run, serving

from orc.node.trust.certificates import certificate_node_id, generate_key, key_to_pem, make_csr
from orc.node.trust.ids import node_id_for
from orc.node.trust.tokens import JoinToken, new_secret
from orc.node.rpc import credentials
from orc.node.rpc.client import PeerClient, join
from orc.node.protocol.errors import JoinRefused, PinMismatch, Unavailable
from orc.node.rpc.servers import start_join_server
from orc.proto.v1 import mesh_pb2, mesh_pb2_grpc


async def _join_server(backend: FakeJoin):
    authority = backend.authority
    return await start_join_server(backend, ["127.0.0.1:0"], authority.key_pem, authority.certificate_pem)


def test_a_joiner_with_the_right_token_gets_a_working_certificate(mesh) -> None:
    secret = new_secret()
    backend = FakeJoin(mesh, secret)
    existing = new_member(mesh)
    node = FakeNode(description_of(existing, mesh))
    key = generate_key()

    async def scenario() -> None:
        server, (port,) = await _join_server(backend)
        try:
            grant = await join("127.0.0.1", port, JoinToken(mesh.pin, secret), make_csr(key, "newbie"), "newbie")
        finally:
            await server.stop(None)
        assert certificate_node_id(grant.certificate_pem) == node_id_for(key.public_key())
        assert grant.ca_certificate_pem == mesh.certificate_pem
        assert backend.calls[0][0] == "newbie" and backend.calls[0][1].startswith("127.0.0.1:")  # the real source

        joined = Member(node_id_for(key.public_key()), key_to_pem(key), grant.certificate_pem,
                        grant.ca_certificate_pem)
        async with serving(node, existing) as (mesh_port, _):
            async with PeerClient(existing.node_id, f"127.0.0.1:{mesh_port}", joined.key_pem, joined.cert_pem,
                                  joined.ca_pem) as client:
                assert (await client.describe()).node_id == existing.node_id

    run(scenario())


def test_a_wrong_secret_is_refused(mesh) -> None:
    backend = FakeJoin(mesh, new_secret())

    async def scenario() -> None:
        server, (port,) = await _join_server(backend)
        try:
            with pytest.raises(JoinRefused):
                await join("127.0.0.1", port, JoinToken(mesh.pin, new_secret()), make_csr(generate_key(), "x"), "x")
        finally:
            await server.stop(None)
        assert len(backend.calls) == 1

    run(scenario())


def test_a_join_server_of_another_mesh_gets_nothing(mesh, other_mesh) -> None:
    # Someone on the LAN runs a join server with their own CA where ours was expected.
    secret = new_secret()
    impostor = FakeJoin(other_mesh, secret)

    async def scenario() -> None:
        server, (port,) = await _join_server(impostor)
        try:
            with pytest.raises(PinMismatch, match="nothing was sent"):
                await join("127.0.0.1", port, JoinToken(mesh.pin, secret), make_csr(generate_key(), "x"), "x")
        finally:
            await server.stop(None)
        assert impostor.calls == []  # neither the secret nor the request reached it

    run(scenario())


def test_the_join_server_serves_only_join(mesh) -> None:
    backend = FakeJoin(mesh, new_secret())

    async def scenario() -> None:
        server, (port,) = await _join_server(backend)
        channel = grpc.aio.secure_channel(f"127.0.0.1:{port}", credentials.join_channel_credentials(mesh.certificate_pem),
                                          credentials.join_channel_options(mesh.mesh_id))
        try:
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await mesh_pb2_grpc.NodeStub(channel).Describe(mesh_pb2.DescribeRequest(), timeout=5)
            assert caught.value.code() == grpc.StatusCode.UNIMPLEMENTED
            big = mesh_pb2.JoinRequest(secret="s", csr_pem=b"x" * (credentials.MAX_JOIN_MESSAGE_BYTES + 1), name="x")
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await mesh_pb2_grpc.JoinStub(channel).Join(big, timeout=5)
            assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        finally:
            await channel.close()
            await server.stop(None)
        assert backend.calls == []

    run(scenario())


def test_joining_a_closed_port_says_so(mesh) -> None:
    async def scenario() -> None:
        server, (port,) = await _join_server(FakeJoin(mesh, new_secret()))
        await server.stop(None)
        with pytest.raises(Unavailable):
            await join("127.0.0.1", port, JoinToken(mesh.pin, new_secret()), make_csr(generate_key(), "x"), "x",
                       timeout=3)

    run(scenario())
