"""Where a run's generations go: the seam between the engine and a placer, and the placer of
orc without a daemon.

The engine asks a `Placer` whether any node serves a model, for a view of the nodes (to
forecast), and to perform each generation (`generate`), which reports where it runs (`Bound`),
when it starts (`Working`), its tokens and its result. The daemon's placer is the mesh
(`orc.node.coordinator.placer.MeshPlacer`): this node and its peers. `LocalPlacer` is the embedded
mode's: one node, this machine, its own runtimes, running as many generations of a model at
once as its runtime's capacity (decoded together where the runtime batches them).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable, Mapping
from typing import Protocol

from orc.node.coordinator.generations import Generation, MeshEvent, NoNode, NoRoom, Working
from orc.node.coordinator.local import LOCAL_NODE_ID
from orc.node.models.catalog import Catalog, CatalogError
from orc.node.models.runtimes.base import ModelRuntime
from orc.scheduler.ensemble import Placement
from orc.scheduler.model_refs import split_model_ref
from orc.scheduler.placement import ClusterView, Demand, HeldModel, NodeView


class Placer(Protocol):
    """What the engine needs of whatever decides where generations run.

    A placer over other machines than nodes may also have `missing_model(model_id) -> (what,
    fix)`: how to say that none of its machines serves a model, and how to make one serve it
    (the binder says the mesh's otherwise)."""

    def offers(self, model_ref: str, local: bool = False) -> bool:
        """Some live node (only this one with `local`) serves the model `model_ref` names."""
        ...

    def tagged(self, tags: Iterable[str], local: bool = False) -> bool:
        """Some live node carries every one of `tags`."""
        ...

    def model_ids(self, local: bool = False) -> tuple[str, ...]:
        """The models live nodes serve, sorted."""
        ...

    def view(self, local: bool = False) -> ClusterView:
        """Every node as the coordinator sees it now."""
        ...

    def demand(self, key: str, model_ref: str, sha256: str | None, prompt_tokens: int, max_tokens: int,
               placement: Placement, rank: float, local: bool = False) -> Demand:
        """What placement needs to know about one generation."""
        ...

    def generate(self, generation: Generation) -> AsyncIterator[MeshEvent]:
        """Place and perform `generation`; raises NoNode (NoRoom, TimedOut) when none can."""
        ...


class LocalPlacer:
    """Every generation on this machine's runtimes, up to a model's capacity at once (the others
    wait here, where the engine sees them start): orc without a daemon."""

    def __init__(self, catalog: Catalog, runtimes: Mapping[str, ModelRuntime], node_id: str = LOCAL_NODE_ID) -> None:
        self.node_id = node_id
        self._catalog = catalog
        self._runtimes = runtimes
        self._gates: dict[str, tuple[int, asyncio.Semaphore]] = {}  # per model variant: (capacity, gate)
        self._gates_loop: object = None  # the event loop the gates belong to (each `asyncio.run` has its own)

    def offers(self, model_ref: str, local: bool = False) -> bool:
        try:
            entry = self._catalog.get(model_ref)
        except CatalogError:
            return False
        return entry is not None and entry.runtime in self._runtimes

    def tagged(self, tags: Iterable[str], local: bool = False) -> bool:
        return not frozenset(tags)  # this machine carries no tags

    def model_ids(self, local: bool = False) -> tuple[str, ...]:
        return tuple(sorted({m.id for m in self._held()}))

    def view(self, local: bool = False) -> ClusterView:
        """This machine alone, its models not loaded yet (a plan is made before any run loads one)."""
        node = NodeView(self.node_id, self.node_id, alive=True, models=self._held())
        return ClusterView(self.node_id, (node,))

    def demand(self, key: str, model_ref: str, sha256: str | None, prompt_tokens: int, max_tokens: int,
               placement: Placement, rank: float, local: bool = False) -> Demand:
        model_id, runtime = split_model_ref(model_ref)
        return Demand(key=key, model_id=model_id, runtime=runtime, sha256=sha256, prompt_tokens=prompt_tokens,
                      max_tokens=max_tokens, rank=rank, local_only=True, require_tags=placement.require_tags,
                      prefer_tags=placement.prefer_tags)

    async def generate(self, generation: Generation) -> AsyncIterator[MeshEvent]:
        """Run `generation` here once its model's slot is free (NoRoom after its `wait_s`)."""
        try:
            # The first use of a model may assemble and hash its file: off the loop.
            entry = await asyncio.to_thread(self._catalog.prepare, generation.model)
        except CatalogError as error:
            raise NoNode(str(error)) from None
        runtime = self._runtimes.get(entry.runtime)
        if runtime is None:
            raise NoNode(f"model '{entry.id}' needs the {entry.runtime} runtime, which this node does not have")
        unavailable = runtime.unavailable_reason(entry)
        if unavailable:
            raise NoNode(f"model '{entry.id}' cannot run on this machine now: {unavailable}")
        loop = asyncio.get_running_loop()
        if self._gates_loop is not loop:
            self._gates, self._gates_loop = {}, loop
        capacity = max(runtime.capacity(entry), 1)
        if self._gates.get(entry.selector, (0, None))[0] != capacity:
            # A new capacity (its runner restarted with other settings): holders of the old gate
            # release the old one, so for a moment both count.
            self._gates[entry.selector] = (capacity, asyncio.Semaphore(capacity))
        gate = self._gates[entry.selector][1]
        began = loop.time()
        try:
            await asyncio.wait_for(gate.acquire(), generation.wait_s)
        except asyncio.TimeoutError:
            raise NoRoom(round(loop.time() - began, 3), ()) from None
        try:
            yield Working(self.node_id, round(loop.time() - began, 3))
            async for event in runtime.generate(entry, generation.messages, generation.params):
                yield event
        finally:
            gate.release()

    def _held(self) -> tuple[HeldModel, ...]:
        return tuple(HeldModel(e.id, e.runtime, e.sha256 or "", e.size_bytes, loaded=False,
                               capacity=max(self._runtimes[e.runtime].capacity(e), 1),
                               unavailable=self._runtimes[e.runtime].unavailable_reason(e) or "")
                     for e in self._catalog.entries() if e.runtime in self._runtimes)
