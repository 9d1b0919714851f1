"""The run loop: performs what the pure state machine (`orc.scheduler.run`) decides, for a
top-level run and for each nested one alike.

Each turn asks `plan(state)` what may happen now, records and applies it, starts the agents
that became ready together (so placement sees them as one batch), then waits for the next
thing an agent task posts: a binding to a node, an outcome, or progress to pass on. Every
event is in the journal (fsynced, off the loop) before anything that depends on it starts.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

from orc.node.coordinator.binding import BoundAgent, BoundRun
from orc.node.protocol.events import AgentBegan, AgentEnded, AgentRetrying, RunFinished, RunProgress, RunResult
from orc.scheduler.journal import JournalWriter, RunEnded
from orc.scheduler.run import (
    AgentBound,
    AgentFailed,
    AgentInput,
    AgentSkipped,
    AgentStarted,
    AgentStatus,
    AgentSucceeded,
    FailAgent,
    PartDone,
    RunId,
    RunState,
    SkipAgent,
    StartAgent,
    apply,
    deliverable,
    is_finished,
    plan,
    run_status,
)


@dataclass(frozen=True)
class RunContext:
    """What the agents of one (possibly nested) run share."""

    run_id: RunId
    prefix: str  # how this run's agents are shown: "" at the top, "parent/" or "loop#2/" nested
    depth: int  # 0 at the top; each nested run one more
    epoch: float  # when the run, or this resume of it, began: attempts of a resume get new execution ids
    post: Callable[[object], None]  # to this run's loop: AgentBound, the outcome, or progress to pass on


# Performs one attempt of one agent; posts AgentBound (when placed) and exactly one
# AgentSucceeded or AgentFailed to `context.post`, and never raises (a task boundary).
Attempt = Callable[[BoundRun, BoundAgent, AgentInput, RunContext], Awaitable[None]]


@dataclass(frozen=True)
class Coordinator:
    """The node that coordinates runs, as the run loop shows it."""

    node_id: str
    places_later: bool  # with a mesh: an LLM agent's node is known only once one accepts it (AgentBound)
    clock: Callable[[], float]


async def drive(state: RunState, bound: BoundRun, context: RunContext, queue: "asyncio.Queue[object]",
                writer: JournalWriter | None, attempt: Attempt, here: Coordinator) -> AsyncIterator[RunProgress]:
    """Run `state` to its end, yielding progress; the last event is RunFinished.

    Agent tasks post to `queue` (through `context.post`); cancelling or closing this iterator
    cancels them all.
    """
    running: dict[str, asyncio.Task[None]] = {}

    async def record(event: object) -> None:
        # Awaited before anything that depends on the event, so a result is on disk
        # (fsynced, off the loop) before a dependent starts.
        if writer is not None:
            await asyncio.to_thread(writer.append, event)  # type: ignore[arg-type]

    try:
        while True:
            steps = plan(state)
            starting: list[tuple[BoundAgent, AgentInput]] = []
            while steps:
                step, steps = steps[0], steps[1:]
                match step:
                    case StartAgent(input=agent_input):
                        agent = bound.agent(agent_input.agent)
                        model = agent.model.ref if agent.model else None
                        where = None if here.places_later and model is not None else here.node_id
                        started = AgentStarted(agent.name, here.clock(), where, model)
                        state = apply(state, started)
                        await record(started)
                        starting.append((agent, agent_input))
                        width = len(agent_input.items) if agent_input.items is not None else None
                        yield AgentBegan(context.prefix + agent.name, where, model, agent_input.attempt, width)
                    case SkipAgent(agent=name, reason=reason):
                        skipped = AgentSkipped(name, reason, here.clock())
                        state = apply(state, skipped)
                        await record(skipped)
                        yield AgentEnded(context.prefix + name, state.agents[name])
                    case FailAgent(agent=name, error=error):
                        at = here.clock()
                        for event in (AgentStarted(name, at, here.node_id, None),
                                      AgentFailed(name, error, at, permanent=True)):
                            state = apply(state, event)
                            await record(event)
                        yield AgentEnded(context.prefix + name, state.agents[name])
                if not steps:
                    steps = plan(state)  # a skip or failure can make more agents ready
            # Started together, after every journal write: agents that became ready at the
            # same moment reach placement in the same turn of the loop and are placed as one.
            for agent, agent_input in starting:
                running[agent.name] = asyncio.create_task(attempt(bound, agent, agent_input, context),
                                                          name=f"agent:{context.prefix}{agent.name}")
            if is_finished(state):
                break
            if not running:
                # Cannot happen with a validated DAG; guards against a planner bug hanging the run.
                raise RuntimeError("run stalled: nothing running and nothing ready")
            item = await queue.get()
            match item:
                case AgentBound(agent=name) | PartDone(agent=name):
                    # Only this run's own agents post bindings and parts; a late one (the agent
                    # already ended) changes nothing.
                    if name in state.agents and state.agents[name].status is AgentStatus.RUNNING:
                        state = apply(state, item)
                        await record(item)
                case AgentSucceeded(agent=name) | AgentFailed(agent=name):
                    running.pop(name, None)
                    state = apply(state, item)
                    await record(item)
                    current = state.agents[name]
                    if current.status is AgentStatus.PENDING:
                        assert isinstance(item, AgentFailed)
                        yield AgentRetrying(context.prefix + name, item.error, current.attempts)
                    else:
                        yield AgentEnded(context.prefix + name, current)
                case _:
                    yield item  # type: ignore[misc]  # tokens, placements and nested runs' progress
    finally:
        for task in running.values():
            task.cancel()
        if running:
            await asyncio.gather(*running.values(), return_exceptions=True)
    finished = here.clock()
    status = run_status(state)
    result = RunResult(state.run_id, state.spec.name, status, deliverable(state),
                       tuple(state.agents.items()), state.started_at, finished)
    await record(RunEnded(status, finished))
    yield RunFinished(result)
