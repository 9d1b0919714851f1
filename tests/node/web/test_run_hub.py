"""The run hub without a server: runs watched, cancelled, abandoned and owned; the page's feeds
and their caps; what a run keeps in memory. Streams are plain async generators."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from orc.node.protocol.errors import Cancelled
from orc.node.protocol.events import (
    AgentBegan,
    AgentEnded,
    RunBegan,
    RunFinished,
    RunProgress,
    RunResult,
    TokenStreamed,
)
from orc.node.web.run_record import MAX_EVENTS, MAX_TEXT_BYTES, TOKEN_EVENTS_KEPT, LiveRun, as_text, event_json
from orc.node.web.runs import RunHub, Subscription, TooManyRuns, TooManySubscribers
from orc.scheduler.run import AgentRecord, AgentStatus, RunId, Usage


class Clock:
    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        self.now += 1.0
        return self.now


def began(run_id: str = "r1", journal: Path | None = None) -> RunBegan:
    return RunBegan(RunId(run_id), "demo", ("a",), journal, 0.0)


def finished(run_id: str = "r1") -> RunFinished:
    record = AgentRecord(AgentStatus.COMPLETED, 1, "hello", usage=Usage(3, 2))
    return RunFinished(RunResult(RunId(run_id), "demo", "completed", "hello", (("a", record),), 0.0, 1.0))


class Stream:
    """A run's events, then (if `hold`) waiting until cancelled; records that it was closed."""

    def __init__(self, events: list[RunProgress], hold: bool = False) -> None:
        self.events = events
        self.hold = hold
        self.closed = False
        self.gate = asyncio.Event()

    async def __call__(self) -> AsyncIterator[RunProgress]:
        try:
            for event in self.events:
                yield event
            if self.hold:
                await self.gate.wait()
        finally:
            self.closed = True


async def consume(events: AsyncIterator[RunProgress]) -> list[RunProgress]:
    return [event async for event in events]


def test_a_watched_run_passes_every_event_on_and_is_kept_with_the_time_it_was_seen() -> None:
    async def scenario() -> None:
        hub = RunHub(Clock())
        feed = hub.subscribe()
        events = [began(), AgentBegan("a", "n1", "m", 1), TokenStreamed("a", "hel"), TokenStreamed("a", "lo"),
                  AgentEnded("a", AgentRecord(AgentStatus.COMPLETED, 1, "hello", node_id="n1", model="m")), finished()]
        passed = await consume(hub.watched(Stream(events)()))
        assert passed == events
        run = hub.run("r1")
        assert run is not None and not run.active and run.status == "completed"
        assert [e["type"] for e in run.events] == ["run_began", "agent_began", "token", "token", "agent_ended",
                                                   "run_finished"]
        stamps = [e["at"] for e in run.events]
        assert stamps == sorted(stamps) and len(set(stamps)) == len(stamps)  # each stamped by the clock, in order
        assert run.agents["a"].tokens == "hello" and run.agents["a"].output == "hello"
        assert run.deliverable == "hello"
        items, runs_changed = feed.take()
        assert runs_changed  # it began and ended
        assert [json.loads(data)["event"]["type"] for kind, data in items if kind == "run"][0] == "run_began"
        assert all(json.loads(data)["run_id"] == "r1" for _, data in items)

    asyncio.run(scenario())


def test_a_cancelled_run_ends_its_reader_with_cancelled_and_stops_the_run() -> None:
    async def scenario() -> None:
        hub = RunHub(Clock())
        stream = Stream([began(), AgentBegan("a", None, "m", 1)], hold=True)
        seen: list[RunProgress] = []

        async def reader() -> None:
            async for event in hub.watched(stream()):
                seen.append(event)

        task = asyncio.create_task(reader())
        while len(seen) < 2:
            await asyncio.sleep(0.01)
        assert hub.active("r1") and hub.cancel("r1")
        with pytest.raises(Cancelled, match="orc runs resume r1"):
            await task
        assert stream.closed
        run = hub.run("r1")
        assert run is not None and run.status == "interrupted" and not run.active
        assert run.agents["a"].status == "pending"  # a resume runs it again
        assert not hub.cancel("r1")  # nothing to cancel any more

    asyncio.run(scenario())


def test_a_reader_that_goes_away_stops_the_run_it_watched() -> None:
    async def scenario() -> None:
        hub = RunHub(Clock())
        stream = Stream([began(), AgentBegan("a", None, "m", 1)], hold=True)
        events = hub.watched(stream())
        assert isinstance(await events.__anext__(), RunBegan)
        await events.aclose()  # type: ignore[attr-defined]
        await asyncio.sleep(0)
        assert stream.closed and not hub.active("r1")
        assert hub.run("r1").status == "interrupted"  # type: ignore[union-attr]

    asyncio.run(scenario())


def test_a_failing_run_reaches_its_reader_as_its_own_error() -> None:
    async def scenario() -> None:
        async def failing() -> AsyncIterator[RunProgress]:
            yield began()
            raise OSError("disk full")

        hub = RunHub(Clock())
        with pytest.raises(OSError, match="disk full"):
            await consume(hub.watched(failing()))
        assert hub.run("r1").status == "interrupted"  # type: ignore[union-attr]

    asyncio.run(scenario())


