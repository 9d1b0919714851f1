"""A running daemon renews its certificate and serves the new one without a restart."""

from __future__ import annotations

import asyncio
import socket
import ssl
from pathlib import Path

from cryptography import x509

from orc.node.daemon import Daemon, DaemonOptions
from orc.node.home import Home
from orc.node.identity.store import IdentityStore
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


def test_renewal_swaps_the_served_certificate_in_place(tmp_path):
    from datetime import datetime, timezone

    home = Home.locate(tmp_path / "home")
    IdentityStore(home.identity_dir).init_mesh("attic", datetime.now(timezone.utc))
    port = free_port()
    daemon = Daemon(home, DaemonOptions(listen=f"127.0.0.1:{port}", mdns=False, models=("smollm2-135m-instruct",)))

    async def scenario():
        stop = asyncio.Event()
        runner = asyncio.create_task(daemon.run(stop))
        try:
            for _ in range(200):
                if getattr(daemon, "_peering", None) is not None:
                    break
                await asyncio.sleep(0.05)
            before = await asyncio.to_thread(served_certificate, port, home.identity_dir)
            await asyncio.sleep(1.1)  # certificates are dated to the second
            await daemon._renew(daemon._membership, daemon._peering)
            after = await asyncio.to_thread(served_certificate, port, home.identity_dir)
            identity = daemon._membership.identity
            async with PeerClient(identity.node_id, f"127.0.0.1:{port}", identity.key_pem,
                                  identity.certificate_pem, identity.ca_certificate_pem) as client:
                described = await client.describe()
            return before, after, described, identity
        finally:
            stop.set()
            await asyncio.wait_for(runner, 30)

    before, after, described, identity = asyncio.run(scenario())
    assert after.serial_number != before.serial_number
    assert after.not_valid_after_utc > before.not_valid_after_utc
    stored = x509.load_pem_x509_certificate(IdentityStore(home.identity_dir).load().certificate_pem)
    assert stored.serial_number == after.serial_number  # on disk first, then served
    assert described.node_id == identity.node_id  # same node, same id, across the renewal
