"""A real local Ray cluster for the tests: a head and workers as separate processes, each
`ray start` with its own temp folder, on 127.0.0.1, stopped by pid.

`ray stop` would stop every Ray process of the machine, other people's clusters included; the
processes `ray start` leaves behind are reparented away from it, so they are found by the one
thing only this cluster's processes have: its temp folder on their command line (with their
children, the model runners, which do not name it).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

MODEL = "smollm2-135m-instruct"
# In the environment of every process of a test cluster (Ray passes its environment on), naming
# its temp folder: how `stop` finds them all.
CLUSTER_MARK = "ORC_TEST_RAY_CLUSTER"


def require_ray() -> None:
    """Ray importable, else a loud skip, or a failure where Ray must be there (CI, ORC_REQUIRE_RAY)."""
    try:
        import ray

        if not hasattr(ray, "init"):  # this very folder, seen as a namespace package, is not Ray
            raise ImportError("not Ray")
    except ImportError:
        message = "ray is not installed (pip install 'orc-mesh[ray]'): the Ray cluster tests did NOT run"
        if os.environ.get("CI") or os.environ.get("ORC_REQUIRE_RAY"):
            pytest.fail(message)
        pytest.skip(message)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _ppids() -> dict[int, int]:
    parents = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
                parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
    return parents


def processes_of(tag: str) -> set[int]:
    """Pids whose command line or environment names `tag`, and all their descendants.

    The environment catches what the command line does not: Ray's client server, for one, is
    started without the temp folder in its arguments and outlives `ray start` as an orphan."""
    mine = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            try:
                if any(tag.encode() in (entry / part).read_bytes() for part in ("cmdline", "environ")):
                    mine.add(int(entry.name))
            except OSError:
                continue
    parents = _ppids()
    grew = True
    while grew:
        children = {pid for pid, parent in parents.items() if parent in mine} - mine
        grew = bool(children)
        mine |= children
    return mine


def kill_tagged(tag: str, grace_s: float = 5.0) -> None:
    for sig in (signal.SIGTERM, signal.SIGKILL):
        pids = processes_of(tag)
        for pid in pids:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + grace_s
        while pids and time.monotonic() < deadline:
            pids = {p for p in pids if Path(f"/proc/{p}").exists() and _alive(p)}
            time.sleep(0.1)


def _alive(pid: int) -> bool:
    try:
        return (Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]) != "Z"
    except (OSError, IndexError):
        return False


@dataclass
class LocalCluster:
    temp: Path
    home: Path
    port: int
    env: dict[str, str] = field(default_factory=dict)

    @property
    def address(self) -> str:
        return f"ray://127.0.0.1:{self.port}"

    def start_node(self, *args: str) -> None:
        command = [str(Path(sys.executable).with_name("ray")), "start", "--node-ip-address", "127.0.0.1",
                   "--num-cpus", "1", "--temp-dir", str(self.temp), "--disable-usage-stats", *args]
        done = subprocess.run(command, env=self.env, capture_output=True, text=True, timeout=120, check=False)
        assert done.returncode == 0, done.stdout + done.stderr

    def stop(self) -> None:
        kill_tagged(str(self.temp))


# The tests' workers: two actors' worth of the model (and orc's tag `lab`), and one without it.
TEST_WORKERS = ({f"orc-model:{MODEL}": 2, "orc-tag:lab": 1}, {})


def start_cluster(home: Path, workers: tuple[dict[str, int], ...] = TEST_WORKERS) -> LocalCluster:
    """A head serving no model and one worker per entry of `workers`, started with those
    resources (none: a worker serving nothing)."""
    temp = Path(tempfile.mkdtemp(prefix="orc-ray-", dir="/tmp"))  # short: Ray's socket paths must fit
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    env.update(ORC_HOME=str(home), RAY_USAGE_STATS_ENABLED="0", **{CLUSTER_MARK: str(temp)})
    cluster = LocalCluster(temp, home, free_port(), env)
    try:
        cluster.start_node("--head", "--port", str(cluster.port), "--include-dashboard=false",
                           "--ray-client-server-port", str(free_port()))
        gcs = f"127.0.0.1:{cluster.port}"
        for resources in workers:
            cluster.start_node("--address", gcs, *(("--resources", json.dumps(resources)) if resources else ()))
    except BaseException:
        cluster.stop()
        shutil.rmtree(temp, ignore_errors=True)
        raise
    return cluster
