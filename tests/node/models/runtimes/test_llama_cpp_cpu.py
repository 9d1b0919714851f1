"""The llama.cpp runtime on every CPU: extra buffer types on or off as told (off by default
where the CPU has AMX, whose llama.cpp path crashes), the same greedy text either way, and a
prompt read in one multi-token batch, the step that crashed on AMX machines."""

from __future__ import annotations

import asyncio
import logging
import platform
import types
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from orc.node.models.catalog import ModelEntry
from orc.node.models.hardware import cpu_flags, read_cpuinfo
from orc.node.models.runtimes import llama_load as load_module
from orc.node.models.runtimes.base import ChatMessage, GenerationDone, GenerationParams, ModelLoadError
from orc.node.models.runtimes.llama_cpp import LlamaCppRuntime
from orc.node.models.runtimes.llama_load import _model_params, extra_buffers_for_this_cpu
from orc.node.models.runtimes.llama_log import LOGGER_NAME

llama_cpp = pytest.importorskip("llama_cpp")

pytestmark = pytest.mark.slow

SAPPHIRE_RAPIDS = "flags\t\t: fpu sse2 avx2 avx512f avx512_bf16 amx_bf16 avx512_fp16 amx_tile amx_int8\n"
# The buffer types llama.cpp names when it loads weights into extra buffers ("load_tensors:
# CPU_REPACK model buffer size = ..."): repacked for AVX2/NEON, or tiled for AMX.
EXTRA_BUFFER_NAMES = ("CPU_REPACK", "AMX", "KLEIDIAI")


