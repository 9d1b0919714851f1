"""This node as its peers see it: the `NodeBackend` behind the mesh server.

It describes the node (hardware, served models with their measured speeds, load), beats once a
second on every `Watch` stream, hands out revocation entries and renewed certificates, and
executes single LLM generations for peers on its own runtimes. How much work it takes on is
decided by its `Admission` (offers lease places, executions beyond the running slots wait in a
bounded queue); every execution it serves is written to its `ExecutionLog` when it has one. The
servicer in `orc.node.rpc.servicers` translates the wire; every decision about this node is
made here.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import aclosing
from dataclasses import dataclass, field, replace

from typing_extensions import assert_never

from orc.node.worker.admission import MAX_TRACKED_CALLERS, Admission, Offered, Queued, Refusal, Refused, Running
from orc.node.worker.execution_log import ExecutionLog, ExecutionRecord, UnusedLeaseRecord
from orc.node.models.catalog import ModelEntry
from orc.node.protocol.description import PROTOCOL_VERSION, Load, NodeDescription, PeerAddress
from orc.node.models.hardware import probe
from orc.node.protocol.ids import NodeId
from orc.node.trust.membership import Membership
from orc.node.protocol.revocation_entry import RevocationEntry
from orc.node.protocol.errors import InvalidRequest, NotFound, PermissionDenied, ResourceExhausted
from orc.node.protocol.messages import (
    AgentPayload,
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
from orc.node.models.runtimes.base import GenerationDone, ModelRuntime, RunnerDied, RuntimeFailure, TokenChunk
from orc.node.worker.speed import speed_from_timing
from orc.node.worker.warm_up import warm_up
from orc.node.worker.served import LaneLoad, Served
from orc.scheduler.placement import estimated_prompt_tokens

log = logging.getLogger(__name__)

BEAT_INTERVAL = 1.0
# An execution waits in this node's queue at most this long, whoever asked: a caller's own
# bound on waiting (an agent's `queue_timeout_seconds`, 300 s by default) normally cancels first.
MAX_QUEUED_S = 900.0
# A caller's Offer counters are written to the daemon log at most this often, per caller.
CALLER_LOG_INTERVAL_S = 60.0


@dataclass
class CallerStats:
    """What one caller asked of this node (its Offers and what became of them), since the start."""

    offers: int = 0
    accepted: int = 0
    refused: int = 0
    executed: int = 0  # executions admitted (with or without a lease)
    expired_unused: int = 0  # leases it took and never used
    last_refusal: str = ""
    logged: tuple[int, int] = (0, 0)  # (offers, expired_unused) when last logged
    logged_at: float | None = None


@dataclass(frozen=True)
class _Execution:
    """An admitted execution, queued or running, as the shell tracks it."""

    caller: NodeId
    cancelled: asyncio.Event = field(default_factory=asyncio.Event)  # its starter sent Cancel
    wake: asyncio.Event = field(default_factory=asyncio.Event)  # it may start, or stop waiting


class NodeService:
    """Describe, Watch, Revocations, Renew, Offer, Execute and Cancel for this node."""

    def __init__(self, *, membership: Membership, runtimes: Mapping[str, ModelRuntime],
                 served: Sequence[ModelEntry], addresses: Callable[[], tuple[str, ...]],
                 known_peers: Callable[[], tuple[PeerAddress, ...]],
                 on_inbound: Callable[[NodeId, tuple[str, ...]], None] = lambda _node_id, _addresses: None,
                 tags: tuple[str, ...] = (),
                 clock: Callable[[], float] = time.time, slots: int = 1, queue_limit: int = 4,
                 audit: ExecutionLog | None = None) -> None:
        """`slots`: the running places of a model whose runtime this node lacks (it is refused
        anyway); every other model has as many as its runtime's `capacity`."""
        self.membership = membership
        self.runtimes = runtimes
        # One per (model, runtime), with the capacity and availability its runtime reports.
        self._served = {entry.selector: Served(entry, runtimes.get(entry.runtime)) for entry in served}
        for served_model in self._served.values():
            served_model.capacity, served_model.unavailable = served_model.runtime_state(slots)
        self._addresses = addresses
        self._known_peers = known_peers
        self._tags = tags
        self._clock = clock
        self._started_at = clock()
        self._version = 1
        self._admission = Admission(self._served, slots=slots, queue_limit=queue_limit,
                                    lane_slots={key: s.capacity for key, s in self._served.items()})
        self._audit = audit
        # Admitted executions (queued or running) by id: as bounded as admission's places.
        self._executions: dict[str, _Execution] = {}
        # Per caller, most recent last; capped, the least recently seen forgotten first.
        self._callers: dict[str, CallerStats] = {}
        self._listeners: list[Callable[[], None]] = []
        self._room_listeners: list[Callable[[str | None], None]] = []
        self._on_inbound = on_inbound  # a watcher we may not know of: the caller dials it back
        membership.on_revoked(lambda _ids: self.changed())

    # ---- the description ----

    def changed(self) -> None:
        """Something in the description changed: bump its version so watchers re-fetch it."""
        self._version += 1
        for listener in self._listeners:
            listener()

    def on_change(self, listener: Callable[[], None]) -> None:
        self._listeners.append(listener)

    def on_room(self, listener: Callable[[str | None], None]) -> None:
        """Call `listener(model_id)` whenever a place of that model's lane may have freed here (an
        execution ended or left its queue, a lease was given back (None: of some model) or found
        expired at the next Offer, Execute or beat), so a coordinator waiting for room asks again
        at once instead of after a sleep."""
        self._room_listeners.append(listener)

    def _room_freed(self, model_id: str | None) -> None:
        for listener in self._room_listeners:
            listener(model_id)

    @property
    def version(self) -> int:
        return self._version

    def poll_runtimes(self) -> None:
        """Take up what the runtimes report now: a model's capacity (its lane's running places) or
        its availability changed (a runner kept crashing, or came back). Peers learn it from the
        next description version."""
        changed = False
        now = self._clock()
        for served in self._served.values():
            state = served.runtime_state(served.capacity)
            if state == (served.capacity, served.unavailable):
                continue
            if state[1] != served.unavailable:
                log.warning("model %s %s", served.entry.id,
                            f"cannot run here now: {state[1]}" if state[1] else "can run here again")
            served.capacity, served.unavailable = state
            for promoted in self._admission.set_lane_slots(served.entry.selector, served.capacity, now):
                if promoted in self._executions:
                    self._executions[promoted].wake.set()
                self._room_freed(served.entry.id)  # it left the queue: a queue place is free
            changed = True
        if changed:
            self.changed()

    def load(self) -> Load:
        try:
            cpu = os.getloadavg()[0]
        except (OSError, AttributeError):
            cpu = None
        # Load rides in beats; it never bumps the description version (that would make every
        # watcher re-fetch the whole description on each execution).
        now = self._clock()
        self._collect_expired(now)
        return Load(active_generations=self._admission.running(), queued=self._admission.queued(),
                    cpu_load_1m=cpu, backlog_ms=round(self._admission.backlog(now) * 1000))

    def describe(self) -> NodeDescription:
        identity = self.membership.identity
        models = tuple(s.offer() for s in sorted(self._served.values(), key=lambda s: (s.entry.id, s.entry.runtime)))
        return NodeDescription(
            protocol_version=PROTOCOL_VERSION, node_id=identity.node_id, name=identity.name,
            mesh_id=identity.mesh_id, addresses=self._addresses(), hardware=probe(), models=models,
            load=self.load(), revocation_seq=self.membership.revocations.seq, version=self._version,
            started_at=self._started_at, tags=self._tags, certificate_authority=identity.is_authority,
            known_peers=self._known_peers())

    async def warm_up(self) -> None:
        """Load and measure every served model (`orc.node.worker.warm_up`), advertising each
        measurement as it comes."""
        await warm_up(list(self._served.values()), self.runtimes, self.changed)

    # ---- liveness ----

    async def beats(self, caller: NodeId, addresses: tuple[str, ...] = ()) -> AsyncIterator[Beat]:
        """A beat now and then once a second, until the caller goes away or is revoked."""
        self._on_inbound(caller, addresses)
        while True:
            self.poll_runtimes()
            yield Beat(sent_at_ms=int(self._clock() * 1000), description_version=self._version,
                       revocation_seq=self.membership.revocations.seq, load=self.load())
            await asyncio.sleep(BEAT_INTERVAL)

    # ---- trust upkeep ----

    def revocations_after(self, seq: int) -> tuple[RevocationEntry, ...]:
        return self.membership.entries_after(seq)

    async def renew(self, caller: NodeId, csr_pem: bytes) -> bytes:
        return self.membership.renew_for(caller, csr_pem)

    # ---- running agents for peers ----

    def _model(self, model_id: str, sha256: str) -> Served:
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

    def _batch(self, served: Served, now: float) -> int:
        """The size of the batch one more generation of `served` would join here now."""
        return min(self._admission.occupied(served.entry.selector, now) + 1, served.capacity)

    async def offer(self, caller: NodeId, request: OfferRequest) -> OfferReply:
        """When this node would finish the agent, with a lease holding its place; or a refusal.
        Every Offer is counted for its caller (`caller_stats`), and sampled into the log."""
        now = self._clock()
        self._collect_expired(now)
        stats = self._stats(caller)
        stats.offers += 1
        reply = self._answer(caller, request, now)
        if reply.accepted:
            stats.accepted += 1
        else:
            stats.refused += 1
            stats.last_refusal = reply.reason
        self._sample(caller, stats, now)
        return reply

    def _answer(self, caller: NodeId, request: OfferRequest, now: float) -> OfferReply:
        try:
            served = self._model(request.model_id, request.model_sha256)
        except NotFound as error:
            return OfferReply(accepted=False, reason=str(error), permanent=True)
        if served.entry.runtime not in self.runtimes:
            return OfferReply(accepted=False, reason=f"this node has no {served.entry.runtime} runtime",
                              permanent=True)
        self.poll_runtimes()
        if served.unavailable:
            return OfferReply(accepted=False, reason=served.unavailable_message(), permanent=True)
        too_large = served.too_large(request.prompt_tokens, request.max_tokens)
        if too_large is not None:
            return OfferReply(accepted=False, reason=too_large, permanent=True)
        work = served.work_seconds(request.prompt_tokens, request.max_tokens, self._batch(served, now))
        decision = self._admission.offer(served.entry.selector, caller, work, now, about=(request.run_id,
                                                                                          request.agent))
        match decision:
            case Offered(lease_id=lease_id, expires_at=expires_at, estimate_s=estimate):
                return OfferReply(accepted=True, lease_id=lease_id, estimated_finish_ms=round(estimate * 1000),
                                  expires_at_ms=int(expires_at * 1000))
            case Refused():
                return OfferReply(accepted=False, reason=decision.reason)
            case _:
                assert_never(decision)

    def caller_stats(self, caller: str) -> CallerStats | None:
        """What `caller` asked of this node so far (None if nothing, or forgotten)."""
        stats = self._callers.get(caller)
        return None if stats is None else replace(stats)

    def _stats(self, caller: str) -> CallerStats:
        stats = self._callers.pop(caller, None) or CallerStats()
        self._callers[caller] = stats  # most recently seen last
        if len(self._callers) > MAX_TRACKED_CALLERS:
            del self._callers[next(iter(self._callers))]  # a flood of identities forgets the oldest
        return stats

    def _sample(self, caller: str, stats: CallerStats, now: float) -> None:
        """Log a caller's counters when they changed, at most once per CALLER_LOG_INTERVAL_S."""
        if stats.logged_at is not None and now - stats.logged_at < CALLER_LOG_INTERVAL_S:
            return
        if stats.logged == (stats.offers, stats.expired_unused):
            return
        hoarding = stats.expired_unused > stats.logged[1]
        log.log(logging.WARNING if hoarding else logging.INFO,
                "offers from %s: %d asked, %d accepted, %d refused%s, %d executed, %d leases expired unused",
                caller, stats.offers, stats.accepted, stats.refused,
                f" (last: {stats.last_refusal})" if stats.last_refusal else "", stats.executed, stats.expired_unused)
        stats.logged, stats.logged_at = (stats.offers, stats.expired_unused), now

    def _collect_expired(self, now: float) -> None:
        """Count and log the leases that expired unused since the last look."""
        for expired in self._admission.expired_unused(now):
            stats = self._stats(expired.caller)
            stats.expired_unused += 1
            self._room_freed(self._served[expired.model].entry.id)
            run_id, agent = expired.about if isinstance(expired.about, tuple) else ("", "")
            if self._audit is not None:
                self._audit.append(UnusedLeaseRecord(
                    at=expired.granted_at, caller=expired.caller, run_id=run_id, agent=agent, model=expired.model,
                    lease_id=expired.lease_id, seconds=round(expired.expires_at - expired.granted_at, 3)))

    async def execute(self, caller: NodeId, request: ExecuteRequest) -> AsyncIterator[ExecuteEvent]:
        """Run one generation for a peer once admission lets it start, streaming its tokens.

        `ExecutionStarted` comes when it really starts generating (after any wait in the queue).
        Errors end the stream as `ExecutionFailed`; a node without room for it raises
        `ResourceExhausted`, a reused execution id `InvalidRequest`. The deadline counts from
        `ExecutionStarted`: time in the queue is the caller's to bound (it cancels), and this
        node's too (MAX_QUEUED_S). Every call is written to the execution log."""
        payload = request.payload
        arrived = self._clock()
        loop = asyncio.get_running_loop()
        self._collect_expired(arrived)
        prompt_chars = sum(len(message.content) for message in payload.messages)
        model = payload.model_id
        outcome = "failed:internal"  # replaced on every path this method knows of
        began: float | None = None  # when it left the queue and started generating
        logged = False

        def write_log() -> None:
            nonlocal logged
            if self._audit is not None and not logged:
                logged = True
                self._audit.append(ExecutionRecord(
                    at=arrived, caller=caller, run_id=request.run_id, agent=request.agent, model=model,
                    execution_id=request.execution_id, prompt_chars=prompt_chars, outcome=outcome,
                    seconds=round(self._clock() - arrived, 3),
                    queued_s=None if began is None else round(began - arrived, 3)))
        try:
            try:
                served = self._model(payload.model_id, payload.model_sha256)
            except NotFound as error:
                outcome = "failed:no_such_model"
                yield ExecutionFailed("no_such_model", str(error), retryable=False)
                return
            model = served.entry.selector
            runtime = self.runtimes.get(served.entry.runtime)
            if runtime is None:
                outcome = "failed:no_runtime"
                yield ExecutionFailed("no_runtime", f"this node has no {served.entry.runtime} runtime",
                                      retryable=False)
                return
            self.poll_runtimes()
            if served.unavailable:
                outcome = "failed:unavailable"
                yield ExecutionFailed("unavailable", served.unavailable_message(), retryable=False)
                return
            prompt_tokens = estimated_prompt_tokens(prompt_chars)
            too_large = served.too_large(prompt_tokens, payload.params.max_tokens)
            if too_large is not None:
                outcome = "failed:too_large"
                yield ExecutionFailed("too_large", too_large, retryable=False)
                return
            work = served.work_seconds(prompt_tokens, payload.params.max_tokens,
                                      self._batch(served, self._clock()))
            decision = self._admission.admit(model, caller, request.lease_id or None, request.execution_id, work,
                                             self._clock())
            match decision:
                case Refused(why=Refusal.DUPLICATE):
                    outcome = "refused"
                    raise InvalidRequest(f"execution {request.execution_id[:64]} is already admitted here")
                case Refused():
                    outcome = "refused"
                    raise ResourceExhausted(decision.reason)
                case Running() | Queued():
                    self._stats(caller).executed += 1
                case _:
                    assert_never(decision)
            execution = _Execution(caller)
            self._executions[request.execution_id] = execution
            try:
                if isinstance(decision, Queued):
                    try:
                        await asyncio.wait_for(execution.wake.wait(), MAX_QUEUED_S)
                    except asyncio.TimeoutError:
                        outcome = "failed:queued_too_long"
                        yield ExecutionFailed("queued_too_long", f"it waited {MAX_QUEUED_S:g} s in this node's queue "
                                                                 "without starting", retryable=True)
                        return
                if execution.cancelled.is_set():
                    outcome = "cancelled"
                    yield ExecutionFailed("cancelled", "cancelled by the caller", retryable=False)
                    return
                began = self._clock()
                # The generation's own time starts now, not at arrival.
                ends = loop.time() + request.deadline_ms / 1000 if request.deadline_ms > 0 else None
                # aclosing: when the caller goes away mid-stream, the generation stops now, not at GC.
                async with aclosing(self._generate(served, runtime, payload, execution, ends,
                                                   request.deadline_ms)) as events:
                    async for event in events:
                        match event:
                            case ExecutionResult():
                                outcome = "completed"
                            case ExecutionFailed(code=code):
                                outcome = "cancelled" if code == "cancelled" else f"failed:{code}"
                            case ExecutionStarted() | ExecutionTokens():
                                pass
                            case _:
                                assert_never(event)
                        if isinstance(event, (ExecutionResult, ExecutionFailed)):
                            # Logged before the caller learns the outcome: whoever has the result
                            # can already find it in the log.
                            write_log()
                        yield event
            finally:
                self._executions.pop(request.execution_id, None)
                promoted = self._admission.finish(request.execution_id, self._clock())
                if promoted is not None and promoted in self._executions:
                    self._executions[promoted].wake.set()
                self._room_freed(served.entry.id)
        except (GeneratorExit, asyncio.CancelledError):
            outcome = "cancelled"  # the caller went away
            raise
        finally:
            write_log()

    async def _generate(self, served: Served, runtime: ModelRuntime, payload: AgentPayload, execution: _Execution,
                        ends: float | None, deadline_ms: int) -> AsyncIterator[ExecuteEvent]:
        """The events of one admitted execution from its start: started, tokens, then a result or a failure."""
        yield ExecutionStarted(self.membership.identity.node_id, payload.model_id)
        loop = asyncio.get_running_loop()
        started = time.perf_counter()
        first: float | None = None
        lane = served.entry.selector
        batch = self._admission.running(lane)  # the most generations of its model it ran beside
        generation = runtime.generate(served.entry, payload.messages, payload.params)
        try:
            while True:
                remaining = None if ends is None else max(ends - loop.time(), 0.0)
                try:
                    event = await asyncio.wait_for(generation.__anext__(), remaining)
                except StopAsyncIteration:
                    yield ExecutionFailed("runtime", "the generation ended without a result", retryable=False)
                    return
                if execution.cancelled.is_set():
                    yield ExecutionFailed("cancelled", "cancelled by the caller", retryable=False)
                    return
                match event:
                    case TokenChunk(text=text):
                        first = first if first is not None else time.perf_counter()
                        batch = max(batch, self._admission.running(lane))
                        yield ExecutionTokens(text)
                    case GenerationDone(text=text, usage=usage, finish_reason=reason):
                        observed = speed_from_timing(usage.prompt_tokens, usage.completion_tokens, started,
                                                     first, time.perf_counter(), self._clock())
                        if observed is not None and batch <= 1:
                            served.speed = served.speed.refreshed(observed) if served.speed else observed
                        elif observed is not None and served.speed is not None:
                            # Decoded beside others: it tells the speed of that batch size, not of one alone.
                            served.speed = served.speed.refreshed_at_batch(batch, observed.decode_tokens_per_s,
                                                                           observed.measured_at)
                        served.loaded = True
                        yield ExecutionResult(text, usage, reason)
                        return
        except asyncio.TimeoutError:
            yield ExecutionFailed("deadline", f"the deadline of {deadline_ms} ms from its start passed", retryable=True)
        except RunnerDied as error:
            # The runner restarts: the generation may well succeed on another try, here or elsewhere.
            yield ExecutionFailed("runtime", str(error), retryable=True)
        except RuntimeFailure as error:
            yield ExecutionFailed("runtime", str(error), retryable=False)
        finally:
            await generation.aclose()

    async def cancel(self, caller: NodeId, execution_id: str) -> bool:
        """Stop an execution its caller started, queued or running, or give back a lease the
        caller holds and will not use (the id is then the lease id); False if there is neither."""
        execution = self._executions.get(execution_id)
        if execution is None:
            released = self._admission.release(execution_id, caller, self._clock())
            if released:
                self._room_freed(None)
            return released
        if execution.caller != caller:
            raise PermissionDenied("only the node that started an execution may cancel it")
        self._admission.cancel(execution_id, self._clock())  # a queued one leaves its queue at once
        execution.cancelled.set()
        execution.wake.set()
        return True

    def lanes(self) -> tuple[LaneLoad, ...]:
        """Each served variant's admission lane now, in selector order."""
        now, admission = self._clock(), self._admission
        return tuple(LaneLoad(s.entry.id, s.entry.runtime, admission.lane_slots(key), admission.running(key),
                              admission.queued(key), admission.leases(now, key), s.unavailable)
                     for key, s in sorted(self._served.items()))

    def served_models(self) -> tuple[str, ...]:
        """Selectors (`id@runtime`) of the served variants."""
        return tuple(sorted(self._served))
