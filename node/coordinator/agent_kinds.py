"""One attempt of one agent, of every kind: an LLM generation placed by the placer (or a vote
of several, `voting`), a cascade of them (`cascade`), a script, a nested ensemble, a loop, a
dispatch, each of them fanned out over a list. Every generation of a run is started by one
method, `AgentKinds._generate`.

An attempt ends by posting exactly one `AgentSucceeded` or `AgentFailed` to its run loop, and
never raises: one agent's failure, even a bug, is that agent's failure, not the run's.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Mapping
from dataclasses import replace
from pathlib import Path
from types import MappingProxyType

from orc.node.coordinator import budget
from orc.node.coordinator.agent_errors import AgentError, ScriptRunner
from orc.node.coordinator.binding import Binder, BoundAgent, BoundLevel, BoundRun, RunRefused
from orc.node.coordinator.budget import BudgetSpent
from orc.node.coordinator.cascade import Cascades
from orc.node.coordinator.limits import Limits
from orc.node.coordinator.generations import Bound, Generation, NoNode, NoRoom, TimedOut, Working
from orc.node.coordinator.placing import Placer
from orc.node.coordinator.prompts import AnswerNotJson, answer_output, build_messages, generation_params
from orc.node.coordinator.run_loop import Coordinator, RunContext, drive
from orc.node.coordinator.voting import Ask, Generated, Parts, Voting
from orc.node.models.runtimes.base import GenerationDone, GenerationError, RuntimeFailure, TokenChunk
from orc.node.protocol.events import AgentPlacedOn, AgentWorking, RunFinished, RunResult, TokenStreamed
from orc.scheduler.ensemble import CascadeTask, DispatchTask, EnsembleTask, LlmTask, LoopTask, ScriptTask
from orc.scheduler.errors import EnsembleInvalid, EnsembleNotFound
from orc.scheduler.run import (
    AgentBound,
    AgentFailed,
    AgentInput,
    AgentStatus,
    AgentSucceeded,
    Usage,
    initial_state,
    max_attempts,
)
from orc.scheduler.values import holds, resolve, structured, thaw

log = logging.getLogger(__name__)

# Nested runs deeper than this fail the agent that starts them: the loader caps static nesting,
# and this caps what dispatch can add at run time (an ensemble dispatching to itself).
MAX_RUN_DEPTH = 8
# Fan-out instance failures quoted in the agent's error; the rest are counted.
FAILURES_QUOTED = 5

# What an attempt's work gives: the output, the usage of every generation, the result's detail.
Done = tuple[object, Usage, Mapping[str, object]]
_NO_DETAIL: Mapping[str, object] = MappingProxyType({})


class AgentKinds:
    """Performs agent attempts for the runs of one engine."""

    def __init__(self, *, placer: Placer, binder: Binder, here: Coordinator, local: bool, seed: int | None,
                 workdir: Path, scripts: ScriptRunner, shipped: ScriptRunner | None = None) -> None:
        self._placer = placer
        self._binder = binder
        self._here = here
        self._local = local
        self._seed = seed
        self._workdir = workdir
        self._scripts = scripts
        self._shipped = shipped  # for the scripts of ensembles with `ship_scripts: true`
        parts = Parts(self._generate, here)
        self._voting = Voting(parts, scripts, workdir, seed)
        self._cascades = Cascades(parts, self._voting, here, seed)

    async def attempt(self, run: BoundRun, agent: BoundAgent, agent_input: AgentInput, context: RunContext) -> None:
        """Run one attempt of `agent` and post its outcome (the run loop's `Attempt`).

        An LLM agent's timeout counts from when its generation starts (its wait for a model is
        bounded apart, by `queue_timeout_seconds`); any other agent's from the attempt's start.
        The timeout bounds each fan-out instance, not the whole fan-out: N instances share one
        model and would otherwise time out for being many.
        """
        name = context.prefix + agent.name
        clock = self._here.clock
        try:
            self._recall_nodes(agent, agent_input, context)
            if agent_input.items is not None:
                work = self._fan_out(run, agent, agent_input, context, name)
            else:
                work = self._bounded_perform(run, agent, agent_input, agent_input.input, context, name)
            if agent.spec.budget is not None:
                output, usage, detail = await _within_budget(work, context, name)
            else:
                output, usage, detail = await work
            event: AgentSucceeded | AgentFailed = AgentSucceeded(agent.name, output, clock(), usage, detail)
        except asyncio.CancelledError:
            raise
        except AgentError as error:
            event = AgentFailed(agent.name, str(error), clock(), retryable=error.retryable, permanent=error.permanent)
        except RuntimeFailure as error:
            event = AgentFailed(agent.name, str(error), clock(), retryable=isinstance(error, GenerationError))
        except Exception as error:  # noqa: BLE001 - task boundary: one agent's bug must not kill the run
            log.exception("agent %s crashed", name)
            event = AgentFailed(agent.name, f"internal error: {type(error).__name__}: {error}", clock())
        context.post(event)

    def _recall_nodes(self, agent: BoundAgent, agent_input: AgentInput, context: RunContext) -> None:
        """With a mesh, the nodes of the parts an earlier attempt (or run) finished are this
        agent's nodes too: their generations are not rerun, so nothing else would say so."""
        if not self._here.places_later:
            return
        for node_id in dict.fromkeys(p.node_id for p in agent_input.parts.values() if p.node_id):
            context.post(AgentBound(agent.name, node_id, self._here.clock()))

    async def _bounded_perform(self, run: BoundRun, agent: BoundAgent, agent_input: AgentInput, value: object,
                               context: RunContext, name: str) -> Done:
        work = self._perform(run, agent, agent_input, value, context, name)
        if isinstance(agent.spec.task, (LlmTask, CascadeTask)):
            return await work  # the timeout of each generation counts from its start, inside
        try:
            return await asyncio.wait_for(work, agent.limits.timeout_s)
        except asyncio.TimeoutError:
            raise AgentError(agent.limits.timed_out(generating=False)) from None

    async def _fan_out(self, run: BoundRun, agent: BoundAgent, agent_input: AgentInput, context: RunContext,
                       name: str) -> Done:
        assert agent_input.items is not None
        instances = [self._bounded_perform(run, agent, agent_input, item, context, f"{name}[{index}]")
                     for index, item in enumerate(agent_input.items)]
        results = await asyncio.gather(*instances, return_exceptions=True)
        failures = [(i, r) for i, r in enumerate(results) if isinstance(r, BaseException)]
        for _, failure in failures:
            if isinstance(failure, asyncio.CancelledError):
                raise failure
        if failures:
            detail = "; ".join(f"[{i}] {error}" for i, error in failures[:FAILURES_QUOTED])
            raise AgentError(f"{len(failures)} of {len(results)} fan-out instances failed: {detail}")
        usage = Usage()
        for _, instance_usage, _ in results:  # type: ignore[misc]
            usage = usage + instance_usage
        details = [dict(detail) for _, _, detail in results]  # type: ignore[misc]
        return (tuple(output for output, _, _ in results), usage,  # type: ignore[misc]
                {"instances": details} if any(details) else _NO_DETAIL)

    async def _perform(self, run: BoundRun, agent: BoundAgent, agent_input: AgentInput, value: object,
                       context: RunContext, name: str) -> Done:
        """Execute the agent's task on `value`; returns (output, usage, detail)."""
        # A fan-out instance's parts are its own: "[2].s0" is sample 0 of instance 2.
        instance = name[len(context.prefix + agent.name):]
        key = f"{instance}." if instance else ""
        match agent.spec.task:
            case LlmTask() as task if agent.vote is not None:
                assert agent.model is not None, "bound with its model"
                level = BoundLevel(task, agent.model, agent.limits, agent.vote)
                decided = await self._voting.decide(agent, level, agent_input, value, context, name, key, f"{name}/")
                self._credit(agent, decided.node_id, context)
                return decided.output, decided.usage, {"vote": decided.vote or {}}
            case LlmTask():
                return (*await self._llm(agent, agent_input, value, context, name), _NO_DETAIL)
            case CascadeTask():
                decided, detail = await self._cascades.run(agent, agent_input, value, context, name, key)
                self._credit(agent, decided.node_id, context)
                return decided.output, decided.usage, detail
            case ScriptTask(parameters=parameters):
                assert agent.script is not None, "bound with its script"
                payload = {
                    "agent_name": agent.name,
                    "input_data": thaw(value),
                    "dependencies": {dep: {"status": r.status, "output": thaw(r.output), "error": r.error}
                                     for dep, r in agent_input.dependencies},
                    "parameters": thaw(parameters),
                    "context": {"run_id": context.run_id, "ensemble": run.spec.name},
                }
                runner = self._shipped if run.spec.ship_scripts and self._shipped is not None else self._scripts
                result = await runner(agent.script, payload, timeout=None, cwd=self._workdir)
                output = result.output
                if isinstance(output, Mapping) and output.get("success") is False:
                    raise AgentError(f"script reported failure: {output.get('error') or 'no reason given'}")
                return output, Usage(), _NO_DETAIL
            case EnsembleTask(ensemble=reference):
                if agent.child is None:
                    raise AgentError(f"nested ensemble '{reference}' not found")
                return (*await self._nested(agent.child, value, context, name, context.prefix + agent.name), _NO_DETAIL)
            case DispatchTask(target=target):
                dep_outputs = {d: r.output for d, r in agent_input.dependencies if r.status == "completed"}
                chosen = resolve(target, dep_outputs)
                if not isinstance(chosen, str) or not chosen.strip():
                    raise AgentError(f"dispatch target {target} is {chosen!r}, not an ensemble name")
                child = await asyncio.to_thread(self._dispatched, chosen.strip(), run)
                return (*await self._nested(child, value, context, name, context.prefix + agent.name), _NO_DETAIL)
            case LoopTask() as loop:
                if agent.child is None:
                    raise AgentError(f"loop body '{loop.body}' not found")
                return (*await self._loop(loop, agent.child, value, context, name, context.prefix + agent.name),
                        _NO_DETAIL)
        raise AssertionError(f"unhandled task {agent.spec.task!r}")

    def _credit(self, agent: BoundAgent, node_id: str | None, context: RunContext) -> None:
        """With a mesh, the node whose sample or level gave the output becomes the agent's node."""
        if self._here.places_later and node_id is not None:
            context.post(AgentBound(agent.name, node_id, self._here.clock()))

    async def _llm(self, agent: BoundAgent, agent_input: AgentInput, value: object, context: RunContext,
                   name: str) -> tuple[object, Usage]:
        """A plain LLM agent: one generation, its answer as the output."""
        assert agent.model is not None, "bound with its model"
        resolved = agent.model.resolved
        ask = Ask(name, agent.model, tuple(build_messages(resolved.system_prompt, agent_input, value)),
                  generation_params(resolved, agent.spec, self._seed), agent.limits)
        generated = await self._generate(agent, ask, context)
        try:
            return answer_output(agent.spec, generated.text), generated.usage
        except AnswerNotJson as error:
            raise AgentError(str(error)) from None

    async def _generate(self, agent: BoundAgent, ask: Ask, context: RunContext) -> Generated:
        """Every generation of a run starts here (an agent's, a sample's, a level's, a judge's):
        its max_tokens clamped to what the budgets over it leave (it does not start when nothing
        is), the placer places and performs it, and this relays where and when it runs and what
        it writes; its timeout counts from when its node starts it (`Working`)."""
        limits, clock = ask.limits, self._here.clock
        try:
            lease = await context.meter.lease(context.scopes(agent.name), ask.params.max_tokens)
        except BudgetSpent as error:
            raise AgentError(str(error), permanent=True) from None
        generation = Generation(
            run_id=context.run_id, agent=ask.shown, model=ask.model.ref, sha256=ask.model.sha256,
            messages=ask.messages, params=replace(ask.params, max_tokens=lease.max_tokens),
            placement=agent.spec.placement,
            rank=agent.rank, attempts=max_attempts(agent.spec, retryable=True),
            deadline_s=limits.timeout_s, wait_s=limits.wait_s, local=self._local, epoch=context.epoch)
        text = ""
        usage = Usage()
        where: str | None = None
        try:
            async for event in _bounded(self._placer.generate(generation), limits):
                match event:
                    case Bound(node_id=node_id, node_name=node_name, replaces=replaces):
                        where = node_id
                        context.post(AgentBound(agent.name, node_id, clock(), failover=replaces is not None))
                        context.post(AgentPlacedOn(ask.shown, node_id, node_name, replaces))
                    case Working(node_id=node_id, waited_s=waited):
                        where = node_id
                        context.post(AgentWorking(ask.shown, node_id, waited))
                    case TokenChunk(text=chunk):
                        lease.streamed()
                        context.post(TokenStreamed(ask.shown, chunk))
                    case GenerationDone(text=final, usage=done_usage):
                        text, usage = final, done_usage
                        lease.done(usage)
        except NoRoom as error:
            raise AgentError(limits.waited("; ".join(f"{node}: {why}" for node, why in error.answers))) from None
        except TimedOut:
            raise AgentError(limits.timed_out(generating=True)) from None
        except NoNode as error:
            raise AgentError(str(error)) from None
        finally:
            lease.close()
        return Generated(text, usage, where)

    async def _child_run(self, child: BoundRun, value: object, context: RunContext, prefix: str,
                         owner: str) -> RunResult:
        """Run a nested ensemble to completion for agent `owner` (its shown name); its progress
        is passed on under `prefix`, its spending counts toward `owner`'s budget and the run's.

        Nested runs are not journaled on their own: the enclosing agent's result is.
        """
        if context.depth >= MAX_RUN_DEPTH:
            raise AgentError("ensembles nested too deeply at run time")
        state = initial_state(context.run_id, child.spec, thaw(value), self._here.clock())
        queue: asyncio.Queue[object] = asyncio.Queue()
        inner = RunContext(context.run_id, prefix, context.depth + 1, context.epoch, queue.put_nowait, context.meter,
                           (*context.owners, owner))
        result: RunResult | None = None
        async for event in drive(state, child, inner, queue, None, self.attempt, self._here):
            match event:
                case RunFinished(result=finished):
                    result = finished
                case _:
                    context.post(event)
        assert result is not None
        return result

    async def _nested(self, child: BoundRun, value: object, context: RunContext, name: str,
                      owner: str) -> tuple[object, Usage]:
        """A nested ensemble's deliverable is the agent's output."""
        result = await self._child_run(child, value, context, f"{name}/", owner)
        if result.status == "failed":
            _raise_budget(result)
            failed = [n for n, r in result.results if r.status is AgentStatus.FAILED]
            raise AgentError(f"nested ensemble '{child.spec.name}' failed (agents: {', '.join(failed)})")
        return result.deliverable, _total_usage(result)

    async def _loop(self, loop: LoopTask, body: BoundRun, value: object, context: RunContext,
                    name: str, owner: str) -> tuple[object, Usage]:
        """Run `body` until `until` holds over its results, carrying `carry` into the next input."""
        current = value
        total = Usage()
        last: object = None
        for iteration in range(1, loop.max_iterations + 1):
            result = await self._child_run(body, current, context, f"{name}#{iteration}/", owner)
            total = total + _total_usage(result)
            if result.status == "failed":
                _raise_budget(result)
                raise AgentError(f"loop body '{body.spec.name}' failed in iteration {iteration}")
            last = result.deliverable
            scope = _loop_scope(result)
            if loop.until is not None and holds(loop.until, scope):
                return {"iterations": iteration, "converged": True, "output": thaw(last)}, total
            if loop.carry is not None:
                current = resolve(loop.carry, scope)
        return {"iterations": loop.max_iterations, "converged": loop.until is None, "output": thaw(last)}, total

    def _dispatched(self, reference: str, parent: BoundRun) -> BoundRun:
        try:
            return self._binder.bind_dispatched(reference, parent)
        except (EnsembleNotFound, EnsembleInvalid) as error:
            raise AgentError(f"dispatch to '{reference}': {error}") from None
        except RunRefused as error:
            raise AgentError(f"dispatch to '{reference}': {'; '.join(str(p) for p in error.problems)}") from None


