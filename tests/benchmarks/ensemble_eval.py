"""Ensemble primitives evaluated: one sample, a vote, a cascade and a vote across two models,
answering a labeled task set on one node and on a mesh of three (needs root).

    .venv/bin/python -m tests.benchmarks.ensemble_eval                 # all 300 items, 1 and 3 nodes
    .venv/bin/python -m tests.benchmarks.ensemble_eval --limit 10 --nodes 1   # a quick check
    from tests.benchmarks.ensemble_eval import ensemble_eval_section          # run.py

(run.py includes it unless --skip-ensemble-eval.) The task set is tests/benchmarks/eval/tasks.jsonl
(tasks.py: sentiment of a review, yes/no facts, sums; `--limit N` takes the first N items of each
kind, balanced when N is even). The four strategies are the ensembles in tests/benchmarks/eval/:
one greedy sample of SmolLM2 (one-sample.yaml); a 5-sample majority vote of SmolLM2 at
temperature 0.8 (vote-5.yaml); a cascade whose first level is a 3-sample vote of SmolLM2,
accepted when its agreement is at least 0.67, else one greedy generation of Gemma 3 270M
(cascade.yaml); a 6-sample vote spread over both models (vote-both.yaml). Each item is one
`orc run` of the strategy's ensemble, its question as the input (eval/scoring.py), sent to the
coordinating daemon's control socket as the command line sends it (`--seed 1`); its deliverable
is scored by eval/scoring.py.

The nodes are real `orc-node` daemons in network namespaces (tests/netns.py), started and stopped
here by pid: for one node, a daemon serving both models with 2 threads each; for three, A creates
the mesh and B and C join with `orc-node invite` tokens, each serving both models with 1 thread
(the three share this machine's cores: the mesh shows what the primitives do and cost when their
samples are placed across nodes, not more compute). Up to CONCURRENCY runs are in flight at once,
so samples of different items decode together as well as a vote's own. Per strategy and kind it
records accuracy, replies the scorer could read, prompt and completion tokens (every generation of
the run, as the nodes report them) and the wall time of the kind's items, and writes the section
"Ensemble primitives: vote and cascade, evaluated" into docs/benchmarks.md (--out; --no-write only
prints it; --raw PATH keeps every item's result as JSON).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from tests.benchmarks.eval import scoring, tasks as task_set
from tests.benchmarks.eval.tasks import KINDS, Task
from tests.benchmarks.run import REPO, replace_section

TITLE = "Ensemble primitives: vote and cascade, evaluated"
EVAL_DIR = Path(__file__).with_name("eval")
SMOL, GEMMA = "smollm2-135m-instruct", "gemma3-270m"
MODELS = (SMOL, GEMMA)
CONCURRENCY = 4  # runs in flight at once: enough for samples of several items to share a batch
SEED = 1
WARM_UP = Task("warm-up", "arithmetic", "What is 2 + 2?", "4", None)  # not scored


@dataclass(frozen=True)
class Strategy:
    key: str
    label: str
    ensemble: str  # a file in tests/benchmarks/eval/


STRATEGIES = (
    Strategy("one", "one sample (SmolLM2, greedy)", "one-sample.yaml"),
    Strategy("vote5", "5-sample vote (SmolLM2, T 0.8)", "vote-5.yaml"),
    Strategy("cascade", "cascade: SmolLM2 vote of 3 → Gemma", "cascade.yaml"),
    Strategy("vote-both", "6-sample vote over SmolLM2 + Gemma", "vote-both.yaml"),
)


@dataclass(frozen=True)
class ItemResult:
    """One item answered by one strategy."""

    id: str
    kind: str
    status: str  # the run's status
    reply: object  # the deliverable
    given: str | None
    correct: bool
    prompt_tokens: int
    completion_tokens: int
    run_s: float
    nodes: list[str]  # the nodes the agent's generations ran on (names)
    model: str | None  # the model whose generation gave the output
    detail: dict = field(default_factory=dict)  # the result's "vote" / "cascade"
    error: str | None = None


def _log(message: str) -> None:
    print(f"[ensemble eval] {message}", file=sys.stderr, flush=True)


# ---- the nodes ----

async def _start_nodes(root: Path, lan: Any, count: int) -> tuple[list[Any], dict[str, str]]:
    """Daemons in `lan`'s namespaces serving both models: A creates the mesh, the others join it.
    Returns the nodes (A first) and their names by node id, once A sees every node's models loaded."""
    from tests.benchmarks.mesh import _is_live, _Node, _peer, _status, _wait

    threads = "2" if count == 1 else "1"
    names = ("node-a", "node-b", "node-c")[:count]
    nodes = [_Node(lan[i], root / name, name) for i, name in enumerate(names)]
    serve = [arg for model in MODELS for arg in ("--model", model)]
    for node in nodes:
        node.home.mkdir()
    a = nodes[0]
    done = a.orc_node("init", "--name", a.name)
    if done.returncode != 0:
        raise RuntimeError(f"orc-node init failed: {done.stderr}")
    a.start(*serve, "--threads", threads, "--no-api")
    status = await _wait(lambda: _status(a), 120, "A's daemon to answer", a, interval=0.2)
    ids = {status.description.node_id: a.name}
    for node in nodes[1:]:
        done = a.orc_node("invite")
        if done.returncode != 0 or not done.stdout.strip().startswith("orc1-"):
            raise RuntimeError(f"orc-node invite failed: {done.stderr}")
        node.start("--join", done.stdout.strip(), "--name", node.name, *serve, "--threads", threads, "--no-api")

        async def joined(n: Any = node) -> str | None:  # a node has no identity until it has joined
            status = await _status(n)
            return status.description.node_id if status is not None and status.description.node_id else None

        ids[await _wait(joined, 180, f"{node.name} to join", node, interval=0.2)] = node.name

    def loaded(models: Any) -> bool:
        return all(any(m.id == model and m.loaded for m in models) for model in MODELS)

    async def ready() -> bool:
        own = await _status(a)
        if own is None or not loaded(own.description.models):
            return False
        from orc.node.rpc.client import ControlClient

        async with ControlClient(a.socket) as control:
            peers = await control.peers()
        return all(_is_live(p := _peer(peers, node_id)) and p.description is not None
                   and loaded(p.description.models) for node_id in list(ids)[1:])

    await _wait(ready, 300, "every node to have both models loaded", a, interval=0.5)
    await _quiet(lan)
    return nodes, ids


