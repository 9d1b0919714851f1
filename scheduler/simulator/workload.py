"""The simulated world: devices, models, meshes, DAGs, and random cases of them.

Owns the model family and the device classes with their rates, a mesh's nodes (which models
each holds and has loaded, the memory filter every policy shares, the network between two
nodes), the DAGs' agents, the generators of random meshes, DAGs and cases, each agent's
upward rank on a mesh, and the translation of all this into `place()`'s input types
(`Demand`, `NodeView`).

May import: orc.scheduler.placement (its memory rule and input types) and orc.scheduler.dag
(graph algorithms). Nothing else of the simulator: the baselines, the event engine and the
benchmark build on this module, never the other way round. Pure: everything random comes
from the `random.Random` passed in.
"""

from __future__ import annotations

import random
import statistics
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace

from orc.scheduler.dag import critical_path_lengths_of
from orc.scheduler.placement import MEMORY_FACTOR, MEMORY_MARGIN_BYTES, Demand, HeldModel, NodeView

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

SCRIPT_S = 0.05  # a script agent on the coordinator: a short Python process
RUNTIME = "llama_cpp"

# Batches: a node decodes up to `capacity` sequences together, each at its model's decode rate
# alone times the factor below for the batch size (index 0: one alone). PLACEHOLDER, not a
# measurement: decoding a small model on a CPU is bound by memory bandwidth, so one more sequence
# in the batch costs each a little; these are round numbers of that shape (4 together: 2.6× the
# throughput of one alone). Prompt reading and cold loads are not slowed by the batch.
# Each sequence's decode rate at batch 1..4 relative to alone, from SmolLM2-135M Q4_1 decode steps
# on a two-core AMD EPYC (9.3, 16.9, 21.5 and 23.3 ms for 1 to 4 sequences; docs/runtimes.md).
BATCH_CURVE = (1.0, 0.55, 0.43, 0.40)
BATCH_CURVE_SOURCE = ("SmolLM2-135M Q4_1 decode steps of 9.3, 16.9, 21.5 and 23.3 ms for 1 to 4 sequences "
                      "on a two-core AMD EPYC (docs/runtimes.md)")  # what docs/benchmarks.md says the curve is


@dataclass(frozen=True)
class SimNode:
    """One device of the mesh: the models it holds, which of them are loaded at time 0, and how
    many sequences it decodes at once (`capacity`, the same for every model it holds) with the
    per-sequence factor of `batch_curve` at each batch size."""

    node_id: str
    device: DeviceClass
    held: frozenset[str]
    warm: frozenset[str] = frozenset()
    capacity: int = 1
    batch_curve: tuple[float, ...] = BATCH_CURVE
    # Per model id: prompt tokens/s, decode tokens/s at batch 1 .. capacity, and the cold and warm
    # HeldModel of node views. Derived once: simulations ask for them millions of times.
    _speeds: Mapping[str, tuple[float, tuple[float, ...]]] = field(init=False, repr=False, compare=False)
    _offers: Mapping[str, tuple[HeldModel, HeldModel]] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        curve = self.batch_curve
        if not 1 <= self.capacity <= len(curve):
            raise ValueError(f"capacity {self.capacity} needs a batch curve that long (it has {len(curve)})")
        if curve[0] != 1.0 or any(not 0 < later <= earlier for earlier, later in zip(curve, curve[1:])):
            raise ValueError("a batch curve starts at 1.0 and never rises (a larger batch is never faster each)")
        speeds, offers = {}, {}
        for model in MODELS:
            prefill, decode = self.rates(model)
            batch = tuple(decode * factor for factor in curve[:self.capacity])
            speeds[model.id] = prefill, batch
            cold = HeldModel(id=model.id, runtime=RUNTIME, sha256=f"sha256-{model.id}", size_bytes=model.size_bytes,
                             loaded=False, prefill_tokens_per_s=prefill, decode_tokens_per_s=decode,
                             capacity=self.capacity, batch_decode_tokens_per_s=batch)
            offers[model.id] = cold, replace(cold, loaded=True)
        object.__setattr__(self, "_speeds", speeds)
        object.__setattr__(self, "_offers", offers)

    def rates(self, model: ModelKind) -> tuple[float, float]:
        """Prompt and decode tokens/s of `model` here, one sequence alone (what the node measured)."""
        return model.prefill_tokens_per_s * self.device.speed, model.decode_tokens_per_s * self.device.speed

    def batch_rates(self, model: ModelKind) -> tuple[float, ...]:
        """Decode tokens/s of each sequence of `model` at batch 1 .. capacity (what the node advertises)."""
        return self._speeds[model.id][1]

    def offer(self, model_id: str, loaded: bool) -> HeldModel:
        """`model_id` as this node describes it to `place()`."""
        return self._offers[model_id][loaded]

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

    def work_s(self, agent: Agent, warm: bool, batch: int = 1) -> float:
        """The estimate of the node's busy time for `agent` decoded in a batch of `batch`, as `place()`
        computes it (ignoring the sequences that join or leave the batch later)."""
        model = MODEL_BY_ID[agent.model or ""]
        prefill, rates = self._speeds[model.id]
        decode = rates[min(max(batch, 1), self.capacity) - 1]
        return (0.0 if warm else self.load_s(model)) + agent.prompt_tokens / prefill + agent.max_tokens / decode

    def unbatched_s(self, agent: Agent, warm: bool) -> float:
        """The part of `agent`'s work a batch does not slow: a cold load and reading the prompt."""
        model = MODEL_BY_ID[agent.model or ""]
        return (0.0 if warm else self.load_s(model)) + agent.prompt_tokens / self._speeds[model.id][0]


