"""What a coordinator believes of its peers: only what it observed, and who it caught lying.

A peer's description is its own word. The coordinator keeps the speeds it saw from each peer's
executions (started, first token, result) and caps every advertised speed by them: up to
`OBSERVED_SLACK` times what it observed there, or, never observed there, up to `UNOBSERVED_FACTOR`
times the best speed seen for that model anywhere (this node's own measurement included). A
peer's per-sequence speeds at batch sizes above one are believed no faster than its believed
speed alone, never faster for a larger batch than for a smaller one, and with no more gain from
batching (a batch's total speed over one alone's) than this node measured itself for the model:
a node that runs no such model here believes no gain at all. So claiming perfect batching (or a
larger capacity) draws no more work than the truth of this node's own hardware would. An
Offer estimate faster than the peer's own claim or than what was observed there allows, or a
result that cannot be true (more tokens than max_tokens, more text than its tokens can hold,
faster than anything seen for the model allows), is a lie: the peer is distrusted for
`DISTRUST_S` and gets no work from this coordinator meanwhile.

Pure bookkeeping over an injected clock: the placer (`orc.node.coordinator.placer`) asks and
reports; nothing here does I/O.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import replace

from orc.node.protocol.description import ModelOffer, NodeDescription
from orc.node.worker.speed import Speed
from orc.scheduler.placement import (
    UNMEASURED_DECODE_TOKENS_PER_S,
    UNMEASURED_PREFILL_TOKENS_PER_S,
    HeldModel,
    estimated_prompt_tokens,
)

log = logging.getLogger(__name__)

# ---- trust only what you observed ----
# A peer's advertised speed counts up to this multiple of what this coordinator observed there
# (observations include the network and a busy moment, so they are lower than the truth).
OBSERVED_SLACK = 1.5
# A peer never observed with a model counts as at most this multiple of the best speed seen for
# that model on any node (this one's own measurement included): enough to prefer a faster
# newcomer, too little for a liar to take every agent.
UNOBSERVED_FACTOR = 2.0
# An Offer estimate is a lie when it is below 1/LIE_SLACK of the time the work's decoding needs at
# the fastest speed believable for that peer: its own claim, capped by LIE_FACTOR_OBSERVED times what
# was observed there, or, never observed, by LIE_FACTOR_UNOBSERVED times the best seen anywhere.
# An honest node estimates at its own current speed, and one observation may have caught it
# sharing its cores with other generations: three of them on two cores have shown a 5.6 times
# slowdown, so an estimate is called a lie only 8 times (2 x 4) faster than what was seen there.
LIE_SLACK = 2.0
LIE_FACTOR_OBSERVED = 4.0
LIE_FACTOR_UNOBSERVED = 16.0
# The smallest context window a node may run a model with: the decode part of the time
# expected for an Offer counts no more tokens than it leaves (a node bounds max_tokens by its own).
MIN_CONTEXT_TOKENS = 512
# A result is impossible when it came faster than the best speeds seen for its model anywhere
# allow, divided by this; or with more text than MAX_CHARS_PER_TOKEN per token it claims.
IMPOSSIBLE_FACTOR = 20.0
MAX_CHARS_PER_TOKEN = 32
# A peer caught lying gets no work from this coordinator for this long.
DISTRUST_S = 600.0
# Observations (node, model) and distrusted peers remembered: the oldest are forgotten first.
MAX_OBSERVED = 1024
MAX_DISTRUSTED = 256


def believed_batch_rates(claimed: tuple[float, ...], alone: float, gains: tuple[float, ...]) -> tuple[float, ...]:
    """A peer's per-sequence speeds at batch sizes 1, 2, ... as far as they can be believed:
    none faster than `alone` (its believed speed alone) nor than the size before, and none with
    a gain above `gains` (the gain at each size this node measured; beyond the last, no more
    total speed than there; with none, no gain at all)."""
    believed: list[float] = []
    for size, rate in enumerate(claimed, 1):
        if size <= len(gains):
            gain = gains[size - 1]
        else:
            gain = gains[-1] if gains else 1.0
        ceiling = min(alone * gain / size, believed[-1] if believed else alone)
        believed.append(min(rate, ceiling))
    return tuple(believed)


class Observations:
    """Speeds observed per (peer, model) and peers distrusted, both capped (oldest forgotten first)."""

    def __init__(self, *, clock: Callable[[], float], own_models: Callable[[], Iterable[ModelOffer]],
                 peers: Callable[[], Iterable[tuple[str, NodeDescription | None]]]) -> None:
        """`own_models()`: this node's models with its measured speeds; `peers()`: each peer's id
        and last description (for what it claims)."""
        self._clock = clock
        self._own_models = own_models
        self._peers = peers
        # Speeds this coordinator observed, by (node id, model id); most recent last, capped.
        self._seen: dict[tuple[str, str], Speed] = {}
        # Peers caught lying: node id -> (distrusted until, by the clock; what they did).
        self._distrusted: dict[str, tuple[float, str]] = {}
        self.lies: dict[str, int] = {}  # node id -> lies caught (capped like the distrusted)

    def distrusted(self) -> frozenset[str]:
        """Peers caught lying whose cool-down has not ended."""
        now = self._clock()
        return frozenset(node for node, (until, _) in self._distrusted.items() if now < until)

    def observed(self, node_id: str, model_id: str) -> Speed | None:
        """The speeds this coordinator saw from `node_id`'s executions of `model_id`, if any."""
        return self._seen.get((node_id, model_id))

    def best(self, model_id: str) -> tuple[float, float] | None:
        """The best (prefill, decode) seen for a model: on any node, or measured by this node itself."""
        seen = [(speed.prefill_tokens_per_s, speed.decode_tokens_per_s)
                for (_, model), speed in self._seen.items() if model == model_id]
        seen += [(m.prefill_tokens_per_s, m.decode_tokens_per_s) for m in self._own_models()
                 if m.id == model_id and m.prefill_tokens_per_s and m.decode_tokens_per_s]
        if not seen:
            return None
        return max(p for p, _ in seen), max(d for _, d in seen)

    def cap(self, node_id: str, model_id: str, observed_factor: float,
             unobserved_factor: float) -> tuple[float, float] | None:
        """The fastest (prefill, decode) this coordinator believes of a peer's model: what it
        observed there times `observed_factor`, or, never observed there, the best seen for the
        model anywhere times `unobserved_factor`."""
        observed = self._seen.get((node_id, model_id))
        if observed is not None:
            return observed.prefill_tokens_per_s * observed_factor, observed.decode_tokens_per_s * observed_factor
        best = self.best(model_id)
        if best is None:
            return None
        return best[0] * unobserved_factor, best[1] * unobserved_factor

    def batch_gains(self, model_id: str) -> tuple[float, ...]:
        """The best gain from batching this node measured itself for a model: at index k, the total
        decode speed of k+1 sequences together over one alone's; empty when it measured none."""
        gains: list[float] = []
        for m in self._own_models():
            rates = m.batch_decode_tokens_per_s
            if m.id != model_id or not rates or rates[0] <= 0:
                continue
            for index, rate in enumerate(rates):
                gain = (index + 1) * rate / rates[0]
                if index < len(gains):
                    gains[index] = max(gains[index], gain)
                else:
                    gains.append(gain)
        return tuple(gains)

    def capped(self, node_id: str, model: HeldModel) -> HeldModel:
        """A peer's model with its advertised speeds cut to what this coordinator believes."""
        cap = self.cap(node_id, model.id, OBSERVED_SLACK, UNOBSERVED_FACTOR) or (UNMEASURED_PREFILL_TOKENS_PER_S,
                                                                                  UNMEASURED_DECODE_TOKENS_PER_S)
        decode = None if model.decode_tokens_per_s is None else min(model.decode_tokens_per_s, cap[1])
        alone = decode if decode is not None else min(next(iter(model.batch_decode_tokens_per_s), cap[1]), cap[1])
        return replace(model,
                       prefill_tokens_per_s=None if model.prefill_tokens_per_s is None
                       else min(model.prefill_tokens_per_s, cap[0]),
                       decode_tokens_per_s=decode,
                       batch_decode_tokens_per_s=believed_batch_rates(model.batch_decode_tokens_per_s, alone,
                                                                      self.batch_gains(model.id)))

    def _advertised(self, node_id: str, model_id: str, sha256: str) -> tuple[float | None, float | None]:
        for peer_id, description in self._peers():
            if peer_id == node_id and description is not None:
                for m in description.models:
                    if m.id == model_id and (not sha256 or m.sha256 == sha256):
                        return m.prefill_tokens_per_s, m.decode_tokens_per_s
        return None, None

    def lie(self, node_id: str, model_id: str, sha256: str, prompt_chars: int, max_tokens: int,
            estimated_finish_ms: int) -> str | None:
        """Why a peer's accepted Offer (to finish in `estimated_finish_ms`) cannot be true, or None
        when it may be."""
        fastest = []
        claimed = self._advertised(node_id, model_id, sha256)
        cap = self.cap(node_id, model_id, LIE_FACTOR_OBSERVED, LIE_FACTOR_UNOBSERVED)
        for index in (0, 1):
            believable = [speed for speed in (claimed[index], cap[index] if cap else None) if speed]
            fastest.append(min(believable) if believable else None)
        if fastest[0] is None or fastest[1] is None:
            return None  # nothing to judge by
        prompt = estimated_prompt_tokens(prompt_chars)
        written = min(max_tokens, max(MIN_CONTEXT_TOKENS - prompt, 0))
        # Only the decode counts: a node that holds the prompt's prefix in its KV cache (the same
        # system prompt and input again, the common case of an ensemble or of repeated API calls)
        # truly skips its prefill, and an honest estimate says so.
        needed = written / fastest[1]
        if estimated_finish_ms / 1000 < needed / LIE_SLACK:
            return (f"it offered to finish in {estimated_finish_ms} ms what needs at least "
                    f"{needed * 1000:.0f} ms at the fastest speeds it can be believed to have")
        return None

    def impossible(self, model_id: str, max_tokens: int, text: str, prompt_tokens: int,
                   completion_tokens: int, seconds: float) -> str | None:
        """Why a peer's result cannot be true, or None when it may be (a made-up text that looks
        real cannot be caught: only what contradicts the numbers)."""
        if completion_tokens > max_tokens:
            return f"it claims {completion_tokens} completion tokens, more than max_tokens {max_tokens}"
        if len(text) > max(completion_tokens, 1) * MAX_CHARS_PER_TOKEN:
            return f"its {len(text)} characters cannot be {completion_tokens} tokens"
        best = self.best(model_id)
        if best is not None:
            fastest = prompt_tokens / best[0] + max(completion_tokens - 1, 0) / best[1]
            if seconds < fastest / IMPOSSIBLE_FACTOR:
                return (f"it finished in {seconds * 1000:.0f} ms, more than {IMPOSSIBLE_FACTOR:g} times faster than "
                        f"any speed seen for {model_id} allows ({fastest * 1000:.0f} ms)")
        return None

    def distrust(self, node_id: str, name: str, why: str) -> None:
        log.warning("distrusting %s for %.0f s: %s", name, DISTRUST_S, why)
        self._distrusted.pop(node_id, None)
        self._distrusted[node_id] = (self._clock() + DISTRUST_S, why)
        self.lies[node_id] = self.lies.pop(node_id, 0) + 1
        for table in (self._distrusted, self.lies):
            while len(table) > MAX_DISTRUSTED:
                del table[next(iter(table))]

    def observe(self, node_id: str, model_id: str, speed: Speed) -> None:
        key = (node_id, model_id)
        previous = self._seen.pop(key, None)
        self._seen[key] = previous.refreshed(speed) if previous else speed
        while len(self._seen) > MAX_OBSERVED:
            del self._seen[next(iter(self._seen))]
