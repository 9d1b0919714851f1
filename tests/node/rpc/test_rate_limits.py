"""The per-peer token buckets and the admission decision, without sockets (time is passed in)."""

from __future__ import annotations

import pytest
from rpc_helpers import new_member

from orc.node.rpc.authorization import Authorizer, RateLimits
from orc.node.protocol.errors import RateLimited, Revoked, Unauthenticated


def test_a_burst_is_allowed_then_calls_are_refused_until_tokens_refill() -> None:
    limits = RateLimits(rate=2.0, burst=3.0)
    assert [limits.allow("a", now=10.0) for _ in range(4)] == [True, True, True, False]
    assert limits.tokens("a", 10.0) == pytest.approx(0.0)  # a refusal takes nothing
    assert limits.allow("a", now=10.4) is False  # 0.8 tokens
    assert limits.allow("a", now=10.5) is True  # 1.0 token
    assert limits.tokens("a", 100.0) == 3.0  # never more than the burst


def test_peers_have_separate_buckets() -> None:
    limits = RateLimits(rate=1.0, burst=1.0)
    assert limits.allow("a", 0.0) and not limits.allow("a", 0.0)
    assert limits.allow("b", 0.0)


def test_a_clock_going_backwards_adds_no_tokens() -> None:
    limits = RateLimits(rate=1.0, burst=2.0)
    assert limits.allow("a", 100.0) and limits.allow("a", 100.0)
    assert not limits.allow("a", 50.0)


def test_the_table_is_capped_and_forgets_full_buckets_first() -> None:
    limits = RateLimits(rate=1.0, burst=2.0, max_peers=2)
    limits.allow("busy", 0.0)
    limits.allow("busy", 0.0)  # drained, and the least recently seen
    limits.allow("idle", 0.0)  # one token left; full again at t=1
    limits.allow("newcomer", 1.0)
    assert len(limits) == 2
    assert limits.tokens("busy", 1.0) == pytest.approx(1.0)  # kept (a fresh bucket would hold 2)
    assert limits.tokens("newcomer", 1.0) == pytest.approx(1.0)


def test_when_no_bucket_is_full_the_least_recently_seen_goes() -> None:
    limits = RateLimits(rate=1.0, burst=2.0, max_peers=2)
    for peer in ("first", "second", "third"):
        limits.allow(peer, 0.0)
        limits.allow(peer, 0.0)
    assert len(limits) == 2
    assert limits.tokens("first", 0.0) == 2.0  # forgotten
    assert limits.tokens("third", 0.0) == 0.0


def test_a_flood_of_identities_cannot_grow_the_table() -> None:
    limits = RateLimits(rate=1.0, burst=1.0, max_peers=100)
    for i in range(10_000):
        limits.allow(f"peer-{i}", 0.0)
    assert len(limits) == 100


def test_invalid_settings_are_refused() -> None:
    with pytest.raises(ValueError):
        RateLimits(rate=0)
    with pytest.raises(ValueError):
        RateLimits(max_peers=0)


def test_admission_reads_the_caller_from_its_certificate(mesh) -> None:
    member = new_member(mesh)
    revoked: set[str] = set()
    authorizer = Authorizer(revoked.__contains__, RateLimits(rate=1.0, burst=1.0))
    context = {"x509_pem_cert": [member.cert_pem]}
    assert authorizer.admit(context, 0.0) == member.node_id
    with pytest.raises(RateLimited):
        authorizer.admit(context, 0.0)
    revoked.add(member.node_id)
    with pytest.raises(Revoked):
        authorizer.admit(context, 10.0)


@pytest.mark.parametrize("certificates", [None, [], [b"junk"], [b"-----BEGIN CERTIFICATE-----\nAAAA\n"]])
def test_admission_refuses_calls_without_a_usable_certificate(certificates) -> None:
    authorizer = Authorizer(lambda _: False)
    context = {} if certificates is None else {"x509_pem_cert": certificates}
    with pytest.raises(Unauthenticated):
        authorizer.admit(context, 0.0)


def test_admission_refuses_the_ca_certificate_as_a_node_certificate(mesh) -> None:
    authorizer = Authorizer(lambda _: False)
    with pytest.raises(Unauthenticated, match="not a valid node certificate"):
        authorizer.admit({"x509_pem_cert": [mesh.certificate_pem]}, 0.0)
