"""Placement in simulation: orc's real `place()` against the classic baselines on synthetic meshes.

Pure and deterministic: everything random comes from the `random.Random` passed in, time is
simulated (no threads, sockets or clock). `simulate(policy, mesh, dags, coordinators, rng)`
runs the DAGs submitted by their coordinators on one mesh under one policy, in a
discrete-event engine, and returns the makespan, each DAG's finish time and every execution.

The engine: an agent becomes ready when its own dependencies' results reached its
coordinator (no level barrier, except for `level_by_level`). A node runs one generation at a
time from a FIFO queue (a static schedule instead runs its own order). Its actual duration is
the estimate, which is exactly what `place()` computes from the node's rates, times a noise
factor per agent (lognormal, median 1: real answers stop before `max_tokens` or run slower).
A remote agent's result reaches its coordinator `network_s` after the node finished; a cold
model is read from storage first and stays loaded. Scripts run on the coordinator beside the
generation slot, for `SCRIPT_S`.

Policies (every one draws nodes from the same filter, `Mesh.eligible`: holds the model and it
fits in memory):
- `orc`: the coordinator calls `place()` with a `ClusterView` of what it would know, each time
  agents become ready: every node's backlog as of its last heartbeat (up to `HEARTBEAT_S`
  stale, aged by the time since), plus the work this coordinator bound since; then probes the
  best `PROBES` candidates for their current estimate (the node's exact queue at that moment)
  and binds on the better, paying the probe's round trip before the agent can start.
- `orc_no_probe`: the same, binding on `place()`'s first choice without probing.
- `forecast`: each coordinator's `forecast()` of its DAG at submission, run as a static schedule.
- `heft`: centralized, omniscient and static: HEFT (Topcuoglu, Hariri and Wu, 2002) over all
  the submitted DAGs at once, upward rank with mean costs and insertion-based earliest
  finish, run as a static schedule (node and per-node order kept) under the same noise.
- `random`: a random eligible node. `round_robin`: each coordinator cycles through the
  eligible nodes of each model.
- `level_by_level`: what llm-orc does: the whole DAG on the coordinator's own node (assumed to
  hold every model; a cold one is loaded once), each level after the previous level finished.

`random_mesh`, `random_dag` and `random_case` make synthetic cases; `benchmark()` runs every
policy on many of them and returns the ratios to HEFT (tests/benchmarks/placement.py turns
them into the table in docs/benchmarks.md).
"""

from __future__ import annotations

import bisect
import enum
import heapq
import math
import random
import statistics
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace

from typing_extensions import assert_never

from orc.scheduler.placement import (
    MEMORY_FACTOR,
    MEMORY_MARGIN_BYTES,
    ClusterView,
    Demand,
    HeldModel,
    NodeView,
    forecast,
    place,
)

GiB = 2**30

# ---- the model family and the devices ----
#
# Rates on a Raspberry Pi 4 (4 × Cortex-A72, llama.cpp on 4 threads, Q4_K_M GGUF files of
# about the sizes below). Decoding a small model is bound by memory bandwidth, about
# bandwidth / model bytes: a Pi 4 reads ~4 GB/s, so a 0.8 GB 1B model decodes at ~3-5
# tokens/s, which matches published llama.cpp runs on Pi 4s (TinyLlama-1.1B Q4 at 2-4
# tokens/s). Prompt reading is compute bound, ~5-7× the decode rate on these cores. Orders of
# magnitude, not measurements: this repository's own measurement of SmolLM2-135M Q4_1 on a
# 2-core x86 VM (docs/benchmarks.md) is 147 tokens/s decode, 446 tokens/s prompt.


@dataclass(frozen=True)
class ModelKind:
    id: str
    size_bytes: int
    prefill_tokens_per_s: float  # on a Raspberry Pi 4
    decode_tokens_per_s: float  # on a Raspberry Pi 4


MODELS = (
    ModelKind("smollm2-135m", 105_000_000, 160.0, 24.0),
    ModelKind("smollm2-360m", 270_000_000, 70.0, 11.0),
    ModelKind("qwen2.5-0.5b", 400_000_000, 45.0, 7.5),
    ModelKind("llama-3.2-1b", 810_000_000, 20.0, 3.5),
)
MODEL_BY_ID = {m.id: m for m in MODELS}
MODEL_WEIGHTS = (3, 3, 2, 2)  # how often an agent uses each: the small ones are the common case


@dataclass(frozen=True)
class DeviceClass:
    name: str
    speed: float  # prompt and decode rates relative to a Pi 4
    memory_bytes: int
    load_bytes_per_s: float  # reading weights from storage, for a cold load
    link_s: float  # its half of a LAN round trip plus a small transfer


