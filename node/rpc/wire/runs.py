"""A run's progress on the control socket: `RunEvent` and the records, plans and values it holds."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType

from typing_extensions import assert_never

from orc.node.protocol.events import (
    AgentBegan,
    AgentEnded,
    AgentPlacedOn,
    AgentPlan,
    AgentRetrying,
    AgentWorking,
    BudgetReport,
    RunBegan,
    RunFinished,
    RunPlanned,
    RunProgress,
    RunResult,
    TokenStreamed,
)
from orc.node.rpc.wire import checks as check
from orc.node.rpc.wire.checks import (
    MAX_AGENTS,
    MAX_NODES_PER_AGENT,
    MAX_PATH,
    MAX_PAYLOAD_BYTES,
    MAX_PEERS_LISTED,
    MAX_REASON,
    MAX_RUN_EVENT_BYTES,
    capped,
    fail,
    one_of,
    optional,
    required,
)
from orc.node.rpc.wire.executions import usage_from_wire, usage_to_wire
from orc.node.rpc.wire.values import value_from_wire, value_to_wire
from orc.proto.v1 import control_pb2 as cpb
from orc.scheduler.placement import Estimate, Exclusion, Rejection
from orc.scheduler.run import AgentRecord, AgentStatus, RunId

_EVENT = cpb.RunEvent
_MAX_COUNT = 1 << 20  # attempts, failovers, fan-out width: far beyond any real run, far below overflow


def _set_optional(message: object, **fields: object) -> None:
    """Set each proto3 `optional` field whose value is not None (None stays absent)."""
    for name, value in fields.items():
        if value is not None:
            setattr(message, name, value)


# ---- records -----------------------------------------------------------------------------------

def _record_to_wire(record: AgentRecord) -> cpb.AgentRecord:
    message = cpb.AgentRecord(status=record.status.value, attempts=record.attempts, usage=usage_to_wire(record.usage),
                              nodes=list(record.nodes), failovers=record.failovers)
    if record.output is not None:
        message.output.CopyFrom(value_to_wire(record.output))
    if record.detail:
        message.detail.CopyFrom(value_to_wire(record.detail))
    _set_optional(message, error=record.error, node_id=record.node_id, model=record.model,
                  started_at=record.started_at, finished_at=record.finished_at)
    return message


def _record_from_wire(message: cpb.AgentRecord, agent: str) -> AgentRecord:
    return AgentRecord(
        status=check.member(AgentStatus, message.status, f"status of {agent}"),
        attempts=check.integer(message.attempts, "attempts", maximum=_MAX_COUNT),
        output=optional(message, "output", lambda v: value_from_wire(v, f"output of {agent}")),
        error=optional(message, "error", lambda v: check.text(v, "agent error", MAX_PAYLOAD_BYTES)),
        node_id=optional(message, "node_id", lambda v: check.label(v, "agent node_id")),
        model=optional(message, "model", lambda v: check.label(v, "agent model")),
        started_at=optional(message, "started_at", check.timestamp("started_at")),
        finished_at=optional(message, "finished_at", check.timestamp("finished_at")),
        usage=usage_from_wire(message.usage),
        nodes=tuple(check.label(n, "agent node") for n in capped(message.nodes, "agent nodes", MAX_NODES_PER_AGENT)),
        failovers=check.integer(message.failovers, "failovers", maximum=_MAX_COUNT),
        detail=_detail_from_wire(message, agent),
    )


def _detail_from_wire(message: cpb.AgentRecord, agent: str) -> Mapping[str, object]:
    """A record's detail: a map, or nothing (absent)."""
    detail = optional(message, "detail", lambda v: value_from_wire(v, f"detail of {agent}"))
    if detail is None:
        return MappingProxyType({})
    if not isinstance(detail, Mapping):
        fail(f"detail of {agent}", "not a map")
    return detail


# ---- plans ---------------------------------------------------------------------------------------

def _plan_to_wire(plan: AgentPlan) -> cpb.AgentPlan:
    message = cpb.AgentPlan(
        agent=plan.agent, kind=plan.kind,
        candidates=[cpb.Candidate(node_id=c.node_id, name=c.name, start_s=c.start_s, load_s=c.load_s,
                                  prefill_s=c.prefill_s, decode_s=c.decode_s, network_s=c.network_s, warm=c.warm,
                                  preferred=c.preferred, runtime=c.runtime, sha256=c.sha256)
                    for c in plan.candidates],
        rejected=[cpb.Rejection(node_id=r.node_id, name=r.name, reason=r.reason.value, detail=r.detail)
                  for r in plan.rejected])
    _set_optional(message, model=plan.model, note=plan.note)
    return message


