"""HTTP API benchmarks: the OpenAI-compatible API of real `orc-node` daemons (needs root).

    .venv/bin/python -m tests.benchmarks.api            # prints the Markdown section
    .venv/bin/python -m tests.benchmarks.api --write    # and puts it into docs/benchmarks.md
    from tests.benchmarks.api import api_section         # the same, as a string (run.py)

(run.py includes it in the whole report, unless `--skip-api`.) Two daemons, each in its own
network namespace (tests/netns.py), each with its API on its own 127.0.0.1:7780 and a key from
`orc-node api-key create`: A creates the mesh and serves smollm2-135m-instruct, B joins it and
serves gemma3-270m, both generating on one thread. Neither serves the other's model, so a
request for a model made to the other node's API must be placed on the peer over mutual TLS.
Measured, from a client process in the namespace of the node whose API it calls (httpx, one
keep-alive connection, the real key):

1. time to first token: streamed requests (`stream: true`), from sending the request to the
   first `data:` chunk with text, for each model through the API of the node that serves it
   (local) and through the other node's API (remote), the four cases in rotating order;
2. overhead per request: the same greedy generation of smollm2 on A (fixed prompt and seed, 32
   tokens, and 1 token for the fixed cost) through A's API, not streamed, against a whole
   `orc run --json` of a one-agent ensemble on A (the command-line process, Python's start-up
   included) and against that agent's own time inside the run (`finished_at - started_at`),
   the sides alternating.

The client that runs inside a namespace is this module too (`--worker client`).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.metadata
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.benchmarks.mesh import _Node, _Worker, _p95, _peer, _status, _wait
from tests.benchmarks.run import REPO, Row, publish_section, standalone_section

TITLE = "HTTP API: overhead per request and time to first token"
SMOL, GEMMA = "smollm2-135m-instruct", "gemma3-270m"
PROMPT_SYSTEM = "You are a concise assistant."
PROMPT_USER = "List three uses for a Raspberry Pi in a home network, one line each."
SEED = 1
THREADS = 1  # one generation thread a node: the two nodes share this machine's two cores
API_PORT = 7780  # the default listener; each namespace has its own loopback
KEY_ENV = "ORC_BENCH_API_KEY"  # the key reaches the client through its environment, not its argv
# Far above what the benchmark sends: it measures the API's path, not its rate limiter (120 a
# minute by default, in bursts of 20, which the back-to-back requests here would exceed).
REQUESTS_PER_MINUTE = 6000

OVERHEAD_TOKENS = (32, 1)  # a generation, and the fixed cost alone
OVERHEAD_WARMUP, OVERHEAD_PAIRS = 2, 20
TTFT_TOKENS = 8  # enough to see the stream go on after its first text
TTFT_WARMUP, TTFT_ROUNDS = 1, 20
PAUSE_S = 0.2  # between requests: the previous generation's llama.cpp threads go quiet
READY_S = 240  # for both daemons to load and measure their models (gemma's GGUF is assembled first)
REQUEST_S = 120  # the longest one request or one `orc run` may take before the benchmark gives up
RETRIES, RETRY_SPACING_S = 30, 1.0  # a warm-up retried while the API's view of the mesh fills
POLL_S = 0.1


def _log(message: str) -> None:
    print(f"[api bench] {message}", file=sys.stderr, flush=True)


def _emit(record: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(record) + "\n")
    sys.stdout.flush()


# ======================================================================================
# the client: runs inside a namespace, one JSON command per stdin line, one JSON line back
# ======================================================================================

def _messages(variant: int | None) -> list[dict[str, str]]:
    """The fixed prompt; with `variant`, its system prompt starts with that two-digit number, so
    that no two requests in a row share a prompt prefix the runtime could reuse from its cache."""
    system = PROMPT_SYSTEM if variant is None else f"Request {variant % 90 + 10}. {PROMPT_SYSTEM}"
    return [{"role": "system", "content": system}, {"role": "user", "content": PROMPT_USER}]


def _client_worker(base_url: str) -> None:
    """Calls the API at `base_url` with the key in KEY_ENV, over one kept-alive connection; runs
    `orc run` in this namespace when asked."""
    import httpx

    key = os.environ[KEY_ENV]
    orc = Path(sys.executable).with_name("orc")  # the console script, as a user runs it
    limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
    with httpx.Client(base_url=base_url, headers={"Authorization": f"Bearer {key}"}, limits=limits,
                      timeout=REQUEST_S) as http:
        deadline = time.monotonic() + 60
        while True:  # the listener starts once the node runs
            with contextlib.suppress(httpx.TransportError):
                if http.get("/health").status_code == 200:
                    break
            if time.monotonic() > deadline:
                raise RuntimeError(f"no answer from {base_url}/health within 60 s")
            time.sleep(POLL_S)
        _emit({"ready": True})
        for line in sys.stdin:
            command = json.loads(line)
            if command["op"] == "quit":
                return
            out: dict[str, Any] = {"seq": command["seq"]}
            try:
                if command["op"] == "complete":
                    out.update(_complete(http, command["model"], command["n"], command.get("variant")))
                elif command["op"] == "stream":
                    out.update(_stream(http, command["model"], command["n"], command.get("variant")))
                elif command["op"] == "cli":
                    out.update(_cli(orc, command["ensemble"]))
                else:
                    out["error"] = f"unknown op {command['op']!r}"
            except _Refused as refused:
                out.update(error=str(refused), status=refused.status)
            _emit(out)


class _Refused(Exception):
    """The API answered with an error status."""

    def __init__(self, status: int, body: str) -> None:
        super().__init__(f"HTTP {status}: {body[:500]}")
        self.status = status


def _body(model: str, max_tokens: int, variant: int | None, stream: bool) -> dict[str, Any]:
    return {"model": model, "messages": _messages(variant), "temperature": 0, "seed": SEED,
            "max_tokens": max_tokens, "stream": stream}


def _complete(http: Any, model: str, max_tokens: int, variant: int | None) -> dict[str, Any]:
    began = time.perf_counter()
    response = http.post("/v1/chat/completions", json=_body(model, max_tokens, variant, stream=False))
    elapsed = time.perf_counter() - began
    if response.status_code != 200:
        raise _Refused(response.status_code, response.text)
    reply = response.json()
    return {"ms": elapsed * 1000, "text": reply["choices"][0]["message"]["content"],
            "tokens": reply["usage"]["completion_tokens"], "node": reply["orc"]["nodes"][0]}


def _stream(http: Any, model: str, max_tokens: int, variant: int | None) -> dict[str, Any]:
    began = time.perf_counter()
    first = None
    text, node = "", None
    with http.stream("POST", "/v1/chat/completions", json=_body(model, max_tokens, variant, stream=True)) as response:
        if response.status_code != 200:
            raise _Refused(response.status_code, response.read().decode(errors="replace"))
        for line in response.iter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line.removeprefix("data: "))
            if "error" in chunk:
                raise _Refused(200, json.dumps(chunk))
            node = chunk.get("orc", {}).get("node", node)
            piece = chunk["choices"][0]["delta"].get("content") if chunk.get("choices") else None
            if piece:
                first = time.perf_counter() if first is None else first
                text += piece
    total = time.perf_counter() - began
    return {"first_ms": (first - began) * 1000 if first is not None else None, "total_ms": total * 1000,
            "text": text, "node": node}


def _cli(orc: Path, ensemble: str) -> dict[str, Any]:
    """A whole `orc run --json` of `ensemble` (this namespace's daemon runs it), timed as its
    user would time it, and the agent's own times from its result."""
    began = time.perf_counter()
    done = subprocess.run([str(orc), "run", ensemble, PROMPT_USER, "--json", "--quiet", "--seed", str(SEED)],
                          capture_output=True, text=True, timeout=REQUEST_S, cwd=str(Path(ensemble).parent))
    elapsed = time.perf_counter() - began
    if done.returncode != 0:
        raise _Refused(done.returncode, f"`orc run` failed: {done.stderr[-500:]}")
    result = json.loads(done.stdout)
    record = result["results"]["answer"]
    if result["status"] != "completed":
        raise _Refused(0, f"`orc run` ended {result['status']}: {record.get('error')}")
    return {"ms": elapsed * 1000, "agent_ms": (record["finished_at"] - record["started_at"]) * 1000,
            "run_ms": result["timing"]["duration_s"] * 1000, "text": record["output"],
            "tokens": record["usage"]["completion_tokens"], "node": record["node_id"]}


# ======================================================================================
# the orchestrator
# ======================================================================================

def _one_agent(max_tokens: int) -> str:
    """The one-agent ensemble whose run is the same generation as the API's request."""
    return (f"name: api-bench-{max_tokens}\nagents:\n  - name: answer\n    model: {SMOL}\n"
            f"    system_prompt: {json.dumps(PROMPT_SYSTEM)}\n    temperature: 0\n    max_tokens: {max_tokens}\n")


def _ready(models: tuple, model_id: str) -> bool:
    """`model_id` is among `models`, loaded and with its speed measured."""
    return any(m.id == model_id and m.loaded and m.decode_tokens_per_s is not None for m in models)


@dataclass(frozen=True)
class _Case:
    """One way of asking for a model: through which node's API, and where it should run."""

    model: str
    api: str  # "A" or "B"
    runs_on: str

    @property
    def label(self) -> str:
        return f"{self.model} via {self.api}"

    @property
    def local(self) -> bool:
        return self.api == self.runs_on


CASES = (_Case(SMOL, "A", "A"), _Case(SMOL, "B", "A"), _Case(GEMMA, "B", "B"), _Case(GEMMA, "A", "B"))


class _Client:
    """A client worker in one node's namespace, with that node's key."""

    def __init__(self, node: _Node, key: str, stderr: Path) -> None:
        self.worker = _Worker(node.ns, ["client", f"http://127.0.0.1:{API_PORT}"], {**node.env, KEY_ENV: key},
                              stderr, module="tests.benchmarks.api")

    def ask(self, op: str, **args: Any) -> dict[str, Any]:
        reply = self.worker.ask(op, timeout=REQUEST_S + 10, **args)
        if "error" in reply:
            raise RuntimeError(f"{op} {args} failed: {reply['error']}")
        return reply

    def warm(self, op: str, **args: Any) -> dict[str, Any]:
        """`ask`, retried while the API answers 404 or 503 (its node's view of the mesh lags)."""
        for _ in range(RETRIES):
            reply = self.worker.ask(op, timeout=REQUEST_S + 10, **args)
            if reply.get("status") not in (404, 503):
                break
            time.sleep(RETRY_SPACING_S)
        if "error" in reply:
            raise RuntimeError(f"warm-up {op} {args} failed: {reply['error']}")
        return reply


async def _measure(root: Path, lan: Any) -> dict[str, Any]:
    from orc.node.home import Home
    from orc.node.rpc.client import ControlClient

    results: dict[str, Any] = {"load_before": os.getloadavg()}
    a, b = (_Node(lan[i], root / name, name) for i, name in enumerate(("node-a", "node-b")))
    clients: list[_Client] = []
    keys: dict[str, str] = {}
    try:
        for node in (a, b):
            node.home.mkdir()
        done = a.orc_node("init", "--name", a.name)
        if done.returncode != 0:
            raise RuntimeError(f"orc-node init failed: {done.stderr}")
        for node in (a, b):
            Home.locate(node.home).config_file.write_text(f"api:\n  requests_per_minute: {REQUESTS_PER_MINUTE}\n")
            made = node.orc_node("api-key", "create", "--name", "bench")
            if made.returncode != 0 or not made.stdout.strip().startswith("orc_"):
                raise RuntimeError(f"orc-node api-key create failed on {node.name}: {made.stderr}")
            keys[node.name] = made.stdout.strip()
        _log("starting A (smollm2) and B (gemma3-270m, joining) ...")
        a.start("--model", SMOL, "--threads", str(THREADS))
        a_id = (await _wait(lambda: _status(a), 60, "A's daemon to answer", a, interval=POLL_S)).description.node_id

        async def own_ready(node: _Node, model: str) -> Any:
            status = await _status(node)
            return status if status is not None and _ready(status.description.models, model) else None

        # B starts only once A has measured its model: a node advertises the speed it measured
        # when it loaded, and a peer calls an Offer faster than twice that a lie. A speed measured
        # while B assembled and measured gemma on the same two cores would be too low to believe
        # A's honest estimates later (docs: node/coordinator/observations.py, LIE_SLACK).
        measured = {"A": await _wait(lambda: own_ready(a, SMOL), READY_S, "A to load and measure smollm2", a,
                                     interval=0.5)}
        invite = a.orc_node("invite")
        if invite.returncode != 0 or not invite.stdout.strip().startswith("orc1-"):
            raise RuntimeError(f"orc-node invite failed: {invite.stderr}")
        b.start("--join", invite.stdout.strip(), "--name", b.name, "--model", GEMMA, "--threads", str(THREADS))
        b_id = (await _wait(lambda: _status(b), 90, "B's daemon to answer", b, interval=POLL_S)).description.node_id

        async def both_ready() -> bool:
            """Each node has its own model ready and lists the other's loaded and measured (`orc peers`)."""
            for node, own, other_id, other in ((a, SMOL, b_id, GEMMA), (b, GEMMA, a_id, SMOL)):
                status = await _status(node)
                if status is None or not _ready(status.description.models, own):
                    return False
                async with ControlClient(node.socket) as control:
                    peer = _peer(await control.peers(), other_id)
                if peer is None or peer.description is None or not _ready(peer.description.models, other):
                    return False
            return True

        await _wait(both_ready, READY_S, "A and B to see each other's model loaded and measured", b, interval=0.5)
        # The run's JSON names a node by its id, the API's `orc.nodes` by its name.
        results["nodes"] = {a_id: "A", b_id: "B", a.name: "A", b.name: "B"}
        measured["B"] = await own_ready(b, GEMMA)
        results["speeds"] = {name: next([m.prefill_tokens_per_s, m.decode_tokens_per_s]
                                        for m in status.description.models if m.id == model)
                             for (name, status), model in zip(measured.items(), (SMOL, GEMMA))}
        for node in (a, b):
            clients.append(_Client(node, keys[node.name], root / f"client-{node.name}.err"))
        client = {"A": clients[0], "B": clients[1]}
        for each in clients:
            each.worker.ready()

        # ---- 1. time to first token, each model local and remote ----
        # First: its remote requests are Offers to a peer, judged against the speeds the peer
        # advertises, and the overhead pairs below (one prompt, always in the runtime's cache) would
        # feed A's speed with prompts read in no time.
        _log("time to first token, local and remote ...")
        variant = iter(range(1 << 20))  # every request a new prompt prefix: each is read whole
        for case in CASES:
            client[case.api].warm("stream", model=case.model, n=TTFT_TOKENS, variant=next(variant))
        results["load_ttft"] = os.getloadavg()
        ttft: dict[str, list[dict]] = {case.label: [] for case in CASES}
        for index in range(TTFT_WARMUP + TTFT_ROUNDS):
            shift = index % len(CASES)  # each case first in turn
            for case in CASES[shift:] + CASES[:shift]:
                time.sleep(PAUSE_S)
                reply = client[case.api].ask("stream", model=case.model, n=TTFT_TOKENS, variant=next(variant))
                if index >= TTFT_WARMUP:
                    ttft[case.label].append(reply)
        results["ttft"] = ttft

        # ---- 2. overhead per request: A's API against `orc run` on A ----
        _log("overhead per request: API vs orc run ...")
        ensembles = {}
        for n in OVERHEAD_TOKENS:
            ensembles[n] = root / f"one-{n}.yaml"
            ensembles[n].write_text(_one_agent(n))
        sides = {"api": lambda n: client["A"].ask("complete", model=SMOL, n=n),
                 "cli": lambda n: client["A"].ask("cli", ensemble=str(ensembles[n]))}
        for n in OVERHEAD_TOKENS:
            client["A"].warm("complete", model=SMOL, n=n)
            for _ in range(OVERHEAD_WARMUP):
                for side in sides.values():
                    time.sleep(PAUSE_S)
                    side(n)
        results["load_overhead"] = os.getloadavg()
        overhead: dict[int, dict[str, list[dict]]] = {n: {"api": [], "cli": []} for n in OVERHEAD_TOKENS}
        for index in range(OVERHEAD_PAIRS):
            for n in OVERHEAD_TOKENS:
                for side in ("api", "cli") if index % 2 == 0 else ("cli", "api"):  # ABBA against drift
                    time.sleep(PAUSE_S)
                    overhead[n][side].append(sides[side](n))
        results["overhead"] = {str(n): runs for n, runs in overhead.items()}
        results["load_after"] = os.getloadavg()
        return results
    except BaseException:
        for node in (a, b):  # the logs go with the temporary folder: show what the daemons said
            if node.logs:
                _log(f"{node.name}'s daemon log, last lines:\n{node.log_tail(40)}")
        raise
    finally:
        for each in clients:
            with contextlib.suppress(Exception):  # the namespaces' close kills it anyway
                each.worker.close()
        for node in (a, b):
            with contextlib.suppress(Exception):
                node.stop()


# ======================================================================================
# the section
# ======================================================================================

def _ms(values: list[float]) -> str:
    return f"{statistics.median(values):.1f} ms"


def _spread(values: list[float]) -> str:
    return f"median of {len(values)}, p95 {_p95(values):.1f} ms"


def _diff(values: list[float]) -> str:
    return f"{statistics.median(values):+.1f} ms"


def format_rows(r: dict[str, Any]) -> tuple[list[Row], str]:
    """The table and the notes (how measured, then the reading) of measurements `r`."""
    ids = r["nodes"]
    rows: list[Row] = []
    findings: dict[int, dict[str, float]] = {}
    for n in OVERHEAD_TOKENS:
        api, cli = r["overhead"][str(n)]["api"], r["overhead"][str(n)]["cli"]
        api_ms, cli_ms, agent_ms = [x["ms"] for x in api], [x["ms"] for x in cli], [x["agent_ms"] for x in cli]
        own = [x["ms"] - y["agent_ms"] for x, y in zip(api, cli)]
        cli_minus_api = [y["ms"] - x["ms"] for x, y in zip(api, cli)]
        findings[n] = {"own": statistics.median(own), "own_p95": _p95(own), "cli": statistics.median(cli_minus_api),
                       "api": statistics.median(api_ms), "agent": statistics.median(agent_ms)}
        texts = {x["text"] for x in api + cli}
        where = {ids.get(x["node"], x["node"]) for x in api + cli}
        tokens = "/".join(str(t) for t in sorted({x["tokens"] for x in api + cli}))
        check = (f"{tokens} token{'' if tokens == '1' else 's'}; "
                 + ("the same text on both sides" if len(texts) == 1 else f"**{len(texts)} different texts**")
                 + ("; every generation ran on A" if where == {"A"} else f"; **ran on {', '.join(sorted(where))}**"))
        rows += [
            Row(f"{n} token{'' if n == 1 else 's'}: A's API, not streamed, request to whole response", _ms(api_ms),
                f"{_spread(api_ms)}; {check}"),
            Row("… `orc run --json` of a one-agent ensemble on A, the whole command-line process", _ms(cli_ms),
                f"{_spread(cli_ms)}; the run itself (`timing.duration_s`) "
                f"{statistics.median(x['run_ms'] for x in cli):.1f} ms"),
            Row("… that agent's own time in the run (`finished_at − started_at`)", _ms(agent_ms),
                _spread(agent_ms)),
            Row("… **API − agent time: the API's own overhead per request**", f"**{_diff(own)}**",
                f"median of {len(own)} paired differences, p95 {_p95(own):+.1f} ms"),
            Row("… `orc run` − API", _diff(cli_minus_api),
                f"median of {len(cli_minus_api)} paired differences, p95 {_p95(cli_minus_api):+.1f} ms"),
        ]
    ttft = r["ttft"]
    gaps: dict[str, tuple[float, float]] = {}
    for model in (SMOL, GEMMA):
        local, remote = (next(c for c in CASES if c.model == model and c.local is side) for side in (True, False))
        runs = {case: ttft[case.label] for case in (local, remote)}
        first = {case: [x["first_ms"] for x in runs[case] if x["first_ms"] is not None] for case in runs}
        gap = [y - x for x, y in zip(first[local], first[remote])]
        gaps[model] = (statistics.median(gap), _p95(gap))
        for case in (local, remote):
            where = {ids.get(x["node"], x["node"]) for x in runs[case]}
            placed = (f"ran on {case.runs_on} every time" if where == {case.runs_on}
                      else f"**ran on {', '.join(sorted(map(str, where)))}**")
            missing = len(runs[case]) - len(first[case])
            rows.append(Row(f"time to first token, {model} on {case.runs_on}, through {case.api}'s API "
                            f"({'local' if case.local else 'remote: placed on the peer over mTLS'})",
                            _ms(first[case]),
                            f"{_spread(first[case])}; whole {TTFT_TOKENS}-token stream "
                            f"{statistics.median(x['total_ms'] for x in runs[case]):.0f} ms; {placed}"
                            + (f"; **{missing} streams without text**" if missing else "")))
        rows.append(Row(f"… **{model}: remote − local**", f"**{_diff(gap)}**",
                        f"median of {len(gap)} differences within a round, p95 {_p95(gap):+.1f} ms"))
    return rows, _notes(r, findings, gaps)


def _version(name: str) -> str:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return "?"


def _notes(r: dict[str, Any], overhead: dict[int, dict[str, float]],
           gaps: dict[str, tuple[float, float]]) -> str:
    """How it was measured, and what the numbers show (words chosen by the numbers)."""
    long, short = overhead[OVERHEAD_TOKENS[0]], overhead[OVERHEAD_TOKENS[1]]
    how = (f"Two `orc-node` daemons, each in its own network namespace (tests/netns.py), each with its API on its "
           f"own `127.0.0.1:{API_PORT}` and a key from `orc-node api-key create`: A created the mesh and serves "
           f"{SMOL}, B joined it and serves {GEMMA}, each with `--threads {THREADS}`, so a model asked of the other "
           "node's API is placed on the peer (`Offer` and `Execute` over mutual TLS). Requests come from a client "
           "process in the namespace of the node whose API it calls: httpx "
           f"{_version('httpx')}, one kept-alive connection, the real key (the nodes' rate limit raised to "
           f"{REQUESTS_PER_MINUTE} a minute, so as not to measure the limiter). Overhead: a chat completion of "
           f"{SMOL} (greedy, seed {SEED}, the same system and user prompt) through A's API, not streamed, against "
           "`orc run --json --seed 1` of a one-agent ensemble with that system prompt and input, run by the same "
           f"client process in A's namespace, the sides alternating, {OVERHEAD_PAIRS} pairs for each token count "
           f"after {OVERHEAD_WARMUP} discarded; the agent's own time is its `finished_at − started_at` in the run's "
           "JSON. The prompt is the same every time on both sides, so the runtime reuses its cached prompt alike. "
           f"Time to first token: streamed requests of {TTFT_TOKENS} tokens, from sending the request to the first "
           "`data:` chunk with text, for each model through the API of the node that serves it (local) and through "
           f"the other's (remote), the four cases in rotating order, {TTFT_ROUNDS} rounds after "
           f"{TTFT_WARMUP} discarded; every request's system prompt starts with its own number, so the runtime "
           "reads each prompt whole and the times include reading it. Differences are paired: within a pair, or "
           "within a round. p95 of 20 is the 19th smallest. 1-minute load average "
           f"{r['load_before'][0]:.1f} before, {r['load_overhead'][0]:.1f} at the overhead pairs, "
           f"{r['load_ttft'][0]:.1f} at the streams, {r['load_after'][0]:.1f} after; uvicorn "
           f"{_version('uvicorn')}, starlette {_version('starlette')}. Speeds the nodes measured when they loaded "
           "their models (B was started once A had measured): "
           + "; ".join(f"{name} {model}, prompt {prefill:.0f} and decode {decode:.1f} tokens/s"
                       for (name, (prefill, decode)), model in zip(r["speeds"].items(), (SMOL, GEMMA))) + ".")
    def more(ms: float) -> str:
        return f"{abs(ms):.1f} ms {'more' if ms >= 0 else 'less'}"

    reading = (f"Through the API, a one-token generation takes {more(short['own'])} than the agent's own time in a "
               f"run, and a {OVERHEAD_TOKENS[0]}-token one {more(long['own'])} (medians of paired differences; "
               f"p95 {short['own_p95']:+.1f} and {long['own_p95']:+.1f} ms"
               + ("; the longer pairs compare two generations whose own times vary by more than the API adds, so "
                  "the one-token pairs are the cleaner measure). "
                  if long["own_p95"] - long["own"] > 2 * max(short["own_p95"] - short["own"], 1.0) else "). ")
               + "The agent's time already includes placing the generation (a run's agent starts "
               "before its node is chosen), so what the API adds is the HTTP exchange on a kept-alive connection, "
               "the key check, reading the request and writing the JSON answer. "
               + (f"A whole `orc run` of the same generation takes {short['cli']:.0f} ms longer than the API "
                  f"request for one token, {long['cli']:.0f} ms for {OVERHEAD_TOKENS[0]}: the command-line "
                  "process around the run (Python's start-up and "
                  "imports, the control socket, the run's journal), paid once per question, which the API's "
                  "client does not pay. "
                  if short["cli"] > 0 and long["cli"] > 0 else
                  f"`orc run` − API is {short['cli']:+.0f} ms for one token, {long['cli']:+.0f} ms for "
                  f"{OVERHEAD_TOKENS[0]}: the command line was not slower here. ")
               + "Placing a request on the peer instead of on the node whose API is called (an `Offer` round "
               "trip, `Execute` over mutual TLS and the tokens relayed back) moves the first token by "
               + " and ".join(f"{gap:+.1f} ms for {model} (p95 of the paired differences {p95:+.0f} ms)"
                              for model, (gap, p95) in gaps.items())
               + ("; single requests vary by more than that. " if all(abs(gap) < p95 for gap, p95 in gaps.values())
                  else ". ")
               + "Both nodes and both clients share one machine's two cores, and the peer is reached over a "
               "bridge between namespaces of that machine, not a real LAN. No target is set for these numbers.")
    return f"{how}\n\n{reading}"


def api_section(raw: Path | None = None) -> str:
    """The API benchmark as a Markdown section (runs it: a few minutes, needs root); with `raw`,
    the measurements are also written there as JSON."""
    from tests import netns

    reason = netns.unavailable_reason()
    if reason is not None:
        return f"## {TITLE}\n\nNot run: {reason}.\n"
    with tempfile.TemporaryDirectory(prefix="orc-api-bench-") as folder:
        lan = netns.NamespaceLan.create(2)
        try:
            results = asyncio.run(_measure(Path(folder), lan))
        finally:
            lan.close()
    if raw is not None:
        raw.write_text(json.dumps(results, indent=1))
    return standalone_section(TITLE, *format_rows(results))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--write", action="store_true", help="put the section into --out")
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "benchmarks.md")
    parser.add_argument("--raw", type=Path, help="also write the raw measurements there, as JSON")
    parser.add_argument("--worker", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        kind, *rest = args.worker
        if kind != "client":
            parser.error(f"unknown worker {kind}")
        _client_worker(rest[0])
        return 0
    publish_section(TITLE, api_section(args.raw), args.out if args.write else None)
    return 0


if __name__ == "__main__":
    sys.exit(main())
