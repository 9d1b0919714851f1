"""The discrete-event engine: DAGs run on a simulated mesh, placed by orc's real `place()` or a baseline.

`simulate(policy, mesh, dags, coordinators, rng)` runs the DAGs submitted by their
coordinators on one mesh under one policy and returns the makespan, each DAG's finish time and
every execution. An agent becomes ready when its own dependencies' results reached its
coordinator (no level barrier, except for `level_by_level`). A node runs up to its `capacity`
generations at once, whatever their models, taken from a FIFO queue (a static schedule instead
runs its own order); at capacity 1, one at a time. Each generation's actual work is the
estimate `place()` computes from the node's rates, times a noise factor per agent (lognormal,
median 1: real answers stop before `max_tokens` or run slower): a cold load and the prompt at
their own rates, then its tokens at the per-sequence decode rate of the node's current batch
size (every generation running there counts, as `place()` counts a node's running sequences).
When the batch grows or shrinks, the rest of every running generation's decoding is rescaled
by the ratio of the old rate to the new one: rates are piecewise constant between events, so
the arithmetic is exact and a generation whose batch never changes takes exactly its estimate
× noise. A remote agent's result reaches its coordinator `network_s` after the node finished;
a cold model is read from storage first (once: a generation starting while it loads waits for
that load) and stays loaded. Scripts run on the coordinator beside the generation slots, for
`SCRIPT_S`.

Policies (every one draws nodes from the same filter, `SimMesh.eligible`: holds the model and it
fits in memory):
- `orc`: the coordinator calls `place()` with a `ClusterView` of what it would know, each time
  agents become ready: every node's backlog as of its last heartbeat (up to `HEARTBEAT_S`
  stale, aged by the time since, with the sequences it reported running and queued), plus the
  work this coordinator bound since; then probes the best `PROBES` candidates for their current
  estimate (what the node's Offer answers from its exact queue at that moment) and binds on the
  better, paying the probe's round trip before the agent can start.
- `orc_no_probe`: the same, binding on `place()`'s first choice without probing.
- `forecast`: each coordinator's `forecast()` of its DAG at submission, run as a static schedule.
- `heft`: HEFT (Topcuoglu, Hariri and Wu, 2002) over all the submitted DAGs at once, run as a
  static schedule (node and per-node order kept) under the same noise; a node of capacity c is
  c processors to it (baselines.heft_schedule).
- `random`, `round_robin`, `level_by_level`: the naive policies of the baselines module.

Owns the policies' names, the events, the nodes' queues and what each coordinator knows.
May import: the workload and baselines modules and orc.scheduler.placement (`place()`, the
view types). Not the benchmark. Pure and deterministic: everything random comes from the
`random.Random` passed in, time is simulated (no threads, sockets or clock).
"""

from __future__ import annotations

import enum
import heapq
import math
import random
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from typing_extensions import assert_never

from orc.scheduler.dag import dependents_of
from orc.scheduler.placement import ClusterView, place
from orc.scheduler.simulator.baselines import (
    LevelBarrier,
    RoundRobin,
    Slot,
    forecast_schedule,
    heft_schedule,
    llm_orc_mesh,
    random_node,
)
from orc.scheduler.simulator.workload import MODEL_BY_ID, SCRIPT_S, Agent, Case, Dag, SimMesh, SimNode, upward_ranks

HEARTBEAT_S = 1.0  # a peer's load in the coordinator's view is at most this old
PROBES = 2  # probe-and-bind-late asks the best two (DESIGN.md section 7)
NOISE_SIGMA = 0.15  # lognormal sigma of actual / estimated duration


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


