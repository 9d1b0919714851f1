"""Graph algorithms over a dependency DAG, and thin entry points for an ensemble's.

The algorithms take a plain dependency mapping: each node's name -> the names it depends on,
in a fixed order (the mapping's order breaks ties, so the same graph always gives the same
answer). Ensembles use them through the `EnsembleSpec` entry points below; the placement
simulator (scheduler/simulator/) calls them on its own DAGs. Pure functions: no I/O.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from orc.scheduler.ensemble import (
    CascadeTask,
    DispatchTask,
    EnsembleSpec,
    EnsembleTask,
    LlmTask,
    LoopTask,
    ScriptTask,
)
from orc.scheduler.primitives_view import budget_text, level_text, vote_text

Dependencies = Mapping[str, Sequence[str]]
"""A DAG as a mapping: each node's name -> the names of the nodes it depends on."""


def find_cycle(graph: Dependencies) -> list[str] | None:
    """A dependency cycle as a closed path `[a, b, a]` (a depends on b depends on a), or None.

    `graph` maps each node to the nodes it depends on; names that are not keys are ignored.
    Iterative, so deep chains cannot exhaust the interpreter stack. The search starts from
    nodes in mapping order, so the same graph always reports the same cycle.
    """
    white, grey, black = 0, 1, 2
    colour = {node: white for node in graph}
    for start in graph:
        if colour[start] != white:
            continue
        path: list[str] = [start]
        iterators = [iter(graph.get(start, ()))]
        colour[start] = grey
        while iterators:
            advanced = False
            for nxt in iterators[-1]:
                if nxt not in colour:
                    continue
                if colour[nxt] == grey:
                    return path[path.index(nxt):] + [nxt]
                if colour[nxt] == white:
                    colour[nxt] = grey
                    path.append(nxt)
                    iterators.append(iter(graph.get(nxt, ())))
                    advanced = True
                    break
            if not advanced:
                colour[path.pop()] = black
                iterators.pop()
    return None


def topological_order_of(graph: Dependencies) -> tuple[str, ...]:
    """The nodes ordered so each comes after its dependencies; ties keep mapping order.

    Built in rounds: every node whose dependencies are all placed joins in one round, in mapping
    order. Raises ValueError naming the problem when a dependency is not a node of `graph`
    or the dependencies form a cycle.
    """
    for name, deps in graph.items():
        unknown = [d for d in deps if d not in graph]
        if unknown:
            raise ValueError(f"{name} depends on {', '.join(unknown)}, which is not in the graph")
    remaining = {name: set(deps) for name, deps in graph.items()}
    order: list[str] = []
    while remaining:
        ready = [name for name in remaining if not remaining[name]]
        if not ready:
            cycle = find_cycle({name: graph[name] for name in remaining}) or []
            raise ValueError("dependency cycle: " + " -> ".join(cycle))
        for name in ready:
            order.append(name)
            del remaining[name]
        for deps in remaining.values():
            deps.difference_update(ready)
    return tuple(order)


def levels_of(graph: Dependencies) -> tuple[tuple[str, ...], ...]:
    """The nodes grouped by depth (the longest dependency chain before them), each group in topological order."""
    depth: dict[str, int] = {}
    for name in topological_order_of(graph):
        depth[name] = 1 + max((depth[d] for d in graph[name]), default=-1)
    grouped: dict[int, list[str]] = {}
    for name, level in depth.items():
        grouped.setdefault(level, []).append(name)
    return tuple(tuple(grouped[i]) for i in sorted(grouped))


def dependents_of(graph: Dependencies) -> dict[str, list[str]]:
    """The reverse mapping: each node -> the nodes that depend on it, in mapping order."""
    dependents: dict[str, list[str]] = {name: [] for name in graph}
    for name, deps in graph.items():
        for dep in deps:
            dependents[dep].append(name)
    return dependents


def critical_path_lengths_of(graph: Dependencies, cost: Mapping[str, float]) -> dict[str, float]:
    """For each node, its cost plus the longest cost-weighted path to the end of the DAG (HEFT's upward rank).

    A node missing from `cost` costs 1.
    """
    dependents = dependents_of(graph)
    rank: dict[str, float] = {}
    for name in reversed(topological_order_of(graph)):
        rank[name] = cost.get(name, 1.0) + max((rank[d] for d in dependents[name]), default=0.0)
    return rank


# ---- an ensemble's DAG ----

def dependency_graph(spec: EnsembleSpec) -> dict[str, tuple[str, ...]]:
    """The ensemble as a dependency mapping, agents in file order."""
    return {agent.name: tuple(agent.depends_on) for agent in spec.agents}


def topological_order(spec: EnsembleSpec) -> tuple[str, ...]:
    """Agents ordered so each comes after its dependencies; ties keep file order."""
    return topological_order_of(dependency_graph(spec))


def levels(spec: EnsembleSpec) -> tuple[tuple[str, ...], ...]:
    """Agents grouped by depth (the longest dependency chain before them)."""
    return levels_of(dependency_graph(spec))


def critical_path_lengths(spec: EnsembleSpec, cost: Mapping[str, float]) -> dict[str, float]:
    """For each agent, its cost plus the longest cost-weighted path to the end of the DAG (HEFT's upward rank)."""
    return critical_path_lengths_of(dependency_graph(spec), cost)


def to_mermaid(spec: EnsembleSpec) -> str:
    """The DAG as Mermaid `flowchart` text (renders on GitHub and in most docs tools)."""
    ids = {a.name: f"a{i}" for i, a in enumerate(spec.agents)}
    lines = ["flowchart TD"]
    if spec.budget is not None:
        lines.append(f"    %% {budget_text(spec.budget)} for the whole run")
    for agent in spec.agents:
        label = _escape(agent.name)
        if agent.budget is not None:
            label += f"<br/><small>{_escape(budget_text(agent.budget))}</small>"
        match agent.task:
            case ScriptTask(script=script):
                shape = f'[/"{label}<br/><small>script {_escape(script)}</small>"/]'
            case EnsembleTask(ensemble=ref):
                shape = f'[["{label}<br/><small>ensemble {_escape(ref)}</small>"]]'
            case LoopTask(body=body, max_iterations=n):
                shape = f'[["{label}<br/><small>loop {_escape(body)} ×≤{n}</small>"]]'
            case DispatchTask(target=target):
                shape = f'{{{{"{label}<br/><small>dispatch {_escape(str(target))}</small>"}}}}'
            case LlmTask(vote=vote) if vote is not None:
                shape = f'["{label}<br/><small>{_escape(vote_text(vote, agent.task))}</small>"]'
            case CascadeTask(levels=levels):
                steps = "<br/>".join(f"<small>{_escape(level_text(i, level.task, level.accept_if))}</small>"
                                     for i, level in enumerate(levels))
                shape = f'[["{label}<br/>{steps}"]]'
            case _:
                shape = f'["{label}"]'
        lines.append(f"    {ids[agent.name]}{shape}")
    for agent in spec.agents:
        for dep in agent.depends_on:
            arrow = "-.->" if agent.when is not None else "-->"
            note = f"|{_escape(str(agent.when))}|" if agent.when is not None else ""
            fan = "|fan-out|" if agent.fan_out and not note else ""
            lines.append(f"    {ids[dep]} {arrow}{note or fan} {ids[agent.name]}")
    return "\n".join(lines) + "\n"


def _escape(text: str) -> str:
    return text.replace('"', "#quot;").replace("<", "#lt;").replace(">", "#gt;").replace("|", "#124;")
