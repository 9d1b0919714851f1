"""Who may call the HTTP API, and how much: bearer keys, per-caller rate limits, requests in flight.

Pure decisions over values the app hands in (the Authorization header, the client's address,
`now`); the app turns a refusal into OpenAI's error shape. Every table here is fed by strangers
(addresses) or by key holders, so each has a cap.
"""

from __future__ import annotations

import ipaddress
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from orc.node.config import ApiConfig

# Longest Authorization header looked at: a 256-bit key is 48 characters; anything far longer is
# junk, refused before it is hashed.
MAX_AUTHORIZATION_CHARS = 512
# Callers tracked by the rate limiter, least recently seen dropped first: without keys every
# client address is a caller, and a stranger may rotate through many.
MAX_CALLERS = 4096
# Failed authentications allowed per address and minute before the address gets 429s: guessing
# keys stays pointless (256 bits) and cheap for the node.
FAILED_AUTH_PER_MINUTE = 30


@dataclass(frozen=True)
class Caller:
    """Who a request comes from: a key's id, or `addr:<ip>` without one (keyless loopback)."""

    id: str
    key_name: str | None


@dataclass(frozen=True)
class Refusal:
    status: int
    message: str
    kind: str  # OpenAI's error type
    code: str
    retry_after_s: int | None = None


class VerifiedKey(Protocol):
    id: str
    name: str


class KeyVerifier(Protocol):
    """What the guard needs of the key store (`orc.node.web.keys.ApiKeys`)."""

    def verify(self, secret: str) -> VerifiedKey | None: ...


class Buckets:
    """Token buckets per caller: `rate_per_minute` on average, bursts of `burst`; at most
    MAX_CALLERS buckets, the least recently used forgotten first (a forgotten caller starts full,
    which only ever favours a caller the node has not heard from in a long while)."""

    def __init__(self, rate_per_minute: float, burst: int) -> None:
        self.rate_per_s = rate_per_minute / 60.0
        self.burst = float(burst)
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # caller -> (tokens, at)

    def take(self, caller: str, now: float) -> float | None:
        """None if `caller` may go now (one token taken), else the seconds until it may."""
        tokens, at = self._buckets.pop(caller, (self.burst, now))
        tokens = min(self.burst, tokens + max(0.0, now - at) * self.rate_per_s)
        if tokens >= 1.0:
            self._remember(caller, (tokens - 1.0, now))
            return None
        self._remember(caller, (tokens, now))
        return (1.0 - tokens) / self.rate_per_s

    def _remember(self, caller: str, value: tuple[float, float]) -> None:
        self._buckets[caller] = value
        while len(self._buckets) > MAX_CALLERS:
            self._buckets.popitem(last=False)


class Guard:
    """Authenticates requests and applies the per-caller rate limit and the in-flight cap."""

    def __init__(self, config: ApiConfig, keys: KeyVerifier, clock: Callable[[], float]) -> None:
        self._config = config
        self._keys = keys
        self._clock = clock
        self._requests = Buckets(config.requests_per_minute, burst=max(5, config.requests_per_minute // 6))
        self._failures = Buckets(FAILED_AUTH_PER_MINUTE, burst=FAILED_AUTH_PER_MINUTE)
        self.in_flight = 0

    def admit(self, authorization: str | None, client_host: str | None, *, metrics: bool = False) -> Caller | Refusal:
        """The caller of a request with this Authorization header from `client_host`, or why not.

        `metrics`: the request is for `/metrics`, which may skip the key from loopback by setting.
        """
        now = self._clock()
        address = client_host or "unknown"
        secret = _bearer(authorization)
        if secret is None:
            loopback = _is_loopback(client_host)
            if loopback and (self._config.allow_keyless_loopback or (metrics and self._config.metrics_keyless_loopback)):
                return self._limited(Caller(f"addr:{address}", None), now)
            return self._failed(address, now, "missing API key: send 'Authorization: Bearer <key>' "
                                              "(create one with `orc-node api-key create`)")
        key = self._keys.verify(secret)
        if key is None:
            return self._failed(address, now, "invalid API key (revoked, or not a key of this node); "
                                              "see `orc-node api-key list`")
        return self._limited(Caller(key.id, key.name), now)

    def still_valid(self, authorization: str | None) -> bool:
        """Whether the key of an Authorization header admitted earlier is still one of the node's
        (a long stream asks again now and then: a revoked key ends it). Keyless callers stay valid;
        no rate is taken."""
        secret = _bearer(authorization)
        return secret is None or self._keys.verify(secret) is not None

    def enter(self) -> Refusal | None:
        """Take a place for a request in flight, or refuse it (the node is at its cap)."""
        if self.in_flight >= self._config.max_concurrent:
            return Refusal(503, f"this node is serving its maximum of {self._config.max_concurrent} requests at "
                                "once; retry shortly", "server_error", "overloaded", retry_after_s=1)
        self.in_flight += 1
        return None

    def leave(self) -> None:
        self.in_flight -= 1

    def _limited(self, caller: Caller, now: float) -> Caller | Refusal:
        wait = self._requests.take(caller.id, now)
        if wait is None:
            return caller
        return Refusal(429, f"rate limit of {self._config.requests_per_minute} requests per minute reached; "
                            f"retry in {wait:.1f} s", "rate_limit_error", "rate_limit_exceeded",
                       retry_after_s=max(1, int(wait + 0.999)))

    def _failed(self, address: str, now: float, message: str) -> Refusal:
        wait = self._failures.take(address, now)
        if wait is not None:
            return Refusal(429, "too many failed authentications from this address; retry later",
                           "rate_limit_error", "rate_limit_exceeded", retry_after_s=max(1, int(wait + 0.999)))
        return Refusal(401, message, "authentication_error", "invalid_api_key")


def _bearer(authorization: str | None) -> str | None:
    """The key of an `Authorization: Bearer KEY` header; None when there is none. A header that
    is not a bearer key (or is absurdly long) gives "" (an invalid key), never an exception."""
    if not authorization:
        return None
    if len(authorization) > MAX_AUTHORIZATION_CHARS:
        return ""
    scheme, _, secret = authorization.strip().partition(" ")
    if scheme.lower() != "bearer":
        return ""
    return secret.strip()


def _is_loopback(host: str | None) -> bool:
    if not host:
        return False
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
