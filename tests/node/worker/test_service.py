"""This node as peers see it: its description, beats, and executions on the real runtime."""

from __future__ import annotations

import asyncio
import os
from datetime import datetime, timezone

import pytest

from orc.node.worker.execution_log import ExecutionLog, read
from orc.node.models.catalog import Catalog
from orc.node.trust.store import IdentityStore
from orc.node.trust.membership import Membership
from orc.node.protocol.errors import InvalidRequest, PermissionDenied, ResourceExhausted
from orc.node.protocol.messages import (
    AgentPayload,
    ExecuteRequest,
    ExecutionFailed,
    ExecutionResult,
    ExecutionStarted,
    ExecutionTokens,
    OfferRequest,
)
from orc.node.models.runtimes.base import ChatMessage, GenerationDone, GenerationParams, TokenChunk, Usage
from orc.node.models.runtimes.llama_cpp import LlamaCppRuntime
from orc.node.worker import service as service_module
from orc.node.worker.served import LaneLoad
from orc.node.worker.service import NodeService
from orc.node.worker.speed import Speed, speed_from_timing
from orc.scheduler.placement import DEFAULT_LOAD_BYTES_PER_S, UNMEASURED_DECODE_TOKENS_PER_S

SMOL = "smollm2-135m-instruct"
NOW = datetime(2026, 11, 21, 12, 0, tzinfo=timezone.utc)


@pytest.fixture(scope="module")
def runtime():
    return LlamaCppRuntime(n_threads=2)


@pytest.fixture
def make(tmp_path, runtime):
    """A NodeService serving SmolLM2 on the real runtime, with the given admission and audit options."""
    store = IdentityStore(tmp_path / "identity")
    membership = Membership(store, store.init_mesh("attic", NOW))
    entry = Catalog(tmp_path / "models").prepare(SMOL)

    def make(**options) -> NodeService:
        return NodeService(membership=membership, runtimes={"llama_cpp": runtime}, served=[entry],
                           addresses=lambda: ("10.0.0.1:7733",), known_peers=lambda: (), tags=("attic",),
                           **options)

    return make


@pytest.fixture
def service(make):
    return make()


PROMPT = "Name one colour."


def request(service: NodeService, execution_id: str = "e1", sha: str | None = None, max_tokens: int = 12,
            deadline_ms: int = 0, lease_id: str = "") -> ExecuteRequest:
    entry = service._served[f"{SMOL}@llama_cpp"].entry
    payload = AgentPayload(SMOL, entry.sha256 if sha is None else sha,
                           (ChatMessage("user", PROMPT),),
                           GenerationParams(temperature=0.0, max_tokens=max_tokens, seed=1))
    return ExecuteRequest(execution_id, "run1", "agent", lease_id, deadline_ms, payload)


async def started(service: NodeService, caller: str, execution_id: str, **options):
    """An execution that has started and is held there: it keeps its slot until closed."""
    stream = service.execute(caller, request(service, execution_id, **options))
    assert isinstance(await stream.__anext__(), ExecutionStarted)
    return stream


async def until(condition, what: str) -> None:
    """Let the loop run until `condition()` holds (the other tasks need a few turns)."""
    for _ in range(1000):
        if condition():
            return
        await asyncio.sleep(0.001)
    raise AssertionError(f"never happened: {what}")


async def collect(stream) -> list:
    return [event async for event in stream]


def test_describe_tells_the_truth_about_this_node(service):
    description = service.describe()
    assert description.node_id == service.membership.identity.node_id
    assert description.mesh_id == service.membership.identity.mesh_id
    assert description.hardware.cores == os.cpu_count()
    assert description.addresses == ("10.0.0.1:7733",) and description.tags == ("attic",)
    assert description.certificate_authority is True and description.revocation_seq == 0
    [model] = description.models
    assert model.id == SMOL and model.loaded is False and model.decode_tokens_per_s is None
    assert len(model.sha256) == 64


