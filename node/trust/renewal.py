"""Renewing this node's certificate from the peers that claim to hold the mesh CA.

Any member can claim the CA in its description (`certificate_authority`), and any of them can
answer `Renew` with junk or not at all, so no single answer is trusted and no single peer can
stop renewal:

- the peers are asked one after another, the one that granted the current certificate first
  (recorded in the identity folder), then the others by node id, those that answered junk
  before last;
- every answer is checked before it is installed (`check_renewal`): it parses, it chains to the
  mesh CA, it certifies this node's own key, and its dates are sane;
- a bad answer, a refusal or a timeout is logged and the next peer is asked.

`renewal_order` and `check_renewal` are pure; `renew_from_peers` performs one attempt through
the `ask` function the daemon gives it (a `Renew` call).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Union

from cryptography.hazmat.primitives import serialization

from orc.node.trust.certificates import (
    CLOCK_SKEW,
    NODE_CERTIFICATE_LIFETIME,
    certificate_node_id,
    issued_by,
    load_certificate,
)
from orc.node.trust.errors import CertificateInvalid, IdentityError
from orc.node.protocol.ids import NodeId
from orc.node.trust.store import Identity, Issuer
from orc.node.protocol.errors import NodeError, NotCertificateAuthority, PermissionDenied, WireError

log = logging.getLogger(__name__)

# Peers asked in one attempt: a mesh has one or two real CA holders; more claims than this are
# noise (or an attack), and each costs up to RENEW_TIMEOUT_S.
MAX_ASKED = 8
RENEW_TIMEOUT_S = 10.0
# A renewed certificate must be valid at least this long from now, or it renews nothing.
MIN_REMAINING = timedelta(days=1)
# Lifetimes far beyond what orc issues are not a renewal orc asked for.
MAX_LIFETIME = NODE_CERTIFICATE_LIFETIME * 2
# Peers remembered for answering junk: a hint for ordering, capped like every table the network feeds.
MAX_REMEMBERED_JUNK = 64


@dataclass(frozen=True)
class Candidate:
    """A live peer that claims to hold the mesh CA, where it can be reached."""

    node_id: NodeId
    address: str


def renewal_order(candidates: Sequence[Candidate], issuer: Issuer | None,
                  junk: Sequence[NodeId]) -> tuple[Candidate, ...]:
    """Whom to ask, in order: the issuer of the current certificate first (by node id, or by the
    address joined through), then the others by node id, those that answered junk last (the
    most recent offender last of all); at most MAX_ASKED."""
    recent = {node_id: index for index, node_id in enumerate(junk)}

    def rank(candidate: Candidate) -> tuple[int, int, str]:
        if candidate.node_id in recent:
            return (2, recent[candidate.node_id], candidate.node_id)
        if issuer is not None and (candidate.node_id == issuer.node_id or
                                   (issuer.node_id is None and candidate.address == issuer.address)):
            return (0, 0, candidate.node_id)
        return (1, 0, candidate.node_id)

    unique = {c.node_id: c for c in candidates}
    return tuple(sorted(unique.values(), key=rank))[:MAX_ASKED]


def check_renewal(certificate_pem: bytes, identity: Identity, now: datetime) -> None:
    """Accept `certificate_pem` as this node's next certificate, or raise CertificateInvalid saying why."""
    certificate = load_certificate(certificate_pem)
    if certificate_node_id(certificate_pem) != identity.node_id:
        raise CertificateInvalid("it is not a certificate for this node")
    ours = identity.key.public_key().public_bytes(serialization.Encoding.DER,
                                                  serialization.PublicFormat.SubjectPublicKeyInfo)
    theirs = certificate.public_key().public_bytes(serialization.Encoding.DER,
                                                   serialization.PublicFormat.SubjectPublicKeyInfo)
    if theirs != ours:
        raise CertificateInvalid("it certifies another key than this node's")
    if not issued_by(certificate_pem, identity.ca_certificate_pem):
        raise CertificateInvalid(f"it was not issued by the CA of mesh {identity.mesh_id}")
    begins, ends = certificate.not_valid_before_utc, certificate.not_valid_after_utc
    if begins > now + CLOCK_SKEW:
        raise CertificateInvalid(f"it is valid only from {begins:%Y-%m-%d %H:%M} UTC")
    if ends - begins > MAX_LIFETIME:
        raise CertificateInvalid(f"its lifetime ({(ends - begins).days} days) is not one orc issues")
    if ends < now + MIN_REMAINING:
        raise CertificateInvalid(f"it expires at {ends:%Y-%m-%d %H:%M} UTC, too soon to be a renewal")
    current = load_certificate(identity.certificate_pem).not_valid_after_utc
    if ends <= current:
        raise CertificateInvalid("it expires no later than the current certificate")


