"""The llama.cpp runtime, with the real embedded SmolLM2 model (and Gemma when installed)."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from generation_events import chunks_of, done_of, generated

from orc.node.models.catalog import DEFAULT_MODEL_ID, ModelEntry, ModelId
from orc.node.models.gguf import read_gguf_metadata
from orc.node.models.runtimes.base import (
    ChatMessage,
    GenerationDone,
    GenerationError,
    GenerationEvent,
    GenerationParams,
    ModelLoadError,
    TokenChunk,
)
from orc.node.models.runtimes.llama_cpp import (
    LlamaCppRuntime,
    StopScanner,
    render_transcript,
)
from orc.node.models.runtimes.llama_load import extra_buffers_for_this_cpu, load_llama

llama_cpp = pytest.importorskip("llama_cpp")

QUESTION = [ChatMessage("user", "Name three colors.")]
LONG_ANSWER = [ChatMessage("user", "Write a long story about a dragon who learns to bake bread.")]
GREEDY = GenerationParams(temperature=0, max_tokens=24)


class Recorder:
    """Watches the real llama_cpp.Llama: instances made, and each completion stream's life."""

    def __init__(self) -> None:
        self.instances: list[Any] = []
        self.streams_by_instance: list[Any] = []
        self.pulled: list[int] = []
        self.finished: list[threading.Event] = []
        self.active = 0
        self.max_active = 0
        self._lock = threading.Lock()

    def watch(self, owner: Any, stream: Iterator[Any]) -> Iterator[Any]:
        index = len(self.pulled)
        self.pulled.append(0)
        self.finished.append(threading.Event())
        self.streams_by_instance.append(owner)
        with self._lock:
            self.active += 1
            self.max_active = max(self.max_active, self.active)
        try:
            for chunk in stream:
                self.pulled[index] += 1
                yield chunk
        finally:
            with self._lock:
                self.active -= 1
            self.finished[index].set()


@pytest.fixture
def recorder(monkeypatch: pytest.MonkeyPatch) -> Recorder:
    record = Recorder()

    class RecordingLlama(llama_cpp.Llama):  # type: ignore[misc, name-defined]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            record.instances.append(self)

        def create_completion(self, *args: Any, **kwargs: Any) -> Any:
            return record.watch(self, super().create_completion(*args, **kwargs))

    monkeypatch.setattr(llama_cpp, "Llama", RecordingLlama)
    return record


async def collect(runtime: LlamaCppRuntime, model: ModelEntry, messages: Sequence[ChatMessage],
                  params: GenerationParams = GREEDY) -> list[GenerationEvent]:
    return await generated(runtime, model, messages, params)


def reference_llama(model: ModelEntry) -> Any:
    # Loaded as the runtime loads (extra buffer types off on CPUs with AMX), so the reference
    # runs wherever the runtime does.
    return load_llama(model.path, extra_buffers=extra_buffers_for_this_cpu(), n_ctx=2048)


# -- streaming, usage and the template ---------------------------------------------------------


def test_streams_chunks_then_exactly_one_done(smollm2: ModelEntry) -> None:
    events = asyncio.run(collect(LlamaCppRuntime(), smollm2, QUESTION))
    chunks = chunks_of(events)
    assert len(chunks) > 1
    assert [type(e) for e in events] == [TokenChunk] * len(chunks) + [GenerationDone]
    done = done_of(events)
    assert done.text == "".join(chunk.text for chunk in chunks)
    assert done.text.strip()
    assert done.finish_reason in ("stop", "length")
    assert done.usage.completion_tokens >= len(chunks)


