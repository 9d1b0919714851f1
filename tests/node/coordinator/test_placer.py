"""The coordinator's shell around placement, driven with a recording fake service and fake peer links:
probe and bind late, wait for room, fail over, stay local, cancel, batch, and the view it places on."""

from __future__ import annotations

import asyncio
import time
from dataclasses import replace
from types import SimpleNamespace

import pytest

from orc.node.coordinator import placer as mesh_module
from orc.node.coordinator import execution_stream, observations
from orc.node.protocol.description import Load, ModelOffer, NodeDescription
from orc.node.models.hardware import Hardware
from orc.node.coordinator.generations import (
    Bound,
    Generation,
    NoNode,
    NoRoom,
    PeerState,
    Working,
    execution_id,
)
from orc.node.coordinator.placer import DEFAULT_NETWORK_S, LIVENESS_CHECK_S, MeshPlacer
from orc.node.metrics import NodeMetrics
from orc.node.protocol.errors import ResourceExhausted, Unavailable
from orc.node.protocol.messages import (
    AgentPayload,
    ExecutionFailed,
    ExecutionResult,
    ExecutionStarted,
    ExecutionTokens,
    OfferReply,
    OfferRequest,
)
from orc.node.models.runtimes.base import ChatMessage, GenerationDone, GenerationParams, TokenChunk
from orc.node.worker.speed import Speed
from orc.scheduler.ensemble import Placement
from orc.scheduler.run import Usage

HARDWARE = Hardware("x86_64", 4, 8 << 30, 4 << 30, "none", "Linux")
USAGE = Usage(4, 1)
MESSAGES = (ChatMessage("user", "Name one colour."),)  # 16 chars: 4 prompt tokens
PARAMS = GenerationParams(temperature=0.0, max_tokens=10)
HANG = object()  # a step of a scripted stream: never yield again (a pulled cable)
REFUSE = OfferReply(accepted=False, reason="queue full")
# The fakes answer at once: with prompts read this fast, their instant results are possible.
PREFILL = 1e7


def node(node_id: str, decode: float = 100.0, models: tuple[str, ...] = ("m",), backlog_ms: int = 0,
         tags: tuple[str, ...] = (), addresses: tuple[str, ...] | None = None,
         prefill: float = PREFILL) -> NodeDescription:
    """A description whose every model is warm, prefills `prefill` tok/s and decodes `decode` tok/s."""
    offers = tuple(ModelOffer(m, "llama_cpp", f"sha-{m}-{node_id}", 100_000_000, True, prefill, decode)
                   for m in models)
    return NodeDescription(1, node_id, node_id.upper(), "mesh", (f"{node_id}.lan:7733",) if addresses is None
                           else addresses, HARDWARE, offers, Load(backlog_ms=backlog_ms), 0, 1, 0.0, tags)


def accept(finish_ms: int) -> OfferReply:
    return OfferReply(accepted=True, estimated_finish_ms=finish_ms)


def completes(node_id: str) -> list:
    return [ExecutionStarted(node_id, "m@llama_cpp"), ExecutionTokens("hi"), ExecutionResult("hi", USAGE, "stop")]


class Scripted:
    """Offer replies in order (the last one repeats; each accepted one gets a fresh lease) and one
    scripted Execute stream per call (events, an exception to raise, HANG, an asyncio.Event to wait
    for; then it simply ends)."""

    def __init__(self, node_id: str, finish_ms: int) -> None:
        self.node_id = node_id
        self.replies: list[OfferReply] = [accept(finish_ms)]
        self.streams: list[list] = []
        self.offers: list[OfferRequest] = []
        self.leases: list[str] = []  # the lease of each accepted offer, in order
        self.executes: list = []

    def _reply(self, request: OfferRequest) -> OfferReply:
        self.offers.append(request)
        reply = self.replies.pop(0) if len(self.replies) > 1 else self.replies[0]
        if reply.accepted:
            reply = replace(reply, lease_id=f"{self.node_id}-lease-{len(self.offers)}")
            self.leases.append(reply.lease_id)
        return reply

    async def _stream(self, request):
        self.executes.append(request)
        for step in self.streams.pop(0) if self.streams else completes(self.node_id):
            if step is HANG:
                await asyncio.Event().wait()
            elif isinstance(step, asyncio.Event):
                await step.wait()
            elif isinstance(step, BaseException):
                raise step
            else:
                yield step


