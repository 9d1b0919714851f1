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
from orc.node.coordinator.budget import RUN, Meter
from orc.node.protocol.events import (
    AgentBegan,
    AgentEnded,
    AgentRetrying,
    BudgetReport,
    RunFinished,
    RunProgress,
    RunResult,
)
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
    RunEvent,
    RunState,
    SkipAgent,
    StartAgent,
    Usage,
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
    meter: Meter  # the top-level run's budgets and spending, shared by its nested runs
    owners: tuple[str, ...] = ()  # shown names of the agents this (nested) run runs inside, outermost first

    def scopes(self, agent: str) -> tuple[str, ...]:
        """The budget scopes over `agent`'s work: the run, the agents enclosing it, the agent."""
        return (RUN, *self.owners, self.prefix + agent)


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
    cancels them all. When the run's budget runs out (watched by the top-level run; nested runs
    end with it), running agents are cancelled and every agent not ended fails naming it.
    """
    running: dict[str, asyncio.Task[None]] = {}
    meter = context.meter
    stopped: str | None = None  # the run's budget ran out: the message naming it
    # Only the top-level run watches the run's budget: cancelling its agents ends nested runs too.
    watch = asyncio.create_task(meter.ran_out(RUN), name="budget") if context.depth == 0 else None

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
                        # Refused alone: the run stops (`stopped`) only when `ran_out` says so, once the
                        # generations running under a spent budget have ended.
                        refused = stopped or meter.exhausted(context.scopes(agent.name))
                        if refused is not None:  # nothing new starts once a budget over it ran out
                            for event in _budget_failure(state.agents[agent.name].status, agent.name, refused,
                                                         here):
                                state = apply(state, event)
                                await record(event)
                            yield AgentEnded(context.prefix + agent.name, state.agents[agent.name])
                        else:
                            earlier = sum((p.usage for p in agent_input.parts.values()), Usage())
                            meter.open(context.prefix + agent.name, agent.spec.budget, earlier)
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
            if stopped is not None and running:
                # The run's budget ran out: its running work is cancelled (an attempt posts nothing then).
                for task in running.values():
                    task.cancel()
                await asyncio.gather(*running.values(), return_exceptions=True)
                running.clear()
                continue
            if stopped is not None and queue.empty():
                # What finished before the stop is recorded; every other agent fails naming the budget.
                for name, current in state.agents.items():
                    if not current.status.terminal:
                        for event in _budget_failure(current.status, name, stopped, here):
                            state = apply(state, event)
                            await record(event)
                        yield AgentEnded(context.prefix + name, state.agents[name])
                continue
            if not running and queue.empty():
                # Cannot happen with a validated DAG; guards against a planner bug hanging the run.
                raise RuntimeError("run stalled: nothing running and nothing ready")
            if stopped is not None:
                item = queue.get_nowait()
            elif watch is None:
                item = await queue.get()
            else:
                item = await _next(queue, watch)
                if item is _RAN_OUT:
                    stopped = watch.result()
                    continue
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
        if watch is not None:
            watch.cancel()
        for task in running.values():
            task.cancel()
        if running:
            await asyncio.gather(*running.values(), return_exceptions=True)
    finished = here.clock()
    top = context.depth == 0  # a nested run's spending is its enclosing agent's usage
    spent = meter.exhausted() if top else None
    if stopped is None and spent is not None and any(r.error == spent for r in state.agents.values()):
        stopped = spent  # agents refused their generations before the stop was seen: the budget still stopped the run
    status = run_status(state, stopped)  # a nested run's spending is its enclosing agent's usage
    result = RunResult(state.run_id, state.spec.name, status, deliverable(state), tuple(state.agents.items()),
                       state.started_at, finished, usage=meter.total if top else None,
                       budget=meter.report() if top else None,
                       agent_budgets=_agent_budgets(state, context), reason=stopped)
    await record(RunEnded(status, finished, stopped, meter.total if top else None))
    yield RunFinished(result)


_RAN_OUT = object()  # `_next`'s answer when the run's budget ran out before anything was posted


async def _next(queue: "asyncio.Queue[object]", watch: "asyncio.Task[str]") -> object:
    """The next item posted to `queue`, or _RAN_OUT once `watch` (the run's budget) ends first."""
    getter = asyncio.ensure_future(queue.get())
    try:
        await asyncio.wait({getter, watch}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        if not getter.done():
            getter.cancel()
    if getter.done() and not getter.cancelled():
        return getter.result()  # an item that arrived with the stop is still processed
    return _RAN_OUT


def _budget_failure(status: AgentStatus, name: str, message: str, here: Coordinator) -> tuple[RunEvent, ...]:
    """The events failing agent `name` because a budget ran out; one that never started is
    started and failed at once, like an agent with an unusable input."""
    at = here.clock()
    failed = AgentFailed(name, message, at, permanent=True)
    if status is AgentStatus.RUNNING:
        return (failed,)
    return (AgentStarted(name, at, here.node_id, None), failed)


def _agent_budgets(state: RunState, context: RunContext) -> tuple[tuple[str, BudgetReport], ...]:
    """The budgets of the agents that have one, started or not."""
    reports = []
    for spec in state.spec.agents:
        if spec.budget is not None:
            report = context.meter.report(context.prefix + spec.name)
            reports.append((spec.name, report or BudgetReport(spec.budget.max_tokens, spec.budget.max_seconds,
                                                              0, 0.0, None)))
    return tuple(reports)
