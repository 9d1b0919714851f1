"""What orc's dynamic placement is compared with: static schedules and the naive policies.

Owns the static schedules the event engine replays (HEFT over every submitted DAG, and each
coordinator's own `forecast()` run as a plan) and the naive policies' choices: a random
eligible node, round-robin per coordinator and model, and llm-orc's level-by-level (the whole
DAG on its coordinator, a level released when the previous one is home).

May import: the workload module, orc.scheduler.dag (levels) and orc.scheduler.placement
(`forecast()`, `ClusterView`). Not the event engine nor the benchmark, which use this module.
Pure: plans are computed from estimates at time 0, randomness comes in as a `random.Random`.
"""

from __future__ import annotations

import bisect
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

from orc.scheduler.dag import levels_of
from orc.scheduler.placement import ClusterView, forecast
from orc.scheduler.simulator.workload import MODEL_BY_ID, SCRIPT_S, Agent, Dag, SimMesh, SimNode, upward_ranks

# ---- static schedules ----


@dataclass(frozen=True)
class Slot:
    """A generation in a static schedule, as planned: its node, when the node is busy with it, when it is home."""

    node_id: str
    start_s: float
    end_s: float
    done_s: float  # its result at the coordinator


def heft_schedule(mesh: SimMesh, dags: Sequence[Dag], coordinators: Sequence[str]) -> dict[str, Slot]:
    """HEFT over every submitted DAG at once: upward rank order, insertion-based earliest finish time.

    Omniscient (all DAGs, every node's exact state at time 0) but static: it plans with the
    estimates, not the noisy actual durations. A node's cold model is charged to the first
    generation placed there in rank order (the engine charges whichever runs first). Scripts
    stay on their coordinator and cost `SCRIPT_S`.

    Batches: a node of capacity c is c processors (whatever the model, as the engine runs it): a
    generation fits where fewer than c planned ones overlap it throughout, and takes the work of
    one in a batch of those overlapping its start plus itself (later joiners' slowing ignored,
    as `place()` ignores it).
    """
    rank: dict[str, float] = {}
    coordinator_of: dict[str, str] = {}
    agents: dict[str, Agent] = {}
    submit: dict[str, float] = {}
    for dag, coordinator in zip(dags, coordinators, strict=True):
        rank.update(upward_ranks(dag, mesh, coordinator))
        for agent in dag.agents:
            coordinator_of[agent.key], agents[agent.key], submit[agent.key] = coordinator, agent, dag.submit_at
    busy: dict[str, list[tuple[float, float]]] = {n.node_id: [] for n in mesh.nodes}
    loaded = {n.node_id: set(n.warm) for n in mesh.nodes}
    done: dict[str, float] = {}  # planned: the result at the coordinator
    plan: dict[str, Slot] = {}
    # Ranks fall strictly along every edge (every cost is positive), so dependencies come first.
    for key in sorted(agents, key=lambda k: (-rank[k], k)):
        agent, coordinator = agents[key], coordinator_of[key]
        ready = max([submit[key], *(done[d] for d in agent.after)])
        if agent.model is None:
            done[key] = ready + SCRIPT_S
            continue
        best: tuple | None = None
        for node in mesh.eligible(agent.model):
            warm = agent.model in loaded[node.node_id]
            start, work = _earliest_slot(busy[node.node_id], ready, node.capacity,
                                         lambda batch, node=node, warm=warm: node.work_s(agent, warm, batch))
            finish = start + work + mesh.network_s(coordinator, node.node_id)
            candidate = (round(finish, 9), not warm, node.node_id, start, work, finish)
            if best is None or candidate < best:
                best = candidate
        assert best is not None  # upward_ranks raised if no node is eligible
        _, _, node_id, start, work, finish = best
        bisect.insort(busy[node_id], (start, start + work))
        loaded[node_id].add(agent.model)
        done[key] = finish
        plan[key] = Slot(node_id, start, start + work, finish)
    return plan