def _cpu_seconds(lan: Any) -> float:
    """CPU time used so far by every process in `lan`'s namespaces (daemons and their runners)."""
    total = 0.0
    for ns in lan:
        for pid in _namespace_pids(ns.name):
            with contextlib.suppress(OSError, IndexError, ValueError):
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
                total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def _namespace_pids(namespace: str) -> list[int]:
    done = subprocess.run(["ip", "netns", "pids", namespace], capture_output=True, text=True, timeout=30)
    return [int(word) for word in done.stdout.split() if word.isdigit()]


async def _quiet(lan: Any, window_s: float = 3.0, busy_s: float = 0.15, timeout_s: float = 240.0) -> None:
    """Wait until the nodes have stopped working on their own: after loading a model a node
    measures its speeds (batched ones too), and a trial's first runs, made during that, took 7 to
    17 s where later ones took about one."""
    began = time.monotonic()
    before = _cpu_seconds(lan)
    while time.monotonic() < began + timeout_s:
        await asyncio.sleep(window_s)
        now = _cpu_seconds(lan)
        if now - before < busy_s * window_s:
            _log(f"the nodes are idle after {time.monotonic() - began:.0f} s")
            return
        before = now
    _log(f"the nodes were still busy after {timeout_s:.0f} s; measuring anyway")


async def _ask(control: Any, ensemble: Path, task: Task, names: dict[str, str]) -> ItemResult:
    """One `orc run` of `ensemble` on `task`'s question, through the coordinator's control socket."""
    from orc.node.protocol.events import RunFinished
    from orc.node.protocol.messages import RunRequest
    from orc.scheduler.values import thaw

    request = RunRequest(reference=str(ensemble), input=scoring.question(task), cwd=str(ensemble.parent),
                         json=True, seed=SEED)
    result = None
    async for event in control.run(request):
        if isinstance(event, RunFinished):
            result = event.result
    if result is None:
        raise RuntimeError(f"the run of {ensemble.name} on {task.id} ended without a result")
    record = dict(result.results)["answer"]
    scored = scoring.score(task, result.deliverable)
    detail = thaw(getattr(record, "detail", None) or {})
    return ItemResult(task.id, task.kind, result.status, thaw(result.deliverable), scored.given, scored.correct,
                      record.usage.prompt_tokens, record.usage.completion_tokens,
                      result.finished_at - result.started_at, [names.get(n, n) for n in record.nodes],
                      record.model, detail, record.error)


