"""What batching gives with other quantizations of the same model, and what they cost in quality.

    .venv/bin/python -m tests.benchmarks.quantization            # print the section
    .venv/bin/python -m tests.benchmarks.quantization --write    # and put it into docs/benchmarks.md

(run.py includes it unless --skip-quantization.) The embedded SmolLM2-135M-Instruct is a Q4_1
GGUF, whose llama.cpp kernels redo the whole dot product for every row of a decode call on an
x86 CPU without AMX, so batching gains little with it (docs/runtimes.md, "Why batching gives
less than 2x"). This benchmark requantizes that file with llama.cpp's own quantizer
(`llama_model_quantize`, requantizing allowed: no other copy of the weights is available here)
into Q4_0, whose blocks llama.cpp repacks for AVX2 and multiplies several rows at a time, and
Q8_0, which keeps every Q4_1 value to within a 254th of its block's largest; then, for each of
the three files: perplexity on a fixed text (the 300 prompts of the evaluation set, read in
512-token windows), and the batching measurement of tests.benchmarks.batching (N parallel
64-token generations, batched in one runtime with 4 slots vs one at a time, each side in a
process of its own, the sides alternating).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tests.benchmarks import batching
from tests.benchmarks.run import REPO, THREADS, Row, load_note, rounds_main, standalone_section

TITLE = "Batching and quality by quantization"
# (name, llama.cpp file type), the embedded file first (None: used as it is).
VARIANTS: tuple[tuple[str, str | None], ...] = (("Q4_1", None), ("Q4_0", "LLAMA_FTYPE_MOSTLY_Q4_0"),
                                                ("Q8_0", "LLAMA_FTYPE_MOSTLY_Q8_0"))
WINDOW = 512
TEXT = REPO / "tests" / "benchmarks" / "eval" / "tasks.jsonl"


def _embedded_gguf(home: Path) -> Path:
    from orc.node.models.catalog import DEFAULT_MODEL_ID, Catalog

    return Catalog(home / "models").prepare(DEFAULT_MODEL_ID).path


def _quantize(source: Path, target: Path, ftype: str, threads: int) -> None:
    """Requantize `source` into `target` (runs in a process of its own: `--quantize`)."""
    import ctypes

    import llama_cpp

    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = getattr(llama_cpp, ftype)
    params.allow_requantize = True
    params.nthread = threads
    code = llama_cpp.llama_model_quantize(str(source).encode(), str(target).encode(), ctypes.byref(params))
    if code != 0 or not target.is_file():
        raise RuntimeError(f"llama_model_quantize returned {code} for {ftype}")


def fixed_text() -> str:
    return "\n".join(json.loads(line)["prompt"] for line in TEXT.read_text().splitlines() if line.strip())


def _perplexity(path: Path, threads: int) -> dict:
    """exp(mean negative log-likelihood) of every token of `fixed_text()` after the first of its
    window, read in windows of WINDOW tokens (runs in a process of its own: `--perplexity`)."""
    import llama_cpp
    import numpy as np

    llm = llama_cpp.Llama(str(path), n_threads=threads, n_ctx=WINDOW + 1, n_batch=WINDOW + 1, logits_all=True,
                          verbose=False)
    tokens = llm.tokenize(fixed_text().encode())
    nll, counted = 0.0, 0
    for start in range(0, len(tokens) - 1, WINDOW):
        window = tokens[start:start + WINDOW + 1]
        llm.reset()
        llm.eval(window[:-1])
        logits = np.asarray(llm.scores[:len(window) - 1], dtype=np.float64)
        logits -= logits.max(axis=1, keepdims=True)
        log_probs = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
        nll -= float(log_probs[np.arange(len(window) - 1), window[1:]].sum())
        counted += len(window) - 1
    return {"perplexity": math.exp(nll / counted), "tokens": counted}


STEP_REPEATS = 40


def _steps(path: Path, threads: int) -> dict:
    """Milliseconds of one llama_decode (medians of STEP_REPEATS, the first 5 dropped) of 1 and of
    SLOTS rows: as orc's step loop lays them out (one sequence a row, each in a KV stream of its
    own, n_ctx 2048 a stream) and as SLOTS tokens of one sequence, which is the weights' kernels
    alone (runs in a process of its own: `--steps`)."""
    import llama_cpp

    llm = llama_cpp.Llama(str(path), n_threads=threads, n_ctx=512, n_batch=512, verbose=False)
    prompt = llm.tokenize(fixed_text()[:400].encode())
    llm.eval(prompt)
    one_sequence = {}
    for k in (1, batching.SLOTS):
        times = []
        for repeat in range(STEP_REPEATS):
            llm.n_tokens = len(prompt)  # Llama.eval removes the cache past n_tokens first
            began = time.perf_counter()
            llm.eval([prompt[(i + repeat) % len(prompt)] for i in range(k)])
            times.append(time.perf_counter() - began)
        one_sequence[k] = statistics.median(times[5:]) * 1000

    native, slots = llama_cpp, batching.SLOTS
    llm._ctx.close()
    params = native.llama_context_default_params()
    params.n_ctx, params.n_batch, params.n_ubatch, params.n_seq_max = 2048 * slots, 512, 512, slots
    params.kv_unified = False
    params.flash_attn_type = native.LLAMA_FLASH_ATTN_TYPE_DISABLED
    params.n_threads = params.n_threads_batch = threads
    ctx = native.llama_init_from_model(llm._model.model, params)
    memory = native.llama_get_memory(ctx)
    batch = native.llama_batch_init(512, 0, 1)

    def decode(rows: list[tuple[int, int, int]]) -> None:
        for i, (token, pos, seq) in enumerate(rows):
            batch.token[i], batch.pos[i], batch.n_seq_id[i], batch.logits[i] = token, pos, 1, True
            batch.seq_id[i][0] = seq
        batch.n_tokens = len(rows)
        if native.llama_decode(ctx, batch) != 0:
            raise RuntimeError("llama_decode failed")

    try:
        for seq in range(slots):
            decode([(token, pos, seq) for pos, token in enumerate(prompt)])
        streams = {}
        for k in (1, slots):
            times = []
            for repeat in range(STEP_REPEATS):
                for seq in range(k):
                    native.llama_memory_seq_rm(memory, seq, len(prompt), -1)
                began = time.perf_counter()
                decode([(prompt[(seq + repeat) % len(prompt)], len(prompt), seq) for seq in range(k)])
                times.append(time.perf_counter() - began)
            streams[k] = statistics.median(times[5:]) * 1000
    finally:
        native.llama_batch_free(batch)
        native.llama_free(ctx)
    return {"one_sequence": one_sequence, "streams": streams}


def _child(*args: str) -> dict:
    done = subprocess.run([sys.executable, "-m", "tests.benchmarks.quantization", *args], cwd=REPO,
                          capture_output=True, text=True, timeout=900, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"`{' '.join(args)}` failed: {done.stderr[-800:]}")
    return json.loads(done.stdout.splitlines()[-1])


def bench_quantization(rounds: int = 3, threads: int = THREADS) -> tuple[list[Row], str]:
    load_before = os.getloadavg()[0]
    rows: list[Row] = []
    found = []
    with tempfile.TemporaryDirectory() as scratch:
        source = _embedded_gguf(Path(scratch) / "home")
        for name, ftype in VARIANTS:
            path = source
            if ftype is not None:
                path = Path(scratch) / f"smollm2-{name.lower()}.gguf"
                _child("--quantize", str(source), str(path), ftype, "--threads", str(threads))
            quality = _child("--perplexity", str(path), "--threads", str(threads))
            steps = _child("--steps", str(path), "--threads", str(threads))
            results = batching._measure(rounds, threads, path)
            found.append((name, path.stat().st_size, quality, steps, results))
    reference = found[0][2]["perplexity"]
    for name, size, quality, steps, results in found:
        n = batching.SLOTS
        batched, single = statistics.median(results["batched"][n]), statistics.median(results["single"][n])
        ratio = statistics.median(b / s for b, s in zip(results["batched"][n], results["single"][n]))
        alone = statistics.median(results["single"][1])
        label = f"{name} (embedded)" if name == VARIANTS[0][0] else f"{name} (from the Q4_1)"
        rows.append(Row(f"**{label}: {n} parallel generations, batched / one at a time**",
                        f"**{batched:.0f} / {single:.0f} tokens/s, {ratio:.2f}×**",
                        f"medians of {rounds} rounds; one generation alone {alone:.0f} tokens/s; batched and "
                        f"one-at-a-time texts identical in {results['same']} of {results['compared']}; every "
                        f"generation ran its {batching.TOKENS} tokens: {'yes' if results['tokens_ok'] else 'NO'}"))
        rows.append(Row(f"{label}: perplexity, file", f"{quality['perplexity']:.2f}, {size / 2**20:.1f} MiB",
                        f"{quality['tokens']} tokens; {quality['perplexity'] / reference:.2f}× the Q4_1's"))
        n, one, streams = str(batching.SLOTS), steps["one_sequence"], steps["streams"]
        rows.append(Row(f"{label}: one decode call of 1 / {n} rows",
                        f"{streams['1']:.1f} / {streams[n]:.1f} ms in KV streams, {one['1']:.1f} / {one[n]:.1f} ms "
                        f"in one sequence",
                        f"at most {int(n) * streams['1'] / streams[n]:.2f}× from batching as orc lays rows out "
                        f"(one KV stream a sequence), {int(n) * one['1'] / one[n]:.2f}× as {n} tokens of one sequence; "
                        f"medians of {STEP_REPEATS - 5}"))
    note = (f"SmolLM2-135M-Instruct, {threads} threads, greedy; the Q4_0 and Q8_0 files are made from the embedded "
            f"Q4_1 by llama.cpp's quantizer (requantized: each inherits the Q4_1's rounding and adds its own). "
            f"Perplexity: the {len(fixed_text().splitlines())} prompts of tests/benchmarks/eval/tasks.jsonl, read "
            f"in windows of {WINDOW} tokens; lower is better. Batching: as in \"{batching.TITLE}\" "
            f"({batching.SLOTS} slots, each side of a round in a fresh process). {load_note(load_before)}")
    return rows, note


def section(rounds: int = 3, threads: int = THREADS) -> str:
    return standalone_section(TITLE, *bench_quantization(rounds, threads))


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] in ("--quantize", "--perplexity", "--steps"):  # the children of bench_quantization
        parser = argparse.ArgumentParser()
        parser.add_argument("--quantize", nargs=3, metavar=("SOURCE", "TARGET", "FTYPE"))
        parser.add_argument("--perplexity", type=Path)
        parser.add_argument("--steps", type=Path)
        parser.add_argument("--threads", type=int, default=THREADS)
        child = parser.parse_args(args)
        if child.quantize:
            source, target, ftype = child.quantize
            _quantize(Path(source), Path(target), ftype, child.threads)
            print(json.dumps({"made": target}))
        elif child.steps:
            print(json.dumps(_steps(child.steps, child.threads)))
        else:
            print(json.dumps(_perplexity(child.perplexity, child.threads)))
        return 0
    return rounds_main(args, __doc__, TITLE, section, "llama.cpp threads")


if __name__ == "__main__":
    sys.exit(main())
