"""The run engine: the async shell that performs what `orc.scheduler.run.plan` decides.

It owns the clock, the journal writer and the tasks; every decision (what may start, what a
failure means, what the deliverable is) comes from the pure state machine. Blocking work
(inference, subprocess waits) happens behind the runtime seam, never on this loop.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Union

from orc.node.models.catalog import DEFAULT_MODEL_ID, Catalog, CatalogError
from orc.node.protocol.events import (
    AgentBegan,
    AgentEnded,
    AgentPlacedOn,
    AgentPlan,
    AgentRetrying,
    AgentWorking,
    RunBegan,
    RunFinished,
    RunProgress,
    RunPlanned,
    RunResult,
    TokenStreamed,
)
from orc.node.models.runtimes.base import (
    ChatMessage,
    GenerationDone,
    GenerationError,
    GenerationParams,
    ModelRuntime,
    RuntimeFailure,
    TokenChunk,
)
from orc.node.coordinator.placer import Bound, Generation, Mesh, NoNode, NoRoom, TimedOut, Working
from orc.node.models.runtimes.script import resolve_script, run_script
from orc.scheduler.dag import critical_path_lengths
from orc.scheduler.placement import Demand, estimated_prompt_tokens, forecast
from orc.scheduler.ensemble import (
    AgentSpec,
    DispatchTask,
    EnsembleSpec,
    EnsembleTask,
    LlmTask,
    LoopTask,
    ScriptTask,
)
from orc.scheduler.errors import EnsembleInvalid, EnsembleNotFound, Problem
from orc.scheduler.journal import JournalContents, JournalWriter, RunEnded, RunHeader
from orc.scheduler.loader import EnsembleLibrary, load_ensemble, unresolved_references
from orc.scheduler.profiles import Profiles, ResolvedModel, resolve_model
from orc.scheduler.run import (
    AgentBound,
    AgentFailed,
    AgentInput,
    AgentSkipped,
    AgentStarted,
    AgentStatus,
    AgentSucceeded,
    FailAgent,
    RunId,
    RunState,
    SkipAgent,
    StartAgent,
    Usage,
    apply,
    deliverable,
    derive_run_id,
    initial_state,
    is_finished,
    max_attempts,
    plan,
    resumable,
    run_status,
)
from orc.scheduler.values import holds, resolve, structured, thaw

log = logging.getLogger(__name__)

LOCAL_NODE_ID = "local"
DEFAULT_AGENT_TIMEOUT = 300.0  # seconds; llm-orc's default too. Composite agents have none.
# How long an LLM agent's generation may wait for a model before it starts (every node full,
# or queued on one) unless the agent says `queue_timeout_seconds`.
DEFAULT_QUEUE_TIMEOUT = 300.0
# Embedded mode: generations of one model let into the runtime at once (the llama.cpp runtime
# runs one per model); the others wait here, where the engine sees them start.
EMBEDDED_SLOTS_PER_MODEL = 1


@dataclass(frozen=True)
class Limits:
    """An agent attempt's time limits, each with where it was set (for the messages)."""

    timeout_s: float | None  # the attempt's own time; for an LLM agent, from when its generation starts
    timeout_origin: str
    wait_s: float | None  # LLM agents: how long a generation may wait to start
    wait_origin: str

    def timed_out(self, generating: bool) -> str:
        doing = " of generating" if generating else ""
        return f"timed out after {self.timeout_s:g} s{doing} ({self.timeout_origin})"

    def waited(self, answers: str) -> str:
        return (f"waited {self.wait_s:g} s for a model without starting ({self.wait_origin})"
                + (f"; last answers: {answers}" if answers else ""))


class RunRefused(Exception):
    """The ensemble cannot run on this machine; nothing was started."""

    def __init__(self, problems: list[Problem], exit_code: int) -> None:
        self.problems = tuple(problems)
        self.exit_code = exit_code
        super().__init__(EnsembleInvalid(problems).summary())


@dataclass(frozen=True)
class _Outcome:
    """The end of one agent attempt, posted by its task to the run loop."""

    event: Union[AgentSucceeded, AgentFailed]


@dataclass(frozen=True)
class _Placed:
    """A generation of an agent was bound to a node, posted by its task to the run loop."""

    agent: str  # the agent in the run's state
    shown: str  # as progress shows it ("parent/name[2]")
    node_id: str
    node_name: str
    replaces: str | None


@dataclass(frozen=True)
class _Context:
    """What a (possibly nested) run needs to execute its agents."""

    run_id: RunId
    prefix: str
    depth: int
    post: Callable[[object], None]


