"""`RayPlacer`: the engine's `Placer` on a Ray cluster.

Each generation goes to the best actor of its model: a warm one (its runner up) before a cold
one, then the least loaded (what this driver runs on it against its capacity); while every
actor runs its capacity, the generation waits here, up to its `wait_s`. Tokens stream back
through a Ray streaming generator. A generation whose actor dies, or whose runner dies, moves
to an actor that has not failed it, up to the agent's attempts (`orc.node.ray.cluster` says
why Ray itself retries nothing). Agents kept on the submitting machine (`local_only`, or a
run with `--local`) go to the placer given as `here`, this machine's runtimes. A worker carries
orc's tag NAME when it was started with the resource `orc-tag:NAME`; `require_tags` and
`prefer_tags` pick among actors by their worker's tags.

The node of a generation, in the journal and the progress view, is its actor's name
(`orc:MODEL:NODE:i`): on a cluster the actor is the unit that serves and fails.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Iterable
from dataclasses import replace

from orc.node.coordinator.generations import (
    Bound,
    Generation,
    MeshEvent,
    NoNode,
    NoRoom,
    Working,
)
from orc.node.coordinator.placing import Placer
from orc.node.models.errors import CatalogError
from orc.node.models.runtimes.base import ModelLoadError, RunnerDied, RuntimeFailure
from orc.node.ray.actor import ActorUnavailable, WrongWeights
from orc.node.ray.cluster import RESOURCE_PREFIX, ActorSlot, Cluster
from orc.scheduler.ensemble import Placement
from orc.scheduler.model_refs import split_model_ref
from orc.scheduler.placement import ClusterView, Demand, HeldModel, NodeView

log = logging.getLogger(__name__)

# The id this driver has in a run's view (`orc plan`): it coordinates, it serves nothing itself.
DRIVER_ID = "ray-driver"


class _Lost(Exception):
    """The actor failed this generation in a way another actor may not (it died, its runner
    died, its weights differ): place the generation again without it."""


class RayPlacer:
    """Generations on a Ray cluster's model actors; `here` (optional) runs the ones that must
    stay on this machine."""

    def __init__(self, cluster: Cluster, here: Placer | None = None) -> None:
        self.cluster = cluster
        self._here = here
        self._freed: asyncio.Event | None = None  # set (and replaced) whenever an actor's place frees
        self._freed_loop: object = None

    # ---- what the binder and the forecast ask ----

    def offers(self, model_ref: str, local: bool = False) -> bool:
        if local:
            return self._here is not None and self._here.offers(model_ref, True)
        return split_model_ref(model_ref)[0] in self.cluster.model_ids()

    def tagged(self, tags: Iterable[str], local: bool = False) -> bool:
        """Some live worker carries every tag (its `orc-tag:NAME` resources)."""
        wanted = frozenset(tags)
        if local:
            return self._here is not None and self._here.tagged(wanted, True)
        return any(w.alive and wanted <= w.tags for w in self.cluster.workers())

    def model_ids(self, local: bool = False) -> tuple[str, ...]:
        if local:
            return self._here.model_ids(True) if self._here is not None else ()
        return self.cluster.model_ids()

    def missing_model(self, model_id: str) -> tuple[str, str]:
        """How the binder says that no worker serves `model_id`, and the fix."""
        return (f"no live worker of the Ray cluster serves model '{model_id}'",
                f"start a worker with ray start --address HEAD:PORT --resources '{{\"{RESOURCE_PREFIX}{model_id}\": 1}}', "
                "or map it with model_aliases in your orc config")

    def view(self, local: bool = False) -> ClusterView:
        """Every Ray node serving a model, each model with its actors' capacity (one each, until
        this driver has met them)."""
        nodes = []
        for worker in self.cluster.workers():
            if not worker.models:
                continue
            held = []
            for model_id, count in sorted(worker.models.items()):
                met = [s for s in self.cluster.warm(model_id).values() if s.node_id == worker.node_id]
                capacity = sum(s.state.capacity for s in met) + max(count - len(met), 0)
                first = met[0].state if met else None
                held.append(HeldModel(model_id, first.runtime if first else "llama_cpp",
                                      first.sha256 if first else "", first.size_bytes if first else 0,
                                      loaded=any(s.state.loaded for s in met), capacity=max(capacity, 1)))
            nodes.append(NodeView(worker.node_id, worker.name, worker.alive, tuple(held), worker.tags,
                                  running=sum(s.running for m in worker.models
                                              for s in self.cluster.warm(m).values() if s.node_id == worker.node_id)))
        return ClusterView(DRIVER_ID, tuple(nodes))

    def demand(self, key: str, model_ref: str, sha256: str | None, prompt_tokens: int, max_tokens: int,
               placement: Placement, rank: float, local: bool = False) -> Demand:
        model_id, runtime = split_model_ref(model_ref)
        # The workers' digests are only known once their actors answered: placement does not
        # compare them (the actor itself refuses other weights, `WrongWeights`).
        return Demand(key=key, model_id=model_id, runtime=runtime, sha256=None, prompt_tokens=prompt_tokens,
                      max_tokens=max_tokens, rank=rank, local_only=local or placement.local_only,
                      require_tags=placement.require_tags, prefer_tags=placement.prefer_tags)

    # ---- performing a generation ----

    async def generate(self, generation: Generation) -> AsyncIterator[MeshEvent]:
        """Run `generation` on the best actor, moving it on failure; NoNode when no actor can,
        NoRoom when none started it within its `wait_s`."""
        if generation.local or generation.placement.local_only:
            if self._here is None:
                raise NoNode("it must stay on this machine, and a Ray run has no local models")
            async for event in self._here.generate(generation):
                yield event
            return
        model_id = split_model_ref(generation.model)[0]
        loop = asyncio.get_running_loop()
        began = loop.time()
        failed: dict[str, str] = {}
        replaces: str | None = None
        while True:
            slot = await self._take(generation, model_id, failed, began)
            try:
                yield Bound(slot.name, slot.name, replaces)
                yield Working(slot.name, round(loop.time() - began, 3))
                async for event in self._stream(slot, generation):
                    yield event
                return
            except _Lost as error:
                failed[slot.name] = str(error)
                self.cluster.forget(model_id, slot.name)
                log.warning("%s failed on %s: %s", generation.agent, slot.name, error)
                if len(failed) >= generation.attempts:
                    raise NoNode(f"failed on {len(failed)} actor(s): "
                                 + "; ".join(f"{n}: {why}" for n, why in failed.items())) from None
                replaces = f"{slot.name}: {error}"
            finally:
                self._release(slot)

    async def _stream(self, slot: ActorSlot, generation: Generation) -> AsyncIterator[MeshEvent]:
        """The actor's events for `generation`; the call is cancelled on Ray if this stops early."""
        import ray.exceptions

        stream = slot.handle.generate.remote(generation.messages, generation.params, generation.sha256)
        finished = False
        try:
            async for ref in stream:
                yield await ref
            finished = True
        except ray.exceptions.RayTaskError as error:
            finished = True  # the task ended, with an error
            cause = error.cause
            if isinstance(cause, (RunnerDied, WrongWeights, ActorUnavailable, ModelLoadError, CatalogError)):
                raise _Lost(str(cause)) from None  # this worker's trouble: another may serve it
            if isinstance(cause, RuntimeFailure):
                raise cause from None  # the request itself (a prompt past the context): no actor does better
            raise _Lost(f"{type(cause).__name__}: {cause}") from None
        except ray.exceptions.RayActorError as error:
            finished = True
            raise _Lost(f"the actor died ({_first_line(error)})") from None
        except ray.exceptions.RayError as error:  # its result lost, its worker crashed, ...: Ray's own failures
            finished = True
            raise _Lost(f"{type(error).__name__}: {_first_line(error)}") from None
        finally:
            if not finished:
                try:
                    self.cluster.ray.cancel(stream)
                except Exception as error:  # noqa: BLE001 - best effort: the actor's runner ends the generation anyway
                    log.debug("cancelling %s on %s: %s", generation.agent, slot.name, error)

    async def _take(self, generation: Generation, model_id: str, failed: dict[str, str], began: float) -> ActorSlot:
        """The best actor with room, counted as running this generation until `_release`."""
        loop = asyncio.get_running_loop()
        while True:
            required, preferred = generation.placement.require_tags, generation.placement.prefer_tags
            slots = [s for s in await self.cluster.actors(generation.model, model_id)
                     if s.name not in failed and required <= s.tags]
            usable = [s for s in slots if not s.state.unavailable]
            if not usable:
                why = "; ".join(f"{n}: {w}" for n, w in failed.items()) or "; ".join(
                    f"{s.name}: {s.state.unavailable}" for s in slots) or (
                    f"no worker serves it with the tags {', '.join(sorted(required))}" if required
                    else "no worker serves it")
                raise NoNode(f"no Ray actor can run model '{model_id}' ({why})")
            free = [s for s in usable if s.running < s.state.capacity]
            if free:
                # A worker with a preferred tag first (as the mesh's placement favours one), then
                # warm, then least loaded.
                best = min(free, key=lambda s: (bool(preferred) and not preferred & s.tags, not s.state.loaded,
                                                s.running / s.state.capacity, s.name))
                best.running += 1
                return best
            remaining = None if generation.wait_s is None else began + generation.wait_s - loop.time()
            if remaining is not None and remaining <= 0:
                raise NoRoom(round(loop.time() - began, 3), tuple((s.name, "busy") for s in usable))
            try:
                await asyncio.wait_for(self._freed_event().wait(), remaining)
            except asyncio.TimeoutError:
                pass

    def _release(self, slot: ActorSlot) -> None:
        slot.running -= 1
        if not slot.state.loaded:
            slot.state = replace(slot.state, loaded=True)  # it ran a generation: its runner is up
        event = self._freed_event()
        event.set()  # wakes every generation waiting for room; they look again
        self._freed = asyncio.Event()

    def _freed_event(self) -> asyncio.Event:
        loop = asyncio.get_running_loop()
        if self._freed is None or self._freed_loop is not loop:  # each `asyncio.run` has its own loop
            self._freed, self._freed_loop = asyncio.Event(), loop
        return self._freed


def _first_line(error: BaseException) -> str:
    return (str(error).strip().splitlines() or [type(error).__name__])[0]
