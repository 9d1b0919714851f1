"""Idle daemon footprint: the memory of an `orc-node` daemon that has no model loaded (needs root).

    .venv/bin/python -m tests.benchmarks.footprint            # print the section
    .venv/bin/python -m tests.benchmarks.footprint --write    # and put it into docs/benchmarks.md

(run.py includes it in the whole report, unless `--skip-footprint`.) Two daemons on a LAN of two
network namespaces (tests/netns.py; no traffic leaves them): M creates a mesh, P joins it with a
token from `orc-node invite`, so M holds one verified peer, as a member of a small mesh would.
Both serve only a catalog entry whose file is not a model: its load fails before any model
library is imported. M is started `SAMPLES` times with a plain `orc-node start`; each time, once
it answers on its control socket and lists P verified, it is left alone for `IDLE_SECONDS`, then
read from /proc: VmRSS, RssAnon, RssFile (status), the rollup of its mappings (smaps_rollup), and
the resident size of every shared object it maps (smaps). A last start runs under
`python -X importtime`: which top-level packages the daemon's own interpreter imported (its
start-up and 10 s of idling; `orc-node start` itself hands over to it, node/cli/daemon_process.py)
and what they cost.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import os
import re
import sys
import tempfile
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.benchmarks.mesh import _Node as MeshNode
from tests.benchmarks.run import REPO, Row, publish_section, standalone_section

TITLE = "Idle daemon footprint"
PLACEHOLDER = "idle-placeholder"  # a catalog entry whose file is not a model: it fails to load, nothing is imported
IDLE_SECONDS = 10.0
SAMPLES = 3
TARGET_BYTES = 60e6  # issue target: an idle daemon without a model in at most 60 MB (decimal) of RSS
TOP_LIBRARIES = 8
TOP_PACKAGES = 12
POLL_S = 0.05


def _log(message: str) -> None:
    print(f"[footprint] {message}", file=sys.stderr, flush=True)


# ---- /proc ----

def _status_kib(pid: int) -> dict[str, int]:
    """VmRSS, VmHWM, RssAnon, RssFile, RssShmem and Threads of a process (memory in KiB)."""
    values = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmRSS", "VmHWM", "RssAnon", "RssFile", "RssShmem", "Threads"):
            values[key] = int(rest.split()[0])
    return values


def _rollup_kib(pid: int) -> dict[str, int]:
    """/proc/PID/smaps_rollup: Rss, Pss, Private_Dirty, Anonymous, ... in KiB."""
    values = {}
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:]:
        key, _, rest = line.partition(":")
        parts = rest.split()
        if parts and parts[0].isdigit():
            values[key] = int(parts[0])
    return values


_MAPPING = re.compile(r"^[0-9a-f]+-[0-9a-f]+ \S{4} [0-9a-f]+ \S+ \d+\s*(.*)$")


def _mapped_kib(pid: int) -> dict[str, int]:
    """Resident KiB of every mapped file and of each kind of anonymous region, from /proc/PID/smaps:
    paths as they are, `[heap]`, `[stack]`, and `[anon]` for nameless mappings."""
    resident: dict[str, int] = defaultdict(int)
    current = "[anon]"
    for line in Path(f"/proc/{pid}/smaps").read_text().splitlines():
        match = _MAPPING.match(line)
        if match:
            current = match.group(1).strip() or "[anon]"
        elif line.startswith("Rss:"):
            resident[current] += int(line.split()[1])
    return dict(resident)


def _cpu_seconds(pid: int) -> float:
    text = Path(f"/proc/{pid}/stat").read_text()
    fields = text[text.rfind(")") + 2:].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _is_shared_object(path: str) -> bool:
    return path.startswith("/") and (path.endswith(".so") or ".so." in Path(path).name)


# ---- python -X importtime ----

_IMPORT_LINE = re.compile(r"import time:\s+(\d+) \|\s+(\d+) \|\s*(\S+)")
# Each interpreter prints it before its first import: `orc-node start`'s, then the daemon's own
# (node/cli/daemon_process.py), which replaces it, then each model runner the daemon starts (they
# inherit the setting; their imports, llama_cpp and numpy, are not the daemon's).
_IMPORTTIME_HEADER = "import time: self [us] | cumulative | imported package"


@dataclass(frozen=True)
class Package:
    name: str
    modules: int
    self_ms: float  # the package's own import time, its modules' `self` times summed


def imported_packages(log: str) -> list[Package]:
    """The top-level packages the daemon's interpreter (the second of a `-X importtime` log)
    imported before its first runner started, most expensive first. Its runners start once the
    node runs, after the daemon built every part (HTTP API included)."""
    modules: dict[str, int] = defaultdict(int)
    micros: dict[str, int] = defaultdict(int)
    sections = log.split(_IMPORTTIME_HEADER)
    for line in sections[min(2, len(sections) - 1)].splitlines():
        match = _IMPORT_LINE.search(line)
        if match:
            top = match.group(3).split(".")[0]
            modules[top] += 1
            micros[top] += int(match.group(1))
    return sorted((Package(name, modules[name], micros[name] / 1000) for name in modules),
                  key=lambda p: -p.self_ms)


# ---- the daemons ----

@dataclass
class _Node(MeshNode):
    """A daemon of the mesh benchmark's kind (tests/benchmarks/mesh.py); with `importtime`, its
    interpreters log their imports (`PYTHONPROFILEIMPORTTIME`, kept across the hand-over)."""

    importtime: bool = False

    @property
    def env(self) -> dict[str, str]:
        env = super().env
        if self.importtime:
            env["PYTHONPROFILEIMPORTTIME"] = "1"
        return env

    def command(self, *args: str) -> str:
        """`orc-node ARGS` to completion; its stdout. Raises if it fails."""
        done = self.orc_node(*args)
        if done.returncode != 0:
            raise RuntimeError(f"`orc-node {args[0]}` on {self.name} exited {done.returncode}: {done.stderr}")
        return done.stdout

    def log_text(self) -> str:
        """The log of the daemon started last."""
        return self.logs[-1].read_text(errors="replace") if self.logs and self.logs[-1].exists() else ""


async def _wait(predicate, timeout: float, what: str, node: _Node) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        if node.process is not None and node.process.poll() is not None:
            raise RuntimeError(f"{node.name}'s daemon exited {node.process.returncode}:\n{node.log_text()[-3000:]}")
        result = await predicate()
        if result:
            return result
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {timeout:.0f} s waiting for {what}:\n{node.log_text()[-3000:]}")
        await asyncio.sleep(POLL_S)


async def _status(node: _Node) -> Any | None:
    from orc.node.protocol.errors import NodeError
    from orc.node.rpc.client import ControlClient

    if not (node.home / "orc-node.sock").exists():
        return None
    try:
        async with ControlClient(node.home / "orc-node.sock") as client:
            return await client.status(timeout=1.0)
    except NodeError:
        return None


async def _lists_verified(node: _Node, peer_id: str) -> bool:
    from orc.node.protocol.errors import NodeError
    from orc.node.rpc.client import ControlClient

    try:
        async with ControlClient(node.home / "orc-node.sock") as client:
            peers = await client.peers()
    except NodeError:
        return False
    return any(p.id == peer_id and p.verified and p.state in ("verified", "degraded") for p in peers)


async def _settle(node: _Node, peer_id: str) -> None:
    await _wait(lambda: _status(node), 60, f"{node.name}'s daemon to answer", node)
    await _wait(lambda: _lists_verified(node, peer_id), 60, f"{node.name} to list its peer verified", node)


async def _sample(node: _Node, peer_id: str, *extra: str) -> dict[str, Any]:
    """Start M (with `extra` flags), let it settle and idle, read /proc, stop it."""
    node.start("--model", PLACEHOLDER, *extra)
    try:
        await _settle(node, peer_id)
        pid = node.process.pid
        cpu0, t0 = _cpu_seconds(pid), time.monotonic()
        await asyncio.sleep(IDLE_SECONDS)
        cpu = 100 * (_cpu_seconds(pid) - cpu0) / (time.monotonic() - t0)
        sample = {"status": _status_kib(pid), "rollup": _rollup_kib(pid), "mapped": _mapped_kib(pid),
                  "cpu_percent": cpu, "placeholder_failed": "could not be loaded" in node.log_text()}
    finally:
        node.stop()
    return sample


async def _importtime(node: _Node, peer_id: str) -> str:
    """The `-X importtime` log of M's start-up and IDLE_SECONDS of idling."""
    node.importtime = True
    node.start("--model", PLACEHOLDER)
    try:
        await _settle(node, peer_id)
        await asyncio.sleep(IDLE_SECONDS)
    finally:
        node.stop()
        node.importtime = False
    return node.log_text()