def simulate(policy: Policy | str, mesh: SimMesh, dags: Sequence[Dag], coordinators: Sequence[str],
             rng: random.Random, noise_sigma: float = NOISE_SIGMA, probes: int = PROBES) -> Outcome:
    """Run `dags` (dag i submitted by `coordinators[i]`) on `mesh` under `policy`.

    The noise factors are drawn from `rng` first, so every policy given a `random.Random` with
    the same seed sees the same actual durations. `probes`: how many candidates `orc` asks.
    """
    policy = Policy(policy)
    if policy is Policy.LEVEL_BY_LEVEL:
        mesh = llm_orc_mesh(mesh, coordinators)
    return _Engine(policy, mesh, dags, coordinators, rng, noise_sigma, probes).run()


def run_case(case: Case, policy: Policy | str, noise_sigma: float = NOISE_SIGMA, probes: int = PROBES) -> Outcome:
    """`simulate` one case, its noise drawn from the case's own seed."""
    return simulate(policy, case.mesh, case.dags, case.coordinators, random.Random(case.noise_seed), noise_sigma,
                    probes)


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
    unbatched_until: float = 0.0  # once started: when its load and prompt are done and its decoding begins
    projected_s: float = 0.0  # once started: when it ends if the batch stays as it is


@dataclass
class _NodeState:
    node: SimNode
    loaded_s: dict[str, float]  # model -> when it finished loading
    queue: deque[_Item] = field(default_factory=deque)
    running: list[_Item] = field(default_factory=list)  # decoded together: at most the node's capacity
    history: list[_Item] = field(default_factory=list)
    order: list[str] | None = None  # a static schedule's order; None: FIFO
    arrived: dict[str, _Item] = field(default_factory=dict)  # static: requests waiting for their turn
    version: int = 0  # bumped whenever the batch changes: a FINISH pushed for an older batch is stale

    @property
    def occupied(self) -> int:
        """Generations running or waiting here."""
        return len(self.running) + len(self.queue) + len(self.arrived)

    def batch_for_one_more(self) -> int:
        """The size of the batch one more generation would join here now (the node's own estimate)."""
        return min(self.occupied + 1, self.node.capacity)

    def offer_s(self, work_s: float, now: float) -> float:
        """When this node expects to finish a generation of `work_s` (at the batch it joins) asked now,
        by its own estimates: what it answers to a probe. With a free slot it starts at once;
        otherwise after the admitted work, done `capacity` at a time (worker/admission.py's rule)."""
        if self.occupied < self.node.capacity:
            return now + work_s
        admitted = sum(max(0.0, item.estimate_s - (now - item.start_s)) for item in self.running
                       if item.start_s is not None)
        admitted += sum(item.estimate_s for item in self.queue)
        return now + admitted / self.node.capacity + work_s

    def will_be_loaded(self, model: str, now: float) -> bool:
        if self.loaded_s.get(model, math.inf) <= now:
            return True
        return any(item.model == model for item in [*self.running, *self.queue])

    def load_at(self, moment: float) -> tuple[float, int, int]:
        """What this node reported in its heartbeat at `moment`: its backlog, and the generations
        running and queued there."""
        total, running, queued = 0.0, 0, 0
        for item in self.history:
            if item.accepted_s > moment or (item.end_s is not None and item.end_s <= moment):
                continue
            if item.start_s is not None and item.start_s <= moment:
                total += max(0.0, item.estimate_s - (moment - item.start_s))
                running += 1
            else:
                total += item.estimate_s
                queued += 1
        return total, running, queued


