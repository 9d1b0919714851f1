"""llama.cpp's extra buffer types on vs off: prompt and decode tokens/s, side by side.

    .venv/bin/python -m tests.benchmarks.extra_buffers            # print the section
    .venv/bin/python -m tests.benchmarks.extra_buffers --write    # and put it into docs/benchmarks.md

(run.py includes it in the whole report.) orc loads models with extra buffer types off on CPUs
with AMX (docs/runtimes.md); this measures what that costs where they can be on. Each side
loads the model through orc's `load_llama` with `extra_buffers` on or off, in its own process
(two llama.cpp contexts in one process disturb each other), with the same threads and prompt;
the two processes take turns, one generation each, over several rounds of fresh processes. A
generation reads the whole prompt in one batch (timed to the first token) and then decodes a
fixed number of greedy tokens, end-of-text or not (timed from the first token to the last), so
neither rate includes the other and every generation decodes as many tokens.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tests.benchmarks.run import REPO, THREADS, Row, publish_section, standalone_section

TITLE = "llama.cpp extra buffer types on vs off"
MODELS = ("smollm2-135m-instruct", "gemma3-270m")
ROUNDS = 3
DECODE_TOKENS = 64
PAUSE_S = 0.3
# About 250 tokens: a prompt long enough that reading it is a real batch of work.
PROMPT = (
    "Here are notes from a small office's planning meeting. The printer on the second floor jams "
    "twice a week and the service contract ends in March. Two laptops are more than six years old "
    "and their batteries last under an hour. The shared drive is nearly full; most of it holds "
    "old video recordings of training sessions that nobody has opened in two years. The Wi-Fi "
    "drops in the meeting room whenever more than ten people join a call. The backup runs every "
    "night to a disk in the same cupboard as the server, which is also where the coffee machine "
    "stands. Staff asked for a second monitor each and for a quieter place to take calls. The "
    "budget for the coming year allows one large purchase or several small ones, and the office "
    "manager would like a plan that can be explained to everyone in five minutes. Some people "
    "would rather keep the old laptops and spend the money on training; others want a new "
    "printer first. The landlord will repaint the walls in April, so any cabling has to wait "
    "until after that. "
)
QUESTION = "List the three most urgent problems in these notes and say why, in full sentences."


def _serve_side(model_id: str, extra_buffers: bool, models_dir: Path, threads: int) -> None:
    """A side process: load the model with extra buffer types on or off, say what llama.cpp put
    where (one JSON line), then run one timed generation per line read from stdin, answering
    each with a JSON line."""
    from orc.node.models.catalog import Catalog
    from orc.node.models.runtimes.llama_load import load_llama
    from orc.node.models.runtimes.llama_log import LOGGER_NAME

    buffers: list[str] = []

    class KeepBufferLines(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if "model buffer size" in record.getMessage():
                buffers.append(record.getMessage())

    native = logging.getLogger(LOGGER_NAME)
    native.addHandler(KeepBufferLines())
    native.setLevel(logging.DEBUG)
    native.propagate = False

    entry = Catalog(models_dir).prepare(model_id)
    llm = load_llama(entry.path, extra_buffers=extra_buffers, n_ctx=2048, n_threads=threads,
                     n_threads_batch=threads)
    prompt = llm.tokenize((PROMPT + QUESTION).encode())

    def once() -> dict:
        llm.reset()  # no reuse of the previous prompt's cache: the whole prompt is read again
        tokens: list[int] = []
        began = time.perf_counter()
        first = 0.0
        for token in llm.generate(prompt, temp=0.0, repeat_penalty=1.0):
            tokens.append(token)
            if len(tokens) == 1:
                first = time.perf_counter()
            if len(tokens) == DECODE_TOKENS + 1:
                break
        ended = time.perf_counter()
        return {"prefill_s": first - began, "decode_s": ended - first, "tokens": tokens}

    once()  # warm-up
    print(json.dumps({"prompt_tokens": len(prompt), "buffers": buffers}), flush=True)
    for _ in sys.stdin:
        print(json.dumps(once()), flush=True)


class _Side:
    """A running side process; `generation()` asks it for one timed generation."""

    def __init__(self, model_id: str, extra_buffers: bool, models_dir: Path, threads: int) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tests.benchmarks.extra_buffers", "--side", "on" if extra_buffers else "off",
             "--model", model_id, "--models-dir", str(models_dir), "--threads", str(threads)],
            cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.ready = self._answer()

    def _answer(self) -> dict:
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError(f"a benchmark side exited with {self.process.wait(timeout=30)}")
        return json.loads(line)

    def generation(self) -> dict:
        assert self.process.stdin is not None
        self.process.stdin.write("go\n")
        self.process.stdin.flush()
        return self._answer()

    def close(self) -> None:
        if self.process.stdin is not None:
            self.process.stdin.close()
        try:
            self.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def _extra_buffer_sizes(lines: list[str]) -> str:
    """What a load put in extra buffer types, from llama.cpp's "model buffer size" lines."""
    found = []
    for line in lines:
        match = re.search(r"(\S+) model buffer size\s*=\s*([\d.]+ MiB)", line)
        if match and match.group(1) not in ("CPU", "CPU_Mapped"):
            found.append(f"{match.group(1)} {match.group(2)}")
    return ", ".join(found) or "none"


