"""The MLX runtime behind the same process boundary: an MLX model runs in a runner, answers as
the MLX runtime does in-process, and dies as a llama.cpp runner does. (This test process has
imported mlx to convert the model; test_no_runtime_in_node checks the node's own imports.)"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import signal
from pathlib import Path

import pytest
from generation_events import done_of, generated
from mlx_fixtures import require_mlx

from orc.node.models.catalog import ModelEntry
from orc.node.models.runners import RunnerRuntime, RunnerSettings
from orc.node.models.runtimes.base import ChatMessage, GenerationParams, RunnerDied

pytestmark = pytest.mark.slow

STORY = [ChatMessage("user", "Tell me a story.")]
GREEDY = GenerationParams(temperature=0, max_tokens=8)


def test_an_mlx_model_runs_in_a_runner_and_answers_as_in_process(smollm2_mlx: ModelEntry) -> None:
    require_mlx()
    quick = dataclasses.replace(smollm2_mlx, chat=False)  # the short transcript prompt: MLX on a CPU is slow

    async def scenario() -> str:
        runtime = RunnerRuntime("mlx", RunnerSettings(threads=2))
        try:
            text = done_of(await generated(runtime, quick, STORY, GREEDY)).text
            runner = runtime.runner(quick.id)
            assert runner is not None
            assert "libmlx" in Path(f"/proc/{runner.pid}/maps").read_text()
            # A crash is handled as for llama.cpp.
            os.kill(runner.pid, signal.SIGSEGV)
            with pytest.raises(RunnerDied, match=f"the runner of {quick.id} died: SIGSEGV"):
                async for _event in runner.generate(STORY, GREEDY):
                    pass
            return text
        finally:
            await runtime.close()

    in_runner = asyncio.run(scenario())
    from orc.node.models.runtimes.mlx import MlxRuntime

    in_process = done_of(asyncio.run(generated(MlxRuntime(), quick, STORY, GREEDY))).text
    assert in_runner == in_process != ""
