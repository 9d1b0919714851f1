"""`orc plan` and `orc run --explain`: where every agent of a bound run would go if it started now, and why.

The same code plans with a mesh and without a daemon; only the placer differs (the mesh's
nodes, or this machine alone).
"""

from __future__ import annotations

from orc.node.coordinator.binding import BoundRun
from orc.node.coordinator.placing import Placer
from orc.node.coordinator.prompts import render_value
from orc.node.protocol.events import AgentPlan, RunPlanned
from orc.scheduler.ensemble import CascadeTask, DispatchTask, EnsembleTask, LlmTask, LoopTask, ScriptTask
from orc.scheduler.placement import Demand, estimated_prompt_tokens, forecast


def forecast_run(bound: BoundRun, run_input: object, placer: Placer, coordinator: str, local: bool,
                 now: float, *, ships_scripts: bool = False) -> RunPlanned:
    """The placement forecast of `bound` on `run_input`, as of `now`; `ships_scripts`: the engine
    runs the scripts of files with `ship_scripts: true` elsewhere (a Ray cluster).

    Prompt sizes are guessed before the upstream agents have written anything: the system
    prompt and input as given, plus each dependency's full `max_tokens`.
    """
    view = placer.view(local)
    demands: list[Demand] = []
    notes: dict[str, tuple[str, str | None]] = {}
    input_chars = len(render_value(run_input)) if run_input is not None else 0
    for agent in bound.agents.values():
        match agent.spec.task:
            case LlmTask() | CascadeTask():
                # A cascade is forecast as its first level: the others run only if it is not accepted.
                assert agent.model is not None, "bound with its model"
                resolved = agent.model.resolved
                upstream = sum(m.resolved.max_tokens for d in agent.spec.depends_on
                               if (m := bound.agent(d).model) is not None)
                demands.append(placer.demand(
                    agent.name, resolved.model, agent.model.sha256,
                    estimated_prompt_tokens(len(resolved.system_prompt or "") + input_chars) + upstream,
                    resolved.max_tokens, agent.spec.placement, agent.rank, local))
                if agent.spec.fan_out:
                    notes[agent.name] = ("llm", "fan-out: each item is one generation, placed on its own "
                                                "when the list is known; shown for one item")
                elif agent.vote is not None:
                    notes[agent.name] = ("llm", f"vote: {agent.vote.spec.samples} samples, started together and "
                                                "placed like this one; shown for one sample")
                elif agent.levels:
                    notes[agent.name] = ("llm", f"cascade of {len(agent.levels)} levels, tried in order; "
                                                "shown for the first, the others are placed if it is not accepted")
            case ScriptTask() if ships_scripts and bound.spec.ship_scripts:
                notes[agent.name] = ("script", "runs as a task on a worker: the file allows shipping its scripts")
            case ScriptTask():
                notes[agent.name] = ("script", "runs on this node: scripts never leave the coordinator")
            case EnsembleTask():
                notes[agent.name] = ("ensemble", "runs on this node; its agents are placed when it starts")
            case LoopTask():
                notes[agent.name] = ("loop", "runs on this node; its body's agents are placed each iteration")
            case DispatchTask():
                notes[agent.name] = ("dispatch", "runs on this node; the ensemble it picks is placed then")
    after = {a.name: a.depends_on for a in bound.spec.agents}
    decisions = {d.key: d for d in forecast(demands, after, view, now)}
    plans = []
    for agent in bound.agents.values():
        kind, note = notes.get(agent.name, ("llm", None))
        decision = decisions.get(agent.name)
        plans.append(AgentPlan(agent.name, kind, agent.model.ref if agent.model else None,
                               decision.candidates if decision else (), decision.rejected if decision else (),
                               note))
    return RunPlanned(bound.spec.name, coordinator, now, tuple(plans))
