"""The mesh server over real mutual TLS on 127.0.0.1: who gets in, who is kept out, and that
the server keeps serving members whatever strangers throw at it."""

from __future__ import annotations

import asyncio
import os
import socket
from datetime import timedelta

import grpc
import pytest
from rpc_helpers import NOW, FakeNode, Member, description_of, eventually, front_door, new_member, run, serving

from orc.node.trust.certificates import certificate_node_id, generate_key, make_csr
from orc.node.protocol.ids import NodeId
from orc.node.rpc import credentials
from orc.node.rpc.authorization import Authorizer
from orc.node.trust.rate_limits import RateLimits
from orc.node.rpc.client import PeerClient
from orc.node.protocol.errors import (
    NotCertificateAuthority,
    PermissionDenied,
    RateLimited,
    ResourceExhausted,
    Revoked,
    Unauthenticated,
    Unavailable,
)
from orc.node.protocol.messages import AgentPayload, ExecuteRequest, ExecutionResult, ExecutionStarted, OfferRequest
from orc.node.models.runtimes.base import ChatMessage, GenerationParams
from orc.proto.v1 import mesh_pb2, mesh_pb2_grpc


def _client(member: Member, server: Member, port: int) -> PeerClient:
    return PeerClient(server.node_id, f"127.0.0.1:{port}", member.key_pem, member.cert_pem, member.ca_pem)


async def _next_beat(client: PeerClient, watch):
    return await asyncio.wait_for(watch.__anext__(), 5)


def _execute_request() -> ExecuteRequest:
    payload = AgentPayload("smollm2-135m", "ab" * 32, (ChatMessage("user", "Say hello"),),
                           GenerationParams(temperature=0.0, max_tokens=8, seed=1))
    return ExecuteRequest("exec-1", "run-1", "greeter", "lease-1", 30_000, payload)


def test_a_member_describes_watches_and_executes(mesh) -> None:
    server, member = new_member(mesh), new_member(mesh)
    node = FakeNode(description_of(server, mesh), authority=mesh)

    async def scenario() -> None:
        async with serving(node, server) as (port, _):
            async with _client(member, server, port) as client:
                assert await client.describe() == node.description
                watch = client.watch()
                beats = [await _next_beat(client, watch) for _ in range(3)]
                assert [b.sent_at_ms for b in beats] == [0, 1, 2]
                assert beats[0].load == node.description.load
                await watch.aclose()

                reply = await client.offer(OfferRequest("run-1", "greeter", "smollm2-135m", "ab" * 32, 12, 8))
                assert reply.accepted and reply.lease_id == "lease-1"
                events = [e async for e in client.execute(_execute_request())]
                assert events[0] == ExecutionStarted(server.node_id, "smollm2-135m")
                assert events[-1] == ExecutionResult("Hello", events[-1].usage, "stop")
                assert await client.cancel("running") is True
                assert await client.cancel("other") is False
                assert await client.revocations(0) == ()

                key = generate_key()
                renewed = await client.renew(make_csr(key, "kitchen-pi"))
                assert certificate_node_id(renewed) != member.node_id  # issued for the CSR's key

        callers = {caller for _, caller, _ in node.calls if caller is not None}
        assert callers == {member.node_id}  # the servicer saw the authenticated caller
        execute = next(arg for name, _, arg in node.calls if name == "execute")
        assert execute == _execute_request()

    run(scenario())


def test_a_backend_refusal_reaches_the_client_as_its_own_error(mesh) -> None:
    server, member = new_member(mesh), new_member(mesh)
    node = FakeNode(description_of(server, mesh), authority=None)  # not a CA holder

    async def scenario() -> None:
        async with serving(node, server) as (port, _):
            async with _client(member, server, port) as client:
                with pytest.raises(NotCertificateAuthority):
                    await client.renew(make_csr(generate_key(), "x"))

    run(scenario())


async def _call_describe(channel: grpc.aio.Channel) -> grpc.StatusCode:
    try:
        await mesh_pb2_grpc.NodeStub(channel).Describe(mesh_pb2.DescribeRequest(), timeout=5)
    except grpc.aio.AioRpcError as error:
        return error.code()
    finally:
        await channel.close()
    return grpc.StatusCode.OK


def test_strangers_are_refused_and_members_still_served(mesh, other_mesh) -> None:
    server, member = new_member(mesh), new_member(mesh)
    stranger = new_member(other_mesh)
    expired = new_member(mesh, now=NOW - timedelta(days=40), lifetime=timedelta(days=1))
    node = FakeNode(description_of(server, mesh))

    async def scenario() -> None:
        async with serving(node, server) as (port, _):
            address = f"127.0.0.1:{port}"
            options = credentials.channel_options(server.node_id)
            no_certificate = grpc.ssl_channel_credentials(root_certificates=mesh.certificate_pem)
            other_ca = credentials.channel_credentials(stranger.key_pem, stranger.cert_pem, mesh.certificate_pem)
            too_old = credentials.channel_credentials(expired.key_pem, expired.cert_pem, mesh.certificate_pem)
            refused = {
                "no certificate": await _call_describe(grpc.aio.secure_channel(address, no_certificate, options)),
                "other mesh": await _call_describe(grpc.aio.secure_channel(address, other_ca, options)),
                "expired": await _call_describe(grpc.aio.secure_channel(address, too_old, options)),
                "plaintext": await _call_describe(grpc.aio.insecure_channel(address)),
            }
            assert all(code == grpc.StatusCode.UNAVAILABLE for code in refused.values()), refused
            async with _client(member, server, port) as client:
                assert (await client.describe()).node_id == server.node_id
        assert all(caller == member.node_id for _, caller, _ in node.calls if caller)

    run(scenario())


