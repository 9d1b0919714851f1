"""Human and JSON views of ensembles and journaled runs."""

from __future__ import annotations

from collections.abc import Mapping

from typing_extensions import assert_never

from orc.node.cli.phrasing import cut, date, duration
from orc.node.cli.render import render_deliverable
from orc.node.coordinator.budget import agent_budget_report, run_budget_report, spent_before
from orc.node.protocol.events import BudgetReport, detail_json, usage_json
from orc.scheduler.ensemble import (
    AgentSpec,
    CascadeTask,
    DispatchTask,
    EnsembleSpec,
    EnsembleTask,
    LlmTask,
    LoopTask,
    ScriptTask,
)
from orc.scheduler.journal import JournalContents
from orc.scheduler.primitives_view import agent_json, budget_json, budget_text, cascade_text, level_text, vote_text
from orc.scheduler.run import AgentRecord, AgentStatus, RunState, deliverable, run_status
from orc.scheduler.values import thaw


def task_summary(agent: AgentSpec) -> str:
    match agent.task:
        case LlmTask(model_profile=profile, model=model, vote=vote):
            text = f"llm {('model ' + model) if model else ('profile ' + (profile or 'default'))}"
            return text + (f", {vote_text(vote, agent.task)}" if vote else "")
        case ScriptTask(script=script):
            return f"script {script}"
        case EnsembleTask(ensemble=ref):
            return f"ensemble {ref}"
        case DispatchTask(target=target):
            return f"dispatch {target}"
        case LoopTask(body=body, max_iterations=n, until=until):
            return f"loop {body} (at most {n}" + (f", until {until})" if until else ")")
        case CascadeTask():
            return cascade_text(agent.task)
        case _:
            assert_never(agent.task)


def describe_ensemble(spec: EnsembleSpec) -> str:
    lines = [f"{spec.name}  ({spec.source})"]
    if spec.description.strip():
        lines.append("  " + spec.description.strip().replace("\n", "\n  "))
    if spec.default_task:
        lines.append(f"  default task: {cut(spec.default_task.strip(), 200)}")
    if spec.budget:
        lines.append(f"  {budget_text(spec.budget)} for the whole run")
    lines.append("agents:")
    for agent in spec.agents:
        lines.append(f"  - {agent.name}: {task_summary(agent)}")
        if isinstance(agent.task, CascadeTask):
            lines += [f"      {level_text(i, level.task, level.accept_if)}" for i, level in enumerate(agent.task.levels)]
        details = []
        if agent.depends_on:
            details.append("after " + ", ".join(agent.depends_on))
        if agent.when:
            details.append(f"when {agent.when}")
        if agent.fan_out:
            details.append("fan-out")
        if agent.input_key:
            details.append(f"input_key {agent.input_key}")
        if agent.input_scope != "full":
            details.append(f"input_scope {agent.input_scope}")
        if agent.timeout_seconds:
            details.append(f"timeout {agent.timeout_seconds:g}s")
        if agent.retries is not None:
            details.append(f"retries {agent.retries}")
        if agent.placement.local_only:
            details.append("local only")
        if agent.budget:
            details.append(budget_text(agent.budget))
        if details:
            lines.append("      " + "; ".join(details))
    for warning in spec.warnings:
        lines.append(f"warning: {warning}")
    return "\n".join(lines)


def ensemble_json(spec: EnsembleSpec) -> dict:
    return {
        "name": spec.name,
        "description": spec.description,
        "default_task": spec.default_task,
        "source": str(spec.source) if spec.source else None,
        "agents": [
            {
                "name": a.name,
                "task": task_summary(a),
                "depends_on": list(a.depends_on),
                "fan_out": a.fan_out,
                "input_key": a.input_key,
                "input_scope": a.input_scope,
                "when": str(a.when) if a.when else None,
                "timeout_seconds": a.timeout_seconds,
                "retries": a.retries,
                "placement": {"local_only": a.placement.local_only,
                              "require_tags": sorted(a.placement.require_tags),
                              "prefer_tags": sorted(a.placement.prefer_tags)},
                "parameters": thaw(a.task.parameters) if isinstance(a.task, ScriptTask) else None,
                **agent_json(a),
            }
            for a in spec.agents
        ],
        "budget": budget_json(spec.budget),
        "warnings": list(spec.warnings),
    }


def _flat(text: str) -> str:
    """A field shown on one line. Controls stay: `orc runs show` makes its whole output safe when
    it goes to a terminal, and leaves it as generated for a pipe."""
    return text.replace("\r", " ").replace("\n", " ")


def _status(record: AgentRecord, interrupted: bool) -> str:
    """An agent's status; in an interrupted run nothing is pending or running any more."""
    if interrupted and record.status in (AgentStatus.PENDING, AgentStatus.RUNNING):
        return "interrupted"
    return record.status.value


def _budget_text(report: BudgetReport) -> str:
    caps = [f"{report.used_tokens}/{report.max_tokens} tok" if report.max_tokens is not None else "",
            f"{report.used_seconds:.1f}/{report.max_seconds:g} s" if report.max_seconds is not None else ""]
    return "budget " + ", ".join(c for c in caps if c) + (" (exhausted)" if report.exhausted else "")


