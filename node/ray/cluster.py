"""The driver's side of a Ray cluster: connect, read what the workers serve, keep their actors.

A worker serves a model when it was started with the model's custom resource,
`ray start ... --resources '{"orc-model:smollm2-135m-instruct": 2}'`: each unit is one
`ModelActor` of that model on that worker (two units, two actors, each its own runner). The
actors are created on first use, pinned to their worker, named (`orc:MODEL:NODE:i` in the
`orc` namespace) and detached: they outlive the run that created them, so the next run, from
this driver or another, finds the model warm, as a node daemon keeps its models loaded.

Who retries what: Ray restarts an actor whose process died (`max_restarts`), so the worker
serves its model again; Ray never re-runs a generation (`max_task_retries=0`). The placer
(`orc.node.ray.placer`) moves a failed generation to another actor, up to the agent's
attempts, and says so (`Bound.replaces`), as the mesh does after a dead peer: one retry
policy, the engine's, whichever engine runs the actors.
"""

from __future__ import annotations

import asyncio
import logging
import re
import socket
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from orc.node.models.entry import MODEL_ID_PATTERN
from orc.node.ray.actor import ActorState, ModelActor
from orc.node.ray.address import parse_address
from orc.node.ray.errors import ClusterUnreachable, RayError, RayNotInstalled

log = logging.getLogger(__name__)

RESOURCE_PREFIX = "orc-model:"
TAG_PREFIX = "orc-tag:"  # `--resources '{"orc-tag:gpu": 1}'`: the worker carries orc's tag `gpu`
TAG_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
NAMESPACE = "orc"
# An actor whose process keeps dying is not restarted for ever: after this many, it is dead
# and the next run creates it again (or finds the worker gone).
MAX_ACTOR_RESTARTS = 3
# One worker's resource asks for this many actors at most: each is a runner process holding
# the model, and a typo ("2000") must not start a thousand of them.
MAX_ACTORS_PER_WORKER = 16
# How long the driver waits for the head's port before calling the cluster unreachable
# (ray.init's own wait is a minute and more).
CONNECT_TIMEOUT_S = 10.0
# How long an actor may take to answer what it holds: its first answer may assemble and hash
# the model's file on the worker.
STATE_TIMEOUT_S = 180.0
# The workers' resources are read again at most this often (a run asks for every agent).
REFRESH_S = 2.0


@dataclass(frozen=True)
class RaySettings:
    """How to use a cluster: its head (`ray://HOST:PORT`), and the actors' runner settings."""

    address: str
    threads: int | None = None  # llama.cpp threads per actor (None: the worker's config, every core)
    slots: int | None = None  # generations one actor decodes together (None: the worker's config)


@dataclass(frozen=True)
class Worker:
    """A Ray node as orc sees it: which models it serves, with how many actors each."""

    node_id: str
    name: str
    alive: bool
    models: Mapping[str, int] = field(default_factory=lambda: MappingProxyType({}))
    tags: frozenset[str] = frozenset()


def workers_of(nodes: list[Mapping[str, Any]]) -> tuple[Worker, ...]:
    """The nodes `ray.nodes()` lists, as workers (those serving no model included, alive or not)."""
    workers = []
    for node in nodes:
        resources = node.get("Resources") or {}
        # Only names orc could have written: a resource name becomes an actor's name, a journal's
        # node and a line of the progress view, so a mistyped or hostile one is left out.
        models = {key[len(RESOURCE_PREFIX):]: min(int(amount), MAX_ACTORS_PER_WORKER)
                  for key, amount in resources.items()
                  if isinstance(key, str) and key.startswith(RESOURCE_PREFIX) and amount >= 1
                  and MODEL_ID_PATTERN.match(key[len(RESOURCE_PREFIX):])}
        tags = frozenset(key[len(TAG_PREFIX):] for key, amount in resources.items()
                         if isinstance(key, str) and key.startswith(TAG_PREFIX) and amount > 0
                         and TAG_PATTERN.match(key[len(TAG_PREFIX):]))
        node_id = str(node.get("NodeID", ""))
        name = f"ray:{node.get('NodeManagerAddress', '?')}/{node_id[:8]}"
        workers.append(Worker(node_id, name, bool(node.get("Alive")), MappingProxyType(models), tags))
    return tuple(workers)


@dataclass
class ActorSlot:
    """One actor as this driver uses it: its handle, what it holds, what this driver runs on it."""

    name: str  # also its node id in the run's journal: the unit that runs and fails
    node_id: str
    handle: Any
    state: ActorState
    running: int = 0
    tags: frozenset[str] = frozenset()  # its worker's


