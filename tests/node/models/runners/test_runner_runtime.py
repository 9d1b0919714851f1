"""RunnerRuntime with real runner processes and the real embedded SmolLM2: streaming, cancel,
unload, load errors, crashes (SIGSEGV mid-generation), the crash policy, and no process left behind."""

from __future__ import annotations

import asyncio
import logging
import os
import re
import signal
import subprocess
import sys
import time
from contextlib import aclosing
from dataclasses import replace
from pathlib import Path

import pytest
from generation_events import done_of, generated
from support import child_pids

from orc.node.models.catalog import ModelEntry
from orc.node.models.runners import RunnerRuntime, RunnerSettings
from orc.node.models.runners.cpu_share import CpuShare
from orc.node.models.runners.crashes import COOL_DOWN_S
from orc.node.models.runtimes.base import (
    ChatMessage,
    GenerationDone,
    GenerationError,
    GenerationParams,
    ModelLoadError,
    RunnerDied,
    TokenChunk,
)
from orc.node.models.runtimes.llama_cpp import LlamaCppRuntime

pytest.importorskip("llama_cpp")
pytestmark = pytest.mark.slow

QUESTION = [ChatMessage("user", "Name three colors.")]
STORY = [ChatMessage("user", "Write a long story about a dragon who learns to bake bread.")]
GREEDY = GenerationParams(temperature=0, max_tokens=24)
LONG = GenerationParams(temperature=0, max_tokens=400)
SETTINGS = RunnerSettings(threads=2, extra_buffers=True)


def gone(pid: int) -> bool:
    """The process no longer exists (exited and reaped)."""
    return not Path(f"/proc/{pid}").exists()


async def eventually(condition, seconds: float = 30.0) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        await asyncio.sleep(0.05)
    return condition()


async def first_chunk_then(runtime: RunnerRuntime, model: ModelEntry, act) -> BaseException | None:  # type: ignore[no-untyped-def]
    """Start a long generation, call `act()` at its first chunk, and return what it raised."""
    try:
        async with aclosing(runtime.generate(model, STORY, LONG)) as events:
            acted = False
            async for event in events:
                if isinstance(event, TokenChunk) and not acted:
                    acted = True
                    act()
                if isinstance(event, GenerationDone):
                    return None
    except (RunnerDied, GenerationError) as error:
        return error
    return None


def test_a_runner_streams_the_same_text_as_the_runtime_in_process_and_unloading_ends_it(smollm2: ModelEntry) -> None:
    async def scenario() -> None:
        runtime = RunnerRuntime("llama_cpp", SETTINGS)
        assert runtime.capacity(smollm2) == 1 and runtime.context_tokens(smollm2) == 2048  # before a load
        assert runtime.memory_estimate(smollm2) == LlamaCppRuntime(n_ctx=2048).memory_estimate(smollm2)
        try:
            events = await generated(runtime, smollm2, QUESTION, GREEDY)
            runner = runtime.runner(smollm2.id)
            assert runner is not None and runner.pid != os.getpid() and runner.rss_bytes > smollm2.size_bytes // 2
            in_process = await generated(LlamaCppRuntime(n_threads=2), smollm2, QUESTION, GREEDY)
            assert done_of(events).text == done_of(in_process).text != ""
            assert done_of(events).usage == done_of(in_process).usage
            assert "".join(e.text for e in events if isinstance(e, TokenChunk)) == done_of(events).text
            pid = runner.pid
            await runtime.unload(smollm2.id)
            assert gone(pid)  # its memory went back with it
            assert runtime.runner(smollm2.id) is None
            assert done_of(await generated(runtime, smollm2, QUESTION, GREEDY)).text == done_of(events).text
        finally:
            await runtime.close()

    asyncio.run(scenario())


def test_closing_the_stream_cancels_the_generation_in_the_runner(smollm2: ModelEntry) -> None:
    async def scenario() -> None:
        runtime = RunnerRuntime("llama_cpp", SETTINGS)
        try:
            async with aclosing(runtime.generate(smollm2, STORY, LONG)) as events:
                async for event in events:
                    assert isinstance(event, TokenChunk)
                    break
            runner = runtime.runner(smollm2.id)
            assert runner is not None

            async def idle() -> bool:
                return (await runner.stats()).active == 0

            deadline = time.monotonic() + 30
            while not await idle():
                assert time.monotonic() < deadline, "the runner kept generating after Cancel"
                await asyncio.sleep(0.05)
            # The slot is free: the next generation runs on the same runner.
            assert done_of(await generated(runtime, smollm2, QUESTION, GREEDY)).finish_reason in ("stop", "length")
            assert runtime.runner(smollm2.id) is runner
        finally:
            await runtime.close()

    asyncio.run(scenario())