@dataclass
class Engine:
    """Executes ensembles on this node's runtimes."""

    catalog: Catalog
    runtimes: Mapping[str, ModelRuntime]
    profiles: Profiles
    library: EnsembleLibrary
    runs_dir: Path | None
    project_dir: Path | None = None
    node_id: str = LOCAL_NODE_ID
    clock: Callable[[], float] = time.time
    seed: int | None = None
    mesh: Mesh | None = None  # the daemon's: LLM agents are placed on the mesh; None: this machine only
    local: bool = False  # `--local`: every agent stays on this node, even with a mesh
    _resolved: dict[tuple[int, str], ResolvedModel] = field(default_factory=dict)
    _ranks: dict[int, dict[str, float]] = field(default_factory=dict)
    _digests: dict[tuple[int, str], str | None] = field(default_factory=dict)  # local weights, by agent
    _epoch: float = 0.0  # when the current run (or resume) began
    _gates: dict[str, asyncio.Semaphore] = field(default_factory=dict)  # embedded mode, per model
    _gates_loop: object = None  # the event loop the gates belong to

    # ---- before anything runs ----

    def preflight(self, spec: EnsembleSpec) -> list[str]:
        """Check everything that depends on this machine; raise RunRefused, or return warnings.

        Missing scripts, profiles and nested ensembles exit 2; models nobody has exit 3.
        """
        problems: list[Problem] = []
        missing_models: list[Problem] = []
        warnings = list(spec.warnings) + list(self.profiles.warnings)
        for file, agent, reference in unresolved_references(spec):
            folders = ", ".join(str(f) for f in self.library.folders if f.is_dir())
            problems.append(Problem(file, agent, f"nested ensemble '{reference}' not found next to the file "
                                    f"or in {folders or 'any ensemble folder'}",
                                    "create it or fix the name"))
        self._check(spec, problems, missing_models, seen=set())
        if problems:
            raise RunRefused(problems + missing_models, 2)
        if missing_models:
            raise RunRefused(missing_models, 3)
        return warnings

    def _check(self, spec: EnsembleSpec, problems: list[Problem], missing: list[Problem], seen: set[int]) -> None:
        if id(spec) in seen:
            return
        seen.add(id(spec))
        for agent in spec.agents:
            if agent.placement.require_tags and (
                    self.mesh is None or not self.mesh.tagged(agent.placement.require_tags, self._only_here(agent))):
                # Embedded mode has one node, this one, and it carries no tags.
                missing.append(Problem(spec.source, agent.name,
                                       f"no node has the tags it requires ({', '.join(sorted(agent.placement.require_tags))})",
                                       "start a node with 'orc-node start --tag TAG', or drop require_tags"))
                continue
            match agent.task:
                case LlmTask() as task:
                    here = self._only_here(agent)
                    resolved = resolve_model(agent, task, self.profiles, spec.source,
                                             available=lambda m: self.catalog.get(m) is not None
                                             or (self.mesh is not None and self.mesh.offers(m, here)))
                    if isinstance(resolved, Problem):
                        problems.append(resolved)
                        continue
                    if self.mesh is not None:
                        # The mesh (this node included) decides at run time; here: does anyone serve it?
                        if self.mesh.offers(resolved.model, here):
                            self._resolved[(id(spec), agent.name)] = resolved
                            # The weights this node knows under that name, if any: peers must
                            # serve the same ones. Read here, off the loop: the first look may
                            # hash a model file.
                            try:
                                entry = self.catalog.get(resolved.model)
                            except CatalogError:
                                entry = None
                            self._digests[(id(spec), agent.name)] = entry.sha256 if entry else None
                            continue
                        have = ", ".join(self.mesh.model_ids(here)) or "none"
                        if here:
                            why = "it is local_only" if agent.placement.local_only else "the run is --local"
                            missing.append(Problem(spec.source, agent.name,
                                                   f"{why}, and this node does not serve model '{resolved.model}' "
                                                   f"(models here: {have})",
                                                   f"start this node with 'orc-node start --model {resolved.model}', "
                                                   + ("or drop local_only" if agent.placement.local_only
                                                      else "or run without --local")))
                        else:
                            missing.append(Problem(spec.source, agent.name,
                                                   f"no live node has model '{resolved.model}' (models in the mesh: "
                                                   f"{have})",
                                                   "start a node that serves it, e.g. 'orc-node start --model "
                                                   f"{resolved.model}', or map it with model_aliases in your orc config"))
                        continue
                    entry = self.catalog.get(resolved.model)
                    if entry is None:
                        have = ", ".join(dict.fromkeys(e.id for e in self.catalog.entries())) or "none"
                        via = f" (profile '{resolved.profile}')" if resolved.profile else ""
                        missing.append(Problem(spec.source, agent.name,
                                               f"no node has model '{resolved.model}'{via}; models here: {have}",
                                               f"map it in your orc config: model_aliases: {{'{resolved.model}': "
                                               f"{self._default_model()}}}, or add it with 'orc models add PATH'"))
                        continue
                    if entry.runtime not in self.runtimes:
                        missing.append(Problem(spec.source, agent.name,
                                               f"model '{resolved.model}' is served by the {entry.runtime} runtime, "
                                               f"which is not installed on this node",
                                               "install it with: pip install 'orc-mesh[mlx]'" if entry.runtime == "mlx"
                                               else f"run it on a node with the {entry.runtime} runtime"))
                        continue
                    self._resolved[(id(spec), agent.name)] = resolved
                case ScriptTask(script=script):
                    try:
                        resolve_script(script, ensemble_dir=_folder(spec), project_dir=self.project_dir)
                    except RuntimeFailure as error:
                        problems.append(Problem(spec.source, agent.name, str(error)))
                case EnsembleTask() | LoopTask():
                    pass
                case DispatchTask():
                    pass  # the target is only known at run time
        for _, child in spec.children:
            self._check(child, problems, missing, seen)

    def forecast(self, spec: EnsembleSpec, run_input: object) -> RunPlanned:
        """Where every agent of `spec` would run if the run started now, and why (after `preflight`).

        Prompt sizes are guessed before the upstream agents have written anything: the system
        prompt and input as given, plus each dependency's full `max_tokens`.
        """
        assert self.mesh is not None, "forecasts need the mesh"
        now = self.clock()
        view = self.mesh.view(self.local)
        demands: list[Demand] = []
        notes: dict[str, tuple[str, str | None]] = {}
        input_chars = len(render_value(run_input)) if run_input is not None else 0
        for agent in spec.agents:
            match agent.task:
                case LlmTask():
                    resolved = self._resolved[(id(spec), agent.name)]
                    upstream = sum(r.max_tokens for d in agent.depends_on
                                   if (r := self._resolved.get((id(spec), d))) is not None)
                    demands.append(self.mesh.demand(
                        agent.name, resolved.model, self._digests.get((id(spec), agent.name)),
                        estimated_prompt_tokens(len(resolved.system_prompt or "") + input_chars) + upstream,
                        resolved.max_tokens, agent.placement, self._rank(spec, agent.name), self.local))
                    if agent.fan_out:
                        notes[agent.name] = ("llm", "fan-out: each item is one generation, placed on its own "
                                                    "when the list is known; shown for one item")
                case ScriptTask():
                    notes[agent.name] = ("script", "runs on this node: scripts never leave the coordinator")
                case EnsembleTask():
                    notes[agent.name] = ("ensemble", "runs on this node; its agents are placed when it starts")
                case LoopTask():
                    notes[agent.name] = ("loop", "runs on this node; its body's agents are placed each iteration")
                case DispatchTask():
                    notes[agent.name] = ("dispatch", "runs on this node; the ensemble it picks is placed then")
        decisions = {d.key: d for d in forecast(demands, {a.name: a.depends_on for a in spec.agents}, view, now)}
        plans = []
        for agent in spec.agents:
            kind, note = notes.get(agent.name, ("llm", None))
            decision = decisions.get(agent.name)
            plans.append(AgentPlan(agent.name, kind, self.model_for(spec, agent),
                                   decision.candidates if decision else (), decision.rejected if decision else (),
                                   note))
        return RunPlanned(spec.name, self.node_id, now, tuple(plans))

    def _only_here(self, agent: AgentSpec) -> bool:
        return self.local or agent.placement.local_only

    def _rank(self, ensemble: EnsembleSpec, name: str) -> float:
        """The agent's critical-path length to the end of its ensemble, in estimated seconds
        (HEFT's upward rank), so placement serves the longest chain first."""
        ranks = self._ranks.get(id(ensemble))
        if ranks is None:
            cost: dict[str, float] = {}
            for agent in ensemble.agents:
                resolved = self._resolved.get((id(ensemble), agent.name))
                # A typical small model decodes ~20 tokens/s on a small device; only the
                # ratios between agents matter here, not the absolute seconds.
                cost[agent.name] = resolved.max_tokens / 20.0 if resolved is not None else 0.1
            ranks = self._ranks[id(ensemble)] = critical_path_lengths(ensemble, cost)
        return ranks.get(name, 0.0)

    def _default_model(self) -> str:
        default = self.profiles.profiles.get("default")
        return default.model if default else DEFAULT_MODEL_ID

    # ---- running ----

    async def run(
        self, spec: EnsembleSpec, run_input: object, *, resume: JournalContents | None = None
    ) -> AsyncIterator[RunProgress]:
        """Run `spec` (or continue the journaled run `resume`), yielding progress as it happens.

        The last event is always `RunFinished`. Closing the iterator early cancels every
        running agent; the journal keeps what had finished.
        """
        # Preflight may hash a model file the first time (hundreds of MB): off the loop.
        await asyncio.to_thread(self.preflight, spec)
        now = self._epoch = self.clock()
        writer: JournalWriter | None = None
        if resume is not None:
            run_id = resume.header.run_id
            state = initial_state(run_id, spec, resume.header.input, resume.header.started_at)
            for event in resume.events:
                if event.agent in state.agents:
                    state = apply(state, event)
            state = resumable(state)
            if self.runs_dir is not None:
                writer = await asyncio.to_thread(JournalWriter.reopen, self.runs_dir / f"{run_id}.journal")
        else:
            run_id = derive_run_id(spec.name, now, os.urandom(8))
            state = initial_state(run_id, spec, run_input, now)
            if self.runs_dir is not None:
                header = RunHeader(run_id, spec.name, str(spec.source) if spec.source else None, run_input, now,
                                   spec.names)
                writer = await asyncio.to_thread(JournalWriter.create, self.runs_dir / f"{run_id}.journal", header)
        yield RunBegan(run_id, spec.name, spec.names, writer.path if writer else None, now, resumed=resume is not None)
        for name, record in state.agents.items():
            if record.status is AgentStatus.COMPLETED:
                yield AgentEnded(name, record, reused=True)
        queue: asyncio.Queue[object] = asyncio.Queue()
        try:
            async for event in self._drive(state, _Context(run_id, "", 0, queue.put_nowait), queue, writer):
                yield event
        finally:
            if writer is not None:
                writer.close()

    async def _drive(
        self, state: RunState, ctx: _Context, queue: "asyncio.Queue[object]", writer: JournalWriter | None
    ) -> AsyncIterator[RunProgress]:
        """The loop shared by top-level and nested runs: plan, start, collect, repeat."""
        running: dict[str, asyncio.Task[None]] = {}

        async def record(event: object) -> None:
            # Awaited before anything that depends on the event, so a result is on disk
            # (fsynced, off the loop) before a dependent starts.
            if writer is not None:
                await asyncio.to_thread(writer.append, event)  # type: ignore[arg-type]

        try:
            while True:
                steps = plan(state)
                starting: list[tuple[AgentSpec, AgentInput]] = []
                while steps:
                    step, steps = steps[0], steps[1:]
                    match step:
                        case StartAgent(input=agent_input):
                            spec = state.spec.agent(agent_input.agent)
                            model = self.model_for(state.spec, spec)
                            # An LLM agent's node is known once a node accepts it (AgentBound).
                            where = None if self.mesh is not None and model is not None else self.node_id
                            started = AgentStarted(spec.name, self.clock(), where, model)
                            state = apply(state, started)
                            await record(started)
                            starting.append((spec, agent_input))
                            width = len(agent_input.items) if agent_input.items is not None else None
                            yield AgentBegan(ctx.prefix + spec.name, where, model, agent_input.attempt, width)
                        case SkipAgent(agent=name, reason=reason):
                            skipped = AgentSkipped(name, reason, self.clock())
                            state = apply(state, skipped)
                            await record(skipped)
                            yield AgentEnded(ctx.prefix + name, state.agents[name])
                        case FailAgent(agent=name, error=error):
                            at = self.clock()
                            for event in (AgentStarted(name, at, self.node_id, None),
                                          AgentFailed(name, error, at, permanent=True)):
                                state = apply(state, event)
                                await record(event)
                            yield AgentEnded(ctx.prefix + name, state.agents[name])
                    if not steps:
                        steps = plan(state)  # a skip or failure can make more agents ready
                # Started together, after every journal write: agents that became ready at the
                # same moment reach placement in the same turn of the loop and are placed as one.
                for spec, agent_input in starting:
                    running[spec.name] = asyncio.create_task(
                        self._attempt(state.spec, spec, agent_input, ctx, queue), name=f"agent:{spec.name}")
                if is_finished(state):
                    break
                if not running:
                    # Cannot happen with a validated DAG; guards against a planner bug hanging the run.
                    raise RuntimeError("run stalled: nothing running and nothing ready")
                item = await queue.get()
                match item:
                    case _Placed(agent=agent, shown=shown, node_id=node_id, node_name=node_name, replaces=replaces):
                        if agent in state.agents and state.agents[agent].status is AgentStatus.RUNNING:
                            bound = AgentBound(agent, node_id, self.clock(), failover=replaces is not None)
                            state = apply(state, bound)
                            await record(bound)
                        yield AgentPlacedOn(shown, node_id, node_name, replaces)
                    case _Outcome(event=event):
                        running.pop(event.agent, None)
                        state = apply(state, event)
                        await record(event)
                        current = state.agents[event.agent]
                        if current.status is AgentStatus.PENDING:
                            assert isinstance(event, AgentFailed)
                            yield AgentRetrying(ctx.prefix + event.agent, event.error, current.attempts)
                        else:
                            yield AgentEnded(ctx.prefix + event.agent, current)
                    case _:
                        yield item  # type: ignore[misc]  # token and nested progress events
        finally:
            for task in running.values():
                task.cancel()
            if running:
                await asyncio.gather(*running.values(), return_exceptions=True)
        finished = self.clock()
        status = run_status(state)
        result = RunResult(state.run_id, state.spec.name, status, deliverable(state),
                           tuple(state.agents.items()), state.started_at, finished)
        await record(RunEnded(status, finished))
        yield RunFinished(result)

    def model_for(self, ensemble: EnsembleSpec, spec: AgentSpec) -> str | None:
        """The catalog model an LLM agent runs on (known after `preflight`); None for other agents."""
        resolved = self._resolved.get((id(ensemble), spec.name))
        return resolved.model if resolved else None

    def limits(self, ensemble: EnsembleSpec, spec: AgentSpec) -> Limits:
        """An agent's time limits and where each was set: the agent's key, its profile's, or orc's default."""
        where = ensemble.source.name if ensemble.source else "the ensemble"
        resolved = self._resolved.get((id(ensemble), spec.name))
        timeout: float | None = None
        origin = ""
        if spec.timeout_seconds is not None:
            timeout, origin = spec.timeout_seconds, f"timeout_seconds: {spec.timeout_seconds:g} of agent '{spec.name}' in {where}"
        elif resolved is not None and resolved.timeout_seconds is not None:
            timeout = resolved.timeout_seconds
            profile = self.profiles.profiles.get(resolved.profile or "")
            source = profile.source if profile is not None and profile.source else "the built-in profiles"
            origin = f"timeout_seconds: {timeout:g} of profile '{resolved.profile}' in {source}"
        elif isinstance(spec.task, (LlmTask, ScriptTask)):
            timeout, origin = DEFAULT_AGENT_TIMEOUT, f"orc's default of {DEFAULT_AGENT_TIMEOUT:g} s"
        if spec.queue_timeout_seconds is not None:
            wait = spec.queue_timeout_seconds
            wait_origin = f"queue_timeout_seconds: {wait:g} of agent '{spec.name}' in {where}"
        else:
            wait, wait_origin = DEFAULT_QUEUE_TIMEOUT, f"orc's default of {DEFAULT_QUEUE_TIMEOUT:g} s"
        return Limits(timeout, origin, wait, wait_origin)

    async def _attempt(self, ensemble: EnsembleSpec, spec: AgentSpec, agent_input: AgentInput,
                       ctx: _Context, queue: "asyncio.Queue[object]") -> None:
        """Run one attempt of one agent and post its outcome; never raises (task boundary).

        An LLM agent's timeout counts from when its generation starts (its wait for a model is
        bounded apart, by `queue_timeout_seconds`); any other agent's from the attempt's start.
        """
        name = ctx.prefix + spec.name
        limits = self.limits(ensemble, spec)
        try:
            if agent_input.items is not None:
                # The timeout bounds each instance, not the whole fan-out: N instances share
                # one model and would otherwise time out for being many.
                output, usage = await self._fan_out(ensemble, spec, agent_input, ctx, name, limits)
            elif isinstance(spec.task, LlmTask):
                output, usage = await self._perform(ensemble, spec, agent_input, agent_input.input, ctx, name, limits)
            else:
                output, usage = await asyncio.wait_for(
                    self._perform(ensemble, spec, agent_input, agent_input.input, ctx, name, limits), limits.timeout_s)
            event: AgentSucceeded | AgentFailed = AgentSucceeded(spec.name, output, self.clock(), usage)
        except asyncio.TimeoutError:
            event = AgentFailed(spec.name, limits.timed_out(generating=False), self.clock())
        except asyncio.CancelledError:
            raise
        except _AgentError as error:
            event = AgentFailed(spec.name, str(error), self.clock(), retryable=error.retryable)
        except RuntimeFailure as error:
            event = AgentFailed(spec.name, str(error), self.clock(), retryable=isinstance(error, GenerationError))
        except Exception as error:  # noqa: BLE001 - task boundary: one agent's bug must not kill the run
            log.exception("agent %s crashed", name)
            event = AgentFailed(spec.name, f"internal error: {type(error).__name__}: {error}", self.clock())
        queue.put_nowait(_Outcome(event))

    async def _fan_out(self, ensemble: EnsembleSpec, spec: AgentSpec, agent_input: AgentInput,
                       ctx: _Context, name: str, limits: Limits) -> tuple[object, Usage]:
        assert agent_input.items is not None

        async def instance(index: int, item: object) -> tuple[object, Usage]:
            work = self._perform(ensemble, spec, agent_input, item, ctx, f"{name}[{index}]", limits)
            if isinstance(spec.task, LlmTask):
                return await work  # its timeout counts from its own start, inside
            try:
                return await asyncio.wait_for(work, limits.timeout_s)
            except asyncio.TimeoutError:
                raise _AgentError(limits.timed_out(generating=False)) from None

        instances = [instance(index, item) for index, item in enumerate(agent_input.items)]
        results = await asyncio.gather(*instances, return_exceptions=True)
        failures = [(i, r) for i, r in enumerate(results) if isinstance(r, BaseException)]
        for _, failure in failures:
            if isinstance(failure, asyncio.CancelledError):
                raise failure
        if failures:
            detail = "; ".join(f"[{i}] {error}" for i, error in failures[:5])
            raise _AgentError(f"{len(failures)} of {len(results)} fan-out instances failed: {detail}")
        usage = Usage()
        for _, instance_usage in results:  # type: ignore[misc]
            usage = usage + instance_usage
        return tuple(output for output, _ in results), usage  # type: ignore[misc]

    async def _perform(self, ensemble: EnsembleSpec, spec: AgentSpec, agent_input: AgentInput,
                       value: object, ctx: _Context, name: str, limits: Limits) -> tuple[object, Usage]:
        """Execute the agent's task on `value`; returns (output, usage). An LLM task keeps its
        own limits; the caller bounds the others."""
        match spec.task:
            case LlmTask():
                return await self._generate(ensemble, spec, agent_input, value, ctx, name, limits)
            case ScriptTask(script=script, parameters=parameters):
                path = resolve_script(script, ensemble_dir=_folder(ensemble), project_dir=self.project_dir)
                payload = {
                    "agent_name": spec.name,
                    "input_data": thaw(value),
                    "dependencies": {dep: {"status": r.status, "output": thaw(r.output), "error": r.error}
                                     for dep, r in agent_input.dependencies},
                    "parameters": thaw(parameters),
                    "context": {"run_id": ctx.run_id, "ensemble": ensemble.name},
                }
                result = await run_script(path, payload, timeout=None, cwd=Path.cwd())
                output = result.output
                if isinstance(output, Mapping) and output.get("success") is False:
                    raise _AgentError(f"script reported failure: {output.get('error') or 'no reason given'}")
                return output, Usage()
            case EnsembleTask(ensemble=reference):
                child = ensemble.child(reference)
                if child is None:
                    raise _AgentError(f"nested ensemble '{reference}' not found")
                return await self._nested(child, value, ctx, name)
            case DispatchTask(target=target):
                dep_outputs = {d: r.output for d, r in agent_input.dependencies if r.status == "completed"}
                chosen = resolve(target, dep_outputs)
                if not isinstance(chosen, str) or not chosen.strip():
                    raise _AgentError(f"dispatch target {target} is {chosen!r}, not an ensemble name")
                child = await asyncio.to_thread(self._load_dynamic, chosen.strip(), ensemble)
                return await self._nested(child, value, ctx, name)
            case LoopTask() as loop:
                body = ensemble.child(loop.body)
                if body is None:
                    raise _AgentError(f"loop body '{loop.body}' not found")
                return await self._loop(loop, body, value, ctx, name)
        raise AssertionError(f"unhandled task {spec.task!r}")

    async def _generate(self, ensemble: EnsembleSpec, spec: AgentSpec, agent_input: AgentInput,
                        value: object, ctx: _Context, name: str, limits: Limits) -> tuple[object, Usage]:
        resolved = self._resolved.get((id(ensemble), spec.name))
        if resolved is None:
            raise _AgentError("model was not resolved before the run (internal error)")
        if self.mesh is not None:
            return await self._generate_on_mesh(ensemble, spec, agent_input, value, ctx, name, resolved, limits)
        try:
            entry = await asyncio.to_thread(self.catalog.prepare, resolved.model)
        except CatalogError as error:
            raise _AgentError(str(error)) from None
        runtime = self.runtimes.get(entry.runtime)
        if runtime is None:
            raise _AgentError(f"model '{entry.id}' needs the {entry.runtime} runtime, which this node does not have")
        messages = build_messages(resolved.system_prompt, agent_input, value)
        params = generation_params(resolved, spec, self.seed)
        loop = asyncio.get_running_loop()
        if self._gates_loop is not loop:
            self._gates, self._gates_loop = {}, loop
        gate = self._gates.setdefault(entry.selector, asyncio.Semaphore(EMBEDDED_SLOTS_PER_MODEL))
        began = loop.time()
        try:
            await asyncio.wait_for(gate.acquire(), limits.wait_s)
        except asyncio.TimeoutError:
            raise _AgentError(limits.waited("")) from None
        text = ""
        usage = Usage()
        try:
            ctx.post(AgentWorking(name, self.node_id, round(loop.time() - began, 3)))
            async for event in _bounded(runtime.generate(entry, messages, params), limits, loop.time()):
                match event:
                    case TokenChunk(text=chunk):
                        ctx.post(TokenStreamed(name, chunk))
                    case GenerationDone(text=final, usage=done_usage):
                        text, usage = final, done_usage
        finally:
            gate.release()
        return self._finish_text(spec, text), usage

    async def _generate_on_mesh(self, ensemble: EnsembleSpec, spec: AgentSpec, agent_input: AgentInput,
                                value: object, ctx: _Context, name: str,
                                resolved: ResolvedModel, limits: Limits) -> tuple[object, Usage]:
        """Place the generation on the mesh (this node included) and relay what it streams; its
        timeout counts from when its node starts it (`Working`)."""
        assert self.mesh is not None
        generation = Generation(
            run_id=ctx.run_id, agent=name, model=resolved.model, sha256=self._digests.get((id(ensemble), spec.name)),
            messages=tuple(build_messages(resolved.system_prompt, agent_input, value)),
            params=generation_params(resolved, spec, self.seed), placement=spec.placement,
            rank=self._rank(ensemble, spec.name), attempts=max_attempts(spec, retryable=True),
            deadline_s=limits.timeout_s, wait_s=limits.wait_s, local=self.local, epoch=self._epoch)
        text = ""
        usage = Usage()
        try:
            async for event in _bounded(self.mesh.generate(generation), limits, None):
                match event:
                    case Bound(node_id=node_id, node_name=node_name, replaces=replaces):
                        ctx.post(_Placed(spec.name, name, node_id, node_name, replaces))
                    case Working(node_id=node_id, waited_s=waited):
                        ctx.post(AgentWorking(name, node_id, waited))
                    case TokenChunk(text=chunk):
                        ctx.post(TokenStreamed(name, chunk))
                    case GenerationDone(text=final, usage=done_usage):
                        text, usage = final, done_usage
        except NoRoom as error:
            raise _AgentError(limits.waited("; ".join(f"{node}: {why}" for node, why in error.answers))) from None
        except TimedOut:
            raise _AgentError(limits.timed_out(generating=True)) from None
        except NoNode as error:
            raise _AgentError(str(error)) from None
        return self._finish_text(spec, text), usage

    def _finish_text(self, spec: AgentSpec, text: str) -> object:
        if spec.output_format == "json":
            parsed = structured(text)
            if parsed is text:
                raise _AgentError("output_format is json but the model's answer is not JSON")
            return parsed
        return text.strip()

    async def _child_run(self, child: EnsembleSpec, value: object, ctx: _Context, prefix: str) -> RunResult:
        """Run an ensemble inside an agent to completion; its progress is forwarded under `prefix`.

        Child runs are not journaled on their own: the enclosing agent's result is.
        """
        if ctx.depth >= 8:
            raise _AgentError("ensembles nested too deeply at run time")
        problems: list[Problem] = []
        missing: list[Problem] = []
        await asyncio.to_thread(self._check, child, problems, missing, set())
        if problems or missing:
            raise _AgentError("; ".join(str(p) for p in problems + missing))
        state = initial_state(ctx.run_id, child, thaw(value), self.clock())
        queue: asyncio.Queue[object] = asyncio.Queue()
        inner = _Context(ctx.run_id, prefix, ctx.depth + 1, queue.put_nowait)
        result: RunResult | None = None
        async for event in self._drive(state, inner, queue, writer=None):
            match event:
                case RunFinished(result=finished):
                    result = finished
                case _:
                    ctx.post(event)
        assert result is not None
        return result

    async def _nested(self, child: EnsembleSpec, value: object, ctx: _Context, name: str) -> tuple[object, Usage]:
        """A nested ensemble's deliverable is the agent's output."""
        result = await self._child_run(child, value, ctx, f"{name}/")
        if result.status == "failed":
            failed = [n for n, r in result.results if r.status is AgentStatus.FAILED]
            raise _AgentError(f"nested ensemble '{child.name}' failed (agents: {', '.join(failed)})")
        return result.deliverable, _total_usage(result)

    async def _loop(self, loop: LoopTask, body: EnsembleSpec, value: object, ctx: _Context,
                    name: str) -> tuple[object, Usage]:
        """Run `body` until `until` holds over its results, carrying `carry` into the next input."""
        current = value
        total = Usage()
        last: object = None
        for iteration in range(1, loop.max_iterations + 1):
            result = await self._child_run(body, current, ctx, f"{name}#{iteration}/")
            total = total + _total_usage(result)
            if result.status == "failed":
                raise _AgentError(f"loop body '{body.name}' failed in iteration {iteration}")
            last = result.deliverable
            scope = _loop_scope(result, body)
            if loop.until is not None and holds(loop.until, scope):
                return {"iterations": iteration, "converged": True, "output": thaw(last)}, total
            if loop.carry is not None:
                current = resolve(loop.carry, scope)
        return {"iterations": loop.max_iterations, "converged": loop.until is None, "output": thaw(last)}, total

    def _load_dynamic(self, reference: str, parent: EnsembleSpec) -> EnsembleSpec:
        try:
            path = self.library.resolve(reference, relative_to=_folder(parent))
            return load_ensemble(path, self.library)
        except (EnsembleNotFound, EnsembleInvalid) as error:
            raise _AgentError(f"dispatch to '{reference}': {error}") from None