@dataclass(frozen=True)
class SimMesh:
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

    def node_view(self, node: SimNode, coordinator: str, loaded: Iterable[str], backlog_s: float,
                  running: int = 0, queued: int = 0) -> NodeView:
        """`node` as `coordinator` sees it in `place()`'s input: its models (`loaded` of them warm) with
        their capacity and batch rates, its backlog and the sequences it reported running and queued."""
        loaded = frozenset(loaded)
        models = tuple(node.offer(model_id, model_id in loaded) for model_id in sorted(node.held))
        return NodeView(node_id=node.node_id, name=f"{node.device.name}-{node.node_id}", alive=True,
                        models=models, memory_available_bytes=node.memory_available_bytes,
                        backlog_s=backlog_s, network_s=self.network_s(coordinator, node.node_id),
                        load_bytes_per_s=node.device.load_bytes_per_s, running=running, queued=queued)

    def with_capacity(self, capacity: int) -> SimMesh:
        """The same devices decoding up to `capacity` sequences at once each."""
        return SimMesh(tuple(replace(n, capacity=capacity) for n in self.nodes))


@dataclass(frozen=True)
class Agent:
    """One agent of a DAG: a generation (model, prompt and max tokens) or, with no model, a script."""

    key: str  # unique across the DAGs of one simulation: "dag/agent"
    model: str | None
    prompt_tokens: int = 0
    max_tokens: int = 0
    after: tuple[str, ...] = ()  # the agents whose results it needs

    def demand(self, rank: float) -> Demand:
        """This generation as `place()` and `forecast()` take it."""
        return Demand(key=self.key, model_id=self.model or "", prompt_tokens=self.prompt_tokens,
                      max_tokens=self.max_tokens, rank=rank)


@dataclass(frozen=True)
class Dag:
    name: str
    agents: tuple[Agent, ...]
    submit_at: float = 0.0

    @property
    def dependencies(self) -> dict[str, tuple[str, ...]]:
        """The DAG as orc.scheduler.dag's dependency mapping: agent key -> the keys it needs, in agent order."""
        return {agent.key: agent.after for agent in self.agents}


def upward_ranks(dag: Dag, mesh: SimMesh, coordinator: str) -> dict[str, float]:
    """HEFT's upward rank: an agent's mean cost over its eligible nodes plus its longest path to the end.

    Every policy that orders agents uses it: orc's `place()` and `forecast()` and HEFT.
    """
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
    return critical_path_lengths_of(dag.dependencies, cost)


# ---- random meshes, DAGs and cases ----

def random_mesh(rng: random.Random, size: int) -> SimMesh:
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
    return SimMesh(tuple(SimNode(node_id, device, frozenset(held),
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

    mesh: SimMesh
    dags: tuple[Dag, ...]
    coordinators: tuple[str, ...]
    noise_seed: int


def random_case(rng: random.Random, nodes: int, coordinators: int) -> Case:
    """A random mesh of `nodes` devices; `coordinators` distinct nodes each submit a random DAG at time 0."""
    mesh = random_mesh(rng, nodes)
    chosen = tuple(sorted(rng.sample([n.node_id for n in mesh.nodes], coordinators)))
    dags = tuple(random_dag(rng, f"d{i}") for i in range(coordinators))
    return Case(mesh, dags, chosen, rng.getrandbits(64))