async def _evaluate(root: Path, lan: Any, count: int, items: list[Task], strategies: tuple[Strategy, ...],
                    concurrency: int) -> dict[str, Any]:
    from orc.node.rpc.client import ControlClient

    from orc.node.protocol.errors import NodeError

    out: dict[str, Any] = {"nodes": count, "load_before": os.getloadavg(), "strategies": {}}
    nodes, names = await _start_nodes(root, lan, count)
    control = ControlClient(nodes[0].socket)
    gate = asyncio.Semaphore(concurrency)

    async def one(strategy: Strategy, task: Task) -> ItemResult:
        async with gate:
            try:
                return await _ask(control, EVAL_DIR / strategy.ensemble, task, names)
            except NodeError as error:  # the daemon refused or lost the run: a wrong answer, said so
                _log(f"{strategy.key} {task.id}: {type(error).__name__}: {error}")
                return ItemResult(task.id, task.kind, "refused", None, None, False, 0, 0, 0.0, [], None, {},
                                  f"{type(error).__name__}: {error}")

    try:
        for strategy in strategies:
            # Warm-up, not counted: a strategy's first run loads nothing, but wakes the runners.
            await one(strategy, WARM_UP)
            per_kind: dict[str, Any] = {}
            for kind in KINDS:
                chosen = [t for t in items if t.kind == kind]
                if not chosen:
                    continue
                began = time.monotonic()
                results = await asyncio.gather(*(one(strategy, t) for t in chosen))
                wall = time.monotonic() - began
                per_kind[kind] = {"wall_s": wall, "items": [asdict(r) for r in results]}
                right = sum(r.correct for r in results)
                _log(f"{count} node(s), {strategy.key}, {kind}: {right}/{len(results)} right, {wall:.1f} s")
            out["strategies"][strategy.key] = per_kind
        out["load_after"] = os.getloadavg()
        return out
    except BaseException:
        for node in nodes:
            _log(f"{node.name}'s daemon log, last lines:\n{node.log_tail(40)}")
        raise
    finally:
        await control.close()
        for node in nodes:
            with contextlib.suppress(Exception):
                node.stop()


def measure(limit: int | None, node_counts: tuple[int, ...], strategies: tuple[Strategy, ...] = STRATEGIES,
            concurrency: int = CONCURRENCY, raw_path: Path | None = None) -> dict[str, Any]:
    """Run the evaluation; the raw results by node count ("1", "3"), or {"skipped": reason}."""
    from tests import netns

    reason = netns.unavailable_reason()
    if reason is not None:
        return {"skipped": reason}
    items = _select(task_set.load(), limit)
    raw: dict[str, Any] = {"limit": limit, "concurrency": concurrency, "began": time.time()}
    for count in node_counts:
        _log(f"{count} node(s): {len(items)} items × {len(strategies)} strategies ...")
        with tempfile.TemporaryDirectory(prefix="orc-ensemble-eval-") as folder:
            lan = netns.NamespaceLan.create(count)
            try:
                raw[str(count)] = asyncio.run(_evaluate(Path(folder), lan, count, items, strategies, concurrency))
                raw[str(count)]["limit"] = limit
            finally:
                lan.close()
        if raw_path is not None:  # after each node count: a run stopped later keeps what it measured
            raw_path.write_text(json.dumps(raw, indent=1, default=str))
    return raw


def _select(items: list[Task], limit: int | None) -> list[Task]:
    """The first `limit` items of each kind (all without a limit), in the file's order."""
    if limit is None:
        return items
    taken: Counter[str] = Counter()
    chosen = []
    for task in items:
        if taken[task.kind] < limit:
            taken[task.kind] += 1
            chosen.append(task)
    return chosen


# ---- the report ----

@dataclass(frozen=True)
class Totals:
    """One strategy's items of one kind (or of every kind), added up."""

    n: int
    correct: int
    readable: int
    failed: int  # runs that did not complete (a vote none of whose samples gave a ballot, ...)
    prompt_tokens: int
    completion_tokens: int
    wall_s: float
    agreements: tuple[float, ...]
    abstained: tuple[int, ...]  # votes: samples that cast no ballot, per item
    escalated: int  # cascade: items the first level did not accept
    escalated_correct: int
    escalated_readable: int  # of those, replies the scorer could read
    nodes: tuple[tuple[str, int], ...]  # generations' nodes: items that used each

    @property
    def accuracy(self) -> float:
        return self.correct / self.n if self.n else 0.0

    @property
    def tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