def _earliest_slot(busy: Sequence[tuple[float, float]], ready: float, capacity: int,
                   work_at: Callable[[int], float]) -> tuple[float, float]:
    """The earliest start at or after `ready` where one more generation fits among the planned
    intervals `busy` (sorted) of a node running `capacity` at once, and its work there.

    Its work is `work_at(batch)` for the batch it joins at its start; it fits where fewer than
    `capacity` intervals overlap it at every instant. Starts are tried at `ready` and at each
    planned end after it: a start can only fit where one did not just before once an interval ends.
    """
    candidates = [ready, *sorted(end for _, end in busy if end > ready)]
    for start in candidates:
        batch = 1 + sum(1 for begin, end in busy if begin <= start < end)
        if batch > capacity:
            continue
        work = work_at(batch)
        # Intervals ending at `start` or beginning (within rounding) at its end do not overlap it.
        overlapping = [(begin, end) for begin, end in busy if end > start and begin + 1e-12 < start + work]
        if len(overlapping) < capacity or all(
                sum(1 for b, e in overlapping if b <= moment < e) < capacity
                for moment in (start, *(begin for begin, _ in overlapping if begin > start))):
            return start, work
    raise AssertionError("unreachable: after the last planned end nothing overlaps")


def forecast_schedule(mesh: SimMesh, dags: Sequence[Dag], coordinators: Sequence[str]) -> dict[str, Slot]:
    """Each coordinator's `forecast()` of its own DAG at submission, unaware of the others' plans."""
    plan: dict[str, Slot] = {}
    for dag, coordinator in zip(dags, coordinators, strict=True):
        rank = upward_ranks(dag, mesh, coordinator)
        view = ClusterView(coordinator, tuple(mesh.node_view(n, coordinator, n.warm, 0.0) for n in mesh.nodes))
        demands = [a.demand(rank[a.key]) for a in dag.agents if a.model is not None]
        for decision in forecast(demands, dag.dependencies, view, dag.submit_at):
            chosen = decision.choice
            if chosen is None:
                raise ValueError(f"no node can run {decision.key}: {decision.why_none()}")
            plan[decision.key] = Slot(chosen.node_id, chosen.start_s, chosen.start_s + chosen.work_s, chosen.finish_s)
    return plan


# ---- the naive policies ----

def random_node(nodes: Sequence[SimNode], rng: random.Random) -> SimNode:
    """The random policy: any of the eligible `nodes`, uniformly."""
    return rng.choice(nodes)


class RoundRobin:
    """The round-robin policy: each coordinator cycles through the eligible nodes of each model on its own."""

    def __init__(self) -> None:
        self._turns: dict[tuple[str, str], int] = {}  # (coordinator, model) -> generations it placed

    def next(self, coordinator: str, model: str, nodes: Sequence[SimNode]) -> SimNode:
        turn = self._turns.get((coordinator, model), 0)
        self._turns[coordinator, model] = turn + 1
        return nodes[turn % len(nodes)]


def llm_orc_mesh(mesh: SimMesh, coordinators: Sequence[str]) -> SimMesh:
    """`mesh` with every coordinator holding every model: llm-orc's single device is assumed to."""
    everything = frozenset(MODEL_BY_ID)
    return SimMesh(tuple(replace(n, held=everything) if n.node_id in coordinators else n for n in mesh.nodes))


class LevelBarrier:
    """llm-orc's level-by-level: a DAG's agents start a level at a time, each after the previous level is home.

    A level is the agents whose longest dependency chain has the same length (dag.levels_of).
    """

    def __init__(self, dags: Sequence[Dag]) -> None:
        self._levels = [levels_of(dag.dependencies) for dag in dags]
        self._where: dict[str, tuple[int, int]] = {}  # agent key -> (its DAG's index, its level)
        self._left: dict[tuple[int, int], int] = {}  # (DAG index, level) -> agents not home yet
        for index, levels in enumerate(self._levels):
            for depth, level in enumerate(levels):
                self._left[index, depth] = len(level)
                for key in level:
                    self._where[key] = index, depth

    def home(self, key: str) -> tuple[str, ...]:
        """`key`'s result is home: the agents this releases (the next level, once its own is complete)."""
        index, depth = self._where[key]
        self._left[index, depth] -= 1
        if self._left[index, depth] > 0 or depth + 1 >= len(self._levels[index]):
            return ()
        return self._levels[index][depth + 1]
