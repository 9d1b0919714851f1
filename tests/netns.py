"""A throwaway LAN for multi-host tests: N Linux network namespaces on one bridge.

    mesh = NamespaceLan.create(3)            # needs root and iproute2's `ip`
    mesh[0].ip                       # "10.77.X.11"
    mesh[1].popen([python, "x.py"])  # a process inside namespace 1 (via `ip netns exec`)
    mesh[2].run(["ip", "addr"])      # run to completion, output captured
    mesh.close()                     # kills what runs inside, deletes namespaces, veths, bridge

Each namespace has `lo` up and one veth (`eth0`) on a private /24 that exists only inside the
namespaces: the bridge in the root namespace has no address and nothing is forwarded, so test
traffic cannot leave. Multicast (mDNS) works: the bridge floods it (snooping off) and each
namespace routes 224.0.0.0/4 out of eth0.

Names carry this process's pid (`orct-<pid>-...`, `orcb<pid>..`, `orcv<pid>...`), so parallel
runs do not collide, and leftovers of a crashed run (a pid no longer alive) are removed before a
new mesh is made. Every mesh is closed by its fixture's finalizer and, failing that, at exit
(SIGTERM included: it is turned into KeyboardInterrupt while meshes exist).

`require_netns()` skips the calling test with a loud reason when namespaces cannot be made
(not Linux, not root, no `ip`, no permission); with the `CI` environment variable set, it fails
instead, so CI cannot silently skip the multi-host tests.
"""

from __future__ import annotations

import atexit
import ipaddress
import itertools
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest

NS_PREFIX = "orct-"  # namespaces: orct-<pid hex>-<mesh>-<index>
BRIDGE_PREFIX = "orcb"  # bridges: orcb<pid hex, 6><mesh, 2>  (interface names are at most 15 chars)
VETH_PREFIX = "orcv"  # veths (root side): orcv<pid hex, 6><mesh, 2><index, 2>
MAX_NAMESPACES = 200  # one /24, hosts .11 up

REPO = Path(__file__).resolve().parents[1]

_PID = f"{os.getpid():06x}"[-6:]
_counter = itertools.count(1)
_live: set["NamespaceLan"] = set()
_probe_result: str | None | bool = False  # False: not probed yet


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30)
    if check and done.returncode != 0:
        raise RuntimeError(f"`ip {' '.join(args)}` failed ({done.returncode}): {done.stderr.strip()}")
    return done


def _write(path: str, value: str) -> None:
    try:
        Path(path).write_text(value)
    except OSError:
        pass  # e.g. IPv6 disabled in this kernel: nothing to switch off


def python() -> str:
    """The project's interpreter (`.venv/bin/python`), for processes started inside namespaces."""
    candidate = REPO / ".venv" / "bin" / "python"
    return str(candidate) if candidate.exists() else sys.executable


# ---- can this machine do it? ----

def unavailable_reason() -> str | None:
    """Why network namespaces cannot be used here, or None if they can."""
    global _probe_result
    if _probe_result is not False:
        return _probe_result  # type: ignore[return-value]
    reason: str | None = None
    if not sys.platform.startswith("linux"):
        reason = f"network namespaces need Linux (this is {sys.platform})"
    elif os.geteuid() != 0:
        reason = "network namespaces need root (run the mesh tests with sudo, or in a privileged container)"
    elif shutil.which("ip") is None:
        reason = "iproute2's `ip` command is not installed"
    else:
        probe = f"{NS_PREFIX}{_PID}-probe"
        done = _ip("netns", "add", probe, check=False)
        if done.returncode != 0:
            reason = f"`ip netns add` is not permitted here: {done.stderr.strip()}"
        else:
            _ip("netns", "del", probe, check=False)
    _probe_result = reason
    return reason


def require_netns() -> None:
    """Skip (or, with CI set, fail) the current test if namespaces cannot be made."""
    reason = unavailable_reason()
    if reason is None:
        return
    message = f"MULTI-HOST NETNS TESTS NOT RUN: {reason}"
    if os.environ.get("CI"):
        pytest.fail(message + " (CI is set, so this is a failure, not a skip)", pytrace=False)
    pytest.skip(message)


