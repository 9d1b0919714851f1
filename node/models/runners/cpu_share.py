"""The node's CPU cores, shared among the runners that generate at the same time.

Every runner starts to compute with all the cores (or `--threads`): right when it runs alone.
Two runners decoding at once that way ask for twice the cores there are, and llama.cpp's worker
threads, which spin while they wait for each other, then lose most of their time to each other:
on a two-core machine SmolLM2 and Gemma-3 decoding together made 42 tokens/s between them,
against 95 with one thread each (docs/benchmarks.md, "Two models at once"). So the node counts the runners
with a generation in flight and gives each an even share of the cores, in a `Threads` message
whenever that count changes; a runner generating alone gets all of them again.

A runner takes its share only where its model's results do not change with the thread count
(measured when it loads, `StepLoop._probe_threads`), so no generation's text depends on what
another model is doing meanwhile.
"""

from __future__ import annotations

import logging
import os
import weakref
from collections.abc import Sequence
from typing import Protocol

__all__ = ["Claimant", "CpuShare", "shares"]

log = logging.getLogger(__name__)


class Claimant(Protocol):
    """A runner as the share sees it."""

    @property
    def max_threads(self) -> int | None: ...  # its own setting; None: every core

    def set_threads(self, threads: int) -> None: ...


def shares(cores: int, limits: Sequence[int | None]) -> list[int]:
    """Threads for each of the runners generating now, given in the order they began: the
    cores split evenly, the first ones taking what does not divide, each at least one and at
    most its own limit (None: no limit of its own)."""
    count = len(limits)
    if count == 0:
        return []
    each, rest = divmod(max(cores, 1), count)
    return [max(1, min(each + (1 if i < rest else 0), limit or cores)) for i, limit in enumerate(limits)]


class CpuShare:
    """The busy runners of one node and the threads each was last told to use.

    `cores` defaults to the machine's CPUs (as a runner's own default, `os.cpu_count()`).
    `busy` and `idle` are called on the node's event loop when a runner's first generation
    starts and its last one ends.
    """

    def __init__(self, cores: int | None = None) -> None:
        self.cores = cores or os.cpu_count() or 1
        self._busy: dict[Claimant, None] = {}  # in the order they became busy
        self._told: weakref.WeakKeyDictionary[Claimant, int] = weakref.WeakKeyDictionary()

    def busy(self, runner: Claimant) -> None:
        if runner not in self._busy:
            self._busy[runner] = None
            self._rebalance()

    def idle(self, runner: Claimant) -> None:
        if runner in self._busy:
            del self._busy[runner]
            self._rebalance()

    def told(self, runner: Claimant) -> int | None:
        """The threads `runner` was last told to use (None: never; it uses its own setting)."""
        return self._told.get(runner)

    @property
    def generating(self) -> int:
        """How many runners have a generation in flight now."""
        return len(self._busy)

    def _rebalance(self) -> None:
        runners = list(self._busy)
        for runner, threads in zip(runners, shares(self.cores, [r.max_threads for r in runners]), strict=True):
            if self._told.get(runner) != threads:
                self._told[runner] = threads
                log.debug("%d runner(s) generating: %r computes with %d thread(s)", len(runners), runner, threads)
                runner.set_threads(threads)
