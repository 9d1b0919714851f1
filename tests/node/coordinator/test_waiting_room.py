"""The waiting room alone (in line, one waiter a freed place, nothing missed), then a burst of
vote samples on one node through the real placer, the node's real service and admission, and a
scripted runtime, on virtual time: each vote waits for the work in front of it, no more."""

from __future__ import annotations

import asyncio
import math
from datetime import datetime, timezone

import pytest
from engine_fakes import TINY, FakeCatalog, RecordingRuntime, Reply, VirtualClockLoop, run_virtual

from orc.node.coordinator.generations import Generation
from orc.node.coordinator.placer import MeshPlacer
from orc.node.coordinator.waiting_room import WaitingRoom
from orc.node.models.runtimes.base import ChatMessage, GenerationDone, GenerationParams
from orc.node.trust.membership import Membership
from orc.node.trust.store import IdentityStore
from orc.node.worker.service import NodeService
from orc.scheduler.ensemble import Placement

NOW = datetime(2026, 11, 21, 12, 0, tzinfo=timezone.utc)


# ---- the room ----------------------------------------------------------------------------------

def waiters(room: WaitingRoom, lines: dict[str, tuple[float, ...]], patience: float = 10.0):
    """Start one waiter per name (model, order); each records the loop time it stopped and why."""
    loop = asyncio.get_running_loop()
    ended: dict[str, tuple[float, bool]] = {}

    async def one(name: str, model: str, order: tuple[float, ...]) -> None:
        woken = await room.wait(model, tuple(order), patience, room.seen(model))
        ended[name] = (loop.time(), woken)

    tasks = [asyncio.create_task(one(name, model, order)) for name, (model, *order) in lines.items()]
    return ended, tasks


def test_each_freed_place_wakes_the_first_in_line_of_its_model_only():
    async def scenario(loop: VirtualClockLoop):
        room = WaitingRoom()
        ended, tasks = waiters(room, {"late": ("m", -1.0, 9), "early": ("m", -1.0, 2), "urgent": ("m", -5.0, 30),
                                      "other": ("n", -1.0, 1)})
        await asyncio.sleep(0)
        assert room.waiting("m") == 3 and room.waiting("n") == 1
        for at in (1.0, 2.0, 3.0):
            await asyncio.sleep(at - loop.time())
            room.freed("m")
            await asyncio.sleep(0)
        await asyncio.gather(*tasks)
        return ended, room

    ended, room = run_virtual(scenario)
    # The critical path first, then the oldest; a place of m never wakes n's waiter.
    assert ended == {"urgent": (1.0, True), "early": (2.0, True), "late": (3.0, True), "other": (10.0, False)}
    assert room.waiting("m") == room.waiting("n") == 0


def test_a_place_of_some_model_wakes_the_first_of_every_model():
    async def scenario(loop: VirtualClockLoop):
        room = WaitingRoom()
        ended, tasks = waiters(room, {"m1": ("m", 0.0, 1), "m2": ("m", 0.0, 2), "n1": ("n", 0.0, 3)})
        await asyncio.sleep(1.0)
        room.freed(None)
        await asyncio.gather(*tasks)
        return ended

    assert run_virtual(scenario) == {"m1": (1.0, True), "n1": (1.0, True), "m2": (10.0, False)}


def test_a_place_freed_before_the_generation_waits_is_not_missed():
    async def scenario(loop: VirtualClockLoop):
        room = WaitingRoom()
        seen = room.seen("m")  # before its Offers went out
        room.freed("n")
        unrelated = await asyncio.wait_for(room.wait("m", (0.0,), 5.0, seen), 10)
        at_unrelated = loop.time()
        room.freed("m")  # while its Offers were out: nobody was in line to wake
        woken = await room.wait("m", (0.0,), 5.0, seen)
        return unrelated, at_unrelated, woken, loop.time()

    assert run_virtual(scenario) == (False, 5.0, True, 5.0)  # n's place is not m's; m's is taken at once


