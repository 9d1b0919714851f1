"""The dashboard in a real browser (Debian's headless Chromium) against a two-node namespace mesh.

    a   created the mesh, serves smollm2, tagged `alpha`; its dashboard is the one opened
    b   joined, serves smollm2, tagged `beta`; killed (SIGKILL) in the last test, while the page
        is open on the mesh view

An ensemble in a's home pins one agent to each node and joins their answers in a third, so a run
started from the page must show agents on both nodes. The browser runs in a's namespace
(tests/mesh/dashboard_driver.py), where the API listens on loopback, and reports what the page
showed as JSON. With ORC_WRITE_SCREENSHOTS=1 the screenshots it takes go to docs/dashboard/
(mesh, run, ensembles, phone, dead); otherwise they stay in the test's temporary folder.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
from pathlib import Path

import browser
import netns
import pytest
from nodes import Node, python, stop_all, wait_for

SMOL = "smollm2-135m-instruct"
URL = "http://127.0.0.1:7780"
DRIVER = Path(__file__).with_name("dashboard_driver.py")
DOCS = Path(__file__).resolve().parents[2] / "docs" / "dashboard"
pytestmark = pytest.mark.slow

ENSEMBLE = "both-sides"
BOTH_SIDES = f"""\
name: {ENSEMBLE}
description: One agent on each node, a third joining their answers.
agents:
  - name: left
    model: {SMOL}
    system_prompt: "Give one reason for the first choice, in one sentence."
    max_tokens: 16
    temperature: 0
    placement: {{require_tags: [alpha]}}
  - name: right
    model: {SMOL}
    system_prompt: "Give one reason for the second choice, in one sentence."
    max_tokens: 16
    temperature: 0
    placement: {{require_tags: [beta]}}
  - name: verdict
    model: {SMOL}
    depends_on: [left, right]
    system_prompt: "You are given two reasons. Say which drink wins and why, in one sentence."
    max_tokens: 24
    temperature: 0
"""
AGENTS = {"left", "right", "verdict"}


@pytest.fixture(scope="module")
def lan(tmp_path_factory):
    netns.require_netns()
    chromium, chromedriver = browser.require_chromium()
    mesh = netns.NamespaceLan.create(2)
    root = tmp_path_factory.mktemp("dashboard")
    os.chmod(root, 0o755)
    a, b = Node(mesh[0], root / "a", "a"), Node(mesh[1], root / "b", "b")
    for node in (a, b):
        node.home.mkdir()
    try:
        assert a.orc_node("init", "--name", "a").returncode == 0
        created = a.orc_node("api-key", "create", "--name", "browser")
        assert created.returncode == 0, created.stderr
        (a.home / "ensembles").mkdir()  # Home.ensembles_dir under --home / ORC_HOME
        (a.home / "ensembles" / f"{ENSEMBLE}.yaml").write_text(BOTH_SIDES)
        a.start("--model", SMOL, "--tag", "alpha", "--threads", "1")
        a.wait_ready()
        b.start("--join", a.invite(), "--name", "b", "--model", SMOL, "--tag", "beta", "--threads", "1")
        b.wait_ready()
        wait_for(lambda: warm_peer(a, "b"), 300, "a to see b's smollm2 warm")
        wait_for(lambda: warm_here(a), 300, "a's own smollm2 warm")
        yield {"a": a, "b": b, "key": created.stdout.strip(), "browser": (chromium, chromedriver),
               "shots": root / "shots"}
    finally:
        stop_all((a, b))
        mesh.close()


def warm_peer(viewer: Node, name: str) -> bool | None:
    for peer in viewer.live_peers().values():
        if peer.get("name") == name:
            return any(m["id"] == SMOL and m["loaded"] and m["decode_tokens_per_s"] for m in peer["models"]) or None
    return None


def warm_here(node: Node) -> bool | None:
    return any(m["id"] == SMOL and m.get("loaded") for m in node.status().get("models", [])) or None


def driver_argv(lan, phase: str, arg: str = "") -> list[str]:
    return [python(), str(DRIVER), phase, URL, lan["key"], str(lan["shots"]), *lan["browser"], arg]


def checked(lan, phase: str, seen: dict) -> dict:
    """`seen`, after failing with what the page showed and a's log if a wait inside the phase ran out."""
    assert "timeout" not in seen, f"{phase}: timed out waiting for {seen['timeout']}\n{json.dumps(seen, indent=1)}" \
                                  f"\n{lan['a'].log_text()[-3000:]}"
    return seen


def drive(lan, phase: str, arg: str = "", timeout: float = 600) -> dict:
    """Run one phase of the driver in a's namespace; what the browser saw."""
    a: Node = lan["a"]
    done = a.ns.run(driver_argv(lan, phase, arg), env=a.env, timeout=timeout)
    assert done.returncode == 0, f"{phase}: {done.stderr[-3000:]}\n{a.log_text()[-3000:]}"
    return checked(lan, phase, json.loads(done.stdout))


def errors(entries: list[dict], *, refused_is_fine: bool = False) -> list[dict]:
    """The console's SEVERE entries. Before a key is given, Chromium logs every 401 the page is
    answered with as a failed resource; with `refused_is_fine` those are not errors of the page."""
    return [e for e in entries if e["level"] == "SEVERE"
            and not (refused_is_fine and "status of 401" in (e["message"] or ""))]