def test_warm_up_loads_measures_and_bumps_the_version(service):
    before = service.version
    asyncio.run(service.warm_up())
    [model] = service.describe().models
    assert model.loaded is True and model.decode_tokens_per_s > 0 and model.prefill_tokens_per_s > 0
    assert service.version > before


def test_execute_streams_tokens_then_a_result(service):
    events = asyncio.run(collect(service.execute("peer", request(service))))
    assert isinstance(events[0], ExecutionStarted) and events[0].model == SMOL
    assert isinstance(events[-1], ExecutionResult)
    text = "".join(e.text for e in events if isinstance(e, ExecutionTokens))
    assert text == events[-1].output and events[-1].usage.completion_tokens > 0
    assert service.load().active_generations == 0


def test_execute_refuses_other_weights_and_unknown_models(service):
    [failed] = asyncio.run(collect(service.execute("peer", request(service, sha="0" * 64))))
    assert isinstance(failed, ExecutionFailed) and failed.code == "no_such_model" and not failed.retryable


def test_a_deadline_ends_the_execution_as_retryable(service):
    events = asyncio.run(collect(service.execute("peer", request(service, max_tokens=400, deadline_ms=1))))
    assert isinstance(events[-1], ExecutionFailed) and events[-1].code == "deadline" and events[-1].retryable


def test_only_the_starter_may_cancel(service):
    async def scenario():
        stream = service.execute("peer", request(service, "e2", max_tokens=200))
        first = await stream.__anext__()
        assert isinstance(first, ExecutionStarted)
        with pytest.raises(PermissionDenied):
            await service.cancel("intruder", "e2")
        assert await service.cancel("peer", "e2") is True
        rest = [event async for event in stream]
        return rest

    rest = asyncio.run(scenario())
    assert isinstance(rest[-1], ExecutionFailed) and rest[-1].code == "cancelled"
    assert asyncio.run(service.cancel("peer", "e2")) is False


def test_offers_estimate_from_measured_speed(service):
    served = service._served[f"{SMOL}@llama_cpp"]
    served.speed, served.loaded = Speed(100.0, 10.0, 0.0), True
    reply = asyncio.run(service.offer("peer", OfferRequest("run", "a", SMOL, "", 200, 50)))
    assert reply.accepted and reply.lease_id and reply.estimated_finish_ms == 7000
    refused = asyncio.run(service.offer("peer", OfferRequest("run", "a", "gpt-9", "", 1, 1)))
    assert not refused.accepted and "gpt-9" in refused.reason


def test_speed_arithmetic():
    speed = speed_from_timing(100, 11, started=0.0, first_token=0.5, finished=1.5, now=7.0)
    assert speed == Speed(200.0, 10.0, 7.0)
    assert speed_from_timing(100, 1, 0.0, 0.5, 1.0, 0.0) is None  # one token: no decode rate
    assert speed.refreshed(Speed(100.0, 20.0, 8.0)) == Speed(170.0, 13.0, 8.0)


def test_an_unmeasured_cold_model_is_estimated_pessimistically_with_its_load(service):
    entry = service._served[f"{SMOL}@llama_cpp"].entry
    reply = asyncio.run(service.offer("peer", OfferRequest("run", "a", SMOL, "", 0, 10)))
    expected = entry.size_bytes / DEFAULT_LOAD_BYTES_PER_S + 10 / UNMEASURED_DECODE_TOKENS_PER_S
    assert reply.accepted and reply.estimated_finish_ms == round(expected * 1000)


# ---- admission: slots, the queue and leases ----