async def _measure(root: Path, lan: Any) -> dict[str, Any]:
    from orc.node.home import Home
    from orc.node.models.catalog import Catalog

    m, p = _Node(lan[0], root / "node-m", "M"), _Node(lan[1], root / "node-p", "P")
    placeholder = root / "placeholder.gguf"
    placeholder.write_bytes(b"GGUF" + bytes(28))  # passes the catalog's check ...
    for node in (m, p):
        node.home.mkdir()
        Catalog(Home.locate(node.home).models_dir).add(placeholder, PLACEHOLDER)
    placeholder.write_bytes(b"not a model, on purpose\n")  # ... then fails the runtime's, before any import
    try:
        _log("M creates a mesh, P joins it ...")
        m.command("init", "--name", "node-m")
        m.start("--model", PLACEHOLDER)
        await _wait(lambda: _status(m), 60, "M's daemon to answer", m)
        token = m.command("invite").strip()
        p.start("--join", token, "--name", "node-p", "--model", PLACEHOLDER)

        async def joined() -> str | None:  # P has no node id until it has joined
            status = await _status(p)
            return status.description.node_id if status is not None else None

        p_id = await _wait(joined, 90, "P to join the mesh", p)
        await _settle(m, p_id)
        m.stop()
        samples = []
        for index in range(SAMPLES):
            _log(f"sample {index + 1} of {SAMPLES}: start M, settle, idle {IDLE_SECONDS:.0f} s ...")
            samples.append(await _sample(m, p_id))
            _log(f"  VmRSS {samples[-1]['status']['VmRSS'] / 1024:.1f} MiB")
        _log("M with --no-api, to see what the HTTP API costs ...")
        no_api = [await _sample(m, p_id, "--no-api") for _ in range(SAMPLES)]
        _log("M under -X importtime ...")
        log = await _importtime(m, p_id)
    finally:
        m.stop()
        p.stop()
    return {"samples": samples, "no_api": no_api, "importtime": log, "load": os.getloadavg()}


