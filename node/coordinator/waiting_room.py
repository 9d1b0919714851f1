"""Where a coordinator's generations wait when every node refused them: woken when a place frees,
one per place, the first in line first.

A generation refused everywhere (every slot and queue place of its model taken) cannot know when
a place frees. Were it only to sleep a growing while and ask again, a burst of samples on one
busy node (four 5-sample votes at once) would sleep past the moment room came, the node would
idle between their retries, and samples asked later would take the places first: some votes
waited many times the work in front of them. Here a waiter sleeps until a place of its model
frees or its patience (the placer's retry timer, still needed for the nodes that say nothing)
runs out, whichever comes first.

- **What frees a place** is told by `freed(model)`: this node's own service when an execution
  ends or a lease is given back here (any caller's), and the placer when one of its own
  executions on a peer ends. Nothing tells of another coordinator's work ending on a peer, or
  of a lease expiring: those are found by the timer.
- **One waiter per place.** `freed` wakes the first waiter of that model only, so a freed place
  is asked for once, not by every waiter at once (a thundering herd of Offers). `freed(None)`
  (a place of some model) wakes the first waiter of every model.
- **In line by `order`**: the placer passes (-rank, when the generation first asked), so the
  critical path goes first and, among equals, the one that has waited longest.
- **Nothing is missed.** A place that frees while a generation's Offers are out (after it was
  refused, before it waits) would wake nobody; `seen()` before the Offers and `wait(..., seen)`
  after them notice it, and the generation asks again at once.

Not thread-safe: used on the placer's event loop only. Every waiter is one of this coordinator's
own generations (its runs are bounded where they enter: the control socket and the HTTP API), so
the line needs no cap of its own.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools


class WaitingRoom:
    """Generations waiting for a place of their model, in line by their order."""

    def __init__(self) -> None:
        self._lines: dict[str, list[tuple[tuple[float, ...], int, asyncio.Future[None]]]] = {}
        self._frees: dict[str, int] = {}  # model id -> places freed so far
        self._any_frees = 0  # places freed of a model not named
        self._arrivals = itertools.count()

    def seen(self, model: str) -> int:
        """How many places of `model` were freed so far: pass it to `wait` after asking for one."""
        return self._frees.get(model, 0) + self._any_frees

    async def wait(self, model: str, order: tuple[float, ...], patience: float, seen: int) -> bool:
        """Wait until a place of `model` frees for this waiter (True) or `patience` seconds pass
        (False). Returns True at once if a place freed since `seen` was taken."""
        if self.seen(model) != seen:
            return True
        woken: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        entry = (order, next(self._arrivals), woken)
        line = self._lines.setdefault(model, [])
        heapq.heappush(line, entry)
        try:
            await asyncio.wait_for(asyncio.shield(woken), max(patience, 0.0))
            return True
        except asyncio.TimeoutError:
            return woken.done()  # woken as its patience ran out: the place is still its to ask for
        finally:
            if not woken.done():  # still in line (patience ran out, or cancelled): leave it
                woken.cancel()
                line.remove(entry)
                heapq.heapify(line)
            if not line and self._lines.get(model) is line:
                del self._lines[model]

    def freed(self, model: str | None) -> None:
        """A place of `model` freed (None: of some model): wake the first waiter of that model
        (of every model)."""
        if model is None:
            self._any_frees += 1
            models = list(self._lines)
        else:
            self._frees[model] = self._frees.get(model, 0) + 1
            models = [model]
        for name in models:
            line = self._lines.get(name)
            if line:
                _, _, woken = heapq.heappop(line)
                woken.set_result(None)  # a waiter leaves the line as it stops waiting: never done here

    def waiting(self, model: str) -> int:
        """Generations of `model` in line now."""
        return len(self._lines.get(model, ()))