# Speeds relative to a Pi 4: a Pi 5 ~2× (memory bandwidth and cores, as in the Raspberry Pi
# Foundation's and llama.cpp users' numbers), an x86 laptop ~5× on CPU, an M-series Mac mini
# ~8× (Metal; conservative for decoding). Storage: a Pi 4's microSD reads ~40 MB/s (its
# interface caps at ~45), a Pi 5's SDR104 ~80 MB/s, a laptop's NVMe SSD ~1.5 GB/s once the
# file system and mmap are paid, a Mac mini's SSD ~2.5 GB/s. Links: Pis and laptops on Wi-Fi
# (a few ms per round trip), the Mac mini wired.
DEVICES = (
    DeviceClass("pi4", 1.0, 4 * GiB, 40e6, 0.004),
    DeviceClass("pi5", 2.0, 8 * GiB, 80e6, 0.003),
    DeviceClass("laptop", 5.0, 16 * GiB, 1.5e9, 0.004),
    DeviceClass("mac-mini", 8.0, 16 * GiB, 2.5e9, 0.001),
)
DEVICE_WEIGHTS = (3, 3, 2, 2)  # a home mesh has more Pis than Macs
RESERVED_BYTES = int(1.5 * GiB)  # the OS, the daemon and the household's other services

HEARTBEAT_S = 1.0  # a peer's load in the coordinator's view is at most this old
PROBES = 2  # probe-and-bind-late asks the best two (DESIGN.md section 7)
SCRIPT_S = 0.05  # a script agent on the coordinator: a short Python process
NOISE_SIGMA = 0.15  # lognormal sigma of actual / estimated duration
RUNTIME = "llama_cpp"


@dataclass(frozen=True)
class SimNode:
    """One device of the mesh: the models it holds and which of them are loaded at time 0."""

    node_id: str
    device: DeviceClass
    held: frozenset[str]
    warm: frozenset[str] = frozenset()

    def rates(self, model: ModelKind) -> tuple[float, float]:
        """Prompt and decode tokens/s of `model` here (what the node measured)."""
        return model.prefill_tokens_per_s * self.device.speed, model.decode_tokens_per_s * self.device.speed

    @property
    def memory_available_bytes(self) -> int:
        """Memory free for another model at time 0 (the filter's number; models are never evicted)."""
        return self.device.memory_bytes - RESERVED_BYTES - sum(MODEL_BY_ID[m].size_bytes for m in self.warm)

    def fits(self, model: ModelKind) -> bool:
        """`place()`'s memory rule, for every policy alike."""
        return (model.id in self.warm
                or model.size_bytes * MEMORY_FACTOR + MEMORY_MARGIN_BYTES <= self.memory_available_bytes)

    def load_s(self, model: ModelKind) -> float:
        return model.size_bytes / self.device.load_bytes_per_s

    def work_s(self, agent: Agent, warm: bool) -> float:
        """The estimate of the node's busy time for `agent`, as `place()` computes it."""
        model = MODEL_BY_ID[agent.model or ""]
        prefill, decode = self.rates(model)
        return (0.0 if warm else self.load_s(model)) + agent.prompt_tokens / prefill + agent.max_tokens / decode


@dataclass(frozen=True)
class Mesh:
    nodes: tuple[SimNode, ...]
    _by_id: Mapping[str, SimNode] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_by_id", {n.node_id: n for n in self.nodes})
        if len(self._by_id) != len(self.nodes):
            raise ValueError("node ids must be unique")

    def node(self, node_id: str) -> SimNode:
        return self._by_id[node_id]

    def eligible(self, model_id: str) -> tuple[SimNode, ...]:
        """The nodes any policy may use for `model_id`: they hold it and it fits in memory."""
        model = MODEL_BY_ID[model_id]
        return tuple(n for n in sorted(self.nodes, key=lambda n: n.node_id) if model_id in n.held and n.fits(model))

    def network_s(self, coordinator: str, node_id: str) -> float:
        """A remote agent's round trip between coordinator and node (request and result); 0 locally."""
        if coordinator == node_id:
            return 0.0
        return self.node(coordinator).device.link_s + self.node(node_id).device.link_s


@dataclass(frozen=True)
class Agent:
    """One agent of a DAG: a generation (model, prompt and max tokens) or, with no model, a script."""

    key: str  # unique across the DAGs of one simulation: "dag/agent"
    model: str | None
    prompt_tokens: int = 0
    max_tokens: int = 0
    after: tuple[str, ...] = ()  # the agents whose results it needs