# ---- the report ----

def _mib(kib: float) -> str:
    return f"{kib / 1024:.1f} MiB"


def _mib_mb(kib: float) -> str:
    return f"{kib / 1024:.1f} MiB ({kib * 1024 / 1e6:.1f} MB)"


def _bold(text: str, ok: bool) -> str:
    return f"**{text}**" if ok else f"**{text}** (over the target)"


def _short(path: str) -> str:
    """A mapped file's name as a reader knows it: the package folder it ships in and its name."""
    parts = Path(path).parts
    if "site-packages" in parts:
        return "/".join(parts[parts.index("site-packages") + 1:])
    return Path(path).name


def format_rows(results: dict[str, Any]) -> tuple[list[Row], str]:
    samples = results["samples"]
    median = samples[sorted(range(len(samples)), key=lambda i: samples[i]["status"]["VmRSS"])[len(samples) // 2]]
    status, rollup, mapped = median["status"], median["rollup"], median["mapped"]
    rss = [s["status"]["VmRSS"] for s in samples]
    libraries = sorted(((path, kib) for path, kib in mapped.items() if _is_shared_object(path)), key=lambda x: -x[1])
    library_total = sum(kib for _, kib in libraries)
    packages = imported_packages(results["importtime"])
    modules = sum(p.modules for p in packages)
    # Failed attempts are logged too (`org`, which `copy` and `pickle` try for Jython): only what exists here.
    third_party = [p for p in packages if p.name not in sys.stdlib_module_names and not p.name.startswith("_")
                   and importlib.util.find_spec(p.name) is not None]
    model_libraries = [name for name in ("libllama", "libggml", "libmlx", "numpy") if any(name in p for p in mapped)]
    anonymous = {kind: mapped.get(kind, 0) for kind in ("[heap]", "[anon]", "[stack]")}

    rows = [
        Row("idle daemon, no model loaded: RSS (VmRSS)",
            _bold(_mib_mb(status["VmRSS"]), status["VmRSS"] * 1024 <= TARGET_BYTES),
            f"target ≤ {TARGET_BYTES / 1e6:.0f} MB; median of {len(samples)} starts "
            f"({', '.join(f'{x / 1024:.1f}' for x in rss)} MiB); CPU {median['cpu_percent']:.1f}% of a core over "
            f"{IDLE_SECONDS:.0f} s idle; {status['Threads']} threads; start-up peak (VmHWM) {_mib(status['VmHWM'])}"),
        *_no_api_row(results, status["VmRSS"]),
        Row("… anonymous (RssAnon)", _mib(status["RssAnon"]),
            f"malloc heap (`[heap]`) {_mib(anonymous['[heap]'])}, other anonymous mappings (Python's arenas, "
            f"thread stacks and arenas) {_mib(anonymous['[anon]'])}, main stack {_mib(anonymous['[stack]'])}; "
            f"private dirty {_mib(rollup.get('Private_Dirty', 0))}"),
        Row("… file-backed (RssFile)", _mib(status["RssFile"]),
            f"shared objects mapped: {len(libraries)}, resident {_mib(library_total)} with their private "
            f"(relocated) pages; proportional share (Pss) of "
            f"the whole process {_mib(rollup.get('Pss', 0))}; model libraries mapped: "
            f"{', '.join(model_libraries) or 'none'}"
            + ("" if median["placeholder_failed"] else "; **the placeholder model did not fail as intended**")),
        Row("largest mapped libraries (resident)",
            ", ".join(f"{_short(path)} {_mib(kib)}" for path, kib in libraries[:TOP_LIBRARIES]), ""),
        Row("imported packages (outside the standard library; the daemon, before its first runner)",
            ", ".join(f"{p.name} ({p.modules})" for p in third_party),
            f"{modules} modules in all, in {len(packages)} top-level packages; (n) is the module count"),
        Row("most expensive imports (`-X importtime`, own time)",
            ", ".join(f"{p.name} {p.self_ms:.0f} ms" for p in packages[:TOP_PACKAGES]), ""),
    ]
    notes = (f"Two daemons in network namespaces: M created the mesh, P joined it; M is measured, {len(samples)} "
             f"times, each time started afresh with a plain `orc-node start`, once it lists P verified and after "
             f"{IDLE_SECONDS:.0f} s more of idling. Both serve only a catalog entry whose file is not a model, so "
             "no model library is loaded or imported. RSS is of the daemon's Python process (`ip netns exec` "
             "execs it), which is the daemon's own interpreter: `orc-node start` parses its flags, takes the "
             "home's lock and exec's it (same pid), so the daemon carries no command-line library. Imports "
             "come from one more start of M under `python -X importtime` (the daemon's interpreter), start-up plus "
             f"{IDLE_SECONDS:.0f} s idle; the times are one sample on a shared machine (1-minute load average "
             f"{results['load'][0]:.1f}).")
    return rows, notes


def _no_api_row(results: dict[str, Any], with_api_kib: float) -> list[Row]:
    """What the HTTP API (uvicorn, Starlette, prometheus_client, their imports) adds to the idle daemon."""
    samples = results.get("no_api") or []
    if not samples:
        return []
    rss = sorted(s["status"]["VmRSS"] for s in samples)
    median = rss[len(rss) // 2]
    return [Row("… the same with `--no-api`", _mib_mb(median),
                f"median of {len(rss)} starts ({', '.join(f'{x / 1024:.1f}' for x in rss)} MiB): the HTTP API "
                f"(on by default) costs {(with_api_kib - median) / 1024:+.1f} MiB of the figure above")]


def footprint_section(raw: Path | None = None) -> str:
    """The footprint benchmark as a Markdown section (runs it: about a minute, needs root); with
    `raw`, the measurements are also written there as JSON."""
    from tests import netns

    reason = netns.unavailable_reason()
    if reason is not None:
        return f"## {TITLE}\n\nNot run: {reason}.\n"
    with tempfile.TemporaryDirectory(prefix="orc-footprint-") as folder:
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
    args = parser.parse_args(argv)
    publish_section(TITLE, footprint_section(args.raw), args.out if args.write else None)
    return 0


if __name__ == "__main__":
    sys.exit(main())
