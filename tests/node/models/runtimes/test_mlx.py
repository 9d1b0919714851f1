"""The MLX runtime, with the embedded SmolLM2 converted to MLX (MLX's CPU backend on Linux).

MLX on a CPU reads a prompt at about 10 tokens/s and writes about 8, so these tests keep
generations short and few, and the tests about threading and cancellation use the plain
transcript prompt (`quick`), a dozen tokens instead of the chat template's forty.
"""

from __future__ import annotations

import asyncio
import dataclasses
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from generation_events import chunks_of, done_of, generated
from mlx_fixtures import require_mlx

from orc.node.models.catalog import DEFAULT_MODEL_ID, ModelEntry, ModelId
from orc.node.models.runtimes.base import (
    ChatMessage,
    GenerationDone,
    GenerationError,
    GenerationEvent,
    GenerationParams,
    ModelLoadError,
    TokenChunk,
)
from orc.node.models.runtimes.llama_cpp import LlamaCppRuntime, render_transcript
from orc.node.models.runtimes.mlx import MlxRuntime

QUESTION = [ChatMessage("user", "Name three colors.")]
LONG_ANSWER = [ChatMessage("user", "Write a long story about a dragon who learns to bake bread.")]
STORY = [ChatMessage("user", "Tell me a story.")]  # in the transcript format: 60+ tokens, no turn end
GREEDY = GenerationParams(temperature=0, max_tokens=16)
LONG = GenerationParams(temperature=0, max_tokens=1500)


@pytest.fixture(scope="module")
def runtime() -> MlxRuntime:
    """One runtime for the tests that need no fresh one: it keeps SmolLM2 loaded between them."""
    require_mlx()
    return MlxRuntime()


@pytest.fixture(scope="module")
def quick(smollm2_mlx: ModelEntry) -> ModelEntry:
    """The same loaded model, prompted with the short transcript instead of the chat template."""
    return dataclasses.replace(smollm2_mlx, chat=False)


class Recorder:
    """Watches mlx-lm: models loaded, and each generation's token stream."""

    def __init__(self) -> None:
        self.loads: list[str] = []
        self.pulled: list[int] = []
        self.finished: list[threading.Event] = []
        self.active = 0
        self.max_active = 0
        self.threads: set[int] = set()  # the threads that loaded or stepped
        self._lock = threading.Lock()

    def watch(self, steps: Iterator[Any]) -> Iterator[Any]:
        index = len(self.pulled)
        self.pulled.append(0)
        self.finished.append(threading.Event())
        with self._lock:
            self.active += 1
            self.max_active = max(self.max_active, self.active)
        try:
            for step in steps:
                self.threads.add(threading.get_ident())
                self.pulled[index] += 1
                yield step
        finally:
            with self._lock:
                self.active -= 1
            self.finished[index].set()


@pytest.fixture
def recorder(monkeypatch: pytest.MonkeyPatch) -> Recorder:
    require_mlx()
    import importlib

    import mlx_lm

    steps_module = importlib.import_module("mlx_lm.generate")  # `mlx_lm.generate` is also a function
    record = Recorder()
    real_load, real_generate_step = mlx_lm.load, steps_module.generate_step

    def load(path: str, *args: Any, **kwargs: Any) -> Any:
        record.loads.append(path)
        record.threads.add(threading.get_ident())
        return real_load(path, *args, **kwargs)

    def generate_step(*args: Any, **kwargs: Any) -> Iterator[Any]:
        return record.watch(real_generate_step(*args, **kwargs))

    monkeypatch.setattr(mlx_lm, "load", load)
    monkeypatch.setattr(steps_module, "generate_step", generate_step)
    return record


async def collect(runtime: Any, model: ModelEntry, messages: Sequence[ChatMessage],
                  params: GenerationParams = GREEDY) -> list[GenerationEvent]:
    return await generated(runtime, model, messages, params)


# -- the same answers as the llama.cpp variant -----------------------------------------------------


def test_greedy_answers_match_the_llama_cpp_variant(runtime: MlxRuntime, smollm2_mlx: ModelEntry,
                                                     smollm2_gguf: ModelEntry) -> None:
    # Same template, same repetition penalty, same stop tokens: the same text and counts.
    params = GenerationParams(temperature=0, max_tokens=24)
    ours = done_of(asyncio.run(collect(runtime, smollm2_mlx, QUESTION, params)))
    theirs = done_of(asyncio.run(collect(LlamaCppRuntime(n_threads=2), smollm2_gguf, QUESTION, params)))
    assert ours == theirs
    assert ours.text == "1. Red\n2. Blue\n3. Green" and ours.finish_reason == "stop"


