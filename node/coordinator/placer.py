"""The coordinator's shell around placement: a run's generations placed on the mesh and performed.

`MeshPlacer` builds a `ClusterView` from this node's own service and what its peers last said (their
descriptions and beats), asks the pure `place()` for decisions, and performs them:

- **One at a time, critical path first.** Generations waiting for a node queue by rank; each
  is placed by `place()` on a view that already holds its predecessors' bindings, so ready
  agents spread over the mesh instead of piling onto the fastest node, and one coordinator's
  Offers never compete with each other.
- **Probe and bind late.** The best two candidates are asked for an `Offer`; each answers with
  its own current estimate and a short lease; the generation runs on the better reply. The
  other lease simply expires. Each node enforces its own admission limits, so coordinators
  placing at the same moment cannot overload it and nobody holds a global lock.
- **Fail over.** A broken stream, a peer that stops beating or a node whose runtime fails
  moves the generation to the best node that has not failed it, up to its attempts. The
  coordinator itself goes through the same service as its peers (no RPC), so its own
  limits count its runs and its peers' alike.
- **Wait in line for room, a bounded time.** When every candidate refuses (all full), the
  generation waits in the `WaitingRoom` until a place of its model frees (on this node, or one
  its own execution held on a peer: one waiter a place, critical path then oldest first) or a
  retry timer fires (nobody tells of other coordinators' work ending on a peer). That lasts up
  to its `wait_s` (the agent's `queue_timeout_seconds`) from its first placement until a node
  starts generating it; then it fails naming every node and its last answer.
- **Trust only what it observed.** Every execution's timing (started, first token, result)
  gives the speeds this coordinator saw from that node; advertised speeds count only up to
  them, and a peer whose Offer or result contradicts them is distrusted for a while
  (`orc.node.coordinator.observations`).
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import logging
import time
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import replace
from typing import TYPE_CHECKING

from orc.node.metrics.observers import UNOBSERVED, PlacementObserver
from orc.node.protocol.errors import NodeError, ResourceExhausted
from orc.node.protocol.messages import (
    AgentPayload,
    ExecuteRequest,
    ExecutionFailed,
    ExecutionResult,
    ExecutionStarted,
    ExecutionTokens,
    OfferReply,
    OfferRequest,
)
from orc.node.models.runtimes.base import GenerationDone, TokenChunk
from orc.node.coordinator.generations import (
    Answer,
    Bound,
    Generation,
    MeshEvent,
    NoNode,
    NoRoom,
    PeerLink,
    PeerState,
    TimedOut,
    Working,
    execution_id,
    failed_message,
    no_node_message,
    node_view_of,
)
from orc.node.coordinator.execution_stream import StreamBroke, StreamEnded, pump
from orc.node.coordinator.peer_links import PeerLinks, Unreachable
from orc.node.coordinator.observations import Observations
from orc.node.coordinator.waiting_room import WaitingRoom
from orc.node.worker.speed import speed_from_timing
from orc.scheduler.ensemble import Placement
from orc.scheduler.model_refs import split_model_ref
from orc.scheduler.placement import (
    ClusterView,
    Decision,
    Demand,
    Estimate,
    estimated_prompt_tokens,
    place,
)

if TYPE_CHECKING:
    from orc.node.worker.service import NodeService

log = logging.getLogger(__name__)

PROBES = 2  # Offers per placement: the best two (Sparrow's "power of two choices")
OFFER_TIMEOUT = 2.0
DEFAULT_NETWORK_S = 0.002  # a LAN round trip before any was measured
# Work this coordinator bound to a peer counts in that peer's backlog until a beat taken after
# the binding reports it; beats come every second, so a few seconds is plenty.
RECENT_WORK_S = 3.0
# How often a running generation checks that its node is still alive. A killed peer closes its
# socket and the stream breaks at once; this catches the pulled cable, which never closes.
LIVENESS_CHECK_S = 0.5
# Waiting for room when every candidate refused and no freed place woke it: quick to patient.
BUSY_RETRY_FIRST_S = 0.1
BUSY_RETRY_MAX_S = 1.0
# A node that accepts Offers but keeps refusing the Executes that follow is broken or hostile:
# after this many refusals it counts as failed for that generation.
MAX_REFUSALS = 3
RELEASE_WAIT_S = 0.25


class _Lost(Exception):
    """The node running a generation failed it; another node may still succeed."""


class _Waited(Exception):
    """The generation's time to wait ran out while it was queued on its node."""


