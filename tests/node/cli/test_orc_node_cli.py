"""`orc-node status`: this node's hardware, models and folders, as text and JSON."""

import os
import subprocess
import sys
from pathlib import Path

from orc.node.hardware import probe


def orc_node(home: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "ORC_HOME": str(home)}
    return subprocess.run([sys.executable, "-m", "orc.node.cli.orc_node", *args], capture_output=True, text=True,
                          env=env, timeout=120)


def test_status_reports_this_node(home):
    data = __import__("json").loads(orc_node(home, "status", "--json").stdout)
    assert data["node_id"] == "local" and data["mode"] == "embedded" and data["peers"] == []
    assert data["hardware"]["cores"] == os.cpu_count()
    assert data["hardware"]["ram_total_bytes"] > data["hardware"]["ram_available_bytes"] > 0
    assert "smollm2-135m-instruct" in [m["id"] for m in data["models"]]
    assert data["home"]["state"] == str(home)
    text = orc_node(home, "status")
    assert text.returncode == 0 and "cores" in text.stdout and "smollm2-135m-instruct" in text.stdout


def test_hardware_probe_matches_the_os():
    hardware = probe()
    assert hardware.cores == os.cpu_count()
    meminfo = Path("/proc/meminfo")
    if meminfo.is_file():
        total_kib = int(meminfo.read_text().split("MemTotal:")[1].split()[0])
        assert hardware.ram_total_bytes == total_kib * 1024
    assert hardware.accelerator in ("metal", "cuda", "none")