def test_streams_chunks_then_exactly_one_done(runtime: MlxRuntime, smollm2_mlx: ModelEntry) -> None:
    events = asyncio.run(collect(runtime, smollm2_mlx, LONG_ANSWER))
    chunks = chunks_of(events)
    assert len(chunks) > 1
    assert [type(e) for e in events] == [TokenChunk] * len(chunks) + [GenerationDone]
    done = done_of(events)
    assert done.text == "".join(chunk.text for chunk in chunks)
    # max_tokens cuts the story, and the count says so.
    assert (done.finish_reason, done.usage.completion_tokens) == ("length", 16)


def test_prompt_tokens_are_the_templates_tokens(runtime: MlxRuntime, smollm2_mlx: ModelEntry,
                                                smollm2_gguf: ModelEntry) -> None:
    import llama_cpp
    from llama_cpp.llama_chat_format import Jinja2ChatFormatter

    vocab = llama_cpp.Llama(model_path=str(smollm2_gguf.path), vocab_only=True, verbose=False)
    template = Jinja2ChatFormatter(template=vocab.metadata["tokenizer.chat_template"], eos_token="<|im_end|>",
                                   bos_token="<|im_start|>")
    messages = [ChatMessage("system", "Answer only in French."), *QUESTION]
    rendered = template(messages=[{"role": m.role, "content": m.content} for m in messages]).prompt
    done = done_of(asyncio.run(collect(runtime, smollm2_mlx, messages, GenerationParams(temperature=0, max_tokens=2))))
    assert done.usage.prompt_tokens == len(vocab.tokenize(rendered.encode(), add_bos=False, special=True))


def test_stop_strings_cut_the_text(runtime: MlxRuntime, smollm2_mlx: ModelEntry) -> None:
    events = asyncio.run(collect(runtime, smollm2_mlx, QUESTION, GenerationParams(temperature=0, max_tokens=24, stop=("Blue",))))
    done = done_of(events)
    assert done.finish_reason == "stop"
    assert done.text == "1. Red\n2. "
    assert "".join(chunk.text for chunk in chunks_of(events)) == done.text


def test_a_model_without_a_chat_template_gets_a_transcript(runtime: MlxRuntime, smollm2_mlx: ModelEntry) -> None:
    import mlx_lm

    base = dataclasses.replace(smollm2_mlx, id=ModelId("smollm2-as-base"), chat=False)
    messages = [ChatMessage("system", "You are terse."), ChatMessage("user", "Say hello.")]
    done = done_of(asyncio.run(collect(runtime, base, messages, GenerationParams(temperature=0, max_tokens=12))))
    _, tokenizer = mlx_lm.load(str(smollm2_mlx.path))
    assert done.usage.prompt_tokens == len(tokenizer.encode(render_transcript(messages)))
    assert "\nUser:" not in done.text and "\nSystem:" not in done.text


# -- sampling ------------------------------------------------------------------------------------


def test_seeds_and_temperature(runtime: MlxRuntime, quick: ModelEntry) -> None:
    sampled = GenerationParams(temperature=0.9, max_tokens=8, seed=1234)
    first = done_of(asyncio.run(collect(runtime, quick, STORY, sampled)))
    # The same seed gives the same text, from this runtime or a fresh one.
    assert done_of(asyncio.run(collect(MlxRuntime(), quick, STORY, sampled))) == first
    # Other seeds (or none) give other texts at this temperature...
    others = {done_of(asyncio.run(collect(runtime, quick, STORY, params))).text
              for params in (dataclasses.replace(sampled, seed=99), dataclasses.replace(sampled, seed=None))}
    assert others - {first.text}
    # ...while at temperature 0 the seed does not matter.
    greedy = {done_of(asyncio.run(collect(runtime, quick, STORY,
                                          GenerationParams(temperature=0, max_tokens=4, seed=seed)))).text
              for seed in (1, 2)}
    assert len(greedy) == 1


def test_the_sampler_keeps_only_likely_tokens() -> None:
    """top-k, top-p and min-p as llama.cpp applies them, before temperature."""
    require_mlx()
    import math

    import mlx.core as mx
    from orc.node.models.runtimes.mlx_sampling import sampler

    probs = [0.5, 0.3, 0.15, 0.04, 0.01] + [0.0] * 59
    logprobs = mx.array([[math.log(p) if p else -1e9 for p in probs]])
    drawn = set()
    for seed in range(300):
        sample = sampler(GenerationParams(temperature=5.0, top_p=0.9, seed=seed), seed)
        drawn.add(int(sample(logprobs).item()))
    # top-p 0.9 keeps 0.5, 0.3 and 0.15 (0.95 reached); 0.04 and below go even at temperature 5.
    assert drawn == {0, 1, 2}
    assert {int(sampler(GenerationParams(temperature=0), 0)(logprobs).item())} == {0}


# -- loading -------------------------------------------------------------------------------------


