"""The llama.cpp runtime: GGUF models through llama-cpp-python.

One `llama_cpp.Llama` per model id is loaded once and reused. A `Llama` is not thread-safe, so
each instance runs one generation at a time; `max_concurrent_per_model` above 1 gives a model
that many instances (made as concurrent requests need them), and further requests wait for a
free one. Loading and generating run in worker threads; tokens reach the event loop through
`loop.call_soon_threadsafe`.

Prompts: a model whose GGUF carries a chat template (`tokenizer.chat_template`) and whose
catalog entry is a chat model has its messages rendered with that template, exactly as
llama-cpp-python's `create_chat_completion` would (same formatter, tokenization and stops),
then completed. Any other model (a base model such as Gemma-3-270M, whose GGUF has no template)
gets a plain completion of a transcript::

    System: ...

    User: ...

    Assistant:

which stops when the model starts a new "User:" or "System:" turn.

Streamed text reaches the event loop in batches at most every 50 ms rather than per token:
on a two-core machine every wake-up of the loop's thread costs the generation a little.

Loading: every model loads through `load_llama` (`orc.node.models.runtimes.llama_load`), with
llama.cpp's extra buffer types (weight repacking, and the AMX path on Intel Xeons that crashes)
on or off as the runtime was built with, and llama.cpp's own log routed to Python logging at
DEBUG, never to the terminal. What a model costs in memory comes from its GGUF header
(`orc.node.models.runtimes.llama_memory`).

`llama_cpp` itself is imported only when a model is loaded, so importing this module (and
running `orc --help`) stays fast.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import threading
from collections.abc import AsyncIterator, Callable, Sequence
from typing import TYPE_CHECKING, Any

from orc.node.models.runtimes.base import (
    ChatMessage,
    GenerationDone,
    GenerationError,
    GenerationEvent,
    GenerationParams,
    ModelLoadError,
    Usage,
)
from orc.node.models.runtimes.generation import (
    REPEAT_PENALTY,
    TRANSCRIPT_STOPS,
    StopScanner,
    TokenBatcher,
    WorkerFailed,
    WorkerMessage,
    check_request,
    relay,
    render_transcript,
)
from orc.node.models.runtimes.llama_load import extra_buffers_for_this_cpu, load_llama
from orc.node.models.runtimes.llama_memory import WORKING_BYTES_FIXED, instance_bytes

if TYPE_CHECKING:
    from orc.node.models.entry import ModelEntry

__all__ = [
    "LlamaCppRuntime",
    "StopScanner",
    "render_transcript",
]

# -- prompts and stop strings ---------------------------------------------------------------


class _SamplingCounter:
    """A stopping criterion that never stops and counts.

    llama-cpp-python calls it once per sampled token with the context so far (prompt, then
    every sampled token but the newest), so the shortest context it sees is exactly the prompt
    as the model got it (template, special tokens and BOS included) and the number of distinct
    lengths is the number of tokens sampled. It may call it once more after the last token
    with a context of a length already seen, hence a set. A stopping criterion, unlike a
    logits processor, gets views of arrays llama-cpp-python already holds, so counting costs
    next to nothing per token. Streamed chunks cannot be counted instead: llama-cpp-python
    merges tokens into one chunk while a multi-byte character or a possible stop string is
    incomplete.
    """

    def __init__(self) -> None:
        self._lengths: set[int] = set()

    def __call__(self, input_ids: Any, logits: Any) -> bool:
        self._lengths.add(len(input_ids))
        return False

    @property
    def prompt_tokens(self) -> int:
        return min(self._lengths, default=0)

    @property
    def sampled(self) -> int:
        return len(self._lengths)


# -- the runtime ----------------------------------------------------------------------------


class _LoadedModel:
    """The instances of one loaded model and the slots that bound its concurrent generations."""

    def __init__(self, entry: ModelEntry, first: Any, max_instances: int) -> None:
        self.entry = entry
        self.idle: list[Any] = [first]  # guarded by the runtime's thread lock
        self.created = 1  # instances made so far; guarded likewise
        self.max_instances = max_instances
        self.slots = asyncio.Semaphore(max_instances)  # bound to the runtime's current loop
        self.has_chat_template = "tokenizer.chat_template" in first.metadata
        self.formatter = _chat_formatter(first) if self.has_chat_template else None
        self.unloaded = False
        self._workers: dict[int, concurrent.futures.ThreadPoolExecutor] = {}
        self._workers_lock = threading.Lock()

    def worker_for(self, llm: Any) -> concurrent.futures.ThreadPoolExecutor:
        """The one thread that runs every generation of `llm`.

        llama.cpp runs its compute threads as an OpenMP team per calling thread; a new thread
        per generation would build a new team each time, and teams of several calling threads
        spin against each other on a small machine.
        """
        with self._workers_lock:
            worker = self._workers.get(id(llm))
            if worker is None:
                worker = concurrent.futures.ThreadPoolExecutor(
                    max_workers=1, thread_name_prefix=f"orc-llama-{self.entry.id}")
                self._workers[id(llm)] = worker
            return worker

    def stop_workers(self) -> None:
        with self._workers_lock:
            workers, self._workers = list(self._workers.values()), {}
        for worker in workers:
            worker.shutdown(wait=False)


class LlamaCppRuntime:
    """Runs GGUF models with llama.cpp; see the module docstring for prompts and threading.

    `n_threads` defaults to the number of CPUs; `n_ctx` is the context window (prompt plus
    completion) of every loaded model. `extra_buffers` turns llama.cpp's extra buffer types
    (weight repacking, AMX) on or off for every model it loads; None decides for this CPU as
    `llama_cpp.extra_buffers: auto` does (off where the CPU has AMX).
    """

    name = "llama_cpp"

    def __init__(
        self,
        *,
        n_threads: int | None = None,
        n_ctx: int = 2048,
        max_concurrent_per_model: int = 1,
        extra_buffers: bool | None = None,
    ) -> None:
        if max_concurrent_per_model < 1:
            raise ValueError("max_concurrent_per_model must be at least 1")
        self.extra_buffers = extra_buffers_for_this_cpu() if extra_buffers is None else extra_buffers
        self._n_threads = n_threads or os.cpu_count() or 1
        self._n_ctx = n_ctx
        self._max_concurrent = max_concurrent_per_model
        self._models: dict[str, _LoadedModel] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        # Worker threads hand instances back under this lock. It also guards the binding of
        # the asyncio primitives to one event loop: a runtime may serve one loop after another
        # (`asyncio.run` twice), and an instance finishing after its loop closed must still
        # count as free in the next one.
        self._guard = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None

    def _bind(self) -> None:
        """Rebuild the asyncio primitives when called from a new event loop."""
        loop = asyncio.get_running_loop()
        if loop is self._loop:
            return
        with self._guard:
            self._loop = loop
            self._locks = {}
            for loaded in self._models.values():
                free = len(loaded.idle) + (loaded.max_instances - loaded.created)
                loaded.slots = asyncio.Semaphore(free)

    def loaded_models(self) -> tuple[str, ...]:
        """Ids of the models loaded now, sorted."""
        return tuple(sorted(self._models))

    async def load(self, model: ModelEntry) -> None:
        """Load `model` unless it is loaded; concurrent calls for one model load it once.

        Raises `ModelLoadError` naming the file when it is missing, not GGUF or unreadable by
        llama.cpp.
        """
        self._bind()
        await self._ensure_loaded(model)

    async def _ensure_loaded(self, model: ModelEntry) -> _LoadedModel:
        async with self._lock(model.id):
            loaded = self._models.get(model.id)
            if loaded is None:
                # If the awaiting task is cancelled the thread still finishes the load and the
                # instance is dropped; llama.cpp has no way to abort a load half-way.
                llm = await asyncio.to_thread(self._load_instance, model)
                loaded = _LoadedModel(model, llm, self._max_concurrent)
                self._models[model.id] = loaded
            return loaded

    def _lock(self, model_id: str) -> asyncio.Lock:
        return self._locks.setdefault(model_id, asyncio.Lock())

    def _load_instance(self, model: ModelEntry) -> Any:
        """Blocking: a new `llama_cpp.Llama` for `model`, or `ModelLoadError`."""
        path = model.path
        try:
            with path.open("rb") as f:
                magic = f.read(4)
        except FileNotFoundError:
            raise ModelLoadError(
                f"cannot load model {model.id!r}: its weights file {path} does not exist"
            ) from None
        except OSError as exc:
            raise ModelLoadError(f"cannot load model {model.id!r}: cannot read {path}: {exc.strerror}") from None
        if magic != b"GGUF":
            raise ModelLoadError(f"cannot load model {model.id!r}: {path} is not a GGUF file")
        try:
            import llama_cpp  # noqa: F401 - only to say clearly when it is missing
        except ImportError as exc:
            raise ModelLoadError(f"cannot load model {model.id!r}: llama-cpp-python is not installed ({exc})") from None
        try:
            return load_llama(path, extra_buffers=self.extra_buffers, n_ctx=self._n_ctx,
                              n_threads=self._n_threads, n_threads_batch=self._n_threads)
        except ModelLoadError as exc:
            raise ModelLoadError(f"cannot load model {model.id!r}: {exc}") from None
        except Exception as exc:  # noqa: BLE001 - a foreign library's boundary: any failure is a load failure
            raise ModelLoadError(
                f"cannot load model {model.id!r}: llama.cpp could not read {path} "
                f"(truncated, corrupt or an unsupported architecture): {exc}"
            ) from None

    async def generate(
        self, model: ModelEntry, messages: Sequence[ChatMessage], params: GenerationParams
    ) -> AsyncIterator[GenerationEvent]:
        """Stream one generation: `TokenChunk`s, then one `GenerationDone`.

        Loads the model first if needed and waits for a free slot. Closing the iterator or
        cancelling the consuming task stops the worker thread within about one token (a long
        prompt still being read is finished first); the slot is freed when the thread stops.
        Raises `GenerationError` for bad messages or params and for failures inside llama.cpp.
        """
        check_request(model, messages, params)
        self._bind()
        loaded, llm = await self._acquire_instance(model)
        def start(cancel: threading.Event, send: Callable[[WorkerMessage], None]) -> None:
            def give_back() -> None:
                self._release_instance(loaded, llm)

            try:
                loaded.worker_for(llm).submit(
                    self._generate_in_thread, loaded, llm, messages, params, cancel, send, give_back)
            except BaseException:
                self._release_instance(loaded, llm)
                raise

        # The worker hands the instance back itself when it stops.
        async for event in relay(start):
            yield event

    async def _acquire_instance(self, model: ModelEntry) -> tuple[_LoadedModel, Any]:
        while True:
            loaded = await self._ensure_loaded(model)
            await loaded.slots.acquire()
            if loaded.unloaded:
                # Unloaded while this request waited: load it again.
                loaded.slots.release()
                continue
            with self._guard:
                llm = loaded.idle.pop() if loaded.idle else None
                if llm is None:
                    loaded.created += 1
            if llm is not None:
                return loaded, llm
            try:
                # Every instance is busy but a slot is free: this slot's instance is not made
                # yet (max_concurrent_per_model > 1).
                llm = await asyncio.to_thread(self._load_instance, model)
            except BaseException:
                with self._guard:
                    loaded.created -= 1
                loaded.slots.release()
                raise
            return loaded, llm

    def _release_instance(self, loaded: _LoadedModel, llm: Any) -> None:
        """Hand an instance back; safe from any thread, even after its loop has closed."""
        with self._guard:
            loaded.idle.append(llm)
            loop, slots = self._loop, loaded.slots
        if loop is None:
            return
        try:
            loop.call_soon_threadsafe(slots.release)
        except RuntimeError:
            pass  # that loop is closed; binding the next loop counts this instance as free

    def _generate_in_thread(
        self,
        loaded: _LoadedModel,
        llm: Any,
        messages: Sequence[ChatMessage],
        params: GenerationParams,
        cancel: threading.Event,
        send: Callable[[WorkerMessage], None],
        give_back: Callable[[], None],
    ) -> None:
        try:
            done = self._run_generation(loaded, llm, messages, params, cancel, send)
            if done is not None:
                send(done)
        except Exception as exc:  # noqa: BLE001 - thread boundary: every failure goes to the consumer
            error = exc if isinstance(exc, GenerationError) else GenerationError(
                f"generation with model {loaded.entry.id!r} failed: {exc}"
            )
            send(WorkerFailed(error))
        finally:
            give_back()

    def _run_generation(
        self,
        loaded: _LoadedModel,
        llm: Any,
        messages: Sequence[ChatMessage],
        params: GenerationParams,
        cancel: threading.Event,
        send: Callable[[WorkerMessage], None],
    ) -> GenerationDone | None:
        """Blocking: stream one generation through `send`; None if cancelled."""
        import llama_cpp

        counter = _SamplingCounter()
        options: dict[str, Any] = {
            "temperature": params.temperature,
            "max_tokens": params.max_tokens,
            # llama-cpp-python turns seed=None into a seed derived from the instance's previous
            # one, so a fresh instance would repeat itself; llama.cpp's default seed means "draw
            # one from the system's random source".
            "seed": llama_cpp.LLAMA_DEFAULT_SEED if params.seed is None else params.seed,
            "repeat_penalty": REPEAT_PENALTY,
            "stopping_criteria": llama_cpp.StoppingCriteriaList([counter]),
            "stream": True,
        }
        if params.top_p is not None:
            options["top_p"] = params.top_p
        # Stop strings are applied here, not by llama-cpp-python: then its "stop" finish can
        # only mean the model sampled an end-of-generation token, which the count must leave
        # out (below). The one exception, the model spelling out its template's end token as
        # plain text, is too rare to matter.
        use_template = loaded.formatter is not None and loaded.entry.chat
        if use_template:
            # What create_chat_completion does for a GGUF template, done here so the counting
            # stopping criterion can ride along (create_chat_completion takes none): render with
            # the same formatter, tokenize alike, and keep the template's stop strings and
            # end-token criterion.
            rendered = loaded.formatter(messages=[{"role": m.role, "content": m.content} for m in messages])
            prompt = llm.tokenize(rendered.prompt.encode("utf-8"), add_bos=not rendered.added_special, special=True)
            template_stops = rendered.stop if isinstance(rendered.stop, list) else [rendered.stop] if rendered.stop else []
            if rendered.stopping_criteria is not None:
                options["stopping_criteria"] = llama_cpp.StoppingCriteriaList([counter, *rendered.stopping_criteria])
            stops = tuple(params.stop)
            chunks = llm.create_completion(prompt=prompt, stop=template_stops, **options)
            texts = (_completion_chunk(chunk) for chunk in chunks)
        else:
            stops = (*params.stop, *TRANSCRIPT_STOPS)
            chunks = llm.create_completion(prompt=render_transcript(messages), **options)
            texts = (_completion_chunk(chunk) for chunk in chunks)

        scanner = StopScanner(stops)
        batcher = TokenBatcher(send)
        finish_reason = "length"
        ended_by_end_token = False

        try:
            for text, reason in texts:
                if cancel.is_set():
                    return None
                safe, hit = scanner.feed(text)
                batcher.add(safe)
                if hit:
                    finish_reason = "stop"
                    break
                if reason is not None:
                    finish_reason = reason
                    ended_by_end_token = reason == "stop"
            else:
                batcher.add(scanner.flush())
            batcher.flush()
        finally:
            # Closing the generator chain stops llama-cpp-python's sampling loop right here.
            chunks.close()
        if cancel.is_set():
            return None
        completion_tokens = counter.sampled - (1 if ended_by_end_token else 0)
        return GenerationDone(
            text=batcher.text,
            usage=Usage(prompt_tokens=counter.prompt_tokens, completion_tokens=completion_tokens),
            finish_reason=finish_reason,
        )

    async def unload(self, model_id: str) -> None:
        """Forget the model; waits for its running generations, then frees its memory.

        Requests waiting for a slot when it is unloaded load it again.
        """
        self._bind()
        async with self._lock(model_id):
            loaded = self._models.pop(model_id, None)
            if loaded is None:
                return
            loaded.unloaded = True
            for _ in range(loaded.max_instances):
                await loaded.slots.acquire()
            with self._guard:
                instances, loaded.idle = loaded.idle, []
            for llm in instances:
                await asyncio.to_thread(llm.close)
            loaded.stop_workers()

    def capacity(self, model: ModelEntry) -> int:
        """Generations of `model` run at once here (one instance each)."""
        return self._max_concurrent

    def unavailable_reason(self, model: ModelEntry) -> str | None:
        """None: an in-process runtime has no runner to lose."""
        return None

    def context_tokens(self, model: ModelEntry) -> int:
        """The context window (prompt plus completion, in tokens) every generation of `model` has here."""
        return self._n_ctx

    def memory_estimate(self, model: ModelEntry) -> int:
        """Bytes one instance of the model needs, from its GGUF header (`llama_memory`).

        A file that is not there yet (an embedded model not assembled) or whose header lacks
        the shape is estimated at 1.25 x its catalog size + 32 MiB.
        """
        try:
            return instance_bytes(model.path, self._n_ctx)
        except (OSError, ValueError):
            return model.size_bytes * 5 // 4 + WORKING_BYTES_FIXED


def _chat_formatter(llm: Any) -> Any:
    """The formatter llama-cpp-python builds for a GGUF's own chat template (`Llama.__init__`)."""
    from llama_cpp import llama_chat_format

    eos_id, bos_id = llm.token_eos(), llm.token_bos()
    return llama_chat_format.Jinja2ChatFormatter(
        template=llm.metadata["tokenizer.chat_template"],
        eos_token=llm._model.token_get_text(eos_id) if eos_id != -1 else "",
        bos_token=llm._model.token_get_text(bos_id) if bos_id != -1 else "",
        stop_token_ids=[eos_id],
    )


def _completion_chunk(chunk: dict[str, Any]) -> tuple[str, str | None]:
    choice = chunk["choices"][0]
    return choice["text"] or "", choice["finish_reason"]

