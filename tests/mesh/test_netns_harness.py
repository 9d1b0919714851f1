"""The network-namespace harness itself: reachability, isolation, teardown, skip-or-fail."""

from __future__ import annotations

import ipaddress
import subprocess
import textwrap

import netns
import pytest

ECHO_SERVER = textwrap.dedent("""
    import socket, sys
    server = socket.create_server((sys.argv[1], 9000))
    print("listening", flush=True)
    connection, peer = server.accept()
    connection.sendall(b"echo:" + connection.recv(100) + b" from " + peer[0].encode())
""")

CLIENT = textwrap.dedent("""
    import socket, sys
    with socket.create_connection((sys.argv[1], 9000), timeout=5) as connection:
        connection.sendall(b"ping")
        print(connection.recv(100).decode())
""")


def test_namespaces_reach_each_other_over_the_bridge(netns_mesh) -> None:
    mesh = netns_mesh(3)
    assert len({ns.ip for ns in mesh}) == 3
    assert all(ipaddress.ip_address(ns.ip) in mesh.subnet for ns in mesh)
    server = mesh[0].popen([netns.python(), "-c", ECHO_SERVER, mesh[0].ip], stdout=subprocess.PIPE, text=True)
    assert server.stdout.readline().strip() == "listening"
    done = mesh[2].run([netns.python(), "-c", CLIENT, mesh[0].ip], timeout=30)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"echo:ping from {mesh[2].ip}"


def test_each_namespace_has_loopback_and_a_multicast_route(netns_mesh) -> None:
    mesh = netns_mesh(1)
    links = mesh[0].run(["ip", "-o", "link", "show"]).stdout
    assert "lo:" in links and "eth0" in links and links.count("state UP") >= 1
    assert "LOOPBACK,UP" in links
    assert "224.0.0.0/4 dev eth0" in mesh[0].run(["ip", "route"]).stdout


def test_the_mesh_lan_does_not_exist_outside_the_namespaces(netns_mesh) -> None:
    mesh = netns_mesh(2)
    root = subprocess.run(["ip", "-o", "addr", "show"], capture_output=True, text=True).stdout
    assert str(mesh[0].ip) not in root and str(mesh[1].ip) not in root
    bridge = subprocess.run(["ip", "-o", "addr", "show", "dev", mesh.bridge], capture_output=True, text=True)
    assert "inet" not in bridge.stdout  # no address, so nothing is routed from or to the root namespace


def test_close_kills_processes_and_leaves_nothing_behind(netns_mesh) -> None:
    mesh = netns_mesh(2)
    sleeper = mesh[1].popen(["sleep", "1000"])
    stubborn = mesh[0].popen([netns.python(), "-c", "import signal, time\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
                                                   "print('ready', flush=True)\ntime.sleep(1000)"],
                             stdout=subprocess.PIPE, text=True)
    assert stubborn.stdout.readline().strip() == "ready"
    names = [ns.name for ns in mesh]
    assert set(names) <= set(netns.namespaces())
    mesh.close()
    assert sleeper.poll() is not None and stubborn.poll() is not None
    assert not set(names) & set(netns.namespaces())
    leftovers = [link for link in netns.links() if link == mesh.bridge or link in {ns.veth for ns in mesh}]
    assert leftovers == []
    mesh.close()  # idempotent


def test_leftovers_of_a_crashed_run_are_removed(netns_mesh) -> None:
    netns.require_netns()
    dead_pid = "4fffff"  # above the kernel's largest pid (4194304 = 0x400000): never alive
    stale_ns, stale_bridge = f"{netns.NS_PREFIX}{dead_pid}-01-0", f"{netns.BRIDGE_PREFIX}{dead_pid}01"
    subprocess.run(["ip", "netns", "add", stale_ns], check=True)
    subprocess.run(["ip", "link", "add", stale_bridge, "type", "bridge"], check=True)
    try:
        netns_mesh(1)
        assert stale_ns not in netns.namespaces()
        assert stale_bridge not in netns.links()
    finally:
        subprocess.run(["ip", "netns", "del", stale_ns], capture_output=True)
        subprocess.run(["ip", "link", "del", stale_bridge], capture_output=True)


def test_without_namespaces_tests_skip_loudly_or_fail_under_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(netns, "_probe_result", "network namespaces need root")
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="MULTI-HOST NETNS TESTS NOT RUN: network namespaces need root"):
        netns.require_netns()
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="CI is set"):
        netns.require_netns()