@dataclass(frozen=True)
class Dag:
    name: str
    agents: tuple[Agent, ...]
    submit_at: float = 0.0


class Policy(enum.Enum):
    ORC = "orc"
    ORC_NO_PROBE = "orc_no_probe"
    FORECAST = "forecast"
    HEFT = "heft"
    RANDOM = "random"
    ROUND_ROBIN = "round_robin"
    LEVEL_BY_LEVEL = "level_by_level"


@dataclass(frozen=True)
class Execution:
    """One agent's run: on which node, when the node was busy with it, when its result was home."""

    key: str
    node_id: str  # the coordinator's node for a script
    start_s: float
    end_s: float
    done_s: float  # its result at the coordinator
    warm: bool


@dataclass(frozen=True)
class Outcome:
    policy: Policy
    makespan_s: float  # the last result home, from time 0
    dag_finish_s: Mapping[str, float]
    executions: tuple[Execution, ...]  # in order of start


# ======================================================================================
# ranks and the static schedules
# ======================================================================================

def upward_ranks(dag: Dag, mesh: Mesh, coordinator: str) -> dict[str, float]:
    """HEFT's upward rank: an agent's mean cost over its eligible nodes plus its longest path to the end."""
    cost = {}
    for agent in dag.agents:
        if agent.model is None:
            cost[agent.key] = SCRIPT_S
        else:
            nodes = mesh.eligible(agent.model)
            if not nodes:
                raise ValueError(f"no node can run {agent.key} (model {agent.model})")
            cost[agent.key] = statistics.fmean(n.work_s(agent, agent.model in n.warm)
                                               + mesh.network_s(coordinator, n.node_id) for n in nodes)
    dependents: dict[str, list[str]] = {a.key: [] for a in dag.agents}
    for agent in dag.agents:
        for dep in agent.after:
            dependents[dep].append(agent.key)
    rank: dict[str, float] = {}
    for key in reversed(_topological(dag)):
        rank[key] = cost[key] + max((rank[d] for d in dependents[key]), default=0.0)
    return rank


def _topological(dag: Dag) -> list[str]:
    left = {a.key: set(a.after) for a in dag.agents}
    order: list[str] = []
    while left:
        ready = [a.key for a in dag.agents if a.key in left and not left[a.key]]
        if not ready:
            raise ValueError(f"{dag.name}: dependencies form a cycle")
        for key in ready:
            order.append(key)
            del left[key]
        for deps in left.values():
            deps.difference_update(ready)
    return order


def _levels(dag: Dag) -> dict[str, int]:
    """Each agent's depth: the longest dependency chain before it (llm-orc's levels)."""
    by_key = {a.key: a for a in dag.agents}
    depth: dict[str, int] = {}
    for key in _topological(dag):
        depth[key] = 1 + max((depth[d] for d in by_key[key].after), default=-1)
    return depth


@dataclass(frozen=True)
class Slot:
    """A generation in a static schedule, as planned: its node, when the node is busy with it, when it is home."""

    node_id: str
    start_s: float
    end_s: float
    done_s: float  # its result at the coordinator


