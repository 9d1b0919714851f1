"""What runner processes cost embedded mode (`orc run` without a daemon): the start of a model,
in-process against in a runner, each in a fresh interpreter as one `orc run` would pay it.

    .venv/bin/python -m tests.benchmarks.runner_startup

In-process: import llama-cpp-python and load SmolLM2 in this interpreter. Runner: start a
runner (a new interpreter that imports orc and llama-cpp-python) and load SmolLM2 there, then
stop it. The two take turns, ROUNDS times each; the medians are printed with the runner's
resident memory. docs/architecture.md ("Runners") quotes the result.
"""

from __future__ import annotations

import json
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
    runtime = RunnerRuntime("llama_cpp", RunnerSettings(threads=2))
    start = time.perf_counter()
    await runtime.load(entry)
    loaded = time.perf_counter()
    rss = runtime.runner(entry.id).rss_bytes
    await runtime.close()
    return {"load_s": loaded - start, "stop_s": time.perf_counter() - loaded, "rss": rss}

print(json.dumps(asyncio.run(main())))
"""


def measure(script: str, models: str) -> dict[str, float]:
    done = subprocess.run([sys.executable, "-c", script, models], capture_output=True, text=True, timeout=300,
                          check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    with tempfile.TemporaryDirectory() as models:
        measure(IN_PROCESS, models)  # hashes the model once and warms the page cache
        inside, runner = [], []
        for _ in range(ROUNDS):
            inside.append(measure(IN_PROCESS, models))
            runner.append(measure(RUNNER, models))
    median = lambda rows, key: statistics.median(row[key] for row in rows)  # noqa: E731
    print(f"in-process load (import llama_cpp + load): {median(inside, 'load_s'):.2f} s")
    print(f"runner start + load:                        {median(runner, 'load_s'):.2f} s")
    print(f"runner stop:                                {median(runner, 'stop_s'):.3f} s")
    print(f"runner resident memory after the load:      {median(runner, 'rss') / 2**20:.0f} MiB")


if __name__ == "__main__":
    main()