# ---- leftovers of crashed runs ----

def _pid_alive(pid_hex: str) -> bool:
    try:
        pid = int(pid_hex, 16)
    except ValueError:
        return True  # not ours to judge: leave it alone
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def namespaces() -> list[str]:
    done = _ip("netns", "list", check=False)
    return [line.split()[0] for line in done.stdout.splitlines() if line.strip()]


def links() -> list[str]:
    done = _ip("-o", "link", "show", check=False)
    names = []
    for line in done.stdout.splitlines():
        parts = line.split(":", 2)
        if len(parts) >= 2:
            names.append(parts[1].strip().split("@")[0])
    return names


def remove_stale() -> list[str]:
    """Delete namespaces, bridges and veths left by harness processes that no longer run."""
    removed = []
    for name in namespaces():
        if name.startswith(NS_PREFIX) and not _pid_alive(name[len(NS_PREFIX):].split("-")[0]):
            _kill_inside(name)
            _ip("netns", "del", name, check=False)
            removed.append(name)
    for name in links():
        for prefix in (BRIDGE_PREFIX, VETH_PREFIX):
            if name.startswith(prefix) and not _pid_alive(name[len(prefix):len(prefix) + 6]):
                _ip("link", "del", name, check=False)
                removed.append(name)
    return removed


def _kill_inside(namespace: str) -> None:
    """SIGKILL every process still running in a namespace (they would keep its network alive)."""
    done = _ip("netns", "pids", namespace, check=False)
    for word in done.stdout.split():
        if word.isdigit():
            try:
                os.kill(int(word), signal.SIGKILL)
            except ProcessLookupError:
                pass


# ---- the mesh ----

