"""What one API request produces, whatever it runs: pieces of text per sample, where each sample
runs, its end. Model requests (`n` generations on the mesh) and ensemble requests (one run, its
deliverable) are both turned into these, so the response code serves both alike.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass

from orc.node.coordinator.generations import Bound, MeshEvent, Working
from orc.node.coordinator.prompts import render_value
from orc.node.models.runtimes.base import GenerationDone, TokenChunk, Usage
from orc.node.protocol.events import (
    AgentBegan,
    AgentEnded,
    AgentPlacedOn,
    AgentRetrying,
    AgentWorking,
    RunBegan,
    RunFinished,
    RunPlanned,
    RunProgress,
    TokenStreamed,
)
from typing_extensions import assert_never


@dataclass(frozen=True)
class RunStarted:
    """An ensemble request's run began (its id goes back to the client)."""

    run_id: str


@dataclass(frozen=True)
class Placed:
    """Sample `index` runs on `node`; `replaces` says why an earlier node was left (a failover)."""

    index: int
    node: str
    replaces: str | None = None


@dataclass(frozen=True)
class Piece:
    index: int
    text: str


@dataclass(frozen=True)
class Ended:
    """Sample `index` is done: its whole text, why it stopped, what it cost."""

    index: int
    text: str
    finish_reason: str
    usage: Usage
    status: str | None = None  # an ensemble's run status (completed, completed_with_errors)


class RunFailed(Exception):
    """The ensemble's run failed: no agent of its deliverable completed."""

    def __init__(self, run_id: str, message: str) -> None:
        super().__init__(message)
        self.run_id = run_id


Answer = RunStarted | Placed | Piece | Ended


async def samples(streams: Sequence[AsyncIterator[MeshEvent]]) -> AsyncIterator[Answer]:
    """The generations of a model request, merged: each stream is sample i. The first failure ends
    them all (and is raised); closing this iterator cancels every generation on its node."""
    if len(streams) == 1:
        async for answer in _sample(0, streams[0]):
            yield answer
        return
    queue: asyncio.Queue[tuple[Answer | None, BaseException | None]] = asyncio.Queue()

    async def pump(index: int, stream: AsyncIterator[MeshEvent]) -> None:
        try:
            async for answer in _sample(index, stream):
                queue.put_nowait((answer, None))
            queue.put_nowait((None, None))
        except asyncio.CancelledError:
            raise
        except BaseException as error:  # noqa: BLE001 - handed to the consumer, raised there
            queue.put_nowait((None, error))

    tasks = [asyncio.create_task(pump(i, s)) for i, s in enumerate(streams)]
    try:
        running = len(tasks)
        while running:
            answer, error = await queue.get()
            if error is not None:
                raise error
            if answer is None:
                running -= 1
            else:
                yield answer
    finally:
        for task in tasks:
            task.cancel()
        with contextlib.suppress(BaseException):
            await asyncio.gather(*tasks, return_exceptions=True)


async def _sample(index: int, stream: AsyncIterator[MeshEvent]) -> AsyncIterator[Answer]:
    placed = False
    try:
        async for event in stream:
            match event:
                case Bound(node_name=name, replaces=replaces):
                    placed = True
                    yield Placed(index, name, replaces)
                case Working(node_id=node_id):
                    if not placed:  # a placer that only says where it starts (this machine alone)
                        placed = True
                        yield Placed(index, node_id)
                case TokenChunk(text=text):
                    if text:
                        yield Piece(index, text)
                case GenerationDone(text=text, usage=usage, finish_reason=reason):
                    yield Ended(index, text, reason if reason in ("stop", "length") else "stop", usage)
                case other:
                    assert_never(other)
    finally:
        await stream.aclose()  # type: ignore[attr-defined]


async def deliverable(events: AsyncIterator[RunProgress], sinks: Sequence[str]) -> AsyncIterator[Answer]:
    """An ensemble run as one sample: the tokens of its deliverable agent as they come (when the
    deliverable is one agent's answer, `sinks` being the agents nothing depends on), its
    deliverable as text at the end. Raises RunFailed."""
    sink = sinks[0] if len(sinks) == 1 else None
    try:
        async for event in events:
            match event:
                case RunBegan(run_id=run_id):
                    yield RunStarted(run_id)
                case RunPlanned() | AgentBegan() | AgentWorking() | AgentRetrying() | AgentEnded():
                    pass
                case AgentPlacedOn(agent=agent, node_name=name, replaces=replaces):
                    if agent == sink:
                        yield Placed(0, name, replaces)
                case TokenStreamed(agent=agent, text=text):
                    if agent == sink and text:
                        yield Piece(0, text)
                case RunFinished(result=result):
                    if result.status == "failed":
                        failed = [n for n, r in result.results if r.error]
                        raise RunFailed(result.run_id, f"the run {result.run_id} of ensemble '{result.ensemble}' "
                                                       f"failed (agents: {', '.join(failed) or 'none'}); "
                                                       f"see `orc runs show {result.run_id}`")
                    usage = Usage()
                    for _, record in result.results:
                        usage = usage + record.usage
                    yield Ended(0, render_value(result.deliverable), "stop", usage, result.status)
                case other:
                    assert_never(other)
    finally:
        await events.aclose()  # type: ignore[attr-defined]
