"""Graph algorithms over an ensemble's dependency DAG. Pure functions of plain mappings."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from orc.scheduler.ensemble import EnsembleSpec, EnsembleTask, LoopTask, DispatchTask, ScriptTask


def find_cycle(graph: Mapping[str, Sequence[str]]) -> list[str] | None:
    """A dependency cycle as a closed path `[a, b, a]` (a depends on b depends on a), or None.

    `graph` maps each node to the nodes it depends on. Iterative, so deep chains cannot
    exhaust the interpreter stack. The search starts from nodes in mapping order, so the
    same graph always reports the same cycle.
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


def topological_order(spec: EnsembleSpec) -> tuple[str, ...]:
    """Agents ordered so each comes after its dependencies; ties keep file order."""
    remaining = {a.name: set(a.depends_on) for a in spec.agents}
    order: list[str] = []
    while remaining:
        ready = [a.name for a in spec.agents if a.name in remaining and not remaining[a.name]]
        if not ready:  # the loader rejects cycles; this guards direct callers
            raise ValueError("dependency cycle")
        for name in ready:
            order.append(name)
            del remaining[name]
        for deps in remaining.values():
            deps.difference_update(ready)
    return tuple(order)


def levels(spec: EnsembleSpec) -> tuple[tuple[str, ...], ...]:
    """Agents grouped by depth (the longest dependency chain before them)."""
    depth: dict[str, int] = {}
    for name in topological_order(spec):
        deps = spec.agent(name).depends_on
        depth[name] = 1 + max((depth[d] for d in deps), default=-1)
    grouped: dict[int, list[str]] = {}
    for name, level in depth.items():
        grouped.setdefault(level, []).append(name)
    return tuple(tuple(grouped[i]) for i in sorted(grouped))


def critical_path_lengths(spec: EnsembleSpec, cost: Mapping[str, float]) -> dict[str, float]:
    """For each agent, its cost plus the longest cost-weighted path to the end of the DAG (HEFT's upward rank)."""
    dependents: dict[str, list[str]] = {a.name: [] for a in spec.agents}
    for agent in spec.agents:
        for dep in agent.depends_on:
            dependents[dep].append(agent.name)
    rank: dict[str, float] = {}
    for name in reversed(topological_order(spec)):
        rank[name] = cost.get(name, 1.0) + max((rank[d] for d in dependents[name]), default=0.0)
    return rank


def to_mermaid(spec: EnsembleSpec) -> str:
    """The DAG as Mermaid `flowchart` text (renders on GitHub and in most docs tools)."""
    ids = {a.name: f"a{i}" for i, a in enumerate(spec.agents)}
    lines = ["flowchart TD"]
    for agent in spec.agents:
        label = agent.name
        match agent.task:
            case ScriptTask(script=script):
                shape = f'[/"{_escape(label)}<br/><small>script {_escape(script)}</small>"/]'
            case EnsembleTask(ensemble=ref):
                shape = f'[["{_escape(label)}<br/><small>ensemble {_escape(ref)}</small>"]]'
            case LoopTask(body=body, max_iterations=n):
                shape = f'[["{_escape(label)}<br/><small>loop {_escape(body)} ×≤{n}</small>"]]'
            case DispatchTask(target=target):
                shape = f'{{{{"{_escape(label)}<br/><small>dispatch {_escape(str(target))}</small>"}}}}'
            case _:
                shape = f'["{_escape(label)}"]'
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
