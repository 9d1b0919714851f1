"""The run state machine: `apply(state, event) -> state` and `plan(state) -> steps`, both pure.

Per agent:  pending --start--> running --succeeded--> done
                                   |----failed------> failed   (no attempts left)
                                   '----failed------> pending  (retrying)
                                   '----bound-------> running  (placed on a node; again on failover)
            pending --skip--> skipped
(diagram: docs/architecture.md). Agents start as soon as their *own* dependencies are
terminal, never level by level. A failed dependency does not stop its dependents: they run
with a note of what failed (failure isolation); an agent whose dependencies were all
skipped is skipped too, so a `when` branch switches off everything below it.
"""

from __future__ import annotations

import enum
import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import NewType, Union

from typing_extensions import assert_never

from orc.scheduler.ensemble import AgentSpec, EnsembleSpec
from orc.scheduler.values import freeze, holds, lookup, structured

RunId = NewType("RunId", str)

# Without an explicit `retries:`, only failures of the machinery (a crashed runtime, a lost
# peer) are retried, this many times: re-running a script that exited 1 or a model that
# timed out would most likely fail the same way and only cost time.
DEFAULT_INFRA_RETRIES = 2


class AgentStatus(enum.Enum):
    PENDING = "pending"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    SKIPPED = "skipped"

    @property
    def terminal(self) -> bool:
        return self in (AgentStatus.COMPLETED, AgentStatus.FAILED, AgentStatus.SKIPPED)


@dataclass(frozen=True)
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0

    def __add__(self, other: "Usage") -> "Usage":
        return Usage(self.prompt_tokens + other.prompt_tokens, self.completion_tokens + other.completion_tokens)


_NOTHING: Mapping[str, object] = MappingProxyType({})


@dataclass(frozen=True)
class PartResult:
    """A finished piece of a composite agent: one sample of a vote, one level of a cascade, a
    judge's pick. Kept across retries and resumes, so none of it is computed twice."""

    output: object
    usage: Usage = Usage()
    node_id: str | None = None
    model: str | None = None


@dataclass(frozen=True)
class AgentRecord:
    """What the run knows about one agent."""

    status: AgentStatus = AgentStatus.PENDING
    attempts: int = 0
    output: object = None
    error: str | None = None
    node_id: str | None = None
    model: str | None = None
    started_at: float | None = None
    finished_at: float | None = None
    usage: Usage = Usage()
    nodes: tuple[str, ...] = ()  # every node its generations were bound to, in order, distinct
    failovers: int = 0  # generations moved to another node after the first one failed
    parts: Mapping[str, PartResult] = field(default_factory=lambda: _NOTHING)  # finished parts by key ("s3", "L0", "L0.s2", "judge")
    detail: Mapping[str, object] = field(default_factory=lambda: _NOTHING)  # what the result says beyond its output ("vote", "cascade")

    @property
    def tries(self) -> int:
        """Attempts as a user counts them: starts of the agent plus moves to another node."""
        return self.attempts + self.failovers


# ---- events: the reducer's inputs (also the journal's records) ----

@dataclass(frozen=True)
class AgentStarted:
    agent: str
    at: float
    node_id: str | None = None
    model: str | None = None


@dataclass(frozen=True)
class AgentBound:
    """A generation of a running agent was bound to a node (after an Offer it accepted)."""

    agent: str
    node_id: str
    at: float
    failover: bool = False  # it replaces a generation that failed on another node


@dataclass(frozen=True)
class PartDone:
    """A part of a running composite agent finished (see PartResult); journaled as it happens."""

    agent: str
    part: str
    result: PartResult
    at: float


@dataclass(frozen=True)
class AgentSucceeded:
    agent: str
    output: object
    at: float
    usage: Usage = Usage()
    detail: Mapping[str, object] = field(default_factory=lambda: _NOTHING)  # "vote", "cascade"


@dataclass(frozen=True)
class AgentFailed:
    agent: str
    error: str
    at: float
    retryable: bool = False
    permanent: bool = False  # the agent could not even start (unusable input): retrying cannot help


@dataclass(frozen=True)
class AgentSkipped:
    agent: str
    reason: str
    at: float


RunEvent = Union[AgentStarted, AgentBound, PartDone, AgentSucceeded, AgentFailed, AgentSkipped]


# ---- steps: the planner's outputs, performed by the shell ----

