"""The warm-up measures each batch size by running that many generations together, within a budget."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence

import pytest

from orc.node.models.runtimes.base import ChatMessage, GenerationDone, GenerationParams, TokenChunk, Usage
from orc.node.worker.speed import (
    MIN_BATCH_TOKENS,
    WARMUP_PARAMS,
    Speed,
    batch_tokens,
    measure,
    per_sequence_decode,
)


class Clock:
    """A clock the fake runtime advances: no sleeping, no real time in these tests."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class BatchingRuntime:
    """Decodes every active sequence in one step of `step_s(active)` seconds (a fake batch:
    each step advances the shared clock once for all the sequences that take part in it)."""

    name = "fake"

    def __init__(self, clock: Clock, step_s, capacity: int, prompt_s: float = 0.1) -> None:
        self.clock, self.step_s, self._capacity, self.prompt_s = clock, step_s, capacity, prompt_s
        self.loaded = 0
        self.batches: list[int] = []  # sequences started together, per warm-up round
        self._waiting: list[asyncio.Future[None]] = []
        self._active = 0

    async def load(self, model) -> None:
        self.loaded += 1

    def capacity(self, model) -> int:
        return self._capacity

    async def generate(self, model, messages: Sequence[ChatMessage],
                       params: GenerationParams) -> AsyncIterator[TokenChunk | GenerationDone]:
        self._active += 1
        await asyncio.sleep(0)  # let the others of the batch start too
        active = self._active
        self.clock.now += self.prompt_s / active
        for _ in range(params.max_tokens):
            self.clock.now += self.step_s(active) / active  # each of `active` advances its share
            yield TokenChunk("x")
            await asyncio.sleep(0)
        self._active -= 1
        yield GenerationDone("x" * params.max_tokens, Usage(100, params.max_tokens), "length")


def test_a_model_of_one_place_is_measured_alone() -> None:
    clock = Clock()
    runtime = BatchingRuntime(clock, lambda active: 0.1, capacity=1)
    speed = asyncio.run(measure(runtime, object(), capacity=1, clock=clock, wall=lambda: 5.0))
    assert runtime.loaded == 1 and speed is not None
    assert speed.batch_decode_tokens_per_s == () and speed.decode_tokens_per_s == pytest.approx(10.0)


def test_each_batch_size_is_measured_by_running_that_many_together() -> None:
    clock = Clock()
    # One step decodes every active sequence; a step of 4 costs 1.6 times a step of 1.
    runtime = BatchingRuntime(clock, lambda active: 0.1 * (1 + 0.2 * (active - 1)), capacity=4)
    speed = asyncio.run(measure(runtime, object(), capacity=4, clock=clock, wall=lambda: 5.0))
    assert speed is not None and len(speed.batch_decode_tokens_per_s) == 4
    rates = speed.batch_decode_tokens_per_s
    assert rates[0] == pytest.approx(10.0)
    assert rates == tuple(sorted(rates, reverse=True))  # each sequence slower as the batch grows
    assert rates[3] * 4 > rates[0] * 2  # ... yet four together decode more than twice one alone


def test_a_runtime_that_runs_them_one_after_another_shows_its_divided_speed() -> None:
    timings = [(1.0, 2.0, GenerationDone("x", Usage(10, 11), "length")),
               (2.0, 3.0, GenerationDone("x", Usage(10, 11), "length"))]
    # Each ran at 10 tok/s on its own, but they took twice the time of one: 5 tok/s each.
    assert per_sequence_decode(timings) == pytest.approx(5.0)
    assert per_sequence_decode([(None, 1.0, None)]) is None


def test_larger_batches_write_fewer_tokens_each() -> None:
    assert batch_tokens(1) == WARMUP_PARAMS.max_tokens and batch_tokens(2) == WARMUP_PARAMS.max_tokens // 2
    assert batch_tokens(16) == MIN_BATCH_TOKENS


def test_measuring_stops_when_the_next_batch_would_exceed_the_budget() -> None:
    clock = Clock()
    runtime = BatchingRuntime(clock, lambda active: 0.5 * active, capacity=16)  # no gain at all: slow
    speed = asyncio.run(measure(runtime, object(), capacity=16, budget_s=60.0, clock=clock, wall=lambda: 5.0))
    assert speed is not None and 1 < len(speed.batch_decode_tokens_per_s) < 16
    assert clock.now <= 60.0  # the budget held: only what was measured is reported


def test_real_generations_refresh_the_speed_of_their_batch_size() -> None:
    speed = Speed(100.0, 10.0, 0.0, (10.0, 8.0))
    assert speed.refreshed_at_batch(2, 6.0, 1.0).batch_decode_tokens_per_s == pytest.approx((10.0, 7.4))
    assert speed.refreshed_at_batch(3, 6.0, 1.0).batch_decode_tokens_per_s == (10.0, 8.0, 6.0)
    assert speed.refreshed_at_batch(5, 6.0, 1.0) is speed  # sizes stay contiguous
    alone = speed.refreshed_at_batch(1, 20.0, 1.0)
    assert alone.decode_tokens_per_s == pytest.approx(13.0)
    assert alone.batch_decode_tokens_per_s[0] == alone.decode_tokens_per_s
    assert Speed(100.0, 10.0, 0.0).refreshed_at_batch(2, 9.0, 1.0).batch_decode_tokens_per_s == (10.0, 9.0)