class FakePeer(Scripted):
    """A recording `PeerLink`."""

    def __init__(self, node_id: str, finish_ms: int) -> None:
        super().__init__(node_id, finish_ms)
        self.cancels: list[str] = []
        self.closed = False

    async def offer(self, request: OfferRequest, timeout: float = 2.0) -> OfferReply:
        return self._reply(request)

    def execute(self, request, timeout=None):
        return self._stream(request)

    async def cancel(self, execution_id: str, timeout: float = 1.0) -> bool:
        self.cancels.append(execution_id)
        return True

    async def close(self) -> None:
        self.closed = True


class FakeService(Scripted):
    """The coordinator's own NodeService: its description, and offers and executions from `caller`."""

    def __init__(self, description: NodeDescription, finish_ms: int) -> None:
        super().__init__(description.node_id, finish_ms)
        self.membership = SimpleNamespace(identity=SimpleNamespace(node_id=description.node_id))
        self.description = description
        self.callers: list[str] = []
        self.cancels: list[str] = []

    async def cancel(self, caller: str, execution_id: str) -> bool:
        self.cancels.append(execution_id)
        return True

    def describe(self) -> NodeDescription:
        return self.description

    def on_room(self, listener) -> None:
        self.room = listener  # tell the placer a place freed here: `w.service.room("m")`

    async def offer(self, caller: str, request: OfferRequest) -> OfferReply:
        self.callers.append(caller)
        return self._reply(request)

    def execute(self, caller: str, request):
        self.callers.append(caller)
        return self._stream(request)


class World:
    """A coordinator `a` and its peers, each estimate the node's own (finish_ms) in its Offer replies."""

    def __init__(self, coordinator: tuple[NodeDescription, int], *peers: tuple[NodeDescription, int],
                 clock=lambda: 1000.0) -> None:
        self.service = FakeService(*coordinator)
        self.states = {d.node_id: PeerState(d.node_id, d, True) for d, _ in peers}
        self.links = {d.node_id: FakePeer(d.node_id, ms) for d, ms in peers}
        self.dials: list[tuple[str, str]] = []
        self.metrics = NodeMetrics()
        self.mesh = MeshPlacer(service=self.service, peers=lambda: tuple(self.states.values()), link=self.dial,
                         clock=clock, observer=self.metrics)

    @classmethod
    def standard(cls) -> World:
        """Every node has model m; by estimate b (0.1 s) < c (0.2 s) < d (0.4 s) < the coordinator a (1 s).
        The coordinator has seen each peer run m as fast as it says (so it believes them)."""
        world = cls((node("a", 10), 1000), (node("b", 100), 100), (node("c", 50), 200), (node("d", 25), 400))
        for peer, decode in (("b", 100.0), ("c", 50.0), ("d", 25.0)):
            world.mesh.trust.observe(peer, "m", Speed(PREFILL, decode, 0.0))
        return world

    def dial(self, node_id: str, address: str) -> FakePeer:
        self.dials.append((node_id, address))
        return self.links[node_id]

    def kill(self, node_id: str) -> None:
        self.states[node_id] = replace(self.states[node_id], alive=False)

    def offered(self) -> dict[str, int]:
        return {"a": len(self.service.offers)} | {n: len(link.offers) for n, link in self.links.items()}

    def counted(self, family: str) -> dict[str, float]:
        """The node's `orc_placements_total` or `orc_failovers_total` by node name, as scraped."""
        [metric] = [m for m in self.metrics.registry.collect() if m.name == family]
        return {s.labels["node"]: s.value for s in metric.samples if s.name == f"{family}_total"}


def generation(agent: str = "agent", attempts: int = 3, placement: Placement = Placement(),
               local: bool = False) -> Generation:
    return Generation("r1", agent, "m", None, MESSAGES, PARAMS, placement, rank=1.0, attempts=attempts, local=local)