def test_usage_and_text_match_llama_cpp_python_itself(smollm2: ModelEntry) -> None:
    # llama-cpp-python's non-streaming call counts tokens exactly; the streamed one must agree,
    # both when the model ends its turn and when max_tokens cuts it.
    reference = reference_llama(smollm2)
    for messages, max_tokens in ((QUESTION, 64), (LONG_ANSWER, 12)):
        expected = reference.create_chat_completion(
            messages=[{"role": m.role, "content": m.content} for m in messages],
            temperature=0,
            max_tokens=max_tokens,
            repeat_penalty=1.1,
        )
        done = done_of(asyncio.run(collect(LlamaCppRuntime(), smollm2, messages, GenerationParams(temperature=0, max_tokens=max_tokens))))
        assert done.text == expected["choices"][0]["message"]["content"]
        assert done.finish_reason == expected["choices"][0]["finish_reason"]
        assert done.usage.prompt_tokens == expected["usage"]["prompt_tokens"]
        assert done.usage.completion_tokens == expected["usage"]["completion_tokens"]
    reference.close()


def test_the_gguf_chat_template_renders_the_prompt(smollm2: ModelEntry) -> None:
    from llama_cpp.llama_chat_format import Jinja2ChatFormatter

    template = read_gguf_metadata(smollm2.path)["tokenizer.chat_template"]
    assert isinstance(template, str) and "<|im_start|>" in template
    vocab = llama_cpp.Llama(model_path=str(smollm2.path), vocab_only=True, verbose=False)
    formatter = Jinja2ChatFormatter(template=template, eos_token="<|im_end|>", bos_token="<|im_start|>")
    runtime = LlamaCppRuntime()
    for messages in (QUESTION, [ChatMessage("system", "Answer only in French."), *QUESTION]):
        rendered = formatter(messages=[{"role": m.role, "content": m.content} for m in messages]).prompt
        expected = len(vocab.tokenize(rendered.encode(), add_bos=False, special=True))
        done = done_of(asyncio.run(collect(runtime, smollm2, messages)))
        assert done.usage.prompt_tokens == expected


def test_a_system_prompt_changes_the_answer(smollm2: ModelEntry) -> None:
    runtime = LlamaCppRuntime()
    plain = done_of(asyncio.run(collect(runtime, smollm2, QUESTION))).text
    french = done_of(asyncio.run(collect(runtime, smollm2, [ChatMessage("system", "Answer only in French."), *QUESTION]))).text
    assert plain != french


def test_max_tokens_is_respected(smollm2: ModelEntry) -> None:
    events = asyncio.run(collect(LlamaCppRuntime(), smollm2, LONG_ANSWER, GenerationParams(temperature=0, max_tokens=8)))
    done = done_of(events)
    assert done.finish_reason == "length"
    assert done.usage.completion_tokens == 8


def test_stop_strings_cut_the_text(smollm2: ModelEntry) -> None:
    runtime = LlamaCppRuntime()
    full = done_of(asyncio.run(collect(runtime, smollm2, QUESTION, GenerationParams(temperature=0, max_tokens=32)))).text
    assert "Blue" in full  # the greedy answer this test is built on: "1. Red\n2. Blue\n3. Green"
    events = asyncio.run(collect(runtime, smollm2, QUESTION, GenerationParams(temperature=0, max_tokens=32, stop=("Blue",))))
    done = done_of(events)
    assert done.finish_reason == "stop"
    assert done.text == full[: full.index("Blue")]
    assert "".join(chunk.text for chunk in chunks_of(events)) == done.text


def test_seed_and_temperature_zero_are_deterministic(smollm2: ModelEntry) -> None:
    greedy = GenerationParams(temperature=0, max_tokens=24, seed=7)
    sampled = GenerationParams(temperature=0.9, max_tokens=24, seed=1234)
    first, second = LlamaCppRuntime(), LlamaCppRuntime()
    for params in (greedy, sampled):
        a = done_of(asyncio.run(collect(first, smollm2, LONG_ANSWER, params)))
        b = done_of(asyncio.run(collect(first, smollm2, LONG_ANSWER, params)))
        c = done_of(asyncio.run(collect(second, smollm2, LONG_ANSWER, params)))
        assert a == b == c


def test_without_a_seed_sampling_varies(smollm2: ModelEntry) -> None:
    params = GenerationParams(temperature=0.9, max_tokens=24)
    # Fresh runtimes each time: llama-cpp-python's own default would repeat the same text.
    texts = {done_of(asyncio.run(collect(LlamaCppRuntime(), smollm2, LONG_ANSWER, params))).text for _ in range(3)}
    assert len(texts) > 1