def _candidate_from_wire(message: cpb.Candidate) -> Estimate:
    duration = check.duration("estimate")
    return Estimate(
        node_id=check.label(message.node_id, "candidate node"), name=check.label(message.name, "candidate name"),
        start_s=check.timestamp("estimate")(message.start_s), load_s=duration(message.load_s),
        prefill_s=duration(message.prefill_s), decode_s=duration(message.decode_s),
        network_s=duration(message.network_s), warm=message.warm, preferred=message.preferred,
        runtime=check.label(message.runtime, "runtime"),
        sha256=check.sha256(message.sha256, "candidate sha256") if message.sha256 else "")


def _rejection_from_wire(message: cpb.Rejection) -> Rejection:
    return Rejection(check.label(message.node_id, "rejected node"), check.label(message.name, "rejected name"),
                     check.member(Exclusion, message.reason, "rejection reason"),
                     check.text(message.detail, "rejection detail", MAX_REASON))


def _plan_from_wire(message: cpb.AgentPlan) -> AgentPlan:
    return AgentPlan(
        agent=check.agent_name(message.agent),
        kind=check.label(message.kind, "agent kind", 32),
        model=optional(message, "model", lambda v: check.label(v, "model")),
        candidates=tuple(_candidate_from_wire(c)
                         for c in capped(message.candidates, "candidates", MAX_PEERS_LISTED)),
        rejected=tuple(_rejection_from_wire(r) for r in capped(message.rejected, "rejected", MAX_PEERS_LISTED)),
        note=optional(message, "note", lambda v: check.text(v, "plan note", MAX_REASON)),
    )


# ---- events ------------------------------------------------------------------------------------

def run_event_to_wire(event: RunProgress) -> cpb.RunEvent:
    match event:
        case RunBegan():
            began = _EVENT.RunBegan(run_id=event.run_id, ensemble=event.ensemble, agents=list(event.agents),
                                    at=event.at, resumed=event.resumed)
            _set_optional(began, journal=None if event.journal is None else str(event.journal))
            return cpb.RunEvent(run_began=began)
        case RunPlanned():
            return cpb.RunEvent(run_planned=_EVENT.RunPlanned(
                ensemble=event.ensemble, coordinator=event.coordinator, at=event.at,
                agents=[_plan_to_wire(p) for p in event.agents]))
        case AgentBegan():
            agent_began = _EVENT.AgentBegan(agent=event.agent, attempt=event.attempt)
            _set_optional(agent_began, node_id=event.node_id, model=event.model, instances=event.instances)
            return cpb.RunEvent(agent_began=agent_began)
        case AgentPlacedOn():
            placed = _EVENT.AgentPlacedOn(agent=event.agent, node_id=event.node_id, node_name=event.node_name)
            _set_optional(placed, replaces=event.replaces)
            return cpb.RunEvent(agent_placed_on=placed)
        case AgentWorking():
            return cpb.RunEvent(agent_working=_EVENT.AgentWorking(agent=event.agent, node_id=event.node_id,
                                                                  waited_s=event.waited_s))
        case TokenStreamed():
            return cpb.RunEvent(token_streamed=_EVENT.TokenStreamed(agent=event.agent, text=event.text))
        case AgentEnded():
            return cpb.RunEvent(agent_ended=_EVENT.AgentEnded(agent=event.agent, record=_record_to_wire(event.record),
                                                              reused=event.reused))
        case AgentRetrying():
            return cpb.RunEvent(agent_retrying=_EVENT.AgentRetrying(agent=event.agent, error=event.error,
                                                                    attempt=event.attempt))
        case RunFinished(result=result):
            finished = _EVENT.RunFinished(
                run_id=result.run_id, ensemble=result.ensemble, status=result.status,
                deliverable=value_to_wire(result.deliverable),
                results=[_EVENT.AgentResult(agent=name, record=_record_to_wire(record))
                         for name, record in result.results],
                started_at=result.started_at, finished_at=result.finished_at,
                agent_budgets=[_EVENT.AgentBudget(agent=name, budget=_budget_to_wire(report))
                               for name, report in result.agent_budgets])
            if result.usage is not None:
                finished.usage.CopyFrom(usage_to_wire(result.usage))
            if result.budget is not None:
                finished.budget.CopyFrom(_budget_to_wire(result.budget))
            _set_optional(finished, reason=result.reason)
            return cpb.RunEvent(run_finished=finished)
        case _:
            assert_never(event)