def describe_run(contents: JournalContents, state: RunState, *, interrupted: bool = False) -> str:
    """`orc runs show`. `interrupted`: the journal has no end and nothing runs the run any more."""
    header = contents.header
    end = contents.finished
    if end is not None:
        status = end.status
    elif interrupted:
        status = f"interrupted (resume with 'orc runs resume {header.run_id}')"
    else:
        status = "running"
    lines = [f"run {header.run_id}  {header.ensemble}  {status}",
             f"  started {date(header.started_at)}" + (f", finished {date(end.at)} "
                                                       f"({duration(end.at - header.started_at)})" if end else ""),
             f"  input: {cut(_flat(render_deliverable(header.input).strip()), 300)}"]
    usage = spent_before(contents)
    budget = run_budget_report(contents, state)
    lines.append(f"  usage: {usage.prompt_tokens}+{usage.completion_tokens} tok"
                 + (f" · {_budget_text(budget)}" if budget else ""))
    if end is not None and end.reason:
        lines.append(f"  stopped: {_flat(end.reason)}")
    lines.append("agents:")
    for name, record in state.agents.items():
        took = duration(record.finished_at - record.started_at) if record.finished_at and record.started_at else ""
        usage = f"{record.usage.prompt_tokens}+{record.usage.completion_tokens} tok" if record.usage.completion_tokens else ""
        spec_budget = state.spec.agent(name).budget if name in state.spec.names else None
        mine = _budget_text(agent_budget_report(spec_budget, record)) if spec_budget else ""
        meta = " · ".join(x for x in (_flat(record.node_id or ""), _flat(record.model or ""), took, usage, mine,
                                       f"{record.tries} attempts" if record.tries > 1 else "") if x)
        lines.append(f"  - {name}: {_status(record, interrupted)}  {meta}".rstrip())
        if record.error:
            lines.append(f"      error: {_flat(record.error)}")
        lines.extend(f"      {line}" for line in detail_lines(record))
        if record.output is not None:
            text = render_deliverable(record.output).strip()
            lines.append("      " + text[:600].replace("\n", "\n      ") + (" …" if len(text) > 600 else ""))
    return "\n".join(lines)


def detail_lines(record: AgentRecord) -> list[str]:
    """How a vote or a cascade decided, one line each: "vote: yes 3, no 1, 1 abstained;
    agreement 0.6 (majority, tie broken by the first ballot: yes, no)"."""
    lines = []
    cascade = record.detail.get("cascade")
    if isinstance(cascade, Mapping):
        levels = cascade.get("levels") or ()
        tried = "; ".join(
            f"L{index} {_flat(str(level.get('model')))} "
            + ("accepted" if level.get("accepted") else "not accepted")
            + (f" (agreement {level['agreement']})" if level.get("agreement") is not None else "")
            for index, level in enumerate(levels) if isinstance(level, Mapping))
        lines.append(f"cascade: level {cascade.get('level')} accepted, {cascade.get('tried')} tried: {tried}")
    vote = record.detail.get("vote")
    if isinstance(vote, Mapping):
        ballots = vote.get("ballots") or {}
        counted = ", ".join(f"{_flat(cut(str(b), 40))} {n}" for b, n in ballots.items()) or "no ballot"
        how = str(vote.get("by"))
        if vote.get("tie"):
            how += ", tie broken by the first ballot: " + ", ".join(_flat(cut(str(b), 40)) for b in vote["tie"])
        if vote.get("note"):
            how += f"; {_flat(str(vote['note']))}"
        lines.append(f"vote: {counted}, {vote.get('abstained', 0)} abstained of {vote.get('samples')}; "
                     f"agreement {vote.get('agreement')} ({how})")
    return lines


def run_json(contents: JournalContents, state: RunState, *, interrupted: bool = False) -> dict:
    end = contents.finished
    budget = run_budget_report(contents, state)
    budgets = {a.name: agent_budget_report(a.budget, state.agents[a.name]).to_json()
               for a in state.spec.agents if a.budget is not None and a.name in state.agents}
    return {
        "run_id": contents.header.run_id,
        "ensemble": contents.header.ensemble,
        "status": end.status if end else ("interrupted" if interrupted else "running"),
        "input": thaw(contents.header.input),
        "deliverable": thaw(deliverable(state)) if end else None,
        "results": {
            name: {"status": _status(r, interrupted), "output": thaw(r.output), "node_id": r.node_id,
                   "nodes": list(r.nodes), "model": r.model, "attempts": r.tries, "started_at": r.started_at,
                   "finished_at": r.finished_at,
                   "usage": {"prompt_tokens": r.usage.prompt_tokens, "completion_tokens": r.usage.completion_tokens},
                   "error": r.error, **detail_json(r), **({"budget": budgets[name]} if name in budgets else {})}
            for name, r in state.agents.items()
        },
        "usage": usage_json(spent_before(contents)),
        **({"budget": budget.to_json()} if budget is not None else {}),
        "reason": end.reason if end else None,
        "timing": {"started_at": contents.header.started_at, "finished_at": end.at if end else None},
        "computed_status": run_status(state, end.reason if end else None),
    }
