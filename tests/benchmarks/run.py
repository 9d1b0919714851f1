"""orc's benchmarks, side by side in one run; writes docs/benchmarks.md.

    .venv/bin/pip install -q -e '.[bench]' && .venv/bin/python -m tests.benchmarks.run
    .venv/bin/python -m tests.benchmarks.run --skip-llm-orc     # without the llm-orc comparison

(llm-orc 0.25.2 is installed into its own virtual environment on first use.)

Measures, on this machine, in one process run so the ratios compare like with like:
1. generation overhead: a one-agent ensemble through orc's engine vs the same prompt and
   token count through llama-cpp-python directly (model loaded in both, greedy decoding,
   identical output checked);
2. CLI start-up: `orc --help`, and a whole `orc run` of the one-agent ensemble;
3. end to end: the triad ensemble (3 parallel analysts + a judge, 48 tokens each) through orc's
   CLI and through llm-orc 0.25.2 pointed at a llama-cpp-python server holding the model;
4. runtimes: SmolLM2 through orc's llama.cpp runtime (the GGUF) and its MLX runtime (the same
   GGUF converted with `orc models convert --to mlx`), prompt and decode tokens/s side by side
   (skipped, with a note, when mlx-lm is not installed);
5. llama.cpp's extra buffer types (tests/benchmarks/extra_buffers.py): prompt and decode
   tokens/s of both embedded models with them on and off (orc turns them off on CPUs with AMX);
5a. parallel generations (tests/benchmarks/batching.py): 1-4 parallel 64-token generations of
   SmolLM2 decoded together by the batched runtime vs one at a time, and time to first token
   under load (--skip-batching);
5c. two models at once (tests/benchmarks/cpu_share.py): SmolLM2 and Gemma-3 generating at the
   same time in their runners, with the node's cores shared among the runners generating and
   without (--skip-cpu-share);
5d. quantizations (tests/benchmarks/quantization.py): the embedded SmolLM2 requantized to Q4_0
   and Q8_0, each file's perplexity and its 4 parallel generations batched vs one at a time
   (--skip-quantization);
5b. GGUF metadata (tests/benchmarks/gguf_reader.py): orc's header reader against ggml's
   `gguf.GGUFReader` on both embedded models, the values they read compared key by key;
6. the mesh (tests/benchmarks/mesh.py): mTLS round trips and per-agent remote overhead between
   daemons in network namespaces (raw, and end to end through a coordinator that places the
   agent), discovery and dead-peer times, idle daemon footprint, and a 3-agent fan-out on three
   single-thread nodes against one;
7. placement in simulation (tests/benchmarks/placement.py): orc's `place()` against HEFT and the
   naive baselines on random meshes and DAGs (deterministic, about 15 s; --skip-placement);
8. the idle daemon's footprint (tests/benchmarks/footprint.py): RSS, anonymous and file-backed
   memory, mapped libraries and imported packages of a daemon with no model loaded (needs root,
   about a minute; --skip-footprint);
9. the HTTP API (tests/benchmarks/api.py): its overhead per request against the same generation
   through `orc run`, and time to first token of a model on its own node and on a peer, between
   two daemons in network namespaces (needs root, a few minutes; --skip-api);
10. ensemble primitives (tests/benchmarks/ensemble_eval.py): one sample, a 5-sample vote, a
   cascade from SmolLM2 to Gemma and a vote across both models answering a labeled task set, on
   one node and on three daemons in network namespaces: accuracy, tokens, wall time (needs root;
   about an hour for the whole set, `python -m tests.benchmarks.ensemble_eval --limit N` for
   less; --skip-ensemble-eval);
11. Ray (tests/benchmarks/on_ray.py): the example ensembles in-process, through a daemon and on a
   local Ray cluster, Ray's per-agent overhead, and 100 concurrent runs on each (needs root and
   ray; about ten minutes; --skip-ray).
Medians of several runs; the machine (CPU, cores, memory, versions) is written with the numbers.
"""

from __future__ import annotations

import argparse
import contextlib
import asyncio
import importlib.metadata
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PROMPT_SYSTEM = "You are a concise assistant."
PROMPT_USER = "List three uses for a Raspberry Pi in a home network, one line each."
MAX_TOKENS = 64
THREADS = 2