def heft_schedule(mesh: Mesh, dags: Sequence[Dag], coordinators: Sequence[str]) -> dict[str, Slot]:
    """HEFT over every submitted DAG at once: upward rank order, insertion-based earliest finish time.

    Omniscient (all DAGs, every node's exact state at time 0) but static: it plans with the
    estimates, not the noisy actual durations. A node's cold model is charged to the first
    generation placed there in rank order (the engine charges whichever runs first). Scripts
    stay on their coordinator and cost `SCRIPT_S`.
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
            work = node.work_s(agent, warm)
            start = _earliest_gap(busy[node.node_id], ready, work)
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


def _earliest_gap(busy: Sequence[tuple[float, float]], ready: float, work: float) -> float:
    """The earliest start at or after `ready` where `work` fits between the intervals in `busy` (sorted)."""
    start = ready
    for begin, end in busy:
        if start + work <= begin + 1e-12:
            return start
        start = max(start, end)
    return start


def forecast_schedule(mesh: Mesh, dags: Sequence[Dag], coordinators: Sequence[str]) -> dict[str, Slot]:
    """Each coordinator's `forecast()` of its own DAG at submission, unaware of the others' plans."""
    plan: dict[str, Slot] = {}
    for dag, coordinator in zip(dags, coordinators, strict=True):
        rank = upward_ranks(dag, mesh, coordinator)
        view = ClusterView(coordinator, tuple(_node_view(mesh, n, coordinator, n.warm, 0.0) for n in mesh.nodes))
        demands = [_demand(a, rank[a.key]) for a in dag.agents if a.model is not None]
        after = {a.key: a.after for a in dag.agents}
        for decision in forecast(demands, after, view, dag.submit_at):
            chosen = decision.choice
            if chosen is None:
                raise ValueError(f"no node can run {decision.key}: {decision.why_none()}")
            plan[decision.key] = Slot(chosen.node_id, chosen.start_s, chosen.start_s + chosen.work_s, chosen.finish_s)
    return plan


def _demand(agent: Agent, rank: float) -> Demand:
    return Demand(key=agent.key, model_id=agent.model or "", prompt_tokens=agent.prompt_tokens,
                  max_tokens=agent.max_tokens, rank=rank)


def _node_view(mesh: Mesh, node: SimNode, coordinator: str, loaded: Iterable[str], backlog_s: float) -> NodeView:
    loaded = frozenset(loaded)
    models = []
    for model_id in sorted(node.held):
        model = MODEL_BY_ID[model_id]
        prefill, decode = node.rates(model)
        models.append(HeldModel(id=model_id, runtime=RUNTIME, sha256=f"sha256-{model_id}", size_bytes=model.size_bytes,
                                loaded=model_id in loaded, prefill_tokens_per_s=prefill, decode_tokens_per_s=decode))
    return NodeView(node_id=node.node_id, name=f"{node.device.name}-{node.node_id}", alive=True, models=tuple(models),
                    memory_available_bytes=node.memory_available_bytes, backlog_s=backlog_s,
                    network_s=mesh.network_s(coordinator, node.node_id),
                    load_bytes_per_s=node.device.load_bytes_per_s)


# ======================================================================================
# the engine
# ======================================================================================

class _Event(enum.Enum):
    SUBMIT = "a coordinator submits its DAG"  # subject: the DAG's index
    FINISH = "a node finished its generation"  # subject: the node
    HOME = "a result reached its coordinator"  # subject: the agent
    WAKE = "a request reached its node"  # subject: the node


@dataclass
class _Item:
    """A generation a node accepted."""

    key: str
    model: str
    node_id: str
    coordinator: str
    accepted_s: float
    available_s: float  # when it may start (its request has arrived)
    estimate_s: float  # the node's own estimate when it accepted it
    start_s: float | None = None
    end_s: float | None = None


@dataclass
class _NodeState:
    node: SimNode
    loaded_s: dict[str, float]  # model -> when it finished loading
    queue: deque[_Item] = field(default_factory=deque)
    running: _Item | None = None
    history: list[_Item] = field(default_factory=list)
    order: list[str] | None = None  # a static schedule's order; None: FIFO
    arrived: dict[str, _Item] = field(default_factory=dict)  # static: requests waiting for their turn

    def free_at(self, now: float) -> float:
        """When this node expects to be free, by its own estimates (what it answers to a probe)."""
        free = now
        if self.running is not None and self.running.start_s is not None:
            free += max(0.0, self.running.estimate_s - (now - self.running.start_s))
        return free + sum(item.estimate_s for item in self.queue)

    def will_be_loaded(self, model: str, now: float) -> bool:
        if self.loaded_s.get(model, math.inf) <= now:
            return True
        pending = [self.running] if self.running is not None else []
        return any(item.model == model for item in [*pending, *self.queue])

    def backlog_at(self, moment: float) -> float:
        """The backlog this node reported in its heartbeat at `moment`."""
        total = 0.0
        for item in self.history:
            if item.accepted_s > moment or (item.end_s is not None and item.end_s <= moment):
                continue
            if item.start_s is not None and item.start_s <= moment:
                total += max(0.0, item.estimate_s - (moment - item.start_s))
            else:
                total += item.estimate_s
        return total


class _Engine:
    def __init__(self, policy: Policy, mesh: Mesh, dags: Sequence[Dag], coordinators: Sequence[str],
                 rng: random.Random, noise_sigma: float, probes: int) -> None:
        if len(dags) != len(coordinators):
            raise ValueError("one coordinator per DAG")
        self.policy, self.mesh, self.dags, self.coordinators = policy, mesh, tuple(dags), tuple(coordinators)
        self.probes = probes
        self.agents: dict[str, Agent] = {}
        self.dag_of: dict[str, int] = {}
        self.noise: dict[str, float] = {}
        for index, dag in enumerate(dags):
            for agent in dag.agents:
                if agent.key in self.agents:
                    raise ValueError(f"agent key {agent.key!r} is used twice")
                self.agents[agent.key], self.dag_of[agent.key] = agent, index
                # Drawn first and in a fixed order, so every policy sees the same noise from the same seed.
                self.noise[agent.key] = rng.lognormvariate(0.0, noise_sigma) if noise_sigma > 0 else 1.0
        self.rng = random.Random(rng.getrandbits(64))  # the random policy's own stream
        self.rank: dict[str, float] = {}
        for dag, coordinator in zip(dags, coordinators):
            self.rank.update(upward_ranks(dag, mesh, coordinator))
        self.dependents: dict[str, list[str]] = {k: [] for k in self.agents}
        for agent in self.agents.values():
            for dep in agent.after:
                self.dependents[dep].append(agent.key)
        self.waiting = {k: len(a.after) for k, a in self.agents.items()}
        self.level: dict[str, int] = {}
        self.level_left: dict[tuple[int, int], int] = {}
        if policy is Policy.LEVEL_BY_LEVEL:
            for index, dag in enumerate(dags):
                for key, depth in _levels(dag).items():
                    self.level[key] = depth
                    self.level_left[index, depth] = self.level_left.get((index, depth), 0) + 1
        self.nodes = {n.node_id: _NodeState(n, {m: -math.inf for m in n.warm}) for n in mesh.nodes}
        self.plan: dict[str, Slot] = {}
        if policy in (Policy.HEFT, Policy.FORECAST):
            schedule = heft_schedule if policy is Policy.HEFT else forecast_schedule
            self.plan = schedule(mesh, dags, coordinators)
            orders: dict[str, list[tuple[float, str]]] = {n: [] for n in self.nodes}
            for key, slot in self.plan.items():
                orders[slot.node_id].append((slot.start_s, key))
            for node_id, entries in orders.items():
                self.nodes[node_id].order = [key for _, key in sorted(entries)]
        self.bound: dict[str, dict[str, _Item]] = {c: {} for c in coordinators}  # per coordinator, not yet home
        self.turn: dict[tuple[str, str], int] = {}  # round robin
        self.done: dict[str, float] = {}
        self.executions: list[Execution] = []
        self.events: list[tuple[float, int, _Event, str]] = []
        self.sequence = 0

    # ---- events ----

    def push(self, at: float, event: _Event, subject: str) -> None:
        self.sequence += 1  # equal times pop in the order pushed
        heapq.heappush(self.events, (at, self.sequence, event, subject))

    def run(self) -> Outcome:
        for index, dag in enumerate(self.dags):
            self.push(dag.submit_at, _Event.SUBMIT, str(index))
        while self.events:
            # Everything that happens at one instant first, then each coordinator places what became ready.
            now = self.events[0][0]
            ready: dict[int, list[str]] = {}
            while self.events and self.events[0][0] == now:
                _, _, event, subject = heapq.heappop(self.events)
                match event:
                    case _Event.SUBMIT:
                        for agent in self.dags[int(subject)].agents:
                            if not agent.after:
                                self._ready(agent.key, now, ready)
                    case _Event.FINISH:
                        self._finish(subject, now)
                    case _Event.HOME:
                        self._home(subject, now, ready)
                    case _Event.WAKE:
                        pass  # the node may start it: below
                    case _:
                        assert_never(event)
            for index in sorted(ready):
                self._dispatch(index, ready[index], now)
            for state in self.nodes.values():
                self._try_start(state, now)
        if len(self.done) != len(self.agents):
            missing = len(self.agents) - len(self.done)
            raise AssertionError(f"{missing} agents never ran (a static schedule deadlocked?)")
        finish = {dag.name: max(self.done[a.key] for a in dag.agents) for dag in self.dags}
        executions = tuple(sorted(self.executions, key=lambda e: (e.start_s, e.key)))
        return Outcome(self.policy, max(finish.values(), default=0.0), finish, executions)

    def _ready(self, key: str, now: float, ready: dict[int, list[str]]) -> None:
        agent = self.agents[key]
        if agent.model is None:  # a script: on the coordinator, beside the generation slot
            coordinator = self.coordinators[self.dag_of[key]]
            end = now + SCRIPT_S * self.noise[key]
            self.executions.append(Execution(key, coordinator, now, end, end, True))
            self.push(end, _Event.HOME, key)
        else:
            ready.setdefault(self.dag_of[key], []).append(key)

    def _home(self, key: str, now: float, ready: dict[int, list[str]]) -> None:
        self.done[key] = now
        index = self.dag_of[key]
        self.bound[self.coordinators[index]].pop(key, None)
        if self.policy is Policy.LEVEL_BY_LEVEL:
            depth = self.level[key]
            self.level_left[index, depth] -= 1
            if self.level_left[index, depth] == 0:
                for agent in self.dags[index].agents:
                    if self.level[agent.key] == depth + 1:
                        self._ready(agent.key, now, ready)
            return
        for dependent in self.dependents[key]:
            self.waiting[dependent] -= 1
            if self.waiting[dependent] == 0:
                self._ready(dependent, now, ready)

    def _finish(self, node_id: str, now: float) -> None:
        state = self.nodes[node_id]
        item = state.running
        assert item is not None and item.start_s is not None
        item.end_s = now
        state.running = None
        home = now + self.mesh.network_s(item.coordinator, node_id)
        warm = state.loaded_s.get(item.model, math.inf) <= item.start_s
        self.executions.append(Execution(item.key, node_id, item.start_s, now, home, warm))
        self.push(home, _Event.HOME, item.key)

    def _bind(self, key: str, node_id: str, now: float, delay_s: float = 0.0) -> None:
        """Give `key` to `node_id`: it joins the node's queue now (a lease) and may start after `delay_s`."""
        state = self.nodes[node_id]
        agent = self.agents[key]
        coordinator = self.coordinators[self.dag_of[key]]
        warm = state.will_be_loaded(agent.model or "", now)
        item = _Item(key, agent.model or "", node_id, coordinator, now, now + delay_s, state.node.work_s(agent, warm))
        state.history.append(item)
        self.bound[coordinator][key] = item
        if state.order is None:
            state.queue.append(item)
        else:
            state.arrived[key] = item
        if delay_s > 0:
            self.push(now + delay_s, _Event.WAKE, node_id)

    def _try_start(self, state: _NodeState, now: float) -> None:
        if state.running is not None:
            return
        if state.order is None:
            if not state.queue or state.queue[0].available_s > now:
                return
            item = state.queue.popleft()
        else:
            if not state.order or state.order[0] not in state.arrived:
                return
            item = state.arrived.pop(state.order.pop(0))
        agent = self.agents[item.key]
        model = MODEL_BY_ID[item.model]
        warm = state.loaded_s.get(item.model, math.inf) <= now
        noise = self.noise[item.key]
        if not warm:
            state.loaded_s[item.model] = now + state.node.load_s(model) * noise
        item.start_s = now
        state.running = item
        self.push(now + state.node.work_s(agent, warm) * noise, _Event.FINISH, state.node.node_id)

    # ---- policies ----

    def _dispatch(self, index: int, keys: list[str], now: float) -> None:
        coordinator = self.coordinators[index]
        keys = sorted(keys, key=lambda k: (-self.rank[k], k))
        match self.policy:
            case Policy.ORC | Policy.ORC_NO_PROBE:
                self._place(coordinator, keys, now, probe=self.policy is Policy.ORC)
            case Policy.HEFT | Policy.FORECAST:
                for key in keys:
                    self._bind(key, self.plan[key].node_id, now)
            case Policy.RANDOM:
                for key in keys:
                    self._bind(key, self.rng.choice(self._eligible(key)).node_id, now)
            case Policy.ROUND_ROBIN:
                for key in keys:
                    nodes = self._eligible(key)
                    turn = (coordinator, self.agents[key].model or "")
                    count = self.turn.get(turn, 0)
                    self.turn[turn] = count + 1
                    self._bind(key, nodes[count % len(nodes)].node_id, now)
            case Policy.LEVEL_BY_LEVEL:
                for key in keys:
                    self._bind(key, coordinator, now)
            case _:
                assert_never(self.policy)

    def _eligible(self, key: str) -> tuple[SimNode, ...]:
        nodes = self.mesh.eligible(self.agents[key].model or "")
        if not nodes:
            raise ValueError(f"no node can run {key}")
        return nodes

    def _place(self, coordinator: str, keys: list[str], now: float, probe: bool) -> None:
        demands = [_demand(self.agents[k], self.rank[k]) for k in keys]
        for decision in place(demands, self._view(coordinator, now), now):
            asked = decision.probes(self.probes) if probe else decision.probes(1)
            if not asked:
                raise ValueError(f"no node can run {decision.key}: {decision.why_none()}")
            if not probe:
                self._bind(decision.key, asked[0].node_id, now)
                continue
            agent = self.agents[decision.key]
            offers = []
            for order, candidate in enumerate(asked):
                state = self.nodes[candidate.node_id]
                work = state.node.work_s(agent, state.will_be_loaded(agent.model or "", now))
                offers.append((round(state.free_at(now) + work + candidate.network_s, 3), order, candidate.node_id))
            # The Offers go out together; Execute follows the slower reply.
            round_trip = max((self.mesh.network_s(coordinator, c.node_id) for c in asked), default=0.0)
            self._bind(decision.key, min(offers)[2], now, round_trip)

    def _view(self, coordinator: str, now: float) -> ClusterView:
        """What `coordinator` knows at `now`: every node's last heartbeat, plus its own binds since."""
        views = []
        mine: dict[str, list[_Item]] = {}
        for item in self.bound[coordinator].values():
            mine.setdefault(item.node_id, []).append(item)
        for position, node in enumerate(self.mesh.nodes):
            state = self.nodes[node.node_id]
            beat = _last_beat(now, position)
            backlog = max(0.0, state.backlog_at(beat) - (now - beat))
            backlog += sum(item.estimate_s for item in mine.get(node.node_id, ()) if item.accepted_s > beat)
            loaded = [m for m, at in state.loaded_s.items() if at <= beat]
            views.append(_node_view(self.mesh, node, coordinator, loaded, backlog))
        return ClusterView(coordinator, tuple(views))