def test_two_executions_on_one_slot_run_one_after_the_other(make):
    service = make(slots=1)
    order: list[tuple[str, str]] = []

    async def consume(execution_id: str) -> None:
        async for event in service.execute("peer", request(service, execution_id, max_tokens=6)):
            order.append((execution_id, type(event).__name__))

    async def scenario():
        first = asyncio.create_task(consume("e1"))
        await until(lambda: ("e1", "ExecutionStarted") in order, "e1 starts")
        second = asyncio.create_task(consume("e2"))
        await until(lambda: service.load().queued == 1, "e2 waits")
        load = service.load()
        assert load.active_generations == 1 and load.backlog_ms > 0
        await asyncio.gather(first, second)

    version = service.version
    asyncio.run(scenario())
    assert order.index(("e2", "ExecutionStarted")) > order.index(("e1", "ExecutionResult"))
    assert order[-1] == ("e2", "ExecutionResult")
    assert service.load().active_generations == 0 and service.load().queued == 0
    assert service.version == version  # load travels in beats, not in the description version


def test_a_full_queue_refuses_with_resource_exhausted(make):
    service = make(slots=1, queue_limit=1)

    async def scenario():
        running = await started(service, "peer", "e1")
        waiting = asyncio.create_task(collect(service.execute("peer", request(service, "e2"))))
        await until(lambda: service.load().queued == 1, "e2 waits")
        with pytest.raises(ResourceExhausted):
            await collect(service.execute("other", request(service, "e3")))
        with pytest.raises(InvalidRequest):  # an id already admitted
            await collect(service.execute("peer", request(service, "e2")))
        assert await service.cancel("peer", "e2") is True
        await running.aclose()
        return await waiting

    [cancelled] = asyncio.run(scenario())
    assert isinstance(cancelled, ExecutionFailed) and cancelled.code == "cancelled"
    assert service.load().active_generations == 0 and service.load().queued == 0


def test_an_offer_holds_the_place_its_lease_then_takes(make):
    now = [1000.0]
    service = make(slots=1, queue_limit=0, clock=lambda: now[0])
    served = service._served[f"{SMOL}@llama_cpp"]
    served.speed, served.loaded = Speed(100.0, 10.0, 0.0), True

    async def scenario():
        offer = await service.offer("peer", OfferRequest("run1", "agent", SMOL, "", 100, 10))
        assert offer.accepted and offer.expires_at_ms == 1_005_000 and offer.estimated_finish_ms == 2000
        assert service.load().backlog_ms == 2000
        refused = await service.offer("other", OfferRequest("run2", "agent", SMOL, "", 100, 10))
        assert not refused.accepted and "taken" in refused.reason
        with pytest.raises(ResourceExhausted):
            await collect(service.execute("other", request(service, "x1")))
        with pytest.raises(ResourceExhausted):  # another node's lease is no use to it
            await collect(service.execute("other", request(service, "x1", lease_id=offer.lease_id)))
        return await collect(service.execute("peer", request(service, "e1", lease_id=offer.lease_id)))

    events = asyncio.run(scenario())
    assert isinstance(events[0], ExecutionStarted) and isinstance(events[-1], ExecutionResult)
    assert service.load().backlog_ms == 0


def test_an_expired_lease_frees_its_place(make):
    now = [1000.0]
    service = make(slots=1, queue_limit=0, clock=lambda: now[0])
    reply = asyncio.run(service.offer("peer", OfferRequest("run1", "agent", SMOL, "", 10, 10)))
    assert reply.accepted
    assert not asyncio.run(service.offer("other", OfferRequest("run2", "agent", SMOL, "", 10, 10))).accepted
    now[0] += 5.0
    assert asyncio.run(service.offer("other", OfferRequest("run2", "agent", SMOL, "", 10, 10))).accepted


def test_cancel_while_queued_takes_it_out_of_the_queue(make):
    service = make(slots=1)

    async def scenario():
        running = await started(service, "peer", "e1")
        waiting = asyncio.create_task(collect(service.execute("peer", request(service, "e2"))))
        await until(lambda: service.load().queued == 1, "e2 waits")
        with pytest.raises(PermissionDenied):
            await service.cancel("intruder", "e2")
        assert await service.cancel("peer", "e2") is True
        events = await waiting
        assert service.load().queued == 0 and service.load().active_generations == 1
        await running.aclose()
        return events

    assert asyncio.run(scenario()) == [ExecutionFailed("cancelled", "cancelled by the caller", retryable=False)]