def test_the_observer_sees_every_run_inside_the_hub() -> None:
    async def scenario() -> None:
        observed: list[RunProgress] = []

        async def observe(events: AsyncIterator[RunProgress]) -> AsyncIterator[RunProgress]:
            async for event in events:
                observed.append(event)
                yield event

        hub = RunHub(Clock(), observe=observe)
        await consume(hub.watched(Stream([began(), finished()])()))
        assert [type(e) for e in observed] == [RunBegan, RunFinished]

    asyncio.run(scenario())


def test_a_stalled_feed_is_dropped_and_never_slows_a_run() -> None:
    async def scenario() -> None:
        hub = RunHub(Clock())
        stalled = hub.subscribe()
        tokens = [TokenStreamed("a", "x")] * 1500  # more than a feed holds
        passed = await asyncio.wait_for(consume(hub.watched(Stream([began(), *tokens, finished()])())), 10)
        assert len(passed) == 1502
        assert stalled.dropped and stalled.take() == ([], False)

    asyncio.run(scenario())


def test_a_feed_delivers_in_order_and_wakes_its_reader() -> None:
    async def scenario() -> None:
        feed = Subscription(limit=3)
        waiter = asyncio.create_task(feed.wait(5))
        await asyncio.sleep(0)
        feed.offer("run", "1")
        await asyncio.wait_for(waiter, 1)
        feed.offer("run", "2")
        assert feed.take() == ([("run", "1"), ("run", "2")], False)
        for i in range(4):
            feed.offer("run", str(i))
        assert feed.dropped

    asyncio.run(scenario())


def test_feeds_and_runs_of_its_own_have_caps() -> None:
    async def scenario() -> None:
        hub = RunHub(Clock(), max_subscribers=2, max_owned=1)
        first, _ = hub.subscribe(), hub.subscribe()
        with pytest.raises(TooManySubscribers):
            hub.subscribe()
        hub.unsubscribe(first)
        hub.subscribe()  # a place came free

        stream = Stream([began("own")], hold=True)

        async def begin() -> AsyncIterator[RunProgress]:
            return stream()

        assert await hub.launch(begin) == "own"
        with pytest.raises(TooManyRuns):
            await hub.launch(begin)
        await hub.close()  # the daemon stops: its own runs with it
        assert stream.closed and hub.run("own").status == "interrupted"  # type: ignore[union-attr]

    asyncio.run(scenario())


def test_a_run_that_cannot_begin_reports_why_and_takes_no_place() -> None:
    async def scenario() -> None:
        hub = RunHub(Clock(), max_owned=1)

        async def refused() -> AsyncIterator[RunProgress]:
            raise ValueError("no such ensemble")

        with pytest.raises(ValueError):
            await hub.launch(refused)

        async def broken() -> AsyncIterator[RunProgress]:
            async def events() -> AsyncIterator[RunProgress]:
                raise OSError("cannot write the journal")
                yield  # an async generator

            return events()

        with pytest.raises(OSError):
            await hub.launch(broken)
        await asyncio.sleep(0)

        async def fine() -> AsyncIterator[RunProgress]:
            return Stream([began("ok"), finished("ok")])()

        assert await hub.launch(fine) == "ok"

    asyncio.run(scenario())


def test_only_the_last_finished_runs_stay_in_memory() -> None:
    async def scenario() -> None:
        hub = RunHub(Clock(), keep_finished=2)
        for run_id in ("r1", "r2", "r3"):
            await consume(hub.watched(Stream([began(run_id), finished(run_id)])()))
        assert hub.run("r1") is None
        assert [run.run_id for run in hub.runs()] == ["r3", "r2"]

    asyncio.run(scenario())


def test_a_watched_run_holds_its_journal_while_it_runs(tmp_path: Path) -> None:
    from orc.node.coordinator.journal_lock import journal_in_use

    async def scenario() -> None:
        journal = tmp_path / "r1.journal"
        journal.write_bytes(b"")
        hub = RunHub(Clock())
        events = hub.watched(Stream([began(journal=journal)], hold=True)())
        await events.__anext__()
        assert journal_in_use(journal)
        await events.aclose()  # type: ignore[attr-defined]
        assert not journal_in_use(journal)

    asyncio.run(scenario())


def test_a_run_in_memory_is_capped() -> None:
    run = LiveRun.began(began(), 1.0)
    text = "é" * (MAX_TEXT_BYTES // 2 + 100)  # two bytes each: past the cap
    for i in range(MAX_EVENTS + 10):
        event = TokenStreamed("a", text if i == 0 else "x")
        run.observe(event, event_json(event, float(i)))  # type: ignore[arg-type]
    assert len(run.agents["a"].tokens.encode()) <= MAX_TEXT_BYTES
    assert sum(e["type"] == "token" for e in run.events) == TOKEN_EVENTS_KEPT
    done = AgentEnded("a", AgentRecord(AgentStatus.COMPLETED, 1, "x" * (2 * MAX_TEXT_BYTES)))
    run.observe(done, event_json(done, 9.0))  # type: ignore[arg-type]
    assert run.events[-1]["type"] == "agent_ended"  # the agents' own events still fit
    assert len(run.agents["a"].output.encode()) == MAX_TEXT_BYTES  # type: ignore[union-attr]


def test_outputs_read_as_text() -> None:
    assert as_text(None) is None
    assert as_text("plain") == "plain"
    assert as_text({"a": "one", "b": "two"}) == "## a\none\n\n## b\ntwo"
    assert json.loads(as_text({"kind": "code", "n": 2})) == {"kind": "code", "n": 2}  # type: ignore[arg-type]