def test_a_waiter_that_gives_up_or_is_cancelled_leaves_the_line():
    async def scenario(loop: VirtualClockLoop):
        room = WaitingRoom()
        cancelled = asyncio.create_task(room.wait("m", (0.0, 1), 10.0, room.seen("m")))
        ended, tasks = waiters(room, {"patient": ("m", 0.0, 2)}, patience=3.0)
        await asyncio.sleep(1.0)
        cancelled.cancel()
        await asyncio.sleep(0.5)
        after_cancel = room.waiting("m")
        await asyncio.gather(*tasks)
        room.freed("m")  # nobody left: the place waits for whoever asks next
        return after_cancel, ended, room.waiting("m")

    assert run_virtual(scenario) == (1, {"patient": (3.0, False)}, 0)


# ---- a burst on one node -----------------------------------------------------------------------

SAMPLES = 5  # a 5-sample vote
IN_FLIGHT = 4  # runs at once, as tests/benchmarks/ensemble_eval.py sends them
ITEMS = 12
TOKENS = ("Answer", ":", " yes", ".")
TOKEN_S = 0.05  # so one generation takes 0.2 s, however many run beside it


def burst(tmp_path, slots: int) -> tuple[float, dict[int, float]]:
    """ITEMS votes of SAMPLES samples, IN_FLIGHT at a time, each vote's samples asked at once (as
    `Voting` does), on one node with `slots` places running and 4 queued per model. Returns the
    virtual seconds the whole took, and each vote's."""
    store = IdentityStore(tmp_path / "identity")
    membership = Membership(store, store.init_mesh("attic", NOW))
    [entry] = FakeCatalog(tmp_path).entries()
    runtime = RecordingRuntime(lambda prompt: Reply(TOKENS, TOKEN_S), slots=slots)

    async def work(loop: VirtualClockLoop):
        service = NodeService(membership=membership, runtimes={"llama_cpp": runtime}, served=[entry],
                              addresses=lambda: (), known_peers=lambda: (), clock=loop.time, slots=slots,
                              queue_limit=4)
        placer = MeshPlacer(service=service, peers=lambda: (), link=lambda node_id, address: None,
                            clock=loop.time, timer=loop.time)
        gate = asyncio.Semaphore(IN_FLIGHT)
        took: dict[int, float] = {}

        async def sample(run: str, index: int) -> None:
            generation = Generation(run, f"answer/s{index}", TINY, entry.sha256, (ChatMessage("user", "Is it? " * 8),),
                                    GenerationParams(temperature=0.8, max_tokens=12), Placement(), rank=1.0,
                                    attempts=3, wait_s=300.0)
            events = [event async for event in placer.generate(generation)]
            assert isinstance(events[-1], GenerationDone)

        async def vote(item: int) -> None:
            async with gate:
                began = loop.time()
                await asyncio.gather(*(sample(f"run-{item:02}", i) for i in range(SAMPLES)))
                took[item] = loop.time() - began

        began = loop.time()
        await asyncio.gather(*(vote(item) for item in range(ITEMS)))
        whole = loop.time() - began
        await placer.close()
        return whole, took

    return run_virtual(work)


@pytest.mark.parametrize("slots", [4, 1])
def test_a_burst_of_votes_on_one_node_waits_only_for_the_work_in_front_of_it(tmp_path, slots):
    generation_s = len(TOKENS) * TOKEN_S
    whole, took = burst(tmp_path, slots)
    # The node never idles while samples wait: the whole takes the work, one batch after another.
    assert whole == pytest.approx(ITEMS * SAMPLES / slots * generation_s, abs=0.01)
    # No vote waits behind more than the votes in flight with it (first come, first served): a
    # sample refused at first is not overtaken by the samples of votes that started later.
    in_front = IN_FLIGHT * SAMPLES / slots * generation_s
    assert max(took.values()) == pytest.approx(in_front, abs=0.01)
    # The first votes end in the order they asked, each after the samples asked before its own.
    assert [took[item] for item in range(IN_FLIGHT)] == pytest.approx(
        [math.ceil((item + 1) * SAMPLES / slots) * generation_s for item in range(IN_FLIGHT)], abs=0.01)