# -- loading -----------------------------------------------------------------------------------


def test_a_model_is_loaded_once_and_reused(smollm2: ModelEntry, recorder: Recorder) -> None:
    runtime = LlamaCppRuntime()

    async def scenario() -> None:
        await asyncio.gather(runtime.load(smollm2), runtime.load(smollm2), runtime.load(smollm2))
        await collect(runtime, smollm2, QUESTION)
        await collect(runtime, smollm2, QUESTION)

    asyncio.run(scenario())
    assert len(recorder.instances) == 1
    assert recorder.streams_by_instance == [recorder.instances[0]] * 2
    assert runtime.loaded_models() == (DEFAULT_MODEL_ID,)


def test_generate_loads_on_demand_and_unload_frees(smollm2: ModelEntry, recorder: Recorder) -> None:
    runtime = LlamaCppRuntime()

    async def scenario() -> None:
        await collect(runtime, smollm2, QUESTION)
        await runtime.unload(smollm2.id)
        assert runtime.loaded_models() == ()
        await runtime.unload(smollm2.id)  # unknown now: ignored
        await collect(runtime, smollm2, QUESTION)

    asyncio.run(scenario())
    assert len(recorder.instances) == 2


def test_a_corrupt_gguf_is_a_model_load_error(smollm2: ModelEntry, tmp_path: Path) -> None:
    truncated = tmp_path / "truncated.gguf"
    truncated.write_bytes(smollm2.path.read_bytes()[: 2 << 20])
    junk = tmp_path / "junk.gguf"
    junk.write_bytes(os.urandom(4096))
    missing = tmp_path / "missing.gguf"
    runtime = LlamaCppRuntime()
    for path in (truncated, junk, missing):
        broken = dataclasses.replace(smollm2, id=ModelId(f"broken-{path.stem}"), path=path)
        with pytest.raises(ModelLoadError) as caught:
            asyncio.run(runtime.load(broken))
        assert str(path) in str(caught.value)
        assert broken.id in str(caught.value)
    assert runtime.loaded_models() == ()


def test_loads_leave_stdout_and_stderr_where_they_were(smollm2: ModelEntry) -> None:
    # llama-cpp-python silences a load by swapping fds 1 and 2; overlapping loads must not
    # leave them swapped.
    before = [os.readlink(f"/proc/self/fd/{fd}") for fd in (1, 2)] if Path("/proc/self/fd").exists() else None
    runtime = LlamaCppRuntime()
    models = [dataclasses.replace(smollm2, id=ModelId(f"copy-{i}")) for i in range(3)]

    async def scenario() -> None:
        await asyncio.gather(*(runtime.load(model) for model in models))

    asyncio.run(scenario())
    assert runtime.loaded_models() == tuple(sorted(model.id for model in models))
    if before is not None:
        assert [os.readlink(f"/proc/self/fd/{fd}") for fd in (1, 2)] == before


# -- concurrency and cancellation ----------------------------------------------------------------


def test_concurrent_generations_on_one_model_take_turns(smollm2: ModelEntry, recorder: Recorder) -> None:
    runtime = LlamaCppRuntime(max_concurrent_per_model=1)

    async def scenario() -> list[list[GenerationEvent]]:
        return list(await asyncio.gather(*(collect(runtime, smollm2, QUESTION) for _ in range(3))))

    results = asyncio.run(scenario())
    texts = {done_of(events).text for events in results}
    assert len(texts) == 1 and texts != {""}  # greedy: all three identical and complete
    assert len(recorder.instances) == 1
    assert recorder.max_active == 1


def test_more_slots_per_model_run_on_separate_instances(smollm2: ModelEntry, recorder: Recorder) -> None:
    runtime = LlamaCppRuntime(max_concurrent_per_model=2, n_threads=1)

    async def scenario() -> list[list[GenerationEvent]]:
        return list(await asyncio.gather(*(collect(runtime, smollm2, QUESTION) for _ in range(3))))

    results = asyncio.run(scenario())
    assert len({done_of(events).text for events in results}) == 1
    assert len(recorder.instances) == 2
    assert recorder.max_active <= 2
    # Each stream ran on one instance at a time: no instance served two at once.
    assert set(map(id, recorder.streams_by_instance)) == set(map(id, recorder.instances))