def test_a_load_error_comes_back_with_the_runners_message_and_is_no_crash(
        smollm2: ModelEntry, tmp_path: Path) -> None:
    not_gguf = tmp_path / "notes.gguf"
    not_gguf.write_text("hello")
    broken = replace(smollm2, path=not_gguf)

    async def scenario() -> None:
        runtime = RunnerRuntime("llama_cpp", SETTINGS)
        try:
            with pytest.raises(ModelLoadError, match=f"cannot load model '{smollm2.id}': {not_gguf} is not a GGUF file"):
                await runtime.load(broken)
            assert runtime.runner(smollm2.id) is None
            assert child_pids(os.getpid()) == []  # the runner that failed to load was stopped
            assert runtime.unavailable_reason(broken) is None
            assert runtime.runner_settings(smollm2.id).extra_buffers is True  # not a crash: no safe settings
        finally:
            await runtime.close()

    asyncio.run(scenario())


def test_a_runner_killed_with_sigsegv_fails_its_generation_and_restarts_with_safe_settings(
        smollm2: ModelEntry, caplog: pytest.LogCaptureFixture) -> None:
    async def scenario() -> None:
        runtime = RunnerRuntime("llama_cpp", SETTINGS)
        try:
            await runtime.load(smollm2)
            first = runtime.runner(smollm2.id)
            assert first is not None and first.settings.extra_buffers is True
            assert runtime.restart_counts() == {}  # a first start is no restart
            with caplog.at_level(logging.WARNING, logger="orc.node.models.runners"):
                error = await first_chunk_then(runtime, smollm2, lambda: os.kill(first.pid, signal.SIGSEGV))
            assert isinstance(error, RunnerDied)
            assert str(error) == f"the runner of {smollm2.id} died: SIGSEGV"
            assert await eventually(lambda: gone(first.pid))
            warnings = [r for r in caplog.records if r.levelno == logging.WARNING and "died" in r.getMessage()]
            assert len(warnings) == 1 and "SIGSEGV" in warnings[0].getMessage()
            # The node restarts the runner by itself, with llama.cpp's extra buffer types off.
            assert await eventually(lambda: runtime.runner(smollm2.id) is not None, 120)
            second = runtime.runner(smollm2.id)
            assert second is not None and second.pid != first.pid
            assert runtime.restart_counts() == {smollm2.id: 1}
            done = done_of(await generated(runtime, smollm2, QUESTION, GREEDY))
            assert runtime.runner(smollm2.id) is second
            assert second.settings.extra_buffers is False
            assert done.text
            assert runtime.unavailable_reason(smollm2) is None
            assert runtime.restart_counts() == {smollm2.id: 1}  # using the restarted runner restarts nothing
        finally:
            await runtime.close()

    asyncio.run(scenario())


def test_a_generation_waiting_for_a_slot_runs_on_the_restarted_runner(smollm2: ModelEntry) -> None:
    async def scenario() -> None:
        runtime = RunnerRuntime("llama_cpp", SETTINGS)
        try:
            await runtime.load(smollm2)
            first = runtime.runner(smollm2.id)
            assert first is not None and first.capacity == 1
            waiting = asyncio.create_task(generated(runtime, smollm2, QUESTION, GREEDY))

            def kill() -> None:
                assert not waiting.done()
                os.kill(first.pid, signal.SIGKILL)

            error = await first_chunk_then(runtime, smollm2, kill)
            assert isinstance(error, RunnerDied) and str(error).endswith("died: SIGKILL")
            events = await asyncio.wait_for(waiting, 120)
            assert done_of(events).text  # not failed: it had not started, so it waited for the next runner
            second = runtime.runner(smollm2.id)
            assert second is not None and second.pid != first.pid
        finally:
            await runtime.close()

    asyncio.run(scenario())


def test_three_crashes_make_the_model_unavailable_until_the_cool_down(smollm2: ModelEntry) -> None:
    now = [1000.0]

    async def scenario() -> None:
        runtime = RunnerRuntime("llama_cpp", SETTINGS, clock=lambda: now[0])
        try:
            for crash in range(3):
                await runtime.load(smollm2)
                runner = runtime.runner(smollm2.id)
                assert runner is not None
                os.kill(runner.pid, signal.SIGSEGV)
                assert await eventually(lambda: runtime.runner(smollm2.id) is None)
                now[0] += 60
            reason = "its runner crashed 3 times in 10 minutes (last: SIGSEGV)"
            assert runtime.unavailable_reason(smollm2) == reason
            with pytest.raises(GenerationError, match=re.escape(f"unavailable on this node: {reason}")):
                await generated(runtime, smollm2, QUESTION, GREEDY)
            assert runtime.runner(smollm2.id) is None  # no runner was started for it
            assert runtime.restart_counts() == {smollm2.id: 2}  # after the first two crashes, not the third
            now[0] += COOL_DOWN_S
            assert runtime.unavailable_reason(smollm2) is None
            assert done_of(await generated(runtime, smollm2, QUESTION, GREEDY)).text
            assert runtime.restart_counts() == {smollm2.id: 3}  # back after its cool-down
        finally:
            await runtime.close()

    asyncio.run(scenario())