# ---- one attempt -------------------------------------------------------------------------

@dataclass(frozen=True)
class Failure:
    """Asking `node_id` gave no usable certificate; `junk`: it answered, with something unusable."""

    node_id: NodeId
    reason: str
    junk: bool


@dataclass(frozen=True)
class Renewed:
    """`granted_by` (at `address`) issued `certificate_pem`, already checked."""

    certificate_pem: bytes
    granted_by: NodeId
    address: str
    failures: tuple[Failure, ...]


@dataclass(frozen=True)
class NotRenewed:
    """Every peer asked failed (or none claims the CA)."""

    failures: tuple[Failure, ...]

    def __str__(self) -> str:
        if not self.failures:
            return "no peer that holds the mesh CA is reachable"
        return "; ".join(f"{f.node_id}: {f.reason}" for f in self.failures)


Outcome = Union[Renewed, NotRenewed]


async def renew_from_peers(identity: Identity, candidates: Sequence[Candidate], issuer: Issuer | None,
                           junk: Sequence[NodeId], ask: Callable[[Candidate], Awaitable[bytes]],
                           now: Callable[[], datetime], timeout: float = RENEW_TIMEOUT_S) -> Outcome:
    """Ask the candidates in `renewal_order` until one answers with a certificate that passes
    `check_renewal`; every failure is logged and kept in the outcome."""
    failures: list[Failure] = []
    for candidate in renewal_order(candidates, issuer, junk):
        try:
            certificate = await asyncio.wait_for(ask(candidate), timeout)
            check_renewal(certificate, identity, now())
        except asyncio.TimeoutError:
            failure = Failure(candidate.node_id, f"no answer within {timeout:g} s", junk=False)
        except (IdentityError, WireError, NotCertificateAuthority, PermissionDenied) as error:
            # It answered, and the answer is useless: a peer that claims the CA and is not one,
            # or a broken one. Refusals to a revoked node also land here; nothing else would work.
            failure = Failure(candidate.node_id, f"unusable answer: {error}", junk=True)
        except (NodeError, OSError) as error:  # unreachable, refused, rate limited: try the next
            failure = Failure(candidate.node_id, str(error) or type(error).__name__, junk=False)
        else:
            return Renewed(certificate, candidate.node_id, candidate.address, tuple(failures))
        log.warning("certificate renewal from %s failed: %s", failure.node_id, failure.reason)
        failures.append(failure)
    return NotRenewed(tuple(failures))


def remembered_junk(junk: Sequence[NodeId], outcome: Outcome) -> tuple[NodeId, ...]:
    """The junk-answering peers to remember after `outcome`: this attempt's offenders moved to
    the end, the peer that granted a certificate forgiven; at most MAX_REMEMBERED_JUNK."""
    offenders = [f.node_id for f in outcome.failures if f.junk]
    granted = outcome.granted_by if isinstance(outcome, Renewed) else None
    kept = [n for n in junk if n not in offenders and n != granted] + offenders
    return tuple(kept[-MAX_REMEMBERED_JUNK:])


__all__ = ["Candidate", "CertificateInvalid", "Failure", "NotRenewed", "Renewed", "check_renewal",
           "remembered_junk", "renew_from_peers", "renewal_order"]
