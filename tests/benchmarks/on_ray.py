"""The same ensembles in-process, on the mesh and on a local Ray cluster, side by side.

    sudo .venv/bin/python -m tests.benchmarks.on_ray            # print the section
    sudo .venv/bin/python -m tests.benchmarks.on_ray --write    # and put it into docs/benchmarks.md

(run.py includes it unless --skip-ray; needs root for the daemon's network namespace and Ray,
`pip install -e '.[ray]'`; about ten minutes.) Three ways to run one machine's SmolLM2, each
with 2 llama.cpp threads and 4 slots:

- **in-process**: `orc run --local`'s engine, in this process, its model in a runner child;
- **mesh**: one `orc-node` daemon in a network namespace, runs sent to its control socket as
  `orc run` sends them (`--threads 2`);
- **Ray**: a local Ray cluster (a head serving nothing and one worker started with
  `--resources '{"orc-model:smollm2-135m-instruct": 1, "orc-model:gemma3-270m": 1}'`, so one
  actor of 4 slots per model), this process its driver, as `orc run --on ray://...` makes it.

The daemon and the worker also serve Gemma 3 270M: the example vote spreads its samples over
both models.

Measured, the sides taking turns in each round so load on the shared machine falls on all:
1. the repository's example ensembles `perspectives` (three parallel analysts and a synthesizer)
   and `vote-yes-no` (a 5-sample vote), `--seed 1`: wall time, and whether every agent wrote the
   same text on every side;
2. the per-agent overhead: a one-agent ensemble generating 1 token, the agent's own time
   (started → result) and the whole run's, Ray and the mesh against in-process (median of
   paired differences);
3. 100 concurrent runs of a one-agent ensemble (16 tokens, each run its own question), started
   together: wall time, runs completed, latency of a run (median and p95), generated tokens/s.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.benchmarks.run import REPO, Row, publish_section, standalone_section

TITLE = "Ray: the same ensembles in-process, on the mesh and on a local Ray cluster"
MODEL = "smollm2-135m-instruct"
GEMMA = "gemma3-270m"  # the example vote spreads its samples over both models
THREADS = 2
SEED = 1
ROUNDS = 3  # of each example ensemble per side
OVERHEAD_PAIRS = 20
CONCURRENT = 100
CONCURRENT_TOKENS = 16
RUN_TIMEOUT_S = 600.0  # one run, or the 100 together: a bound on the whole measurement
SIDES = ("in-process", "mesh", "ray")

ONE_TOKEN = f"""\
name: bench-one-token
agents:
  - name: answer
    model: {MODEL}
    system_prompt: Answer in one word.
    temperature: 0
    max_tokens: 1
"""
SHORT = f"""\
name: bench-short
agents:
  - name: answer
    model: {MODEL}
    system_prompt: Answer in one short sentence.
    temperature: 0
    max_tokens: {CONCURRENT_TOKENS}