def _last_beat(now: float, position: int) -> float:
    """When node number `position` last sent a heartbeat: every HEARTBEAT_S, each node at its own phase."""
    phase = (position * 0.618034) % 1.0 * HEARTBEAT_S  # golden-ratio spacing: phases spread evenly
    return phase + math.floor((now - phase) / HEARTBEAT_S) * HEARTBEAT_S  # before time 0: the idle mesh


def simulate(policy: Policy | str, mesh: Mesh, dags: Sequence[Dag], coordinators: Sequence[str],
             rng: random.Random, noise_sigma: float = NOISE_SIGMA, probes: int = PROBES) -> Outcome:
    """Run `dags` (dag i submitted by `coordinators[i]`) on `mesh` under `policy`.

    The noise factors are drawn from `rng` first, so every policy given a `random.Random` with
    the same seed sees the same actual durations. `probes`: how many candidates `orc` asks.
    """
    policy = Policy(policy)
    if policy is Policy.LEVEL_BY_LEVEL:  # llm-orc's single device is assumed to hold every model
        everything = frozenset(MODEL_BY_ID)
        mesh = Mesh(tuple(replace(n, held=everything) if n.node_id in coordinators else n for n in mesh.nodes))
    return _Engine(policy, mesh, dags, coordinators, rng, noise_sigma, probes).run()