async def run(mesh: MeshPlacer, gen: Generation, on_event=lambda event: None,
              working: bool = False) -> tuple[list, NoNode | None]:
    """Every event the generation yields (`Working` only if asked: its seconds vary), and the
    NoNode it ended with (if it did); a hang fails in 5 s."""
    events = []

    async def consume() -> None:
        async for event in mesh.generate(gen):
            if working or not isinstance(event, Working):
                events.append(event)
            on_event(event)

    try:
        await asyncio.wait_for(consume(), 5.0)
    except NoNode as error:
        return events, error
    return events, None


DONE = [TokenChunk("hi"), GenerationDone("hi", USAGE, "stop")]


def test_the_best_node_gets_it_after_offers_to_the_best_two_only():
    w = World.standard()
    events, error = asyncio.run(run(w.mesh, generation()))
    assert error is None and events == [Bound("b", "B"), *DONE]
    assert w.offered() == {"a": 0, "b": 1, "c": 1, "d": 0}
    assert w.links["b"].offers == [OfferRequest("r1", "agent", "m", "sha-m-b", 4, 10)]
    assert w.links["c"].offers[0].model_sha256 == "sha-m-c"  # each node is asked for its own weights
    [request] = w.links["b"].executes
    assert request.lease_id == w.links["b"].leases[0] == "b-lease-1"
    assert request.execution_id == execution_id("r1", "agent", 1)
    assert (request.run_id, request.agent, request.deadline_ms) == ("r1", "agent", 0)
    assert request.payload == AgentPayload("m", "sha-m-b", MESSAGES, PARAMS)
    assert w.links["c"].executes == [] and w.service.executes == []
    assert w.dials == [("b", "b.lan:7733"), ("c", "c.lan:7733")]
    assert w.counted("orc_placements") == {"B": 1} and w.counted("orc_failovers") == {}


def test_the_better_reply_wins_over_the_placement_ranking():
    w = World.standard()
    w.links["b"].replies = [accept(900)]  # b is busier than its last beat said
    events, _ = asyncio.run(run(w.mesh, generation()))
    assert events == [Bound("c", "C"), *DONE]
    assert [r.lease_id for r in w.links["c"].executes] == w.links["c"].leases == ["c-lease-1"]
    assert w.links["b"].executes == []


def test_when_both_probes_refuse_the_next_two_are_asked():
    w = World.standard()
    w.links["b"].replies = w.links["c"].replies = [REFUSE]
    events, _ = asyncio.run(run(w.mesh, generation()))
    assert events == [Bound("d", "D"), *DONE]
    assert w.offered() == {"a": 1, "b": 1, "c": 1, "d": 1}
    assert w.service.callers == ["a"] and w.service.executes == []
    assert w.links["d"].executes[0].lease_id == "d-lease-1"


def test_when_every_queue_is_full_it_waits_and_places_again():
    w = World.standard()
    for link in (w.links["b"], w.links["c"], w.service):
        link.replies = [REFUSE]
    w.links["d"].replies = [REFUSE, accept(400)]
    started = time.perf_counter()
    events, error = asyncio.run(run(w.mesh, generation()))
    assert error is None and events == [Bound("d", "D"), *DONE]  # a refusal binds nothing
    assert time.perf_counter() - started >= mesh_module.BUSY_RETRY_FIRST_S
    assert w.offered() == {"a": 2, "b": 2, "c": 2, "d": 2}
    assert w.links["d"].executes[0].lease_id == "d-lease-2"


def test_a_broken_stream_fails_over_to_another_node_that_has_the_model():
    w = World.standard()
    w.links["b"].streams = [[ExecutionStarted("b", "m"), ExecutionTokens("hel"), Unavailable("connection reset")]]
    events, error = asyncio.run(run(w.mesh, generation()))
    assert error is None
    assert events == [Bound("b", "B"), TokenChunk("hel"), Bound("c", "C", replaces="B: connection reset"), *DONE]
    assert len(w.links["b"].offers) == 1  # never offered again
    assert len(w.links["c"].offers) == 2 and len(w.links["d"].offers) == 1  # the second placement asked c, d
    [request] = w.links["c"].executes
    assert request.execution_id == execution_id("r1", "agent", 2) != execution_id("r1", "agent", 1)
    assert request.lease_id == w.links["c"].leases[-1] == "c-lease-2"
    assert w.links["b"].cancels == []  # the stream is gone: nothing to stop
    assert w.counted("orc_placements") == {"B": 1, "C": 1}
    assert w.counted("orc_failovers") == {"B": 1}  # by the node it left