def bench_extra_buffers(runs: int, rounds: int = ROUNDS, threads: int = THREADS) -> tuple[list[Row], str]:
    """Rows for both models and a note; each side runs `rounds` times, alternating."""
    from orc.node.models.runtimes.llama_load import extra_buffers_for_this_cpu

    if not extra_buffers_for_this_cpu():
        return [], ("Not measured: this CPU has AMX, where loading with extra buffer types on can crash "
                    "(llama.cpp issue #20824), so there is no \"on\" side to compare with.")
    rows: list[Row] = []
    facts: list[str] = []
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as home:
        models_dir = Path(home) / "models"
        for model_id in MODELS:
            sides: dict[bool, dict] = {True: {"prefill_s": [], "decode_s": [], "tokens": []},
                                       False: {"prefill_s": [], "decode_s": [], "tokens": []}}
            for _ in range(rounds):
                running = {extra: _Side(model_id, extra, models_dir, threads) for extra in (True, False)}
                try:
                    for extra, side in running.items():
                        sides[extra].update(side.ready)
                    for index in range(runs):
                        # One generation a side in turn, the first side alternating, so a burst
                        # of other load hits both alike; the pause lets the idle side's compute
                        # threads stop spinning before the other side starts.
                        for extra in ((True, False) if index % 2 == 0 else (False, True)):
                            time.sleep(PAUSE_S)
                            result = running[extra].generation()
                            for key in ("prefill_s", "decode_s", "tokens"):
                                sides[extra][key].append(result[key])
                finally:
                    for side in running.values():
                        side.close()
            prompt_tokens = sides[True]["prompt_tokens"]
            prefill = {extra: prompt_tokens / statistics.median(side["prefill_s"]) for extra, side in sides.items()}
            decode = {extra: DECODE_TOKENS / statistics.median(side["decode_s"]) for extra, side in sides.items()}
            # Off / on of each pair of generations run one right after the other, then the median:
            # a stretch of other load on the machine slows both members of a pair alike.
            prefill_ratio = statistics.median(on / off for on, off in zip(sides[True]["prefill_s"],
                                                                         sides[False]["prefill_s"]))
            decode_ratio = statistics.median(on / off for on, off in zip(sides[True]["decode_s"],
                                                                        sides[False]["decode_s"]))
            n = len(sides[True]["prefill_s"])
            rows += [
                Row(f"{model_id}: prompt, extra buffers on / off",
                    f"{prefill[True]:.0f} / {prefill[False]:.0f} tokens/s",
                    f"{prompt_tokens} prompt tokens in one batch; medians of {n} ({rounds} processes a side)"),
                Row(f"{model_id}: decode, extra buffers on / off",
                    f"{decode[True]:.1f} / {decode[False]:.1f} tokens/s",
                    f"{DECODE_TOKENS} tokens after the first; medians of {n}"),
                Row(f"**{model_id}: off / on**",
                    f"**prompt {prefill_ratio:.2f}×, decode {decode_ratio:.2f}×**",
                    f"speed with them off over speed with them on, median of {n} pairs of generations run one "
                    "after the other; below 1 means turning extra buffers off is slower"),
            ]
            pairs = list(zip(sides[True]["tokens"], sides[False]["tokens"]))
            parted = sorted({next(i for i, (a, b) in enumerate(zip(on, off)) if a != b)
                             for on, off in pairs if on != off})
            repacked = _extra_buffer_sizes(sides[True]["buffers"])
            fact = (f"{model_id}: with extra buffers on, llama.cpp put {repacked} in extra buffer types "
                    f"(off: {_extra_buffer_sizes(sides[False]['buffers'])}); the two settings chose the same "
                    f"{DECODE_TOKENS + 1} greedy tokens in {sum(on == off for on, off in pairs)} of {len(pairs)} "
                    "paired generations")
            if repacked == "none":
                fact += ("; with nothing repacked both sides run the same kernels, so its off / on ratio is "
                         "what this machine's noise alone makes")
            if parted:
                fact += (f" (the others part at token {', '.join(str(i + 1) for i in parted)}: the repacked and the "
                         "plain kernels round differently, and a near tie between two tokens goes the other way)")
            facts.append(fact + ".")
    plural = "s" if threads > 1 else ""
    note = (" ".join(facts) + " Both sides load the model through orc's `load_llama` with "
            f"{threads} thread{plural}, read the same prompt (plain text, no cache reuse) and decode greedily, each "
            "side in its own process; the two processes take turns, one generation each. This machine has no AMX, "
            "so `auto` leaves extra buffers on here; on a CPU with AMX, `auto` turns them off because llama.cpp's "
            "AMX path can crash there. What that costs on such a CPU is not measured here: these numbers are the "
            "cost of giving up repacking for AVX2, not AMX tiles. 1-minute load average of the machine "
            f"{load_before:.1f} before, {os.getloadavg()[0]:.1f} after (other work shared its "
            f"{os.cpu_count()} cores).")
    return rows, note


def section(runs: int, rounds: int = ROUNDS, threads: int = THREADS) -> str:
    return standalone_section(TITLE, *bench_extra_buffers(runs, rounds, threads))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5, help="timed generations per side process")
    parser.add_argument("--rounds", type=int, default=ROUNDS, help="pairs of side processes, one after the other")
    parser.add_argument("--threads", type=int, default=THREADS, help="llama.cpp threads, the same on both sides")
    parser.add_argument("--write", action="store_true", help="put the section into --out")
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "benchmarks.md")
    parser.add_argument("--side", choices=("on", "off"), help=argparse.SUPPRESS)
    parser.add_argument("--model", help=argparse.SUPPRESS)
    parser.add_argument("--models-dir", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.side:
        _serve_side(args.model, args.side == "on", args.models_dir, args.threads)
        return 0
    publish_section(TITLE, section(args.runs, args.rounds, args.threads), args.out if args.write else None)
    return 0


if __name__ == "__main__":
    sys.exit(main())