"""
COLOURS = ("red", "blue", "green", "amber", "violet", "white", "black", "grey", "orange", "teal")


def _log(message: str) -> None:
    print(f"[ray bench] {message}", file=sys.stderr, flush=True)


@dataclass(frozen=True)
class Outcome:
    """One run as every side reports it."""

    status: str
    duration_s: float  # the run's own timing (started_at → finished_at)
    agent_s: float  # the first agent's started → result
    outputs: dict[str, str]
    completion_tokens: int


def _outcome(result: Any) -> Outcome:
    records = dict(result.results)
    first = next(iter(records.values()))
    return Outcome(result.status, result.finished_at - result.started_at,
                   (first.finished_at or 0.0) - (first.started_at or 0.0),
                   {name: str(r.output) for name, r in records.items()},
                   sum(r.usage.completion_tokens for r in records.values()))


async def _finished(events: AsyncIterator[Any]) -> Outcome:
    from orc.node.protocol.events import RunFinished

    result = None
    async for event in events:
        if isinstance(event, RunFinished):
            result = event.result
    if result is None:
        raise RuntimeError("the run ended without a result")
    return _outcome(result)


Side = Callable[[Path, str], Awaitable[Outcome]]  # (ensemble file, input) -> its outcome


# ---- the three sides ----

def _engine_side(orc: Any, engine: Any) -> Side:
    """Runs through an engine in this process (in-process, or Ray's driver)."""
    specs: dict[Path, Any] = {}

    async def run(ensemble: Path, question: str) -> Outcome:
        if ensemble not in specs:
            specs[ensemble] = await asyncio.to_thread(engine.preflight, orc.load(str(ensemble)))
        return await _finished(orc.holding_journal(engine.run(specs[ensemble], question)))

    return run


def _daemon_side(control: Any) -> Side:
    from orc.node.protocol.messages import RunRequest

    async def run(ensemble: Path, question: str) -> Outcome:
        request = RunRequest(reference=str(ensemble), input=question, cwd=str(ensemble.parent), json=True, seed=SEED)
        return await _finished(control.run(request))

    return run


async def _start_daemon(root: Path, lan: Any) -> Any:
    from tests.benchmarks.mesh import _Node, _status, _wait

    node = _Node(lan[0], root / "node-a", "node-a")
    node.home.mkdir()
    done = node.orc_node("init", "--name", node.name)
    if done.returncode != 0:
        raise RuntimeError(f"orc-node init failed: {done.stderr}")
    node.start("--model", MODEL, "--model", GEMMA, "--threads", str(THREADS), "--no-api")

    async def loaded() -> bool:
        status = await _status(node)
        return status is not None and all(any(m.id == model and m.loaded for m in status.description.models)
                                          for model in (MODEL, GEMMA))

    await _wait(loaded, 180, "the daemon to load its model", node, interval=0.3)
    return node


def _start_ray(home: Path) -> Any:
    from tests.node.ray.ray_cluster import start_cluster

    return start_cluster(home, ({f"orc-model:{MODEL}": 1, f"orc-model:{GEMMA}": 1},))


# ---- the measurements ----

async def _bounded(awaitable: Awaitable[Any]) -> Any:
    return await asyncio.wait_for(awaitable, RUN_TIMEOUT_S)


async def _examples(sides: dict[str, Side]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name in ("perspectives", "vote-yes-no"):
        ensemble = REPO / "ensembles" / f"{name}.yaml"
        question = "Should a family keep its photo archive on a home server?" if name == "perspectives" \
            else "Is the Pacific the largest ocean on Earth?"
        runs: dict[str, list[Outcome]] = {side: [] for side in sides}
        for run in sides.values():  # warm-up: actors created, runners up, prompts read once
            await _bounded(run(ensemble, question))
        for round_ in range(ROUNDS):
            order = list(sides)[round_ % len(sides):] + list(sides)[:round_ % len(sides)]
            for side in order:
                runs[side].append(await _bounded(sides[side](ensemble, question)))
        out[name] = runs
        _log(f"{name}: " + ", ".join(f"{s} {statistics.median(o.duration_s for o in r):.2f} s"
                                     for s, r in runs.items()))
    return out


async def _overhead(sides: dict[str, Side], ensemble: Path) -> dict[str, list[Outcome]]:
    runs: dict[str, list[Outcome]] = {side: [] for side in sides}
    for run in sides.values():
        await _bounded(run(ensemble, "warm-up"))
    for i in range(OVERHEAD_PAIRS):
        order = list(sides)[i % len(sides):] + list(sides)[:i % len(sides)]
        for side in order:
            runs[side].append(await _bounded(sides[side](ensemble, "What colour is the sky?")))
    return runs


async def _concurrent(side: Side, ensemble: Path) -> dict[str, Any]:
    async def one(i: int) -> tuple[Outcome | None, float, str | None]:
        began = time.monotonic()
        try:
            outcome = await side(ensemble, f"Question {i}: name a thing that is {COLOURS[i % len(COLOURS)]}.")
            return outcome, time.monotonic() - began, None
        except Exception as error:  # noqa: BLE001 - a refused run is counted and said, not fatal
            return None, time.monotonic() - began, f"{type(error).__name__}: {error}"

    await side(ensemble, "warm-up")
    began = time.monotonic()
    done = await _bounded(asyncio.gather(*(one(i) for i in range(CONCURRENT))))
    wall = time.monotonic() - began
    completed = [(o, s) for o, s, e in done if o is not None and o.status == "completed"]
    errors = sorted({e or (o.status if o else "?") for o, s, e in done if o is None or o.status != "completed"})
    latencies = sorted(s for _, s in completed)
    return {"wall_s": wall, "completed": len(completed), "errors": errors[:3],
            "latency_p50": statistics.median(latencies) if latencies else None,
            "latency_p95": latencies[int(0.95 * (len(latencies) - 1))] if latencies else None,
            "tokens": sum(o.completion_tokens for o, _ in completed)}


async def _measure(root: Path, lan: Any, cluster: Any) -> dict[str, Any]:
    from orc.node.api import Orc
    from orc.node.cli.orc_ray import ray_engine
    from orc.node.rpc.client import ControlClient

    work = root / "work"
    work.mkdir()
    (work / "one.yaml").write_text(ONE_TOKEN)
    (work / "short.yaml").write_text(SHORT)
    raw: dict[str, Any] = {"load_before": os.getloadavg()}
    with contextlib.ExitStack() as stack:
        (root / "here").mkdir()
        here = Orc(root / "here", cwd=work, n_threads=THREADS, seed=SEED)
        (root / "driver").mkdir()
        driver = Orc(root / "driver", cwd=work, n_threads=THREADS, seed=SEED)
        ray_side = _engine_side(driver, ray_engine(driver, cluster.address, THREADS, stack))
        node = await _start_daemon(root, lan)
        stack.callback(node.stop)
        control = ControlClient(node.socket)
        try:
            sides = {"in-process": _engine_side(here, here.engine()), "mesh": _daemon_side(control), "ray": ray_side}
            raw["examples"] = await _examples(sides)
            raw["overhead"] = await _overhead(sides, work / "one.yaml")
            _log("overhead: " + ", ".join(f"{s} {statistics.median(o.agent_s for o in r) * 1000:.1f} ms"
                                          for s, r in raw["overhead"].items()))
            raw["concurrent"] = {}
            for name, side in sides.items():
                raw["concurrent"][name] = await _concurrent(side, work / "short.yaml")
                _log(f"{CONCURRENT} concurrent on {name}: {raw['concurrent'][name]}")
        finally:
            await control.close()
            await here.close_runners()
    raw["load_after"] = os.getloadavg()
    return raw


def measure() -> dict[str, Any]:
    """Everything, or {"skipped": reason}."""
    from tests import netns

    reason = netns.unavailable_reason()
    if reason is not None:
        return {"skipped": reason}
    try:
        import ray  # noqa: F401
    except ImportError:
        return {"skipped": "ray is not installed (pip install -e '.[ray]')"}
    with tempfile.TemporaryDirectory(prefix="orc-ray-bench-") as folder:
        root = Path(folder)
        (root / "cluster").mkdir()
        cluster = _start_ray(root / "cluster")
        lan = netns.NamespaceLan.create(1)
        try:
            return asyncio.run(_measure(root, lan, cluster))
        finally:
            lan.close()
            cluster.stop()
            shutil.rmtree(cluster.temp, ignore_errors=True)


# ---- the report ----

def _median_ms(values: list[float]) -> float:
    return statistics.median(values) * 1000


def _paired(a: list[Outcome], b: list[Outcome], field: str) -> tuple[float, float, float]:
    """Median, and the middle half, of b − a in ms, pair by pair."""
    differences = sorted((getattr(y, field) - getattr(x, field)) * 1000 for x, y in zip(a, b))
    quarter = len(differences) // 4
    return statistics.median(differences), differences[quarter], differences[-quarter - 1]


def _same_text(runs: dict[str, list[Outcome]]) -> str:
    texts = {(side, tuple(sorted(o.outputs.items()))) for side, outcomes in runs.items() for o in outcomes}
    distinct = {text for _, text in texts}
    if len(distinct) == 1:
        return "every agent wrote the same text on every side and in every run"
    sides = {side: len({t for s, t in texts if s == side}) for side in runs}
    return "texts differ: " + ", ".join(f"{side} {n} distinct" for side, n in sides.items())


def rows(raw: dict[str, Any]) -> list[Row]:
    out = []
    for name, runs in raw["examples"].items():
        for side, outcomes in runs.items():
            durations = [o.duration_s for o in outcomes]
            ok = sum(o.status == "completed" for o in outcomes)
            out.append(Row(f"`{name}` (example), {side}: wall time", f"{statistics.median(durations):.2f} s",
                           f"median of {len(durations)}, {min(durations):.2f}–{max(durations):.2f} s; "
                           f"{ok}/{len(outcomes)} completed"))
        base = statistics.median(o.duration_s for o in runs["in-process"])
        out.append(Row(f"… `{name}`: Ray / in-process, mesh / in-process",
                       f"{statistics.median(o.duration_s for o in runs['ray']) / base:.2f}× / "
                       f"{statistics.median(o.duration_s for o in runs['mesh']) / base:.2f}×", _same_text(runs)))
    over = raw["overhead"]
    for side in SIDES:
        out.append(Row(f"one agent, 1 token, {side}: the agent, start to result",
                       f"{_median_ms([o.agent_s for o in over[side]]):.1f} ms",
                       f"median of {len(over[side])}; the whole run "
                       f"{_median_ms([o.duration_s for o in over[side]]):.1f} ms"))
    for side in ("mesh", "ray"):
        median, low, high = _paired(over["in-process"], over[side], "agent_s")
        run_median, _, _ = _paired(over["in-process"], over[side], "duration_s")
        label = "**Ray's overhead per agent**" if side == "ray" else "the mesh daemon's overhead per agent"
        out.append(Row(f"{label} ({side} minus in-process, paired)", f"**{median:+.1f} ms**" if side == "ray"
                       else f"{median:+.1f} ms", f"middle half {low:+.1f} to {high:+.1f} ms; whole runs {run_median:+.1f} ms"))
    for side in SIDES:
        c = raw["concurrent"][side]
        p50 = f"{c['latency_p50']:.1f}" if c["latency_p50"] is not None else "–"
        p95 = f"{c['latency_p95']:.1f}" if c["latency_p95"] is not None else "–"
        errors = f"; failed: {'; '.join(c['errors'])}" if c["errors"] else ""
        out.append(Row(f"{CONCURRENT} concurrent runs, {side}: wall time", f"{c['wall_s']:.1f} s",
                       f"{c['completed']}/{CONCURRENT} completed; a run's latency median {p50} s, p95 {p95} s; "
                       f"{c['tokens'] / c['wall_s']:.0f} generated tokens/s{errors}"))
    return out


def section(raw: dict[str, Any]) -> str:
    if "skipped" in raw:
        return f"## {TITLE}\n\nNot measured: {raw['skipped']}.\n"
    notes = (
        f"One machine, three ways to run its SmolLM2 ({THREADS} llama.cpp threads, 4 slots each): in-process "
        "(`orc run --local`'s engine, the model in a runner child of the benchmark's process); the mesh (one "
        "`orc-node` daemon in a network namespace, runs sent to its control socket as `orc run` sends them); "
        "Ray (a local cluster: a head serving nothing and one worker with `orc-model:smollm2-135m-instruct: 1` "
        "and `orc-model:gemma3-270m: 1`, so one actor of 4 slots per model; the benchmark's process is the "
        "driver `orc run --on ray://` makes). The daemon and the worker serve Gemma too, for the example vote "
        "spreads its samples over both models. All runs "
        f"use `--seed {SEED}`; the sides take turns in each round; each side ran every ensemble once first "
        "(actors created, runners up). The example ensembles are the repository's (ensembles/). The "
        "per-agent overhead is the agent's own time (started → result) of a one-agent ensemble generating "
        f"1 token, paired with the in-process run of the same round. For {CONCURRENT} concurrent runs, each a "
        f"one-agent ensemble of {CONCURRENT_TOKENS} greedy tokens with its own question, all start together "
        "from one process. 1-minute load average "
        f"{raw['load_before'][0]:.1f} before, {raw['load_after'][0]:.1f} after.\n\n"
        + _reading(raw))
    return standalone_section(TITLE, rows(raw), notes)


def _reading(raw: dict[str, Any]) -> str:
    over = raw["overhead"]
    ray_ms = _paired(over["in-process"], over["ray"], "agent_s")[0]
    mesh_ms = _paired(over["in-process"], over["mesh"], "agent_s")[0]
    c = raw["concurrent"]
    speed = {side: c[side]["wall_s"] for side in SIDES}
    ratios = ", ".join(
        f"`{name}` {statistics.median(o.duration_s for o in runs['ray']) / statistics.median(o.duration_s for o in runs['in-process']):.2f}×"
        for name, runs in raw["examples"].items())
    return (f"On Ray the example ensembles took, against their in-process time: {ratios}. "
            f"A generation on Ray costs {ray_ms:+.1f} ms per agent over the same generation in-process "
            f"(the daemon: {mesh_ms:+.1f} ms): the call to the actor, Ray's object store for each streamed "
            f"chunk and the actor's own event loop. {CONCURRENT} runs at once took {speed['ray']:.1f} s on "
            f"Ray, {speed['mesh']:.1f} s on the daemon and {speed['in-process']:.1f} s in-process "
            f"({speed['ray'] / speed['mesh']:.2f}× the daemon's time): one actor and one node both decode 4 "
            "sequences together, so the difference is each engine's own cost per run. Ray's case is many "
            "machines: a cluster's actors add their slots up, which one machine cannot show.")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--write", action="store_true", help="also put the section into docs/benchmarks.md")
    args = parser.parse_args(argv)
    text = section(measure())
    publish_section(TITLE, text, REPO / "docs" / "benchmarks.md" if args.write else None)
    return 0


if __name__ == "__main__":
    sys.exit(main())