# ======================================================================================
# random meshes and DAGs
# ======================================================================================

def random_mesh(rng: random.Random, size: int) -> Mesh:
    """`size` devices of mixed classes; each holds a random subset of MODELS, about half loaded.

    Every model is held by at least one node.
    """
    nodes = []
    for index in range(size):
        device = rng.choices(DEVICES, weights=DEVICE_WEIGHTS)[0]
        held = {m.id for m in MODELS if rng.random() < 0.6} or {rng.choice(MODELS).id}
        nodes.append([f"n{index:02d}", device, held])
    for model in MODELS:
        if not any(model.id in held for _, _, held in nodes):
            rng.choice(nodes)[2].add(model.id)
    return Mesh(tuple(SimNode(node_id, device, frozenset(held),
                              frozenset(m for m in sorted(held) if rng.random() < 0.5))
                      for node_id, device, held in nodes))


DAG_SHAPES = ("fan_out_in", "layered", "pipeline")
MAX_AGENTS = 30


def random_dag(rng: random.Random, name: str, submit_at: float = 0.0) -> Dag:
    """A random ensemble of 3 to 30 agents, in one of the shapes of DAG_SHAPES.

    - fan_out_in: an optional first agent (a script half the time), 2-20 parallel agents, a
      synthesizer, sometimes a final reviewer;
    - layered: 2-5 layers of 1-6 agents, each depending on 1-3 of the layer above (sometimes
      one more from further up); one agent in ten a script;
    - pipeline: 2-5 steps, each reviewed by 0-3 parallel critics whose notes feed the next step.
    """
    shape = rng.choice(DAG_SHAPES)
    specs: list[tuple[bool, list[int]]] = []  # (is a script, dependencies as indices into specs)

    def add(script: bool, deps: Iterable[int]) -> int:
        specs.append((script, sorted(set(deps))))
        return len(specs) - 1

    if shape == "fan_out_in":
        first = [add(rng.random() < 0.5, [])] if rng.random() < 0.5 else []
        width = rng.randint(2, 20)
        middle = [add(False, first) for _ in range(width)]
        last = add(False, middle)
        if rng.random() < 0.3:
            add(False, [last])
    elif shape == "layered":
        above: list[int] = []
        earlier: list[int] = []
        for _ in range(rng.randint(2, 5)):
            row = []
            for _ in range(rng.randint(1, 6)):
                deps = rng.sample(above, min(len(above), rng.randint(1, 3))) if above else []
                skip = [i for i in earlier if i not in above]
                if skip and rng.random() < 0.2:
                    deps.append(rng.choice(skip))
                row.append(add(rng.random() < 0.1, deps))
            earlier += row
            above = row
    else:
        previous: list[int] = []
        for _ in range(rng.randint(2, 5)):
            step = add(False, previous)
            critics = [add(False, [step]) for _ in range(rng.randint(0, 3))]
            previous = [step, *critics]
    specs = specs[:MAX_AGENTS]  # dependencies point backwards, so a prefix is a DAG
    while len(specs) < 3:
        specs.append((False, [len(specs) - 1]))

    agents: list[Agent] = []
    max_tokens: list[int] = []
    for index, (script, deps) in enumerate(specs):
        key = f"{name}/a{index:02d}"
        after = tuple(f"{name}/a{d:02d}" for d in deps)
        if script:
            agents.append(Agent(key, None, after=after))
            max_tokens.append(200)  # its output, read by the agents after it
            continue
        model = rng.choices(MODELS, weights=MODEL_WEIGHTS)[0]
        tokens = rng.choice((64, 128, 256, 256, 512))
        # Its prompt: instructions and input, plus what its dependencies wrote (about 60% of their limit).
        prompt = min(4096, rng.randint(100, 600) + sum(int(0.6 * max_tokens[d]) for d in deps))
        agents.append(Agent(key, model.id, prompt, tokens, after))
        max_tokens.append(tokens)
    return Dag(name, tuple(agents), submit_at)


