"""This node's standing in its mesh while the daemon runs: identity, revocation log, invitations.

One object owns the mutable trust state so every component asks the same question the same
way ("is this node revoked?") and every change is written to the identity folder before it
takes effect. The decisions themselves live in `orc.node.trust` (pure); this is the shell
that persists them.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from datetime import datetime, timezone

from orc.node.trust.certificates import certificate_node_id, certificate_public_key, csr_public_key, needs_renewal
from orc.node.trust.errors import IdentityError
from orc.node.protocol.ids import NodeId
from orc.node.trust.ids import node_id_for
from orc.node.protocol.revocation_entry import RevocationEntry
from orc.node.trust.revocation import MAX_ENTRIES_PER_MESSAGE, RevocationLog
from orc.node.trust.store import Identity, IdentityStore, Issuer
from orc.node.trust.tokens import Accepted, JoinToken, Refused, new_secret
from orc.node.trust.rate_limits import RateLimits
from orc.node.protocol.errors import (
    InvalidRequest,
    JoinRefused,
    NotCertificateAuthority,
    PermissionDenied,
    RateLimited,
)
from orc.node.protocol.messages import JoinGrant

log = logging.getLogger(__name__)

DEFAULT_INVITE_TTL = 15 * 60.0
MAX_INVITE_TTL = 7 * 24 * 3600.0
# Certificates a member may have renewed a day. A node renews once a month (20 days into a
# 30-day certificate) and retries every 10 minutes only while it fails, so a few a day is ample;
# more is a member making the CA sign in a loop.
RENEWALS_PER_DAY = 4


class Membership:
    """The identity, revocation log and invitations of a running node, persisted on every change."""

    def __init__(self, store: IdentityStore, identity: Identity, *,
                 clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.identity = identity
        self.revocations = store.load_revocations()
        self.invitations = store.load_invitations() if identity.is_authority else None
        self._clock = clock
        self._ca_key = certificate_public_key(identity.ca_certificate_pem)
        self._listeners: list[Callable[[frozenset[NodeId]], None]] = []
        # Per caller, a token bucket: RENEWALS_PER_DAY at once, refilled over a day.
        self._renewals = RateLimits(rate=RENEWALS_PER_DAY / 86_400, burst=RENEWALS_PER_DAY)

    def _now(self) -> datetime:
        """The clock's now as certificates date it."""
        return datetime.fromtimestamp(self._clock(), timezone.utc)

    # ---- revocation ----

    def is_revoked(self, node_id: str) -> bool:
        return self.revocations.is_revoked(node_id)

    def on_revoked(self, listener: Callable[[frozenset[NodeId]], None]) -> None:
        """Call `listener(newly_revoked_ids)` after each change of the log."""
        self._listeners.append(listener)

    def revoke(self, node_id: str, reason: str) -> int:
        """Append a CA-signed revocation of `node_id` (CA holders only); returns the new sequence number."""
        authority = self.identity.authority
        if authority is None:
            raise NotCertificateAuthority("only a node holding the mesh CA can revoke; run `orc-node revoke` "
                                          "on the node where `orc-node init` created the mesh")
        if node_id == self.identity.node_id:
            raise InvalidRequest("a node cannot revoke itself: revoke it from another CA-holding node, or move "
                                 "its identity folder away to leave the mesh")
        try:
            grown = self.revocations.append(authority, node_id, reason, self._clock())
        except IdentityError as error:
            raise InvalidRequest(str(error)) from None
        self._install(grown)
        return grown.seq

    def entries_after(self, seq: int) -> tuple[RevocationEntry, ...]:
        """The entries after `seq`, at most as many as a peer accepts in one message (it asks again)."""
        return self.revocations.after(seq)[:MAX_ENTRIES_PER_MESSAGE]

    def merge(self, entries: Iterable[RevocationEntry]) -> frozenset[NodeId]:
        """Apply entries a peer sent (verified: CA signature, chain, sequence); returns newly revoked ids.

        Raises `RevocationLogInvalid` (from the identity package) and changes nothing if any
        entry is bad.
        """
        grown = self.revocations.extend(entries, self._ca_key)
        if grown is self.revocations:
            return frozenset()
        return self._install(grown)

    def _install(self, grown: RevocationLog) -> frozenset[NodeId]:
        newly = grown.revoked_ids - self.revocations.revoked_ids
        self.store.save_revocations(grown)  # on disk before it takes effect
        self.revocations = grown
        if newly:
            log.warning("revoked: %s (revocation log at %d)", ", ".join(sorted(newly)), grown.seq)
        for listener in self._listeners:
            listener(frozenset(newly))
        return frozenset(newly)

    # ---- invitations (CA holders) ----

    def invite(self, ttl: float | None) -> tuple[JoinToken, float]:
        """A new one-time join token and its expiry (unix seconds)."""
        authority = self.identity.authority
        if authority is None or self.invitations is None:
            raise NotCertificateAuthority("only a node holding the mesh CA can invite; run `orc-node invite` "
                                          "on the node where `orc-node init` created the mesh")
        ttl = DEFAULT_INVITE_TTL if not ttl else float(ttl)
        if not 0 < ttl <= MAX_INVITE_TTL:
            raise InvalidRequest(f"an invitation lasts between 1 second and 7 days, not {ttl:g} s")
        secret = new_secret()
        now = self._clock()
        invitations = self.invitations.issue(secret, now, ttl)
        self.store.save_invitations(invitations)
        self.invitations = invitations
        return JoinToken(authority.pin, secret), now + ttl

    def invitation_open(self) -> bool:
        return self.invitations is not None and self.invitations.is_open(self._clock())

    def join(self, secret: str, csr_pem: bytes, name: str, peer: str) -> JoinGrant:
        """Redeem an invitation: a certificate for the CSR's key, or PermissionDenied."""
        authority = self.identity.authority
        if authority is None or self.invitations is None:
            raise NotCertificateAuthority("this node does not hold the mesh CA")
        try:
            joiner = node_id_for(csr_public_key(csr_pem))  # a malformed request must not use the invitation up
        except IdentityError as error:
            raise InvalidRequest(str(error)) from None
        if self.is_revoked(joiner):  # nor does a revoked key, which could never be used
            log.warning("join refused from %s (%s): the key of node %s is revoked", peer, name[:63], joiner)
            raise JoinRefused(f"join refused: the key of node {joiner} has been revoked from this mesh; a device "
                              "can only join again with a new key (move its identity folder away first)")
        invitations, outcome = self.invitations.redeem(secret, self._clock())
        if invitations is not self.invitations:
            self.store.save_invitations(invitations)  # a used or burned invitation stays used after a crash
            self.invitations = invitations
        match outcome:
            case Accepted():
                pass
            case Refused(reason=reason):
                log.warning("join refused from %s (%s): %s", peer, name[:63], reason.value)
                raise JoinRefused(f"join refused: the token is {reason.value}; ask for a new one "
                                       "with `orc-node invite`")
        try:
            certificate = authority.issue(csr_pem, self._now())
        except IdentityError as error:
            raise InvalidRequest(str(error)) from None
        log.info("node %s (%s) joined from %s", certificate_node_id(certificate), name[:63], peer)
        return JoinGrant(certificate, authority.certificate_pem, self.revocations.entries)

    # ---- certificates ----

    def renew_for(self, caller: NodeId, csr_pem: bytes) -> bytes:
        """A fresh certificate for a member's CSR; the CSR must be for the caller's own key.

        Refused for a revoked caller, and past RENEWALS_PER_DAY renewals a day per caller."""
        authority = self.identity.authority
        if authority is None:
            raise NotCertificateAuthority("this node does not hold the mesh CA; ask a CA holder")
        if self.is_revoked(caller):
            raise PermissionDenied(f"node {caller} is revoked")
        if not self._renewals.allow(caller, self._clock()):
            log.warning("renewal refused to %s: more than %d today", caller, RENEWALS_PER_DAY)
            raise RateLimited(f"node {caller} renewed its certificate {RENEWALS_PER_DAY} times in the last day; "
                              "try again tomorrow")
        try:
            if node_id_for(csr_public_key(csr_pem)) != caller:
                raise PermissionDenied("a node may only renew the certificate of its own key")
            return authority.issue(csr_pem, self._now())
        except IdentityError as error:
            raise InvalidRequest(str(error)) from None

    def needs_renewal(self) -> bool:
        return needs_renewal(self.identity.certificate_pem, self._now())

    def install_certificate(self, certificate_pem: bytes, issuer: Issuer | None = None) -> None:
        """Store a renewed certificate (and who granted it), then use it."""
        self.identity = self.store.save_certificate(certificate_pem, issuer)