class Cluster:
    """One Ray cluster, reached from this process as a Ray driver (one per process: Ray's own rule)."""

    def __init__(self, settings: RaySettings, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.settings = settings
        self.address = parse_address(settings.address)
        self._clock = clock
        self._ray: Any = None
        self._workers: tuple[Worker, ...] = ()
        self._read_at: float | None = None
        self._slots: dict[str, dict[str, ActorSlot]] = {}  # model id -> actor name -> slot
        self._locks: dict[str, asyncio.Lock] = {}
        self._actor_class: Any = None  # ModelActor wrapped by ray.remote, once

    def connect(self) -> None:
        """Join the cluster as a driver (blocking): RayNotInstalled, ClusterUnreachable."""
        if self._ray is not None:
            return
        try:
            import ray
        except ImportError:
            raise RayNotInstalled() from None
        host, _, port = self.address.rpartition(":")
        try:
            socket.create_connection((host.strip("[]"), int(port)), timeout=CONNECT_TIMEOUT_S).close()
        except OSError as error:
            raise ClusterUnreachable(f"no Ray cluster answers at ray://{self.address} ({error.strerror or error}); "
                                     "start one with 'ray start --head --port PORT'") from None
        try:
            ray.init(address=self.address, namespace=NAMESPACE, log_to_driver=False, logging_level=logging.WARNING,
                     configure_logging=False)
        except (ConnectionError, RuntimeError) as error:
            raise ClusterUnreachable(f"cannot join the Ray cluster at ray://{self.address}: {error}") from None
        self._ray = ray

    def close(self) -> None:
        """Leave the cluster; the actors stay (they are detached: the next run finds them warm)."""
        if self._ray is not None:
            self._ray.shutdown()
            self._ray = None

    @property
    def ray(self) -> Any:
        if self._ray is None:
            self.connect()
        return self._ray

    def workers(self) -> tuple[Worker, ...]:
        """The cluster's nodes (blocking: a call to its head, at most every REFRESH_S)."""
        now = self._clock()
        if self._read_at is None or now - self._read_at >= REFRESH_S:
            self._workers = workers_of(self.ray.nodes())
            self._read_at = now
        return self._workers

    def model_ids(self) -> tuple[str, ...]:
        return tuple(sorted({m for w in self.workers() if w.alive for m in w.models}))

    def warm(self, model_id: str) -> dict[str, ActorSlot]:
        """The actors of `model_id` this driver has met, by name (their runner may be up)."""
        return dict(self._slots.get(model_id, {}))

    async def actors(self, model_ref: str, model_id: str) -> list[ActorSlot]:
        """Every actor of `model_id` on the live workers serving it, created where missing.

        An actor that does not answer in STATE_TIMEOUT_S is left out this time."""
        lock = self._locks.setdefault(model_id, asyncio.Lock())
        async with lock:
            workers = await asyncio.to_thread(self.workers)
            known = self._slots.setdefault(model_id, {})
            wanted = {self._actor_name(model_id, w, i): w for w in workers if w.alive
                      for i in range(w.models.get(model_id, 0))}
            for name in set(known) - set(wanted):
                del known[name]  # its worker died or no longer serves the model
            missing = [(name, worker) for name, worker in wanted.items() if name not in known]
            made = await asyncio.gather(*(self._start(model_ref, name, worker) for name, worker in missing))
            for slot in made:
                if slot is not None:
                    known[slot.name] = slot
            return list(known.values())

    def forget(self, model_id: str, name: str) -> None:
        """Drop an actor that failed: the next `actors` asks Ray for it again (restarted, or new)."""
        self._slots.get(model_id, {}).pop(name, None)

    def _actor_name(self, model_id: str, worker: Worker, index: int) -> str:
        return f"orc:{model_id}:{worker.node_id[:12]}:{index}"

    async def _start(self, model_ref: str, name: str, worker: Worker) -> ActorSlot | None:
        ray = self.ray
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        model_id = name.split(":")[1]
        if self._actor_class is None:
            self._actor_class = ray.remote(ModelActor)
        handle = self._actor_class.options(
            name=name, namespace=NAMESPACE, lifetime="detached", get_if_exists=True,
            num_cpus=0, resources={RESOURCE_PREFIX + model_id: 1},
            max_restarts=MAX_ACTOR_RESTARTS, max_task_retries=0,
            scheduling_strategy=NodeAffinitySchedulingStrategy(worker.node_id, soft=False),
        ).remote(model_ref, self.settings.threads, self.settings.slots)
        try:
            state = await asyncio.wait_for(_awaitable(handle.state.remote()), STATE_TIMEOUT_S)
        except (asyncio.TimeoutError, Exception) as error:  # noqa: BLE001 - Ray's errors: this actor is out, the others serve
            log.warning("actor %s on %s did not answer: %s", name, worker.name, error)
            return None
        return ActorSlot(name, worker.node_id, handle, state, tags=worker.tags)


async def _awaitable(ref: Any) -> Any:
    return await ref


__all__ = ["ActorSlot", "Cluster", "RayError", "RaySettings", "Worker", "workers_of"]
