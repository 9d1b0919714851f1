"""Real `orc-node` daemons in network namespaces, driven through the real command lines."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import netns

T = TypeVar("T")


def python() -> str:
    return sys.executable


@dataclass
class Node:
    """One device of the test LAN: a namespace, a home folder, and maybe a running daemon."""

    ns: netns.Namespace
    home: Path
    name: str
    process: subprocess.Popen | None = None
    logs: list[Path] = field(default_factory=list)

    @property
    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k != "ORC_HOME"}
        env["ORC_HOME"] = str(self.home)
        env["PYTHONUNBUFFERED"] = "1"
        return env

    def orc_node(self, *args: str, timeout: float = 90) -> subprocess.CompletedProcess[str]:
        return self.ns.run([python(), "-m", "orc.node.cli.orc_node", *args], env=self.env, timeout=timeout)

    def orc(self, *args: str, timeout: float = 180, stdin: str = "") -> subprocess.CompletedProcess[str]:
        return self.ns.run([python(), "-m", "orc.node.cli.orc", *args], env=self.env, timeout=timeout, input=stdin)

    def start(self, *args: str, wrapper: tuple[str, ...] = ()) -> None:
        """`orc-node start ARGS` in the background, logging to a file under the home; `wrapper`
        (e.g. `prlimit --nofile=1024:65536 --`) runs it and must exec it, keeping its pid."""
        assert self.process is None or self.process.poll() is not None, "already running"
        log = self.home / f"daemon-{len(self.logs)}.log"
        self.logs.append(log)
        with log.open("w") as out:
            self.process = self.ns.popen([*wrapper, python(), "-m", "orc.node.cli.orc_node", "start", *args],
                                         env=self.env, stdout=out, stderr=subprocess.STDOUT)

    def log_text(self) -> str:
        return "\n".join(path.read_text(errors="replace") for path in self.logs if path.exists())

    def wait_ready(self, timeout: float = 60) -> dict[str, Any]:
        """Wait until the daemon answers on its control socket; its status."""

        def answered() -> dict[str, Any] | None:
            if self.process is not None and self.process.poll() is not None:
                raise AssertionError(f"{self.name}'s daemon exited {self.process.returncode}:\n{self.log_text()}")
            done = self.orc_node("status", "--json")
            if done.returncode == 0:
                data = json.loads(done.stdout)
                if data.get("mode") == "daemon":
                    return data
            return None

        return wait_for(answered, timeout, f"{self.name}'s daemon to answer")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20) -> int:
        assert self.process is not None
        os.killpg(self.process.pid, sig) if sig == signal.SIGKILL else self.process.send_signal(sig)
        code = self.process.wait(timeout=timeout)
        self.process = None
        return code

    def status(self) -> dict[str, Any]:
        done = self.orc_node("status", "--json")
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout)

    def peers(self) -> list[dict[str, Any]]:
        done = self.orc("peers", "--json", timeout=30)
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout)

    def live_peers(self) -> dict[str, dict[str, Any]]:
        return {p["node_id"]: p for p in self.peers() if p["state"] in ("verified", "degraded") and p["verified"]}

    def invite(self, *args: str) -> str:
        done = self.orc_node("invite", *args)
        assert done.returncode == 0, done.stderr
        token = done.stdout.strip()
        assert token.startswith("orc1-"), done.stdout
        return token


def nodes_on(mesh: netns.NamespaceLan, root: Path, names: Iterable[str]) -> dict[str, Node]:
    """One Node per name, in the mesh's namespaces in order, each with a fresh home under `root`."""
    nodes = {}
    for index, name in enumerate(names):
        home = root / name
        home.mkdir()
        nodes[name] = Node(mesh[index], home, name)
    return nodes


def stop_all(nodes: Iterable[Node], timeout: float = 15) -> None:
    """SIGTERM every running daemon, then wait for each; one that does not stop in time is killed."""
    nodes = list(nodes)
    for node in nodes:
        if node.process is not None and node.process.poll() is None:
            node.process.send_signal(signal.SIGTERM)
    for node in nodes:
        if node.process is not None:
            try:
                node.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                node.process.kill()


def wait_for(check: Callable[[], T | None], timeout: float, what: str, interval: float = 0.2) -> T:
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        try:
            result = check()
        except AssertionError:
            raise
        except Exception as error:  # noqa: BLE001 - report the last failure if time runs out
            result, last = None, error
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what} (last error: {last})")
        time.sleep(interval)


def intruder(ns: netns.Namespace, *args: str, stdin: str = "", timeout: float = 30) -> list[dict[str, Any]]:
    script = Path(__file__).with_name("intruder.py")
    done = ns.run([python(), str(script), *args], timeout=timeout, input=stdin)
    assert "Traceback" not in done.stderr, done.stderr
    return [json.loads(line) for line in done.stdout.splitlines() if line.strip()]


def run_json(node: Node, work: Path, *args: str) -> dict:
    done = node.ns.run([python(), "-m", "orc.node.cli.orc", *args], env=node.env, timeout=300, cwd=work)
    assert done.returncode in (0, 1), f"exit {done.returncode}: {done.stderr}"
    return json.loads(done.stdout)


class Watched:
    """`orc run` in the background, its stderr read line by line as it comes."""

    def __init__(self, node: Node, work: Path, *args: str) -> None:
        self.process = node.ns.popen([python(), "-m", "orc.node.cli.orc", *args], env=node.env, cwd=work,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            self.lines.append(line)

    def text(self) -> str:
        return "".join(self.lines)

    def wait_for_text(self, needle: str, timeout: float) -> str:
        def seen():
            if self.process.poll() is not None and needle not in self.text():
                raise AssertionError(f"orc run exited {self.process.returncode} before '{needle}':\n{self.text()}")
            return next((line for line in self.lines if needle in line), None)

        return wait_for(seen, timeout, f"'{needle}' in the progress", interval=0.05)

    def run_id(self) -> str:
        line = self.wait_for_text(", run ", 60)
        return line.rsplit(" run ", 1)[1].strip()

    def finish(self, timeout: float = 300) -> tuple[int, str]:
        # Not communicate(): it would read stderr too, racing the reader thread for lines.
        assert self.process.stdout is not None
        out = self.process.stdout.read()
        code = self.process.wait(timeout=timeout)
        self._reader.join(timeout=5)
        return code, out


def placed_on(watched: Watched, agent: str, names: dict[str, str], timeout: float = 120) -> str:
    """The node name `agent` was bound to, from the progress line `→ agent on NAME`."""
    line = watched.wait_for_text(f"→ {agent} on ", timeout)
    name = line.split(f"→ {agent} on ", 1)[1].strip()
    assert name in names, line
    return name