class _Engine:
    def __init__(self, policy: Policy, mesh: SimMesh, dags: Sequence[Dag], coordinators: Sequence[str],
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
        self.dependents = dependents_of({key: agent.after for key, agent in self.agents.items()})
        self.waiting = {k: len(a.after) for k, a in self.agents.items()}
        self.barrier = LevelBarrier(dags) if policy is Policy.LEVEL_BY_LEVEL else None
        self.nodes = {n.node_id: _NodeState(n, {m: -math.inf for m in n.warm}) for n in mesh.nodes}
        self.touched: set[str] = set()  # nodes that may start something at the end of this instant
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
        self.round_robin = RoundRobin()
        self.done: dict[str, float] = {}
        self.executions: list[Execution] = []
        self.events: list[tuple[float, int, _Event, str, int]] = []
        self.sequence = 0

    # ---- events ----

    def push(self, at: float, event: _Event, subject: str, version: int = 0) -> None:
        self.sequence += 1  # equal times pop in the order pushed
        heapq.heappush(self.events, (at, self.sequence, event, subject, version))

    def run(self) -> Outcome:
        for index, dag in enumerate(self.dags):
            self.push(dag.submit_at, _Event.SUBMIT, str(index))
        while self.events:
            # Everything that happens at one instant first, then each coordinator places what became ready.
            now = self.events[0][0]
            ready: dict[int, list[str]] = {}
            while self.events and self.events[0][0] == now:
                _, _, event, subject, version = heapq.heappop(self.events)
                match event:
                    case _Event.SUBMIT:
                        for agent in self.dags[int(subject)].agents:
                            if not agent.after:
                                self._ready(agent.key, now, ready)
                    case _Event.FINISH:
                        if version == self.nodes[subject].version:  # else the batch changed since
                            self._finish(subject, now)
                    case _Event.HOME:
                        self._home(subject, now, ready)
                    case _Event.WAKE:
                        self.touched.add(subject)  # the node may start it: below
                    case _:
                        assert_never(event)
            for index in sorted(ready):
                self._dispatch(index, ready[index], now)
            # Only a node given work or freed a slot may start something; in mesh order, as all would.
            for node_id in [n for n in self.nodes if n in self.touched]:
                self._try_start(self.nodes[node_id], now)
            self.touched.clear()
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
        self.bound[self.coordinators[self.dag_of[key]]].pop(key, None)
        if self.barrier is not None:
            for released in self.barrier.home(key):
                self._ready(released, now, ready)
            return
        for dependent in self.dependents[key]:
            self.waiting[dependent] -= 1
            if self.waiting[dependent] == 0:
                self._ready(dependent, now, ready)

    def _finish(self, node_id: str, now: float) -> None:
        """The generations of `node_id` that end now leave its batch; the rest speed up."""
        state = self.nodes[node_id]
        ending = sorted((item for item in state.running if item.projected_s <= now), key=lambda item: item.key)
        assert ending, "a current FINISH event always has a generation ending"
        before = len(state.running)
        state.running = [item for item in state.running if item.projected_s > now]
        _rebatch(state, now, before, len(state.running))
        for item in ending:
            assert item.start_s is not None
            item.end_s = now
            home = now + self.mesh.network_s(item.coordinator, node_id)
            warm = state.loaded_s.get(item.model, math.inf) <= item.start_s
            self.executions.append(Execution(item.key, node_id, item.start_s, now, home, warm))
            self.push(home, _Event.HOME, item.key)
        self._next_finish(state)
        self.touched.add(node_id)

    def _next_finish(self, state: _NodeState) -> None:
        """The batch changed: the FINISH pushed before is stale, push the new first end."""
        state.version += 1
        if state.running:
            self.push(min(item.projected_s for item in state.running), _Event.FINISH, state.node.node_id,
                      state.version)

    def _bind(self, key: str, node_id: str, now: float, delay_s: float = 0.0) -> None:
        """Give `key` to `node_id`: it joins the node's queue now (a lease) and may start after `delay_s`."""
        state = self.nodes[node_id]
        agent = self.agents[key]
        coordinator = self.coordinators[self.dag_of[key]]
        warm = state.will_be_loaded(agent.model or "", now)
        item = _Item(key, agent.model or "", node_id, coordinator, now, now + delay_s,
                     state.node.work_s(agent, warm, state.batch_for_one_more()))
        state.history.append(item)
        self.bound[coordinator][key] = item
        if state.order is None:
            state.queue.append(item)
        else:
            state.arrived[key] = item
        if delay_s > 0:
            self.push(now + delay_s, _Event.WAKE, node_id)
        self.touched.add(node_id)

    def _try_start(self, state: _NodeState, now: float) -> None:
        """Start what the node may start now, while it has a free slot."""
        if len(state.running) >= state.node.capacity or not (state.queue or state.arrived):
            return  # the common case, for every node at every instant: nothing to start
        started = False
        while len(state.running) < state.node.capacity:
            item = _next_up(state, now)
            if item is None:
                break
            self._start(state, item, now)
            started = True
        if started:
            self._next_finish(state)

    def _start(self, state: _NodeState, item: _Item, now: float) -> None:
        agent = self.agents[item.key]
        model = MODEL_BY_ID[item.model]
        noise = self.noise[item.key]
        loaded = state.loaded_s.get(item.model, math.inf)
        warm = loaded <= now
        begin = now if loaded == math.inf or warm else loaded  # while another loads it: after that load
        if loaded == math.inf:
            state.loaded_s[item.model] = now + state.node.load_s(model) * noise
        batch = len(state.running) + 1
        _rebatch(state, now, batch - 1, batch)
        cold = loaded == math.inf
        item.start_s = now
        item.unbatched_until = begin + state.node.unbatched_s(agent, not cold) * noise
        item.projected_s = begin + state.node.work_s(agent, not cold, batch) * noise
        state.running.append(item)

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
                    self._bind(key, random_node(self._eligible(key), self.rng).node_id, now)
            case Policy.ROUND_ROBIN:
                for key in keys:
                    model = self.agents[key].model or ""
                    self._bind(key, self.round_robin.next(coordinator, model, self._eligible(key)).node_id, now)
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
        demands = [self.agents[k].demand(self.rank[k]) for k in keys]
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
                work = state.node.work_s(agent, state.will_be_loaded(agent.model or "", now),
                                         state.batch_for_one_more())
                offers.append((round(state.offer_s(work, now) + candidate.network_s, 3), order, candidate.node_id))
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
            backlog, running, queued = state.load_at(beat)
            # Aged since the beat: the generations it reported running work it off together.
            backlog = max(0.0, backlog - (now - beat) * max(1, running))
            backlog += sum(item.estimate_s for item in mine.get(node.node_id, ()) if item.accepted_s > beat)
            loaded = [m for m, at in state.loaded_s.items() if at <= beat]
            views.append(self.mesh.node_view(node, coordinator, loaded, backlog, running, queued))
        return ClusterView(coordinator, tuple(views))


def _next_up(state: _NodeState, now: float) -> _Item | None:
    """The generation the node starts next if it has a slot, taken off its queue; None if none may start."""
    if state.order is None:
        if not state.queue or state.queue[0].available_s > now:
            return None  # FIFO: the head of the queue waits for its request, and the rest behind it
        return state.queue.popleft()
    if not state.order or state.order[0] not in state.arrived:
        return None
    return state.arrived.pop(state.order.pop(0))


def _rebatch(state: _NodeState, now: float, before: int, after: int) -> None:
    """The node's batch goes from `before` to `after` generations at `now`: what is left of each
    running generation's decoding takes the old per-sequence rate ÷ the new one times as long.
    Its load and prompt, not slowed by the batch, keep their end."""
    if before == 0 or after == 0 or before == after:
        return
    curve = state.node.batch_curve
    ratio = curve[before - 1] / curve[after - 1]
    for item in state.running:
        decoding_from = max(now, item.unbatched_until)
        if item.projected_s > decoding_from:
            item.projected_s = decoding_from + (item.projected_s - decoding_from) * ratio


def _last_beat(now: float, position: int) -> float:
    """When node number `position` last sent a heartbeat: every HEARTBEAT_S, each node at its own phase."""
    phase = (position * 0.618034) % 1.0 * HEARTBEAT_S  # golden-ratio spacing: phases spread evenly
    return phase + math.floor((now - phase) / HEARTBEAT_S) * HEARTBEAT_S  # before time 0: the idle mesh
