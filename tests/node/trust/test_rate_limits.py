"""The per-peer token buckets, without a clock (time is passed in)."""

from __future__ import annotations

import pytest

from orc.node.trust.rate_limits import RateLimits


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
