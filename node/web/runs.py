"""The daemon's run hub: every run this node coordinates passes through it, whoever asked for it
(the page, the API's `ensemble/NAME`, `orc run` through the control socket).

    watched(events)   a run's events passed on unchanged, each also stamped with the time the
                      daemon saw it, kept for /api/runs/ID and broadcast to the page's streams
    launch(begin)     a run owned by the daemon (started or resumed from the page), in a task
    cancel(run_id)    stops a run it watches; its journal keeps what finished (interrupted)
    subscribe()       a bounded feed of every run's events, for one /api/events stream

A watched run is consumed by a task of the hub's own (a pump), which hands each event on to
whoever reads the run: cancelling that task is how a run is cancelled, wherever it came from,
and its reader then gets `Cancelled` instead of the rest of the run. The run's journal is held
(`journal_lock`) while the hub watches it, so `orc runs show` sees it running.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections import OrderedDict, deque
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

from orc.node.coordinator.journal_lock import holding
from orc.node.protocol.errors import Cancelled
from orc.node.protocol.events import RunBegan, RunFinished, RunProgress
from orc.node.web.run_record import Json, LiveRun, event_json

log = logging.getLogger(__name__)

# Runs started from the page at once: each holds generations on the mesh, and a page (or a key
# holder scripting it) must not start an unbounded number.
MAX_OWNED_RUNS = 8
# Finished runs whose events stay in memory (older ones are read from their journals, without events).
KEEP_FINISHED = 20
# Streams of /api/events at once: each holds a connection and a queue.
MAX_SUBSCRIBERS = 64
# Items waiting for one stream; a stream that falls this far behind (a stalled browser) is
# dropped rather than ever slowing a run or growing the daemon's memory. The page reconnects.
SUBSCRIBER_QUEUE = 1000
# Events handed from a run's pump to its reader before the pump waits: enough to absorb a
# burst of tokens, small enough that a stalled reader still slows its own run, as before.
HANDOFF = 64


Watcher = Callable[[AsyncIterator[RunProgress]], AsyncIterator[RunProgress]]


class TooManyRuns(Exception):
    """This node already runs its maximum of runs started from the dashboard."""


class TooManySubscribers(Exception):
    """This node already serves its maximum of dashboard event streams."""


class Subscription:
    """One /api/events stream's feed: (kind, JSON text) items, and whether the runs changed.

    Never blocks whoever offers: past SUBSCRIBER_QUEUE waiting items it is dropped (its items
    forgotten, `dropped` set) and its stream ends."""

    def __init__(self, limit: int = SUBSCRIBER_QUEUE) -> None:
        self._limit = limit
        self._items: deque[tuple[str, str]] = deque()
        self._wake = asyncio.Event()
        self.dropped = False
        self._runs_changed = False

    def offer(self, kind: str, data: str) -> None:
        if self.dropped:
            return
        if len(self._items) >= self._limit:
            self.drop()
            return
        self._items.append((kind, data))
        self._wake.set()

    def runs_changed(self) -> None:
        """A run started or ended: the stream sends the list again (once, however many changed)."""
        if not self.dropped:
            self._runs_changed = True
            self._wake.set()

    def drop(self) -> None:
        self.dropped = True
        self._items.clear()
        self._runs_changed = False
        self._wake.set()

    async def wait(self, timeout_s: float) -> None:
        """Until something is waiting, the subscription is dropped, or `timeout_s` passed."""
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._wake.wait(), timeout_s)

    def take(self) -> tuple[list[tuple[str, str]], bool]:
        """The items waiting and whether the runs changed since the last take."""
        items, changed = list(self._items), self._runs_changed
        self._items.clear()
        self._runs_changed = False
        self._wake.clear()
        return items, changed


@dataclass
class _Watch:
    """One watched run's handle: its pump, and why the pump stopped, if it was stopped."""

    pump: asyncio.Task[None] | None = None
    run: LiveRun | None = None
    cancel_requested: bool = False
    abandoned: bool = False  # its reader went away: nobody to hand the rest to


