"""How fast this node really runs each model: a short warm-up generation, then every real one.

Placement estimates finish times from these numbers (DESIGN.md section 7), so they are measured
here, on this device, with this load, never taken from a table. The warm-up also loads the
model, so a node that advertises a model as loaded has really loaded it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, replace

from orc.node.models.catalog import ModelEntry
from orc.node.models.runtimes.base import ChatMessage, GenerationDone, GenerationParams, ModelRuntime, TokenChunk

# A prompt long enough that reading it takes measurable time (about 120 tokens), and an
# answer long enough for a decode rate, yet short enough that a Pi finishes both in seconds.
WARMUP_MESSAGES = (
    ChatMessage("system", "You are a careful assistant who answers in plain English."),
    ChatMessage("user", "A small computer on a home network runs language models for its owner. "
                        "It shares the work with a laptop and a desktop in the same house, and "
                        "each device measures how quickly it reads prompts and writes answers so "
                        "that the others can decide where to send each task. Describe in two "
                        "sentences why measuring the speed on the device itself is better than "
                        "looking it up in a table of typical speeds."),
)
WARMUP_PARAMS = GenerationParams(temperature=0.0, max_tokens=32, seed=0)
# Each of a batch of k warm-up generations writes the warm-up's answer length divided by k, and
# at least MIN_BATCH_TOKENS (enough for a decode rate): up to 4 together, a batch decodes no
# more tokens in all than the single warm-up did.
MIN_BATCH_TOKENS = 8
# Measuring batches stops before a batch whose expected time would take the whole warm-up past
# this many seconds (a Pi must be serving within seconds, not minutes); only what was measured
# is advertised.
BATCH_BUDGET_S = 20.0

# Weight of the newest observation when a real generation refreshes the measurement.
REFRESH_WEIGHT = 0.3


def _blend(old: float, new: float) -> float:
    return old + REFRESH_WEIGHT * (new - old)


@dataclass(frozen=True)
class Speed:
    """Measured throughput of one model on this node, in tokens per second.

    `batch_decode_tokens_per_s[k]` is the decode speed of each of k+1 sequences generated
    together (index 0: one alone); empty when only one-at-a-time was measured, shorter than the
    model's capacity when measuring stopped early.
    """

    prefill_tokens_per_s: float
    decode_tokens_per_s: float
    measured_at: float  # unix seconds
    batch_decode_tokens_per_s: tuple[float, ...] = ()

    def refreshed(self, observed: "Speed") -> "Speed":
        """Blend a newer observation of one sequence alone in (an exponential moving average);
        the batch speeds are kept, their first entry following the decode speed."""
        decode = _blend(self.decode_tokens_per_s, observed.decode_tokens_per_s)
        batch = (decode, *self.batch_decode_tokens_per_s[1:]) if self.batch_decode_tokens_per_s else ()
        return Speed(_blend(self.prefill_tokens_per_s, observed.prefill_tokens_per_s), decode,
                     observed.measured_at, batch)

    def refreshed_at_batch(self, batch: int, decode_tokens_per_s: float, now: float) -> "Speed":
        """Blend the decode speed one sequence had while `batch` ran together into that batch
        size's entry. A size never measured takes the observation as is, when it extends the
        measured sizes by one; beyond that it is not recorded (the sizes stay contiguous)."""
        if batch <= 1:
            return self.refreshed(Speed(self.prefill_tokens_per_s, decode_tokens_per_s, now))
        rates = list(self.batch_decode_tokens_per_s or (self.decode_tokens_per_s,))
        if batch <= len(rates):
            rates[batch - 1] = _blend(rates[batch - 1], decode_tokens_per_s)
        elif batch == len(rates) + 1:
            rates.append(decode_tokens_per_s)
        else:
            return self
        return replace(self, measured_at=now, batch_decode_tokens_per_s=tuple(rates))


def speed_from_timing(prompt_tokens: int, completion_tokens: int, started: float, first_token: float | None,
                      finished: float, now: float) -> Speed | None:
    """A speed from one generation's timestamps (perf-counter seconds), or None if too short to tell.

    Time to the first token is dominated by reading the prompt; the rest is decoding.
    """
    if first_token is None or completion_tokens < 2 or prompt_tokens < 1:
        return None
    prefill_seconds = max(first_token - started, 1e-6)
    decode_seconds = max(finished - first_token, 1e-6)
    return Speed(prompt_tokens / prefill_seconds, (completion_tokens - 1) / decode_seconds, now)


async def _timed(runtime: ModelRuntime, entry: ModelEntry, params: GenerationParams,
                 clock: Callable[[], float]) -> tuple[float | None, float, GenerationDone | None]:
    """(first token, finished, the result) of one warm-up generation, perf-counter seconds."""
    first: float | None = None
    done: GenerationDone | None = None
    async for event in runtime.generate(entry, WARMUP_MESSAGES, params):
        match event:
            case TokenChunk():
                if first is None:
                    first = clock()
            case GenerationDone():
                done = event
    return first, clock(), done


def batch_tokens(batch: int) -> int:
    """Tokens each of `batch` warm-up generations writes: the warm-up's answer split among them."""
    return max(MIN_BATCH_TOKENS, WARMUP_PARAMS.max_tokens // batch)


def per_sequence_decode(timings: list[tuple[float | None, float, GenerationDone | None]]) -> float | None:
    """The decode speed of each of several generations run together: the tokens they decoded,
    shared among them, over the time from the first one's first token to the last one's end. A
    runtime that only claims to batch and really runs them one after another shows its true,
    divided speed here. None when one of them wrote too little to tell."""
    firsts = [first for first, _, _ in timings]
    if any(first is None or done is None or done.usage.completion_tokens < 2 for first, _, done in timings):
        return None
    decoded = sum(done.usage.completion_tokens - 1 for _, _, done in timings if done is not None)
    span = max(finished for _, finished, _ in timings) - min(f for f in firsts if f is not None)
    return decoded / len(timings) / max(span, 1e-6)


async def measure(runtime: ModelRuntime, entry: ModelEntry, *, capacity: int = 1,
                  budget_s: float = BATCH_BUDGET_S, clock: Callable[[], float] = time.perf_counter,
                  wall: Callable[[], float] = time.time) -> Speed | None:
    """Load `entry` if needed, time one warm-up generation alone, then, for a model that runs
    `capacity` > 1 at once, batches of 2, 3, ... warm-up generations started together.

    The load is excluded: the model is loaded before the clock starts. Batch sizes are measured
    in order while the next one is expected to fit in `budget_s` from the start (expected: the
    last batch's time, scaled by the tokens it would decode); the batch speeds stop at the last
    size measured.
    """
    await runtime.load(entry)
    began = started = clock()
    first, finished, done = await _timed(runtime, entry, WARMUP_PARAMS, clock)
    if done is None:
        return None
    speed = speed_from_timing(done.usage.prompt_tokens, done.usage.completion_tokens, started, first, finished, wall())
    if speed is None or capacity <= 1:
        return speed
    return await measure_batches(runtime, entry, speed, capacity=capacity, budget_s=budget_s - (clock() - began),
                                 alone_s=finished - started, clock=clock)


async def measure_batches(runtime: ModelRuntime, entry: ModelEntry, speed: Speed, *, capacity: int,
                          budget_s: float = BATCH_BUDGET_S, alone_s: float | None = None,
                          clock: Callable[[], float] = time.perf_counter) -> Speed:
    """`speed` (measured alone) with the per-sequence decode rates of batches of 2, 3, ...
    warm-up generations started together, up to `capacity`, measured while the next batch is
    expected to fit in `budget_s` (expected: the last batch's time scaled by the tokens it
    would decode; `alone_s`, the warm-up alone, starts the estimate)."""
    began = clock()
    rates = [speed.decode_tokens_per_s]
    last_tokens = WARMUP_PARAMS.max_tokens
    last_s = alone_s if alone_s is not None else last_tokens / max(speed.decode_tokens_per_s, 1e-6)
    for batch in range(2, capacity + 1):
        tokens = batch_tokens(batch)
        expected = last_s * (batch * tokens) / last_tokens
        if clock() - began + expected > budget_s:
            break
        params = replace(WARMUP_PARAMS, max_tokens=tokens)
        started = clock()
        timings = await asyncio.gather(*(_timed(runtime, entry, params, clock) for _ in range(batch)))
        rate = per_sequence_decode(list(timings))
        if rate is None:
            break
        rates.append(rate)
        last_s, last_tokens = clock() - started, batch * tokens
    return replace(speed, batch_decode_tokens_per_s=tuple(rates))
