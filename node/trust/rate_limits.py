"""Per-peer token buckets: how often one party may do something, with a bounded memory.

Pure (the caller passes `now`, in seconds, monotonic). The mesh server's authorizer limits the
calls of each peer with one; membership limits certificate renewals per node with another.
"""

from __future__ import annotations

from collections import OrderedDict

DEFAULT_RATE = 50.0  # calls per second per peer, sustained
DEFAULT_BURST = 200.0  # calls a peer may make at once after a quiet spell
# Buckets kept at once. Only CA-certified nodes reach the limiter, but a leaked CA key or a
# long-lived daemon seeing many identities must not grow this table without bound.
DEFAULT_MAX_PEERS = 1024


class RateLimits:
    """Per-peer token buckets; a pure core (the caller passes `now`, in seconds, monotonic)."""

    def __init__(self, rate: float = DEFAULT_RATE, burst: float = DEFAULT_BURST,
                 max_peers: int = DEFAULT_MAX_PEERS) -> None:
        if rate <= 0 or burst < 1 or max_peers < 1:
            raise ValueError("rate must be positive, burst at least 1 and max_peers at least 1")
        self.rate = rate
        self.burst = burst
        self.max_peers = max_peers
        # peer -> (tokens, when last updated); least recently used first.
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._buckets)

    def tokens(self, peer: str, now: float) -> float:
        """How many calls `peer` could make right now."""
        entry = self._buckets.get(peer)
        return self.burst if entry is None else self._refilled(entry, now)

    def allow(self, peer: str, now: float, cost: float = 1.0) -> bool:
        """Take `cost` tokens from `peer`'s bucket if it has them; False (and take none) if not."""
        entry = self._buckets.pop(peer, None)
        tokens = self.burst if entry is None else self._refilled(entry, now)
        allowed = tokens >= cost
        if allowed:
            tokens -= cost
        self._buckets[peer] = (tokens, now)
        if len(self._buckets) > self.max_peers:
            self._evict(now)
        return allowed

    def _refilled(self, entry: tuple[float, float], now: float) -> float:
        tokens, updated = entry
        return min(self.burst, tokens + max(0.0, now - updated) * self.rate)

    def _evict(self, now: float) -> None:
        # Forgetting a full bucket changes nothing (a new one starts full), so those go first;
        # only when every tracked peer is busy does the least recently seen one lose its state.
        for peer, entry in list(self._buckets.items()):
            if self._refilled(entry, now) >= self.burst:
                del self._buckets[peer]
                if len(self._buckets) <= self.max_peers:
                    return
        while len(self._buckets) > self.max_peers:
            self._buckets.popitem(last=False)
