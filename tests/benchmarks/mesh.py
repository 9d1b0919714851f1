"""Mesh benchmarks: real `orc-node` daemons on a LAN of network namespaces (needs root).

    .venv/bin/python -m tests.benchmarks.mesh        # prints the Markdown section
    from tests.benchmarks.mesh import mesh_section    # the same, as a string (run.py)

Three daemons on one bridge (tests/netns.py): A creates the mesh, B and C join with tokens from
`orc-node invite`; all serve smollm2-135m-instruct. Measured, against DESIGN.md section 10:

1. mTLS round trips: from B's namespace, with B's identity, to A: a TCP connect, a TCP + mutual
   TLS handshake, a new gRPC channel plus its first `Describe`, and `Describe` on a warm channel;
2. per-agent remote overhead: `Execute` on A from B (greedy, fixed seed, 64 tokens, and 1 token
   for the fixed cost) against the same generation through the same runtime class in a process
   in A's namespace, in alternating pairs; A and the local side generate on one thread;
3. discovery: C's first start (`--join`) and then its restarts as a member (plain `orc-node
   start`, after a long and after short absences), timed until its control socket answers and
   until A lists it verified; then C dies (SIGKILL, or its cable is pulled: the veth goes down,
   nothing is sent) and A is timed until it marks C dead;
4. footprint: RSS and CPU of idle daemons, with no model loaded and with smollm2 loaded;
5. per-agent overhead of remote placement end to end, through a coordinator daemon: a one-agent
   ensemble run on A with the agent kept on A (`placement: {local_only: true}`), against the same
   ensemble run on C, which serves no smollm2, so that A must be offered it and run it (the raw
   `Offer` round trip, B to A, is measured with step 2 for the breakdown);
6. a fan-out: three independent 64-token agents and a gather step, run from A on a mesh of three
   daemons that serve smollm2 on one thread each, placed by orc and pinned one agent per node
   (alternately), against the same on A alone (B and C stopped).

The helpers that run inside namespaces are this module too (`--worker client|local`).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.metadata
import json
import os
import platform
import signal
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
SMOL = "smollm2-135m-instruct"
PLACEHOLDER = "idle-placeholder"  # a catalog entry whose file is not a model: it fails to load, nothing is imported
PROMPT_SYSTEM = "You are a concise assistant."
PROMPT_USER = "List three uses for a Raspberry Pi in a home network, one line each."
MAX_TOKENS = 64
SEED = 1
PORT = 7733
# Generation threads on A and in the local comparison: one, so the second core stays free for the
# client process and gRPC, as it would be on separate devices (two llama.cpp threads on two busy
# cores stall on each other and swamp a 5 ms difference).
EXEC_THREADS = 1

TCP_RUNS, TLS_RUNS, COLD_RUNS, WARM_RUNS = 20, 20, 10, 300
WARM_SPACING_S = 0.025  # one Describe every 25 ms: 40 calls/s
EXEC_PAIRS = 12
SHORT_TOKENS, SHORT_PAIRS = 1, 30  # a one-token generation: the fixed per-agent cost, less noise
DISCOVERY_REPS = 6  # alternately SIGKILL and cable pulled
OFFER_RUNS = 30  # raw Offer round trips, B -> A, each lease then used by a one-token Execute
ONE_TOKENS, ONE_WARMUP, ONE_PAIRS = 1, 2, 20  # one-agent ensemble through a coordinator, on itself / on a peer
FANOUT_TOKENS, GATHER_TOKENS = 64, 16
FANOUT_WARMUP, FANOUT_RUNS = 1, 5
FANOUT_SPACING_S = 1.5  # before a run that places nothing on a choice of nodes (pinned, or one node)
IDLE_SECONDS = 10.0
POLL_S = 0.02


def _log(message: str) -> None:
    print(f"[mesh bench] {message}", file=sys.stderr, flush=True)


# ======================================================================================
# workers: run inside a namespace, one JSON command per stdin line, one JSON line back
# ======================================================================================

def _messages() -> tuple[Any, ...]:
    from orc.node.models.runtimes.base import ChatMessage

    return (ChatMessage("system", PROMPT_SYSTEM), ChatMessage("user", PROMPT_USER))


def _params(max_tokens: int) -> Any:
    from orc.node.models.runtimes.base import GenerationParams

    return GenerationParams(temperature=0.0, max_tokens=max_tokens, seed=SEED)


def _emit(record: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(record) + "\n")
    sys.stdout.flush()


async def _commands():
    loop = asyncio.get_running_loop()
    while True:
        line = await loop.run_in_executor(None, sys.stdin.readline)
        if not line:
            return
        command = json.loads(line)
        if command.get("op") == "quit":
            return
        yield command


async def _client_worker(home: Path, address: str, node_id: str) -> None:
    """B's side: orc's own PeerClient with B's identity, calling A."""
    from orc.node.trust.ids import server_name
    from orc.node.trust.store import IdentityStore
    from orc.node.rpc.client import PeerClient
    from orc.node.protocol.messages import (
        AgentPayload,
        ExecuteRequest,
        ExecutionFailed,
        ExecutionResult,
        ExecutionStarted,
        ExecutionTokens,
        OfferRequest,
    )

    identity = IdentityStore(home / "identity").load()
    creds = (identity.key_pem, identity.certificate_pem, identity.ca_certificate_pem)
    host, port = address.rsplit(":", 1)
    peer = PeerClient(node_id, address, *creds)
    description = await peer.describe()
    sha = next(m.sha256 for m in description.models if m.id == SMOL)
    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    tls.load_verify_locations(cadata=identity.ca_certificate_pem.decode())
    tls.load_cert_chain(str(home / "identity" / "node.crt"), str(home / "identity" / "node.key"))
    tls.set_alpn_protocols(["h2"])
    _emit({"ready": True})

    async for command in _commands():
        op, n = command["op"], command.get("n", 1)
        out: dict[str, Any] = {"seq": command["seq"]}
        if op == "tcp":
            times = []
            for _ in range(n):
                began = time.perf_counter()
                with socket.create_connection((host, int(port)), timeout=5):
                    times.append(time.perf_counter() - began)
            out["ms"] = [t * 1000 for t in times]
        elif op == "tls":
            times = []
            for _ in range(n):
                began = time.perf_counter()
                raw = socket.create_connection((host, int(port)), timeout=5)
                with tls.wrap_socket(raw, server_hostname=server_name(node_id)) as wrapped:
                    times.append(time.perf_counter() - began)
                    out["tls_version"] = wrapped.version()
            out["ms"] = [t * 1000 for t in times]
        elif op == "cold":
            times = []
            for _ in range(n):
                began = time.perf_counter()
                async with PeerClient(node_id, address, *creds) as fresh:
                    await fresh.describe()
                    times.append(time.perf_counter() - began)
            out["ms"] = [t * 1000 for t in times]
        elif op == "warm":
            # Paced below the mesh server's per-peer rate limit (50 calls/s sustained, burst 200).
            times = []
            for index in range(10 + n):
                began = time.perf_counter()
                await peer.describe()
                if index >= 10:
                    times.append(time.perf_counter() - began)
                await asyncio.sleep(max(0.0, WARM_SPACING_S - (time.perf_counter() - began)))
            out["ms"] = [t * 1000 for t in times]
        elif op == "exec":
            request = ExecuteRequest(execution_id=uuid.uuid4().hex, run_id="bench", agent="a", lease_id="",
                                     deadline_ms=0, payload=AgentPayload(SMOL, sha, _messages(), _params(n)))
            began = time.perf_counter()
            started = first = None
            async for event in peer.execute(request):
                now = time.perf_counter()
                if isinstance(event, ExecutionStarted):
                    started = now
                elif isinstance(event, ExecutionTokens):
                    first = now if first is None else first
                elif isinstance(event, ExecutionResult):
                    out.update(total_ms=(now - began) * 1000, text=event.output,
                               tokens=event.usage.completion_tokens)
                elif isinstance(event, ExecutionFailed):
                    raise RuntimeError(f"Execute failed: {event}")  # noqa: TRY004 - not a type check
            out["started_ms"] = (started - began) * 1000 if started else None
            out["first_ms"] = (first - began) * 1000 if first else None
        elif op == "offer":
            # What a coordinator asks before it binds (node/coordinator/placer.py `_offer`); each lease is then
            # used by a one-token Execute, as a coordinator would, so none is left holding A's lane.
            times, refused = [], []
            for index in range(n):
                offer = OfferRequest(run_id="bench-offer", agent=f"o{index}", model_id=SMOL, model_sha256=sha,
                                     prompt_tokens=40, max_tokens=SHORT_TOKENS)
                began = time.perf_counter()
                reply = await peer.offer(offer)
                times.append((time.perf_counter() - began) * 1000)
                if not reply.accepted:
                    refused.append(reply.reason)
                    continue
                request = ExecuteRequest(execution_id=uuid.uuid4().hex, run_id="bench-offer", agent=f"o{index}",
                                         lease_id=reply.lease_id, deadline_ms=0,
                                         payload=AgentPayload(SMOL, sha, _messages(), _params(SHORT_TOKENS)))
                async for event in peer.execute(request):
                    if isinstance(event, ExecutionFailed):
                        raise RuntimeError(f"Execute on a lease failed: {event}")
                await asyncio.sleep(0.05)
            out.update(ms=times, refused=refused)
        _emit(out)
    await peer.close()