def test_a_caller_going_away_while_queued_leaves_the_queue(make):
    service = make(slots=1)

    async def scenario():
        running = await started(service, "peer", "e1")
        waiting = asyncio.create_task(collect(service.execute("peer", request(service, "e2"))))
        await until(lambda: service.load().queued == 1, "e2 waits")
        waiting.cancel()  # what grpc does when the client hangs up
        with pytest.raises(asyncio.CancelledError):
            await waiting
        assert service.load().queued == 0
        await running.aclose()
        assert service.load().active_generations == 0
        return await collect(service.execute("peer", request(service, "e3", max_tokens=4)))

    events = asyncio.run(scenario())
    assert isinstance(events[0], ExecutionStarted)  # the slot and the queue place both came back


def test_the_deadline_counts_from_the_start_not_the_wait_in_the_queue(make):
    service = make(slots=1)

    async def scenario():
        running = await started(service, "peer", "e1")
        waiting = asyncio.create_task(collect(service.execute("peer", request(service, "e2", max_tokens=200,
                                                                                   deadline_ms=1))))
        await until(lambda: service.load().queued == 1, "e2 waits")
        await asyncio.sleep(0.05)  # far longer than its 1 ms deadline, in the queue
        assert not waiting.done()
        await running.aclose()
        return await waiting

    events = asyncio.run(scenario())
    # It started (the wait did not count), then its own 1 ms ran out while generating.
    assert isinstance(events[0], ExecutionStarted)
    assert isinstance(events[-1], ExecutionFailed) and events[-1].code == "deadline" and events[-1].retryable
    assert "from its start" in events[-1].message


def test_the_node_bounds_queueing_on_its_own(make, monkeypatch):
    monkeypatch.setattr(service_module, "MAX_QUEUED_S", 0.05)
    service = make(slots=1)

    async def scenario():
        running = await started(service, "peer", "e1")
        events = await collect(service.execute("peer", request(service, "e2")))
        assert service.load().queued == 0
        await running.aclose()
        return events

    [failed] = asyncio.run(scenario())
    assert failed.code == "queued_too_long" and failed.retryable and "0.05 s in this node's queue" in failed.message


# ---- what a caller may ask ----

def test_requests_beyond_the_context_window_are_refused_for_good(service):
    window = service._served[f"{SMOL}@llama_cpp"].context_tokens()
    assert window == 2048  # the llama.cpp runtime's n_ctx

    async def scenario():
        huge = await service.offer("peer", OfferRequest("run", "a", SMOL, "", 10, 2**32 - 1))
        long = await service.offer("peer", OfferRequest("run", "a", SMOL, "", window + 1, 10))
        fits = await service.offer("peer", OfferRequest("run", "a", SMOL, "", window, window))
        executed = await collect(service.execute("peer", request(service, "big", max_tokens=window + 1)))
        return huge, long, fits, executed

    huge, long, fits, [failed] = asyncio.run(scenario())
    assert not huge.accepted and huge.permanent
    assert huge.reason == f"max_tokens 4294967295 does not fit the context window of {SMOL} here (2048 tokens); lower max_tokens"
    assert not long.accepted and long.permanent and "the prompt (about 2049 tokens) does not fit the context window" in long.reason
    assert fits.accepted and not fits.permanent
    assert failed == ExecutionFailed("too_large", f"max_tokens 2049 does not fit the context window of {SMOL} here "
                                                  "(2048 tokens); lower max_tokens", retryable=False)
    assert service.load().active_generations == 0


def test_work_estimates_count_no_more_than_the_context_window_leaves(service):
    served = service._served[f"{SMOL}@llama_cpp"]
    served.speed, served.loaded = Speed(1000.0, 10.0, 0.0), True
    reply = asyncio.run(service.offer("peer", OfferRequest("run", "a", SMOL, "", 2000, 2048)))
    # 2000 prompt tokens at 1000/s, then the 48 tokens the window leaves at 10/s (not 2048 of them).
    assert reply.accepted and reply.estimated_finish_ms == 2000 + 4800
    assert asyncio.run(service.offer("peer", OfferRequest("run", "b", "gpt-9", "", 1, 1))).permanent