def test_a_certificate_whose_name_is_not_its_key_is_refused(mesh) -> None:
    # The CA certificate chains to the CA (TLS accepts it as a client certificate) but its only
    # name is ca.<mesh>.orc.internal, not the node id of its key: the interceptor refuses it.
    server, member = new_member(mesh), new_member(mesh)
    node = FakeNode(description_of(server, mesh))
    impostor = Member(NodeId("x" * 20), mesh.key_pem, mesh.certificate_pem, mesh.certificate_pem)

    async def scenario() -> None:
        async with serving(node, server) as (port, _):
            async with _client(impostor, server, port) as client:
                with pytest.raises(Unauthenticated, match="not a valid node certificate"):
                    await client.describe()
            async with _client(member, server, port) as client:
                await client.describe()
        assert [name for name, _, _ in node.calls] == ["describe"]

    run(scenario())


def test_a_revoked_node_is_refused_on_an_open_channel_and_its_watch_is_cut(mesh) -> None:
    server, member, bystander = new_member(mesh), new_member(mesh), new_member(mesh)
    node = FakeNode(description_of(server, mesh), beat_interval=0.05)
    revoked: set[NodeId] = set()

    async def scenario() -> None:
        async with serving(node, server, revoked=revoked) as (port, authorizer):
            async with _client(member, server, port) as client, _client(bystander, server, port) as other:
                await client.describe()
                watch, others = client.watch(), other.watch()
                await _next_beat(client, watch)
                await _next_beat(other, others)
                assert authorizer.open_streams(member.node_id) == 1

                door = authorizer.gate
                assert door.connections == 2
                revoked.add(member.node_id)
                assert authorizer.cut_off(member.node_id) == 1
                with pytest.raises(Revoked):
                    for _ in range(100):  # at most a beat or two already in flight
                        await _next_beat(client, watch)
                await eventually(lambda: door.connections == 1)  # the server closed the revoked node's connection
                with pytest.raises(Revoked):  # a NEW call on the same channel: it connects again and is refused
                    for _ in range(3):
                        try:
                            await client.describe()
                        except Unavailable:  # sent before the channel noticed its connection was gone
                            continue
                assert authorizer.open_streams(member.node_id) == 0
                await eventually(lambda: member.node_id not in node.watching)  # the backend's stream was closed

                await _next_beat(other, others)  # the bystander's stream is untouched
                await others.aclose()

    run(scenario())


def test_a_revocation_ends_open_streams_even_without_cut_off(mesh) -> None:
    server, member = new_member(mesh), new_member(mesh)
    node = FakeNode(description_of(server, mesh), beat_interval=0.02)
    revoked: set[NodeId] = set()

    async def scenario() -> None:
        async with serving(node, server, revoked=revoked) as (port, _):
            async with _client(member, server, port) as client:
                watch = client.watch()
                await _next_beat(client, watch)
                revoked.add(member.node_id)
                with pytest.raises(PermissionDenied):
                    for _ in range(100):
                        await _next_beat(client, watch)

    run(scenario())


def test_too_many_calls_are_rate_limited(mesh) -> None:
    server, member = new_member(mesh), new_member(mesh)
    node = FakeNode(description_of(server, mesh))
    authorizer = Authorizer(lambda _: False, RateLimits(rate=0.001, burst=3), gate=front_door())

    async def scenario() -> None:
        async with serving(node, server, authorizer) as (port, _):
            async with _client(member, server, port) as client:
                for _ in range(3):
                    await client.describe()
                with pytest.raises(RateLimited):
                    await client.describe()
                channel = grpc.aio.secure_channel(
                    f"127.0.0.1:{port}",
                    credentials.channel_credentials(member.key_pem, member.cert_pem, member.ca_pem),
                    credentials.channel_options(server.node_id))
                assert await _call_describe(channel) == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert len([c for c in node.calls if c[0] == "describe"]) == 3

    run(scenario())