@dataclass(frozen=True)
class Case:
    """One benchmark case: a mesh, the DAGs its coordinators submit, and the seed of the noise."""

    mesh: Mesh
    dags: tuple[Dag, ...]
    coordinators: tuple[str, ...]
    noise_seed: int


def random_case(rng: random.Random, nodes: int, coordinators: int) -> Case:
    """A random mesh of `nodes` devices; `coordinators` distinct nodes each submit a random DAG at time 0."""
    mesh = random_mesh(rng, nodes)
    chosen = tuple(sorted(rng.sample([n.node_id for n in mesh.nodes], coordinators)))
    dags = tuple(random_dag(rng, f"d{i}") for i in range(coordinators))
    return Case(mesh, dags, chosen, rng.getrandbits(64))


def run_case(case: Case, policy: Policy | str, noise_sigma: float = NOISE_SIGMA, probes: int = PROBES) -> Outcome:
    return simulate(policy, case.mesh, case.dags, case.coordinators, random.Random(case.noise_seed), noise_sigma,
                    probes)


def benchmark_case(seed: int, nodes: int, coordinators: int, index: int) -> Case:
    """Case `index` of a benchmark cell. A string seed is hashed with SHA-512: the same case on every machine."""
    return random_case(random.Random(f"{seed}-{nodes}-{coordinators}-{index}"), nodes, coordinators)