def test_a_model_is_loaded_once_and_reused(quick: ModelEntry, recorder: Recorder) -> None:
    runtime = MlxRuntime()

    async def scenario() -> None:
        await asyncio.gather(runtime.load(quick), runtime.load(quick), runtime.load(quick))
        await collect(runtime, quick, STORY, GenerationParams(temperature=0, max_tokens=2))
        await collect(runtime, quick, STORY, GenerationParams(temperature=0, max_tokens=2))

    asyncio.run(scenario())
    assert recorder.loads == [str(quick.path)]
    assert runtime.loaded_models() == (DEFAULT_MODEL_ID,)


def test_unload_frees_and_generate_loads_again(quick: ModelEntry, recorder: Recorder) -> None:
    runtime = MlxRuntime()

    async def scenario() -> None:
        await collect(runtime, quick, STORY, GenerationParams(temperature=0, max_tokens=2))
        await runtime.unload(quick.id)
        assert runtime.loaded_models() == ()
        await runtime.unload(quick.id)  # unknown now: ignored
        await collect(runtime, quick, STORY, GenerationParams(temperature=0, max_tokens=2))

    asyncio.run(scenario())
    assert len(recorder.loads) == 2


def test_a_broken_folder_is_a_model_load_error(smollm2_mlx: ModelEntry, mlx_folder_copy: Path, tmp_path: Path) -> None:
    weights = mlx_folder_copy / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: 1 << 20])
    no_config = tmp_path / "no-config"
    no_config.mkdir()
    runtime = MlxRuntime()
    for path in (mlx_folder_copy, no_config, tmp_path / "missing"):
        broken = dataclasses.replace(smollm2_mlx, id=ModelId(f"broken-{path.name}"), path=path)
        with pytest.raises(ModelLoadError) as caught:
            asyncio.run(runtime.load(broken))
        assert str(path) in str(caught.value) and broken.id in str(caught.value)
        with pytest.raises(ModelLoadError):
            asyncio.run(collect(runtime, broken, QUESTION))
    assert runtime.loaded_models() == ()


def test_without_mlx_lm_the_error_says_what_to_install(smollm2_mlx: ModelEntry, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "mlx_lm", None)  # `import mlx_lm` now fails as if not installed
    with pytest.raises(ModelLoadError, match=r"pip install 'orc-mesh\[mlx\]'"):
        asyncio.run(MlxRuntime().load(smollm2_mlx))


def test_memory_estimate_covers_what_mlx_used(quick: ModelEntry, tmp_path: Path) -> None:
    import gc

    import mlx.core as mx

    runtime = MlxRuntime(n_ctx=2048)
    gc.collect()
    before = mx.get_active_memory()  # other tests' runtimes may still hold models
    mx.reset_peak_memory()
    asyncio.run(collect(runtime, quick, STORY, GenerationParams(temperature=0, max_tokens=4)))
    estimate = runtime.memory_estimate(quick)
    # On a CPU the float16 scales become float32; 30 layers x 3 KV heads x 64 x 2 x 4 B x 2048.
    kv = 30 * 3 * 64 * 2 * 4 * 2048
    assert mx.get_peak_memory() - before <= estimate
    assert quick.size_bytes + kv < estimate < 1.5 * quick.size_bytes + kv + (64 << 20)
    assert MlxRuntime(n_ctx=4096).memory_estimate(quick) == estimate + kv
    absent = dataclasses.replace(quick, path=tmp_path / "absent")
    assert runtime.memory_estimate(absent) > quick.size_bytes


# -- concurrency, cancellation, timeouts -----------------------------------------------------------


def test_concurrent_generations_take_turns(runtime: MlxRuntime, quick: ModelEntry, recorder: Recorder) -> None:
    params = GenerationParams(temperature=0, max_tokens=6)

    async def scenario() -> list[list[GenerationEvent]]:
        return list(await asyncio.gather(*(collect(runtime, quick, STORY, params) for _ in range(3))))

    texts = {done_of(events).text for events in asyncio.run(scenario())}
    assert len(texts) == 1 and texts != {""}
    assert recorder.max_active == 1


def test_closing_the_stream_stops_the_generation(runtime: MlxRuntime, quick: ModelEntry, recorder: Recorder) -> None:
    async def scenario() -> list[GenerationEvent]:
        stream = runtime.generate(quick, STORY, LONG)
        assert isinstance(await stream.__anext__(), TokenChunk)
        started = time.monotonic()
        await stream.aclose()  # type: ignore[attr-defined]
        assert time.monotonic() - started < 1.0
        # The worker is free again: a new generation runs to its end.
        return await collect(runtime, quick, STORY, GenerationParams(temperature=0, max_tokens=4))

    after = asyncio.run(scenario())
    assert done_of(after).text
    assert recorder.finished[0].is_set()
    assert recorder.pulled[0] < 30, "the closed generation kept running"