async def _local_worker(home: Path) -> None:
    """A's side without the mesh: the daemon's runtime class, on A's own copy of the model."""
    from orc.node.models.catalog import Catalog
    from orc.node.home import Home
    from orc.node.models.runtimes.base import GenerationDone, TokenChunk
    from orc.node.models.runtimes.llama_cpp import LlamaCppRuntime

    entry = Catalog(Home.locate(home).models_dir).prepare(SMOL)
    runtime = LlamaCppRuntime(n_threads=EXEC_THREADS)  # as A's daemon builds it (`--threads`)

    async def once(max_tokens: int) -> dict[str, Any]:
        began = time.perf_counter()
        first = None
        result: dict[str, Any] = {}
        async for event in runtime.generate(entry, _messages(), _params(max_tokens)):
            now = time.perf_counter()
            if isinstance(event, TokenChunk):
                first = now if first is None else first
            elif isinstance(event, GenerationDone):
                result = {"total_ms": (now - began) * 1000, "text": event.text,
                          "tokens": event.usage.completion_tokens}
        result["first_ms"] = (first - began) * 1000 if first else None
        return result

    await runtime.load(entry)
    await once(MAX_TOKENS)  # warm-up
    _emit({"ready": True})
    async for command in _commands():
        _emit({"seq": command["seq"], **await once(command["n"])})


# ======================================================================================
# the orchestrator: daemons, polling, measurements
# ======================================================================================

def _python() -> str:
    candidate = REPO / ".venv" / "bin" / "python"
    return str(candidate) if candidate.exists() else sys.executable


@dataclass
class _Node:
    ns: Any  # netns.Namespace
    home: Path
    name: str
    process: subprocess.Popen | None = None
    logs: list[Path] = field(default_factory=list)

    @property
    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k != "ORC_HOME"}
        env.update(ORC_HOME=str(self.home), PYTHONUNBUFFERED="1")
        return env

    @property
    def socket(self) -> Path:
        return self.home / "orc-node.sock"

    def orc_node(self, *args: str, timeout: float = 90) -> subprocess.CompletedProcess[str]:
        return self.ns.run([_python(), "-m", "orc.node.cli.orc_node", *args], env=self.env, timeout=timeout)

    def orc(self, *args: str, cwd: Path | None = None, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return self.ns.run([_python(), "-m", "orc.node.cli.orc", *args], env=self.env, cwd=cwd, timeout=timeout)

    def start(self, *args: str) -> float:
        """`orc-node start ARGS` in the background; the monotonic time just before spawning it."""
        assert self.process is None or self.process.poll() is not None, f"{self.name} already runs"
        log = self.home / f"daemon-{len(self.logs)}.log"
        self.logs.append(log)
        with log.open("w") as out:
            began = time.monotonic()
            self.process = self.ns.popen([_python(), "-m", "orc.node.cli.orc_node", "start", *args],
                                         env=self.env, stdout=out, stderr=subprocess.STDOUT)
        return began

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            if sig == signal.SIGKILL:
                os.killpg(self.process.pid, sig)
            else:
                self.process.send_signal(sig)
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)
        self.process = None

    def log_tail(self, lines: int = 30) -> str:
        text = "\n".join(p.read_text(errors="replace") for p in self.logs if p.exists())
        return "\n".join(text.splitlines()[-lines:])


async def _status(node: _Node, timeout: float = 1.0) -> Any | None:
    """The daemon's NodeStatus, or None if nothing answers on its control socket yet."""
    from orc.node.rpc.client import ControlClient
    from orc.node.protocol.errors import NodeError

    try:
        async with ControlClient(node.socket) as client:
            return await client.status(timeout=timeout)
    except NodeError:
        return None


async def _wait(predicate, timeout: float, what: str, node: _Node | None = None, interval: float = POLL_S):
    deadline = time.monotonic() + timeout
    while True:
        if node is not None and node.process is not None and node.process.poll() is not None:
            raise RuntimeError(f"{node.name}'s daemon exited {node.process.returncode}:\n{node.log_tail()}")
        result = await predicate()
        if result:
            return result
        if time.monotonic() > deadline:
            tail = f"\n{node.name}'s log:\n{node.log_tail()}" if node is not None else ""
            raise RuntimeError(f"timed out after {timeout:.0f} s waiting for {what}{tail}")
        await asyncio.sleep(interval)


def _peer(peers, node_id: str):
    return next((p for p in peers if p.id == node_id), None)


def _is_live(peer) -> bool:
    return peer is not None and peer.verified and peer.state in ("verified", "degraded")


def _model_loaded(peer) -> bool:
    return (_is_live(peer) and peer.description is not None
            and any(m.id == SMOL and m.loaded for m in peer.description.models))


# ---- /proc ----

def _proc_status(pid: int) -> dict[str, int]:
    """VmRSS, VmHWM, RssAnon, RssFile, RssShmem of a process, in KiB."""
    values = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmRSS", "VmHWM", "RssAnon", "RssFile", "RssShmem"):
            values[key] = int(rest.split()[0])
    return values