def test_when_no_other_node_has_the_model_the_failure_names_every_node():
    w = World((node("a", models=("other",)), 100), (node("b"), 100), (node("c", models=("other",)), 100))
    w.links["b"].streams = [[ExecutionStarted("b", "m"), ExecutionFailed("runtime", "out of memory", False)]]
    events, error = asyncio.run(run(w.mesh, generation(attempts=3)))
    assert events == [Bound("b", "B")]
    assert str(error) == "no other node can run it (A: no model 'm'; B: runtime: out of memory; C: no model 'm')"
    assert w.counted("orc_failovers") == {}  # it failed, but moved nowhere


def test_with_one_attempt_the_first_failure_is_final():
    w = World.standard()
    w.links["b"].streams = [[ExecutionStarted("b", "m"), ExecutionTokens("x")]]  # ends without a result
    events, error = asyncio.run(run(w.mesh, generation(attempts=1)))
    assert events == [Bound("b", "B"), TokenChunk("x")]
    assert str(error) == "failed on 1 node(s): B: the stream ended without a result"
    assert w.offered() == {"a": 0, "b": 1, "c": 1, "d": 0}
    assert w.links["c"].executes == []


def test_a_silent_node_that_stops_beating_is_failed_over_within_a_liveness_check():
    w = World.standard()
    w.links["b"].streams = [[ExecutionStarted("b", "m"), HANG]]

    async def scenario():
        started = time.perf_counter()
        result = await run(w.mesh, generation(), lambda e: w.kill("b") if e == Bound("b", "B") else None)
        await asyncio.sleep(0)
        return result, time.perf_counter() - started

    (events, error), elapsed = asyncio.run(scenario())
    assert error is None
    assert events == [Bound("b", "B"), Bound("c", "C", replaces="B: the node stopped answering"), *DONE]
    assert w.counted("orc_failovers") == {"B": 1}
    assert elapsed < 2 * LIVENESS_CHECK_S + 0.5
    assert w.links["b"].cancels == [execution_id("r1", "agent", 1)]  # it may still be generating


@pytest.mark.parametrize("gen", [generation(placement=Placement(local_only=True)), generation(local=True)],
                         ids=["local_only", "local"])
def test_a_local_generation_never_reaches_a_peer(gen):
    w = World.standard()
    events, error = asyncio.run(run(w.mesh, gen))
    assert error is None and events == [Bound("a", "A"), *DONE]
    assert all(link.offers == [] and link.executes == [] for link in w.links.values())
    assert w.dials == []
    assert w.service.callers == ["a", "a"]
    assert w.service.offers == [OfferRequest("r1", "agent", "m", "sha-m-a", 4, 10)]
    [request] = w.service.executes
    assert request.payload.messages == MESSAGES and request.lease_id == "a-lease-1"


def test_cancelling_the_consumer_cancels_the_execution_on_the_peer():
    w = World.standard()
    w.links["b"].streams = [[ExecutionStarted("b", "m"), ExecutionTokens("hel"), HANG]]

    async def scenario():
        first = asyncio.Event()
        task = asyncio.create_task(run(w.mesh, generation(), lambda e: first.set()
                                       if isinstance(e, TokenChunk) else None))
        await first.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        for _ in range(3):
            await asyncio.sleep(0)

    asyncio.run(scenario())
    assert w.links["b"].cancels == [execution_id("r1", "agent", 1)]
    assert len(w.links["c"].executes) == 0


def test_a_node_whose_lease_expired_is_placed_again_without_counting_it_failed():
    w = World.standard()
    w.links["c"].replies = [accept(900)]
    w.links["b"].streams = [[ResourceExhausted("lease expired")]]
    events, error = asyncio.run(run(w.mesh, generation(attempts=1)))  # one attempt: a failure would be final
    assert error is None and events == [Bound("b", "B"), Bound("b", "B"), *DONE]
    first, second = w.links["b"].executes
    assert (first.lease_id, second.lease_id) == ("b-lease-1", "b-lease-2")
    assert first.execution_id == second.execution_id == execution_id("r1", "agent", 1)
    assert w.counted("orc_placements") == {"B": 2} and w.counted("orc_failovers") == {}  # bound twice, never failed