def keep_screenshots(lan, names: tuple[str, ...]) -> None:
    """Copy the named screenshots into docs/dashboard/ when ORC_WRITE_SCREENSHOTS=1 (after the
    phase's assertions passed, so only views that showed what they should are kept)."""
    if os.environ.get("ORC_WRITE_SCREENSHOTS") != "1":
        return
    DOCS.mkdir(parents=True, exist_ok=True)
    for name in names:
        shutil.copyfile(lan["shots"] / f"{name}.png", DOCS / f"{name}.png")


def test_without_a_key_the_api_and_the_stream_refuse_and_the_page_shows_only_the_login(lan):
    seen = drive(lan, "nokey")
    assert seen["http"] == {"/api/mesh": 401, "/api/events": 401, "/api/runs": 401}
    assert seen["browser"] == {"/api/mesh": 401, "/api/events": 401}
    assert seen["login_shown"] and seen["views_shown"] == [] and seen["nodes"] == [], seen
    assert errors(seen["console_before_login"], refused_is_fine=True) == [], seen["console_before_login"]


def test_a_run_started_from_the_page_runs_on_both_nodes_and_completes(lan):
    seen = drive(lan, "run", f"{ENSEMBLE}:verdict")
    assert errors(seen["console_before_login"], refused_is_fine=True) == [], seen["console_before_login"]
    assert errors(seen["console"]) == [], seen["console"]

    names = sorted(n["name"] for n in seen["nodes"])
    assert names == ["a", "b"], seen["nodes"]
    states = {n["name"]: n["state"] for n in seen["nodes"]}
    assert states["a"] == "self" and states["b"] == "verified", states
    assert {"name": ENSEMBLE, "valid": "true"} in seen["ensembles"], seen["ensembles"]

    assert seen["status"] == "completed", seen
    agents = {x["agent"]: x for x in seen["agents"]}
    assert set(agents) == AGENTS and all(x["status"] == "completed" for x in agents.values()), seen["agents"]
    assert agents["left"]["node_name"] == "a" and agents["right"]["node_name"] == "b", seen["agents"]
    assert agents["verdict"]["node_name"] in ("a", "b"), seen["agents"]

    work = [bar for bar in seen["bars"] if bar["kind"] == "work"]
    assert sorted(bar["agent"] for bar in work) == sorted(AGENTS), seen["bars"]  # one work bar per agent
    assert all(bar["node_name"] == agents[bar["agent"]]["node_name"] for bar in work), seen["bars"]
    assert all(bar["kind"] in ("work", "wait") for bar in seen["bars"]), seen["bars"]
    assert seen["listed_status"] == "completed", seen  # and the runs view lists it so

    # What the page shows is what the API told it, and the deliverable is the last agent's answer.
    api = seen["api_run"]
    assert api["status"] == "completed" and api["deliverable"].strip(), api
    assert seen["deliverable"].strip() == api["deliverable"].strip() == api["agents"]["verdict"]["output"].strip()
    assert {name: (x["status"], x["node_name"]) for name, x in api["agents"].items()} == \
        {name: (x["status"], x["node_name"]) for name, x in agents.items()}
    # verdict was selected before it finished: its tokens came into #tokens as they streamed.
    assert seen["follow_status_when_selected"] in ("pending", "running"), seen
    assert seen["tokens"].strip() == api["agents"]["verdict"]["output"].strip(), seen

    assert seen["desktop_overflow"] == 0 and seen["phone_overflow"] == 0, seen  # nothing scrolls sideways
    assert set(seen["screenshots"]) == {"mesh", "ensembles", "run", "phone"}
    keep_screenshots(lan, ("mesh", "ensembles", "run", "phone"))


def test_a_node_killed_shows_dead_on_the_open_page_and_after_signing_in_again(lan, tmp_path):
    a: Node = lan["a"]
    b: Node = lan["b"]
    with (tmp_path / "driver.log").open("w") as log:
        watching = a.ns.popen(driver_argv(lan, "dead", "b"), env=a.env, stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, stderr=log, text=True)
    printed = netns.JsonLines(watching)
    try:
        first = printed.wait_for(lambda r: "ready" in r or "phase" in r, 120)
        checked(lan, "dead", first)  # a "phase" record here is the driver giving up before the kill
        b.stop(signal.SIGKILL)
        watching.stdin.write("killed\n")
        watching.stdin.flush()
        seen = checked(lan, "dead", printed.wait_for(lambda r: "phase" in r, 300))
    finally:
        try:
            watching.wait(timeout=30)  # it prints what it saw, then closes the browser and exits
        except subprocess.TimeoutExpired:
            watching.kill()
            watching.wait(timeout=30)
    assert watching.returncode == 0, (tmp_path / "driver.log").read_text()[-3000:]

    assert errors(seen["console_before_login"], refused_is_fine=True) == [], seen["console_before_login"]
    assert errors(seen["console"]) == [], seen["console"]
    assert {n["name"]: n["state"] for n in seen["before"]} == {"a": "self", "b": "verified"}, seen
    live = {n["name"]: n["state"] for n in seen["live"]}
    assert live["a"] == "self" and live.get("b", "gone") in ("dead", "gone"), seen  # no reload needed
    # 3 missed 1 s beats make b dead; the page hears of it within the second after.
    assert seen["seconds_to_dead"] < 15, seen
    again = {n["name"]: n["state"] for n in seen["nodes"]}
    assert again["a"] == "self" and again.get("b", "gone") in ("dead", "gone"), seen
    keep_screenshots(lan, ("dead",))