def _cpu_seconds(pid: int) -> float:
    text = Path(f"/proc/{pid}/stat").read_text()
    fields = text[text.rfind(")") + 2:].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def _idle(pid: int, seconds: float) -> dict[str, float]:
    """CPU % (of one core) over `seconds` and the memory at the end."""
    cpu0, t0 = _cpu_seconds(pid), time.monotonic()
    await asyncio.sleep(seconds)
    cpu1, t1 = _cpu_seconds(pid), time.monotonic()
    return {"cpu_percent": 100 * (cpu1 - cpu0) / (t1 - t0), **_proc_status(pid)}


# ---- workers, driven from here ----

class _Worker:
    """A `--worker` of a benchmark module (this one unless `module` says another), run in `ns`."""

    def __init__(self, ns: Any, args: list[str], env: dict[str, str], stderr: Path,
                 module: str = "tests.benchmarks.mesh") -> None:
        from tests import netns

        self._stderr_path = stderr
        with stderr.open("w") as err:
            self.process = ns.popen([_python(), "-m", module, "--worker", *args], env=env,
                                    cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err, text=True)
        self.lines = netns.JsonLines(self.process)
        self._seq = 0

    def _wait(self, predicate, timeout: float) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            try:
                return self.lines.wait_for(predicate, 0.5)
            except TimeoutError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"benchmark worker did not answer in {timeout:.0f} s "
                                       f"(exit code {self.process.poll()}):\n"
                                       f"{self._stderr_path.read_text(errors='replace')[-3000:]}") from None

    def ready(self, timeout: float = 120) -> None:
        self._wait(lambda r: r.get("ready"), timeout)

    def ask(self, op: str, timeout: float = 120, **args: Any) -> dict:
        self._seq += 1
        seq = self._seq
        self.process.stdin.write(json.dumps({"op": op, "seq": seq, **args}) + "\n")
        self.process.stdin.flush()
        return self._wait(lambda r: r.get("seq") == seq, timeout)

    def close(self) -> None:
        if self.process.poll() is None:
            try:
                self.process.stdin.write(json.dumps({"op": "quit"}) + "\n")
                self.process.stdin.flush()
                self.process.wait(timeout=10)
            except (OSError, subprocess.TimeoutExpired):
                self.process.kill()
                self.process.wait(timeout=5)


# ---- statistics ----

def _median(values: list[float]) -> float:
    return statistics.median(values)


def _p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]


def _mib(kib: float) -> str:
    return f"{kib / 1024:.0f} MiB"


def _mib_mb(kib: float) -> str:
    return f"{kib / 1024:.0f} MiB ({kib * 1024 / 1e6:.0f} MB)"


# ---- the run ----

async def _track(node: _Node, node_id: str, control_a: Any, began: float, timeout: float = 90) -> dict[str, float]:
    """Seconds from `began` until `node`'s control socket answers, A lists it verified, and A
    lists its model loaded and measured."""
    marks: dict[str, float] = {}
    while not {"socket", "verified", "loaded"} <= set(marks):
        if node.process.poll() is not None:
            raise RuntimeError(f"{node.name}'s daemon exited:\n{node.log_tail()}")
        if "socket" not in marks and node.socket.exists() and await _status(node, timeout=0.5) is not None:
            marks["socket"] = time.monotonic()
        peer = _peer(await control_a.peers(), node_id) if node_id else None
        now = time.monotonic()
        if "verified" not in marks and _is_live(peer):
            marks["verified"] = now
        if "loaded" not in marks and _model_loaded(peer):
            marks["loaded"] = now
        if now - began > timeout:
            raise RuntimeError(f"{node.name} not seen within {timeout:.0f} s (got {sorted(marks)}):\n"
                               f"{node.log_tail()}")
        await asyncio.sleep(POLL_S)
    return {k: v - began for k, v in marks.items()}


def _libraries(pid: int) -> dict[str, bool]:
    maps = Path(f"/proc/{pid}/maps").read_text()
    return {"libllama": "libllama" in maps, "libmlx": "libmlx" in maps, "numpy": "numpy" in maps}


# ---- ensembles run through a coordinator daemon ----

ONE_TASK = "Say hi."
FANOUT_TASK = "Write the list."
FANOUT_LISTS = ("fruits", "hand tools", "cities")


def _one_agent(local_only: bool) -> str:
    """A one-agent ensemble; with `local_only` its agent stays on the coordinator."""
    placement = "    placement: {local_only: true}\n" if local_only else ""
    return (f"name: one-{'here' if local_only else 'anywhere'}\nagents:\n  - name: answer\n    model: {SMOL}\n"
            f"    system_prompt: {PROMPT_SYSTEM}\n    temperature: 0\n    max_tokens: {ONE_TOKENS}\n{placement}")


def _slug(what: str) -> str:
    return what.replace(" ", "-")


def _fan_out(pin: dict[str, str | None] | None = None) -> str:
    """Three independent agents on one model, each made to write all its tokens (a long list),
    and a gather step that waits for all three. `pin` maps an agent (a list's subject, or "pick")
    to the tag of the node it must run on, or None to keep it on the coordinator."""
    pin = pin or {}

    def placement(key: str) -> list[str]:
        if key not in pin:
            return []
        tag = pin[key]
        return ["    placement: {local_only: true}" if tag is None else f"    placement: {{require_tags: [{tag}]}}"]

    lines = ["name: fan-out" + ("-pinned" if pin else ""), "agents:"]
    for what in FANOUT_LISTS:
        lines += [f"  - name: {_slug(what)}", f"    model: {SMOL}",
                  f"    system_prompt: Write a numbered list of thirty {what}, one per line, and nothing else.",
                  "    temperature: 0", f"    max_tokens: {FANOUT_TOKENS}", *placement(what)]
    lines += ["  - name: pick", f"    depends_on: [{', '.join(_slug(w) for w in FANOUT_LISTS)}]", f"    model: {SMOL}",
              "    system_prompt: Name one item from each list, in one line.", "    temperature: 0",
              f"    max_tokens: {GATHER_TOKENS}", *placement("pick")]
    return "\n".join(lines) + "\n"


async def _run(node: _Node, ensemble: Path, text: str) -> dict[str, Any]:
    """`orc run ENSEMBLE TEXT --json --seed SEED` as the command line sends it to `node`'s
    daemon (its control socket); the `--json` object. Raises unless every agent completed."""
    from orc.node.protocol.events import RunFinished
    from orc.node.rpc.client import ControlClient
    from orc.node.protocol.messages import RunRequest

    request = RunRequest(reference=str(ensemble), input=text, cwd=str(ensemble.parent), json=True, seed=SEED)
    result = None
    async with ControlClient(node.socket) as client:
        async for event in client.run(request):
            if isinstance(event, RunFinished):
                result = event.result.to_json()
    if result is None or result["status"] != "completed":
        raise RuntimeError(f"run of {ensemble.name} on {node.name} did not complete: {result}\n{node.log_tail()}")
    return result