def test_closing_the_stream_stops_the_generation(smollm2: ModelEntry, recorder: Recorder) -> None:
    runtime = LlamaCppRuntime()
    long = GenerationParams(temperature=0, max_tokens=1500)

    async def scenario() -> list[GenerationEvent]:
        stream = runtime.generate(smollm2, LONG_ANSWER, long)
        for _ in range(3):
            assert isinstance(await stream.__anext__(), TokenChunk)
        started = time.monotonic()
        await stream.aclose()  # type: ignore[attr-defined]
        assert time.monotonic() - started < 1.0
        # The slot comes back: a new generation runs, on the same instance.
        return await collect(runtime, smollm2, QUESTION)

    after = asyncio.run(scenario())
    assert done_of(after).text
    assert recorder.finished[0].is_set()
    assert recorder.pulled[0] < 100, "the cancelled generation kept running"
    assert len(recorder.instances) == 1


def test_cancelling_the_consumer_task_stops_the_generation(smollm2: ModelEntry, recorder: Recorder) -> None:
    runtime = LlamaCppRuntime()
    long = GenerationParams(temperature=0, max_tokens=1500)

    async def scenario() -> list[GenerationEvent]:
        first_token = asyncio.Event()

        async def consume() -> None:
            async for _event in runtime.generate(smollm2, LONG_ANSWER, long):
                first_token.set()

        task = asyncio.create_task(consume())
        await first_token.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return await collect(runtime, smollm2, QUESTION)

    after = asyncio.run(scenario())
    assert done_of(after).text
    assert recorder.pulled[0] < 100, "the cancelled generation kept running"


def test_the_event_loop_stays_responsive_while_generating(smollm2: ModelEntry) -> None:
    runtime = LlamaCppRuntime()

    async def scenario() -> tuple[float, float, int]:
        ticks: list[float] = []

        async def ticker() -> None:
            while True:
                ticks.append(time.monotonic())
                await asyncio.sleep(0.01)

        await runtime.load(smollm2)
        ticking = asyncio.create_task(ticker())
        await asyncio.sleep(0.05)
        started = time.monotonic()
        await collect(runtime, smollm2, LONG_ANSWER, GenerationParams(temperature=0, max_tokens=64))
        duration = time.monotonic() - started
        ticking.cancel()
        during = [t for t in ticks if t >= started]
        gaps = [b - a for a, b in zip(during, during[1:])]
        return duration, max(gaps, default=duration), len(during)

    duration, worst_gap, ticks = asyncio.run(scenario())
    # 64 tokens take a while; generated on the loop they would be one long gap.
    assert duration > 0.1
    assert worst_gap < duration / 3
    assert ticks >= 5


# -- bad requests --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("messages", "params"),
    [
        ([], GREEDY),
        ([ChatMessage("tool", "x")], GREEDY),
        (QUESTION, GenerationParams(max_tokens=0)),
        (QUESTION, GenerationParams(temperature=-1)),
        (QUESTION, GenerationParams(stop=tuple(str(i) for i in range(100)))),
    ],
)
def test_bad_requests_are_generation_errors(
    smollm2: ModelEntry, messages: list[ChatMessage], params: GenerationParams
) -> None:
    with pytest.raises(GenerationError):
        asyncio.run(collect(LlamaCppRuntime(), smollm2, messages, params))


def test_a_prompt_longer_than_the_context_is_a_generation_error(smollm2: ModelEntry) -> None:
    runtime = LlamaCppRuntime(n_ctx=128)
    with pytest.raises(GenerationError, match="context"):
        asyncio.run(collect(runtime, smollm2, [ChatMessage("user", "word " * 400)]))
    # The model is still usable afterwards.
    assert done_of(asyncio.run(collect(runtime, smollm2, QUESTION, GenerationParams(temperature=0, max_tokens=4)))).text


