"""Two models generating at once on one node: the node's cores shared among its runners, or not.

    .venv/bin/python -m tests.benchmarks.cpu_share            # print the section
    .venv/bin/python -m tests.benchmarks.cpu_share --write    # and put it into docs/benchmarks.md

(run.py includes it unless --skip-cpu-share.) SmolLM2-135M and Gemma-3-270M, each in its runner
process (`RunnerRuntime`, as a node runs them), greedy, TOKENS-token generations. Two sides, each
with its own two runners: "shared" gives the runners generating at once an even share of THREADS
cores (`CpuShare`, what a node does); "unshared" lets each runner compute with all THREADS
threads all the time (what a node did before). Each round, on each side: SmolLM2 alone, Gemma
alone, then both at once; the rounds alternate which side goes first. A model's rate is its
tokens over its own generation's time; "together" is both models' tokens over the wall time
until both are done. The texts generated together are compared with the same model's text
alone: sharing the cores must not change them.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from tests.benchmarks.run import THREADS, Row, load_note, rounds_main, standalone_section

TITLE = "Two models at once on one node: cores shared among runners vs not"
TOKENS = 96
MODELS = ("smollm2-135m-instruct", "gemma3-270m")


def _request(round_: int, model_index: int) -> tuple[list, object]:
    from orc.node.models.runtimes.base import ChatMessage, GenerationParams

    # Gemma-3-270M is a base model here (a plain transcript): asked for an essay it writes on,
    # where asked for a story it stops after a line; SmolLM2 writes on either way.
    topics = ("bread", "the compass", "paper", "the printing press", "glass", "the clock", "ink", "the bicycle")
    topic = topics[(round_ * 2 + model_index) % len(topics)]
    return ([ChatMessage("user", f"Write a detailed 1000-word essay about the history of {topic}.")],
            GenerationParams(temperature=0, max_tokens=TOKENS, seed=1))


async def _one(runtime: object, model: object, request: tuple[list, object]) -> tuple[str, int, float]:
    """Text, completion tokens and seconds of one generation."""
    from orc.node.models.runtimes.base import GenerationDone

    began = time.perf_counter()
    async for event in runtime.generate(model, *request):  # type: ignore[attr-defined]
        if isinstance(event, GenerationDone):
            return event.text, event.usage.completion_tokens, time.perf_counter() - began
    raise RuntimeError("no GenerationDone")


async def _measure(rounds: int, threads: int) -> dict:
    from orc.node.models.catalog import Catalog
    from orc.node.models.runners import RunnerRuntime, RunnerSettings
    from orc.node.models.runners.cpu_share import CpuShare

    with tempfile.TemporaryDirectory() as home:
        catalog = Catalog(Path(home) / "models")
        models = [catalog.prepare(model_id) for model_id in MODELS]
        settings = RunnerSettings(threads=threads, slots=1)
        sides = {"shared": RunnerRuntime("llama_cpp", settings, share=CpuShare(cores=threads)),
                 "unshared": RunnerRuntime("llama_cpp", settings)}
        results: dict = {side: {"alone": [[], []], "together": [[], []], "total": []} for side in sides}
        results.update(same=0, compared=0, short=[])
        try:
            for runtime in sides.values():
                for i, model in enumerate(models):
                    await _one(runtime, model, _request(-1, i))  # loads, and warms the page cache
            for round_ in range(rounds):
                order = list(sides) if round_ % 2 == 0 else list(reversed(sides))
                for side in order:
                    runtime, into = sides[side], results[side]
                    alone = []
                    for i, model in enumerate(models):
                        text, tokens, seconds = await _one(runtime, model, _request(round_, i))
                        into["alone"][i].append(tokens / seconds)
                        alone.append(text)
                    began = time.perf_counter()
                    done = await asyncio.gather(*(_one(runtime, model, _request(round_, i))
                                                  for i, model in enumerate(models)))
                    wall = time.perf_counter() - began
                    for i, (text, tokens, seconds) in enumerate(done):
                        if tokens < TOKENS:
                            results["short"].append(f"{MODELS[i]} {tokens}")
                        into["together"][i].append(tokens / seconds)
                        results["compared"] += 1
                        results["same"] += text == alone[i]
                    into["total"].append(sum(tokens for _, tokens, _ in done) / wall)
        finally:
            for runtime in sides.values():
                await runtime.close()
    return results


def bench_cpu_share(rounds: int = 3, threads: int = THREADS) -> tuple[list[Row], str]:
    load_before = os.getloadavg()[0]
    results = asyncio.run(_measure(rounds, threads))
    rows = []
    for i, model_id in enumerate(MODELS):
        alone = {side: statistics.median(results[side]["alone"][i]) for side in ("shared", "unshared")}
        together = {side: statistics.median(results[side]["together"][i]) for side in ("shared", "unshared")}
        rows.append(Row(f"{model_id} alone: shared / unshared",
                        f"{alone['shared']:.1f} / {alone['unshared']:.1f} tokens/s",
                        f"median of {rounds}; alone, a runner gets every core either way"))
        rows.append(Row(f"{model_id} while the other generates: shared / unshared",
                        f"{together['shared']:.1f} / {together['unshared']:.1f} tokens/s",
                        f"median of {rounds}; its own generation's time"))
    total = {side: statistics.median(results[side]["total"]) for side in ("shared", "unshared")}
    ratio = statistics.median(s / u for s, u in zip(results["shared"]["total"], results["unshared"]["total"]))
    rows.append(Row("**both at once, tokens of both over the wall time: shared / unshared**",
                    f"**{total['shared']:.1f} / {total['unshared']:.1f} tokens/s, {ratio:.2f}×**",
                    f"median of {rounds}; ratio: median of the rounds' ratios; above 1 means sharing is faster"))
    note = (f"{' and '.join(MODELS)} in runner processes, {threads} threads a runner, greedy, {TOKENS}-token "
            f"generations. Shared: the node's {threads} cores split evenly among the runners generating at the "
            f"time (`orc.node.models.runners.cpu_share`), so each of the two computes with {max(1, threads // 2)} "
            f"thread(s) while both generate and with {threads} alone; unshared: each always with {threads}. "
            f"Generations together that ended before {TOKENS} tokens (the other then ran alone for the rest): "
            f"{', '.join(results['short']) or 'none'}. "
            f"Texts generated together identical to the same model's text alone in {results['same']} of "
            f"{results['compared']} generations. {load_note(load_before)}")
    return rows, note


def section(rounds: int = 3, threads: int = THREADS) -> str:
    return standalone_section(TITLE, *bench_cpu_share(rounds, threads))


def main(argv: list[str] | None = None) -> int:
    return rounds_main(argv, __doc__, TITLE, section, "the node's cores, and each runner's threads")


if __name__ == "__main__":
    sys.exit(main())
