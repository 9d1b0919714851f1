"""Failed mesh calls are counted for /metrics, on both sides of the wire: a client's failed call by
method and gRPC status, a server's refusal by its kind. Real mutual TLS on 127.0.0.1."""

from __future__ import annotations

import asyncio
import socket

import pytest
from rpc_helpers import NOW, FakeNode, description_of, front_door, new_member, run, serving

from orc.node.metrics import NodeMetrics
from orc.node.protocol.errors import NotCertificateAuthority, RateLimited, Revoked, Unavailable
from orc.node.protocol.ids import NodeId
from orc.node.rpc.authorization import Authorizer, refusal_reason
from orc.node.rpc.client import PeerClient
from orc.node.rpc.connector import MtlsConnector
from orc.node.trust.certificates import generate_key, make_csr
from orc.node.trust.membership import Membership
from orc.node.trust.rate_limits import RateLimits
from orc.node.trust.store import IdentityStore


def errors(metrics: NodeMetrics) -> dict[tuple[str, str], float]:
    """orc_mesh_rpc_errors_total by (method, code), as scraped."""
    [family] = [m for m in metrics.registry.collect() if m.name == "orc_mesh_rpc_errors"]
    return {(s.labels["method"], s.labels["code"]): s.value for s in family.samples
            if s.name == "orc_mesh_rpc_errors_total"}


def rejected(metrics: NodeMetrics) -> dict[str, float]:
    [family] = [m for m in metrics.registry.collect() if m.name == "orc_mesh_rpc_rejected"]
    return {s.labels["reason"]: s.value for s in family.samples if s.name == "orc_mesh_rpc_rejected_total"}


def closed_port() -> int:
    """A port on 127.0.0.1 nothing listens on (bound, then let go)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_a_failed_call_is_counted_by_method_and_status_and_the_refusal_by_the_server(mesh) -> None:
    server, member = new_member(mesh), new_member(mesh)
    node = FakeNode(description_of(server, mesh), authority=None)  # not a CA holder: Renew fails
    client_side, server_side = NodeMetrics(), NodeMetrics()
    authorizer = Authorizer(lambda _: False, RateLimits(rate=0.001, burst=3), gate=front_door(),
                            observer=server_side)

    async def scenario() -> None:
        async with serving(node, server, authorizer) as (port, _):
            async with PeerClient(server.node_id, f"127.0.0.1:{port}", member.key_pem, member.cert_pem,
                                  member.ca_pem, observer=client_side) as client:
                await client.describe()
                assert errors(client_side) == {}  # a call that worked counts nothing
                with pytest.raises(NotCertificateAuthority):
                    await client.renew(make_csr(generate_key(), "x"))
                await client.describe()
                with pytest.raises(RateLimited):  # the fourth call: past the burst of 3
                    await client.describe()

    run(scenario())
    assert errors(client_side) == {("Renew", "FAILED_PRECONDITION"): 1, ("Describe", "RESOURCE_EXHAUSTED"): 1}
    assert rejected(server_side) == {"rate_limited": 1}  # Renew's failure was the servicer's, not a refusal


def test_an_unreachable_peer_is_counted_through_the_connectors_links(tmp_path) -> None:
    store = IdentityStore(tmp_path / "identity")
    membership = Membership(store, store.init_mesh("attic", NOW))
    metrics = NodeMetrics()
    connector = MtlsConnector(membership, observer=metrics)

    async def scenario() -> None:
        async with connector.link(NodeId("b" * 20), f"127.0.0.1:{closed_port()}") as link:
            with pytest.raises(Unavailable):
                await link.describe(timeout=2.0)

    run(scenario())
    assert errors(metrics) == {("Describe", "UNAVAILABLE"): 1}


def test_calls_ended_by_the_clients_own_close_are_not_failures(mesh) -> None:
    server, member = new_member(mesh), new_member(mesh)
    node = FakeNode(description_of(server, mesh), beat_interval=0.05)
    metrics = NodeMetrics()

    async def scenario() -> None:
        async with serving(node, server) as (port, _):
            client = PeerClient(server.node_id, f"127.0.0.1:{port}", member.key_pem, member.cert_pem,
                                member.ca_pem, observer=metrics)
            watch = client.watch()
            await watch.__anext__()
            await client.close()  # the daemon forgetting a peer: its open watch ends CANCELLED
            with pytest.raises(asyncio.CancelledError):  # cut off here, not failed by the peer
                await watch.__anext__()

    run(scenario())
    assert errors(metrics) == {}


def test_a_revoked_callers_refusal_is_counted_by_kind(mesh) -> None:
    server, member = new_member(mesh), new_member(mesh)
    node = FakeNode(description_of(server, mesh))
    metrics = NodeMetrics()
    authorizer = Authorizer({member.node_id}.__contains__, RateLimits(rate=1000, burst=1000), gate=front_door(),
                            observer=metrics)

    async def scenario() -> None:
        async with serving(node, server, authorizer) as (port, _):
            async with PeerClient(server.node_id, f"127.0.0.1:{port}", member.key_pem, member.cert_pem,
                                  member.ca_pem) as client:
                with pytest.raises(Revoked):
                    await client.describe()

    run(scenario())
    assert rejected(metrics) == {"revoked": 1}
    assert refusal_reason(RateLimited()) == "rate_limited" and refusal_reason(Revoked()) == "revoked"
