"""Renewal from CA-claiming peers: whom to ask first, what to accept, moving on after a bad answer."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta, timezone

import pytest

from orc.node.trust.certificates import MeshAuthority, generate_key
from orc.node.trust.errors import CertificateInvalid
from orc.node.protocol.ids import NodeId
from orc.node.trust.revocation import RevocationLog
from orc.node.trust.store import Identity, IdentityStore, Issuer
from orc.node.trust.renewal import (
    MAX_ASKED,
    MAX_REMEMBERED_JUNK,
    Candidate,
    Failure,
    NotRenewed,
    Renewed,
    check_renewal,
    remembered_junk,
    renew_from_peers,
    renewal_order,
)
from orc.node.protocol.errors import NotCertificateAuthority, RateLimited, WireError

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=timezone.utc)
RENEW_AT = T0 + timedelta(days=21)  # a third of 30 days left: time to renew
A, B, C, D = (NodeId(letter * 20) for letter in "abcd")


@pytest.fixture(scope="module")
def authority() -> MeshAuthority:
    return MeshAuthority.create("attic", T0 - timedelta(days=1))


@pytest.fixture
def member(tmp_path, authority) -> Identity:
    """A member whose certificate was issued at T0."""
    store = IdentityStore(tmp_path / "identity")
    key = store.pending_key()
    certificate = authority.issue_for_key(key.public_key(), T0)
    return store.save_membership("laptop", certificate, authority.certificate_pem, RevocationLog())


def candidates(*ids: NodeId) -> list[Candidate]:
    return [Candidate(node_id, f"10.0.0.{index + 1}:7733") for index, node_id in enumerate(ids)]


# ---- whom to ask ----

def test_the_issuer_is_asked_first_and_junk_answerers_last() -> None:
    assert [c.node_id for c in renewal_order(candidates(A, B, C, D), Issuer(C), ())] == [C, A, B, D]
    assert [c.node_id for c in renewal_order(candidates(A, B, C, D), Issuer(C), (B, A))] == [C, D, B, A]
    # The issuer itself answered junk last time: it no longer goes first.
    assert [c.node_id for c in renewal_order(candidates(A, B, C), Issuer(C), (C,))] == [A, B, C]
    assert [c.node_id for c in renewal_order(candidates(D, C), None, ())] == [C, D]


def test_an_issuer_known_only_by_its_address_is_found_by_it() -> None:
    order = renewal_order(candidates(A, B, C), Issuer(None, "10.0.0.2:7733"), ())
    assert [c.node_id for c in order] == [B, A, C]


def test_at_most_a_few_peers_are_asked_and_each_once() -> None:
    many = [Candidate(NodeId(f"{index:020d}"), "10.0.0.1:7733") for index in range(50)]
    assert len(renewal_order(many + many, None, ())) == MAX_ASKED


def test_junk_answerers_are_remembered_in_order_and_forgiven_when_they_grant() -> None:
    failed = NotRenewed((Failure(A, "junk", True), Failure(B, "timeout", False)))
    assert remembered_junk((C, A), failed) == (C, A)
    assert remembered_junk((A, C), failed) == (C, A)  # the latest offender goes last
    granted = Renewed(b"pem", C, "10.0.0.3:7733", (Failure(D, "junk", True),))
    assert remembered_junk((C, A), granted) == (A, D)
    flood = tuple(NodeId(f"{index:020d}") for index in range(200))
    assert len(remembered_junk(flood, failed)) == MAX_REMEMBERED_JUNK


# ---- what to accept ----

def test_a_proper_renewal_is_accepted(member, authority) -> None:
    check_renewal(authority.issue_for_key(member.key.public_key(), RENEW_AT), member, RENEW_AT)


@pytest.mark.parametrize("make, reason", [
    (lambda m, ca: b"-----BEGIN CERTIFICATE-----\nanNrIGp1bmsK\n-----END CERTIFICATE-----\n", "readable"),
    (lambda m, ca: ca.issue_for_key(generate_key().public_key(), RENEW_AT), "not a certificate for this node"),
    (lambda m, ca: MeshAuthority.create("impostor", T0).issue_for_key(m.key.public_key(), RENEW_AT), "not issued"),
    (lambda m, ca: ca.certificate_pem, "but its key belongs to"),  # the CA certificate itself
    (lambda m, ca: ca.issue_for_key(m.key.public_key(), RENEW_AT + timedelta(days=2)), "valid only from"),
    (lambda m, ca: ca.issue_for_key(m.key.public_key(), RENEW_AT, timedelta(hours=2)), "too soon"),
    (lambda m, ca: ca.issue_for_key(m.key.public_key(), RENEW_AT, timedelta(days=3650)), "lifetime"),
    (lambda m, ca: ca.issue_for_key(m.key.public_key(), T0 - timedelta(days=1)), "no later than the current"),
])
def test_a_bad_answer_is_refused_with_its_reason(member, authority, make, reason) -> None:
    with pytest.raises(CertificateInvalid, match=reason):
        check_renewal(make(member, authority), member, RENEW_AT)


# ---- one attempt ----

def test_a_junk_answer_moves_on_to_the_next_peer(member, authority) -> None:
    asked: list[NodeId] = []

    async def ask(candidate: Candidate) -> bytes:
        asked.append(candidate.node_id)
        if candidate.node_id == A:
            return b"-----BEGIN CERTIFICATE-----\nanVuaw==\n-----END CERTIFICATE-----\n"
        if candidate.node_id == B:
            raise WireError("a certificate of 5 MB")
        return authority.issue_for_key(member.key.public_key(), RENEW_AT)

    outcome = asyncio.run(renew_from_peers(member, candidates(A, B, C), Issuer(A), (), ask, lambda: RENEW_AT))
    assert asked == [A, B, C]
    assert isinstance(outcome, Renewed) and outcome.granted_by == C and outcome.address == "10.0.0.3:7733"
    assert [(f.node_id, f.junk) for f in outcome.failures] == [(A, True), (B, True)]


def test_a_peer_that_does_not_answer_is_given_up_on(member, authority) -> None:
    async def ask(candidate: Candidate) -> bytes:
        if candidate.node_id == A:
            await asyncio.sleep(3600)
        return authority.issue_for_key(member.key.public_key(), RENEW_AT)

    outcome = asyncio.run(renew_from_peers(member, candidates(A, B), Issuer(A), (), ask, lambda: RENEW_AT,
                                           timeout=0.05))
    assert isinstance(outcome, Renewed) and outcome.granted_by == B
    assert outcome.failures == (Failure(A, "no answer within 0.05 s", junk=False),)


def test_when_everyone_fails_every_reason_is_kept(member) -> None:
    async def ask(candidate: Candidate) -> bytes:
        if candidate.node_id == A:
            raise NotCertificateAuthority("this node does not hold the mesh CA")
        raise RateLimited("renewed too often")

    outcome = asyncio.run(renew_from_peers(member, candidates(A, B), None, (), ask, lambda: RENEW_AT))
    assert isinstance(outcome, NotRenewed)
    assert [(f.node_id, f.junk) for f in outcome.failures] == [(A, True), (B, False)]
    assert "does not hold the mesh CA" in str(outcome) and "renewed too often" in str(outcome)
    assert str(NotRenewed(())) == "no peer that holds the mesh CA is reachable"


def test_a_bug_is_not_mistaken_for_a_peer_that_failed(member) -> None:
    async def ask(candidate: Candidate) -> bytes:
        raise TypeError("a bug on this side")

    with pytest.raises(TypeError, match="a bug on this side"):
        asyncio.run(renew_from_peers(member, candidates(A, B), None, (), ask, lambda: RENEW_AT))
