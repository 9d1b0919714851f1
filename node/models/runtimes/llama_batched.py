"""Batched llama.cpp decoding: several generations of one model decoded together.

`BatchedLlamaRuntime` behaves to its callers as `LlamaCppRuntime` does (same prompts, stop
strings, usage, sampling and streaming; see `orc.node.models.runtimes.llama_cpp`), but a
loaded model has one llama.cpp context holding `slots` sequences, each with its own stream of
KV cache (`n_seq_max = slots`, `kv_unified = false`) of `n_ctx` tokens. One thread per model,
the step loop (`orc.node.models.runtimes.llama_steps`), runs every native call: each step it
admits waiting requests into free slots, reads at most one chunk of one new prompt, then
decodes one token of every generating sequence in one `llama_decode`. A request joins between
steps, and a cancelled one gives its slot back at the next step.

See docs/runtimes.md ("Batched decoding") for why the cache is split into streams, how prompt
prefixes are reused and what stays reproducible.

`llama_cpp` itself is imported only when a model is loaded.
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from orc.node.models.runtimes.base import (
    ChatMessage,
    GenerationEvent,
    GenerationParams,
    ModelLoadError,
)
from orc.node.models.runtimes.generation import TRANSCRIPT_STOPS, WorkerMessage, check_request, relay, render_transcript
from orc.node.models.runtimes.llama_cpp import LlamaCppRuntime, _chat_formatter
from orc.node.models.runtimes.llama_load import extra_buffers_for_this_cpu
from orc.node.models.runtimes.llama_memory import WORKING_BYTES_FIXED, instance_bytes
from orc.node.models.runtimes.llama_steps import PROMPT_CHUNK, Request, StepLoop
from orc.node.models.runtimes.probe_cache import ProbeCache

if TYPE_CHECKING:
    from orc.node.models.entry import ModelEntry

__all__ = ["MAX_SLOTS", "BatchedLlamaRuntime"]

# llama.cpp allows up to 256 sequences a context; every slot holds a KV cache of n_ctx tokens
# for as long as the model is loaded, so the range config.yaml accepts (1-16) is the cap.
MAX_SLOTS = 16
# The `Llama` object only lends its model and tokenizer; its own context is closed right after
# loading, so it is made as small as llama-cpp-python allows to keep the load cheap.
_LOADER_CTX = 64


class _LoadedModel:
    """One model: the `Llama` that owns its weights and tokenizer, and its step loop."""

    def __init__(self, entry: ModelEntry, llm: Any, steps: StepLoop) -> None:
        self.entry = entry
        self.llm = llm
        self.steps = steps
        self.formatter = _chat_formatter(llm) if "tokenizer.chat_template" in llm.metadata else None


class BatchedLlamaRuntime:
    """Runs GGUF models with llama.cpp, decoding up to `slots` generations of a model together.

    `n_threads` defaults to the number of CPUs; `n_ctx` is the context window (prompt plus
    completion) of every sequence; `extra_buffers` as for `LlamaCppRuntime`; `slots` (1 to
    MAX_SLOTS) how many sequences of one model are decoded together. A request beyond the
    slots waits for one to free up. `probe_cache`: the file that keeps what the load's probes
    found, for the next load of the same model here (orc.node.models.runtimes.probe_cache).
    """

    name = "llama_cpp"

    def __init__(
        self,
        *,
        n_threads: int | None = None,
        n_ctx: int = 2048,
        extra_buffers: bool | None = None,
        slots: int = 4,
        probe_cache: Path | None = None,
    ) -> None:
        if not 1 <= slots <= MAX_SLOTS:
            raise ValueError(f"slots must be between 1 and {MAX_SLOTS}, not {slots}")
        if n_ctx < 1:
            raise ValueError("n_ctx must be at least 1")
        self.extra_buffers = extra_buffers_for_this_cpu() if extra_buffers is None else extra_buffers
        self.slots = slots
        self._n_threads = n_threads or os.cpu_count() or 1
        self._n_ctx = n_ctx
        self._probe_cache = ProbeCache(probe_cache) if probe_cache is not None else None
        self._models: dict[str, _LoadedModel] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        # Loads through LlamaCppRuntime's checks, so a missing, non-GGUF or unreadable file
        # fails with the very same ModelLoadError.
        self._loader = LlamaCppRuntime(n_threads=self._n_threads, n_ctx=_LOADER_CTX, extra_buffers=self.extra_buffers)

    def _bind(self) -> None:
        """Forget asyncio locks made for another event loop (a runtime may serve one loop after another)."""
        loop = asyncio.get_running_loop()
        if loop is not self._loop:
            self._loop, self._locks = loop, {}

    def _lock(self, model_id: str) -> asyncio.Lock:
        return self._locks.setdefault(model_id, asyncio.Lock())

    def loaded_models(self) -> tuple[str, ...]:
        """Ids of the models loaded now, sorted."""
        return tuple(sorted(self._models))

    async def load(self, model: ModelEntry) -> None:
        """Load `model` unless it is loaded; raises `ModelLoadError` as `LlamaCppRuntime.load` does."""
        self._bind()
        await self._ensure_loaded(model)

    async def _ensure_loaded(self, model: ModelEntry) -> _LoadedModel:
        async with self._lock(model.id):
            loaded = self._models.get(model.id)
            if loaded is None or loaded.steps.closing:
                loaded = await asyncio.to_thread(self._load, model)
                self._models[model.id] = loaded
            return loaded

    def _load(self, model: ModelEntry) -> _LoadedModel:
        """Blocking: the model's weights, then its batched context and step loop."""
        steps = StepLoop(lambda: self._loader._load_instance(model), name=model.id, slots=self.slots,
                         n_ctx=self._n_ctx, n_threads=self._n_threads, probe_cache=self._probe_cache,
                         identity={"model_sha256": model.sha256, "extra_buffers": self.extra_buffers})
        try:
            llm = steps.wait_ready()
        except ModelLoadError as exc:
            message = str(exc)
            raise ModelLoadError(message if message.startswith("cannot load model")
                                 else f"cannot load model {model.id!r}: {message}") from None
        return _LoadedModel(model, llm, steps)

    async def generate(
        self, model: ModelEntry, messages: Sequence[ChatMessage], params: GenerationParams
    ) -> AsyncIterator[GenerationEvent]:
        """Stream one generation: `TokenChunk`s, then one `GenerationDone`.

        Loads the model first if needed; waits for a free slot when all are taken. Closing the
        iterator or cancelling the consuming task frees the slot at the next step. Raises
        `GenerationError` for bad messages or params, for a prompt that does not fit the
        context window and for failures inside llama.cpp.
        """
        check_request(model, messages, params)
        self._bind()
        loaded = await self._ensure_loaded(model)
        tokens, stops = self._prompt(loaded, messages, params)

        def start(cancel: threading.Event, send: Callable[[WorkerMessage], None]) -> None:
            loaded.steps.submit(Request(model_id=model.id, prompt=tokens, params=params, stops=stops,
                                        cancel=cancel, send=send))

        async for event in relay(start):
            yield event

    def _prompt(self, loaded: _LoadedModel, messages: Sequence[ChatMessage],
                params: GenerationParams) -> tuple[list[int], tuple[str, ...]]:
        """The prompt tokens and stop strings, exactly as `LlamaCppRuntime` gives them to
        llama-cpp-python's `create_completion` (which adds BOS and EOS for a text prompt)."""
        llm = loaded.llm
        if loaded.formatter is not None and loaded.entry.chat:
            rendered = loaded.formatter(messages=[{"role": m.role, "content": m.content} for m in messages])
            tokens = llm.tokenize(rendered.prompt.encode("utf-8"), add_bos=not rendered.added_special, special=True)
            template_stops = rendered.stop if isinstance(rendered.stop, list) else [rendered.stop] if rendered.stop else []
            return list(tokens), (*params.stop, *template_stops)
        model = llm._model
        cls, sep = model.token_cls(), model.token_sep()
        begin = [cls if cls != -1 else llm.token_bos()]
        if not model.add_bos_token() or begin == [-1]:
            begin = []
        end = [sep if sep != -1 else llm.token_eos()] if model.add_eos_token() or sep != -1 else []
        text = render_transcript(messages)
        tokens = [*begin, *llm.tokenize(text.encode("utf-8"), add_bos=False, special=True), *end]
        return tokens, (*params.stop, *TRANSCRIPT_STOPS)

    async def unload(self, model_id: str) -> None:
        """Forget the model; its running and waiting generations finish first, then its memory
        is freed. Requests made after this load it again."""
        self._bind()
        async with self._lock(model_id):
            loaded = self._models.pop(model_id, None)
            if loaded is None:
                return
            loaded.steps.close()
            await asyncio.to_thread(loaded.steps.join)
            await asyncio.to_thread(loaded.llm.close)

    def set_threads(self, threads: int) -> None:
        """Decode every loaded model with `threads` CPU threads (at most this runtime's
        n_threads) from its next step on, where that leaves its results as they are
        (`StepLoop.set_threads`). A runner's share of the node's cores."""
        for loaded in self._models.values():
            loaded.steps.set_threads(threads)

    def threads(self) -> int:
        """The CPU threads the last decode step of a loaded model ran with (0: none loaded)."""
        return max((loaded.steps.threads for loaded in self._models.values()), default=0)

    def capacity(self, model: ModelEntry) -> int:
        """Generations of `model` decoded together here: the slots, or once loaded, fewer if
        this model's rows are not bit-identical in larger decode calls on this CPU
        (`StepLoop._probe_exact_rows`)."""
        loaded = self._models.get(model.id)
        return self.slots if loaded is None else min(self.slots, loaded.steps.exact_rows)

    def unavailable_reason(self, model: ModelEntry) -> str | None:
        """None: an in-process runtime has no runner to lose."""
        return None

    def context_tokens(self, model: ModelEntry) -> int:
        """The context window (prompt plus completion, in tokens) of every generation of `model`."""
        return self._n_ctx

    def memory_estimate(self, model: ModelEntry) -> int:
        """Bytes the loaded model needs: weights, the KV cache of every slot (`slots` x
        `n_ctx` tokens) and working buffers, from its GGUF header (`llama_memory`).

        A slot of n_ctx 2048 costs 45 MiB of KV cache with SmolLM2-135M (30 layers, 3 KV heads
        of 64) and 36 MiB with Gemma-3-270M (18 layers, 1 KV head of 256). A file that is not
        there yet, or whose header lacks the shape, is estimated at 1.25 x its catalog size +
        32 MiB.
        """
        try:
            return instance_bytes(model.path, self._n_ctx * self.slots)
        except (OSError, ValueError):
            return model.size_bytes * 5 // 4 + WORKING_BYTES_FIXED
