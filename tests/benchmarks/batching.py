"""Parallel generations on one node: batched (BatchedLlamaRuntime, 4 slots) vs one at a time.

    .venv/bin/python -m tests.benchmarks.batching            # print the section
    .venv/bin/python -m tests.benchmarks.batching --write    # and put it into docs/benchmarks.md

(run.py includes it unless --skip-batching.) SmolLM2, 2 threads, greedy, 64-token generations
(end-of-text ignored is not possible through the runtime, so the prompts ask for long answers
and every generation is checked to have run its 64 tokens). For N = 1..4 parallel generations
with different prompts, the same N generations run (a) together on a runtime with 4 slots and
(b) one after the other on a runtime with 1 slot; throughput is generated tokens over wall
time. Time to first token under load: a new generation joins while 3 others decode. Each side
is warmed up first (model loaded, every prompt read once), and the prompts of a round differ
from the warm-up so no prefix is reused; each side of a round runs in a fresh process of its
own, and rounds alternate which side goes first. The texts of both sides are compared: batching
must not change them.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tests.benchmarks.run import REPO, THREADS, Row, load_note, rounds_main, standalone_section

TITLE = "Parallel generations on one node: batched vs one at a time"
TOKENS = 64
SLOTS = 4
SUBJECTS = ("the sea", "a mountain village", "an old lighthouse", "a busy train station",
            "a winter forest", "a desert road", "a city at night", "a quiet library")


def _requests(n: int, round_: int) -> list:
    from orc.node.models.runtimes.base import ChatMessage, GenerationParams

    return [([ChatMessage("system", "You are a storyteller who writes long, detailed answers."),
              ChatMessage("user", f"Round {round_}: write a long story set in {SUBJECTS[i % len(SUBJECTS)]}.")],
             GenerationParams(temperature=0, max_tokens=TOKENS, seed=1)) for i in range(n)]


async def _one(runtime: object, model: object, messages: list, params: object) -> tuple[str, int, float]:
    """Text, completion tokens and seconds to the first chunk of one generation."""
    from orc.node.models.runtimes.base import GenerationDone

    began = time.perf_counter()
    first = None
    async for event in runtime.generate(model, messages, params):  # type: ignore[attr-defined]
        if first is None:
            first = time.perf_counter() - began
        if isinstance(event, GenerationDone):
            return event.text, event.usage.completion_tokens, first or 0.0
    raise RuntimeError("no GenerationDone")


async def _side(side: str, round_: int, threads: int, gguf: Path | None = None) -> dict:
    """One side of one round in this process: N = 1..SLOTS parallel generations, batched (and
    time to first token) or one at a time; tokens/s by N, texts, whether every one ran TOKENS.
    `gguf`: another model file than the embedded default (tests.benchmarks.quantization)."""
    from orc.node.models.catalog import DEFAULT_MODEL_ID, Catalog
    from orc.node.models.runtimes.llama_batched import BatchedLlamaRuntime

    with tempfile.TemporaryDirectory() as home:
        catalog = Catalog(Path(home) / "models")
        model = catalog.add(gguf, "measured") if gguf else catalog.prepare(DEFAULT_MODEL_ID)
        runtime = BatchedLlamaRuntime(n_threads=threads, slots=SLOTS if side == "batched" else 1)
        for messages, params in _requests(SLOTS, -1):
            await _one(runtime, model, messages, params)
        out: dict = {"rate": {}, "texts": {}, "tokens_ok": True}
        for n in range(1, SLOTS + 1):
            requests = _requests(n, round_ * 10 + n)
            began = time.perf_counter()
            if side == "batched":
                done = await asyncio.gather(*(_one(runtime, model, m, p) for m, p in requests))
            else:
                done = [await _one(runtime, model, m, p) for m, p in requests]
            elapsed = time.perf_counter() - began
            out["tokens_ok"] &= all(tokens == TOKENS for _, tokens, _ in done)
            out["rate"][n] = sum(tokens for _, tokens, _ in done) / elapsed
            out["texts"][n] = [text for text, _, _ in done]
        if side == "batched":
            # Time to first token: alone, and joining 3 generations that are decoding.
            idle = _requests(1, round_ * 10 + 7)[0]
            out["ttft_idle"] = (await _one(runtime, model, *idle))[2]
            busy = [asyncio.create_task(_one(runtime, model, m, p)) for m, p in _requests(3, round_ * 10 + 8)]
            await asyncio.sleep(0.5)
            joining = _requests(4, round_ * 10 + 9)[3]
            out["ttft_load"] = (await _one(runtime, model, *joining))[2]
            await asyncio.gather(*busy)
        await runtime.unload(model.id)
    return out


def _measure(rounds: int, threads: int, gguf: Path | None = None) -> dict:
    """Every round runs each side in a fresh process of its own, the sides taking turns: two
    llama.cpp contexts in one process disturb each other (the idle one's OpenMP threads spin
    for a while after each of its steps), which made both sides slower by turns."""
    results: dict = {"batched": {n: [] for n in range(1, SLOTS + 1)}, "single": {n: [] for n in range(1, SLOTS + 1)},
                     "same": 0, "compared": 0, "tokens_ok": True, "ttft_idle": [], "ttft_load": []}
    for round_ in range(rounds):
        sides = ("batched", "single") if round_ % 2 == 0 else ("single", "batched")
        out = {}
        for side in sides:
            done = subprocess.run([sys.executable, "-m", "tests.benchmarks.batching", "--side", side,
                                   "--round", str(round_), "--threads", str(threads),
                                   *(("--gguf", str(gguf)) if gguf else ())],
                                  cwd=REPO, capture_output=True, text=True, timeout=900, check=False)
            if done.returncode != 0:
                raise RuntimeError(f"the {side} side failed: {done.stderr[-800:]}")
            out[side] = json.loads(done.stdout.splitlines()[-1])
        for side in ("batched", "single"):
            results["tokens_ok"] &= out[side]["tokens_ok"]
            for n in range(1, SLOTS + 1):
                results[side][n].append(out[side]["rate"][str(n)])
        for n in range(1, SLOTS + 1):
            pairs = zip(out["batched"]["texts"][str(n)], out["single"]["texts"][str(n)], strict=True)
            results["compared"] += n
            results["same"] += sum(a == b for a, b in pairs)
        results["ttft_idle"].append(out["batched"]["ttft_idle"])
        results["ttft_load"].append(out["batched"]["ttft_load"])
    return results


def bench_batching(rounds: int = 3, threads: int = THREADS) -> tuple[list[Row], str]:
    """Rows for N = 1..4 and time to first token, and a note."""
    load_before = os.getloadavg()[0]
    results = _measure(rounds, threads)
    rows = []
    for n in range(1, SLOTS + 1):
        b, s = statistics.median(results["batched"][n]), statistics.median(results["single"][n])
        ratio = statistics.median(x / y for x, y in zip(results["batched"][n], results["single"][n]))
        bold = "**" if n == SLOTS else ""
        rows.append(Row(f"{bold}{n} parallel generation{'s' if n > 1 else ''}: batched / one at a time{bold}",
                        f"{bold}{b:.0f} / {s:.0f} tokens/s, {ratio:.2f}×{bold}",
                        f"{n} × {TOKENS} tokens; medians of {rounds} rounds; ratio: median of the rounds' ratios"
                        + ("; target ≥ 2×" if n > 1 else "")))
    idle, load = statistics.median(results["ttft_idle"]), statistics.median(results["ttft_load"])
    rows.append(Row("time to first token, idle / joining 3 decoding generations",
                    f"{idle * 1000:.0f} / {load * 1000:.0f} ms", f"medians of {rounds}; batched runtime, {SLOTS} slots"))
    note = (f"SmolLM2-135M-Instruct Q4_1 through `BatchedLlamaRuntime` (slots={SLOTS}) and the same runtime with "
            f"slots=1 running the generations one after the other, {threads} threads, greedy, each side of a round "
            f"in a fresh process of its own, the sides taking turns; every generation ran "
            f"its {TOKENS} tokens: {'yes' if results['tokens_ok'] else 'NO'}; batched and one-at-a-time texts "
            f"identical in {results['same']} of {results['compared']} generations. {load_note(load_before)}")
    return rows, note


def section(rounds: int = 3, threads: int = THREADS) -> str:
    return standalone_section(TITLE, *bench_batching(rounds, threads))


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if "--side" in args:  # one side of one round, as JSON on stdout (`_measure`)
        parser = argparse.ArgumentParser()
        parser.add_argument("--side", choices=("batched", "single"), required=True)
        parser.add_argument("--round", type=int, required=True)
        parser.add_argument("--threads", type=int, default=THREADS)
        parser.add_argument("--gguf", type=Path)
        side = parser.parse_args(args)
        print(json.dumps(asyncio.run(_side(side.side, side.round, side.threads, side.gguf))))
        return 0
    return rounds_main(args, __doc__, TITLE, section, "llama.cpp threads")


if __name__ == "__main__":
    sys.exit(main())
