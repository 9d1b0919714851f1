"""The step loop of batched llama.cpp decoding: one thread, one context, `slots` sequences.

Each step (`StepLoop._step`):
0. the CPU threads the node gives this runner now are taken (`set_threads`), if this model's
   results do not change with them;
1. sequences whose consumer went away (their `cancel` is set) give their slot back;
2. waiting requests take free slots, first come first served (`llama_batch_plan.admit`), copying
   a shared prompt prefix from a cached sequence where there is one;
3. at most one chunk of one new prompt is read (`PROMPT_CHUNK` tokens, cut at fixed positions),
   in a `llama_decode` of its own: the prompt of a sequence never shares a decode call with
   other sequences' tokens, so it is read the same whatever else runs;
4. one token of every generating sequence is decoded in ONE `llama_decode`, and each sequence
   samples its next token with its own sampler chain.

Everything that crosses into llama.cpp is bounded here: a decode call holds at most
`max(PROMPT_CHUNK, slots)` tokens (the batch's capacity) and every position is below the
sequence's window (`generation_budget` refuses prompts that leave no room).
"""

from __future__ import annotations

import codecs
import collections
import concurrent.futures
import ctypes
import itertools
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from orc.node.models.runtimes.base import (
    DOES_NOT_FIT,
    GenerationDone,
    GenerationError,
    GenerationParams,
    ModelLoadError,
    Usage,
)
from orc.node.models.runtimes.generation import REPEAT_PENALTY, StopScanner, TokenBatcher, WorkerFailed, WorkerMessage
from orc.node.models.runtimes.llama_batch_plan import (
    PromptTooLong,
    admit,
    generation_budget,
    prompt_chunks,
)
from orc.node.models.runtimes.probe_cache import ProbeCache, ProbeResult, machine_facts, probe_key

__all__ = ["MAX_WAITING", "PROMPT_CHUNK", "Request", "StepLoop"]

# A prompt is read in decode calls of at most this many tokens, cut at its multiples: exactly
# how llama-cpp-python reads a prompt (its n_batch), so a greedy generation here gives its text
# even on models whose results depend on how a prompt is split (Gemma-3 on x86). One chunk is
# read per step, so a new prompt holds the other sequences' next token back by at most one
# chunk's reading time.
PROMPT_CHUNK = 512
# Requests queue here when every slot is taken. Admission upstream grants at most `slots`
# running places a model; this cap only stops a caller that ignores it from growing the queue
# without bound.
MAX_WAITING = 256
# llama-cpp-python's defaults for create_completion, which LlamaCppRuntime leaves as they are:
# the sampler chains below are built as its `Llama._init_sampler` builds them.
_PENALTY_LAST_N = 64
_TOP_K = 40
_TOP_P = 0.95
_MIN_P = 0.05
_TYPICAL_P = 1.0
# A fixed text read three ways at load to see whether this model's results depend on how a
# prompt is split into decode calls (`StepLoop.split_invariant`).
_PROBE = "The quick brown fox jumps over the lazy dog while the farmer counts sheep in the rain."


@dataclass(frozen=True)
class Request:
    """One generation to run: prompt tokens, sampling, stop strings, and the two ends of its
    relay (`generation.relay`): `cancel` set when the consumer is gone, `send` for its events."""

    model_id: str
    prompt: list[int]
    params: GenerationParams
    stops: tuple[str, ...]
    cancel: threading.Event
    send: Callable[[WorkerMessage], None]


@dataclass
class _Sequence:
    """A request holding a slot: how far its prompt is read, and what it generated."""

    request: Request
    slot: int
    budget: int
    sampler: Any
    read: int
    scanner: StopScanner
    batcher: TokenBatcher
    decoder: Any = field(default_factory=lambda: codecs.getincrementaldecoder("utf-8")(errors="ignore"))
    generated: int = 0
    pending: int | None = None  # sampled, to be fed in the next decode step