class MeshPlacer:
    """Places and performs generations for the runs this node coordinates."""

    def __init__(self, *, service: "NodeService", peers: Callable[[], Iterable[PeerState]],
                 link: Callable[[str, str], PeerLink], clock: Callable[[], float] = time.time,
                 timer: Callable[[], float] = time.perf_counter, observer: PlacementObserver = UNOBSERVED) -> None:
        """`clock`: now, for placement and cool-downs; `timer`: a monotonic clock measuring round
        trips and executions (the speeds observed), passed apart so tests can hold `clock` still;
        `observer` is told of every binding and failover (the node's metrics)."""
        self.service = service
        self._observer = observer
        self.node_id: str = service.membership.identity.node_id
        self._peers = peers
        self._links = PeerLinks(peers, link)
        self._clock = clock
        self._timer = timer
        self._network: dict[str, float] = {}  # node id -> smoothed Offer round trip, seconds
        # Work this coordinator placed and its node may not have reported in a beat yet:
        # generation key -> (node id, work seconds, when placed or bound).
        self._placed: dict[str, tuple[str, float, float]] = {}
        self._binding: list[tuple] = []  # heap: (-rank, key, sequence, generation, demand, future)
        self.trust = Observations(
            clock=clock, own_models=lambda: self.service.describe().models,
            peers=lambda: ((peer.node_id, peer.description) for peer in self._peers()))
        self._sequence = itertools.count(1)  # the order generations asked in (ages, heap ties)
        self._binder: asyncio.Task[None] | None = None
        self._room = WaitingRoom()
        service.on_room(self._room.freed)  # any caller's execution ending here frees a place

    # ---- what the mesh has ----

    def view(self, local: bool = False) -> ClusterView:
        """Every node as this coordinator sees it now (only itself with `local`)."""
        now = self._clock()
        own = self.service.describe()
        nodes = [node_view_of(own, True, own.load, None, 0.0)]
        if not local:
            for peer in self._peers():
                if peer.description is None or peer.node_id == self.node_id:
                    continue
                view = node_view_of(peer.description, peer.alive, peer.load, peer.load_at,
                                  self._network.get(peer.node_id, DEFAULT_NETWORK_S))
                view = replace(view, models=tuple(self.trust.capped(peer.node_id, m) for m in view.models))
                since = peer.load_at if peer.load_at is not None else now - RECENT_WORK_S
                extra = sum(work for node, work, at in self._placed.values() if node == peer.node_id and at >= since)
                nodes.append(replace(view, backlog_s=view.backlog_s + extra))
        return ClusterView(self.node_id, tuple(nodes))

    def offers(self, model_ref: str, local: bool = False) -> bool:
        """Some live node (this one included) serves the model `model_ref` names."""
        model_id, runtime = split_model_ref(model_ref)
        return any(n.alive and any(m.id == model_id and runtime in (None, m.runtime) for m in n.models)
                   for n in self.view(local).nodes)

    def tagged(self, tags: Iterable[str], local: bool = False) -> bool:
        """Some live node carries every one of `tags`."""
        wanted = frozenset(tags)
        return any(n.alive and wanted <= n.tags for n in self.view(local).nodes)

    def model_ids(self, local: bool = False) -> tuple[str, ...]:
        return tuple(sorted({m.id for n in self.view(local).nodes if n.alive for m in n.models}))

    def demand(self, key: str, model_ref: str, sha256: str | None, prompt_tokens: int, max_tokens: int,
               placement: Placement, rank: float, local: bool = False,
               exclude: frozenset[str] = frozenset()) -> Demand:
        """What placement needs to know about one generation."""
        model_id, runtime = split_model_ref(model_ref)
        return Demand(
            key=key, model_id=model_id, runtime=runtime, sha256=sha256, prompt_tokens=prompt_tokens,
            max_tokens=max_tokens, rank=rank, local_only=placement.local_only or local,
            require_tags=placement.require_tags, prefer_tags=placement.prefer_tags, exclude=exclude,
            distrusted=self.distrusted())

    def distrusted(self) -> frozenset[str]:
        """Peers caught lying whose cool-down has not ended."""
        return self.trust.distrusted()

    # ---- placing ----

    async def bind(self, generation: Generation, demand: Demand, age: int | None = None,
                   ) -> tuple[Decision, tuple[Estimate, str] | None, dict[str, Answer]]:
        """Place `demand` and bind it with Offers: the decision, the node and lease it got (None
        when every candidate refused or there was none), and the refusal of each node that refused.

        Generations are bound one at a time, highest critical-path rank first, then the oldest
        (`age`: its number when it first asked; None: now): each is placed on a view its
        predecessors' bindings already changed, and its Offers never compete with theirs (two
        Offers in flight at once would each count the other's lease as queued work).
        """
        loop = asyncio.get_running_loop()
        future: asyncio.Future[tuple[Decision, tuple[Estimate, str] | None, dict[str, Answer]]] = loop.create_future()
        sequence = next(self._sequence)
        heapq.heappush(self._binding, (-demand.rank, sequence if age is None else age, demand.key, sequence,
                                       generation, demand, future))
        if self._binder is None or self._binder.done():
            self._binder = loop.create_task(self._bind_queued(), name="placement")
        return await future

    async def _bind_queued(self) -> None:
        await asyncio.sleep(0)  # generations that became ready together join the queue first
        while self._binding:
            *_, generation, demand, future = heapq.heappop(self._binding)
            if future.done():
                continue  # its generation was cancelled while it waited
            answers: dict[str, Answer] = {}
            # Who is distrusted is read now, not when the demand was made: a peer caught lying
            # while this generation waited its turn must not be asked again.
            demand = replace(demand, distrusted=self.distrusted())
            try:
                [decision] = place([demand], self.view(generation.local), self._clock())
                bound = await self._bind(generation, decision, answers) if decision.choice is not None else None
            except Exception as error:  # noqa: BLE001 - hand the failure to its generation, keep binding
                if not future.done():
                    future.set_exception(error)
                continue
            now = self._clock()
            self._placed = {k: v for k, v in self._placed.items() if v[2] > now - RECENT_WORK_S}
            if bound is not None:
                self._placed[demand.key] = (bound[0].node_id, bound[0].work_s, now)
            if future.done():  # cancelled while its Offers were out: give the place back
                if bound is not None:
                    self._links.background(self._release(bound[0].node_id, bound[1]))
                continue
            future.set_result((decision, bound, answers))

    # ---- performing ----

    async def generate(self, generation: Generation) -> AsyncIterator[MeshEvent]:
        """Place `generation`, run it, and yield where it runs, its tokens and its result.

        Raises NoNode when no node can run it (or every node it was tried on failed it).
        """
        failed: dict[str, str] = {}  # node id -> what went wrong there
        names: dict[str, str] = {}
        key = f"{generation.run_id}/{generation.agent}"
        try:
            async for event in self._place_and_run(generation, key, failed, names):
                yield event
        finally:
            self._placed.pop(key, None)  # done or abandoned: its node's own reports take over

    async def _place_and_run(self, generation: Generation, key: str, failed: dict[str, str],
                             names: dict[str, str]) -> AsyncIterator[MeshEvent]:
        refusals: dict[str, int] = {}  # node id -> Executes it refused after accepting the Offer
        answers: dict[str, str] = {}  # node id -> its last refusal, for the message if time runs out
        unfit: dict[str, str] = {}  # node id -> why it can never take this generation (refused for good)
        replaces: str | None = None
        left: str | None = None  # the node that failed it last, until it is bound elsewhere
        wait = BUSY_RETRY_FIRST_S
        attempt = 0
        loop = asyncio.get_running_loop()
        began = loop.time()
        gives_up = None if generation.wait_s is None else began + generation.wait_s
        model_id, _ = split_model_ref(generation.model)
        age = next(self._sequence)  # its place in line, kept while it waits: the oldest go first

        def no_room() -> NoRoom:
            return NoRoom(loop.time() - began, tuple((names.get(n, n), why) for n, why in answers.items()))

        async def wait_for_room(seen: int) -> None:
            """Until a place of its model frees, or the retry timer; NoRoom once `gives_up` came."""
            nonlocal wait
            if gives_up is not None and loop.time() >= gives_up:
                raise no_room()
            patience = wait if gives_up is None else min(wait, gives_up - loop.time())
            await self._room.wait(model_id, (-generation.rank, age), patience, seen)
            wait = min(wait * 2, BUSY_RETRY_MAX_S)  # refused again: the timer grows whatever woke it

        while True:
            seen = self._room.seen(model_id)  # places freed from here on may be this generation's
            demand = self.demand(key, generation.model, generation.sha256,
                                 estimated_prompt_tokens(generation.prompt_chars), generation.params.max_tokens,
                                 generation.placement, generation.rank, generation.local,
                                 frozenset(failed) | frozenset(unfit))
            decision, bound, refused = await self.bind(generation, demand, age)
            for node_id, answer in refused.items():
                names[node_id] = answer.name
                (unfit if answer.permanent else answers)[node_id] = answer.reason
                if answer.permanent:
                    answers.pop(node_id, None)
            if decision.choice is None:
                raise NoNode(no_node_message(decision, {**failed, **unfit}, names))
            if bound is None:
                if refused and all(answer.permanent for answer in refused.values()):
                    continue  # those nodes can never take it: place again without them, at once
                await wait_for_room(seen)
                continue
            estimate, lease = bound
            names[estimate.node_id] = estimate.name
            attempt += 1
            self._observer.placed(estimate.name)
            if left is not None:
                self._observer.failed_over(left)
                left = None
            yield Bound(estimate.node_id, estimate.name, replaces)
            try:
                async for event in self._execute(generation, estimate, lease, attempt, began, gives_up):
                    yield event
                return
            except _Waited:
                answers[estimate.node_id] = "queued there, not started"
                raise no_room() from None
            except ResourceExhausted as error:
                # The node filled up between its Offer and our Execute (its lease expired): not
                # its fault, place again without counting the node out, unless it keeps doing it.
                answers[estimate.node_id] = str(error)
                refusals[estimate.node_id] = refusals.get(estimate.node_id, 0) + 1
                if refusals[estimate.node_id] >= MAX_REFUSALS:
                    failed[estimate.node_id] = f"refused the execution {MAX_REFUSALS} times after offering it"
                    if len(failed) >= generation.attempts:
                        raise NoNode(failed_message(failed, names)) from None
                log.info("%s: %s refused the execution (%s); placing again", generation.agent, estimate.name, error)
                attempt -= 1
                await wait_for_room(seen)
                continue
            except _Lost as error:
                failed[estimate.node_id] = str(error)
                log.warning("%s failed on %s: %s", generation.agent, estimate.name, error)
                if len(failed) >= generation.attempts:
                    raise NoNode(failed_message(failed, names)) from None
                replaces, left = f"{estimate.name}: {error}", estimate.name

    async def _bind(self, generation: Generation, decision: Decision,
                    answers: dict[str, "Answer"]) -> tuple[Estimate, str] | None:
        """Ask the best candidates for an Offer, two at a time; the better believable accepted one
        wins. Each refusal (and each lie) is put in `answers`."""
        model_id, _ = split_model_ref(generation.model)
        candidates = list(decision.candidates)
        while candidates:
            probes, candidates = candidates[:PROBES], candidates[PROBES:]
            replies = await asyncio.gather(*(self._offer(generation, model_id, c) for c in probes))
            accepted = []
            for index, (c, reply) in enumerate(zip(probes, replies)):
                if not reply.accepted:
                    answers[c.node_id] = Answer(c.name, reply.reason, reply.permanent)
                    continue
                if c.node_id in self.distrusted():
                    # Caught lying (a made-up result for another agent) while this Offer was out.
                    answers[c.node_id] = Answer(c.name, "distrusted", False)
                    self._links.background(self._release(c.node_id, reply.lease_id))
                    continue
                lie = None if c.node_id == self.node_id else self.trust.lie(
                    c.node_id, model_id, c.sha256, generation.prompt_chars, generation.params.max_tokens,
                    reply.estimated_finish_ms)
                if lie is not None:
                    self.trust.distrust(c.node_id, c.name, lie)
                    answers[c.node_id] = Answer(c.name, f"distrusted: {lie}", False)
                    self._links.background(self._release(c.node_id, reply.lease_id))
                    continue
                accepted.append((reply.estimated_finish_ms / 1000 + c.network_s, index, c, reply.lease_id))
            if accepted:
                _, _, estimate, lease = min(accepted, key=lambda a: (a[0], a[1]))
                log.info("%s bound to %s (offers: %s)", generation.agent, estimate.name,
                         ", ".join(f"{c.name} {reply.estimated_finish_ms} ms" if reply.accepted
                                   else f"{c.name} refused" for c, reply in zip(probes, replies)))
                releases = [self._links.background(self._release(other.node_id, unused))
                            for _, _, other, unused in accepted if unused != lease]
                if releases:
                    # Give the other place back now rather than let it expire: until then it
                    # counts in that node's backlog and in the next generation's Offer. Waited
                    # for briefly only: an unreachable node must not hold up every placement.
                    await asyncio.wait(releases, timeout=RELEASE_WAIT_S)
                return estimate, lease
        return None

    async def _release(self, node_id: str, lease: str) -> None:
        if node_id == self.node_id:
            await self.service.cancel(self.node_id, lease)
            return
        await self._links.cancel(node_id, lease, "releasing lease")

    async def _offer(self, generation: Generation, model_id: str, estimate: Estimate) -> OfferReply:
        request = OfferRequest(generation.run_id, generation.agent, model_id,
                               estimate.sha256,
                               estimated_prompt_tokens(generation.prompt_chars), generation.params.max_tokens)
        if estimate.node_id == self.node_id:
            return await self.service.offer(self.node_id, request)
        started = self._timer()
        try:
            reply = await self._peer(estimate.node_id).offer(request, timeout=OFFER_TIMEOUT)
        except (NodeError, _Lost) as error:
            return OfferReply(accepted=False, reason=f"offer failed: {error}")
        rtt = self._timer() - started
        previous = self._network.get(estimate.node_id)
        self._network[estimate.node_id] = rtt if previous is None else 0.8 * previous + 0.2 * rtt
        return reply

    async def _execute(self, generation: Generation, estimate: Estimate, lease: str, attempt: int,
                       began: float, gives_up: float | None) -> AsyncIterator[Working | TokenChunk | GenerationDone]:
        """Run the generation on the bound node; raise _Lost if that node fails it (or its result
        cannot be true), _Waited if it is still queued there when `gives_up` (loop time) comes."""
        model_id, _ = split_model_ref(generation.model)
        request = ExecuteRequest(
            execution_id=execution_id(generation.run_id, generation.agent, attempt, generation.epoch),
            run_id=generation.run_id,
            agent=generation.agent, lease_id=lease,
            deadline_ms=int(generation.deadline_s * 1000) if generation.deadline_s else 0,
            payload=AgentPayload(model_id, estimate.sha256, generation.messages,
                                 generation.params))
        local = estimate.node_id == self.node_id
        stream = (self.service.execute(self.node_id, request) if local
                  else self._peer(estimate.node_id).execute(request))
        events: asyncio.Queue[object] = asyncio.Queue()
        reader = asyncio.create_task(pump(stream, events), name=f"execute {generation.agent}")
        loop = asyncio.get_running_loop()
        finished = refused = False
        started: float | None = None  # perf-counter times of the stream, for the speeds observed
        first: float | None = None
        try:
            while True:
                patience = LIVENESS_CHECK_S
                if started is None and gives_up is not None:
                    if loop.time() >= gives_up:
                        raise _Waited()
                    patience = min(patience, gives_up - loop.time())
                try:
                    item = await asyncio.wait_for(events.get(), patience)
                except asyncio.TimeoutError:
                    if not local and not self._links.alive(estimate.node_id):
                        raise _Lost("the node stopped answering") from None
                    continue
                match item:
                    case ExecutionStarted():
                        if started is None:
                            started = self._timer()
                            yield Working(estimate.node_id, round(loop.time() - began, 3))
                    case ExecutionTokens(text=text):
                        if first is None:
                            first = self._timer()
                        yield TokenChunk(text)
                    case ExecutionResult(output=text, usage=usage, finish_reason=reason):
                        finished = True
                        ended = self._timer()
                        since = started if started is not None else ended
                        if not local:
                            impossible = self.trust.impossible(model_id, generation.params.max_tokens, text, usage.prompt_tokens,
                                                          usage.completion_tokens, ended - since)
                            if impossible is not None:
                                self.trust.distrust(estimate.node_id, estimate.name, impossible)
                                raise _Lost(f"its result cannot be true: {impossible}")
                        observed = speed_from_timing(usage.prompt_tokens, usage.completion_tokens, since, first,
                                                     ended, self._clock())
                        if observed is not None:
                            self.trust.observe(estimate.node_id, model_id, observed)
                        yield GenerationDone(text, usage, reason)
                        return
                    case ExecutionFailed(code=code, message=message):
                        finished = True
                        if code == "deadline":
                            raise TimedOut(f"timed out on {estimate.name}: {message}")
                        raise _Lost(f"{code}: {message}")
                    case StreamEnded():
                        finished = True
                        raise _Lost("the stream ended without a result")
                    case StreamBroke(error=error):
                        finished = True
                        if isinstance(error, ResourceExhausted):
                            refused = True  # it held no place there
                            raise error
                        raise _Lost(str(error) or type(error).__name__)
                    case _:
                        raise AssertionError(f"unexpected execution event {item!r}")
        finally:
            reader.cancel()
            await asyncio.gather(reader, return_exceptions=True)
            if not local and not refused:  # its place there is free now (this node's service tells its own)
                self._room.freed(model_id)
            if not finished and not local:
                # Abandoned (Ctrl-C, the agent's timeout, a dead node): tell the node to stop
                # generating; if it is gone, there is nothing to stop.
                self._links.cancel_soon(estimate.node_id, request.execution_id, "cancelling execution")

    def _peer(self, node_id: str) -> PeerLink:
        try:
            return self._links.get(node_id)
        except Unreachable as error:
            raise _Lost(str(error)) from None

    def forget(self, node_id: str) -> None:
        """Drop the connection to a peer (it died or was revoked); the next call dials afresh."""
        self._links.forget(node_id)

    async def close(self) -> None:
        await self._links.close()