async def _bounded(events: AsyncIterator[object], limits: Limits) -> AsyncIterator[object]:
    """`events`, ended with AgentError once `limits.timeout_s` passed since the generation
    started (its `Working` event)."""
    loop = asyncio.get_running_loop()
    ends: float | None = None
    try:
        while True:
            remaining = None if ends is None else ends - loop.time()
            try:
                if remaining is not None and remaining <= 0:
                    raise asyncio.TimeoutError
                event = await asyncio.wait_for(events.__anext__(), remaining)
            except StopAsyncIteration:
                return
            except asyncio.TimeoutError:
                raise AgentError(limits.timed_out(generating=True)) from None
            if isinstance(event, Working) and ends is None and limits.timeout_s is not None:
                ends = loop.time() + limits.timeout_s
            yield event
    finally:
        close = getattr(events, "aclose", None)
        if close is not None:
            await close()


async def _within_budget(work: Awaitable[Done], context: RunContext, name: str) -> Done:
    """`work` of agent `name` (one with a budget of its own), cancelled with AgentError naming
    the budget if it runs out first (its time up, or its tokens spent with no generation of it
    still running).

    The work runs in this task, not another: an agent that finished posts its result with no
    pause in which a stop could cut it off.
    """
    current = asyncio.current_task()
    assert current is not None
    watch = asyncio.ensure_future(context.meter.ran_out(name))
    watch.add_done_callback(lambda done: None if done.cancelled() else current.cancel())
    try:
        return await work
    except asyncio.CancelledError:
        if watch.done() and not watch.cancelled():
            current.uncancel()
            raise AgentError(watch.result(), permanent=True) from None
        raise
    finally:
        watch.cancel()


def _raise_budget(result: RunResult) -> None:
    """A nested run that failed because a budget over it ran out fails its agent naming the budget."""
    for _, record in result.results:
        if record.status is AgentStatus.FAILED and record.error is not None and record.error.startswith(budget.PREFIX):
            raise AgentError(record.error, permanent=True)


def _total_usage(result: RunResult) -> Usage:
    total = Usage()
    for _, record in result.results:
        total = total + record.usage
    return total


def _loop_scope(result: RunResult) -> dict[str, object]:
    """Names a loop's `until` / `carry` may use: body agents, else fields of the body's deliverable."""
    scope: dict[str, object] = {}
    data = structured(thaw(result.deliverable))
    if isinstance(data, Mapping):
        scope.update({str(k): v for k, v in data.items()})
    scope.update({n: r.output for n, r in result.results if r.status is AgentStatus.COMPLETED})
    return scope