def test_open_streams_per_peer_are_capped(mesh) -> None:
    server, member = new_member(mesh), new_member(mesh)
    node = FakeNode(description_of(server, mesh), beat_interval=0.05)
    authorizer = Authorizer(lambda _: False, RateLimits(rate=1000, burst=1000), max_streams_per_peer=2,
                            gate=front_door())

    async def scenario() -> None:
        async with serving(node, server, authorizer) as (port, _):
            async with _client(member, server, port) as client:
                first, second, third = client.watch(), client.watch(), client.watch()
                await _next_beat(client, first)
                await _next_beat(client, second)
                with pytest.raises(ResourceExhausted):
                    await _next_beat(client, third)
                await first.aclose()
                await eventually(lambda: authorizer.open_streams(member.node_id) < 2)
                fourth = client.watch()
                await _next_beat(client, fourth)  # a slot freed up
                await second.aclose()
                await fourth.aclose()

    run(scenario())


def test_a_client_reaches_only_the_node_it_names(mesh) -> None:
    server, member, someone_else = new_member(mesh), new_member(mesh), new_member(mesh)
    node = FakeNode(description_of(server, mesh))

    async def scenario() -> None:
        async with serving(node, server) as (port, _):
            wrong = PeerClient(someone_else.node_id, f"127.0.0.1:{port}", member.key_pem, member.cert_pem,
                               member.ca_pem)
            with pytest.raises(Unavailable):
                await wrong.describe(timeout=5)
            await wrong.close()
            async with _client(member, server, port) as right:
                await right.describe()
        assert [name for name, _, _ in node.calls] == ["describe"]

    run(scenario())


def test_an_oversized_message_is_refused_and_the_server_goes_on(mesh) -> None:
    server, member = new_member(mesh), new_member(mesh)
    node = FakeNode(description_of(server, mesh), authority=mesh)

    async def scenario() -> None:
        async with serving(node, server) as (port, _):
            options = [o for o in credentials.channel_options(server.node_id)
                       if o[0] != "grpc.max_send_message_length"] + [("grpc.max_send_message_length", 64 << 20)]
            channel = grpc.aio.secure_channel(
                f"127.0.0.1:{port}", credentials.channel_credentials(member.key_pem, member.cert_pem, member.ca_pem),
                options)
            huge = mesh_pb2.RenewRequest(csr_pem=b"x" * (credentials.MAX_MESSAGE_BYTES + 1))
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await mesh_pb2_grpc.NodeStub(channel).Renew(huge, timeout=10)
            assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            await channel.close()
            async with _client(member, server, port) as client:
                await client.describe()
        assert "renew" not in [name for name, _, _ in node.calls]

    run(scenario())


def test_junk_on_the_port_does_not_hurt_the_server(mesh) -> None:
    server, member = new_member(mesh), new_member(mesh)
    node = FakeNode(description_of(server, mesh))

    async def junk(port: int, data: bytes) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(data)
        await writer.drain()
        try:
            await asyncio.wait_for(reader.read(4096), 2)
        except (asyncio.TimeoutError, ConnectionError):
            pass
        writer.close()

    async def scenario() -> None:
        async with serving(node, server) as (port, _):
            await junk(port, os.urandom(4096))
            await junk(port, b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + os.urandom(512))
            await junk(port, b"\x16\x03\x01\x02\x00" + os.urandom(512))  # a broken TLS ClientHello
            half_open = socket.create_connection(("127.0.0.1", port))  # connects, never speaks
            async with _client(member, server, port) as client:
                assert (await client.describe()).node_id == server.node_id
            half_open.close()

    run(scenario())


def test_concurrent_callers_are_told_apart(mesh) -> None:
    server, alice, bob = new_member(mesh), new_member(mesh), new_member(mesh)
    node = FakeNode(description_of(server, mesh))

    async def executions(client: PeerClient, who: Member) -> None:
        for i in range(10):
            request = _execute_request()
            request = ExecuteRequest(f"{who.node_id}-{i}", request.run_id, request.agent, request.lease_id,
                                     request.deadline_ms, request.payload)
            assert [e async for e in client.execute(request)][-1].output == "Hello"

    async def scenario() -> None:
        async with serving(node, server) as (port, _):
            async with _client(alice, server, port) as a, _client(bob, server, port) as b:
                await asyncio.gather(executions(a, alice), executions(b, bob))
        seen = [(caller, request.execution_id) for name, caller, request in node.calls if name == "execute"]
        assert len(seen) == 20
        assert all(execution_id.startswith(caller) for caller, execution_id in seen)

    run(scenario())


def test_a_servicer_without_the_authorizer_refuses_everyone(mesh) -> None:
    from orc.node.rpc.servicers import NodeServicer

    server, member = new_member(mesh), new_member(mesh)
    node = FakeNode(description_of(server, mesh))

    async def scenario() -> None:
        grpc_server = grpc.aio.server()
        mesh_pb2_grpc.add_NodeServicer_to_server(NodeServicer(node), grpc_server)
        port = grpc_server.add_secure_port(
            "127.0.0.1:0", credentials.server_credentials(server.key_pem, server.cert_pem, server.ca_pem))
        await grpc_server.start()
        try:
            async with _client(member, server, port) as client:
                with pytest.raises(Unauthenticated, match="Authorizer"):
                    await client.describe()
        finally:
            await grpc_server.stop(None)
        assert node.calls == []

    run(scenario())
