"""Keys, rate limits and the in-flight cap, decided without a server."""

from __future__ import annotations

from dataclasses import dataclass, replace

from orc.node.config import ApiConfig
from orc.node.web.guard import (
    FAILED_AUTH_PER_MINUTE,
    MAX_CALLERS,
    Buckets,
    Caller,
    Guard,
    Refusal,
)


@dataclass(frozen=True)
class Key:
    id: str
    name: str


class Keys:
    def verify(self, secret: str) -> Key | None:
        return Key("key_1", "laptop") if secret == "orc_good" else None


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def guard(**settings: object) -> tuple[Guard, Clock]:
    clock = Clock()
    return Guard(replace(ApiConfig(), **settings), Keys(), clock), clock  # type: ignore[arg-type]


def test_a_good_bearer_key_is_its_caller() -> None:
    g, _ = guard()
    assert g.admit("Bearer orc_good", "192.168.1.5") == Caller("key_1", "laptop")
    assert g.admit("bearer   orc_good ", "127.0.0.1") == Caller("key_1", "laptop")


def test_no_key_is_refused_on_loopback_too_by_default() -> None:
    g, _ = guard()
    for header in (None, "", "Basic abc", "Bearer wrong", "Bearer " + "x" * 5000):
        refused = g.admit(header, "127.0.0.1")
        assert isinstance(refused, Refusal) and refused.status == 401 and refused.code == "invalid_api_key"


def test_keyless_loopback_only_by_setting_and_only_from_loopback() -> None:
    g, _ = guard(allow_keyless_loopback=True)
    assert g.admit(None, "127.0.0.1") == Caller("addr:127.0.0.1", None)
    assert g.admit(None, "::1") == Caller("addr:::1", None)
    assert isinstance(g.admit(None, "10.0.0.2"), Refusal)
    assert isinstance(g.admit("Bearer wrong", "127.0.0.1"), Refusal)  # a wrong key is wrong everywhere


def test_metrics_may_skip_the_key_on_loopback_by_its_own_setting() -> None:
    g, _ = guard(metrics_keyless_loopback=True)
    assert g.admit(None, "127.0.0.1", metrics=True) == Caller("addr:127.0.0.1", None)
    assert isinstance(g.admit(None, "127.0.0.1"), Refusal)  # the API itself still wants a key
    assert isinstance(g.admit(None, "10.0.0.9", metrics=True), Refusal)


def test_each_key_has_its_own_rate() -> None:
    g, clock = guard(requests_per_minute=60)  # a burst of 10, then one a second
    for _ in range(10):
        assert isinstance(g.admit("Bearer orc_good", "10.0.0.1"), Caller)
    limited = g.admit("Bearer orc_good", "10.0.0.1")
    assert isinstance(limited, Refusal) and limited.status == 429 and limited.retry_after_s == 1
    clock.now += 1.0
    assert isinstance(g.admit("Bearer orc_good", "10.0.0.1"), Caller)


def test_guessing_keys_is_rate_limited_per_address() -> None:
    g, _ = guard()
    answers = [g.admit("Bearer guess", "10.0.0.66") for _ in range(FAILED_AUTH_PER_MINUTE + 1)]
    assert all(isinstance(a, Refusal) and a.status == 401 for a in answers[:-1])
    assert isinstance(answers[-1], Refusal) and answers[-1].status == 429
    assert g.admit("Bearer orc_good", "10.0.0.67") == Caller("key_1", "laptop")  # others are not affected


def test_requests_in_flight_are_capped() -> None:
    g, _ = guard(max_concurrent=2)
    assert g.enter() is None and g.enter() is None
    busy = g.enter()
    assert isinstance(busy, Refusal) and busy.status == 503 and busy.retry_after_s
    g.leave()
    assert g.enter() is None


def test_the_rate_table_is_capped() -> None:
    buckets = Buckets(60, burst=1)
    for caller in range(MAX_CALLERS + 10):
        assert buckets.take(f"addr:{caller}", 0.0) is None
    assert len(buckets._buckets) == MAX_CALLERS


def test_dashboard_reads_have_their_own_larger_bucket() -> None:
    g, _ = guard(requests_per_minute=60)
    for _ in range(50):  # far past the key's burst of 10 for requests
        assert isinstance(g.admit("Bearer orc_good", "10.0.0.1", reads=True), Caller)
    for _ in range(10):  # generating is not starved by reading
        assert isinstance(g.admit("Bearer orc_good", "10.0.0.1"), Caller)
    assert isinstance(g.admit("Bearer orc_good", "10.0.0.1", reads=True), Caller)  # 60 x 10 a minute, burst 100