def totals(kinds: list[dict[str, Any]]) -> Totals:
    items = [item for kind in kinds for item in kind["items"]]
    agreements = tuple(float(i["detail"]["vote"]["agreement"]) for i in items
                       if isinstance(i["detail"].get("vote"), dict) and "agreement" in i["detail"]["vote"])
    abstained = tuple(int(i["detail"]["vote"]["abstained"]) for i in items
                      if isinstance(i["detail"].get("vote"), dict) and "abstained" in i["detail"]["vote"])
    escalated = [i for i in items if _escalated(i)]
    nodes = Counter(name for i in items for name in i["nodes"])
    return Totals(len(items), sum(i["correct"] for i in items), sum(i["given"] is not None for i in items),
                  sum(i["status"] != "completed" for i in items), sum(i["prompt_tokens"] for i in items),
                  sum(i["completion_tokens"] for i in items), sum(kind["wall_s"] for kind in kinds), agreements,
                  abstained, len(escalated), sum(i["correct"] for i in escalated),
                  sum(i["given"] is not None for i in escalated), tuple(sorted(nodes.items())))


def _escalated(item: dict[str, Any]) -> bool:
    """For a cascade's item: its first level was not accepted. The detail says so; a result
    without one gave its output from the last level's model (only the cascade's count is shown)."""
    cascade = item["detail"].get("cascade")
    if isinstance(cascade, dict):
        return cascade.get("level", 0) > 0
    return item.get("model") == GEMMA


def _pct(t: Totals) -> str:
    return f"{100 * t.accuracy:.0f}% ({t.correct}/{t.n})"


def _notes(t: Totals, key: str, several_nodes: bool) -> str:
    notes = []
    if t.agreements and key != "cascade":  # a cascade's vote detail is the accepted level's: always unanimous here
        notes.append(f"mean agreement {sum(t.agreements) / len(t.agreements):.2f}")
    if t.abstained and key != "cascade":
        notes.append(f"{sum(t.abstained) / len(t.abstained):.1f} samples abstained per item")
    if key == "cascade":
        notes.append(f"Gemma asked for {t.escalated} of {t.n}: {t.escalated_readable} readable, "
                     f"{t.escalated_correct} right")
    if t.failed:
        notes.append(f"{t.failed} run(s) failed")
    if several_nodes and t.nodes:
        notes.append("items with generations on " + ", ".join(f"{name} {count}" for name, count in t.nodes))
    return "; ".join(notes)


def _table(result: dict[str, Any]) -> list[str]:
    several = result["nodes"] > 1
    lines = ["| strategy | kind | accuracy | readable replies | tokens per item (prompt + completion) | wall time | notes |",
             "|---|---|---|---|---|---|---|"]
    for strategy in STRATEGIES:
        per_kind = result["strategies"].get(strategy.key)
        if not per_kind:
            continue
        for kind, data in per_kind.items():
            t = totals([data])
            lines.append(f"| {strategy.label} | {kind} | {_pct(t)} | {t.readable}/{t.n} | "
                         f"{t.prompt_tokens / t.n:.0f} + {t.completion_tokens / t.n:.1f} | "
                         f"{t.wall_s:.1f} s ({t.wall_s / t.n:.2f} s/item) | {_notes(t, strategy.key, several)} |")
        t = totals(list(per_kind.values()))
        lines.append(f"| **{strategy.label}** | **all** | **{_pct(t)}** | {t.readable}/{t.n} | "
                     f"{t.prompt_tokens / t.n:.0f} + {t.completion_tokens / t.n:.1f} | "
                     f"**{t.wall_s:.1f} s** | {_notes(t, strategy.key, several)} |")
    return lines


def _difference(a: Totals, b: Totals) -> str:
    """`a` against `b` in points, and whether that is more than about two standard errors."""
    points = 100 * (a.accuracy - b.accuracy)
    spread = 200 * ((a.accuracy * (1 - a.accuracy) + b.accuracy * (1 - b.accuracy)) / max(a.n, 1)) ** 0.5
    verdict = "within noise" if abs(points) < spread or points == 0 else ("better" if points > 0 else "worse")
    return f"{points:+.0f} points ({verdict}: two standard errors are ±{spread:.0f} at n={a.n})"