class StepLoop:
    """The thread that runs one model's batched context; see the module docstring.

    Every call into llama.cpp that computes (the load, the probe, every decode) runs on this
    one thread: llama.cpp's CPU backend keeps an OpenMP team per calling thread, and a second
    live team (say, of the thread that loaded the model) slows every decode of this one by
    about 1.6x on a two-core machine. `load()` makes the `llama_cpp.Llama` whose model and
    tokenizer it uses; `wait_ready` returns it once the context is made, or raises what the
    load raised (`ModelLoadError` when llama.cpp cannot make the context). `submit` and
    `close` are safe from any thread.
    """

    def __init__(self, load: Callable[[], Any], *, name: str, slots: int, n_ctx: int, n_threads: int,
                 probe_cache: ProbeCache | None = None, identity: Mapping[str, object] | None = None) -> None:
        """`probe_cache` and `identity` (what identifies the model and its load settings, JSON
        values): with both, probe answers are looked up and kept (orc.node.models.runtimes.probe_cache)."""
        import llama_cpp.llama_cpp as native

        self._native = native
        self._slots = slots
        self._n_ctx = n_ctx
        self._n_threads = n_threads
        self._chunk = min(PROMPT_CHUNK, n_ctx)
        self._capacity = max(self._chunk, slots)
        self._cached: dict[int, list[int]] = {slot: [] for slot in range(slots)}
        self._last_used: dict[int, int] = {}
        self._clock = itertools.count(1)
        self._running: dict[int, _Sequence] = {}
        self._waiting: collections.deque[Request] = collections.deque()
        self._cond = threading.Condition()
        self.closing = False
        self.reused_tokens = 0  # prompt tokens copied instead of computed, for tests and stats
        self.min_tail: int | None = None
        self.exact_rows = slots  # sequences decoded together with bit-identical rows (`_probe_exact_rows`)
        self.thread_invariant = False  # the same logits with fewer threads (`_probe_threads`)
        self.probed = False  # the probes ran at this load (False: their answers came from the cache)
        self._probe_cache = probe_cache if identity is not None else None
        self._identity = dict(identity or {})
        self._threads_now = n_threads
        self._threads_wanted = n_threads
        self._ready: concurrent.futures.Future[Any] = concurrent.futures.Future()
        self._thread = threading.Thread(target=self._run, args=(load,), name=f"orc-llama-steps-{name}", daemon=True)
        self._thread.start()

    def wait_ready(self) -> Any:
        """Blocking: the loaded `Llama` once the context is made; raises what loading raised."""
        return self._ready.result()

    def _setup(self, llm: Any) -> None:
        """On the step thread: the batched context, its batch, and the probe."""
        native = self._native
        self._llm = llm
        self._vocab = llm._model.vocab
        llm._ctx.close()  # the Llama's own context: this loop makes the one it uses
        params = native.llama_context_default_params()
        params.n_ctx = self._n_ctx * self._slots
        params.n_batch = params.n_ubatch = self._capacity
        params.n_seq_max = self._slots
        # One KV stream a sequence: its cells are laid out as if it ran alone, so its attention
        # adds the same numbers in the same order whatever else is in the cache.
        params.kv_unified = False
        # As llama-cpp-python's Llama (flash_attn=False): its results are the reference.
        params.flash_attn_type = native.LLAMA_FLASH_ATTN_TYPE_DISABLED
        params.n_threads = params.n_threads_batch = self._n_threads
        self._ctx = native.llama_init_from_model(llm._model.model, params)
        if not self._ctx:
            raise ModelLoadError(f"llama.cpp could not make a context of {self._slots} x {self._n_ctx} tokens")
        self._memory = native.llama_get_memory(self._ctx)
        self._batch = native.llama_batch_init(self._capacity, 0, 1)
        self._n_vocab = native.llama_vocab_n_tokens(self._vocab)
        try:
            self._probe()
        except BaseException:
            native.llama_batch_free(self._batch)
            native.llama_free(self._ctx)
            raise

    # -- the caller's side ------------------------------------------------------------------

    def submit(self, request: Request) -> None:
        """Queue a request; it is admitted at the next step with a free slot."""
        with self._cond:
            if len(self._waiting) >= MAX_WAITING:
                request.send(WorkerFailed(GenerationError(
                    f"model {request.model_id!r}: {MAX_WAITING} generations already wait for it; try again later")))
                return
            self._waiting.append(request)
            self._cond.notify()

    def set_threads(self, threads: int) -> None:
        """Decode with `threads` CPU threads (1 to the loop's own n_threads) from the next step
        on; ignored when this model's results would change with them (`_probe_threads`)."""
        self._threads_wanted = max(1, min(threads, self._n_threads))

    @property
    def threads(self) -> int:
        """The CPU threads the last decode step ran with."""
        return self._threads_now

    def close(self) -> None:
        """Stop once every running and waiting generation has ended."""
        with self._cond:
            self.closing = True
            self._cond.notify()

    def join(self) -> None:
        self._thread.join()

    # -- the loop ---------------------------------------------------------------------------

    def _run(self, load: Callable[[], Any]) -> None:
        llm = None
        try:
            llm = load()
            self._setup(llm)
        except BaseException as exc:  # noqa: BLE001 - thread boundary: the loader re-raises it
            if llm is not None:
                llm.close()
            with self._cond:
                self.closing = True
            self._ready.set_exception(exc)
            return
        self._ready.set_result(llm)
        try:
            while self._step():
                pass
        finally:
            for seq in self._running.values():
                self._native.llama_sampler_free(seq.sampler)
            self._native.llama_batch_free(self._batch)
            self._native.llama_free(self._ctx)

    def _step(self) -> bool:
        """One step; False once closed with nothing left to do."""
        with self._cond:
            while not self._waiting and not self._running and not self.closing:
                self._cond.wait()
            if self.closing and not self._waiting and not self._running:
                return False
        try:
            wanted = self._threads_wanted
            if wanted != self._threads_now and self.thread_invariant:
                self._native.llama_set_n_threads(self._ctx, wanted, wanted)
                self._threads_now = wanted
            for seq in [s for s in self._running.values() if s.request.cancel.is_set()]:
                self._release(seq)
            self._admit_waiting()
            reading = next((s for s in self._running.values() if s.read < len(s.request.prompt)), None)
            if reading is not None:
                self._read_chunk(reading)
            self._decode_step()
        except Exception as exc:  # noqa: BLE001 - thread boundary: every failure goes to the consumers
            self._fail_all(GenerationError(f"generation failed inside llama.cpp: {exc}"))
        return True

    def _admit_waiting(self) -> None:
        while True:
            free = [slot for slot in range(self._slots) if slot not in self._running]
            with self._cond:
                if not free or not self._waiting or len(self._running) >= self.exact_rows:
                    return
                request = self._waiting.popleft()
            if request.cancel.is_set():
                continue
            try:
                budget = generation_budget(len(request.prompt), request.params.max_tokens, self._n_ctx)
            except PromptTooLong:
                request.send(WorkerFailed(GenerationError(
                    f"model {request.model_id!r}: the prompt ({len(request.prompt)} tokens) with room for an answer "
                    f"{DOES_NOT_FIT} of {self._n_ctx} tokens; shorten the input")))
                continue
            block = None if self.min_tail is not None else self._chunk
            place = admit(request.prompt, free, self._cached, self._last_used, block=block,
                          min_tail=self.min_tail or 1)
            assert place is not None
            reuse = place.reuse if place.source is not None else 0
            if place.source is not None and place.source != place.slot and reuse > 0:
                # Across KV streams llama.cpp copies only whole streams; the copy is cut back
                # to the shared prefix right after.
                self._native.llama_memory_seq_cp(self._memory, place.source, place.slot, -1, -1)
            if reuse == 0 or not self._native.llama_memory_seq_rm(self._memory, place.slot, reuse, -1):
                self._native.llama_memory_seq_rm(self._memory, place.slot, -1, -1)
                reuse = 0
            self._cached[place.slot] = list(request.prompt[:reuse])
            self.reused_tokens += reuse
            self._running[place.slot] = _Sequence(
                request=request, slot=place.slot, budget=budget, sampler=self._sampler(request.params), read=reuse,
                scanner=StopScanner(request.stops), batcher=TokenBatcher(request.send))

    def _read_chunk(self, seq: _Sequence) -> None:
        prompt = seq.request.prompt
        start, stop = prompt_chunks(seq.read, len(prompt), self._chunk)[0]
        last = stop == len(prompt)
        self._decode([(prompt[i], i, seq.slot, last and i == stop - 1) for i in range(start, stop)])
        seq.read = stop
        self._cached[seq.slot].extend(prompt[start:stop])
        if last:
            self._take(seq, self._native.llama_sampler_sample(seq.sampler, self._ctx, stop - start - 1))

    def _decode_step(self) -> None:
        feeding = [s for s in self._running.values() if s.pending is not None]
        if not feeding:
            return
        self._decode([(s.pending, len(self._cached[s.slot]), s.slot, True) for s in feeding])
        for row, seq in enumerate(feeding):
            assert seq.pending is not None
            self._cached[seq.slot].append(seq.pending)
            seq.pending = None
            self._take(seq, self._native.llama_sampler_sample(seq.sampler, self._ctx, row))

    def _decode(self, rows: list[tuple[int, int, int, bool]]) -> None:
        """One llama_decode of (token, position, sequence, wants logits) rows, checked first."""
        native, batch = self._native, self._batch
        if not 0 < len(rows) <= self._capacity:
            raise GenerationError(f"a decode call of {len(rows)} tokens (the batch holds {self._capacity})")
        for i, (token, pos, slot, logits) in enumerate(rows):
            if not (0 <= pos < self._n_ctx and 0 <= slot < self._slots and 0 <= token < self._n_vocab):
                raise GenerationError(f"token {token} at position {pos} of sequence {slot} is out of bounds")
            batch.token[i], batch.pos[i], batch.n_seq_id[i], batch.logits[i] = token, pos, 1, logits
            batch.seq_id[i][0] = slot
        batch.n_tokens = len(rows)
        code = native.llama_decode(self._ctx, batch)
        if code != 0:
            raise GenerationError(f"llama_decode returned {code}")

    def _take(self, seq: _Sequence, token: int) -> None:
        """Handle a sampled token: end the sequence or queue the token for the next step."""
        if self._native.llama_vocab_is_eog(self._vocab, token):
            seq.batcher.add(seq.decoder.decode(b"", final=True) + seq.scanner.flush())
            self._finish(seq, "stop")
            return
        seq.generated += 1
        safe, hit = seq.scanner.feed(seq.decoder.decode(self._llm.detokenize([token])))
        seq.batcher.add(safe)
        if hit:
            self._finish(seq, "stop")
        elif seq.generated >= seq.budget:
            seq.batcher.add(seq.decoder.decode(b"", final=True) + seq.scanner.flush())
            self._finish(seq, "length")
        else:
            seq.pending = token

    def _finish(self, seq: _Sequence, reason: str) -> None:
        seq.batcher.flush()
        seq.request.send(GenerationDone(
            text=seq.batcher.text,
            usage=Usage(prompt_tokens=len(seq.request.prompt), completion_tokens=seq.generated),
            finish_reason=reason))
        self._release(seq)

    def _release(self, seq: _Sequence) -> None:
        """Give the slot back; its cache stays as prefix cache for later prompts."""
        self._native.llama_sampler_free(seq.sampler)
        del self._running[seq.slot]
        self._last_used[seq.slot] = next(self._clock)

    def _fail_all(self, error: GenerationError) -> None:
        for seq in list(self._running.values()):
            seq.request.send(WorkerFailed(error))
            self._release(seq)
        self._native.llama_memory_clear(self._memory, True)
        self._cached = {slot: [] for slot in range(self._slots)}

    def _sampler(self, params: GenerationParams) -> Any:
        """A sampler chain as llama-cpp-python's `Llama._init_sampler` makes for these settings
        (repeat penalty over the last 64 sampled tokens, then greedy, or top-k, typical, top-p,
        min-p, temperature and a seeded draw)."""
        native = self._native
        chain = native.llama_sampler_chain_init(native.llama_sampler_chain_default_params())
        links = [native.llama_sampler_init_penalties(self._n_vocab, _PENALTY_LAST_N, REPEAT_PENALTY, 0.0, 0.0)]
        if params.temperature == 0:
            links.append(native.llama_sampler_init_greedy())
        else:
            # llama.cpp's default seed draws one from the system's random source.
            seed = native.LLAMA_DEFAULT_SEED if params.seed is None else params.seed
            links += [native.llama_sampler_init_top_k(_TOP_K),
                      native.llama_sampler_init_typical(_TYPICAL_P, 1),
                      native.llama_sampler_init_top_p(_TOP_P if params.top_p is None else params.top_p, 1),
                      native.llama_sampler_init_min_p(_MIN_P, 1),
                      native.llama_sampler_init_temp(params.temperature),
                      native.llama_sampler_init_dist(seed)]
        for link in links:
            native.llama_sampler_chain_add(chain, link)
        return chain

    def _probe(self) -> None:
        """Set min_tail, exact_rows and thread_invariant: from the probe cache when it has this
        model, build, CPU and loop's answers, else by probing (and keeping the answers)."""
        key = None
        if self._probe_cache is not None:
            key = probe_key(**self._identity, **machine_facts(self._native), slots=self._slots, n_ctx=self._n_ctx,
                            n_threads=self._n_threads, chunk=self._chunk)
            found = self._probe_cache.get(key, slots=self._slots, chunk=self._chunk)
            if found is not None:
                self.min_tail, self.exact_rows, self.thread_invariant = found.min_tail, found.exact_rows, found.thread_invariant
                return
        self.min_tail = self._probe_min_tail()
        self.exact_rows = self._probe_exact_rows()
        self.thread_invariant = self._probe_threads()
        self.probed = True
        if self._probe_cache is not None and key is not None:
            self._probe_cache.put(key, ProbeResult(self.min_tail, self.exact_rows, self.thread_invariant))

    def _probe_exact_rows(self) -> int:
        """How many sequences can share a decode call with each row's logits bit-identical to
        the row decoded alone, for this model on this CPU (1 to `slots`).

        Some kernels treat rows in groups (llama.cpp's repacked Q4_K handles four at a time),
        so a sequence's next token could depend on how many others decode with it. The probe
        reads a fixed text into sequence 0, copies that stream to every slot, then decodes
        one token of k sequences together, k = 1, 2, ..., each with a different token but row
        0 always the same, and compares row 0 with k = 1. The step loop never runs more
        sequences together than the largest k that matched, so batched greedy output stays
        the output of the sequence alone.
        """
        native = self._native
        tokens = self._llm.tokenize(_PROBE.encode("utf-8"), add_bos=True)[: self._chunk]
        n = len(tokens)
        if self._slots == 1 or n < 2 or n + 1 >= self._n_ctx:
            return 1
        native.llama_memory_clear(self._memory, True)
        self._decode([(tokens[i], i, 0, False) for i in range(n)])
        for slot in range(1, self._slots):
            native.llama_memory_seq_cp(self._memory, 0, slot, -1, -1)
        size = self._n_vocab * ctypes.sizeof(ctypes.c_float)
        alone = None
        exact = 1
        try:
            for k in range(1, self._slots + 1):
                for slot in range(k):
                    native.llama_memory_seq_rm(self._memory, slot, n, -1)
                self._decode([((tokens[-1] + slot) % self._n_vocab, n, slot, True) for slot in range(k)])
                row0 = ctypes.string_at(native.llama_get_logits_ith(self._ctx, 0), size)
                if alone is None:
                    alone = row0
                elif row0 != alone:
                    break
                exact = k
        finally:
            native.llama_memory_clear(self._memory, True)
        return exact

    def _probe_threads(self) -> bool:
        """Whether this model gives bit-identical logits, on this CPU, with every thread count
        a share of the loop's n_threads can be (n_threads // k, k = 1..n_threads): a prompt read
        in one call and one more token, compared with what n_threads gave. Only then does
        `set_threads` take effect, so a generation's text never depends on what other runners
        of the node are doing."""
        native = self._native
        tokens = self._llm.tokenize(_PROBE.encode("utf-8"), add_bos=True)[: self._chunk]
        n = len(tokens)
        counts = sorted({self._n_threads // k for k in range(1, self._n_threads + 1)} - {self._n_threads})
        if not counts or n < 2 or n + 1 >= self._n_ctx:
            return not counts
        size = self._n_vocab * ctypes.sizeof(ctypes.c_float)

        def logits(threads: int) -> tuple[bytes, bytes]:
            native.llama_set_n_threads(self._ctx, threads, threads)
            native.llama_memory_clear(self._memory, True)
            self._decode([(tokens[i], i, 0, i == n - 1) for i in range(n)])
            prompt = ctypes.string_at(native.llama_get_logits_ith(self._ctx, n - 1), size)
            self._decode([(tokens[-1], n, 0, True)])
            return prompt, ctypes.string_at(native.llama_get_logits_ith(self._ctx, 0), size)

        try:
            reference = logits(self._n_threads)
            return all(logits(threads) == reference for threads in counts)
        finally:
            native.llama_set_n_threads(self._ctx, self._n_threads, self._n_threads)
            native.llama_memory_clear(self._memory, True)

    def _probe_min_tail(self) -> int | None:
        """The fewest prompt tokens a decode call must hold for this model, on this CPU, to
        give bit-identical logits however the prompt is split; None when no split is safe.

        A reused prefix leaves at least that many prompt tokens to read (`reusable_prefix`);
        with None it ends only on a chunk boundary, so the rest is read in the decode calls it
        would be without reuse. Measured on a fixed text read whole, then with its last 1, 2
        and 3 tokens in a call of their own, then in calls of 5: SmolLM2 Q4_1 on x86 gives 2
        (a one-token call takes another attention kernel), Gemma-3 Q4_K_M None.
        """
        tokens = self._llm.tokenize(_PROBE.encode("utf-8"), add_bos=True)[: self._chunk]
        n = len(tokens)
        if n < 8 or n >= self._n_ctx:
            return None
        splits = [[(0, n)], *([(0, n - k), (n - k, n)] for k in (1, 2, 3)), [(a, min(a + 5, n)) for a in range(0, n, 5)]]
        results = []
        for cuts in splits:
            self._native.llama_memory_seq_rm(self._memory, 0, -1, -1)
            for a, b in cuts:
                self._decode([(tokens[i], i, 0, i == n - 1) for i in range(a, b)])
            logits = self._native.llama_get_logits_ith(self._ctx, cuts[-1][1] - cuts[-1][0] - 1)
            results.append(ctypes.string_at(logits, self._n_vocab * ctypes.sizeof(ctypes.c_float)))
        self._native.llama_memory_clear(self._memory, True)
        whole, one, two, three, fives = results
        if not (whole == two == three == fives):
            return None
        return 1 if whole == one else 2
