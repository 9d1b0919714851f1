"""This node as its peers see it: the `NodeBackend` behind the mesh server.

It describes the node (hardware, served models with their measured speeds, load), beats once a
second on every `Watch` stream, hands out revocation entries and renewed certificates, and
executes single LLM generations for peers on its own runtimes. The servicer in
`orc.node.rpc.servicers` translates the wire; every decision about this node is made here.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
import uuid
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass

from orc.node.catalog import ModelEntry
from orc.node.description import PROTOCOL_VERSION, Load, ModelOffer, NodeDescription, PeerAddress
from orc.node.hardware import probe
from orc.node.identity.ids import NodeId
from orc.node.membership import Membership
from orc.node.rpc.errors import InvalidRequest, NotFound, PermissionDenied, ResourceExhausted
from orc.node.rpc.types import (
    Beat,
    ExecuteEvent,
    ExecuteRequest,
    ExecutionFailed,
    ExecutionResult,
    ExecutionStarted,
    ExecutionTokens,
    OfferReply,
    OfferRequest,
)
from orc.node.runtimes.base import GenerationDone, ModelRuntime, RuntimeFailure, TokenChunk
from orc.node.speed import Speed, measure, speed_from_timing

log = logging.getLogger(__name__)

BEAT_INTERVAL = 1.0
LEASE_SECONDS = 5.0
# Executions this node accepts at once from all peers together; more wait in the runtime's
# queue. A peer that floods Execute gets RESOURCE_EXHAUSTED instead of an unbounded backlog.
MAX_ACTIVE_EXECUTIONS = 16


@dataclass
class _Served:
    entry: ModelEntry
    loaded: bool = False
    speed: Speed | None = None


class NodeService:
    """Describe, Watch, Revocations, Renew, Offer, Execute and Cancel for this node."""

    def __init__(self, *, membership: Membership, runtimes: Mapping[str, ModelRuntime],
                 served: Sequence[ModelEntry], addresses: Callable[[], tuple[str, ...]],
                 known_peers: Callable[[], tuple[PeerAddress, ...]], tags: tuple[str, ...] = (),
                 clock: Callable[[], float] = time.time) -> None:
        self.membership = membership
        self.runtimes = runtimes
        self._served = {entry.selector: _Served(entry) for entry in served}  # one per (model, runtime)
        self._addresses = addresses
        self._known_peers = known_peers
        self._tags = tags
        self._clock = clock
        self._started_at = clock()
        self._version = 1
        self._active = 0
        self._executions: dict[str, tuple[NodeId, asyncio.Event]] = {}
        self._listeners: list[Callable[[], None]] = []
        self._inbound: list[Callable[[NodeId, tuple[str, ...]], None]] = []
        membership.on_revoked(lambda _ids: self.changed())

    # ---- the description ----

    def changed(self) -> None:
        """Something in the description changed: bump its version so watchers re-fetch it."""
        self._version += 1
        for listener in self._listeners:
            listener()

    def on_change(self, listener: Callable[[], None]) -> None:
        self._listeners.append(listener)

    @property
    def version(self) -> int:
        return self._version

    def load(self) -> Load:
        try:
            cpu = os.getloadavg()[0]
        except (OSError, AttributeError):
            cpu = None
        return Load(active_generations=self._active, queued=0, cpu_load_1m=cpu)

    def describe(self) -> NodeDescription:
        identity = self.membership.identity
        models = tuple(
            ModelOffer(id=s.entry.id, runtime=s.entry.runtime, sha256=s.entry.sha256, size_bytes=s.entry.size_bytes,
                       loaded=s.loaded,
                       prefill_tokens_per_s=round(s.speed.prefill_tokens_per_s, 1) if s.speed else None,
                       decode_tokens_per_s=round(s.speed.decode_tokens_per_s, 1) if s.speed else None)
            for s in sorted(self._served.values(), key=lambda s: (s.entry.id, s.entry.runtime)))
        return NodeDescription(
            protocol_version=PROTOCOL_VERSION, node_id=identity.node_id, name=identity.name,
            mesh_id=identity.mesh_id, addresses=self._addresses(), hardware=probe(), models=models,
            load=self.load(), revocation_seq=self.membership.revocations.seq, version=self._version,
            started_at=self._started_at, tags=self._tags, certificate_authority=identity.is_authority,
            known_peers=self._known_peers())

    async def warm_up(self) -> None:
        """Load every served model and measure its speed, one after another (a small device has
        neither the cores nor the memory to do them in parallel). A model that fails to load is
        logged and stays advertised as not loaded."""
        for served in list(self._served.values()):
            runtime = self.runtimes.get(served.entry.runtime)
            if runtime is None:
                log.warning("model %s needs the %s runtime, which this node does not have",
                            served.entry.id, served.entry.runtime)
                continue
            try:
                speed = await measure(runtime, served.entry)
            except RuntimeFailure as error:
                log.warning("model %s could not be loaded: %s", served.entry.id, error)
                continue
            served.loaded = True
            served.speed = speed
            if speed is not None:
                log.info("model %s ready: prefill %.0f tok/s, decode %.1f tok/s", served.entry.id,
                         speed.prefill_tokens_per_s, speed.decode_tokens_per_s)
            self.changed()

    # ---- liveness ----

    def on_inbound(self, listener: Callable[[NodeId, tuple[str, ...]], None]) -> None:
        """Call `listener(caller, its addresses)` when a peer starts watching this node."""
        self._inbound.append(listener)

    async def beats(self, caller: NodeId, addresses: tuple[str, ...] = ()) -> AsyncIterator[Beat]:
        """A beat now and then once a second, until the caller goes away or is revoked."""
        for listener in self._inbound:
            listener(caller, addresses)  # a watcher we may not know of: dial it back
        while True:
            yield Beat(sent_at_ms=int(self._clock() * 1000), description_version=self._version,
                       revocation_seq=self.membership.revocations.seq, load=self.load())
            await asyncio.sleep(BEAT_INTERVAL)

    # ---- trust upkeep ----

    def revocations_after(self, seq: int) -> bytes:
        return self.membership.entries_after(seq)

    async def renew(self, caller: NodeId, csr_pem: bytes) -> bytes:
        return self.membership.renew_for(caller, csr_pem)

    # ---- running agents for peers ----

    def _model(self, model_id: str, sha256: str) -> _Served:
        """The served variant of `model_id` with these weights (any variant when no digest is given,
        loaded ones first)."""
        variants = [s for s in self._served.values() if s.entry.id == model_id]
        if not variants:
            raise NotFound(f"this node does not serve model '{model_id}'")
        if sha256:
            variants = [s for s in variants if s.entry.sha256 == sha256]
            if not variants:
                raise NotFound(f"this node's '{model_id}' has different weights (no variant with sha256 "
                               f"{sha256[:12]}…)")
        return sorted(variants, key=lambda s: not s.loaded)[0]

    async def offer(self, caller: NodeId, request: OfferRequest) -> OfferReply:
        """An estimate of when this node would finish the agent, with a short lease."""
        try:
            served = self._model(request.model_id, request.model_sha256)
        except NotFound as error:
            return OfferReply(accepted=False, reason=str(error))
        if self._active >= MAX_ACTIVE_EXECUTIONS:
            return OfferReply(accepted=False, reason="this node is at its limit of concurrent executions")
        speed = served.speed
        if speed is None:
            estimate = 0
        else:
            seconds = (request.prompt_tokens / max(speed.prefill_tokens_per_s, 1e-3)
                       + request.max_tokens / max(speed.decode_tokens_per_s, 1e-3))
            estimate = int(1000 * seconds * (1 + self._active))
        return OfferReply(accepted=True, lease_id=uuid.uuid4().hex, estimated_finish_ms=estimate,
                          expires_at_ms=int((self._clock() + LEASE_SECONDS) * 1000))

    async def execute(self, caller: NodeId, request: ExecuteRequest) -> AsyncIterator[ExecuteEvent]:
        """Run one generation for a peer, streaming its tokens; errors end the stream as `ExecutionFailed`."""
        payload = request.payload
        try:
            served = self._model(payload.model_id, payload.model_sha256)
        except NotFound as error:
            yield ExecutionFailed("no_such_model", str(error), retryable=False)
            return
        runtime = self.runtimes.get(served.entry.runtime)
        if runtime is None:
            yield ExecutionFailed("no_runtime", f"this node has no {served.entry.runtime} runtime", retryable=False)
            return
        if self._active >= MAX_ACTIVE_EXECUTIONS:
            raise ResourceExhausted("this node is at its limit of concurrent executions; try another")
        if request.execution_id in self._executions:
            raise InvalidRequest(f"execution {request.execution_id[:64]} is already running here")
        cancel = asyncio.Event()
        self._executions[request.execution_id] = (caller, cancel)
        self._active += 1
        deadline = request.deadline_ms / 1000 if request.deadline_ms > 0 else None
        try:
            yield ExecutionStarted(self.membership.identity.node_id, payload.model_id)
            started = time.perf_counter()
            first: float | None = None
            loop = asyncio.get_running_loop()
            ends = loop.time() + deadline if deadline is not None else None
            generation = runtime.generate(served.entry, payload.messages, payload.params)
            try:
                while True:
                    remaining = None if ends is None else max(ends - loop.time(), 0.0)
                    try:
                        event = await asyncio.wait_for(generation.__anext__(), remaining)
                    except StopAsyncIteration:
                        break
                    if cancel.is_set():
                        yield ExecutionFailed("cancelled", "cancelled by the caller", retryable=False)
                        return
                    match event:
                        case TokenChunk(text=text):
                            first = first if first is not None else time.perf_counter()
                            yield ExecutionTokens(text)
                        case GenerationDone(text=text, usage=usage, finish_reason=reason):
                            observed = speed_from_timing(usage.prompt_tokens, usage.completion_tokens, started,
                                                         first, time.perf_counter(), self._clock())
                            if observed is not None:
                                served.speed = served.speed.refreshed(observed) if served.speed else observed
                            served.loaded = True
                            yield ExecutionResult(text, usage, reason)
            finally:
                await generation.aclose()
        except asyncio.TimeoutError:
            yield ExecutionFailed("deadline", f"the deadline of {request.deadline_ms} ms passed", retryable=True)
        except RuntimeFailure as error:
            yield ExecutionFailed("runtime", str(error), retryable=False)
        finally:
            self._active -= 1
            self._executions.pop(request.execution_id, None)

    async def cancel(self, caller: NodeId, execution_id: str) -> bool:
        running = self._executions.get(execution_id)
        if running is None:
            return False
        owner, event = running
        if owner != caller:
            raise PermissionDenied("only the node that started an execution may cancel it")
        event.set()
        return True

    def served_models(self) -> tuple[str, ...]:
        """Selectors (`id@runtime`) of the served variants."""
        return tuple(sorted(self._served))