def test_offers_are_counted_per_caller_and_unused_leases_are_logged(make, tmp_path, caplog):
    now = [1000.0]
    path = tmp_path / "executions.jsonl"
    service = make(slots=1, queue_limit=1, clock=lambda: now[0], audit=ExecutionLog(path))

    async def scenario():
        replies = [await service.offer("mallory", OfferRequest("run9", "hoard", SMOL, "", 10, 10)) for _ in range(3)]
        assert [r.accepted for r in replies] == [True, True, False]
        refused = await service.offer("home", OfferRequest("run1", "critic", SMOL, "", 10, 10))
        assert not refused.accepted and not refused.permanent
        now[0] += 6.0  # mallory's leases expire unused
        again = [await service.offer("mallory", OfferRequest("run9", "hoard", SMOL, "", 10, 10)) for _ in range(2)]
        return again

    with caplog.at_level("INFO", logger="orc.node.worker.service"):
        first, second = asyncio.run(scenario())
    assert first.accepted and not second.accepted  # two callers, two places, two unused: a share of one
    assert second.reason.startswith("2 of your leases here expired unused")
    stats = service.caller_stats("mallory")
    assert (stats.offers, stats.accepted, stats.refused, stats.expired_unused, stats.executed) == (5, 3, 2, 2, 0)
    assert stats.last_refusal == second.reason
    assert service.caller_stats("home").refused == 1 and service.caller_stats("nobody") is None
    records = [r for r in read(path) if r["outcome"] == "lease_expired_unused"]
    assert len(records) == 2 and {(r["caller"], r["run_id"], r["agent"], r["seconds"]) for r in records} == {
        ("mallory", "run9", "hoard", 5.0)}
    assert records[0]["model"] == f"{SMOL}@llama_cpp"
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("offers from mallory")]
    assert lines == ["offers from mallory: 1 asked, 1 accepted, 0 refused, 0 executed, 0 leases expired unused"]


def test_the_counters_of_callers_stay_bounded(service, monkeypatch):
    monkeypatch.setattr(service_module, "MAX_TRACKED_CALLERS", 5)

    async def scenario():
        for i in range(20):
            await service.offer(f"caller{i}", OfferRequest("r", "a", "gpt-9", "", 1, 1))

    asyncio.run(scenario())
    assert len(service._callers) == 5 and service.caller_stats("caller19").offers == 1


# ---- the execution log ----

def test_every_execution_served_is_logged_without_its_prompt(make, tmp_path):
    path = tmp_path / "executions.jsonl"
    service = make(slots=1, queue_limit=0, audit=ExecutionLog(path))

    async def scenario():
        await collect(service.execute("peer", request(service, "ok", max_tokens=4)))
        await collect(service.execute("peer", request(service, "wrong", sha="0" * 64)))
        running = await started(service, "peer", "held")
        with pytest.raises(ResourceExhausted):
            await collect(service.execute("other", request(service, "full")))
        await service.cancel("peer", "held")
        await collect(running)

    asyncio.run(scenario())
    records = {r["execution_id"]: r for r in read(path)}
    assert {k: r["outcome"] for k, r in records.items()} == {
        "ok": "completed", "wrong": "failed:no_such_model", "full": "refused", "held": "cancelled"}
    ok = records["ok"]
    assert ok["caller"] == "peer" and ok["run_id"] == "run1" and ok["agent"] == "agent"
    assert ok["model"] == f"{SMOL}@llama_cpp" and ok["prompt_chars"] == len(PROMPT)
    assert ok["seconds"] >= 0 and ok["at"] > 0
    assert records["full"]["caller"] == "other"
    assert PROMPT not in path.read_text() and "colour" not in path.read_text()


# ---- capacity and availability, as the runtime reports them ----

