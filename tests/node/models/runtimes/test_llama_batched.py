"""The batched llama.cpp runtime with the real embedded models: the same texts as
`LlamaCppRuntime`, token for token, alone, batched with other sequences and with a reused prefix."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Sequence
from pathlib import Path

import pytest
from generation_events import chunks_of, done_of, generated

from orc.node.models.catalog import ModelEntry
from orc.node.models.runtimes.base import (
    ChatMessage,
    GenerationDone,
    GenerationError,
    GenerationParams,
    ModelLoadError,
    TokenChunk,
)
from orc.node.models.runtimes.llama_batched import BatchedLlamaRuntime
from orc.node.models.runtimes.llama_cpp import LlamaCppRuntime
from orc.node.models.runtimes.llama_load import extra_buffers_for_this_cpu

pytest.importorskip("llama_cpp")

SYSTEM = ChatMessage("system", "You are a concise assistant.")
TARGET = ([SYSTEM, ChatMessage("user", "Write a short poem about the sea.")],
          GenerationParams(temperature=0, max_tokens=24, seed=1))
# Other sequences in the batch, each sampling differently.
OTHERS = [
    ([SYSTEM, ChatMessage("user", "Write a short poem about the moon.")],
     GenerationParams(temperature=0.9, max_tokens=30, seed=5, top_p=0.8)),
    ([ChatMessage("user", "Name three colors.")], GenerationParams(temperature=0, max_tokens=12, stop=(",",))),
    ([SYSTEM, ChatMessage("user", "Tell me a story about a dragon.")], GenerationParams(temperature=1.2, max_tokens=20, seed=7)),
]


async def done(runtime: object, model: ModelEntry, messages: Sequence[ChatMessage],
               params: GenerationParams) -> GenerationDone:
    return done_of(await generated(runtime, model, messages, params))


def test_texts_usage_and_finish_match_llama_cpp_runtime(smollm2: ModelEntry) -> None:
    requests = [TARGET, *OTHERS[:2], ([ChatMessage("user", "Count from one to ten.")],
                                      GenerationParams(temperature=0, max_tokens=30, stop=("five",)))]

    async def both() -> tuple[list[GenerationDone], list[GenerationDone]]:
        reference = LlamaCppRuntime(n_threads=2)
        expected = [await done(reference, smollm2, m, p) for m, p in requests]
        await reference.unload(smollm2.id)
        batched = BatchedLlamaRuntime(n_threads=2, slots=4)
        got = list(await asyncio.gather(*(done(batched, smollm2, m, p) for m, p in requests)))
        await batched.unload(smollm2.id)
        return expected, got

    expected, got = asyncio.run(both())
    assert [(d.text, d.usage, d.finish_reason) for d in got] == [(d.text, d.usage, d.finish_reason) for d in expected]
    assert {d.finish_reason for d in got} == {"stop", "length"}


def _alone_batched_reused(model: ModelEntry, extra_buffers: bool) -> tuple[str, str, str, int]:
    async def run() -> tuple[str, str, str, int]:
        alone_runtime = BatchedLlamaRuntime(n_threads=2, slots=4, extra_buffers=extra_buffers)
        alone = await done(alone_runtime, model, *TARGET)
        await alone_runtime.unload(model.id)

        runtime = BatchedLlamaRuntime(n_threads=2, slots=4, extra_buffers=extra_buffers)
        others = [asyncio.create_task(done(runtime, model, m, p)) for m, p in OTHERS[:2]]
        # The target joins while the others decode; the third joins after it.
        first = runtime.generate(model, *OTHERS[0])
        await anext(first)
        await first.aclose()
        target = asyncio.create_task(done(runtime, model, *TARGET))
        await asyncio.sleep(0.05)
        others.append(asyncio.create_task(done(runtime, model, *OTHERS[2])))
        batched = await target
        await asyncio.gather(*others)
        # The same prompt again: its prefix comes from the cache of the finished target.
        steps = runtime._models[model.id].steps
        before = steps.reused_tokens
        again = [asyncio.create_task(done(runtime, model, m, p)) for m, p in OTHERS]
        reused = await done(runtime, model, *TARGET)
        await asyncio.gather(*again)
        await runtime.unload(model.id)
        return alone.text, batched.text, reused.text, steps.reused_tokens - before

    return asyncio.run(run())


def test_smollm2_greedy_is_the_same_alone_batched_and_with_a_reused_prefix(smollm2: ModelEntry) -> None:
    # Extra buffer types as this CPU's `auto` sets them (on without AMX); the Gemma test runs them off.
    alone, batched, reused, reused_tokens = _alone_batched_reused(smollm2, extra_buffers_for_this_cpu())
    assert alone.strip()
    assert batched == alone
    assert reused == alone
    assert reused_tokens > 0  # SmolLM2 splits exactly, so short prompts reuse their prefix


def test_gemma_greedy_is_the_same_alone_and_batched(gemma: ModelEntry) -> None:
    alone, batched, reused, reused_tokens = _alone_batched_reused(gemma, False)
    assert alone.strip()
    assert batched == alone
    assert reused == alone
    # Gemma's results depend on how a prompt is split: a prefix is reused only by whole
    # 512-token chunks, and these prompts are shorter.
    assert reused_tokens == 0


def test_a_cancelled_generation_frees_its_slot_at_once(smollm2: ModelEntry) -> None:
    long = ([ChatMessage("user", "Write a long story about a dragon who bakes bread.")],
            GenerationParams(temperature=0, max_tokens=2000))

    async def run() -> GenerationDone:
        runtime = BatchedLlamaRuntime(n_threads=2, slots=1)
        stream = runtime.generate(smollm2, *long)
        await anext(stream)
        await stream.aclose()
        # One slot: this would wait for the 2000 tokens of the cancelled one if it kept its slot.
        result = await asyncio.wait_for(done(runtime, smollm2, *TARGET), timeout=120)
        await runtime.unload(smollm2.id)
        return result

    assert asyncio.run(run()).usage.completion_tokens > 0


def test_streams_chunks_and_a_prompt_too_long_for_its_window_fails(smollm2: ModelEntry) -> None:
    async def run() -> tuple[list, str]:
        runtime = BatchedLlamaRuntime(n_threads=2, n_ctx=64, slots=2)
        events = await generated(runtime, smollm2, *TARGET)
        with pytest.raises(GenerationError) as error:
            await generated(runtime, smollm2, [ChatMessage("user", "word " * 100)], GenerationParams(max_tokens=4))
        # The window ran out: finish_reason "length", within 64 tokens.
        cut = await done(runtime, smollm2, [ChatMessage("user", "Write a long story.")],
                         GenerationParams(temperature=0, max_tokens=500))
        await runtime.unload(smollm2.id)
        assert cut.finish_reason == "length" and cut.usage.prompt_tokens + cut.usage.completion_tokens == 64
        return events, str(error.value)

    events, message = asyncio.run(run())
    assert "".join(chunk.text for chunk in chunks_of(events)) == done_of(events).text
    assert "context window of 64 tokens" in message


def test_load_errors_and_settings(smollm2: ModelEntry, tmp_path: Path) -> None:
    missing = dataclasses.replace(smollm2, path=tmp_path / "missing.gguf")
    with pytest.raises(ModelLoadError, match="does not exist"):
        asyncio.run(BatchedLlamaRuntime(slots=2).load(missing))
    with pytest.raises(ValueError):
        BatchedLlamaRuntime(slots=17)
    one, four = BatchedLlamaRuntime(slots=1), BatchedLlamaRuntime(slots=4)
    assert four.capacity(smollm2) == 4 and four.unavailable_reason(smollm2) is None
    assert four.context_tokens(smollm2) == 2048
    # Every slot holds a KV cache of n_ctx tokens: 30 layers x 3 KV heads x (64 + 64) x 2 B a token.
    assert four.memory_estimate(smollm2) - one.memory_estimate(smollm2) == 3 * 2048 * 30 * 3 * 128 * 2


def test_no_more_sequences_decode_together_than_the_probe_found_exact(smollm2: ModelEntry, monkeypatch) -> None:
    from orc.node.models.runtimes import llama_steps

    rows_per_call: list[int] = []
    decode = llama_steps.StepLoop._decode

    def counting(self, rows):  # type: ignore[no-untyped-def]
        if all(wants for *_, wants in rows):  # a decode step: one row a generating sequence
            rows_per_call.append(len(rows))
        decode(self, rows)

    # As on a CPU whose kernels group rows: only two rows stay bit-identical.
    monkeypatch.setattr(llama_steps.StepLoop, "_probe_exact_rows", lambda self: 2)
    monkeypatch.setattr(llama_steps.StepLoop, "_decode", counting)

    async def run() -> tuple[int, list[GenerationDone]]:
        runtime = BatchedLlamaRuntime(n_threads=2, slots=4)
        await runtime.load(smollm2)
        capacity = runtime.capacity(smollm2)
        got = list(await asyncio.gather(*(done(runtime, smollm2, m, p) for m, p in [TARGET, *OTHERS])))
        await runtime.unload(smollm2.id)
        return capacity, got

    capacity, got = asyncio.run(run())
    assert capacity == 2
    assert all(d.finish_reason in ("stop", "length") for d in got)
    assert max(rows_per_call) == 2


@pytest.mark.parametrize("model_name", ["smollm2", "gemma"])
def test_fewer_threads_midway_give_the_same_text(model_name: str, request: pytest.FixtureRequest) -> None:
    """The node's share of its cores may change a runner's threads between two steps of a
    generation: where the probe found this model's logits the same with fewer threads, the text
    is the same; where it did not, the threads stay as they were."""
    model: ModelEntry = request.getfixturevalue(model_name)
    messages, params = TARGET

    async def main() -> tuple[str, str, int, bool]:
        runtime = BatchedLlamaRuntime(n_threads=2, slots=2)
        try:
            reference = (await done(runtime, model, messages, params)).text
            changed = ""
            async for event in runtime.generate(model, messages, params):
                if isinstance(event, TokenChunk) and runtime.threads() == 2:
                    runtime.set_threads(1)
                if isinstance(event, GenerationDone):
                    changed = event.text
            threads_after = runtime.threads()
            invariant = runtime._models[model.id].steps.thread_invariant  # noqa: SLF001 - what the probe found
            runtime.set_threads(99)  # never more than its own n_threads
            await done(runtime, model, messages, params)
            assert runtime.threads() == 2
            return reference, changed, threads_after, invariant
        finally:
            await runtime.unload(model.id)

    reference, changed, threads_after, invariant = asyncio.run(main())
    assert changed == reference
    assert threads_after == (1 if invariant else 2)
