"""A node's warm-up: every served model loaded and its speed measured on this device.

Each model is first measured alone, one model after another (a small device has neither the
cores nor the memory to do them in parallel), and advertised as soon as it is: peers can use
the node from then on. Then each model that runs several generations at once is measured at
each batch size up to its capacity (`orc.node.worker.speed.measure_batches`), which takes
longer, and advertised again.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace

from orc.node.models.runtimes.base import ModelRuntime, RuntimeFailure
from orc.node.worker.served import Served
from orc.node.worker.speed import measure, measure_batches

log = logging.getLogger("orc.node.worker.service")


async def warm_up(served_models: Sequence[Served], runtimes: Mapping[str, ModelRuntime],
                  changed: Callable[[], None]) -> None:
    """Load and measure `served_models`, calling `changed` after each advertised change. A model
    that fails to load is logged and stays advertised as not loaded."""
    batched: list[tuple[Served, ModelRuntime]] = []
    for served in served_models:
        runtime = runtimes.get(served.entry.runtime)
        if runtime is None:
            log.warning("model %s needs the %s runtime, which this node does not have",
                        served.entry.id, served.entry.runtime)
            continue
        try:
            speed = await measure(runtime, served.entry)
        except RuntimeFailure as error:
            log.warning("model %s could not be loaded: %s", served.entry.id, error)
            continue
        served.loaded = True
        served.speed = speed
        if speed is not None:
            log.info("model %s ready: prefill %.0f tok/s, decode %.1f tok/s", served.entry.id,
                     speed.prefill_tokens_per_s, speed.decode_tokens_per_s)
            if served.capacity > 1:
                batched.append((served, runtime))
        changed()
    for served, runtime in batched:
        assert served.speed is not None
        try:
            measured = await measure_batches(runtime, served.entry, served.speed, capacity=served.capacity)
        except RuntimeFailure as error:
            log.warning("model %s: measuring its batches failed: %s", served.entry.id, error)
            continue
        # Real generations may have refreshed the speed alone meanwhile: keep that.
        current = served.speed if served.speed is not None else measured
        served.speed = replace(current, batch_decode_tokens_per_s=measured.batch_decode_tokens_per_s)
        log.info("model %s decodes %s tok/s a sequence with 1..%d together", served.entry.id,
                 ", ".join(f"{rate:.1f}" for rate in measured.batch_decode_tokens_per_s),
                 len(measured.batch_decode_tokens_per_s))
        changed()
