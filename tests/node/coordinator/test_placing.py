"""Embedded mode's placer: up to a model's capacity of generations at once on this machine."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from engine_fakes import TINY, FakeCatalog, RecordingRuntime, Reply, run_virtual

from orc.node.coordinator.generations import Generation, NoNode, Working
from orc.node.coordinator.placing import LocalPlacer
from orc.node.models.runtimes.base import ChatMessage, GenerationDone, GenerationParams
from orc.scheduler.ensemble import Placement


def generation(agent: str) -> Generation:
    return Generation("run", agent, TINY, None, (ChatMessage("user", agent),), GenerationParams(max_tokens=4),
                      Placement(), 0.0, 1)


def finishes(slots: int, count: int) -> list[float]:
    """When each of `count` parallel generations of 3 tokens, 1 s apart, ends (virtual seconds)."""
    async def scenario(loop) -> list[float]:
        runtime = RecordingRuntime(lambda prompt: Reply(("a", "b", "c"), delay_s=1.0), slots=slots)
        placer = LocalPlacer(FakeCatalog(Path("/nonexistent")), {"llama_cpp": runtime})
        began = loop.time()

        async def one(agent: str) -> float:
            async for event in placer.generate(generation(agent)):
                if isinstance(event, GenerationDone):
                    return loop.time() - began
            raise AssertionError("no result")

        return await asyncio.gather(*(one(f"a{i}") for i in range(count)))

    return run_virtual(scenario)


def test_a_model_of_one_place_runs_its_generations_one_after_another():
    assert sorted(finishes(1, 3)) == pytest.approx([3.0, 6.0, 9.0])


def test_a_batching_runtime_runs_up_to_its_capacity_together():
    assert sorted(finishes(2, 3)) == pytest.approx([3.0, 3.0, 6.0])
    assert sorted(finishes(4, 3)) == pytest.approx([3.0, 3.0, 3.0])


def test_the_view_and_the_refusal_say_what_the_runtime_reports(tmp_path):
    runtime = RecordingRuntime(slots=3)
    placer = LocalPlacer(FakeCatalog(tmp_path), {"llama_cpp": runtime})
    [model] = placer.view().nodes[0].models
    assert model.capacity == 3 and model.unavailable == ""
    runtime.reason = "its runner crashed 3 times (SIGSEGV)"

    async def attempt():
        async for event in placer.generate(generation("a")):
            assert not isinstance(event, Working)

    with pytest.raises(NoNode, match="cannot run on this machine now: its runner crashed 3 times"):
        asyncio.run(attempt())
    assert placer.view().nodes[0].models[0].unavailable.startswith("its runner crashed")
