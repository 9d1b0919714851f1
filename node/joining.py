"""Joining a mesh with a token: find the inviter's join server, prove the invitation, store the grant.

The token's pin names the mesh (its CA key hash), so the joiner looks for that mesh on the LAN
(mDNS adverts carry `jp`, the join port, while an invitation is pending) and also tries any
`--peer HOST:PORT` (whose join server is on PORT + 1). The pin is checked against the join
server's certificate before the secret or the certificate request leaves this machine
(`orc.node.rpc.client.join`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Sequence

from orc.node.description import DEFAULT_PORT, PROTOCOL_VERSION
from orc.node.discovery.peers import Hint
from orc.node.discovery.static import Endpoint
from orc.node.discovery.txt import Advert
from orc.node.identity.certificates import check_ca_certificate, make_csr
from orc.node.identity.ids import mesh_id_from_pin, node_id_for
from orc.node.identity.revocation import RevocationLog, decode_entries
from orc.node.identity.store import Identity, IdentityStore, Issuer
from orc.node.identity.tokens import JoinToken
from orc.node.rpc import client as rpc_client
from orc.node.rpc.errors import JoinRefused, PinMismatch, RpcError

log = logging.getLogger(__name__)

JOIN_TIMEOUT = 30.0  # seconds to find a join server and be admitted


class JoinFailed(Exception):
    """The mesh could not be joined; the message says why and what to try."""


async def join_mesh(store: IdentityStore, token_text: str, name: str, *, peers: Sequence[Endpoint] = (),
                    mdns: bool = True, addresses: Sequence[str] = (), interfaces: Sequence[str] | None = None,
                    timeout: float = JOIN_TIMEOUT) -> Identity:
    """Join the mesh `token_text` invites to, store the membership, and return the new identity."""
    token = JoinToken.parse(token_text)
    key = store.pending_key()
    csr = make_csr(key, name)
    mesh_id = mesh_id_from_pin(token.pin)
    # (host, join port, the inviter as far as known: recorded as the issuer to renew from first)
    candidates: asyncio.Queue[tuple[str, int, Issuer]] = asyncio.Queue()
    for peer in peers:
        candidates.put_nowait((peer.host, peer.port + 1, Issuer(None, str(peer))))

    def found(hint: Hint) -> None:
        advert = hint.advert
        if advert is not None and advert.join_port is not None:
            host = hint.address.rsplit(":", 1)[0].strip("[]")
            candidates.put_nowait((host, advert.join_port, Issuer(hint.node_id, hint.address)))

    browser: asyncio.Task[None] | None = None
    if mdns:
        from orc.node.discovery.mdns import MdnsDiscovery

        # Browsing needs an advert of our own; this one names the node we are about to become.
        advert = Advert(PROTOCOL_VERSION, node_id_for(key.public_key()), mesh_id, DEFAULT_PORT, 0, None, None,
                        False, 0, None)
        try:
            discovery = MdnsDiscovery(advert, list(addresses) or ["127.0.0.1"], list(interfaces) if interfaces else None,
                                      found)
            browser = asyncio.create_task(discovery.run())
        except (OSError, ValueError) as error:
            log.warning("mDNS unavailable while joining (%s); only --peer addresses are tried", error)
    if not peers and browser is None:
        raise JoinFailed("no way to find the mesh: mDNS is off and no --peer HOST:PORT was given")
    deadline = time.monotonic() + timeout
    tried: set[tuple[str, int]] = set()
    last_error = "no node of that mesh with a pending invitation was found on the LAN"
    try:
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            try:
                host, port, issuer = await asyncio.wait_for(candidates.get(), remaining)
            except asyncio.TimeoutError:
                break
            if (host, port) in tried:
                continue
            tried.add((host, port))
            try:
                grant = await rpc_client.join(host, port, token, csr, name, timeout=min(10.0, remaining))
            except JoinRefused as error:
                raise JoinFailed(str(error)) from None
            except (PinMismatch, RpcError, OSError) as error:
                last_error = f"{host}:{port}: {error}"
                log.info("join via %s:%d failed: %s", host, port, error)
                continue
            entries = decode_entries(grant.revocation_entries)
            revocations = RevocationLog.verified(entries, check_ca_certificate(grant.ca_certificate_pem))
            identity = store.save_membership(name, grant.certificate_pem, grant.ca_certificate_pem, revocations,
                                             issuer)
            if identity.mesh_id != mesh_id:
                raise JoinFailed(f"joined mesh {identity.mesh_id}, but the token names mesh {mesh_id}")
            log.info("joined mesh %s as node %s (%s)", identity.mesh_id, identity.node_id, name)
            return identity
    finally:
        if browser is not None:
            browser.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await browser
    raise JoinFailed(f"could not join mesh {mesh_id} within {timeout:.0f} s ({last_error}); check the inviting "
                     "node runs `orc-node start` and the invitation has not expired, or pass --peer HOST:PORT")
