"""The warm-up advertises each model once measured alone, before the longer batch measurements."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

from test_speed import BatchingRuntime, Clock

from orc.node.worker.served import Served
from orc.node.worker.warm_up import warm_up


def test_models_are_advertised_alone_first_then_with_their_batch_speeds() -> None:
    clock = Clock()
    runtime = BatchingRuntime(clock, lambda active: 0.1 * (1 + 0.2 * (active - 1)), capacity=3)
    entries = [SimpleNamespace(id=name, runtime="fake") for name in ("first", "second")]
    served = [Served(entry, runtime, capacity=3) for entry in entries]  # type: ignore[arg-type]
    seen: list[list[tuple[bool, int]]] = []

    def changed() -> None:
        seen.append([(s.loaded, len(s.speed.batch_decode_tokens_per_s) if s.speed else -1) for s in served])

    asyncio.run(warm_up(served, {"fake": runtime}, changed))
    assert seen == [
        [(True, 0), (False, -1)],  # the first model, measured alone: usable by peers now
        [(True, 0), (True, 0)],    # the second one, alone
        [(True, 3), (True, 0)],    # then the batch sizes of each
        [(True, 3), (True, 3)],
    ]


def test_a_model_without_its_runtime_is_left_unloaded() -> None:
    entry = SimpleNamespace(id="m", runtime="mlx")
    served = [Served(entry, None)]  # type: ignore[arg-type]
    calls: list[int] = []
    asyncio.run(warm_up(served, {}, lambda: calls.append(1)))
    assert calls == [] and not served[0].loaded
