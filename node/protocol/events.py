"""What a run reports while it happens: frozen events, consumed by the CLI or any embedder."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Union

from orc.scheduler.placement import Estimate, Rejection
from orc.scheduler.run import AgentRecord, RunId, Usage
from orc.scheduler.values import thaw


@dataclass(frozen=True)
class RunBegan:
    run_id: RunId
    ensemble: str
    agents: tuple[str, ...]
    journal: Path | None
    at: float  # when this run, or this resume of it, began
    resumed: bool = False


@dataclass(frozen=True)
class AgentBegan:
    agent: str
    node_id: str | None
    model: str | None
    attempt: int
    instances: int | None = None  # fan-out width


@dataclass(frozen=True)
class AgentPlacedOn:
    """A generation of `agent` was bound to a node; `replaces` says why an earlier node was dropped."""

    agent: str  # "name[i]" for a fan-out instance
    node_id: str
    node_name: str
    replaces: str | None = None  # "<node name>: <what failed>" on a failover


@dataclass(frozen=True)
class AgentWorking:
    """A generation of `agent` left its node's queue and started generating on `node_id` after
    waiting `waited_s` seconds for the model; the agent's own timeout counts from here."""

    agent: str  # "name[i]" for a fan-out instance
    node_id: str
    waited_s: float


@dataclass(frozen=True)
class AgentPlan:
    """Where one agent would run, and why (`orc plan`, `orc run --explain`)."""

    agent: str
    kind: str  # "llm", "script", "ensemble", "loop", "dispatch"
    model: str | None
    candidates: tuple[Estimate, ...] = ()  # best first; the first is the choice
    rejected: tuple[Rejection, ...] = ()
    note: str | None = None  # for agents placement does not choose: where they run and why


@dataclass(frozen=True)
class RunPlanned:
    """The placement forecast for a whole ensemble, as of `at` (estimates are relative to it)."""

    ensemble: str
    coordinator: str
    at: float
    agents: tuple[AgentPlan, ...]


@dataclass(frozen=True)
class TokenStreamed:
    agent: str  # "parent/child" for agents of nested ensembles, "name[i]" for fan-out instances
    text: str


@dataclass(frozen=True)
class AgentEnded:
    agent: str
    record: AgentRecord
    reused: bool = False  # taken from the journal of an earlier attempt of this run (resume)


@dataclass(frozen=True)
class AgentRetrying:
    agent: str
    error: str
    attempt: int


@dataclass(frozen=True)
class BudgetReport:
    """A budget (the run's or an agent's) and what it used, as `--json` and `orc runs show` show it."""

    max_tokens: int | None
    max_seconds: float | None
    used_tokens: int
    used_seconds: float
    exhausted: str | None  # the message naming what ran out, or None

    def to_json(self) -> dict:
        return {"max_tokens": self.max_tokens, "max_seconds": self.max_seconds, "used_tokens": self.used_tokens,
                "used_seconds": round(self.used_seconds, 3), "exhausted": self.exhausted}


def usage_json(usage: Usage) -> dict:
    """A run's total `usage` in `--json`."""
    return {"prompt_tokens": usage.prompt_tokens, "completion_tokens": usage.completion_tokens,
            "total_tokens": usage.prompt_tokens + usage.completion_tokens}


@dataclass(frozen=True)
class RunResult:
    run_id: RunId
    ensemble: str
    status: str
    deliverable: object
    results: tuple[tuple[str, AgentRecord], ...]
    started_at: float
    finished_at: float
    usage: Usage | None = None  # every token the run spent (failed attempts, earlier sessions); None: the agents' sum
    budget: BudgetReport | None = None  # the run's, when the ensemble has one
    agent_budgets: tuple[tuple[str, BudgetReport], ...] = ()  # agents with a budget of their own
    reason: str | None = None  # what stopped the run early (a budget), if anything did

    @property
    def total_usage(self) -> Usage:
        """Tokens the run spent: as metered, else the sum of its agents' usage."""
        if self.usage is not None:
            return self.usage
        total = Usage()
        for _, record in self.results:
            total = total + record.usage
        return total

    @property
    def exit_code(self) -> int:
        """0 every agent succeeded (skipped ones included), 1 some agent failed."""
        return 0 if self.status == "completed" else 1

    def to_json(self) -> dict:
        """The `orc run --json` object (docs/cli.md)."""
        budgets = dict(self.agent_budgets)
        return {
            "run_id": self.run_id,
            "ensemble": self.ensemble,
            "status": self.status,
            "deliverable": thaw(self.deliverable),
            "results": {
                name: {
                    "status": r.status.value,
                    "output": thaw(r.output),
                    "node_id": r.node_id,
                    "nodes": list(r.nodes),
                    "model": r.model,
                    "attempts": r.tries,
                    "started_at": r.started_at,
                    "finished_at": r.finished_at,
                    "usage": {"prompt_tokens": r.usage.prompt_tokens,
                              "completion_tokens": r.usage.completion_tokens},
                    "error": r.error,
                    **detail_json(r),
                    **({"budget": budgets[name].to_json()} if name in budgets else {}),
                }
                for name, r in self.results
            },
            "usage": usage_json(self.total_usage),
            **({"budget": self.budget.to_json()} if self.budget is not None else {}),
            "timing": {
                "started_at": self.started_at,
                "finished_at": self.finished_at,
                "duration_s": round(self.finished_at - self.started_at, 4),
            },
        }


def detail_json(record: AgentRecord) -> dict:
    """What a result says beyond its output, as keys of its JSON: `vote`, `cascade` (only those it has)."""
    return {str(key): thaw(value) for key, value in record.detail.items()}


@dataclass(frozen=True)
class RunFinished:
    result: RunResult


RunProgress = Union[RunBegan, RunPlanned, AgentBegan, AgentPlacedOn, AgentWorking, TokenStreamed, AgentEnded,
                    AgentRetrying, RunFinished]