class HeldRuntime:
    """A runtime that runs `capacity` generations of a model at once: each streams one token and
    then waits for `release` before it ends; `reason` is its unavailable_reason."""

    name = "llama_cpp"

    def __init__(self, capacity: int) -> None:
        self.slots = capacity
        self.reason: str | None = None
        self.release = asyncio.Event()
        self.running = 0
        self.most = 0

    async def load(self, model) -> None:
        pass

    async def generate(self, model, messages, params):
        self.running += 1
        self.most = max(self.most, self.running)
        try:
            yield TokenChunk("a")
            await self.release.wait()
            yield TokenChunk("b")
            yield GenerationDone("ab", Usage(4, 2), "stop")
        finally:
            self.running -= 1

    async def unload(self, model_id: str) -> None:
        pass

    def memory_estimate(self, model) -> int:
        return 0

    def capacity(self, model) -> int:
        return self.slots

    def unavailable_reason(self, model) -> str | None:
        return self.reason


@pytest.fixture
def make_held(tmp_path):
    """A NodeService serving SmolLM2's catalog entry on a HeldRuntime of the given capacity."""
    store = IdentityStore(tmp_path / "identity")
    membership = Membership(store, store.init_mesh("attic", NOW))
    entry = Catalog(tmp_path / "models").prepare(SMOL)

    def make(capacity: int, **options) -> tuple[NodeService, HeldRuntime]:
        held = HeldRuntime(capacity)
        return NodeService(membership=membership, runtimes={"llama_cpp": held}, served=[entry],
                           addresses=lambda: (), known_peers=lambda: (), **options), held

    return make


def test_a_lane_runs_as_many_at_once_as_the_runtime_says(make_held):
    service, held = make_held(3, slots=1, queue_limit=2)
    [model] = service.describe().models
    assert model.capacity == 3

    async def scenario():
        tasks = [asyncio.create_task(collect(service.execute("peer", request(service, f"e{i}")))) for i in range(4)]
        await until(lambda: held.running == 3 and service.load().queued == 1, "three run, one waits")
        held.release.set()
        return await asyncio.gather(*tasks)

    results = asyncio.run(scenario())
    assert all(isinstance(events[-1], ExecutionResult) for events in results) and held.most == 3


def test_the_real_runtime_gives_each_lane_its_instances(tmp_path):
    store = IdentityStore(tmp_path / "identity")
    membership = Membership(store, store.init_mesh("attic", NOW))
    entry = Catalog(tmp_path / "models").prepare(SMOL)
    service = NodeService(membership=membership, runtimes={"llama_cpp": LlamaCppRuntime(max_concurrent_per_model=2)},
                          served=[entry], addresses=lambda: (), known_peers=lambda: ())
    assert service.describe().models[0].capacity == 2
    assert service._admission.lane_slots(entry.selector) == 2


def test_an_unavailable_model_is_advertised_refused_with_its_reason_and_comes_back(make_held):
    service, held = make_held(2)
    version = service.version
    held.reason = "its runner crashed 3 times in a row (SIGSEGV)\nlast: signal 11"
    service.poll_runtimes()
    [model] = service.describe().models
    assert service.version == version + 1
    assert model.unavailable == "its runner crashed 3 times in a row (SIGSEGV) last: signal 11"  # one line
    reply = asyncio.run(service.offer("peer", OfferRequest("run", "a", SMOL, "", 10, 10)))
    assert not reply.accepted and reply.permanent
    assert reply.reason == f"{SMOL} cannot run on this node now: {model.unavailable}"
    [failed] = asyncio.run(collect(service.execute("peer", request(service))))
    assert isinstance(failed, ExecutionFailed) and failed.code == "unavailable" and "SIGSEGV" in failed.message
    held.reason = None
    service.poll_runtimes()
    assert service.version == version + 2 and service.describe().models[0].unavailable == ""
    assert asyncio.run(service.offer("peer", OfferRequest("run", "a", SMOL, "", 10, 10))).accepted
    service.poll_runtimes()
    assert service.version == version + 2  # nothing changed: no new version