def test_generations_asked_together_are_bound_one_at_a_time_critical_path_first_and_spread(monkeypatch):
    w = World((node("a", models=("other",)), 100), (node("b"), 100), (node("c"), 100))
    calls, place = [], mesh_module.place

    def recording_place(demands, view, now):
        calls.append(sorted(d.key for d in demands))
        return place(demands, view, now)

    monkeypatch.setattr(mesh_module, "place", recording_place)

    async def scenario():
        return await asyncio.gather(run(w.mesh, replace(generation("x"), rank=1.0)),
                                    run(w.mesh, replace(generation("y"), rank=5.0)))

    (x, _), (y, _) = asyncio.run(scenario())
    assert calls == [["r1/y"], ["r1/x"]]  # y is on the longer path: bound first, though asked second
    assert (y[0], x[0]) == (Bound("b", "B"), Bound("c", "C"))  # x sees b taken by y
    assert [r.agent for r in w.links["b"].executes] == ["y"]
    assert [r.agent for r in w.links["c"].executes] == ["x"]
    assert [o.agent for o in w.links["b"].offers] == [o.agent for o in w.links["c"].offers] == ["y", "x"]


def test_a_peer_without_a_known_address_does_not_break_the_generation():
    w = World((node("a", 10), 1000), (node("b", addresses=()), 100), (node("c", 50), 200))
    events, error = asyncio.run(run(w.mesh, generation()))
    assert error is None and events[0] != Bound("b", "B") and events[-1] == DONE[-1]


def test_the_view_counts_own_node_peers_beats_recent_work_and_the_dead():
    now = [100.0]
    w = World((node("a", models=("m",), backlog_ms=250, tags=("attic",)), 100),
              (node("b", models=("m", "mb"), tags=("fast",)), 100), (node("c", models=("m", "mc")), 100),
              (node("d", models=("m2",), tags=("gpu",)), 100), clock=lambda: now[0])
    w.states["b"] = replace(w.states["b"], load=Load(backlog_ms=500), load_at=99.0)
    w.kill("d")
    w.states["e"] = PeerState("e", None, True)  # known by address only: not placeable
    w.states["a"] = PeerState("a", node("a", models=("stale",)), True)  # itself, as a peer reported it
    mesh = w.mesh

    view = mesh.view()
    assert view.coordinator == "a" and [n.node_id for n in view.nodes] == ["a", "b", "c", "d"]
    a, b, c, d = view.nodes
    assert (a.network_s, a.backlog_s, a.alive) == (0.0, 0.25, True)
    assert (b.network_s, b.backlog_s, b.tags) == (DEFAULT_NETWORK_S, 0.5, frozenset({"fast"}))
    assert c.backlog_s == 0.0 and c.memory_available_bytes == 4 << 30
    assert d.alive is False and [m.id for m in d.models] == ["m2"]
    assert [n.node_id for n in mesh.view(local=True).nodes] == ["a"]

    async def place(model: str) -> str:
        demand = mesh.demand(f"r1/{model}", model, None, 4, 10, Placement(), 1.0)
        _, (estimate, _), _ = await mesh.bind(replace(generation(model), model=model), demand)
        return estimate.node_id

    # Nobody was seen running mb or mc: their advertised speeds count as the unmeasured ones.
    assert asyncio.run(place("mb")) == "b" and asyncio.run(place("mc")) == "c"  # 4/50 + 10/5 = 2.08 s each
    backlog = {n.node_id: n.backlog_s for n in mesh.view().nodes}
    assert backlog["b"] == pytest.approx(2.58) and backlog["c"] == pytest.approx(2.08)
    now[0] = 101.0
    w.states["b"] = replace(w.states["b"], load_at=100.5)  # a beat taken after the binding counts it itself
    backlog = {n.node_id: n.backlog_s for n in mesh.view().nodes}
    assert backlog["b"] == pytest.approx(0.5) and backlog["c"] == pytest.approx(2.08)
    now[0] = 103.5  # no beat from c: its recent work counts for RECENT_WORK_S only
    assert {n.node_id: n.backlog_s for n in mesh.view().nodes}["c"] == 0.0

    assert mesh.offers("m") and mesh.offers("m@llama_cpp") and mesh.offers("mb")
    assert not mesh.offers("m@mlx") and not mesh.offers("m2")  # only the dead d has m2
    assert mesh.offers("m", local=True) and not mesh.offers("mb", local=True)
    assert mesh.tagged(["attic"]) and mesh.tagged(["fast"]) and not mesh.tagged(["gpu"])
    assert not mesh.tagged(["attic", "fast"]) and not mesh.tagged(["fast"], local=True)
    assert mesh.model_ids() == ("m", "mb", "mc") and mesh.model_ids(local=True) == ("m",)