def reading(result: dict[str, Any]) -> str:
    """What the numbers of one node count say, in sentences that follow the numbers."""
    by = result["strategies"]
    if "one" not in by:
        return ""
    sentences = []
    kinds = list(by["one"])
    for key, name in (("vote5", "The 5-sample vote"), ("vote-both", "The vote over both models")):
        if key not in by:
            continue
        parts = [f"{kind} {_difference(totals([by[key][kind]]), totals([by['one'][kind]]))}" for kind in kinds]
        whole, one = totals(list(by[key].values())), totals(list(by["one"].values()))
        sentences.append(f"{name} against one sample: " + "; ".join(parts) + f". It read {whole.tokens / one.tokens:.1f}× "
                         f"the tokens and took {whole.wall_s / one.wall_s:.1f}× the wall time.")
    if "cascade" in by:
        c, one = totals(list(by["cascade"].values())), totals(list(by["one"].values()))
        kept = c.n - c.escalated
        text = (f"The cascade kept SmolLM2's unanimous answer for {kept} of {c.n} items ({c.correct - c.escalated_correct} "
                f"of them right) and sent {c.escalated} ({100 * c.escalated / c.n:.0f}%) on to Gemma, whose reply the "
                f"scorer could read for {c.escalated_readable} and which answered {c.escalated_correct} right; overall it scored {_difference(c, one)} against one sample")
        if "vote5" in by:
            text += f", {_difference(c, totals(list(by['vote5'].values())))} against the 5-sample vote"
        sentences.append(text + f"; it cost {c.tokens / one.tokens:.1f}× the tokens of one sample and "
                         f"{c.wall_s / one.wall_s:.1f}× its wall time.")
    return " ".join(sentences)


def _mesh_reading(raw: dict[str, Any]) -> str:
    if "1" not in raw or "3" not in raw:
        return ""
    parts = []
    for strategy in STRATEGIES:
        one, three = raw["1"]["strategies"].get(strategy.key), raw["3"]["strategies"].get(strategy.key)
        if one and three:
            a, b = totals(list(one.values())), totals(list(three.values()))
            parts.append(f"{strategy.label}: {b.wall_s / a.wall_s:.2f}× the wall time, accuracy "
                         f"{100 * b.accuracy:.0f}% against {100 * a.accuracy:.0f}%")
    loads = [f"{raw[count]['load_before'][0]:.1f} and {raw[count]['load_after'][0]:.1f}" for count in ("1", "3")]
    return ("Three nodes against one (same seeds; the samples' node and thread count change the arithmetic, "
            "so sampled texts may differ): " + "; ".join(parts) + ". The two were measured one after the other on a "
            f"machine other work shared (1-minute load average {loads[0]} around one node, {loads[1]} around three), "
            "and one node runs each model on 2 threads where each of the three runs 1: on two busy cores, "
            "llama.cpp's threads wait on each other, so the wall times compare the set-ups under this load, not "
            "the mesh's overhead (docs/benchmarks.md's mesh section measures that).")


def _items(limit: int | None) -> str:
    """Which items a run with `limit` answered, in words."""
    counts = Counter(t.kind for t in _select(task_set.load(), limit))
    return (", ".join(f"{counts[k]} {k}" for k in KINDS if counts[k]) + f" items ({sum(counts.values())} in all"
            + (f", the first {limit} of each kind" if limit is not None else "") + ")")