async def _bounded(events: AsyncIterator[object], limits: Limits,
                   started: float | None) -> AsyncIterator[object]:
    """`events`, ended with `_AgentError` once `limits.timeout_s` passed since the generation
    started: at `started` (loop time), or else at its `Working` event."""
    loop = asyncio.get_running_loop()
    ends = None if limits.timeout_s is None or started is None else started + limits.timeout_s
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
                raise _AgentError(limits.timed_out(generating=True)) from None
            if isinstance(event, Working) and ends is None and limits.timeout_s is not None:
                ends = loop.time() + limits.timeout_s
            yield event
    finally:
        close = getattr(events, "aclose", None)
        if close is not None:
            await close()


class _AgentError(Exception):
    """An agent failed for a reason stated in the message."""

    def __init__(self, message: str, retryable: bool = False) -> None:
        super().__init__(message)
        self.retryable = retryable


def generation_params(resolved: ResolvedModel, spec: AgentSpec, seed: int | None) -> GenerationParams:
    """Sampling settings: the resolved profile, then the agent's `options` (`top_p`, `stop`, `seed`).

    Other options (llm-orc passes provider-specific ones such as `think`) do not apply to
    local runtimes and are ignored.
    """
    options = spec.task.options if isinstance(spec.task, LlmTask) else {}
    top_p = options.get("top_p")
    stop = options.get("stop")
    option_seed = options.get("seed")
    return GenerationParams(
        temperature=resolved.temperature,
        max_tokens=resolved.max_tokens,
        seed=option_seed if isinstance(option_seed, int) and not isinstance(option_seed, bool) else seed,
        stop=(stop,) if isinstance(stop, str) else tuple(s for s in (stop or ()) if isinstance(s, str)),
        top_p=float(top_p) if isinstance(top_p, (int, float)) and not isinstance(top_p, bool) else None,
    )