def test_the_offer_it_does_not_take_is_given_back_at_once():
    w = World.standard()
    w.links["b"].replies = [accept(900)]  # c's reply wins; b's place must not stay held for 5 s

    async def scenario():
        events, error = await run(w.mesh, generation())
        await asyncio.sleep(0)  # the release goes out in the background
        await asyncio.sleep(0)
        return events, error

    events, error = asyncio.run(scenario())
    assert error is None and events[0] == Bound("c", "C")
    assert w.links["b"].cancels == [w.links["b"].leases[0]]
    assert w.links["c"].cancels == []


# ---- waiting a bounded time ----

def test_refused_everywhere_it_waits_its_bound_then_fails_naming_every_node():
    w = World.standard()
    for link in (w.links["b"], w.links["c"], w.links["d"], w.service):
        link.replies = [OfferReply(accepted=False, reason=f"full ({link.node_id})")]
    events, error = asyncio.run(run(w.mesh, replace(generation(), wait_s=0.3)))
    assert events == [] and isinstance(error, NoRoom)
    assert error.waited_s >= 0.3
    assert dict(error.answers) == {"A": "full (a)", "B": "full (b)", "C": "full (c)", "D": "full (d)"}
    assert str(error).startswith("waited 0 s without a node starting it (") and "D: full (d)" in str(error)
    assert min(w.offered().values()) >= 2  # it asked again while it waited


def test_refused_everywhere_it_places_again_as_soon_as_this_node_frees_a_place(monkeypatch):
    monkeypatch.setattr(mesh_module, "BUSY_RETRY_FIRST_S", 30.0)  # its timer alone would fail `run`'s 5 s
    w = World.standard()
    for link in (w.links["b"], w.links["c"], w.links["d"], w.service):
        link.replies = [REFUSE, accept(100)]

    async def scenario():
        waiting = asyncio.create_task(run(w.mesh, generation()))
        while w.offered() != {"a": 1, "b": 1, "c": 1, "d": 1}:
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.05)  # it waits in line now
        w.service.room("m")  # an execution of m ended here (`NodeService.on_room`)
        return await waiting

    events, error = asyncio.run(scenario())
    assert error is None and isinstance(events[0], Bound)  # within `run`'s 5 s: not the 30 s timer


def test_its_own_execution_ending_on_a_peer_wakes_the_generation_waiting_for_that_place(monkeypatch):
    monkeypatch.setattr(mesh_module, "BUSY_RETRY_FIRST_S", 30.0)
    w = World((node("a", models=("other",)), 100), (node("b"), 100))  # b alone has m, and room for one
    w.mesh.trust.observe("b", "m", Speed(PREFILL, 100.0, 0.0))
    w.links["b"].replies = [accept(100), REFUSE, accept(100)]
    finish = asyncio.Event()
    w.links["b"].streams = [[ExecutionStarted("b", "m"), finish, ExecutionResult("hi", USAGE, "stop")]]
    started = []

    async def scenario():
        first = asyncio.create_task(run(w.mesh, generation("first")))
        while not w.links["b"].executes:
            await asyncio.sleep(0.01)
        second = asyncio.create_task(run(w.mesh, generation("second"), on_event=started.append))
        while len(w.links["b"].offers) < 2:
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.05)
        assert started == []  # refused: b's one place is the first's
        finish.set()
        return await first, await second

    (first, _), (second, error) = asyncio.run(scenario())
    assert first[0] == second[0] == Bound("b", "B") and error is None
    assert [o.agent for o in w.links["b"].offers] == ["first", "second", "second"]