def _cli_run(node: _Node, ensemble: Path, text: str) -> dict[str, Any]:
    """The same through the real `orc run --json` in `node`'s namespace (a warm-up, and the proof
    that the command line takes this path)."""
    done = node.orc("run", str(ensemble), text, "--json", "--quiet", "--seed", str(SEED), cwd=ensemble.parent)
    if done.returncode != 0:
        raise RuntimeError(f"`orc run {ensemble.name}` on {node.name} exited {done.returncode}: {done.stderr}\n"
                           f"{node.log_tail()}")
    return json.loads(done.stdout)


def _agent_ms(result: dict[str, Any], agent: str) -> float:
    record = result["results"][agent]
    return (record["finished_at"] - record["started_at"]) * 1000


async def _measure(root: Path, mesh: Any) -> dict[str, Any]:
    from orc.node.models.catalog import Catalog
    from orc.node.home import Home
    from orc.node.rpc.client import ControlClient

    results: dict[str, Any] = {"load_before": os.getloadavg()}
    phases: dict[str, float] = {}
    a, b, c = (_Node(mesh[i], root / name, name) for i, name in enumerate(("node-a", "node-b", "node-c")))
    for node in (a, b, c):
        node.home.mkdir()
    nodes = (a, b, c)
    workers: list[_Worker] = []
    control_a = ControlClient(a.socket)
    control_c = ControlClient(c.socket)
    phase = time.monotonic()

    def lap(name: str) -> None:
        nonlocal phase
        now = time.monotonic()
        phases[name] = now - phase
        phase = now
        _log(f"  {name}: {phases[name]:.0f} s")

    async def live(node_id: str) -> bool:
        return _is_live(_peer(await control_a.peers(), node_id))

    async def not_live(node_id: str) -> bool:
        return not await live(node_id)

    try:
        # ---- set-up: A creates the mesh, B joins, then C joins alone (timed) ----
        _log("starting A, joining B, then C ...")
        done = a.orc_node("init", "--name", a.name)
        if done.returncode != 0:
            raise RuntimeError(f"orc-node init failed: {done.stderr}")
        a.start("--model", SMOL, "--threads", str(EXEC_THREADS))
        a_id = (await _wait(lambda: _status(a), 60, "A's daemon to answer", a, interval=0.1)).description.node_id
        tokens = []
        for _ in range(2):
            done = a.orc_node("invite")
            if done.returncode != 0 or not done.stdout.strip().startswith("orc1-"):
                raise RuntimeError(f"orc-node invite failed: {done.stderr}")
            tokens.append(done.stdout.strip())
        b.start("--join", tokens[0], "--name", b.name, "--model", SMOL)
        b_id = (await _wait(lambda: _status(b), 90, "B's daemon to answer", b, interval=0.1)).description.node_id

        async def b_warm() -> bool:
            return _model_loaded(_peer(await control_a.peers(), b_id))

        await _wait(b_warm, 180, "A to see B verified with its model loaded", b, interval=0.1)
        await asyncio.sleep(1)
        began = c.start("--join", tokens[1], "--name", c.name, "--model", SMOL)
        c_id = ""
        while not c_id:  # C has no identity until it has joined
            status = await _status(c, timeout=0.5)
            c_id = status.description.node_id if status is not None else ""
            if c.process.poll() is not None or time.monotonic() - began > 90:
                raise RuntimeError(f"C did not join:\n{c.log_tail()}")
            await asyncio.sleep(POLL_S)
        results["join"] = await _track(c, c_id, control_a, began)
        c.stop()  # C is a member now; it comes back with a plain `orc-node start` below
        stopped = time.monotonic()
        lap("set-up")

        # ---- 1. mTLS round trips, B -> A ----
        _log("mTLS round trips ...")
        client = _Worker(b.ns, ["client", str(b.home), f"{a.ns.ip}:{PORT}", a_id], b.env, root / "client.err")
        workers.append(client)
        client.ready()
        tcp = client.ask("tcp", n=TCP_RUNS)["ms"]
        tls_reply = client.ask("tls", n=TLS_RUNS)
        cold = client.ask("cold", n=COLD_RUNS)["ms"]
        warm = client.ask("warm", n=WARM_RUNS)["ms"]
        results["rtt"] = {"tcp": tcp, "tls": tls_reply["ms"], "tls_version": tls_reply.get("tls_version"),
                          "cold": cold, "warm": warm}
        lap("round trips")

        # ---- 2. remote Execute vs the same generation in A's namespace ----
        _log("Execute vs local generation ...")
        local = _Worker(a.ns, ["local", str(a.home)], a.env, root / "local.err")
        workers.append(local)
        local.ready()
        client.ask("exec", n=MAX_TOKENS, timeout=120)  # warm-up of the remote path
        results["load_exec"] = os.getloadavg()

        async def pairs(count: int, max_tokens: int) -> dict[str, list[dict]]:
            runs: dict[str, list[dict]] = {"local": [], "remote": []}
            for index in range(count):
                order = ("local", "remote") if index % 2 == 0 else ("remote", "local")  # ABBA against drift
                for side in order:
                    await asyncio.sleep(0.2)  # let the other side's llama.cpp threads go quiet
                    runs[side].append((local if side == "local" else client).ask("exec", n=max_tokens, timeout=120))
            return runs

        results["exec"] = await pairs(EXEC_PAIRS, MAX_TOKENS)
        results["exec_short"] = await pairs(SHORT_PAIRS, SHORT_TOKENS)
        results["offer"] = client.ask("offer", n=OFFER_RUNS, timeout=120)
        for worker in (client, local):
            worker.close()
        lap("Execute")

        # ---- 3. restarts of a member, and dead-peer detection ----
        _log("restarts and dead-peer detection ...")
        reps = []
        for rep in range(DISCOVERY_REPS):
            await _wait(lambda: not_live(c_id), 30, "A to stop listing C as live")
            await asyncio.sleep(0.5)
            began = c.start("--model", SMOL)
            record: dict[str, Any] = {"down": began - stopped, **await _track(c, c_id, control_a, began)}
            if rep == 0:  # the idle footprint with the model loaded
                await asyncio.sleep(3)
                record["idle_loaded"] = await _idle(c.process.pid, IDLE_SECONDS)
                record["idle_loaded"].update(_libraries(c.process.pid))
            record["peak_kib"] = _proc_status(c.process.pid)["VmHWM"]
            mode = "kill" if rep % 2 == 0 else "unplug"
            record["mode"] = mode
            await asyncio.sleep(1.5)  # a few beats in the steady state
            killed = time.monotonic()
            if mode == "kill":
                os.killpg(c.process.pid, signal.SIGKILL)
            else:
                await asyncio.to_thread(subprocess.run, ["ip", "link", "set", c.ns.veth, "down"], check=True, timeout=10)
            try:
                async def c_dead() -> str | None:
                    peer = _peer(await control_a.peers(), c_id)
                    if peer is None:
                        return "forgotten"
                    return peer.state if peer.state in ("dead", "gone") else None

                record["dead_state"] = await _wait(c_dead, 30, "A to mark C dead")
                record["dead"] = time.monotonic() - killed
            finally:
                c.stop(signal.SIGKILL)
                stopped = killed
                if mode == "unplug":
                    await asyncio.to_thread(subprocess.run, ["ip", "link", "set", c.ns.veth, "up"], check=True, timeout=10)
                    mesh._wait_up()
            reps.append(record)
            _log(f"  rep {rep}: " + ", ".join(f"{k} {v:.2f}" for k, v in record.items() if isinstance(v, float)))
        results["discovery"] = reps
        lap("restarts")

        # ---- 4. footprint: an idle daemon whose only model never loads ----
        _log("idle footprint without a model ...")
        placeholder = root / "placeholder.gguf"
        placeholder.write_bytes(b"GGUF" + bytes(28))  # passes the catalog's check ...
        Catalog(Home.locate(c.home).models_dir).add(placeholder, PLACEHOLDER)
        placeholder.write_bytes(b"not a model, on purpose\n")  # ... then fails the runtime's, before any import
        await _wait(lambda: not_live(c_id), 30, "A to stop listing C as live")
        c.start("--model", PLACEHOLDER)
        await _wait(lambda: _status(c), 60, "C's daemon to answer", c)
        await _wait(lambda: live(c_id), 90, "A to list C again", c)
        await asyncio.sleep(3)
        results["idle_empty"] = await _idle(c.process.pid, IDLE_SECONDS)
        results["idle_empty"].update(_libraries(c.process.pid))
        results["idle_empty"]["placeholder_failed"] = "could not be loaded" in c.log_tail(200)
        results["long_running"] = {"A": _proc_status(a.process.pid), "B": _proc_status(b.process.pid)}
        results["gguf_bytes"] = Catalog(Home.locate(a.home).models_dir).get(SMOL).size_bytes
        lap("footprint")

        # ---- 5. one agent through a coordinator: kept on it, or placed on a peer over mTLS ----
        # A runs it with the agent `local_only`; C, which serves no smollm2 (only the placeholder
        # above), must place it on A (B is stopped): the same generation on the same node, the
        # only difference is the coordinator's Offer and Execute over mTLS and the relayed stream.
        _log("one agent through a coordinator, on itself vs on a peer ...")
        b.stop()
        await _wait(lambda: not_live(b_id), 30, "A to stop listing B as live")

        async def c_places_on_a() -> bool:
            peers = await control_c.peers()
            return _model_loaded(_peer(peers, a_id)) and not _is_live(_peer(peers, b_id))

        await _wait(c_places_on_a, 30, "C to see A with smollm2 loaded and B gone", c)
        here, anywhere = root / "one-here.yaml", root / "one-anywhere.yaml"
        here.write_text(_one_agent(local_only=True))
        anywhere.write_text(_one_agent(local_only=False))
        sides = {"here": (a, here), "peer": (c, anywhere)}
        checks = {side: await asyncio.to_thread(_cli_run, node, path, ONE_TASK) for side, (node, path) in sides.items()}
        for _ in range(ONE_WARMUP - 1):
            for node, path in sides.values():
                await _run(node, path, ONE_TASK)
        one: dict[str, list[dict]] = {"here": [], "peer": []}
        for index in range(ONE_PAIRS):
            for side in ("here", "peer") if index % 2 == 0 else ("peer", "here"):  # ABBA against drift
                await asyncio.sleep(0.2)
                node, path = sides[side]
                done = await _run(node, path, ONE_TASK)
                record = done["results"]["answer"]
                one[side].append({"agent_ms": _agent_ms(done, "answer"), "run_ms": done["timing"]["duration_s"] * 1000,
                                  "node_id": record["node_id"], "text": record["output"],
                                  "tokens": record["usage"]["completion_tokens"], "attempts": record["attempts"]})
        results["one"] = {**one, "cli": {side: {"node_id": r["results"]["answer"]["node_id"],
                                                "nodes": r["results"]["answer"]["nodes"]} for side, r in checks.items()},
                          "a_id": a_id}
        lap("one agent")

        # ---- 6. a fan-out of three agents over three single-thread nodes, against one node ----
        # Placed as orc places it, and pinned one agent per node (B and C carry their name as a
        # tag), alternating; then on A alone.

        _log("fan-out over three nodes vs one ...")
        c.stop()
        await _wait(lambda: not_live(c_id), 30, "A to stop listing C as live")
        for node in (b, c):
            node.start("--model", SMOL, "--threads", str(EXEC_THREADS), "--tag", node.name)

        async def all_loaded() -> bool:
            peers = await control_a.peers()
            return all(_model_loaded(_peer(peers, node_id)) for node_id in (b_id, c_id))

        await _wait(all_loaded, 120, "A to see B and C with smollm2 loaded", b)
        placed, pinned = root / "fan-out.yaml", root / "fan-out-pinned.yaml"
        placed.write_text(_fan_out())
        pinned.write_text(_fan_out({"pick": None, FANOUT_LISTS[0]: None, FANOUT_LISTS[1]: b.name,
                                    FANOUT_LISTS[2]: c.name}))
        names = {a_id: a.name, b_id: b.name, c_id: c.name}
        branches = [_slug(what) for what in FANOUT_LISTS]
        fan: dict[str, list[dict]] = {"placed": [], "pinned": [], "alone": []}

        async def fan_run(label: str, ensemble: Path, pause: float, warm_up: bool) -> None:
            await asyncio.sleep(pause)
            done = await _run(a, ensemble, FANOUT_TASK)
            ends = [done["results"][name]["finished_at"] for name in branches]
            record = {"wall_s": done["timing"]["duration_s"],
                      "level_s": max(ends) - done["timing"]["started_at"],
                      "where": {name: [names.get(n, n) for n in r["nodes"]] for name, r in done["results"].items()},
                      "attempts": {name: r["attempts"] for name, r in done["results"].items()},
                      "tokens": {name: r["usage"]["completion_tokens"] for name, r in done["results"].items()},
                      "texts": {name: r["output"] for name, r in done["results"].items()}}
            _log(f"  {label}{' (warm-up)' if warm_up else ''}: {record['wall_s']:.2f} s, three agents "
                 f"{record['level_s']:.2f} s, " + ", ".join(f"{k} on {'/'.join(v)}" for k, v in record["where"].items()))
            if not warm_up:
                fan[label].append(record)

        results["load_fanout"] = os.getloadavg()
        for index in range(FANOUT_WARMUP + FANOUT_RUNS):
            await fan_run("placed", placed, FANOUT_SPACING_S, index < FANOUT_WARMUP)
            await fan_run("pinned", pinned, FANOUT_SPACING_S, index < FANOUT_WARMUP)
        for node in (b, c):
            node.stop()
        await _wait(lambda: not_live(b_id), 30, "A to stop listing B as live")
        await _wait(lambda: not_live(c_id), 30, "A to stop listing C as live")
        for index in range(FANOUT_WARMUP + FANOUT_RUNS):
            await fan_run("alone", placed, FANOUT_SPACING_S, index < FANOUT_WARMUP)
        results["fanout"] = fan
        lap("fan-out")

        results["load_after"] = os.getloadavg()
        results["phases"] = phases
        return results
    except BaseException:
        for node in nodes:  # the logs go with the temporary folder: show what the daemons said
            if node.logs:
                _log(f"{node.name}'s daemon log, last lines:\n{node.log_tail(40)}")
        raise
    finally:
        for worker in workers:
            with contextlib.suppress(Exception):  # the mesh's close kills it anyway
                worker.close()
        await control_a.close()
        await control_c.close()
        for node in nodes:
            with contextlib.suppress(Exception):
                node.stop()


