"""The ensemble model: a validated, frozen description of a DAG of agents.

Instances are only built by `orc.scheduler.loader`, which checks the whole file first; code
that receives an `EnsembleSpec` may rely on every invariant documented here (names unique,
dependencies exist, no cycles, exactly one task per agent).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import NewType, Union

_EMPTY: Mapping[str, object] = MappingProxyType({})

AgentName = NewType("AgentName", str)


@dataclass(frozen=True)
class FieldRef:
    """A `${agent.field.sub}` reference to (part of) an upstream agent's output."""

    agent: AgentName
    path: tuple[str, ...] = ()

    def __str__(self) -> str:
        return "${" + ".".join((self.agent, *self.path)) + "}"


@dataclass(frozen=True)
class Condition:
    """A guard: the referenced value is truthy, equals / differs from a literal, or compares with a
    number (`<`, `<=`, `>`, `>=`: false, never an error, when the value is not a number)."""

    ref: FieldRef
    op: str = "truthy"  # "truthy" | "==" | "!=" | "<" | "<=" | ">" | ">="
    literal: object = None

    def __str__(self) -> str:
        if self.op == "truthy":
            return str(self.ref)
        return f"{self.ref} {self.op} {self.literal!r}"


@dataclass(frozen=True)
class Placement:
    """orc's placement constraints; `local_only` keeps the agent on the coordinator's device."""

    local_only: bool = False
    require_tags: frozenset[str] = frozenset()
    prefer_tags: frozenset[str] = frozenset()


@dataclass(frozen=True)
class Budget:
    """A cap on a whole run or on one agent: tokens (prompt + completion) and wall seconds."""

    max_tokens: int | None = None
    max_seconds: float | None = None


@dataclass(frozen=True)
class Judge:
    """The model that picks the winner of a `vote: {by: judge}` among its samples."""

    model: str | None = None  # None: the voting agent's own model
    system_prompt: str | None = None
    max_tokens: int | None = None


@dataclass(frozen=True)
class Vote:
    """Sample the agent's generation `samples` times and keep one answer.

    `by`: "majority" (the most frequent ballot), "judge" (a model picks) or "script" (a script
    picks, JSON in, JSON out). A ballot is the first group of `extract` matched in a sample, else
    the whole sample normalized (stripped, lowercased, inner whitespace collapsed); a sample
    `extract` does not match casts no ballot.
    """

    samples: int
    by: str = "majority"  # "majority" | "judge" | "script"
    extract: str | None = None  # a regular expression, checked by the loader
    temperature: float | None = None  # None: the agent's
    models: tuple[str, ...] = ()  # samples spread over these, round-robin; (): the agent's model
    judge: Judge | None = None  # by: judge
    script: str | None = None  # by: script


@dataclass(frozen=True)
class LlmTask:
    """Generate text with a model, named directly or through a model profile."""

    model_profile: str | None = None
    model: str | None = None
    provider: str | None = None
    system_prompt: str | None = None
    temperature: float | None = None
    max_tokens: int | None = None
    options: Mapping[str, object] = field(default_factory=lambda: _EMPTY)  # read-only (see orc.scheduler.values.freeze)
    vote: Vote | None = None


# The names an `accept_if` may use, as `${name}` (and `${output.field}` into a structured output).
CASCADE_FIELDS = ("output", "agreement", "ballot", "samples", "model", "prompt_tokens", "completion_tokens")


@dataclass(frozen=True)
class CascadeLevel:
    """One level of a cascade: the agent's LLM keys with the level's own laid over them."""

    task: LlmTask
    accept_if: Condition | None = None  # over CASCADE_FIELDS; None: accepted as it is (the last level)


@dataclass(frozen=True)
class CascadeTask:
    """Try the levels in order; the first one accepted gives the agent's output."""

    levels: tuple[CascadeLevel, ...]


@dataclass(frozen=True)
class ScriptTask:
    """Run a script with JSON on stdin and JSON on stdout."""

    script: str
    parameters: Mapping[str, object] = field(default_factory=lambda: _EMPTY)  # read-only (see orc.scheduler.values.freeze)


@dataclass(frozen=True)
class EnsembleTask:
    """Run another ensemble, by name or path, with this agent's input as its input."""

    ensemble: str


@dataclass(frozen=True)
class DispatchTask:
    """Run the ensemble whose name an upstream agent produced (`dispatch: ${dep.field}`)."""

    target: FieldRef


@dataclass(frozen=True)
class LoopTask:
    """Run the `body` ensemble until `until` holds over its results, at most `max_iterations`."""

    body: str
    until: Condition | None
    max_iterations: int
    carry: FieldRef | None = None


AgentTask = Union[LlmTask, ScriptTask, EnsembleTask, DispatchTask, LoopTask, CascadeTask]


@dataclass(frozen=True)
class AgentSpec:
    """One agent of an ensemble, with exactly one task."""

    name: AgentName
    task: AgentTask
    depends_on: tuple[AgentName, ...] = ()
    fan_out: bool = False
    input_key: str | None = None
    input_scope: str = "full"  # "full" | "dependencies" | "input"
    when: Condition | None = None
    timeout_seconds: float | None = None  # an attempt's own time: for an LLM agent, from when its generation starts
    queue_timeout_seconds: float | None = None  # LLM agents: how long a generation may wait to start
    retries: int | None = None  # None: the default policy (see scheduler.run)
    placement: Placement = Placement()
    output_format: str | None = None  # "text" | "json"
    budget: Budget | None = None  # this agent's own: every sample, level and retry of it counts


@dataclass(frozen=True)
class EnsembleSpec:
    """A whole ensemble: agents in file order plus where it came from."""

    name: str
    agents: tuple[AgentSpec, ...]
    description: str = ""
    default_task: str | None = None
    source: Path | None = None
    warnings: tuple[str, ...] = ()
    children: tuple[tuple[str, "EnsembleSpec"], ...] = field(default=(), compare=False)
    budget: Budget | None = None  # the whole run's
    # The user allows this file's scripts to run on other machines (a Ray cluster's workers);
    # without it they run where the run is coordinated.
    ship_scripts: bool = False

    def agent(self, name: str) -> AgentSpec:
        for spec in self.agents:
            if spec.name == name:
                return spec
        raise KeyError(name)

    @property
    def names(self) -> tuple[AgentName, ...]:
        return tuple(a.name for a in self.agents)

    def child(self, reference: str) -> "EnsembleSpec | None":
        """The nested ensemble loaded for `ensemble:` / `loop.body` value `reference`."""
        for ref, spec in self.children:
            if ref == reference:
                return spec
        return None

    def sinks(self) -> tuple[AgentName, ...]:
        """Agents nothing depends on: their outputs form the deliverable."""
        depended = {d for a in self.agents for d in a.depends_on}
        return tuple(a.name for a in self.agents if a.name not in depended)