def _folder(spec: EnsembleSpec) -> Path:
    return spec.source.parent if spec.source else Path.cwd()


def _total_usage(result: RunResult) -> Usage:
    total = Usage()
    for _, record in result.results:
        total = total + record.usage
    return total


def _loop_scope(result: RunResult, body: EnsembleSpec) -> dict[str, object]:
    """Names a loop's `until` / `carry` may use: body agents, else fields of the body's deliverable."""
    scope: dict[str, object] = {}
    data = structured(thaw(result.deliverable))
    if isinstance(data, Mapping):
        scope.update({str(k): v for k, v in data.items()})
    scope.update({n: r.output for n, r in result.results if r.status is AgentStatus.COMPLETED})
    return scope


def render_value(value: object) -> str:
    """A value as prompt text: strings as they are, a list of strings (a gathered fan-out) as
    bullet lines, other data as indented JSON."""
    data = thaw(value)
    if isinstance(data, str):
        return data
    if isinstance(data, list) and data and all(isinstance(item, str) for item in data):
        return "\n".join("- " + " ".join(item.split()) for item in data)
    return json.dumps(data, indent=2, ensure_ascii=False, default=str)


def build_messages(system_prompt: str | None, agent_input: AgentInput, value: object) -> list[ChatMessage]:
    """The chat an LLM agent sees: its system prompt, then the upstream results its scope allows, then its input.

    The input comes last: small models follow what they read most recently, and the
    upstream results are material for that input, not the question itself.
    """
    parts: list[str] = []
    if agent_input.scope in ("full", "dependencies") and agent_input.dependencies:
        sections = []
        for dep, result in agent_input.dependencies:
            if result.status == "completed":
                sections.append(f"[{dep}]\n{render_value(result.output).strip()}")
            elif result.status == "failed":
                sections.append(f"[{dep}]\n(this agent failed: {result.error})")
        if sections:
            parts.append("What the agents before you wrote:\n\n" + "\n\n".join(sections))
    if agent_input.scope in ("full", "input"):
        text = render_value(value).strip()
        if text:
            parts.append(("Input:\n" + text) if len(parts) else text)
    messages = []
    if system_prompt:
        messages.append(ChatMessage("system", system_prompt.strip()))
    messages.append(ChatMessage("user", "\n\n".join(parts) or "(no input)"))
    return messages


def journal_state(contents: JournalContents, spec: EnsembleSpec) -> RunState:
    """Rebuild a run's state from its journal (for `orc runs show`)."""
    state = initial_state(contents.header.run_id, spec, contents.header.input, contents.header.started_at)
    for event in contents.events:
        if event.agent in state.agents:
            state = apply(state, event)
    return state


__all__ = ["Engine", "RunRefused", "build_messages", "generation_params", "journal_state", "render_value",
           "LOCAL_NODE_ID"]