@dataclass(frozen=True)
class DependencyResult:
    """An upstream agent's result as a dependent sees it: a frozen value, never a reference."""

    status: str
    output: object
    error: str | None = None


@dataclass(frozen=True)
class AgentInput:
    """Everything one agent attempt may see, fixed when it starts."""

    agent: str
    input: object
    dependencies: tuple[tuple[str, DependencyResult], ...]
    scope: str
    attempt: int
    items: tuple[object, ...] | None = None  # fan-out: one instance per item
    parts: Mapping[str, PartResult] = field(default_factory=lambda: _NOTHING)  # parts an earlier attempt (or run, before a resume) finished


@dataclass(frozen=True)
class StartAgent:
    input: AgentInput


@dataclass(frozen=True)
class SkipAgent:
    agent: str
    reason: str


@dataclass(frozen=True)
class FailAgent:
    """The agent cannot start (its input is unusable); record it failed without running it."""

    agent: str
    error: str


Step = Union[StartAgent, SkipAgent, FailAgent]


@dataclass(frozen=True)
class RunState:
    run_id: RunId
    spec: EnsembleSpec
    input: object
    agents: Mapping[str, AgentRecord]
    started_at: float

    def record(self, name: str) -> AgentRecord:
        return self.agents[name]


def derive_run_id(ensemble: str, started_at: float, nonce: bytes) -> RunId:
    """Run ids are derived, not negotiated: a hash of what started the run, readable prefix."""
    digest = hashlib.sha256(f"{ensemble}\0{started_at!r}\0".encode() + nonce).hexdigest()
    return RunId(digest[:16])


def initial_state(run_id: RunId, spec: EnsembleSpec, run_input: object, now: float) -> RunState:
    return RunState(run_id, spec, freeze(run_input), MappingProxyType({a.name: AgentRecord() for a in spec.agents}), now)


def apply(state: RunState, event: RunEvent) -> RunState:
    """The state after `event`. Events about unknown agents are a programming error (KeyError)."""
    record = state.agents[event.agent]
    match event:
        case AgentStarted(at=at, node_id=node_id, model=model):
            record = replace(record, status=AgentStatus.RUNNING, attempts=record.attempts + 1,
                             started_at=at, node_id=node_id, model=model, error=None)
        case AgentBound(node_id=node_id, failover=failover):
            nodes = record.nodes if node_id in record.nodes else record.nodes + (node_id,)
            record = replace(record, node_id=node_id, nodes=nodes, failovers=record.failovers + failover)
        case PartDone(part=part, result=result):
            record = replace(record, parts=MappingProxyType({**record.parts, part: result}))
        case AgentSucceeded(output=output, at=at, usage=usage, detail=detail):
            record = replace(record, status=AgentStatus.COMPLETED, output=freeze(output), finished_at=at,
                             usage=record.usage + usage, error=None, detail=freeze(detail))
        case AgentFailed(error=error, at=at, retryable=retryable):
            spec = state.spec.agent(event.agent)
            again = not event.permanent and record.attempts < max_attempts(spec, retryable)
            # A composite agent that failed for good spent what its finished parts did (the samples
            # a budget let run): its usage says so, as the run's total does.
            spent = record.usage if again else record.usage + sum((p.usage for p in record.parts.values()), Usage())
            record = replace(record, status=AgentStatus.PENDING if again else AgentStatus.FAILED,
                             error=error, finished_at=None if again else at, usage=spent)
        case AgentSkipped(reason=reason, at=at):
            record = replace(record, status=AgentStatus.SKIPPED, error=reason, finished_at=at)
        case _:
            assert_never(event)
    agents = dict(state.agents)
    agents[event.agent] = record
    return replace(state, agents=MappingProxyType(agents))


def max_attempts(spec: AgentSpec, retryable: bool) -> int:
    """How many attempts an agent gets: `retries + 1` if set, else 1 (+ infra retries)."""
    if spec.retries is not None:
        return spec.retries + 1
    return 1 + (DEFAULT_INFRA_RETRIES if retryable else 0)


def plan(state: RunState) -> tuple[Step, ...]:
    """The steps that can be taken now: each pending agent whose dependencies are all terminal."""
    steps: list[Step] = []
    for spec in state.spec.agents:
        record = state.agents[spec.name]
        if record.status is not AgentStatus.PENDING:
            continue
        deps = [state.agents[d] for d in spec.depends_on]
        if not all(d.status.terminal for d in deps):
            continue
        steps.append(_next_step(state, spec, record))
    return tuple(steps)


