"""Placement: which node runs each generation, decided as data (`place(demands, view, now)`).

Pure: the coordinator's shell builds a `ClusterView` from what its peers told it, asks
`place` for decisions, and performs them (Offer to the best two, Execute on the better
reply). The simulator replays the same function on synthetic meshes.

For each demand, highest critical-path rank first:
1. **Filter** every node, each rejected one with a reason (dead, no such model, memory does
   not fit, `local_only`, missing tag, failed this agent earlier in the run, caught lying to
   the coordinator recently).
2. **Score** the rest by estimated finish time: when the node has a slot for it (see below) or
   when the input is ready, whichever is later, then load time if the model is cold + prompt
   tokens / prefill rate + max tokens / decode rate at the batch it joins + network. A node carrying a preferred tag has its estimate cut by `PREFER_SLACK` when
   compared, so it is chosen unless another finishes more than that much sooner. Ties go to the warm model, then to the smaller node id, so every
   coordinator that sees the same view makes the same choice.

**Batches.** A node runs up to a model's `capacity` sequences at once, decoded together; each
decodes at the per-sequence rate it measured for that batch size (`decode_rate`). A node
already running r sequences (those it reported in its load, plus those this call gave it that
still run then) has a slot while r < capacity: the demand starts at once and decodes at the rate
of batch r + 1. With every slot taken it waits for the first one to come free: the reported
sequences are counted done once the node's backlog, worked `capacity` at a time, is (the node's
own Offer estimate counts the same way), and each one this call placed at its own estimated end.
A model of capacity 1 is the old one-at-a-time node: it waits for the whole backlog.
Sequences that join later slow the ones already running; the estimate ignores that.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace

# Speeds a node has not measured yet (a model it never ran): deliberately pessimistic,
# so a node with a measurement wins over one without unless it is much busier.
UNMEASURED_PREFILL_TOKENS_PER_S = 50.0
UNMEASURED_DECODE_TOKENS_PER_S = 5.0
# Reading weights from storage, when the node does not say: a slow SSD / a fast SD card.
DEFAULT_LOAD_BYTES_PER_S = 200e6
# A model needs roughly its file size in memory plus a working margin (KV cache, buffers).
MEMORY_MARGIN_BYTES = 64 * 2**20
MEMORY_FACTOR = 1.1
# A node with a preferred tag wins unless another finishes this much sooner (relative).
PREFER_SLACK = 0.25


class Exclusion(enum.Enum):
    """Why a node cannot run a demand (the words `orc plan` shows)."""

    DEAD = "dead"
    NO_MODEL = "no such model"
    MEMORY = "memory does not fit"
    LOCAL_ONLY = "local_only"
    MISSING_TAG = "missing tag"
    FAILED = "failed earlier in this run"
    DISTRUSTED = "distrusted"
    UNAVAILABLE = "model unavailable"


@dataclass(frozen=True)
class HeldModel:
    """A model a node serves, as it described it."""

    id: str
    runtime: str
    sha256: str
    size_bytes: int
    loaded: bool
    prefill_tokens_per_s: float | None = None
    decode_tokens_per_s: float | None = None
    capacity: int = 1  # sequences of it run at once there, decoded together
    batch_decode_tokens_per_s: tuple[float, ...] = ()  # per sequence at batch 1, 2, ... (measured)
    unavailable: str = ""  # why it cannot run there now; empty when it can


@dataclass(frozen=True)
class NodeView:
    """One node as the coordinator sees it now."""

    node_id: str
    name: str
    alive: bool
    models: tuple[HeldModel, ...]
    tags: frozenset[str] = frozenset()
    memory_available_bytes: int | None = None
    backlog_s: float = 0.0  # work it already accepted, by its own estimate, seconds
    network_s: float = 0.0  # a round trip from the coordinator plus the transfer, seconds
    load_bytes_per_s: float = DEFAULT_LOAD_BYTES_PER_S
    running: int = 0  # sequences generating there now, whatever their model (its load)
    queued: int = 0  # sequences waiting there for a slot (its load)


@dataclass(frozen=True)
class ClusterView:
    """Every node the coordinator knows, itself included."""

    coordinator: str
    nodes: tuple[NodeView, ...]

    def node(self, node_id: str) -> NodeView | None:
        return next((n for n in self.nodes if n.node_id == node_id), None)


@dataclass(frozen=True)
class Demand:
    """One generation to place: an LLM agent, or one instance of a fan-out."""

    key: str  # agent name; "name[i]" for a fan-out instance
    model_id: str
    prompt_tokens: int
    max_tokens: int
    runtime: str | None = None  # pinned with "id@runtime"
    sha256: str | None = None  # the weights the coordinator knows; None when it has no copy
    rank: float = 0.0  # critical-path length from here to the end of the DAG, seconds
    ready_at: float | None = None  # when its input is ready (forecasts); None: now
    local_only: bool = False
    require_tags: frozenset[str] = frozenset()
    prefer_tags: frozenset[str] = frozenset()
    exclude: frozenset[str] = frozenset()  # nodes that failed it earlier in this run
    distrusted: frozenset[str] = frozenset()  # nodes caught lying to the coordinator, for a while


@dataclass(frozen=True)
class Estimate:
    """When a candidate node would finish a demand, and why."""

    node_id: str
    name: str
    start_s: float  # absolute: when it could begin
    load_s: float
    prefill_s: float
    decode_s: float
    network_s: float
    warm: bool
    preferred: bool
    runtime: str
    sha256: str = ""  # the digest of the variant scored, to ask that node for exactly those weights

    @property
    def work_s(self) -> float:
        """The time the node itself is busy with the demand."""
        return self.load_s + self.prefill_s + self.decode_s

    @property
    def finish_s(self) -> float:
        return self.start_s + self.work_s + self.network_s


@dataclass(frozen=True)
class Rejection:
    node_id: str
    name: str
    reason: Exclusion
    detail: str


@dataclass(frozen=True)
class Decision:
    """The candidates for one demand, best first, and every node that was ruled out."""

    key: str
    candidates: tuple[Estimate, ...]
    rejected: tuple[Rejection, ...] = field(default=())

    @property
    def choice(self) -> Estimate | None:
        return self.candidates[0] if self.candidates else None

    def probes(self, count: int = 2) -> tuple[Estimate, ...]:
        """The candidates to ask for an Offer (probe-and-bind-late asks the best two)."""
        return self.candidates[:count]

    def why_none(self) -> str:
        """A one-line account of why no node can run the demand."""
        if not self.rejected:
            return "no node is known"
        return "; ".join(f"{r.name}: {r.detail}" for r in self.rejected)


@dataclass(frozen=True)
class Occupancy:
    """What a node is busy with, as one placement call sees it: the sequences it reported (running
    or queued) until its backlog is done, and the sequences this call gave it, each (start, end)."""

    reported: int = 0
    backlog_s: float = 0.0  # work it reported, seconds: done `capacity` at a time
    placed: tuple[tuple[float, float], ...] = ()

    def adding(self, start_s: float, end_s: float) -> "Occupancy":
        return replace(self, placed=(*self.placed, (start_s, end_s)))


def occupancy_of(node: NodeView) -> Occupancy:
    """A node's occupancy from its view. A backlog with nothing reported running (leases, work
    placed since its last beat) takes a slot too."""
    backlog = max(node.backlog_s, 0.0)
    reported = max(node.running, 0) + max(node.queued, 0)
    return Occupancy(max(reported, 1) if backlog > 0 else reported, backlog)


def decode_rate(model: HeldModel, batch: int) -> float:
    """Tokens per second of one sequence decoded together with `batch - 1` others.

    Never faster than one alone. Beyond the largest batch measured, the node's total rate is
    taken as no higher than it was there (the batch's rate divided among more); never measured
    batched at all, as no gain (one alone's rate divided among the batch): a rate is measured,
    not assumed.
    """
    alone = model.decode_tokens_per_s or (model.batch_decode_tokens_per_s or (UNMEASURED_DECODE_TOKENS_PER_S,))[0]
    rates = model.batch_decode_tokens_per_s
    if batch <= 1:
        return alone
    if batch <= len(rates):
        return min(rates[batch - 1], alone)
    if len(rates) > 1:
        return min(rates[-1] * len(rates) / batch, alone)
    return alone / batch


def slot_start(occupancy: Occupancy, capacity: int, ready_s: float, now: float) -> tuple[float, int]:
    """When a node first has a slot for one more sequence, at `ready_s` or later, and the size of
    the batch it joins there.

    Never before the last sequence this call placed there started (like HEFT without insertion:
    no earlier gap is filled). The reported sequences hold their slots until the backlog is done,
    worked `capacity` at a time.
    """
    capacity = max(capacity, 1)
    drained = now + occupancy.backlog_s / capacity
    at = max([ready_s, *(start for start, _ in occupancy.placed)])
    for _ in range(len(occupancy.placed) + 2):  # each turn passes one end: bounded
        busy = (occupancy.reported if at < drained else 0) + sum(1 for start, end in occupancy.placed
                                                                  if start <= at < end)
        if busy < capacity:
            return at, busy + 1
        at = min(t for t in (drained, *(end for _, end in occupancy.placed)) if t > at)
    return at, capacity  # unreachable: after every end nothing is busy


def place(demands: Sequence[Demand], view: ClusterView, now: float) -> tuple[Decision, ...]:
    """A decision for each demand, in the order they should be bound (highest rank first).

    Demands placed by one call share the nodes: each choice takes a slot of the chosen node
    until its estimated end before the next demand is scored, so ten ready agents are spread
    over the mesh (or batched where that finishes them sooner) instead of all landing on the
    fastest node.
    """
    occupied = {n.node_id: occupancy_of(n) for n in view.nodes}
    warmed: set[tuple[str, str, str]] = set()
    decisions = []
    for demand in sorted(demands, key=lambda d: (-d.rank, d.key)):
        decision = decide(demand, view, occupied, now, frozenset(warmed))
        chosen = decision.choice
        if chosen is not None:
            occupied[chosen.node_id] = occupied[chosen.node_id].adding(chosen.start_s, chosen.start_s + chosen.work_s)
            warmed.add((chosen.node_id, demand.model_id, chosen.runtime))
        decisions.append(decision)
    return tuple(decisions)


def forecast(demands: Sequence[Demand], after: Mapping[str, Sequence[str]], view: ClusterView,
             now: float) -> tuple[Decision, ...]:
    """Place a whole DAG ahead of time as if every estimate came true (what `orc plan` shows).

    `after` maps every agent to its dependencies; agents without a demand (scripts, nested
    ensembles) are taken to cost nothing, so they only pass their inputs' readiness on.
    Demands are bound highest rank first among those whose inputs are placed: HEFT's list
    scheduling, without its insertion into idle gaps.
    """
    by_key = {d.key: d for d in demands}
    finish: dict[str, float] = {}
    occupied = {n.node_id: occupancy_of(n) for n in view.nodes}
    warmed: set[tuple[str, str, str]] = set()
    decisions: list[Decision] = []
    passed: dict[str, float] = {}  # readiness of agents without a demand, once known

    def ready_of(name: str, seen: frozenset[str] = frozenset()) -> float | None:
        """When `name`'s output exists; None while one of the demands it needs is unplaced."""
        if name in finish:
            return finish[name]
        if name in passed:
            return passed[name]
        if name in by_key or name in seen:
            return None
        times = [ready_of(dep, seen | {name}) for dep in after.get(name, ())]
        if any(t is None for t in times):
            return None
        passed[name] = max(times, default=now)  # type: ignore[type-var]
        return passed[name]

    left = sorted(demands, key=lambda d: (-d.rank, d.key))
    while left:
        for index, demand in enumerate(left):
            inputs = [ready_of(dep) for dep in after.get(demand.key, ())]
            if all(t is not None for t in inputs):
                break
        else:  # a cycle among demands: cannot happen for a validated ensemble
            raise ValueError("dependencies form a cycle")
        left.pop(index)
        ready = max([t for t in inputs if t is not None], default=now)
        decision = decide(replace(demand, ready_at=ready), view, occupied, now, frozenset(warmed))
        chosen = decision.choice
        if chosen is not None:
            occupied[chosen.node_id] = occupied[chosen.node_id].adding(chosen.start_s, chosen.start_s + chosen.work_s)
            warmed.add((chosen.node_id, demand.model_id, chosen.runtime))
            finish[demand.key] = chosen.finish_s
        else:
            finish[demand.key] = ready  # it will fail at once; its dependents still run
        decisions.append(decision)
    return tuple(decisions)


def decide(demand: Demand, view: ClusterView, occupied: Mapping[str, Occupancy], now: float,
           warmed: frozenset[tuple[str, str, str]] = frozenset()) -> Decision:
    """Filter and score every node for one demand, given what each node is busy with and which
    (node, model, runtime) an earlier choice of the same call already loads."""
    candidates: list[Estimate] = []
    rejected: list[Rejection] = []
    ready = now if demand.ready_at is None else max(demand.ready_at, now)
    for node in sorted(view.nodes, key=lambda n: n.node_id):
        outcome = _estimate(demand, node, view.coordinator, occupied.get(node.node_id, Occupancy()), ready, now,
                            warmed)
        if isinstance(outcome, Rejection):
            rejected.append(outcome)
        else:
            candidates.append(outcome)
    if demand.prefer_tags and any(c.preferred for c in candidates):
        def order(c: Estimate) -> tuple:
            score = c.finish_s - now
            return (round(score * (1.0 - PREFER_SLACK if c.preferred else 1.0), 3), not c.warm, c.node_id)
    else:
        def order(c: Estimate) -> tuple:
            return (round(c.finish_s - now, 3), not c.warm, c.node_id)
    return Decision(demand.key, tuple(sorted(candidates, key=order)), tuple(rejected))


def _estimate(demand: Demand, node: NodeView, coordinator: str, occupancy: Occupancy, ready: float, now: float,
              warmed: frozenset[tuple[str, str, str]] = frozenset()) -> Estimate | Rejection:
    def reject(reason: Exclusion, detail: str) -> Rejection:
        return Rejection(node.node_id, node.name, reason, detail)

    if demand.local_only and node.node_id != coordinator:
        return reject(Exclusion.LOCAL_ONLY, "local_only: the agent stays on the coordinator's device")
    if node.node_id in demand.exclude:
        return reject(Exclusion.FAILED, "failed earlier in this run (this generation failed there)")
    if node.node_id in demand.distrusted:
        return reject(Exclusion.DISTRUSTED, "distrusted: it lied to this coordinator recently (an impossible "
                                            "estimate or result)")
    if not node.alive:
        return reject(Exclusion.DEAD, "dead (no beat from it)")
    missing = sorted(demand.require_tags - node.tags)
    if missing:
        return reject(Exclusion.MISSING_TAG, f"missing tag{'s' if len(missing) > 1 else ''} {', '.join(missing)}")
    variants = [m for m in node.models
                if m.id == demand.model_id and (demand.runtime is None or m.runtime == demand.runtime)]
    if not variants:
        pinned = f"@{demand.runtime}" if demand.runtime else ""
        return reject(Exclusion.NO_MODEL, f"no model '{demand.model_id}{pinned}'")
    if demand.sha256:
        variants = [m for m in variants if m.sha256 == demand.sha256]
        if not variants:
            return reject(Exclusion.NO_MODEL, f"its '{demand.model_id}' has other weights "
                                              f"(not sha256 {demand.sha256[:12]}…)")
    available = [m for m in variants if not m.unavailable]
    if not available:
        return reject(Exclusion.UNAVAILABLE, f"'{demand.model_id}' cannot run there now: {variants[0].unavailable}")
    variants = [replace(m, loaded=True) if (node.node_id, m.id, m.runtime) in warmed else m for m in available]
    fitting = [m for m in variants if m.loaded or _fits(m, node)]
    if not fitting:
        smallest = min(variants, key=lambda m: m.size_bytes)
        return reject(Exclusion.MEMORY, f"memory does not fit ({_mib(_needed(smallest))} needed, "
                                        f"{_mib(node.memory_available_bytes or 0)} available)")
    model = min(fitting, key=lambda m: (not m.loaded, -(m.decode_tokens_per_s or 0.0), m.runtime))
    prefill = model.prefill_tokens_per_s or UNMEASURED_PREFILL_TOKENS_PER_S
    start, batch = slot_start(occupancy, model.capacity, ready, now)
    decode = decode_rate(model, batch)
    return Estimate(
        node_id=node.node_id, name=node.name, start_s=start,
        load_s=0.0 if model.loaded else model.size_bytes / max(node.load_bytes_per_s, 1.0),
        prefill_s=max(demand.prompt_tokens, 0) / max(prefill, 1e-3),
        decode_s=max(demand.max_tokens, 0) / max(decode, 1e-3),
        network_s=0.0 if node.node_id == coordinator else max(node.network_s, 0.0),
        warm=model.loaded, preferred=bool(demand.prefer_tags & node.tags), runtime=model.runtime,
        sha256=model.sha256,
    )


def _needed(model: HeldModel) -> float:
    return model.size_bytes * MEMORY_FACTOR + MEMORY_MARGIN_BYTES


def _fits(model: HeldModel, node: NodeView) -> bool:
    return node.memory_available_bytes is None or _needed(model) <= node.memory_available_bytes


def _mib(n: float) -> str:
    return f"{n / 2**20:.0f} MiB"


def estimated_prompt_tokens(text_chars: int) -> int:
    """Tokens in a prompt of this many characters, before a tokenizer saw it (~4 chars a token)."""
    return max(1, (text_chars + 3) // 4)