@dataclass(frozen=True)
class Row:
    what: str
    value: str
    note: str = ""


def compile_bytecode() -> None:
    """Compile orc's own modules to bytecode, as pip compiles an installed package's (llm-orc's
    and every library's): an editable install's modules are otherwise compiled again at every
    start of `orc` where PYTHONDONTWRITEBYTECODE is set, which added about 0.2 s to each."""
    import compileall

    for package in ("node", "scheduler", "proto", "ensembles"):
        if not compileall.compile_dir(str(REPO / package), quiet=1):
            raise RuntimeError(f"compiling {package}/ to bytecode failed")


def median_of(runs: int, measure: Callable[[], float]) -> tuple[float, list[float]]:
    samples = [measure() for _ in range(runs)]
    return statistics.median(samples), samples


def machine() -> list[str]:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        cpu = platform.processor() or cpu
    memory = ""
    try:
        kib = int(next(l for l in Path("/proc/meminfo").read_text().splitlines() if l.startswith("MemTotal")).split()[1])
        memory = f"{kib / 1024 / 1024:.0f} GiB RAM"
    except (OSError, StopIteration, ValueError):
        pass
    try:
        mlx = f", mlx {importlib.metadata.version('mlx')}, mlx-lm {importlib.metadata.version('mlx-lm')}"
    except importlib.metadata.PackageNotFoundError:
        mlx = ""
    return [
        f"- machine: {platform.system()} {platform.machine()}, {cpu}, {os.cpu_count()} cores, {memory}",
        f"- Python {platform.python_version()}, llama-cpp-python {importlib.metadata.version('llama-cpp-python')}{mlx}",
        f"- model: SmolLM2-135M-Instruct Q4_1 (the embedded default), {THREADS} threads, greedy decoding",
        f"- date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}",
    ]


# ---- 1. generation overhead ----
#
# Each side runs in its own process: two llama.cpp contexts in one process disturb each other
# (the idle one's worker threads keep polling for a while after each generation), which made
# both sides slower and the ratio meaningless. The sides alternate, so drift on a shared
# machine hits both alike.

def _side_direct(runs: int) -> dict:
    from orc.node.models.catalog import DEFAULT_MODEL_ID, Catalog
    from orc.node.models.runtimes.llama_load import extra_buffers_for_this_cpu, load_llama

    with tempfile.TemporaryDirectory() as home:
        entry = Catalog(Path(home) / "models").prepare(DEFAULT_MODEL_ID)
        # llama_cpp.Llama(..., verbose=False) with the model parameter orc sets for this CPU (extra
        # buffer types off where it has AMX), so both sides load the model alike.
        llm = load_llama(entry.path, extra_buffers=extra_buffers_for_this_cpu(), n_ctx=2048, n_threads=THREADS,
                         n_threads_batch=THREADS)
    messages = [{"role": "system", "content": PROMPT_SYSTEM}, {"role": "user", "content": PROMPT_USER}]

    def once() -> tuple[float, str, int]:
        began = time.perf_counter()
        text, tokens = "", 0
        # repeat_penalty 1.1: the sampling orc's llama.cpp runtime uses, so both do the same work.
        for chunk in llm.create_chat_completion(messages=messages, max_tokens=MAX_TOKENS, temperature=0.0,
                                                seed=1, repeat_penalty=1.1, stream=True):
            piece = chunk["choices"][0]["delta"].get("content")
            if piece:
                text += piece
                tokens += 1
        return time.perf_counter() - began, text, tokens

    once()  # warm-up
    samples = [once() for _ in range(runs)]
    return {"times": [s[0] for s in samples], "text": samples[-1][1], "tokens": samples[-1][2]}