# ======================================================================================
# the benchmark table
# ======================================================================================

@dataclass(frozen=True)
class Cell:
    """Ratios to HEFT for one mesh size and number of coordinators, one per case."""

    nodes: int
    coordinators: int
    makespan: Mapping[Policy, tuple[float, ...]]  # makespan(policy) / makespan(HEFT)
    dag_finish: Mapping[Policy, tuple[float, ...]]  # mean DAG finish time(policy) / HEFT's


def benchmark(node_counts: Sequence[int] = (5, 10, 20, 50), coordinator_counts: Sequence[int] = (1, 2, 4),
              cases: int = 25, seed: int = 1, policies: Sequence[Policy] = tuple(Policy),
              noise_sigma: float = NOISE_SIGMA) -> list[Cell]:
    """For every (nodes, coordinators), `cases` random cases run under every policy."""
    cells = []
    for nodes in node_counts:
        for coordinators in coordinator_counts:
            if coordinators > nodes:
                continue
            makespan: dict[Policy, list[float]] = {p: [] for p in policies}
            dag_finish: dict[Policy, list[float]] = {p: [] for p in policies}
            for index in range(cases):
                case = benchmark_case(seed, nodes, coordinators, index)
                outcomes = {p: run_case(case, p, noise_sigma) for p in dict.fromkeys((Policy.HEFT, *policies))}
                heft = outcomes[Policy.HEFT]
                for policy in policies:
                    makespan[policy].append(outcomes[policy].makespan_s / heft.makespan_s)
                    dag_finish[policy].append(statistics.fmean(outcomes[policy].dag_finish_s.values())
                                              / statistics.fmean(heft.dag_finish_s.values()))
            cells.append(Cell(nodes, coordinators, {p: tuple(r) for p, r in makespan.items()},
                              {p: tuple(r) for p, r in dag_finish.items()}))
    return cells
