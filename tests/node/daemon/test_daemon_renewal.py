"""A running daemon renews its certificate and serves the new one without a restart."""

from __future__ import annotations

import asyncio
import dataclasses
import contextlib
import socket
import ssl
from collections.abc import AsyncIterator
from pathlib import Path

from cryptography import x509

from orc.node.daemon.root import Daemon, DaemonOptions
from orc.node.home import Home
from orc.node.trust.store import IdentityStore
from orc.node.rpc.client import PeerClient


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def served_certificate(port: int, folder: Path) -> x509.Certificate:
    """The certificate the node presents, fetched with its own (valid) client certificate."""
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(folder / "ca.crt"))
    context.check_hostname = False
    context.load_cert_chain(str(folder / "node.crt"), str(folder / "node.key"))
    context.set_alpn_protocols(["h2"])
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
        with context.wrap_socket(raw) as tls:
            return x509.load_der_x509_certificate(tls.getpeercert(binary_form=True))


@contextlib.asynccontextmanager
async def running(daemon: Daemon) -> AsyncIterator[None]:
    """The daemon, started and serving (its peering is up), stopped at the end."""
    stop = asyncio.Event()
    runner = asyncio.create_task(daemon.run(stop))
    try:
        await daemon.startup.wait_running(30)
        assert daemon.node is not None  # built with the running parts
        yield
    finally:
        stop.set()
        await asyncio.wait_for(runner, 30)


def test_renewal_swaps_the_served_certificate_in_place(tmp_path):
    from datetime import datetime, timezone

    home = Home.locate(tmp_path / "home")
    IdentityStore(home.identity_dir).init_mesh("attic", datetime.now(timezone.utc))
    port = free_port()
    daemon = Daemon(home, DaemonOptions(listen=f"127.0.0.1:{port}", mdns=False, models=("smollm2-135m-instruct",), no_api=True))

    async def scenario():
        async with running(daemon):
            before = await asyncio.to_thread(served_certificate, port, home.identity_dir)
            await asyncio.sleep(1.1)  # certificates are dated to the second
            await daemon._renew(daemon.node)
            after = await asyncio.to_thread(served_certificate, port, home.identity_dir)
            identity = daemon.node.membership.identity
            async with PeerClient(identity.node_id, f"127.0.0.1:{port}", identity.key_pem,
                                  identity.certificate_pem, identity.ca_certificate_pem) as client:
                described = await client.describe()
            return before, after, described, identity

    before, after, described, identity = asyncio.run(scenario())
    assert after.serial_number != before.serial_number
    assert after.not_valid_after_utc > before.not_valid_after_utc
    stored = x509.load_pem_x509_certificate(IdentityStore(home.identity_dir).load().certificate_pem)
    assert stored.serial_number == after.serial_number  # on disk first, then served
    assert described.node_id == identity.node_id  # same node, same id, across the renewal


class _Renewer:
    """The Renew side of a mesh node: junk, or certificates from a real CA's membership."""

    def __init__(self, answer) -> None:
        self.answer = answer
        self.calls = 0

    async def renew(self, caller, csr_pem: bytes) -> bytes:
        self.calls += 1
        return self.answer(caller, csr_pem)


def _node_certificate(authority):
    """A key and certificate of a new member (key PEM, certificate PEM, node id)."""
    from datetime import datetime, timezone

    from orc.node.trust.certificates import generate_key, key_to_pem
    from orc.node.trust.ids import node_id_for

    key = generate_key()
    return key_to_pem(key), authority.issue_for_key(key.public_key(), datetime.now(timezone.utc)), \
        node_id_for(key.public_key())


