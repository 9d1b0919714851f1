"""Joining a mesh with a token: find the inviter's join server, prove the invitation, store the grant.

The token's pin names the mesh (its CA key hash), so the joiner looks for that mesh on the LAN
(mDNS adverts carry `jp`, the join port, while an invitation is pending) and also tries any
`--peer HOST:PORT` (whose join server is on PORT + 1). The pin is checked against the join
server's certificate before the secret or the certificate request leaves this machine
(`orc.node.rpc.client.join`).

A joiner browses mDNS without announcing anything: it is not a member yet, and a join that
fails must leave no trace on the LAN. Each join server it hears of is retried with backoff
(`JoinPlan`, a pure schedule) until the timeout, since the inviter may still be starting; the
final error lists every address tried and what went wrong there last.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace

from orc.node.links.peer_events import Hint
from orc.node.links.static import Endpoint
from orc.node.protocol.errors import JoinRefused, NodeError, PinMismatch
from orc.node.rpc import client as rpc_client
from orc.node.trust.certificates import check_ca_certificate, make_csr
from orc.node.trust.ids import mesh_id_from_pin
from orc.node.trust.revocation import RevocationLog
from orc.node.trust.store import Identity, IdentityStore, Issuer
from orc.node.trust.tokens import JoinToken

log = logging.getLogger(__name__)

JOIN_TIMEOUT = 30.0  # seconds to find a join server and be admitted
RETRY_FIRST = 0.5  # seconds before a join server that failed is tried again ...
RETRY_MAX = 5.0  # ... doubling up to this
ATTEMPT_TIMEOUT = 10.0  # one try: TLS handshake, pin check and the Join call
# Join servers come from --peer and from mDNS adverts that claim the token's mesh, which anyone
# on the LAN can forge: a flood of forged adverts cannot make the joiner dial more than this many.
MAX_CANDIDATES = 16


class JoinFailed(Exception):
    """The mesh could not be joined; the message says why and what to try."""


@dataclass(frozen=True)
class Candidate:
    """One join server and how trying it went."""

    host: str
    port: int
    next_at: float  # when to try it (next)
    issuer: Issuer | None = None  # the inviter as far as known: recorded as the node to renew from first
    delay: float = RETRY_FIRST  # the wait after its next failure
    tries: int = 0
    last_error: str | None = None
    hopeless: bool = False  # not the token's mesh: never tried again

    @property
    def address(self) -> str:
        return str(Endpoint(self.host, self.port))


@dataclass(frozen=True)
class JoinPlan:
    """Which join server to try when: a pure schedule (time comes in as `now`)."""

    candidates: tuple[Candidate, ...] = ()

    def found(self, host: str, port: int, now: float, issuer: Issuer | None = None) -> JoinPlan:
        """A join server was named (again); a new one is due at once, a known one keeps its schedule."""
        if any((c.host, c.port) == (host, port) for c in self.candidates) or len(self.candidates) >= MAX_CANDIDATES:
            return self
        return JoinPlan(self.candidates + (Candidate(host, port, now, issuer),))

    def next_due(self) -> Candidate | None:
        """The candidate to try next (its `next_at` may lie ahead), None if there is none left."""
        waiting = [c for c in self.candidates if not c.hopeless]
        return min(waiting, key=lambda c: (c.next_at, c.tries, c.address)) if waiting else None

    def failed(self, tried: Candidate, error: str, now: float, *, retry: bool = True) -> JoinPlan:
        """`tried` failed with `error` at `now`: back off (doubling up to RETRY_MAX), or drop it for good."""
        def update(c: Candidate) -> Candidate:
            if (c.host, c.port) != (tried.host, tried.port):
                return c
            return replace(c, next_at=now + c.delay, delay=min(c.delay * 2, RETRY_MAX), tries=c.tries + 1,
                           last_error=error, hopeless=not retry)
        return JoinPlan(tuple(update(c) for c in self.candidates))

    def report(self) -> str:
        """Every address tried and the last error there, for the final message."""
        tried = [c for c in self.candidates if c.tries]
        if not tried:
            return "no node of that mesh with a pending invitation was found"
        return "tried " + "; ".join(
            f"{c.address} ({c.tries} {'time' if c.tries == 1 else 'times'}, last: {c.last_error})" for c in tried)


async def join_mesh(store: IdentityStore, token_text: str, name: str, *, peers: Sequence[Endpoint] = (),
                    mdns: bool = True, interfaces: Sequence[str] | None = None,
                    timeout: float = JOIN_TIMEOUT) -> Identity:
    """Join the mesh `token_text` invites to, store the membership, and return the new identity."""
    token = JoinToken.parse(token_text)
    key = store.pending_key()
    csr = make_csr(key, name)
    mesh_id = mesh_id_from_pin(token.pin)
    plan = JoinPlan()
    for peer in peers:
        plan = plan.found(peer.host, peer.port + 1, time.monotonic(), Issuer(None, str(peer)))
    news = asyncio.Event()  # a new join server was found: maybe something to try before the next retry

    def found(hint: Hint) -> None:
        nonlocal plan
        advert = hint.advert
        if advert is not None and advert.join_port is not None:
            host = hint.address.rsplit(":", 1)[0].strip("[]")
            plan = plan.found(host, advert.join_port, time.monotonic(), Issuer(hint.node_id, hint.address))
            news.set()

    browser: asyncio.Task[None] | None = None
    if mdns:
        from orc.node.links.mdns import MdnsDiscovery

        try:
            discovery = MdnsDiscovery.browse_only(mesh_id, list(interfaces) if interfaces else None, found)
            browser = asyncio.create_task(discovery.run())
        except (OSError, ValueError) as error:
            log.warning("mDNS unavailable while joining (%s); only --peer addresses are tried", error)
    if not peers and browser is None:
        raise JoinFailed("no way to find the mesh: mDNS is off and no --peer HOST:PORT was given")
    deadline = time.monotonic() + timeout
    try:
        while True:
            news.clear()
            now = time.monotonic()
            remaining = deadline - now
            if remaining <= 0:
                break
            due = plan.next_due()
            if due is None or due.next_at > now:
                wait = remaining if due is None else min(remaining, due.next_at - now)
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(news.wait(), wait)
                continue
            try:
                grant = await rpc_client.join(due.host, due.port, token, csr, name,
                                              timeout=min(ATTEMPT_TIMEOUT, remaining))
            except JoinRefused as error:
                raise JoinFailed(str(error)) from None
            except PinMismatch as error:  # another mesh's join server: asking again will not change that
                plan = plan.failed(due, str(error), time.monotonic(), retry=False)
                continue
            except (NodeError, OSError) as error:  # not listening yet, unreachable, timed out: try again later
                log.info("join via %s failed (try %d): %s", due.address, due.tries + 1, error)
                plan = plan.failed(due, str(error) or type(error).__name__, time.monotonic())
                continue
            revocations = RevocationLog.verified(grant.revocation_entries,
                                                 check_ca_certificate(grant.ca_certificate_pem))
            identity = store.save_membership(name, grant.certificate_pem, grant.ca_certificate_pem, revocations,
                                             due.issuer)
            if identity.mesh_id != mesh_id:
                raise JoinFailed(f"joined mesh {identity.mesh_id}, but the token names mesh {mesh_id}")
            log.info("joined mesh %s as node %s (%s)", identity.mesh_id, identity.node_id, name)
            return identity
    finally:
        if browser is not None:
            browser.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await browser
    raise JoinFailed(f"could not join mesh {mesh_id} within {timeout:.0f} s: {plan.report()}; check the inviting "
                     "node runs `orc-node start` and the invitation has not expired, or pass --peer HOST:PORT")