def _machine() -> list[str]:
    cpu = platform.processor() or "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
        kib = next(int(l.split()[1]) for l in Path("/proc/meminfo").read_text().splitlines()
                   if l.startswith("MemTotal"))
        memory = f"{kib / 1024 / 1024:.0f} GiB RAM"
    except (OSError, StopIteration, ValueError):
        memory = "unknown RAM"

    def version(name: str) -> str:
        try:
            return importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            return "?"

    return [
        (f"- machine: {platform.system()} {platform.release()} {platform.machine()}, {cpu}, "
        f"{os.cpu_count()} cores, {memory}; every daemon and client of the mesh runs on it"),
        (f"- Python {platform.python_version()}, grpcio {version('grpcio')}, "
        f"llama-cpp-python {version('llama-cpp-python')}, orc {version('orc-mesh')}"),
        f"- date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}",
    ]


def _format(r: dict[str, Any]) -> str:
    rows: list[tuple[str, str, str, str]] = []

    def ms(values: list[float]) -> str:
        return f"{_median(values):.2f} ms"

    def secs(values: list[float]) -> str:
        return f"{_median(values):.2f} s"

    def spread(values: list[float]) -> str:
        return f"median of {len(values)}, {min(values):.2f}–{max(values):.2f} s"

    def bold(text: str, ok: bool) -> str:
        return text if ok else f"**{text}**"

    # ---- mTLS round trips ----
    rtt = r["rtt"]
    rows += [
        ("TCP connect, B → A", ms(rtt["tcp"]), "", f"median of {len(rtt['tcp'])}"),
        (f"TCP connect + mutual TLS handshake ({rtt['tls_version']}, Python's OpenSSL)", ms(rtt["tls"]), "",
         f"median of {len(rtt['tls'])}; the client's side of the handshake"),
        ("new mTLS gRPC channel + its first `Describe`", ms(rtt["cold"]), "",
         f"median of {len(rtt['cold'])}; connect, handshake, HTTP/2 set-up, one call"),
        ("`Describe` on a warm channel", ms(rtt["warm"]), "",
         (f"median of {len(rtt['warm'])}, one every {WARM_SPACING_S * 1000:.0f} ms (the server allows a peer "
         f"50 calls/s); p95 {_p95(rtt['warm']):.2f} ms, fastest {min(rtt['warm']):.2f} ms")),
    ]

    # ---- remote placement overhead ----
    def totals(runs: dict[str, list[dict]]) -> tuple[list[float], list[float], list[float]]:
        l_total = [x["total_ms"] for x in runs["local"]]
        r_total = [x["total_ms"] for x in runs["remote"]]
        return l_total, r_total, sorted(rr - ll for rr, ll in zip(r_total, l_total))

    def texts(runs: dict[str, list[dict]]) -> str:
        both = runs["local"] + runs["remote"]
        tokens = "/".join(str(t) for t in sorted({x["tokens"] for x in both}))
        same = "identical text" if len({x["text"] for x in both}) == 1 else "**texts differ**"
        return f"{tokens} token{'' if tokens == '1' else 's'}, {same}"

    def quartiles(values: list[float]) -> str:
        q1, _, q3 = statistics.quantiles(values, n=4)
        return f"middle half of the differences {q1:+.1f} to {q3:+.1f} ms"

    l_long, r_long, d_long = totals(r["exec"])
    l_short, r_short, d_short = totals(r["exec_short"])
    overhead = _median(d_short)
    remote = r["exec"]["remote"] + r["exec_short"]["remote"]
    started = [x["started_ms"] for x in remote if x["started_ms"] is not None]
    first_diff = [rr["first_ms"] - ll["first_ms"] for rr, ll in zip(r["exec"]["remote"], r["exec"]["local"])
                  if rr["first_ms"] is not None and ll["first_ms"] is not None]
    rows += [
        (f"{MAX_TOKENS}-token generation in A's namespace, the daemon's `LlamaCppRuntime` directly",
         f"{_median(l_long):.0f} ms", "", f"median of {len(l_long)}, fastest {min(l_long):.0f} ms"),
        ("… the same as `Execute` on A from B over mTLS, end to end", f"{_median(r_long):.0f} ms", "",
         f"median of {len(r_long)}, fastest {min(r_long):.0f} ms; {texts(r['exec'])}"),
        ("… remote minus local (median of paired differences)", f"{_median(d_long):+.1f} ms", "",
         f"{quartiles(d_long)}: generation noise, larger than the overhead"),
        (f"{SHORT_TOKENS}-token generation, local / remote",
         f"{_median(l_short):.1f} / {_median(r_short):.1f} ms", "",
         (f"medians of {len(l_short)} pairs; {texts(r['exec_short'])}; shorter than one decoding step, as "
         "llama-cpp-python answers from the cached prompt: nearly all of it is orc's own work")),
        ("**remote overhead per agent** (1-token pairs, median of differences)",
         bold(f"{overhead:+.1f} ms", overhead <= 5), "≤ 5 ms", quartiles(d_short)),
        ("`Execute` called → `ExecutionStarted` received", ms(started), "",
         f"median of {len(started)}; the RPC alone: request, authorization, dispatch, first message back"),
        (f"first token of the {MAX_TOKENS}-token generation, remote minus local", f"{_median(first_diff):+.1f} ms",
         "", f"median of {len(first_diff)} pairs"),
    ]

    # ---- remote placement end to end, through a coordinator daemon ----
    one, offer = r["one"], r["offer"]
    here_ms = [x["agent_ms"] for x in one["here"]]
    peer_ms = [x["agent_ms"] for x in one["peer"]]
    d_agent = sorted(p["agent_ms"] - h["agent_ms"] for h, p in zip(one["here"], one["peer"]))
    d_run = sorted(p["run_ms"] - h["run_ms"] for h, p in zip(one["here"], one["peer"]))
    both = one["here"] + one["peer"]
    on_a = all(x["node_id"] == one["a_id"] for x in both) and all(
        c["node_id"] == one["a_id"] for c in one["cli"].values())
    one_note = (f"{'/'.join(str(t) for t in sorted({x['tokens'] for x in both}))} token, "
                + ("identical text" if len({x["text"] for x in both}) == 1 else "**texts differ**")
                + ("; every run ran on A" if on_a else "; **some run did not run on A**")
                + ("" if all(x["attempts"] == 1 for x in both) else "; **some agent needed more than one attempt**"))
    e2e = _median(d_agent)
    rows += [
        (f"one-agent ensemble ({ONE_TOKENS} token) run on A, agent kept on A (`placement: {{local_only: true}}`): "
         "the agent, start to result", f"{_median(here_ms):.1f} ms", "",
         (f"median of {len(here_ms)}, fastest {min(here_ms):.1f} ms; the whole run (`timing.duration_s`) "
          f"{_median([x['run_ms'] for x in one['here']]):.1f} ms")),
        ("… the same run on C, which serves no smollm2: placed on A, `Offer` + `Execute` over mTLS",
         f"{_median(peer_ms):.1f} ms", "",
         (f"median of {len(peer_ms)}, fastest {min(peer_ms):.1f} ms; the whole run "
          f"{_median([x['run_ms'] for x in one['peer']]):.1f} ms; {one_note}")),
        ("**remote placement overhead per agent, end to end** (peer minus self, median of paired differences)",
         bold(f"{e2e:+.1f} ms", e2e <= 5), "≤ 5 ms",
         f"{quartiles(d_agent)}; whole runs {_median(d_run):+.1f} ms"),
        ("… for comparison, the RPC it adds first: `Offer` round trip, B → A (raw `PeerClient`)", ms(offer["ms"]), "",
         (f"median of {len(offer['ms'])}, p95 {_p95(offer['ms']):.2f} ms; each lease then taken by a 1-token "
          "`Execute`" + (f"; **{len(offer['refused'])} refused**" if offer["refused"] else ""))),
        ("… `Offer` round trip + raw `Execute` overhead (added)", f"{_median(offer['ms']) + overhead:+.1f} ms", "",
         ("the two RPCs measured apart, from B; an upper bound of what they add, as the raw `Execute` overhead is "
          "taken against the runtime called directly, while the coordinator's own path also goes through its "
          "node's service")),
    ]

    # ---- discovery and liveness ----
    join, reps = r["join"], r["discovery"]
    first, again = reps[0], reps[1:]
    verified = [x["verified"] for x in again]
    killed = [x["dead"] for x in reps if x["mode"] == "kill"]
    unplugged = [x["dead"] for x in reps if x["mode"] == "unplug"]
    downs = [x["down"] for x in again]
    rows += [
        ("new member C (`orc-node start --join`): A lists it verified", bold(f"{join['verified']:.2f} s",
                                                                             join["verified"] <= 2), "≤ 2 s",
         (f"one run, from spawning the process; its control socket answered at {join['socket']:.2f} s, "
         f"A saw its model loaded and measured at {join['loaded']:.2f} s")),
        ((f"member restarted after {min(downs):.1f}–{max(downs):.1f} s down (plain `orc-node start`): its control socket "
         "answers"), secs([x["socket"] for x in again]), "", spread([x["socket"] for x in again])),
        ("… A lists it verified", bold(secs(verified), _median(verified) <= 2), "≤ 2 s", spread(verified)),
        ("… A lists its model loaded and measured", secs([x["loaded"] for x in again]), "",
         spread([x["loaded"] for x in again]) + "; loading smollm2 and one timed warm-up generation"),
        (f"member restarted after {first['down']:.0f} s down: A lists it verified",
         bold(f"{first['verified']:.2f} s", first["verified"] <= 2), "≤ 2 s",
         f"one run; its control socket answered at {first['socket']:.2f} s"),
        ("dead peer: C SIGKILLed (its sockets close)", bold(secs(killed), _median(killed) <= 3), "≤ 3 s",
         f"{spread(killed)}; A's Watch stream to C breaks"),
        ("dead peer: C's cable pulled (veth down, nothing sent)", bold(secs(unplugged), _median(unplugged) <= 3),
         "≤ 3 s", f"{spread(unplugged)}; only the missing beats tell"),
    ]

    # ---- footprint ----
    empty, loaded = r["idle_empty"], first["idle_loaded"]
    share = loaded["VmRSS"] - empty["VmRSS"]
    gguf_mib = r["gguf_bytes"] / (1 << 20)

    def breakdown(m: dict[str, Any]) -> str:
        libraries = [name for name in ("libllama", "libmlx", "numpy") if m.get(name)]
        return (f"anonymous {_mib(m['RssAnon'])}, file-backed {_mib(m['RssFile'])}; CPU {m['cpu_percent']:.1f}% "
                f"of a core over {IDLE_SECONDS:.0f} s; mapped: {', '.join(libraries) or 'no model library'}")

    rows += [
        ("idle daemon, no model loaded: RSS", bold(_mib_mb(empty["VmRSS"]), empty["VmRSS"] * 1024 <= 60e6),
         "≤ 60 MB", breakdown(empty) + ("" if empty.get("placeholder_failed") else
                                          "; **the placeholder model did not fail as intended**")),
        ("idle daemon, smollm2 loaded: RSS", _mib(loaded["VmRSS"]), "", breakdown(loaded)),
        ("smollm2's share (loaded minus empty)", _mib(share), "",
         (f"its GGUF is {gguf_mib:.0f} MiB, memory-mapped; the rest is llama.cpp, its context and KV cache "
         f"(n_ctx 2048) and llama-cpp-python's imports; start-up peak (VmHWM) "
         f"{_mib(_median([x['peak_kib'] for x in reps]))}")),
        ("A and B after the benchmark (smollm2 loaded, Execute served)",
         f"{_mib(r['long_running']['A']['VmRSS'])} / {_mib(r['long_running']['B']['VmRSS'])}", "", ""),
    ]

    # ---- fan-out over three nodes against one ----
    fan = r["fanout"]
    sets = {label: fan[label] for label in ("placed", "pinned", "alone")}
    wall = {label: [x["wall_s"] for x in runs] for label, runs in sets.items()}
    level = {label: [x["level_s"] for x in runs] for label, runs in sets.items()}
    branches = [_slug(what) for what in FANOUT_LISTS]
    everything = [x for runs in sets.values() for x in runs]
    tokens = sorted({n for x in everything for name, n in x["tokens"].items() if name != "pick"})
    variants = {name: len({x["texts"][name] for x in everything}) for name in [*branches, "pick"]}
    if all(n == 1 for n in variants.values()):
        fan_texts = "each agent wrote the same text in every run"
    else:
        fan_texts = ("texts varied: " + ", ".join(f"{name} {n} versions" for name, n in variants.items() if n > 1)
                     + " (temperature 0, fixed seed: llama.cpp's greedy output still depends on the prompt prefix "
                       "the node's model kept from its previous generation)")
    retried = any(n > 1 for x in everything for n in x["attempts"].values())

    def spread_s(values: list[float]) -> str:
        return f"median of {len(values)}, {min(values):.2f}–{max(values):.2f} s"

    def spots(runs: list[dict]) -> str:
        """Where the three agents and the gather ran, tallied over the runs."""
        tally: dict[str, int] = {}
        for x in runs:
            count: dict[str, int] = {}
            for name in branches:
                for node in x["where"][name][-1:]:
                    count[node] = count.get(node, 0) + 1
            line = (" + ".join(f"{node} ×{n}" if n > 1 else node for node, n in sorted(count.items()))
                    + f", gather on {'/'.join(x['where']['pick'])}")
            tally[line] = tally.get(line, 0) + 1
        return "; ".join(f"{line} ({n} run{'s' if n > 1 else ''})"
                         for line, n in sorted(tally.items(), key=lambda kv: -kv[1]))

    def speedup(label: str) -> str:
        return (f"{_median(wall['alone']) / _median(wall[label]):.2f}× "
                f"({_median(level['alone']) / _median(level[label]):.2f}× for the three parallel agents)")

    rows += [
        (f"fan-out: 3 independent {FANOUT_TOKENS}-token agents + a {GATHER_TOKENS}-token gather, from A, on A alone "
         "(B and C stopped): wall time", secs(wall["alone"]), "",
         (f"{spread_s(wall['alone'])} (`timing.duration_s`); three agents done after "
          f"{_median(level['alone']):.2f} s; in every run of the three sets the branches wrote "
          f"{'/'.join(map(str, tokens))} tokens; {fan_texts}" + ("; **some agent was retried**" if retried else ""))),
        (f"… on A, B and C (`--threads {EXEC_THREADS}` each), placed by orc: wall time", secs(wall["placed"]), "",
         (f"{spread_s(wall['placed'])}; three agents done after {_median(level['placed']):.2f} s; "
          f"agents per node: {spots(sets['placed'])}")),
        ("… on A, B and C, pinned one per node (`local_only` / `require_tags`): wall time", secs(wall["pinned"]), "",
         (f"{spread_s(wall['pinned'])}; three agents done after {_median(level['pinned']):.2f} s; "
          f"agents per node: {spots(sets['pinned'])}")),
        ("… speedup over A alone, placed by orc", speedup("placed"), "", "the gather step is serial in every set"),
        ("… speedup over A alone, pinned one per node", speedup("pinned"), "",
         "what three single-thread nodes give on this 2-core machine: at most ~2×"),
    ]

    load = r["load_before"], r["load_exec"], r["load_after"]
    lines = ["## Mesh: real daemons on a LAN of network namespaces", "", *_machine(), "",
             ("Three `orc-node` daemons, each in its own Linux network namespace on one bridge "
             "(tests/netns.py): A creates the mesh, B and C join with `orc-node invite` tokens, all serve "
             f"{SMOL} (`--model`). Calls to A come from a process in B's namespace through orc's own "
             "`PeerClient` with B's identity (mutual TLS, A pinned by node id). A's view of its peers is read "
             f"from its control socket (the call `orc peers` makes) every {POLL_S * 1000:.0f} ms. The remote "
             f"overhead pairs `Execute` on A from B (greedy, seed {SEED}, {MAX_TOKENS} tokens; A runs with "
             f"`--threads {EXEC_THREADS}`) with the same generation through the daemon's runtime class, also on "
             f"{EXEC_THREADS} thread, in a process in A's namespace, the sides alternating; one generation "
             "thread leaves the second core to the client and gRPC, as separate devices would. C is then restarted with a plain `orc-node start` and killed, "
             f"{len(reps)} times, alternately by SIGKILL and by pulling its cable. The daemon without a model "
             "serves only a catalog entry whose file is not a model, so its load fails before any model "
             "library is imported; RSS is VmRSS of the daemon's Python process (`ip netns exec` execs it). "
             "Then B stops and one-agent ensembles (greedy, `--seed` "
             f"{SEED}) go through the coordinator daemons' control sockets, as `orc run --json` sends them (one run "
             "of each through the real command line first): on A with the agent `local_only`, and on C, whose daemon "
             "serves no smollm2, so A is offered it; the sides alternate and each agent's own "
             "`started_at`/`finished_at` are compared. Last, B and C come back serving smollm2 on one thread "
             f"each, and a fan-out ensemble (greedy, `--seed` {SEED}) runs from A on the three nodes, placed by orc "
             f"and pinned one agent per node, alternately, {len(sets['placed'])} times each, then "
             f"{len(sets['alone'])} times with B and C stopped; one warm-up each, runs "
             f"{FANOUT_SPACING_S:.1f} s apart."),
             "",
             "| measurement | value | target | notes |", "|---|---|---|---|"]
    lines += [f"| {what} | {value} | {target} | {note} |" for what, value, target, note in rows]
    lines += ["",
              ("Everything runs on one machine, so the remote side also pays for the client process's CPU (on "
              "separate devices it would not), and the machine is shared and noisy (1-minute load average "
              f"{load[0][0]:.1f} before, {load[1][0]:.1f} during the `Execute` pairs, {load[2][0]:.1f} after). "
              "Generation times spread by tens of milliseconds, more than the 5 ms target itself, so the "
              "overhead is taken from one-token generations, in pairs, and one table is one sample; the "
              "RPC-only rows (`Describe`, `ExecutionStarted`) are its floor. A node redials a dead peer on an "
              "exponential backoff (1 s doubling to 60 s), but the restarted member's mDNS announcement, or its "
              "own call back, brings that redial forward (at most one early dial a second), so how long it "
              "was down barely matters."), "",
              _reading(e2e, _median(offer["ms"]), overhead, {k: _median(v) for k, v in wall.items()},
                       {k: _median(v) for k, v in level.items()},
                       sum(len({x["where"][name][-1] for name in branches}) == 3 for x in sets["placed"]),
                       len(sets["placed"]), r["load_fanout"][0]), ""]
    return "\n".join(lines)