@dataclass(frozen=True)
class _End:
    error: BaseException | None


class RunHub:
    """One per daemon. `clock()`: wall-clock seconds, for the events' `at`; `observe(events)`:
    what else watches every run, inside the hub (the node's metrics, `NodeMetrics.watched_run`)."""

    def __init__(self, clock: Callable[[], float], *, observe: Watcher = lambda events: events,
                 max_owned: int = MAX_OWNED_RUNS, max_subscribers: int = MAX_SUBSCRIBERS,
                 keep_finished: int = KEEP_FINISHED) -> None:
        self._clock = clock
        self._observe = observe
        self._max_owned = max_owned
        self._max_subscribers = max_subscribers
        self._keep_finished = keep_finished
        self._live: dict[str, _Watch] = {}
        self._finished: OrderedDict[str, LiveRun] = OrderedDict()
        self._owned: set[asyncio.Task[None]] = set()
        self._starting = 0
        self._subscribers: set[Subscription] = set()
        self._closed = False

    # ---- what it knows ----

    def run(self, run_id: str) -> LiveRun | None:
        """The run in memory: live, or among the last finished ones."""
        watch = self._live.get(run_id)
        return watch.run if watch is not None else self._finished.get(run_id)

    def runs(self) -> tuple[LiveRun, ...]:
        """Every run in memory, live ones first."""
        live = tuple(w.run for w in self._live.values() if w.run is not None)
        return live + tuple(reversed(self._finished.values()))

    def active(self, run_id: str) -> bool:
        return run_id in self._live

    # ---- watching ----

    async def watched(self, events: AsyncIterator[RunProgress]) -> AsyncIterator[RunProgress]:
        """`events`, passed on as they come, seen by the hub (and its `observe`); ends with
        `Cancelled` if the run is cancelled through the hub. Closing this iterator closes `events`."""
        watch = _Watch()
        handoff: asyncio.Queue[RunProgress | _End] = asyncio.Queue(HANDOFF)
        watch.pump = asyncio.create_task(self._pump(self._observe(events), handoff, watch), name="run-events")
        try:
            while True:
                item = await handoff.get()
                if isinstance(item, _End):
                    if item.error is not None:
                        raise item.error
                    return
                yield item
        finally:
            watch.abandoned = True
            if not watch.pump.done():
                watch.pump.cancel()
            await asyncio.gather(watch.pump, return_exceptions=True)

    async def _pump(self, events: AsyncIterator[RunProgress], handoff: asyncio.Queue[RunProgress | _End],
                    watch: _Watch) -> None:
        end = _End(None)
        with contextlib.ExitStack() as held:
            try:
                async for event in events:
                    self._seen(watch, event, held)
                    await handoff.put(event)
            except asyncio.CancelledError:
                if watch.abandoned or not watch.cancel_requested:
                    raise
                _handled(asyncio.current_task())
                run_id = watch.run.run_id if watch.run else "?"
                end = _End(Cancelled(f"run {run_id} was cancelled from the dashboard; what finished is in its "
                                     f"journal ('orc runs resume {run_id}' continues it)"))
            except Exception as error:  # the run's own failure: its reader gets it
                end = _End(error)
            finally:
                await _close(events)
                self._ended(watch)
        if not watch.abandoned:
            await handoff.put(end)

    def _seen(self, watch: _Watch, event: RunProgress, held: contextlib.ExitStack) -> None:
        at = self._clock()
        as_json = event_json(event, at)
        if isinstance(event, RunBegan) and watch.run is None:
            watch.run = LiveRun.began(event, at)
            self._finished.pop(event.run_id, None)  # a resume: its earlier attempt's record goes
            self._live[event.run_id] = watch
            if event.journal is not None:
                held.enter_context(holding(event.journal))
            self._changed()
        run = watch.run
        if run is None or as_json is None:
            return  # a forecast, before the run began
        run.observe(event, as_json)
        data = json.dumps({"run_id": run.run_id, "event": as_json}, ensure_ascii=False, default=str)
        for subscriber in tuple(self._subscribers):
            subscriber.offer("run", data)
        if isinstance(event, RunFinished):
            self._changed()

    def _ended(self, watch: _Watch) -> None:
        run = watch.run
        if run is None:
            return
        run.ended(self._clock())
        if self._live.get(run.run_id) is watch:
            del self._live[run.run_id]
            self._finished[run.run_id] = run
            while len(self._finished) > self._keep_finished:
                self._finished.popitem(last=False)
        self._changed()

    def cancel(self, run_id: str) -> bool:
        """Stop the run `run_id` (its agents are cancelled; the journal keeps what finished);
        False if the hub runs no such run."""
        watch = self._live.get(run_id)
        if watch is None or watch.pump is None or watch.pump.done():
            return False
        watch.cancel_requested = True
        watch.pump.cancel()
        log.info("run %s cancelled from the dashboard", run_id)
        return True

    # ---- runs of its own ----

    async def launch(self, begin: Callable[[], Awaitable[AsyncIterator[RunProgress]]]) -> str:
        """Start a run the daemon owns: `begin()` checks and starts it (its errors come back
        here, nothing having run), then a task consumes it. Returns its run id once it began;
        TooManyRuns past the cap."""
        if self._closed or len(self._owned) + self._starting >= self._max_owned:
            raise TooManyRuns(f"this node already runs {self._max_owned} runs started from the dashboard; "
                              "wait for one to end")
        self._starting += 1
        try:
            events = await begin()
        finally:
            self._starting -= 1
        began: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        began.add_done_callback(_retrieved)  # its caller may have gone; the run goes on regardless
        task = asyncio.create_task(self._own(events, began), name="dashboard-run")
        self._owned.add(task)
        task.add_done_callback(self._owned.discard)
        return await asyncio.shield(began)

    async def _own(self, events: AsyncIterator[RunProgress], began: asyncio.Future[str]) -> None:
        try:
            async for event in self.watched(events):
                if isinstance(event, RunBegan) and not began.done():
                    began.set_result(event.run_id)
        except Cancelled:
            pass
        except Exception as error:
            if not began.done():
                began.set_exception(error)
            else:
                log.exception("a run started from the dashboard failed")
        finally:
            if not began.done():
                began.set_exception(RuntimeError("the run ended before it began"))

    async def close(self) -> None:
        """Stop the daemon's own runs (their journals keep what finished) and end every stream."""
        self._closed = True
        for subscriber in tuple(self._subscribers):
            subscriber.drop()
        self._subscribers.clear()
        for task in tuple(self._owned):
            task.cancel()
        await asyncio.gather(*self._owned, return_exceptions=True)

    # ---- streams ----

    def subscribe(self) -> Subscription:
        if self._closed or len(self._subscribers) >= self._max_subscribers:
            raise TooManySubscribers(f"this node already serves {self._max_subscribers} dashboard streams")
        subscription = Subscription()
        self._subscribers.add(subscription)
        return subscription

    def unsubscribe(self, subscription: Subscription) -> None:
        self._subscribers.discard(subscription)

    def _changed(self) -> None:
        for subscriber in tuple(self._subscribers):
            subscriber.runs_changed()


def _retrieved(future: asyncio.Future[str]) -> None:
    if not future.cancelled():
        future.exception()


def _handled(task: asyncio.Task | None) -> None:
    """The cancellation of `task` was ours and is handled: it is not cancelled any more
    (Python 3.11's count, which timeouts and task groups read; 3.10 has none)."""
    uncancel = getattr(task, "uncancel", None)
    if uncancel is not None:
        uncancel()


async def _close(events: AsyncIterator[RunProgress]) -> None:
    closing = getattr(events, "aclose", None)
    if closing is not None:
        with contextlib.suppress(Exception):
            await closing()


__all__ = ["Json", "RunHub", "Subscription", "TooManyRuns", "TooManySubscribers"]