def _next_step(state: RunState, spec: AgentSpec, record: AgentRecord) -> Step:
    deps = {d: state.agents[d] for d in spec.depends_on}
    if deps and all(r.status is AgentStatus.SKIPPED for r in deps.values()):
        return SkipAgent(spec.name, "all of its dependencies were skipped")
    if spec.when is not None:
        guard = deps[spec.when.ref.agent]
        if guard.status is not AgentStatus.COMPLETED:
            return SkipAgent(spec.name, f"condition {spec.when} cannot be checked: "
                                        f"'{spec.when.ref.agent}' {guard.status.value}")
        if not holds(spec.when, {spec.when.ref.agent: guard.output}):
            return SkipAgent(spec.name, f"condition {spec.when} is false")
    dependencies = tuple(
        (name, DependencyResult(r.status.value, r.output, r.error)) for name, r in deps.items()
    )
    agent_input: object = state.input
    scope = spec.input_scope
    if spec.input_key is not None:
        selected = _select_input_key(spec.input_key, deps, state.input)
        if selected is None:
            where = ", ".join(deps) or "the run input"
            return FailAgent(spec.name, f"input_key '{spec.input_key}' not found in the output of {where}")
        agent_input = selected
        scope = "input" if spec.input_scope == "full" else spec.input_scope
    items: tuple[object, ...] | None = None
    if spec.fan_out:
        source = agent_input if spec.input_key is not None else _single_upstream(deps)
        source = structured(source)
        if not isinstance(source, (list, tuple)):
            return FailAgent(spec.name, f"fan_out needs a list to expand, got {_kind(source)}; "
                                        "set input_key to the name of the list's field")
        items = tuple(source)
    return StartAgent(AgentInput(spec.name, agent_input, dependencies, scope, record.attempts + 1, items,
                                 record.parts))


def _kind(value: object) -> str:
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, str):
        return "text"
    if value is None:
        return "nothing"
    return type(value).__name__


def _select_input_key(key: str, deps: Mapping[str, AgentRecord], run_input: object) -> object:
    for record in deps.values():
        if record.status is AgentStatus.COMPLETED:
            value = lookup(record.output, (key,))
            if value is not None:
                return value
    return lookup(run_input, (key,))


def _single_upstream(deps: Mapping[str, AgentRecord]) -> object:
    completed = [r.output for r in deps.values() if r.status is AgentStatus.COMPLETED]
    return completed[0] if len(completed) == 1 else tuple(completed)


def is_finished(state: RunState) -> bool:
    return all(r.status.terminal for r in state.agents.values())


def run_status(state: RunState, stopped_by: str | None = None) -> str:
    """`completed` (nothing failed), `completed_with_errors`, or `failed` (no deliverable).

    `stopped_by`: why the run was stopped early (a budget ran out). Such a run did what it was
    allowed to, so it ends `completed_with_errors` even without a deliverable.
    """
    records = state.agents.values()
    if not any(r.status is AgentStatus.FAILED for r in records):
        return "completed"
    if stopped_by is not None:
        return "completed_with_errors"
    sinks = [state.agents[s] for s in state.spec.sinks()]
    if any(r.status is AgentStatus.COMPLETED for r in sinks):
        return "completed_with_errors"
    return "failed"


def deliverable(state: RunState) -> object:
    """The output of the sink agent, or a mapping name -> output when several sinks completed."""
    done = {s: state.agents[s].output for s in state.spec.sinks()
            if state.agents[s].status is AgentStatus.COMPLETED}
    if len(done) == 1:
        return next(iter(done.values()))
    return MappingProxyType(done) if done else None


def outputs(state: RunState) -> dict[str, object]:
    """Outputs of every completed agent, by name."""
    return {n: r.output for n, r in state.agents.items() if r.status is AgentStatus.COMPLETED}


def resumable(state: RunState) -> RunState:
    """The state a resume continues from: completed results kept, everything else pending again
    (with the parts it had finished, which it will not redo)."""
    agents = {
        name: (r if r.status is AgentStatus.COMPLETED else AgentRecord(parts=r.parts))
        for name, r in state.agents.items()
    }
    return replace(state, agents=MappingProxyType(agents))
