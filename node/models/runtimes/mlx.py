"""The MLX runtime: mlx-lm model folders through mlx-lm.

On Apple silicon MLX runs on the GPU (Metal); elsewhere `mlx[cpu]` runs it on the CPU, which is
how it is tested on Linux, and which is many times slower than llama.cpp there (docs/benchmarks.md).

The model is loaded once per id and reused. Every MLX call of the process, loads included,
runs on one worker thread (`_MlxWorker`) that lives as long as the process: MLX evaluates on
one device anyway, so a second thread would add no speed, and a thread that has run MLX must
not exit before the process does (see `_MlxWorker`). Requests for any model therefore take
turns; each waits for the generation before it, and a cancelled one stops within about a
token. Tokens reach the event loop through `loop.call_soon_threadsafe`, in batches at most
every 50 ms, as in the llama.cpp runtime.

Prompts and sampling match the llama.cpp runtime, so the two variants of one model answer alike:

* a chat model (its tokenizer has a chat template and its catalog entry says `chat`) gets its
  messages rendered with that template; any other model gets the same plain transcript
  (`render_transcript`) and stops at the next "User:" or "System:" turn;
* the same repetition penalty and sampling chain as llama-cpp-python's defaults
  (`orc.node.models.runtimes.mlx_sampling`). Temperature 0 is greedy, so a GGUF and the MLX
  folder converted from it pick the same tokens as long as their logits agree;
* sampling draws from a random key made from the request's seed, per generation, so a seed
  gives the same text every time (though not the same text as llama.cpp's sampler).

On a CPU the float16 scales and norms of a model are cast to float32 when it loads: MLX's CPU
kernels are several times slower in float16, and float32 is what llama.cpp computes in.

`mlx` and `mlx_lm` are imported only when a model loads, so importing this module stays fast.
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import json
import os
import platform
import queue
import sys
import threading
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from orc.node.models.mlx_folder import mlx_weight_files, read_safetensors_header
from orc.node.models.runtimes.base import (
    DOES_NOT_FIT,
    ChatMessage,
    GenerationDone,
    GenerationError,
    GenerationEvent,
    GenerationParams,
    ModelLoadError,
    RuntimeFailure,
    Usage,
)

# One prompt format and one set of request checks for both runtimes: a model's two variants
# must read the same prompt and refuse the same requests.
from orc.node.models.runtimes.generation import (
    TRANSCRIPT_STOPS,
    StopScanner,
    TokenBatcher,
    WorkerFailed,
    WorkerMessage,
    check_request,
    relay,
    render_transcript,
)
from orc.node.models.runtimes.mlx_sampling import repetition_penalty, sampler

if TYPE_CHECKING:
    from orc.node.models.entry import ModelEntry

__all__ = ["MlxRuntime", "mlx_installed"]

# Compute buffers beyond weights and KV cache: a fit to MLX's peak memory after loading and
# generating with SmolLM2-135M (49k vocabulary) on the CPU, rounded up.
_WORKING_BYTES_FIXED = 32 << 20
_WORKING_BYTES_PER_VOCAB_ENTRY = 64
_INSTALL_HINT = "install it with: pip install 'orc-mesh[mlx]'"
# How long the process waits at exit for the MLX thread to finish its job and park; a
# generation still running then was abandoned without being cancelled.
_PARK_TIMEOUT_S = 10.0


def mlx_installed() -> bool:
    """Whether `mlx` and `mlx-lm` can be imported here (checked without importing them)."""
    import importlib.util

    try:
        return all(importlib.util.find_spec(name) is not None for name in ("mlx", "mlx_lm"))
    except (ImportError, ValueError):  # a module half-imported or blocked in sys.modules
        return False


def _on_gpu() -> bool:
    # MLX uses Metal on Apple silicon; every other machine runs `mlx[cpu]`.
    return sys.platform == "darwin" and platform.machine() == "arm64"



@dataclass(frozen=True)
class _LoadedModel:
    entry: ModelEntry
    model: Any  # mlx_lm's nn.Module
    tokenizer: Any  # mlx_lm's TokenizerWrapper around a transformers tokenizer
    end_tokens: frozenset[int]
    has_chat_template: bool


class _IncrementalDecoder:
    """Token ids to text as they come, holding back an incomplete UTF-8 character.

    Each step decodes the window from the previous emitted token on, and emits what it adds
    to the text of that window alone; decoding a window rather than one token keeps
    tokenizers that drop a word's leading space at the start of a text correct.
    """

    def __init__(self, tokenizer: Any) -> None:
        self._tokenizer = tokenizer
        self._ids: list[int] = []
        self._start = 0  # the window's first token
        self._emitted = 0  # tokens before this one have been emitted

    def _decode(self, ids: list[int]) -> str:
        return str(self._tokenizer.decode(ids, skip_special_tokens=True, clean_up_tokenization_spaces=False))

    def add(self, token: int) -> str:
        self._ids.append(token)
        before = self._decode(self._ids[self._start:self._emitted])
        after = self._decode(self._ids[self._start:])
        if len(after) <= len(before) or after.endswith("\ufffd"):
            return ""
        self._start, self._emitted = self._emitted, len(self._ids)
        return after[len(before):]

    def flush(self) -> str:
        """What is still held back (an incomplete character decodes as U+FFFD)."""
        before = self._decode(self._ids[self._start:self._emitted])
        after = self._decode(self._ids[self._start:])
        self._start = self._emitted = len(self._ids)
        return after[len(before):]


class _MlxWorker:
    """The one thread that runs MLX in this process, started on first use and never stopped.

    With mlx 0.32's CPU backend, a thread that evaluated MLX arrays and then exits makes the
    process abort as it exits ("terminate called without an active exception"): in 8 of 10
    runs of a short script, in about one `orc run` in four. So this thread never exits: it is a daemon (it does not keep the process alive),
    and at exit the process waits until it has finished its job and parked it in a wait that
    never ends, because a daemon thread that wakes while the interpreter shuts down is made to
    exit.
    """

    def __init__(self) -> None:
        self._jobs: queue.SimpleQueue[tuple[concurrent.futures.Future[Any], Callable[..., Any], tuple[Any, ...]]] = (
            queue.SimpleQueue())
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()

    def submit(self, fn: Callable[..., Any], *args: Any) -> concurrent.futures.Future[Any]:
        """Run `fn(*args)` on the worker after the jobs before it; cancelling the future before
        it starts skips it."""
        with self._start_lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="orc-mlx", daemon=True)
                self._thread.start()
                atexit.register(self._park)
        future: concurrent.futures.Future[Any] = concurrent.futures.Future()
        self._jobs.put((future, fn, args))
        return future

    def _park(self) -> None:
        parked = threading.Event()

        def park() -> None:
            parked.set()
            threading.Event().wait()

        self._jobs.put((concurrent.futures.Future(), park, ()))
        parked.wait(_PARK_TIMEOUT_S)

    def _run(self) -> None:
        while True:
            future, fn, args = self._jobs.get()
            if not future.set_running_or_notify_cancel():
                continue
            try:
                future.set_result(fn(*args))
            except BaseException as exc:  # noqa: BLE001 - handed to whoever awaits the job
                future.set_exception(exc)


_WORKER = _MlxWorker()


class MlxRuntime:
    """Runs mlx-lm model folders with MLX; see the module docstring for threading and sampling.

    `n_ctx` is the context window (prompt plus completion) a generation may use.
    """

    name = "mlx"

    def __init__(self, *, n_ctx: int = 2048) -> None:
        self._n_ctx = n_ctx
        self._models: dict[str, _LoadedModel] = {}  # changed only on the worker thread
        self._models_lock = threading.Lock()  # lets the loop's thread read the ids meanwhile

    def loaded_models(self) -> tuple[str, ...]:
        """Ids of the models loaded now, sorted."""
        with self._models_lock:
            return tuple(sorted(self._models))

    async def load(self, model: ModelEntry) -> None:
        """Load `model` unless it is loaded; concurrent calls load it once.

        Raises `ModelLoadError` naming the folder when it is missing or broken, or when mlx-lm
        is not installed. If the awaiting task is cancelled the load still completes.
        """
        await asyncio.wrap_future(_WORKER.submit(self._loaded, model))

    async def unload(self, model_id: str) -> None:
        """Forget the model once the generation running now (if any) ends, and free its memory."""
        await asyncio.wrap_future(_WORKER.submit(self._unload_in_thread, model_id))

    async def generate(
        self, model: ModelEntry, messages: Sequence[ChatMessage], params: GenerationParams
    ) -> AsyncIterator[GenerationEvent]:
        """Stream one generation: `TokenChunk`s, then one `GenerationDone`.

        Loads the model first if needed and waits for the worker. Closing the iterator or
        cancelling the consuming task stops the generation within about one token (a prompt
        still being read is finished first). Raises `ModelLoadError` when the model cannot be
        loaded and `GenerationError` for bad messages or params and for failures inside MLX.
        """
        check_request(model, messages, params)
        def start(cancel: threading.Event, send: Callable[[WorkerMessage], None]) -> None:
            _WORKER.submit(self._generate_in_thread, model, messages, params, cancel, send)

        # The worker notices a cancel before its next token (or before it starts, if queued).
        async for event in relay(start):
            yield event

    def capacity(self, model: ModelEntry) -> int:
        """Generations of `model` run at once here (one at a time)."""
        return 1

    def unavailable_reason(self, model: ModelEntry) -> str | None:
        """None: an in-process runtime has no runner to lose."""
        return None

    def context_tokens(self, model: ModelEntry) -> int:
        """The context window (prompt plus completion, in tokens) every generation of `model` has here."""
        return self._n_ctx

    def memory_estimate(self, model: ModelEntry) -> int:
        """Bytes the loaded model needs:

            weights (float16 counted twice on a CPU, where they are cast to float32)
            + n_ctx x layers x kv_heads x head_dim x 2 (K and V) x 4 B on a CPU, 2 B on a GPU
            + 32 MiB + 64 B x vocabulary size                              (working buffers)

        read from config.json and the safetensors headers. A folder that cannot be read is
        estimated at 1.25 x its catalog size + 32 MiB.
        """
        try:
            config = json.loads((model.path / "config.json").read_text(encoding="utf-8"))
            cpu = not _on_gpu()
            weights = 0
            for path in mlx_weight_files(model.path):
                for dtype, size in _safetensors_bytes_by_dtype(path).items():
                    weights += size * (2 if cpu and dtype in ("F16", "BF16") else 1)
            heads = int(config["num_attention_heads"])
            head_dim = int(config.get("head_dim") or int(config["hidden_size"]) // heads)
            kv_heads = int(config.get("num_key_value_heads") or heads)
            layers = int(config["num_hidden_layers"])
            kv_cache = self._n_ctx * layers * kv_heads * head_dim * 2 * (4 if cpu else 2)
            working = _WORKING_BYTES_FIXED + _WORKING_BYTES_PER_VOCAB_ENTRY * int(config["vocab_size"])
            return weights + kv_cache + working
        except (OSError, ValueError, KeyError, TypeError):
            return model.size_bytes * 5 // 4 + _WORKING_BYTES_FIXED

    # -- on the worker thread -------------------------------------------------------------

    def _loaded(self, entry: ModelEntry) -> _LoadedModel:
        """Blocking: the loaded model for `entry`, loading it now if needed."""
        loaded = self._models.get(entry.id)
        if loaded is None:
            loaded = self._load(entry)
            with self._models_lock:
                self._models[entry.id] = loaded
        return loaded

    def _load(self, entry: ModelEntry) -> _LoadedModel:
        path = entry.path
        if not path.is_dir():
            raise ModelLoadError(f"cannot load model {entry.id!r}: its MLX model folder {path} does not exist")
        if not (path / "config.json").is_file():
            raise ModelLoadError(f"cannot load model {entry.id!r}: {path} has no config.json, so it is not an MLX model folder")
        # transformers (which mlx-lm uses for tokenizers) would otherwise tell stderr, on import,
        # that PyTorch is missing; orc never needs PyTorch.
        os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
        try:
            import mlx.core as mx
            import mlx_lm
            from mlx.utils import tree_map
        except ImportError as exc:
            raise ModelLoadError(
                f"cannot load model {entry.id!r}: the MLX runtime needs the mlx and mlx-lm packages "
                f"({exc.name} is missing); {_INSTALL_HINT}"
            ) from None
        try:
            model, tokenizer = mlx_lm.load(str(path))
            if mx.default_device() == mx.cpu:
                model.update(tree_map(
                    lambda a: a.astype(mx.float32) if a.dtype in (mx.float16, mx.bfloat16) else a,
                    model.parameters()))
            mx.eval(model.parameters())
        except Exception as exc:  # noqa: BLE001 - a foreign library's boundary: any failure is a load failure
            raise ModelLoadError(
                f"cannot load model {entry.id!r}: mlx-lm could not load {path} (a missing or truncated "
                f"file, or an architecture this mlx-lm does not know): {type(exc).__name__}: {exc}"
            ) from None
        return _LoadedModel(
            entry=entry,
            model=model,
            tokenizer=tokenizer,
            end_tokens=frozenset(int(token) for token in tokenizer.eos_token_ids),
            has_chat_template=bool(getattr(tokenizer, "chat_template", None)),
        )

    def _unload_in_thread(self, model_id: str) -> None:
        with self._models_lock:
            loaded = self._models.pop(model_id, None)
        if loaded is not None:
            import mlx.core as mx

            del loaded
            mx.clear_cache()

    def _generate_in_thread(
        self,
        entry: ModelEntry,
        messages: Sequence[ChatMessage],
        params: GenerationParams,
        cancel: threading.Event,
        send: Callable[[WorkerMessage], None],
    ) -> None:
        if cancel.is_set():
            return  # given up while it waited for the worker
        try:
            done = self._run_generation(self._loaded(entry), entry, messages, params, cancel, send)
            if done is not None:
                send(done)
        except RuntimeFailure as exc:
            send(WorkerFailed(exc))
        except Exception as exc:  # noqa: BLE001 - thread boundary: every failure goes to the consumer
            send(WorkerFailed(GenerationError(f"generation with model {entry.id!r} failed: {type(exc).__name__}: {exc}")))

    def _prompt(self, loaded: _LoadedModel, entry: ModelEntry,
                messages: Sequence[ChatMessage]) -> tuple[list[int], tuple[str, ...]]:
        """The prompt's token ids and the stop strings its format adds."""
        tokenizer = loaded.tokenizer
        if loaded.has_chat_template and entry.chat:
            rendered = tokenizer.apply_chat_template(
                [{"role": m.role, "content": m.content} for m in messages], add_generation_prompt=True, tokenize=False)
            # The template writes any special tokens itself (as llama.cpp's formatter does).
            return list(tokenizer.encode(rendered, add_special_tokens=False)), ()
        return list(tokenizer.encode(render_transcript(messages))), TRANSCRIPT_STOPS

    def _run_generation(
        self,
        loaded: _LoadedModel,
        entry: ModelEntry,
        messages: Sequence[ChatMessage],
        params: GenerationParams,
        cancel: threading.Event,
        send: Callable[[WorkerMessage], None],
    ) -> GenerationDone | None:
        """Blocking: stream one generation through `send`; None if cancelled."""
        import mlx.core as mx
        from mlx_lm.generate import generate_step

        prompt, format_stops = self._prompt(loaded, entry, messages)
        if len(prompt) >= self._n_ctx:
            raise GenerationError(
                f"model {entry.id!r}: the prompt ({len(prompt)} tokens) with room for an answer "
                f"{DOES_NOT_FIT} of {self._n_ctx} tokens; shorten the input"
            )
        budget = min(params.max_tokens, self._n_ctx - len(prompt))
        seed = params.seed if params.seed is not None else int.from_bytes(os.urandom(4), "little")
        steps = generate_step(
            mx.array(prompt),
            loaded.model,
            max_tokens=budget,
            sampler=sampler(params, seed),
            logits_processors=[repetition_penalty(len(prompt))],
        )
        scanner = StopScanner((*params.stop, *format_stops))
        decoder = _IncrementalDecoder(loaded.tokenizer)
        batcher = TokenBatcher(send)
        sampled = 0
        finish_reason = "length"
        hit = False

        try:
            for token, _logprobs in steps:
                if cancel.is_set():
                    return None
                if token in loaded.end_tokens:
                    finish_reason = "stop"
                    break
                sampled += 1
                safe, hit = scanner.feed(decoder.add(token))
                batcher.add(safe)
                if hit:
                    finish_reason = "stop"
                    break
            if not hit:
                # The text ended without a stop string: release what was held back.
                safe, hit = scanner.feed(decoder.flush())
                batcher.add(safe)
                if hit:
                    finish_reason = "stop"
                else:
                    batcher.add(scanner.flush())
            batcher.flush()
        finally:
            # Stops mlx-lm's generator, which computes one token ahead.
            steps.close()
        if cancel.is_set():
            return None
        return GenerationDone(
            text=batcher.text,
            usage=Usage(prompt_tokens=len(prompt), completion_tokens=sampled),
            finish_reason=finish_reason,
        )


def _safetensors_bytes_by_dtype(path: Path) -> dict[str, int]:
    """Bytes of tensor data per dtype, from a safetensors file's header alone."""
    totals: dict[str, int] = {}
    for name, tensor in read_safetensors_header(path).items():
        if name == "__metadata__":
            continue
        start, end = tensor["data_offsets"]
        totals[tensor["dtype"]] = totals.get(tensor["dtype"], 0) + end - start
    return totals