def _reading(e2e: float, offer: float, execute: float, wall: dict[str, float], level: dict[str, float],
             spread_runs: int, placed_runs: int, load: float) -> str:
    """The paragraph that reads the two coordinator measurements (numbers in, words chosen by them)."""
    rest = e2e - offer - execute
    placed, pinned = wall["alone"] / wall["placed"], wall["alone"] / wall["pinned"]
    split = (f"the remaining {rest:.1f} ms is the coordinators' own placing and relaying" if rest >= 0.5 else
             "so the coordinators' own placing and relaying add nothing measurable on top of the two round trips")
    parts = [
        (f"Placing an agent on a peer instead of on the coordinator costs {e2e:+.1f} ms end to end, "
         f"{'within' if e2e <= 5 else 'over'} the 5 ms target. The two RPCs it adds, measured apart, come to "
         f"{offer + execute:.1f} ms (`Offer` {offer:.1f} ms, `Execute` {execute:+.1f} ms), {split}."),
        (f"Three single-thread nodes ran the fan-out {pinned:.2f}× faster than A alone when each agent was pinned to "
         f"its own node ({level['alone'] / level['pinned']:.2f}× for the three parallel agents; the gather is "
         "serial). The three namespaces share one 2-core machine, which other work was also using (1-minute load "
         f"average {load:.1f} when the fan-out began), so three one-thread generations get at most two cores "
         "between them: ~2× is the ceiling here, not 3×."),
        (f"Placed by orc itself, the three agents landed on three different nodes in {spread_runs} of "
         f"{placed_runs} runs, for a speedup of {placed:.2f}×"
         + ("; in the other runs two agents shared a node (the table lists where each ran): placement follows "
            "the speeds each node measured, and on one shared machine those differ from run to run."
            if spread_runs < placed_runs else ".")),
    ]
    return " ".join(parts)


def mesh_section() -> str:
    """The mesh benchmarks as a Markdown section (runs them: about five minutes, needs root)."""
    from tests import netns

    reason = netns.unavailable_reason()
    if reason is not None:
        return ("## Mesh: real daemons on a LAN of network namespaces\n\n"
                f"Not run: {reason}.\n")
    with tempfile.TemporaryDirectory(prefix="orc-mesh-bench-") as folder:
        mesh = netns.NamespaceLan.create(3)
        try:
            results = asyncio.run(_measure(Path(folder), mesh))
        finally:
            mesh.close()
    return _format(results)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--worker", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        kind, *rest = args.worker
        if kind == "client":
            asyncio.run(_client_worker(Path(rest[0]), rest[1], rest[2]))
        elif kind == "local":
            asyncio.run(_local_worker(Path(rest[0])))
        else:
            parser.error(f"unknown worker {kind}")
        return 0
    print(mesh_section())
    return 0


if __name__ == "__main__":
    sys.exit(main())
