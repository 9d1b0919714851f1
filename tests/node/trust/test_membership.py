"""The daemon's trust state: invitations, joins, revocations and renewals, persisted first."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from cryptography import x509
import pytest

from orc.node.trust.certificates import certificate_node_id, generate_key, issued_by, make_csr
from orc.node.trust.ids import node_id_for
from orc.node.trust.store import IdentityStore
from orc.node.trust.membership import RENEWALS_PER_DAY, Membership
from orc.node.protocol.errors import (
    InvalidRequest,
    JoinRefused,
    NotCertificateAuthority,
    PermissionDenied,
    RateLimited,
)

NOW = datetime(2026, 11, 21, 12, 0, tzinfo=timezone.utc)


class Clock:
    def __init__(self, now: float = NOW.timestamp()) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def ca_node(tmp_path):
    store = IdentityStore(tmp_path / "ca" / "identity")
    return Membership(store, store.init_mesh("attic", NOW), clock=Clock())


def joined(tmp_path, ca: Membership, name: str) -> Membership:
    token, _ = ca.invite(None)
    store = IdentityStore(tmp_path / name / "identity")
    key = store.pending_key()
    grant = ca.join(token.secret, make_csr(key, name), name, "test")
    from orc.node.trust.revocation import RevocationLog

    log = RevocationLog.verified(grant.revocation_entries, ca.identity.authority.public_key)
    identity = store.save_membership(name, grant.certificate_pem, grant.ca_certificate_pem, log)
    return Membership(store, identity, clock=Clock())


def test_an_invitation_admits_one_node_once(tmp_path, ca_node):
    token, expires = ca_node.invite(60)
    assert expires == ca_node._clock() + 60 and ca_node.invitation_open()
    key = generate_key()
    grant = ca_node.join(token.secret, make_csr(key, "laptop"), "laptop", "test")
    assert certificate_node_id(grant.certificate_pem) == node_id_for(key.public_key())
    assert issued_by(grant.certificate_pem, grant.ca_certificate_pem)
    assert not ca_node.invitation_open()
    with pytest.raises(JoinRefused):
        ca_node.join(token.secret, make_csr(generate_key(), "again"), "again", "test")
    # The used invitation stays used after a restart (it was written before the answer).
    reloaded = Membership(ca_node.store, ca_node.store.load())
    assert not reloaded.invitation_open()


def test_a_malformed_request_does_not_use_the_invitation_up(ca_node):
    token, _ = ca_node.invite(60)
    with pytest.raises(InvalidRequest):
        ca_node.join(token.secret, b"-----BEGIN CERTIFICATE REQUEST-----\njunk\n", "x", "test")
    assert ca_node.invitation_open()
    ca_node.join(token.secret, make_csr(generate_key(), "ok"), "ok", "test")


def test_an_expired_invitation_is_refused(ca_node):
    token, _ = ca_node.invite(60)
    ca_node._clock.now += 61
    with pytest.raises(JoinRefused, match="expired"):
        ca_node.join(token.secret, make_csr(generate_key(), "late"), "late", "test")


def test_invitation_lifetimes_are_bounded(ca_node):
    with pytest.raises(InvalidRequest):
        ca_node.invite(30 * 24 * 3600)


def test_revocation_is_persisted_then_announced_and_gossiped(tmp_path, ca_node):
    member = joined(tmp_path, ca_node, "laptop")
    other = joined(tmp_path, ca_node, "desk")
    heard: list[frozenset] = []
    ca_node.on_revoked(heard.append)
    seq = ca_node.revoke(other.identity.node_id, "stolen")
    assert seq == 1 and heard == [frozenset({other.identity.node_id})]
    assert IdentityStore(ca_node.store.folder).load_revocations().is_revoked(other.identity.node_id)
    # A member merges the entries a peer sends, verified against the CA.
    learned = member.merge(ca_node.entries_after(member.revocations.seq))
    assert learned == frozenset({other.identity.node_id}) and member.is_revoked(other.identity.node_id)
    assert member.merge(ca_node.entries_after(0)) == frozenset()  # already known: nothing new
    with pytest.raises(InvalidRequest, match="already revoked"):
        ca_node.revoke(other.identity.node_id, "again")


def test_only_a_ca_holder_revokes_invites_and_renews(tmp_path, ca_node):
    member = joined(tmp_path, ca_node, "laptop")
    with pytest.raises(NotCertificateAuthority):
        member.revoke(ca_node.identity.node_id, "")
    with pytest.raises(NotCertificateAuthority):
        member.invite(None)
    with pytest.raises(NotCertificateAuthority):
        member.renew_for(ca_node.identity.node_id, make_csr(generate_key(), "x"))
    with pytest.raises(InvalidRequest, match="itself"):
        ca_node.revoke(ca_node.identity.node_id, "")


def test_renewal_is_for_the_callers_own_key_only(tmp_path, ca_node):
    member = joined(tmp_path, ca_node, "laptop")
    renewed = ca_node.renew_for(member.identity.node_id, make_csr(member.identity.key, "laptop"))
    assert certificate_node_id(renewed) == member.identity.node_id
    member.install_certificate(renewed)
    assert member.store.load().certificate_pem == member.identity.certificate_pem
    with pytest.raises(PermissionDenied):
        ca_node.renew_for(member.identity.node_id, make_csr(generate_key(), "someone-else"))
    ca_node.revoke(member.identity.node_id, "gone")
    with pytest.raises(PermissionDenied):
        ca_node.renew_for(member.identity.node_id, make_csr(member.identity.key, "laptop"))


def test_renewals_are_rate_limited_per_caller(tmp_path, ca_node):
    member = joined(tmp_path, ca_node, "laptop")
    other = joined(tmp_path, ca_node, "desk")
    csr = make_csr(member.identity.key, "laptop")
    for _ in range(RENEWALS_PER_DAY):
        ca_node.renew_for(member.identity.node_id, csr)
    with pytest.raises(RateLimited, match="try again tomorrow"):
        ca_node.renew_for(member.identity.node_id, csr)
    # Another member is not affected, and the caller may renew again once a day has refilled a renewal.
    ca_node.renew_for(other.identity.node_id, make_csr(other.identity.key, "desk"))
    ca_node._clock.now += 86_400 / RENEWALS_PER_DAY
    ca_node.renew_for(member.identity.node_id, csr)
    with pytest.raises(RateLimited):
        ca_node.renew_for(member.identity.node_id, csr)


def test_a_revoked_key_cannot_join_again_and_does_not_use_the_invitation_up(tmp_path, ca_node):
    member = joined(tmp_path, ca_node, "laptop")
    ca_node.revoke(member.identity.node_id, "stolen")
    token, _ = ca_node.invite(60)
    with pytest.raises(JoinRefused, match="revoked"):
        ca_node.join(token.secret, make_csr(member.identity.key, "laptop"), "laptop", "test")
    assert ca_node.invitation_open()
    grant = ca_node.join(token.secret, make_csr(generate_key(), "laptop"), "laptop", "test")  # a new key may
    assert not ca_node.is_revoked(certificate_node_id(grant.certificate_pem))


def test_certificates_are_dated_and_judged_by_the_membership_clock(tmp_path, ca_node):
    """No wall clock read inside: renewal is due when the clock says so, not when the test sleeps."""
    member = joined(tmp_path, ca_node, "laptop")
    assert not member.needs_renewal()
    member._clock.now += 25 * 86_400  # certificates live 30 days and renew with 10 left
    assert member.needs_renewal()
    ca_node._clock.now += 25 * 86_400
    renewed = x509.load_pem_x509_certificate(ca_node.renew_for(member.identity.node_id,
                                                               make_csr(member.identity.key, "laptop")))
    assert renewed.not_valid_before_utc >= NOW + timedelta(days=25) - timedelta(minutes=5)