def test_a_junk_answer_from_a_ca_claiming_peer_moves_renewal_on_to_the_real_ca(tmp_path, caplog):
    """The peer recorded as the issuer claims the CA and answers Renew with junk: the next
    CA-claiming peer renews the certificate, the junk is never installed, the granting node
    becomes the issuer, and the junk answerer is asked last next time."""
    from datetime import datetime, timezone
    from types import SimpleNamespace

    from orc.node.trust.revocation import RevocationLog
    from orc.node.trust.store import Issuer
    from orc.node.trust.membership import Membership
    from orc.node.rpc.authorization import Authorizer
    from orc.node.rpc.connections import mesh_limits
    from orc.node.rpc.front_door import FrontDoor
    from orc.node.rpc.servers import start_mesh_server

    now = datetime.now(timezone.utc)
    ca_store = IdentityStore(tmp_path / "ca" / "identity")
    ca = Membership(ca_store, ca_store.init_mesh("attic", now))
    authority = ca.identity.authority
    junk_key, junk_cert, junk_id = _node_certificate(authority)

    home = Home.locate(tmp_path / "member")
    store = IdentityStore(home.identity_dir)
    key = store.pending_key()
    store.save_membership("laptop", authority.issue_for_key(key.public_key(), now), authority.certificate_pem,
                          RevocationLog(), Issuer(junk_id, None))
    port = free_port()
    daemon = Daemon(home, DaemonOptions(listen=f"127.0.0.1:{port}", mdns=False, models=("smollm2-135m-instruct",), no_api=True))
    junk = _Renewer(lambda caller, csr: b"-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydGlmaWNhdGU=\n"
                                        b"-----END CERTIFICATE-----\n")
    genuine = _Renewer(ca.renew_for)

    async def serve(backend, key_pem: bytes, cert_pem: bytes):
        door = FrontDoor(mesh_limits(1024))
        authorizer = Authorizer(lambda _: False, gate=door)
        server, _ = await start_mesh_server(backend, ["127.0.0.1:0"], key_pem, cert_pem, authority.certificate_pem,
                                            authorizer, door)
        return server

    def peer(node_id, server):
        description = SimpleNamespace(certificate_authority=True)
        return SimpleNamespace(node_id=node_id, addresses=(f"127.0.0.1:{server.ports[0]}",), description=description)

    async def scenario():
        junk_server = await serve(junk, junk_key, junk_cert)
        ca_server = await serve(genuine, ca.identity.key_pem, ca.identity.certificate_pem)
        # Both claim the CA; what the member's peering would list, the junk answerer first.
        peers = [peer(junk_id, junk_server), peer(ca.identity.node_id, ca_server)]
        peering = SimpleNamespace(table=SimpleNamespace(live=lambda: peers))
        try:
            async with running(daemon):
                before = await asyncio.to_thread(served_certificate, port, home.identity_dir)
                await asyncio.sleep(1.1)  # certificates are dated to the second
                await daemon._renew(dataclasses.replace(daemon.node, peering=peering))
                after = await asyncio.to_thread(served_certificate, port, home.identity_dir)
                calls_after_first = (junk.calls, genuine.calls)
                await asyncio.sleep(1.1)
                await daemon._renew(dataclasses.replace(daemon.node, peering=peering))  # the junk answerer now goes last: not asked
                return before, after, calls_after_first, (junk.calls, genuine.calls), peers[1].addresses[0]
        finally:
            await junk_server.stop(None)
            await ca_server.stop(None)

    before, after, first, second, ca_address = asyncio.run(scenario())
    assert first == (1, 1)  # the junk peer was asked first (it was the issuer), then the real CA
    assert second == (1, 2)
    assert after.serial_number != before.serial_number
    stored = IdentityStore(home.identity_dir)
    assert stored.load_issuer() == Issuer(ca.identity.node_id, ca_address)  # who granted it, on disk
    assert x509.load_pem_x509_certificate(stored.load().certificate_pem).serial_number != after.serial_number
    assert daemon._junk_renewers == (junk_id,)
    failures = [r.getMessage() for r in caplog.records if "certificate renewal from" in r.getMessage()]
    assert len(failures) == 1 and junk_id in failures[0] and "unusable answer" in failures[0]