def format_section(raw: dict[str, Any]) -> str:
    from tests.benchmarks.run import machine

    lines = [f"## {TITLE}", ""]
    if "skipped" in raw:
        return "\n".join(lines + [f"Not run: {raw['skipped']}.", ""])
    limits = {raw[count].get("limit", raw["limit"]) for count in ("1", "3") if count in raw}
    lines += [
        "The task set is tests/benchmarks/eval/tasks.jsonl, written for orc: short reviews to call positive or "
        "negative, yes/no questions of general knowledge, and additions and subtractions of one- and two-digit "
        "numbers (eval/tasks.py; balanced labels). "
        + (f"This run used {_items(raw['limit'])}. " if len(limits) <= 1 else "")
        + "The strategies are the ensembles in tests/benchmarks/eval/: one greedy sample of SmolLM2-135M; a "
        "5-sample majority vote of SmolLM2 at temperature 0.8; a cascade whose first level is a 3-sample "
        "SmolLM2 vote accepted when `${agreement} >= 0.67` (with three samples, only when all three agree: "
        "2/3 is 0.6667) and whose last level is one greedy generation of Gemma 3 270M; a 6-sample vote at "
        "temperature 0.8 spread over both models. Gemma 3 270M is the pretrained model, without a chat "
        "template: orc prompts it with a plain transcript (System:, User:, Assistant:; docs/runtimes.md). All share one system prompt asking for 'Answer: X' first "
        "and `max_tokens: 12`; a vote's ballot is the answer extracted by the pattern the scorer also uses "
        "(eval/scoring.py), so an unreadable reply is wrong for the scorer and an abstention for a vote. "
        f"Each item is one `orc run --seed {SEED}` sent to the coordinating daemon's control socket; "
        f"{raw['concurrency']} runs are in flight at once, so samples batch across items too. Accuracy "
        "counts wrong and missing answers as wrong; tokens are every generation of the run (prompt + "
        "completion); wall time is from the first item of a kind to the last one's end. Measuring starts "
        "once the daemons have loaded both models and gone idle, after one warm-up run of each strategy.",
        "",
    ]
    for count in ("1", "3"):
        result = raw.get(count)
        if result is None:
            continue
        if count == "1":
            lines.append("**One node**: one `orc-node` daemon in a network namespace serving both models, "
                         "2 threads each, 4 slots.")
        else:
            lines.append("**Three nodes**: A creates the mesh and B and C join it (`orc-node invite`), each "
                         "daemon in its own network namespace serving both models with 1 thread; runs are "
                         "coordinated by A, which places every sample. All three share this machine's two "
                         "cores, so the mesh cannot add compute here.")
        if len(limits) > 1:
            lines[-1] += f" It answered {_items(result.get('limit', raw['limit']))}."
        lines += ["", *_table(result), ""]
        text = reading(result)
        if text:
            lines += [text, ""]
        load = result["load_before"][0], result["load_after"][0]
        lines += [f"1-minute load average {load[0]:.1f} before, {load[1]:.1f} after.", ""]
    text = _mesh_reading(raw)
    if text:
        lines += [text, ""]
    lines += ["Differences are judged against about two standard errors of the difference of two "
              "proportions at this many items: small gains are indistinguishable from chance.", ""]
    where = next(line for line in machine() if line.startswith("- machine:"))
    when = next(line for line in machine() if line.startswith("- date:"))
    lines += [f"{where.removeprefix('- ')}; {when.removeprefix('- ')}.", ""]
    return "\n".join(lines)


def ensemble_eval_section(limit: int | None = None, nodes: tuple[int, ...] = (1, 3), raw_path: Path | None = None,
                          strategies: tuple[Strategy, ...] = STRATEGIES) -> str:
    """The evaluation as a Markdown section (runs it; needs root)."""
    return format_section(measure(limit, nodes, strategies, raw_path=raw_path))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--limit", type=int, help="the first N items of each kind (default: all)")
    parser.add_argument("--nodes", choices=("1", "3", "both"), default="both")
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "benchmarks.md")
    parser.add_argument("--no-write", action="store_true", help="print the section, leave --out alone")
    parser.add_argument("--strategies", default=",".join(s.key for s in STRATEGIES),
                        help="which strategies, by key, comma-separated (default: all four)")
    parser.add_argument("--raw", type=Path, help="also write every item's result here, as JSON")
    parser.add_argument("--from-raw", type=Path, help=argparse.SUPPRESS)  # re-format a --raw file, run nothing
    args = parser.parse_args(argv)
    if args.limit is not None and args.limit < 1:
        parser.error("--limit must be at least 1")
    keys = [key.strip() for key in args.strategies.split(",") if key.strip()]
    unknown = [key for key in keys if key not in {s.key for s in STRATEGIES}]
    if unknown or not keys:
        parser.error(f"--strategies: unknown {unknown}; known: {', '.join(s.key for s in STRATEGIES)}")
    chosen = tuple(s for s in STRATEGIES if s.key in keys)
    if args.from_raw:
        text = format_section(json.loads(args.from_raw.read_text()))
    else:
        nodes = (1, 3) if args.nodes == "both" else (int(args.nodes),)
        text = ensemble_eval_section(args.limit, nodes, args.raw, chosen)
    print(text)
    if not args.no_write:
        replace_section(args.out, TITLE, text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
