"""What runner processes cost embedded mode (`orc run` without a daemon): the start of a model,
in-process against in a runner, each in a fresh interpreter as one `orc run` would pay it.

    .venv/bin/python -m tests.benchmarks.runner_startup

In-process: import llama-cpp-python and load SmolLM2 in this interpreter. Runner: start a
runner (a new interpreter that imports orc and llama-cpp-python) and load SmolLM2 there, then
stop it; once probing the model at the load, as a first load does, and once with the probe's
answers kept from an earlier load (orc.node.models.runtimes.probe_cache), as every later `orc
run` finds them. The three take turns, ROUNDS times each; the medians are printed with the
runner's resident memory. docs/architecture.md ("Runners") quotes the result.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile

ROUNDS = 5

IN_PROCESS = """
import asyncio, json, sys, time
from pathlib import Path
from orc.node.models.catalog import Catalog, DEFAULT_MODEL_ID
from orc.node.models.runtimes.llama_cpp import LlamaCppRuntime
entry = Catalog(Path(sys.argv[1])).prepare(DEFAULT_MODEL_ID)
start = time.perf_counter()
asyncio.run(LlamaCppRuntime(n_threads=2).load(entry))
print(json.dumps({"load_s": time.perf_counter() - start}))
"""

RUNNER = """
import asyncio, json, sys, time
from pathlib import Path
from orc.node.models.catalog import Catalog, DEFAULT_MODEL_ID
from orc.node.models.runners import RunnerRuntime, RunnerSettings
entry = Catalog(Path(sys.argv[1])).prepare(DEFAULT_MODEL_ID)

async def main():
    runtime = RunnerRuntime("llama_cpp", RunnerSettings(threads=2, probe_cache=sys.argv[2]))
    start = time.perf_counter()
    await runtime.load(entry)
    loaded = time.perf_counter()
    rss = runtime.runner(entry.id).rss_bytes
    await runtime.close()
    return {"load_s": loaded - start, "stop_s": time.perf_counter() - loaded, "rss": rss}

print(json.dumps(asyncio.run(main())))
"""


def measure(script: str, models: str, *args: str) -> dict[str, float]:
    done = subprocess.run([sys.executable, "-c", script, models, *args], capture_output=True, text=True, timeout=300,
                          check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    from tests.benchmarks.run import compile_bytecode

    compile_bytecode()  # as an installed package's modules are: the runner imports orc
    with tempfile.TemporaryDirectory() as models:
        measure(IN_PROCESS, models)  # hashes the model once and warms the page cache
        kept = f"{models}/llama-probes.json"
        inside, runner, cached = [], [], []
        for _ in range(ROUNDS):
            inside.append(measure(IN_PROCESS, models))
            runner.append(measure(RUNNER, models, ""))
            if not os.path.exists(kept):
                measure(RUNNER, models, kept)  # the first load with the file keeps the answers
            cached.append(measure(RUNNER, models, kept))
    median = lambda rows, key: statistics.median(row[key] for row in rows)  # noqa: E731
    print(f"in-process load (import llama_cpp + load): {median(inside, 'load_s'):.2f} s")
    print(f"runner start + load, probing:               {median(runner, 'load_s'):.2f} s")
    print(f"runner start + load, probe answers kept:    {median(cached, 'load_s'):.2f} s")
    print(f"runner stop:                                {median(runner, 'stop_s'):.3f} s")
    print(f"runner resident memory after the load:      {median(runner, 'rss') / 2**20:.0f} MiB")


if __name__ == "__main__":
    main()