@dataclass(eq=False)
class Namespace:
    name: str
    ip: str
    veth: str  # root-namespace end of this namespace's veth pair
    processes: list[subprocess.Popen] = field(default_factory=list)

    def argv(self, argv: Sequence[str]) -> list[str]:
        return ["ip", "netns", "exec", self.name, *argv]

    def popen(self, argv: Sequence[str], env: Mapping[str, str] | None = None, **kw) -> subprocess.Popen:
        """Start `argv` inside this namespace; it is killed when the mesh closes."""
        kw.setdefault("start_new_session", True)  # its own process group, killed as a whole
        process = subprocess.Popen(self.argv(argv), env=dict(env) if env is not None else None, **kw)
        self.processes.append(process)
        return process

    def run(self, argv: Sequence[str], env: Mapping[str, str] | None = None, timeout: float = 60,
            check: bool = False, **kw) -> subprocess.CompletedProcess[str]:
        """Run `argv` inside this namespace to completion, output captured as text."""
        kw.setdefault("capture_output", True)
        kw.setdefault("text", True)
        return subprocess.run(self.argv(argv), env=dict(env) if env is not None else None,
                              timeout=timeout, check=check, **kw)

    def _stop(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                try:
                    os.killpg(process.pid, signal.SIGTERM)
                except (ProcessLookupError, PermissionError):
                    pass
        deadline = time.monotonic() + 3
        for process in self.processes:
            try:
                process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(process.pid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass
                process.wait(timeout=5)
        _kill_inside(self.name)


@dataclass(eq=False)
class NamespaceLan:
    bridge: str
    subnet: ipaddress.IPv4Network
    namespaces: list[Namespace]
    closed: bool = False

    @classmethod
    def create(cls, count: int) -> NamespaceLan:
        """`count` namespaces on a new bridge. Raises RuntimeError (after cleaning up) on failure."""
        if not 1 <= count <= MAX_NAMESPACES:
            raise ValueError(f"a mesh has 1 to {MAX_NAMESPACES} namespaces")
        remove_stale()
        _teardown_on_sigterm()
        number = next(_counter)
        subnet = ipaddress.IPv4Network(f"10.77.{(os.getpid() + number) % 200 + 20}.0/24")
        mesh = cls(f"{BRIDGE_PREFIX}{_PID}{number % 256:02x}", subnet, [])
        _live.add(mesh)
        try:
            mesh._build(count, number)
        except BaseException:
            mesh.close()
            raise
        return mesh

    def _build(self, count: int, number: int) -> None:
        # Snooping off: the bridge floods multicast to every port, as a dumb switch would.
        _ip("link", "add", self.bridge, "type", "bridge", "mcast_snooping", "0")
        # Keep the root namespace off this LAN entirely (no IPv6 link-local address on it).
        _write(f"/proc/sys/net/ipv6/conf/{self.bridge}/disable_ipv6", "1")
        _ip("link", "set", self.bridge, "up")
        hosts = list(self.subnet.hosts())[10:]
        for index in range(count):
            name = f"{NS_PREFIX}{_PID}-{number:02x}-{index}"
            veth = f"{VETH_PREFIX}{_PID}{number % 256:02x}{index:02x}"
            ip = str(hosts[index])
            _ip("netns", "add", name)
            namespace = Namespace(name, ip, veth)
            self.namespaces.append(namespace)
            _ip("link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", name)
            _write(f"/proc/sys/net/ipv6/conf/{veth}/disable_ipv6", "1")
            _ip("link", "set", veth, "master", self.bridge)
            _ip("link", "set", veth, "up")
            _ip("-n", name, "link", "set", "lo", "up")
            _ip("-n", name, "addr", "add", f"{ip}/{self.subnet.prefixlen}", "dev", "eth0")
            _ip("-n", name, "link", "set", "eth0", "up")
            # mDNS sends to 224.0.0.251; make sure multicast leaves through the mesh LAN.
            _ip("-n", name, "route", "add", "224.0.0.0/4", "dev", "eth0")
        self._wait_up()

    def _wait_up(self, timeout: float = 10) -> None:
        deadline = time.monotonic() + timeout
        for namespace in self.namespaces:
            while "state UP" not in _ip("-n", namespace.name, "link", "show", "eth0").stdout:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"eth0 in {namespace.name} did not come up")
                time.sleep(0.05)

    def __getitem__(self, index: int) -> Namespace:
        return self.namespaces[index]

    def __len__(self) -> int:
        return len(self.namespaces)

    def __iter__(self):
        return iter(self.namespaces)

    def close(self) -> None:
        """Kill everything inside, delete the namespaces (and their veths) and the bridge. Idempotent."""
        if self.closed:
            return
        for namespace in self.namespaces:
            namespace._stop()
            _ip("netns", "del", namespace.name, check=False)
            _ip("link", "del", namespace.veth, check=False)  # normally gone with its peer already
        _ip("link", "del", self.bridge, check=False)
        self.closed = True
        _live.discard(self)


class JsonLines:
    """Collects the JSON lines a process prints on stdout (in a thread), for waiting on them."""

    def __init__(self, process: subprocess.Popen) -> None:
        self.records: list[dict] = []
        self._changed = threading.Condition()
        self._thread = threading.Thread(target=self._read, args=(process,), daemon=True)
        self._thread.start()

    def _read(self, process: subprocess.Popen) -> None:
        for line in process.stdout:
            try:
                record = json.loads(line)
            except ValueError:
                continue
            with self._changed:
                self.records.append(record)
                self._changed.notify_all()

    def wait_for(self, predicate: Callable[[dict], bool], timeout: float) -> dict:
        """The first record matching `predicate`, waiting up to `timeout` seconds (TimeoutError)."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                for record in self.records:
                    if predicate(record):
                        return record
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(f"no matching record within {timeout} s; got {self.records}")
                self._changed.wait(remaining)

    def matching(self, predicate: Callable[[dict], bool]) -> list[dict]:
        with self._changed:
            return [record for record in self.records if predicate(record)]


def _teardown_on_sigterm() -> None:
    """Turn SIGTERM (e.g. from `timeout`) into KeyboardInterrupt, so fixtures and atexit still
    tear the meshes down; a SIGKILLed run leaves leftovers for `remove_stale` instead."""
    if threading.current_thread() is not threading.main_thread():
        return
    if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
        def interrupt(signum, frame):
            signal.signal(signal.SIGTERM, signal.SIG_DFL)  # a second SIGTERM kills outright
            raise KeyboardInterrupt("SIGTERM")

        signal.signal(signal.SIGTERM, interrupt)


@atexit.register
def _close_all() -> None:
    for mesh in list(_live):
        mesh.close()