def test_a_larger_capacity_starts_the_queued_at_once(make_held):
    service, held = make_held(1, queue_limit=2)

    async def scenario():
        tasks = [asyncio.create_task(collect(service.execute("peer", request(service, f"e{i}")))) for i in range(3)]
        await until(lambda: held.running == 1 and service.load().queued == 2, "one runs, two wait")
        held.slots = 3  # restarted with a batch of three
        service.poll_runtimes()
        await until(lambda: held.running == 3, "the queued ones start")
        assert service.describe().models[0].capacity == 3
        held.release.set()
        return await asyncio.gather(*tasks)

    assert all(isinstance(events[-1], ExecutionResult) for events in asyncio.run(scenario()))


def test_a_capacity_beyond_the_wire_cap_is_advertised_at_the_cap(make_held):
    service, _ = make_held(64)
    assert service.describe().models[0].capacity == 16


def test_an_offer_beside_a_running_generation_is_estimated_at_the_batch_rate(make_held):
    now = [1000.0]
    service, held = make_held(4, clock=lambda: now[0])
    served = service._served[f"{SMOL}@llama_cpp"]
    served.speed, served.loaded = Speed(100.0, 10.0, 0.0, (10.0, 5.0)), True
    [model] = service.describe().models
    assert model.batch_decode_tokens_per_s == (10.0, 5.0)

    async def scenario():
        running = await started(service, "peer", "e1")
        # One runs: a second joins it, writing 10 tokens at 5 tok/s after 100 prompt tokens at 100.
        reply = await service.offer("peer", OfferRequest("run", "a", SMOL, "", 100, 10))
        held.release.set()
        await collect(running)
        return reply

    assert asyncio.run(scenario()).estimated_finish_ms == 3000


def test_a_generation_run_beside_another_refreshes_the_rate_of_that_batch_size(make_held):
    service, held = make_held(2)
    served = service._served[f"{SMOL}@llama_cpp"]
    served.speed, served.loaded = Speed(100.0, 10.0, 0.0, (10.0, 9.0)), True

    async def scenario():
        tasks = [asyncio.create_task(collect(service.execute("peer", request(service, f"e{i}")))) for i in range(2)]
        await until(lambda: held.running == 2, "both run")
        held.release.set()
        await asyncio.gather(*tasks)

    asyncio.run(scenario())
    assert served.speed.decode_tokens_per_s == 10.0  # one alone's speed is not what two together showed
    assert served.speed.batch_decode_tokens_per_s[1] != 9.0


def test_lanes_show_each_models_slots_running_queued_leases_and_availability(make):
    now = [1000.0]
    service = make(slots=1, queue_limit=2, clock=lambda: now[0])
    idle = LaneLoad(SMOL, "llama_cpp", 1, 0, 0, 0, "")
    assert service.lanes() == (idle,)

    async def scenario():
        running = await started(service, "peer", "e1")
        waiting = asyncio.create_task(collect(service.execute("peer", request(service, "e2"))))
        await until(lambda: service.load().queued == 1, "e2 waits")
        offer = await service.offer("other", OfferRequest("run2", "agent", SMOL, "", 10, 10))
        assert offer.accepted
        busy = service.lanes()
        now[0] += 5.0  # the lease expires unused
        expired = service.lanes()
        await running.aclose()
        await waiting
        return busy, expired

    busy, expired = asyncio.run(scenario())
    assert busy == (LaneLoad(SMOL, "llama_cpp", 1, 1, 1, 1, ""),)
    assert expired == (LaneLoad(SMOL, "llama_cpp", 1, 1, 1, 0, ""),)
    assert service.lanes() == (idle,)
    service._served[f"{SMOL}@llama_cpp"].unavailable = "its runner crashed 3 times in 10 minutes"
    assert service.lanes()[0].unavailable == "its runner crashed 3 times in 10 minutes"