def _side_orc(runs: int) -> dict:
    from orc.node.api import Orc
    from orc.node.models.catalog import DEFAULT_MODEL_ID
    from orc.node.protocol.events import RunFinished
    from orc.scheduler.loader import load_ensemble_text

    with tempfile.TemporaryDirectory() as home:
        orc = Orc(home, n_threads=THREADS, seed=1)
        spec = load_ensemble_text(
            f"name: one\nagents:\n  - name: a\n    model: {DEFAULT_MODEL_ID}\n    temperature: 0\n"
            f"    max_tokens: {MAX_TOKENS}\n    system_prompt: {json.dumps(PROMPT_SYSTEM)}\n",
            Path(home) / "one.yaml")
        engine = orc.engine(journal=True)
        bound = engine.preflight(spec)

        async def once() -> tuple[float, str, int]:
            began = time.perf_counter()
            result = None
            async for event in engine.run(bound, PROMPT_USER):
                if isinstance(event, RunFinished):
                    result = event.result
            elapsed = time.perf_counter() - began
            record = dict(result.results)["a"]
            return elapsed, str(result.deliverable), record.usage.completion_tokens

        async def measure() -> list[tuple[float, str, int]]:
            await once()  # warm-up: loads the model
            return [await once() for _ in range(runs)]

        samples = asyncio.run(measure())
    return {"times": [s[0] for s in samples], "text": samples[-1][1], "tokens": samples[-1][2]}