def test_close_stops_every_runner_and_leaves_no_process_behind(smollm2: ModelEntry) -> None:
    async def scenario() -> None:
        llama = RunnerRuntime("llama_cpp", SETTINGS)
        other = RunnerRuntime("llama_cpp", SETTINGS)
        await llama.load(smollm2)
        await other.load(smollm2)
        pids = [r.pid for r in (llama.runner(smollm2.id), other.runner(smollm2.id)) if r is not None]
        assert len(pids) == 2 and sorted(child_pids(os.getpid())) == sorted(pids)
        # close() in the middle of a generation: it is cancelled, not waited for.
        generating = asyncio.create_task(generated(llama, smollm2, STORY, LONG))
        await asyncio.sleep(0.2)
        await llama.close()
        await other.close()
        with pytest.raises(RunnerDied):
            await generating
        assert all(gone(pid) for pid in pids)  # exited and reaped: no zombie
        assert child_pids(os.getpid()) == []

    asyncio.run(scenario())


PARENT = """
import asyncio, sys
from orc.node.models.catalog import Catalog, DEFAULT_MODEL_ID
from orc.node.models.runners import RunnerRuntime, RunnerSettings
from pathlib import Path

async def main():
    entry = Catalog(Path(sys.argv[1])).prepare(DEFAULT_MODEL_ID)
    runtime = RunnerRuntime("llama_cpp", RunnerSettings(threads=1))
    await runtime.load(entry)
    print(runtime.runner(entry.id).pid, flush=True)
    await asyncio.sleep(3600)

asyncio.run(main())
"""


def test_a_runner_does_not_outlive_a_node_killed_with_sigkill(tmp_path: Path) -> None:
    node = subprocess.Popen([sys.executable, "-c", PARENT, str(tmp_path / "models")], stdout=subprocess.PIPE,
                            text=True)
    try:
        assert node.stdout is not None
        runner_pid = int(node.stdout.readline())
        assert Path(f"/proc/{runner_pid}").exists()
        node.kill()  # no clean-up code runs in the node
        node.wait(30)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not _dead(runner_pid):
            time.sleep(0.05)
        assert _dead(runner_pid), "the runner outlived its node"
    finally:
        node.kill()
        node.wait(30)


def _dead(pid: int) -> bool:
    """Gone, or a zombie waiting for whatever adopted it to reap it (it holds no memory then)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return True
    return state in ("Z", "X")


async def takes_shares(model: ModelEntry) -> bool:
    """Whether `model` gives the same logits with fewer threads here, so its runner takes a share."""
    from orc.node.models.runtimes.llama_batched import BatchedLlamaRuntime

    runtime = BatchedLlamaRuntime(n_threads=2, slots=1, extra_buffers=SETTINGS.extra_buffers)
    await runtime.load(model)
    try:
        return runtime._models[model.id].steps.thread_invariant  # noqa: SLF001 - what the probe found
    finally:
        await runtime.unload(model.id)


def test_runners_generating_at_once_share_the_cores_and_write_what_they_write_alone(smollm2: ModelEntry,
                                                                                     gemma: ModelEntry) -> None:
    """Two runners of a node with two cores: each computes with one thread while both generate
    (the runners themselves say so), and with both again alone; the texts are those of each model
    generating alone. A model whose logits change with the thread count on this CPU
    (`StepLoop._probe_threads`, asked in-process here) keeps its two threads instead."""
    essay = [ChatMessage("user", "Write a detailed 1000-word essay about the history of bread.")]
    params = GenerationParams(temperature=0, max_tokens=64)

    async def main() -> None:
        share = CpuShare(cores=2)
        runtime = RunnerRuntime("llama_cpp", SETTINGS, share=share)
        models = (smollm2, gemma)
        try:
            alone = [done_of(await generated(runtime, model, essay, params)).text for model in models]
            runners = [runtime.runner(model.id) for model in models]
            assert all(runner is not None for runner in runners)
            assert [share.told(runner) for runner in runners] == [2, 2] and share.generating == 0
            seen: set[tuple[int, int]] = set()

            async def watch() -> None:  # what each runner's last decode step ran with, while both generate
                while True:
                    if share.generating == 2:
                        stats = [await runner.stats() for runner in runners]  # type: ignore[union-attr]
                        if share.generating == 2:
                            seen.add((stats[0].threads, stats[1].threads))
                    await asyncio.sleep(0.02)

            async def text_of(model: ModelEntry) -> str:
                return done_of(await generated(runtime, model, essay, params)).text

            watcher = asyncio.create_task(watch())
            together = await asyncio.gather(*(text_of(model) for model in models))
            watcher.cancel()
            assert together == alone
            told = [share.told(runner) for runner in runners]
            assert sorted(told) == [1, 2], told  # the one that ended last had both cores again
            expected = tuple([1 if await takes_shares(model) else 2 for model in models])
            assert expected in seen, seen  # while both generated, each runner decoded with its share
            assert share.generating == 0
        finally:
            await runtime.close()

    asyncio.run(main())