# -- base models -----------------------------------------------------------------------------------


def test_a_base_model_gets_a_transcript_and_stops_at_the_next_turn(gemma: ModelEntry) -> None:
    assert gemma.chat is False
    assert "tokenizer.chat_template" not in read_gguf_metadata(gemma.path)
    messages = [ChatMessage("system", "You are terse."), ChatMessage("user", "Say hello.")]
    vocab = llama_cpp.Llama(model_path=str(gemma.path), vocab_only=True, verbose=False)
    expected_prompt = len(vocab.tokenize(render_transcript(messages).encode(), add_bos=True, special=True))
    done = done_of(asyncio.run(collect(LlamaCppRuntime(), gemma, messages, GenerationParams(temperature=0, max_tokens=48))))
    assert done.usage.prompt_tokens == expected_prompt
    assert "\nUser:" not in done.text and "\nSystem:" not in done.text


# -- pure parts ------------------------------------------------------------------------------------


def test_stop_scanner_holds_back_a_possible_stop_across_chunks() -> None:
    scanner = StopScanner(["STOP", "\nUser:"])
    assert scanner.feed("Hello S") == ("Hello ", False)
    assert scanner.feed("T") == ("", False)
    assert scanner.feed("ill going") == ("STill going", False)
    assert scanner.feed(" ST") == (" ", False)
    assert scanner.feed("OP and more") == ("", True)


def test_stop_scanner_picks_the_earliest_stop_and_flushes_the_rest() -> None:
    scanner = StopScanner(["world", "lo"])
    assert scanner.feed("hello world") == ("hel", True)
    other = StopScanner(["\nUser:"])
    assert other.feed("answer\nUs") == ("answer", False)
    assert other.flush() == "\nUs"
    assert StopScanner([]).feed("anything") == ("anything", False)


def test_render_transcript() -> None:
    messages = [ChatMessage("system", "Be brief. "), ChatMessage("user", "Hi"), ChatMessage("assistant", "Hello"), ChatMessage("user", "Bye")]
    assert render_transcript(messages) == "System: Be brief.\n\nUser: Hi\n\nAssistant: Hello\n\nUser: Bye\n\nAssistant:"


def test_memory_estimate(smollm2: ModelEntry, tmp_path: Path) -> None:
    runtime = LlamaCppRuntime(n_ctx=2048)
    # 30 layers x 3 KV heads x (64 + 64) x 2 bytes x 2048 positions of f16 cache.
    kv = 30 * 3 * 128 * 2 * 2048
    estimate = runtime.memory_estimate(smollm2)
    assert estimate > smollm2.size_bytes + kv
    assert estimate < smollm2.size_bytes + kv + (64 << 20)
    assert LlamaCppRuntime(n_ctx=4096).memory_estimate(smollm2) == estimate + kv
    absent = dataclasses.replace(smollm2, path=tmp_path / "not-yet.gguf")
    assert runtime.memory_estimate(absent) > smollm2.size_bytes


# -- one runtime, several event loops ----------------------------------------------------------


def test_a_runtime_serves_one_event_loop_after_another(smollm2: ModelEntry) -> None:
    """`Orc.run_sync` twice reuses the runtime from a new loop; an abandoned stream must not leak its slot."""
    runtime = LlamaCppRuntime()
    params = GenerationParams(temperature=0, max_tokens=64)

    async def abandon() -> None:
        stream = runtime.generate(smollm2, LONG_ANSWER, params)
        async for _ in stream:
            break  # the loop closes right after, while the worker may still hold the instance

    async def finish() -> GenerationDone:
        done = None
        async for event in runtime.generate(smollm2, QUESTION, GenerationParams(temperature=0, max_tokens=8)):
            done = event
        assert isinstance(done, GenerationDone)
        return done

    for _ in range(4):
        asyncio.run(abandon())
        done = asyncio.run(asyncio.wait_for(finish(), timeout=120))
        assert done.usage.completion_tokens > 0
