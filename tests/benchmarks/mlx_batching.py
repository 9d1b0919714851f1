"""Whether mlx-lm's batch generation would pay in orc's MLX runner: the same greedy generations
one at a time and together, their tokens compared and their times measured.

    .venv/bin/python -m tests.benchmarks.mlx_batching            # print the section
    .venv/bin/python -m tests.benchmarks.mlx_batching --write    # and put it into docs/benchmarks.md

SmolLM2 converted to MLX (`Catalog.convert`, as `orc models convert --to mlx` does), three chat
prompts of different lengths, greedy, TOKENS tokens each, through mlx-lm's own
`batch_generate` (its `BatchGenerator`: prompts left-padded to one length, one decode step for
every sequence): each prompt alone, then the three together, in one process after a warm-up.
orc's MLX runner serves one generation at a time (capacity 1; docs/runtimes.md says why); this
is the measurement behind that choice. Needs mlx and mlx-lm (the `mlx` extra).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

from tests.benchmarks.run import REPO, Row, load_note, publish_section, standalone_section

TITLE = "MLX: mlx-lm's batch generation vs one at a time"
TOKENS = 16
PROMPTS = ("Name three colors.", "Write a short poem about the sea and the wind.", "What is two plus two?")


def measure() -> dict:
    from mlx_lm import load
    from mlx_lm.generate import batch_generate

    from orc.node.models.catalog import DEFAULT_MODEL_ID, Catalog

    with tempfile.TemporaryDirectory() as home:
        entry = Catalog(Path(home) / "models").convert(DEFAULT_MODEL_ID, to="mlx").entry
        model, tokenizer = load(str(entry.path))
        prompts = [tokenizer.apply_chat_template([{"role": "user", "content": p}], add_generation_prompt=True)
                   for p in PROMPTS]

        def run(batch: list[list[int]]) -> list[list[int]]:
            return batch_generate(model, tokenizer, batch, max_tokens=TOKENS, return_token_ids=True).token_ids

        run(prompts[:1])  # warm-up
        began = time.perf_counter()
        alone = [run([p])[0] for p in prompts]
        alone_s = time.perf_counter() - began
        began = time.perf_counter()
        together = run(prompts)
        together_s = time.perf_counter() - began
    return {"alone_s": alone_s, "together_s": together_s, "tokens": sum(len(t) for t in together),
            "same": sum(a == b for a, b in zip(alone, together, strict=True)), "compared": len(prompts)}


def bench_mlx_batching() -> tuple[list[Row], str]:
    load_before = os.getloadavg()[0]
    found = measure()
    rows = [
        Row(f"{len(PROMPTS)} greedy generations one at a time", f"{found['alone_s']:.1f} s",
            f"{found['tokens']} tokens in all; each prompt alone through `batch_generate`"),
        Row(f"the same {len(PROMPTS)} decoded together", f"{found['together_s']:.1f} s",
            "one `batch_generate` call; prompts left-padded to one length"),
        Row("**together / one at a time, throughput**", f"**{found['alone_s'] / found['together_s']:.2f}×**",
            f"tokens identical in {found['same']} of {found['compared']} generations"),
    ]
    import mlx.core as mx

    note = (f"SmolLM2-135M-Instruct converted to MLX, greedy, {TOKENS} tokens a prompt, mlx {mx.__version__} on "
            f"{mx.default_device()}: on this machine MLX runs on its CPU backend, where a batch costs its sequences' "
            f"time added up, so there is nothing to gain; on Apple silicon's GPU, where a step is bound by reading "
            f"the weights, it should gain, and whether its batched kernels give each sequence the numbers it gets "
            f"alone there cannot be checked here. "
            f"{load_note(load_before)}")
    return rows, note


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--write", action="store_true", help="put the section into --out")
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "benchmarks.md")
    args = parser.parse_args(argv)
    publish_section(TITLE, standalone_section(TITLE, *bench_mlx_batching()), args.out if args.write else None)
    return 0


if __name__ == "__main__":
    sys.exit(main())
