"""How fast this node really runs each model: a short warm-up generation, then every real one.

Placement estimates finish times from these numbers (DESIGN.md section 7), so they are measured
here, on this device, with this load, never taken from a table. The warm-up also loads the
model, so a node that advertises a model as loaded has really loaded it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

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

# Weight of the newest observation when a real generation refreshes the measurement.
REFRESH_WEIGHT = 0.3


@dataclass(frozen=True)
class Speed:
    """Measured throughput of one model on this node, in tokens per second."""

    prefill_tokens_per_s: float
    decode_tokens_per_s: float
    measured_at: float  # unix seconds

    def refreshed(self, observed: "Speed") -> "Speed":
        """Blend a newer observation in (an exponential moving average)."""

        def blend(old: float, new: float) -> float:
            return old + REFRESH_WEIGHT * (new - old)

        return Speed(blend(self.prefill_tokens_per_s, observed.prefill_tokens_per_s),
                     blend(self.decode_tokens_per_s, observed.decode_tokens_per_s),
                     observed.measured_at)


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


async def measure(runtime: ModelRuntime, entry: ModelEntry, *, clock: Callable[[], float] = time.perf_counter,
                  wall: Callable[[], float] = time.time) -> Speed | None:
    """Load `entry` if needed, then time one warm-up generation.

    The load is excluded: the model is loaded before the clock starts.
    """
    await runtime.load(entry)
    started = clock()
    first: float | None = None
    done: GenerationDone | None = None
    async for event in runtime.generate(entry, WARMUP_MESSAGES, WARMUP_PARAMS):
        match event:
            case TokenChunk():
                if first is None:
                    first = clock()
            case GenerationDone():
                done = event
    finished = clock()
    if done is None:
        return None
    return speed_from_timing(done.usage.prompt_tokens, done.usage.completion_tokens, started, first, finished, wall())
