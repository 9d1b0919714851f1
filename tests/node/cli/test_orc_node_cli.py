"""`orc-node status`: this node's hardware, models and folders, as text and JSON."""

import os
import subprocess
import sys
from pathlib import Path

from orc.node.models.hardware import probe


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


# ---- mesh commands without a daemon ----

def test_init_creates_a_mesh_and_status_reports_it_stopped(home):
    done = orc_node(home, "init", "--name", "attic-pi")
    assert done.returncode == 0, done.stderr
    assert "created mesh" in done.stdout
    data = __import__("json").loads(orc_node(home, "status", "--json").stdout)
    assert data["mode"] == "stopped" and data["name"] == "attic-pi" and data["ca_holder"] is True
    assert len(data["node_id"]) == 20 and len(data["mesh_id"]) == 16
    assert (home / "identity").stat().st_mode & 0o777 == 0o700
    again = orc_node(home, "init")
    assert again.returncode == 2 and "already" in again.stderr and "Traceback" not in again.stderr


def test_start_before_joining_says_what_to_do(home):
    done = orc_node(home, "start", "--no-mdns", "--no-api")
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "orc-node init" in done.stderr and "--join" in done.stderr


def test_bad_flags_are_clear_errors(home):
    assert orc_node(home, "init").returncode == 0
    for args, words in [
        (("start", "--model", "no-such-model", "--no-mdns", "--listen", "127.0.0.1:45873"), "no-such-model"),
        (("start", "--interface", "eth0"), "IP address"),
        (("start", "--peer", "host:notaport", "--no-mdns"), "--peer"),
        (("start", "--tag", "bad tag"), "--tag"),
        (("start", "--api", "0.0.0.0:45880", "--no-mdns", "--listen", "127.0.0.1:45875"), "api-key create"),
        (("start", "--api", "127.0.0.1:45881", "--no-api"), "--no-api"),
        (("start", "--api", "nowhere:port", "--no-mdns", "--listen", "127.0.0.1:45876"), "--api"),
        (("invite", "--ttl", "forever"), "--ttl"),
        (("revoke", "not-a-node-id"), "node id"),
        (("join", "orc1-short-token"), "join token"),
    ]:
        done = orc_node(home, *args)
        assert done.returncode == 2, (args, done.returncode, done.stderr)
        assert "Traceback" not in done.stderr and words in done.stderr, (args, done.stderr)


def test_invite_and_revoke_work_while_the_daemon_is_stopped(home):
    assert orc_node(home, "init").returncode == 0
    done = orc_node(home, "invite", "--ttl", "2m")
    assert done.returncode == 0 and done.stdout.startswith("orc1-"), done.stderr
    assert "daemon is not running" in done.stderr
    stored = __import__("json").loads((home / "identity" / "invites.json").read_text())
    assert len(stored["pending"]) == 1
    assert done.stdout.strip().rsplit("-", 1)[1] not in (home / "identity" / "invites.json").read_text()
    revoked = orc_node(home, "revoke", "a" * 20, "--reason", "lost")
    assert revoked.returncode == 0 and "revoked" in revoked.stdout
    twice = orc_node(home, "revoke", "a" * 20)
    assert twice.returncode == 2 and "already revoked" in twice.stderr


def test_only_a_ca_holder_can_invite(home, tmp_path):
    # A member that joined holds no CA key: simulate by removing it from a fresh mesh's copy.
    assert orc_node(home, "init").returncode == 0
    (home / "identity" / "ca.key").unlink()
    done = orc_node(home, "invite")
    assert done.returncode == 2 and "CA" in done.stderr and "Traceback" not in done.stderr


def test_orc_peers_without_a_daemon_exits_3(home):
    env = {**os.environ, "ORC_HOME": str(home)}
    done = subprocess.run([sys.executable, "-m", "orc.node.cli.orc", "peers"], capture_output=True, text=True,
                          env=env, timeout=60)
    assert done.returncode == 3 and "orc-node start" in done.stderr