def test_a_refusal_for_good_is_placed_elsewhere_at_once_and_never_waited_for():
    w = World.standard()
    w.links["b"].replies = [OfferReply(accepted=False, reason="max_tokens 10 is too many here", permanent=True)]
    events, error = asyncio.run(run(w.mesh, generation()))
    assert error is None and events[0] == Bound("c", "C")
    everyone = World.standard()
    for link in (everyone.links["b"], everyone.links["c"], everyone.links["d"], everyone.service):
        link.replies = [OfferReply(accepted=False, reason=f"too large for {link.node_id}", permanent=True)]
    started = time.perf_counter()
    events, error = asyncio.run(run(everyone.mesh, replace(generation(), wait_s=60.0)))
    assert events == [] and type(error) is NoNode
    assert str(error) == ("no other node can run it (A: too large for a; B: too large for b; C: too large for c; "
                          "D: too large for d)")
    assert time.perf_counter() - started < 5  # not the 60 s it could have waited
    assert everyone.offered() == {"a": 1, "b": 1, "c": 1, "d": 1}


def test_a_generation_still_queued_on_its_node_when_its_wait_runs_out_fails_and_is_cancelled():
    w = World.standard()
    w.links["b"].streams = [[HANG]]  # accepted, then queued: no ExecutionStarted ever
    events, error = asyncio.run(run(w.mesh, replace(generation(), wait_s=0.3)))
    assert events == [Bound("b", "B")] and isinstance(error, NoRoom)
    assert dict(error.answers)["B"] == "queued there, not started"
    assert w.links["b"].cancels == [execution_id("r1", "agent", 1)]


def test_working_comes_when_the_node_starts_and_the_deadline_counts_from_there():
    w = World.standard()
    w.links["b"].streams = [[ExecutionStarted("b", "m"), ExecutionFailed("deadline", "the deadline passed", True)]]
    events, error = asyncio.run(run(w.mesh, replace(generation(), deadline_s=1.5), working=True))
    assert [type(e) for e in events] == [Bound, Working] and events[1].node_id == "b" and events[1].waited_s >= 0
    assert type(error).__name__ == "TimedOut" and "timed out on B" in str(error)
    assert w.links["b"].executes[0].deadline_ms == 1500


# ---- trusting only what was observed ----

def test_a_peers_speeds_count_only_up_to_what_was_observed():
    w = World((node("a", 10), 1000), (node("b", 1e6), 100), (node("c", 1e6), 100))
    w.mesh.trust.observe("c", "m", Speed(PREFILL, 40.0, 0.0))
    models = {n.node_id: n.models[0] for n in w.mesh.view().nodes}
    assert models["a"].decode_tokens_per_s == 10  # its own measurement
    # b, never seen: at most twice the best seen for m anywhere (c's 40, above a's own 10).
    assert models["b"].decode_tokens_per_s == 40 * observations.UNOBSERVED_FACTOR
    assert models["c"].decode_tokens_per_s == 40 * observations.OBSERVED_SLACK  # seen at 40
    assert w.mesh.trust.observed("c", "m").decode_tokens_per_s == 40


def test_a_lying_estimate_gets_the_peer_avoided():
    # b claims a million tokens a second and finishes anything in 0 ms.
    w = World((node("a", 10), 1000), (node("b", 1e6), 0), (node("c", 50), 300))
    events, error = asyncio.run(run(w.mesh, generation()))
    assert error is None and events[0] == Bound("c", "C")
    assert w.mesh.trust.lies == {"b": 1} and w.mesh.distrusted() == {"b"}
    assert w.links["b"].cancels == [w.links["b"].leases[0]]  # its lease is given back, unused
    assert w.links["b"].executes == []  # it never saw the prompt
    events, error = asyncio.run(run(w.mesh, generation("next")))
    assert error is None and events[0] == Bound("c", "C")
    assert len(w.links["b"].offers) == 1  # not even asked again
    [decision] = mesh_module.place([w.mesh.demand("k", "m", None, 4, 10, Placement(), 1.0)], w.mesh.view(), 0.0)
    assert [r.reason.value for r in decision.rejected] == ["distrusted"]