@pytest.fixture
def instances(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """Every `llama_cpp.Llama` made while the test runs."""
    made: list[Any] = []

    class RecordingLlama(llama_cpp.Llama):  # type: ignore[misc, name-defined]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            made.append(self)

    monkeypatch.setattr(llama_cpp, "Llama", RecordingLlama)
    return made


@pytest.fixture
def decode_sizes(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The number of tokens in every batch llama-cpp-python hands to `llama_decode`."""
    sizes: list[int] = []
    real = llama_cpp.llama_cpp.llama_decode

    def recording(ctx: Any, batch: Any) -> int:
        sizes.append(batch.n_tokens)
        return real(ctx, batch)

    monkeypatch.setattr(llama_cpp.llama_cpp, "llama_decode", recording)
    return sizes


def skip_where_extra_buffers_crash() -> None:
    """Extra buffer types forced on would take the whole test process down on a CPU with AMX."""
    if not extra_buffers_for_this_cpu():
        pytest.skip("this CPU has AMX: llama.cpp with extra buffer types on can crash there (llama.cpp #20824)")


def generate(runtime: LlamaCppRuntime, model: ModelEntry, messages: Sequence[ChatMessage],
             params: GenerationParams) -> GenerationDone:
    """One generation, then the model unloaded: an idle llama.cpp context's threads keep
    polling for a while and would slow the next test's generation."""
    async def run() -> GenerationDone:
        done = None
        async for event in runtime.generate(model, messages, params):
            done = event
        await runtime.unload(model.id)
        assert isinstance(done, GenerationDone)
        return done

    return asyncio.run(run())


def buffer_lines(records: list[logging.LogRecord]) -> list[str]:
    """llama.cpp's "model buffer size" lines from the log of a load."""
    return [r.getMessage() for r in records if r.name == LOGGER_NAME and "model buffer size" in r.getMessage()]


# -- a prompt read in one batch -------------------------------------------------------------


def test_a_prompt_read_in_one_batch_gives_a_sane_and_stable_greedy_answer(
    smollm2: ModelEntry, decode_sizes: list[int]
) -> None:
    """The whole prompt goes through llama.cpp's matrix multiply as one batch of tokens: the
    step that crashed on CPUs with AMX. A default runtime must survive it on any CPU."""
    question = [ChatMessage("system", "You are a helpful geography teacher."),
                ChatMessage("user", "What is the capital of France? Answer in one sentence.")]
    params = GenerationParams(temperature=0, max_tokens=16, seed=7)
    texts = []
    for _ in range(2):
        decode_sizes.clear()
        runtime = LlamaCppRuntime(n_threads=2)  # a fresh instance each time, extra buffers as for this CPU
        done = generate(runtime, smollm2, question, params)
        texts.append(done.text)
        assert done.usage.prompt_tokens > 20
        assert decode_sizes[0] == done.usage.prompt_tokens  # the prompt: one llama_decode of every token
        assert all(size == 1 for size in decode_sizes[1:])  # then one token at a time
    assert "Paris" in texts[0] and texts[0].isprintable()
    assert texts[0] == texts[1]


# -- extra buffer types on and off ----------------------------------------------------------


@pytest.mark.parametrize("which", ["smollm2", "gemma"])
def test_greedy_text_is_the_same_with_extra_buffers_on_and_off(which: str, request: pytest.FixtureRequest) -> None:
    """On this prompt. SmolLM2's Q4_1 weights have no repacked layout outside AMX, so its
    kernels are the same either way; Gemma's Q4_K weights are repacked for AVX2, whose kernel
    rounds differently, so on other prompts a near tie between two tokens can go the other way
    (docs/benchmarks.md counts how often)."""
    skip_where_extra_buffers_crash()
    model: ModelEntry = request.getfixturevalue(which)
    story = [ChatMessage("user", "Write a long story about a dragon who learns to bake bread.")]
    params = GenerationParams(temperature=0, max_tokens=48, seed=3)
    on = generate(LlamaCppRuntime(n_threads=2, extra_buffers=True), model, story, params)
    off = generate(LlamaCppRuntime(n_threads=2, extra_buffers=False), model, story, params)
    assert on.usage.completion_tokens > 8
    assert on.text == off.text
    assert on.usage == off.usage


def test_extra_buffers_off_reaches_llama_cpp(
    gemma: ModelEntry, instances: list[Any], caplog: pytest.LogCaptureFixture
) -> None:
    """Off is what llama.cpp gets: its model parameters say so, and it puts no weights in an
    extra buffer type (the load's log names every buffer it fills)."""
    params = GenerationParams(temperature=0, max_tokens=4, seed=1)
    with caplog.at_level(logging.DEBUG, logger=LOGGER_NAME):
        generate(LlamaCppRuntime(n_threads=2, extra_buffers=False), gemma, [ChatMessage("user", "Hi")], params)
    assert [llm.model_params.use_extra_bufts for llm in instances] == [False]
    lines = buffer_lines(caplog.records)
    assert lines, "llama.cpp's load log did not reach the orc.llama_cpp logger"
    assert not [line for line in lines if any(name in line for name in EXTRA_BUFFER_NAMES)], lines


def test_extra_buffers_on_reaches_llama_cpp(
    gemma: ModelEntry, instances: list[Any], caplog: pytest.LogCaptureFixture
) -> None:
    skip_where_extra_buffers_crash()
    params = GenerationParams(temperature=0, max_tokens=4, seed=1)
    with caplog.at_level(logging.DEBUG, logger=LOGGER_NAME):
        generate(LlamaCppRuntime(n_threads=2, extra_buffers=True), gemma, [ChatMessage("user", "Hi")], params)
    assert [llm.model_params.use_extra_bufts for llm in instances] == [True]
    if platform.machine() in ("x86_64", "AMD64") and "avx2" in cpu_flags(read_cpuinfo()):
        # llama.cpp repacks Gemma's Q4_K weights for AVX2 (this is what the AMX path replaces
        # on a CPU with AMX).
        assert [line for line in buffer_lines(caplog.records) if "CPU_REPACK" in line or "AMX" in line]


def test_auto_turns_extra_buffers_off_on_a_cpu_with_amx(
    smollm2: ModelEntry, instances: list[Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(load_module, "read_cpuinfo", lambda: SAPPHIRE_RAPIDS)
    extra_buffers_for_this_cpu.cache_clear()
    try:
        runtime = LlamaCppRuntime(n_threads=2)
        assert runtime.extra_buffers is False
        done = generate(runtime, smollm2, [ChatMessage("user", "Name three colors.")],
                        GenerationParams(temperature=0, max_tokens=8))
    finally:
        extra_buffers_for_this_cpu.cache_clear()
    assert done.text.strip()
    assert [llm.model_params.use_extra_bufts for llm in instances] == [False]
    assert LlamaCppRuntime(extra_buffers=True).extra_buffers is True  # an explicit choice wins


def test_auto_leaves_extra_buffers_on_without_amx(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(load_module, "read_cpuinfo", lambda: "flags\t: fpu sse2 avx2 fma\n")
    extra_buffers_for_this_cpu.cache_clear()
    try:
        assert LlamaCppRuntime().extra_buffers is True
        assert LlamaCppRuntime(extra_buffers=False).extra_buffers is False
    finally:
        extra_buffers_for_this_cpu.cache_clear()


# -- how the parameter is set ---------------------------------------------------------------


def test_the_default_parameters_are_restored_after_a_load_and_a_failed_one(smollm2: ModelEntry, tmp_path: Path) -> None:
    defaults = llama_cpp.llama_cpp.llama_model_default_params
    runtime = LlamaCppRuntime(n_threads=2, extra_buffers=False)
    asyncio.run(runtime.load(smollm2))
    assert llama_cpp.llama_cpp.llama_model_default_params is defaults
    broken = tmp_path / "broken.gguf"
    broken.write_bytes(b"GGUF" + b"\0" * 64)
    entry = ModelEntry(id="broken", path=broken, runtime="llama_cpp", size_bytes=68, sha256="0" * 64, source="user")
    with pytest.raises(ModelLoadError):
        asyncio.run(runtime.load(entry))
    assert llama_cpp.llama_cpp.llama_model_default_params is defaults
    assert defaults().use_extra_bufts is True  # llama.cpp's own default, untouched


def test_a_llama_cpp_python_without_the_field_cannot_turn_extra_buffers_off() -> None:
    class OldParams:
        _fields_ = [("n_gpu_layers", None), ("vocab_only", None)]

    old = types.SimpleNamespace(llama_model_params=OldParams, llama_model_default_params=lambda: OldParams())
    with pytest.raises(ModelLoadError, match="upgrade it: pip install -U llama-cpp-python"):
        with _model_params(old, use_extra_bufts=False):
            pass
    with _model_params(old, use_extra_bufts=True):  # on is all an old one can do, and is asked
        pass