def _run_side(side: str, runs: int, *extra: str) -> dict:
    done = subprocess.run([sys.executable, "-m", "tests.benchmarks.run", "--side", side, "--runs", str(runs), *extra],
                          cwd=REPO, capture_output=True, text=True, timeout=900, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def bench_overhead(runs: int, rounds: int = 4) -> list[Row]:
    direct_times: list[float] = []
    orc_times: list[float] = []
    direct = orc = {}
    for _ in range(rounds):
        direct = _run_side("direct", runs)
        orc = _run_side("orc", runs)
        direct_times += direct["times"]
        orc_times += orc["times"]
    same = "identical text" if direct["text"].strip() == orc["text"].strip() else "texts differ"
    d, o = statistics.median(direct_times), statistics.median(orc_times)
    d_min, o_min = min(direct_times), min(orc_times)
    n = len(direct_times)
    return [
        Row("llama-cpp-python direct, one generation", f"{d * 1000:.0f} ms",
            f"median of {n} ({rounds} processes), fastest {d_min * 1000:.0f} ms; {direct['tokens']} tokens"),
        Row("orc engine, one-agent ensemble (journaled)", f"{o * 1000:.0f} ms",
            f"median of {n} ({rounds} processes), fastest {o_min * 1000:.0f} ms; {orc['tokens']} tokens; {same}"),
        Row("**overhead ratio** orc / direct", f"**{o / d:.3f}×**",
            f"target ≤ 1.05×; fastest-run ratio {o_min / d_min:.3f}×"),
    ]


# ---- 2. CLI start-up ----

def bench_cli(runs: int) -> list[Row]:
    orc_bin = Path(sys.executable).with_name("orc")
    with tempfile.TemporaryDirectory() as home:
        env = {**os.environ, "ORC_HOME": home}
        path = Path(home) / "one.yaml"
        path.write_text(f"name: one\nagents:\n  - name: a\n    model: smollm2-135m-instruct\n    temperature: 0\n"
                        f"    max_tokens: {MAX_TOKENS}\n    system_prompt: {json.dumps(PROMPT_SYSTEM)}\n")

        def timed(args: list[str]) -> float:
            began = time.perf_counter()
            subprocess.run(args, env=env, check=True, capture_output=True, timeout=300)
            return time.perf_counter() - began

        timed([str(orc_bin), "run", str(path), PROMPT_USER, "--threads", str(THREADS)])  # digest cache warm-up
        help_s, _ = median_of(runs, lambda: timed([str(orc_bin), "--help"]))
        run_s, _ = median_of(runs, lambda: timed([str(orc_bin), "run", str(path), PROMPT_USER, "-q",
                                                  "--threads", str(THREADS)]))
    return [
        Row("`orc --help`", f"{help_s * 1000:.0f} ms", f"median of {runs}"),
        Row("`orc run` one-agent ensemble, whole process", f"{run_s * 1000:.0f} ms",
            f"median of {runs}; start-up + model load + {MAX_TOKENS} tokens"),
    ]


# ---- 3. orc vs llm-orc ----

def bench_llm_orc(runs: int) -> list[Row]:
    from tests.benchmarks import llm_orc_baseline as baseline

    ensemble = baseline.TRIAD_ENSEMBLE
    llm_orc = baseline.ensure_llm_orc()
    orc_bin = Path(sys.executable).with_name("orc")
    with tempfile.TemporaryDirectory() as work:
        folder = Path(work)
        orc_file = folder / "triad.yaml"
        orc_file.write_text(ensemble.to_orc_yaml())
        env = {**os.environ, "ORC_HOME": str(folder / "home")}

        def run_orc(home_env: dict[str, str] = env, *options: str) -> tuple[float, float, int]:
            began = time.perf_counter()
            done = subprocess.run([str(orc_bin), "run", str(orc_file), baseline.BENCH_INPUT, "--json", *options],
                                  env=home_env, capture_output=True, text=True, timeout=600)
            elapsed = time.perf_counter() - began
            data = json.loads(done.stdout)
            if data["status"] != "completed":
                raise RuntimeError(f"orc run failed: {done.stderr[-500:]}")
            tokens = sum(r["usage"]["completion_tokens"] for r in data["results"].values())
            return elapsed, data["timing"]["duration_s"], tokens

        embedded = ("--threads", str(THREADS))
        run_orc(env, *embedded)  # warm-up (digest cache, page cache)
        with baseline.start_llama_server(baseline.smollm2_gguf(), n_threads=THREADS) as base_url, \
                _daemon(folder / "daemon-home") as daemon_env:
            project = folder / "llm-orc"
            baseline.write_llm_orc_project(project, base_url, ensemble)
            baseline.run_llm_orc_measured(project, ensemble.name, baseline.BENCH_INPUT, llm_orc)  # warm-up
            run_orc(daemon_env)  # warm-up: the daemon's runner has the model loaded from now on
            orc_runs, llm_orc_runs, daemon_runs = [], [], []
            for _ in range(runs):  # interleaved so machine noise hits all three
                llm_orc_runs.append(baseline.run_llm_orc_measured(project, ensemble.name, baseline.BENCH_INPUT,
                                                                   llm_orc))
                orc_runs.append(run_orc(env, *embedded))
                daemon_runs.append(run_orc(daemon_env))
    l_wall = statistics.median(r.wall_s for r in llm_orc_runs)
    l_engine = statistics.median(r.engine_s for r in llm_orc_runs)
    l_tokens = statistics.median(r.completion_tokens for r in llm_orc_runs)
    o_wall = statistics.median(r[0] for r in orc_runs)
    o_engine = statistics.median(r[1] for r in orc_runs)
    o_tokens = statistics.median(r[2] for r in orc_runs)
    d_wall = statistics.median(r[0] for r in daemon_runs)
    d_engine = statistics.median(r[1] for r in daemon_runs)
    return [
        Row(f"llm-orc {baseline.LLM_ORC_VERSION} → llama-cpp-python server, whole `llm-orc invoke`",
            f"{l_wall:.2f} s", f"median of {runs}; {l_tokens:.0f} completion tokens; model loaded before timing"),
        Row("orc, whole `orc run` without a daemon (starts a runner and loads the model each run)", f"{o_wall:.2f} s",
            f"median of {runs}; {o_tokens:.0f} completion tokens"),
        Row("**orc / llm-orc, end to end**", f"**{o_wall / l_wall:.2f}×**", "target ≤ 0.35×; below 1 means orc is faster"),
        Row("orc, whole `orc run` through a running daemon (model loaded in its runner, as llm-orc's server)",
            f"{d_wall:.2f} s", f"median of {runs}; its own run {d_engine:.2f} s"),
        Row("**orc through its daemon / llm-orc, end to end**", f"**{d_wall / l_wall:.2f}×**", "target ≤ 0.35×"),
        Row("llm-orc executor only (its own started→completed)", f"{l_engine:.2f} s", "no process start-up"),
        Row("orc run only (its own started→finished)", f"{o_engine:.2f} s", "no process start-up"),
        Row("llm-orc / orc, executors only", f"{l_engine / o_engine:.2f}×", ""),
    ]


@contextlib.contextmanager
def _daemon(home: Path) -> Iterator[dict[str, str]]:
    """An `orc-node` daemon on loopback (no mDNS) serving the model on THREADS threads; the
    environment whose `orc run` goes through it. Stopped (SIGTERM, then killed) at the end."""
    from tests.benchmarks.llm_orc_baseline import SERVED_MODEL_ID, _free_port

    env = {**os.environ, "ORC_HOME": str(home)}
    orc_node = Path(sys.executable).with_name("orc-node")
    subprocess.run([str(orc_node), "init", "--name", "bench"], env=env, check=True, capture_output=True, timeout=60)
    log = (home / "daemon.log").open("w")
    daemon = subprocess.Popen([str(orc_node), "start", "--no-mdns", "--listen", f"127.0.0.1:{_free_port()}",
                               "--model", SERVED_MODEL_ID, "--threads", str(THREADS)],
                              env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 120
        while subprocess.run([str(orc_node), "status", "--json"], env=env, capture_output=True,
                             timeout=30).returncode != 0:
            if daemon.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the benchmark's daemon did not start: {(home / 'daemon.log').read_text()[-800:]}")
            time.sleep(0.3)
        yield env
    finally:
        daemon.terminate()
        try:
            daemon.wait(timeout=30)
        except subprocess.TimeoutExpired:
            daemon.kill()
        log.close()


# ---- 4. llama.cpp vs MLX ----
#
# One model, two runtimes, each in its own process (as in section 1), through orc's runtime
# classes. Reading the prompt is timed with max_tokens=1; decoding is the extra time of a
# MAX_TOKENS generation over that, so neither rate includes the other. Each request starts its
# system prompt with its own number: llama-cpp-python reuses the cached prefix of the previous
# prompt, and MLX's runtime caches nothing, so an identical prompt would time only one of them.

def _side_runtime(runtime_name: str, runs: int, models_dir: Path) -> dict:
    from orc.node.models.catalog import DEFAULT_MODEL_ID, Catalog
    from orc.node.models.runtimes.base import ChatMessage, GenerationDone, GenerationParams
    from orc.node.models.runtimes.llama_cpp import LlamaCppRuntime
    from orc.node.models.runtimes.mlx import MlxRuntime

    entry = Catalog(models_dir).prepare(f"{DEFAULT_MODEL_ID}@{runtime_name}")
    runtime = LlamaCppRuntime(n_threads=THREADS) if runtime_name == "llama_cpp" else MlxRuntime()
    requests = iter(range(1 << 20))

    async def once(max_tokens: int) -> tuple[float, GenerationDone]:
        # One digit, so every request has as many prompt tokens.
        messages = [ChatMessage("system", f"Request {next(requests) % 10}. {PROMPT_SYSTEM}"),
                    ChatMessage("user", PROMPT_USER)]
        began = time.perf_counter()
        done = None
        async for event in runtime.generate(entry, messages, GenerationParams(temperature=0, max_tokens=max_tokens)):
            done = event
        assert isinstance(done, GenerationDone)
        return time.perf_counter() - began, done

    async def measure() -> dict:
        began = time.perf_counter()
        await runtime.load(entry)
        load_s = time.perf_counter() - began
        await once(MAX_TOKENS)  # warm-up
        first = [await once(1) for _ in range(runs)]
        full = [await once(MAX_TOKENS) for _ in range(runs)]
        return {"load_s": load_s, "first_s": [t for t, _ in first], "full_s": [t for t, _ in full],
                "prompt_tokens": full[-1][1].usage.prompt_tokens,
                "tokens": [d.usage.completion_tokens for _, d in full], "texts": [d.text for _, d in full]}

    return asyncio.run(measure())


def bench_runtimes(runs: int) -> tuple[list[Row], str]:
    import importlib.util

    if importlib.util.find_spec("mlx_lm") is None:
        return [], "Not measured: mlx-lm is not installed here (`pip install -e '.[mlx]'`)."
    from orc.node.models.catalog import DEFAULT_MODEL_ID, Catalog

    rows = []
    results = {}
    with tempfile.TemporaryDirectory() as home:
        models_dir = Path(home) / "models"
        began = time.perf_counter()
        converted = Catalog(models_dir).convert(DEFAULT_MODEL_ID, to="mlx").entry
        convert_s = time.perf_counter() - began
        for name in ("llama_cpp", "mlx"):
            results[name] = _run_side(f"runtime-{name}", runs, "--models-dir", str(models_dir))
    decode: dict[str, float] = {}
    for name, label in (("llama_cpp", f"llama.cpp (GGUF, {THREADS} threads)"), ("mlx", "MLX (converted folder, CPU)")):
        r = results[name]
        first = statistics.median(r["first_s"])
        # Each request's answer has its own length: a rate per generation, then the median.
        decode[name] = statistics.median((n - 1) / (t - first) for n, t in zip(r["tokens"], r["full_s"]))
        rows.append(Row(f"{label}: decode", f"**{decode[name]:.1f} tokens/s**",
                        f"median of {runs} generations of {min(r['tokens'])} to {max(r['tokens'])} tokens"))
        rows.append(Row(f"{label}: prompt", f"{r['prompt_tokens'] / first:.0f} tokens/s",
                        f"{r['prompt_tokens']} prompt tokens in {first * 1000:.0f} ms (time to the first token)"))
        rows.append(Row(f"{label}: load", f"{r['load_s'] * 1000:.0f} ms", "first load in a fresh process"))
    rows.append(Row("**llama.cpp / MLX, decode**", f"**{decode['llama_cpp'] / decode['mlx']:.1f}×**",
                    "above 1 means llama.cpp is faster"))
    rows.append(Row("`orc models convert smollm2-135m-instruct --to mlx`", f"{convert_s:.1f} s",
                    f"{converted.size_bytes / 2**20:.1f} MiB folder"))
    pairs = list(zip(results["llama_cpp"]["texts"], results["mlx"]["texts"]))
    same = sum(a == b for a, b in pairs)
    note = f"The two runtimes wrote the same text for {same} of the {len(pairs)} timed requests."
    if same < len(pairs):
        note += (" Where they differ, the runtimes' logits differ slightly and the greedy texts part at the "
                 "first near tie (docs/runtimes.md).")
    return rows, note


def section_lines(title: str, rows: list[Row], notes: str) -> list[str]:
    """One section of the report: a heading, a table of rows, notes."""
    lines = [f"## {title}", ""]
    if rows:
        lines += ["| measurement | value | notes |", "|---|---|---|"]
        lines += [f"| {r.what} | {r.value} | {r.note} |" for r in rows]
    if notes:
        lines += ["", notes]
    lines.append("")
    return lines


def standalone_section(title: str, rows: list[Row], notes: str) -> str:
    """A section run on its own, for `replace_section`: its notes end with the machine and date."""
    where = next(line for line in machine() if line.startswith("- machine:"))
    when = next(line for line in machine() if line.startswith("- date:"))
    return "\n".join(section_lines(title, rows, f"{notes}\n\n{where.removeprefix('- ')}; {when.removeprefix('- ')}."))


def load_note(before: float) -> str:
    """The sentence every section run in-process ends with: how busy the machine was."""
    return (f"1-minute load average of the machine {before:.1f} before, {os.getloadavg()[0]:.1f} after (other work "
            f"shared its {os.cpu_count()} cores).")


def rounds_main(argv: list[str] | None, doc: str | None, title: str, section: Callable[[int, int], str],
                threads_help: str) -> int:
    """The command line of a section measured in rounds (`--rounds`, `--threads`, `--write`)."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3, help="rounds, the sides alternating")
    parser.add_argument("--threads", type=int, default=THREADS, help=threads_help)
    parser.add_argument("--write", action="store_true", help="put the section into --out")
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "benchmarks.md")
    args = parser.parse_args(argv)
    publish_section(title, section(args.rounds, args.threads), args.out if args.write else None)
    return 0


def publish_section(title: str, text: str, out: Path | None) -> None:
    """Print a section run on its own and, when `out` is given, put it into that report."""
    print(text)
    if out is not None:
        replace_section(out, title, text)


def replace_section(path: Path, title: str, text: str) -> None:
    """Put one section into the report at `path`, replacing an older copy of it and nothing
    else; a report without one gets it before the mesh section, or at the end."""
    lines = path.read_text().splitlines()
    heading = f"## {title}"
    new = text.rstrip("\n").splitlines() + [""]
    if heading in lines:
        start = lines.index(heading)
        end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")), len(lines))
    else:
        start = end = next((i for i, line in enumerate(lines) if line.startswith("## Mesh")), len(lines))
    path.write_text("\n".join(lines[:start] + new + lines[end:]) + "\n")


def write_report(sections: list[tuple[str, list[Row], str]], path: Path, appendix: str = "") -> None:
    lines = ["# Benchmarks", "",
             "Written by `.venv/bin/pip install -q -e '.[bench]' && .venv/bin/python -m tests.benchmarks.run`;",
             "the numbers of a section come from one run of it on the machine described here; a section",
             "that ends with its own machine and date was run on its own (`python -m tests.benchmarks.NAME",
             "--write`). Machines are shared and noisy: compare the ratios inside one table, not absolute",
             "times across runs. orc's own modules are compiled to bytecode first, as an installed",
             "package's are (`compile_bytecode`).", "", *machine(), ""]
    for title, rows, notes in sections:
        lines += section_lines(title, rows, notes)
    if appendix:
        lines += [appendix.rstrip(), ""]
    path.write_text("\n".join(lines))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--skip-llm-orc", action="store_true")
    parser.add_argument("--skip-mesh", action="store_true", help="leave out the mesh section (needs root)")
    parser.add_argument("--skip-placement", action="store_true", help="leave out the placement simulation")
    parser.add_argument("--skip-footprint", action="store_true",
                        help="leave out the idle daemon's footprint (needs root)")
    parser.add_argument("--skip-api", action="store_true",
                        help="leave out the HTTP API's overhead and time to first token (needs root)")
    parser.add_argument("--skip-ensemble-eval", action="store_true",
                        help="leave out the evaluation of vote and cascade (needs root)")
    parser.add_argument("--skip-ray", action="store_true",
                        help="leave out the same ensembles on a local Ray cluster (needs root and ray)")
    parser.add_argument("--skip-batching", action="store_true",
                        help="leave out parallel generations batched vs one at a time")
    parser.add_argument("--skip-cpu-share", action="store_true",
                        help="leave out two models generating at once, cores shared or not")
    parser.add_argument("--skip-quantization", action="store_true",
                        help="leave out batching and perplexity by quantization")
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "benchmarks.md")
    parser.add_argument("--side", choices=("direct", "orc", "runtime-llama_cpp", "runtime-mlx"),
                        help=argparse.SUPPRESS)  # one side of a comparison, as JSON
    parser.add_argument("--models-dir", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.side:
        if args.side.startswith("runtime-"):
            print(json.dumps(_side_runtime(args.side.removeprefix("runtime-"), args.runs, args.models_dir)))
        else:
            print(json.dumps((_side_direct if args.side == "direct" else _side_orc)(args.runs)))
        return 0
    compile_bytecode()
    sections = []
    print("generation overhead ...", file=sys.stderr)
    sections.append(("Orchestration overhead", bench_overhead(args.runs),
                     "Both sides hold the model loaded (one warm-up generation first) and decode greedily with "
                     "the same chat template and sampling, so they produce the same tokens. Each side runs in "
                     "its own process, the sides alternating. orc's time includes the engine, the state machine, "
                     "the run journal with an fsync per record, and token streaming from the worker thread "
                     "through the event loop. The fastest-run ratio is the least disturbed by other load on "
                     "the machine. On this shared two-core VM, repeated runs of this benchmark on the same code "
                     "have given ratios from about 0.9× to 1.2×: one table is one sample."))
    print("CLI start-up ...", file=sys.stderr)
    sections.append(("CLI start-up", bench_cli(args.runs), ""))
    if not args.skip_llm_orc:
        print("orc vs llm-orc ...", file=sys.stderr)
        sections.append(("orc vs llm-orc 0.25, the triad ensemble end to end", bench_llm_orc(args.runs),
                         "Same system prompts, input, max_tokens and temperature on both sides, and the same number "
                         "of completion tokens; each tool words the judge's view of the upstream results its "
                         "own way. llm-orc's server keeps the model loaded between runs; orc without a daemon starts a "
                         "runner process and loads the model in every `orc run`, while orc through a running "
                         "`orc-node` daemon (loopback, no mDNS, the same threads) finds the model loaded in its runner. "
                         "See docs/llm-orc-baseline.md for the set-up and its caveats."))
    print("llama.cpp vs MLX ...", file=sys.stderr)
    runtime_rows, runtime_note = bench_runtimes(args.runs)
    sections.append(("Runtimes: llama.cpp vs MLX, the same model", runtime_rows,
                     runtime_note + " Same prompt (chat template), greedy decoding and repetition penalty through "
                     "orc's two runtime classes, each in its own process. This machine has no Apple GPU, so MLX "
                     "runs on its CPU backend (`mlx[cpu]`), which uses one core and is far slower than llama.cpp "
                     "here; on Apple silicon MLX runs on the GPU and these numbers do not carry over. The "
                     "MLX runtime exists for Macs; on Linux it is there to be tested."))
    print("llama.cpp extra buffer types on vs off ...", file=sys.stderr)
    from tests.benchmarks.extra_buffers import TITLE as EXTRA_BUFFERS_TITLE, bench_extra_buffers

    sections.append((EXTRA_BUFFERS_TITLE, *bench_extra_buffers(args.runs)))
    print("GGUF metadata readers ...", file=sys.stderr)
    from tests.benchmarks.gguf_reader import TITLE as GGUF_READER_TITLE, bench_gguf_reader

    sections.append((GGUF_READER_TITLE, *bench_gguf_reader(1)))
    if not args.skip_batching:
        print("parallel generations batched vs one at a time ...", file=sys.stderr)
        from tests.benchmarks.batching import TITLE as BATCHING_TITLE, bench_batching

        sections.append((BATCHING_TITLE, *bench_batching()))
    if not args.skip_cpu_share:
        print("two models at once, cores shared among runners or not ...", file=sys.stderr)
        from tests.benchmarks.cpu_share import TITLE as CPU_SHARE_TITLE, bench_cpu_share

        sections.append((CPU_SHARE_TITLE, *bench_cpu_share()))
    if not args.skip_quantization:
        print("batching and perplexity by quantization ...", file=sys.stderr)
        from tests.benchmarks.quantization import TITLE as QUANTIZATION_TITLE, bench_quantization

        sections.append((QUANTIZATION_TITLE, *bench_quantization()))
    appendix = ""  # sections run on their own: the footprint, the mesh, placement
    if not args.skip_footprint:
        print("idle daemon footprint ...", file=sys.stderr)
        from tests.benchmarks.footprint import footprint_section

        appendix = footprint_section()
    if not args.skip_api:
        print("HTTP API (daemons in network namespaces) ...", file=sys.stderr)
        from tests.benchmarks.api import api_section

        appendix = "\n\n".join(part for part in (appendix.rstrip(), api_section()) if part)
    if not args.skip_mesh:
        print("mesh (daemons in network namespaces) ...", file=sys.stderr)
        from tests.benchmarks.mesh import mesh_section

        appendix = "\n\n".join(part for part in (appendix.rstrip(), mesh_section()) if part)
    if not args.skip_ensemble_eval:
        print("ensemble primitives evaluated (daemons in network namespaces) ...", file=sys.stderr)
        from tests.benchmarks.ensemble_eval import ensemble_eval_section

        appendix = "\n\n".join(part for part in (appendix.rstrip(), ensemble_eval_section()) if part)
    if not args.skip_ray:
        print("in-process, mesh and Ray side by side ...", file=sys.stderr)
        from tests.benchmarks.on_ray import measure as measure_ray
        from tests.benchmarks.on_ray import section as ray_section

        appendix = "\n\n".join(part for part in (appendix.rstrip(), ray_section(measure_ray())) if part)
    if not args.skip_placement:
        print("placement in simulation ...", file=sys.stderr)
        from tests.benchmarks.placement import placement_section

        appendix = "\n\n".join(part for part in (appendix.rstrip(), placement_section()) if part)
    write_report(sections, args.out, appendix)
    print(args.out.read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