def test_a_peer_seen_while_busy_is_no_liar_for_estimating_at_its_idle_speed():
    # b decodes 100 tok/s idle and says so; the one time this coordinator saw it, it shared its
    # cores with other generations and wrote 20 tok/s (the daemons of tests/mesh/ have shown a
    # 5.6 times slowdown like this). Its next Offer, at its idle speed, is the truth.
    w = World((node("a", 10), 1000), (node("b", 100), 100), (node("c", 50), 300))
    w.mesh.trust.observe("b", "m", Speed(PREFILL, 20.0, 0.0))
    events, error = asyncio.run(run(w.mesh, generation()))
    assert error is None and events[0] == Bound("b", "B")
    assert w.mesh.trust.lies == {} and w.mesh.distrusted() == frozenset()


def test_a_peer_with_the_prompt_in_its_cache_is_no_liar_for_skipping_its_prefill():
    # b reads prompts slowly (8 tok/s: 0.5 s for this one) but holds this prompt's prefix in its
    # KV cache, so it offers the decode alone (10 tokens at 100 tok/s) and a little more.
    w = World((node("a", 10), 1000), (node("b", 100, prefill=8.0), 150))
    events, error = asyncio.run(run(w.mesh, generation()))
    assert error is None and w.mesh.trust.lies == {} and w.mesh.distrusted() == frozenset()


def test_generations_waiting_to_be_bound_when_a_peer_lies_leave_it_out_too():
    # Four agents ready together: their demands are made before b's first lie is caught, and
    # bound after it.
    w = World((node("a", 10), 1000), (node("b", 1e6), 0), (node("c", 50), 300))

    async def scenario():
        return await asyncio.gather(*(run(w.mesh, generation(f"g{i}")) for i in range(4)))

    outcomes = asyncio.run(scenario())
    assert all(error is None and events[0] != Bound("b", "B") for events, error in outcomes)
    assert len(w.links["b"].offers) == 1  # asked once: every later placement left it out
    assert w.mesh.trust.lies == {"b": 1}


def test_a_peer_caught_lying_while_its_offer_was_out_is_not_sent_the_prompt():
    w = World.standard()
    b = w.links["b"]
    answer = b.offer

    async def caught_meanwhile(request, timeout=2.0):
        reply = await answer(request, timeout)
        w.mesh.trust.distrust("b", "B", "a result it made up for another agent")  # while this Offer was out
        return reply

    b.offer = caught_meanwhile
    events, error = asyncio.run(run(w.mesh, generation()))
    assert error is None and events[0] == Bound("c", "C")
    assert b.executes == [] and b.cancels == b.leases  # its place is given back, unused


def test_an_impossible_result_is_refused_and_the_agent_moves():
    w = World.standard()
    w.links["b"].streams = [[ExecutionStarted("b", "m"), ExecutionResult("made up " * 3, Usage(4, 11), "stop")]]
    events, error = asyncio.run(run(w.mesh, generation()))
    assert error is None
    assert events[0] == Bound("b", "B") and events[-1] == DONE[-1]
    assert events[1] == Bound("c", "C", replaces="B: its result cannot be true: it claims 11 completion tokens, "
                                                  "more than max_tokens 10")
    assert w.mesh.trust.lies == {"b": 1}


@pytest.mark.parametrize("result, why", [
    (ExecutionResult("x" * 400, Usage(4, 2), "stop"), "its 400 characters cannot be 2 tokens"),
    (ExecutionResult("fast " * 5, Usage(4, 10), "stop"), "more than 20 times faster than any speed seen for m"),
])
def test_results_that_contradict_their_numbers_are_impossible(result, why):
    w = World.standard()
    w.links["b"].streams = [[ExecutionStarted("b", "m"), result]]
    events, error = asyncio.run(run(w.mesh, generation()))
    assert error is None and why in events[1].replaces and events[1].node_id == "c"


def test_a_bug_reading_a_stream_is_logged_with_its_traceback_and_still_fails_over(caplog):
    w = World.standard()
    w.links["b"].streams = [[ExecutionStarted("b", "m"), TypeError("a bug in the conversion")]]
    with caplog.at_level("ERROR", logger=execution_stream.__name__):
        events, error = asyncio.run(run(w.mesh, generation()))
    assert error is None and events[-len(DONE):] == DONE
    [record] = [r for r in caplog.records if r.name == execution_stream.__name__ and r.levelname == "ERROR"]
    assert "execution stream" in record.getMessage() and record.exc_info[0] is TypeError