def run_event_from_wire(message: cpb.RunEvent) -> RunProgress:
    """The event `run_event_to_wire` made; raise WireError for anything else."""
    size = message.ByteSize()
    if size > MAX_RUN_EVENT_BYTES:
        fail("run event", f"{size} bytes, more than {MAX_RUN_EVENT_BYTES}")
    at = check.timestamp("at")
    match one_of(message, "event", "run event"):
        case "run_began":
            began = message.run_began
            return RunBegan(
                run_id=RunId(check.label(began.run_id, "run_id")),
                ensemble=check.text(began.ensemble, "ensemble", MAX_PATH, empty=False),
                agents=tuple(check.agent_name(a) for a in capped(began.agents, "agents", MAX_AGENTS)),
                journal=optional(began, "journal",
                                 lambda v: Path(check.text(v, "journal path", MAX_PATH, empty=False))),
                at=at(began.at),
                resumed=began.resumed,
            )
        case "run_planned":
            planned = message.run_planned
            return RunPlanned(check.text(planned.ensemble, "ensemble", MAX_PATH, empty=False),
                              check.label(planned.coordinator, "coordinator"), at(planned.at),
                              tuple(_plan_from_wire(p) for p in capped(planned.agents, "plans", MAX_AGENTS)))
        case "agent_began":
            agent_began = message.agent_began
            return AgentBegan(
                agent=check.agent_name(agent_began.agent),
                node_id=optional(agent_began, "node_id", lambda v: check.label(v, "node_id")),
                model=optional(agent_began, "model", lambda v: check.label(v, "model")),
                attempt=check.integer(agent_began.attempt, "attempt", maximum=_MAX_COUNT),
                instances=optional(agent_began, "instances",
                                   lambda v: check.integer(v, "instances", maximum=_MAX_COUNT)),
            )
        case "agent_placed_on":
            placed = message.agent_placed_on
            return AgentPlacedOn(check.agent_name(placed.agent), check.label(placed.node_id, "node_id"),
                                 check.label(placed.node_name, "node name"),
                                 optional(placed, "replaces", lambda v: check.text(v, "failover reason", MAX_REASON)))
        case "agent_working":
            working = message.agent_working
            return AgentWorking(check.agent_name(working.agent), check.label(working.node_id, "node_id"),
                                check.duration("waited_s")(working.waited_s))
        case "token_streamed":
            token = message.token_streamed
            return TokenStreamed(check.agent_name(token.agent), check.text(token.text, "token text", MAX_PAYLOAD_BYTES))
        case "agent_ended":
            ended = message.agent_ended
            agent = check.agent_name(ended.agent)
            return AgentEnded(agent, _record_from_wire(required(ended, "record", f"end of {agent}"), agent),
                              ended.reused)
        case "agent_retrying":
            retrying = message.agent_retrying
            return AgentRetrying(check.agent_name(retrying.agent), check.text(retrying.error, "retry error", MAX_REASON),
                                 check.integer(retrying.attempt, "attempt", maximum=_MAX_COUNT))
        case "run_finished":
            return RunFinished(_result_from_wire(message.run_finished))
        case unknown:
            fail("run event", f"unknown event {unknown!r}")


def _result_from_wire(message: cpb.RunEvent.RunFinished) -> RunResult:
    results = []
    for entry in capped(message.results, "run results", MAX_AGENTS):
        name = check.agent_name(entry.agent)
        results.append((name, _record_from_wire(required(entry, "record", f"result of {name}"), name)))
    return RunResult(
        run_id=RunId(check.label(message.run_id, "run_id")),
        ensemble=check.text(message.ensemble, "ensemble", MAX_PATH, empty=False),
        status=check.label(message.status, "run status", 32),
        deliverable=value_from_wire(required(message, "deliverable", "run result"), "deliverable"),
        results=tuple(results),
        started_at=check.timestamp("started_at")(message.started_at),
        finished_at=check.timestamp("finished_at")(message.finished_at),
        usage=optional(message, "usage", usage_from_wire),
        budget=optional(message, "budget", _budget_from_wire),
        agent_budgets=tuple((check.agent_name(entry.agent),
                             _budget_from_wire(required(entry, "budget", f"budget of {entry.agent}")))
                            for entry in capped(message.agent_budgets, "agent budgets", MAX_AGENTS)),
        reason=optional(message, "reason", lambda v: check.text(v, "run stop reason", MAX_REASON)),
    )


def _budget_to_wire(report: BudgetReport) -> cpb.RunEvent.Budget:
    message = _EVENT.Budget(used_tokens=report.used_tokens, used_seconds=report.used_seconds)
    _set_optional(message, max_tokens=report.max_tokens, max_seconds=report.max_seconds, exhausted=report.exhausted)
    return message


def _budget_from_wire(message: cpb.RunEvent.Budget) -> BudgetReport:
    return BudgetReport(
        max_tokens=optional(message, "max_tokens", lambda v: check.integer(v, "budget max_tokens")),
        max_seconds=optional(message, "max_seconds", check.duration("budget max_seconds")),
        used_tokens=check.integer(message.used_tokens, "budget used_tokens"),
        used_seconds=check.duration("budget used_seconds")(message.used_seconds),
        exhausted=optional(message, "exhausted", lambda v: check.text(v, "budget exhausted", MAX_REASON)),
    )