def test_cancelling_the_consumer_or_a_timeout_stops_the_generation(runtime: MlxRuntime, quick: ModelEntry,
                                                                   recorder: Recorder) -> None:
    async def scenario() -> list[GenerationEvent]:
        first_token = asyncio.Event()

        async def consume() -> None:
            async for _event in runtime.generate(quick, STORY, LONG):
                first_token.set()

        task = asyncio.create_task(consume())
        await first_token.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        # The engine's agent timeout is asyncio.wait_for around the stream.
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(collect(runtime, quick, STORY, LONG), timeout=5)
        return await collect(runtime, quick, STORY, GenerationParams(temperature=0, max_tokens=4))

    after = asyncio.run(scenario())
    assert done_of(after).text
    assert len(recorder.pulled) == 3
    assert recorder.pulled[0] < 30 and recorder.pulled[1] < 80, "a cancelled generation kept running"
    assert all(event.is_set() for event in recorder.finished)


def test_loading_and_generating_run_off_the_event_loop(quick: ModelEntry, recorder: Recorder) -> None:
    """The blocking parts (mlx-lm's load, each decode step) run on another thread than the loop's.

    Checked by thread identity, not by how often a ticker ran meanwhile: the machines are shared.
    """
    runtime = MlxRuntime()

    async def scenario() -> tuple[int, list[GenerationEvent]]:
        await runtime.load(quick)
        events = await collect(runtime, quick, STORY, GenerationParams(temperature=0, max_tokens=8))
        return threading.get_ident(), events

    loop_thread, events = asyncio.run(scenario())
    assert recorder.loads and recorder.pulled and recorder.pulled[0] > 0
    assert chunks_of(events)
    assert recorder.threads and loop_thread not in recorder.threads


def test_a_runtime_serves_one_event_loop_after_another(runtime: MlxRuntime, quick: ModelEntry) -> None:
    """`Orc.run_sync` twice reuses the runtime from a new loop; an abandoned stream must not block it."""

    async def abandon() -> None:
        async for _ in runtime.generate(quick, STORY, LONG):
            break  # the loop closes right after, while the worker may still be generating

    async def finish() -> GenerationDone:
        events = await collect(runtime, quick, STORY, GenerationParams(temperature=0, max_tokens=3))
        return done_of(events)

    for _ in range(2):
        asyncio.run(abandon())
        assert asyncio.run(asyncio.wait_for(finish(), timeout=60)).usage.completion_tokens == 3


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
def test_bad_requests_are_generation_errors(smollm2_mlx: ModelEntry, messages: list[ChatMessage],
                                            params: GenerationParams) -> None:
    with pytest.raises(GenerationError):
        asyncio.run(collect(MlxRuntime(), smollm2_mlx, messages, params))


def test_a_prompt_longer_than_the_context_is_a_generation_error(smollm2_mlx: ModelEntry) -> None:
    runtime = MlxRuntime(n_ctx=64)
    with pytest.raises(GenerationError, match="context window"):
        asyncio.run(collect(runtime, smollm2_mlx, [ChatMessage("user", "word " * 100)]))
    # A prompt that fits gets what room is left, and the model is still usable.
    done = done_of(asyncio.run(collect(runtime, smollm2_mlx, LONG_ANSWER, GenerationParams(temperature=0, max_tokens=500))))
    assert done.finish_reason == "length"
    assert done.usage.prompt_tokens + done.usage.completion_tokens == 64


# -- process exit ----------------------------------------------------------------------------------


def test_a_process_that_used_mlx_exits_cleanly(quick: ModelEntry, tmp_path: Path) -> None:
    """With mlx 0.32 a thread that ran MLX and then exits makes the process abort as it exits
    (8 times in 10 for this script with a thread pool in place of the runtime's worker); the
    runtime's MLX thread never exits, so all four runs must end cleanly."""
    script = tmp_path / "use_mlx.py"
    script.write_text(
        "import asyncio, dataclasses, pathlib, sys\n"
        "from orc.node.models.catalog import Catalog\n"
        "from orc.node.models.runtimes.base import ChatMessage, GenerationParams\n"
        "from orc.node.models.runtimes.mlx import MlxRuntime\n"
        "entry = dataclasses.replace(Catalog(pathlib.Path(sys.argv[1])).get(sys.argv[2]), chat=False)\n"
        "async def main():\n"
        "    async for _ in MlxRuntime().generate(entry, [ChatMessage('user', 'Hi')], GenerationParams(max_tokens=2)):\n"
        "        pass\n"
        "asyncio.run(main())\n"
    )
    models_dir = quick.path.parent.parent
    for _ in range(4):
        done = subprocess.run([sys.executable, str(script), str(models_dir), quick.selector],
                              capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr[-2000:]
