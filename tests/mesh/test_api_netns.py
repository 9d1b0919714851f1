"""The HTTP API of one node of a three-node mesh, used as people use it: the `openai` package,
httpx and curl, from inside that node's namespace (the API listens on its loopback).

    a   created the mesh, serves smollm2; its API is the one used
    b   serves gemma3-270m only: a model only another node has
    c   serves smollm2

Every daemon is real (mTLS, mDNS, runners, real models); the client runs in a's namespace
(tests/mesh/api_client.py) and reports what it saw as JSON.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path

import netns
import pytest
from nodes import Node, python, wait_for
from prometheus_client.parser import text_string_to_metric_families

SMOL = "smollm2-135m-instruct"
GEMMA = "gemma3-270m"
URL = "http://127.0.0.1:7780"
CLIENT = Path(__file__).with_name("api_client.py")
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def lan(tmp_path_factory):
    netns.require_netns()
    mesh = netns.NamespaceLan.create(3)
    root = tmp_path_factory.mktemp("api")
    os.chmod(root, 0o755)
    a, b, c = (Node(mesh[i], root / name, name) for i, name in enumerate("abc"))
    for node in (a, b, c):
        node.home.mkdir()
    try:
        assert a.orc_node("init", "--name", "a").returncode == 0
        created = a.orc_node("api-key", "create", "--name", "tests")
        assert created.returncode == 0, created.stderr
        key = created.stdout.strip()
        a.start("--model", SMOL, "--threads", "1")
        a.wait_ready()
        b.start("--join", a.invite(), "--name", "b", "--model", GEMMA, "--threads", "1")
        b.wait_ready()
        c.start("--join", a.invite(), "--name", "c", "--model", SMOL, "--threads", "1")
        c.wait_ready()
        wait_for(lambda: warm(a, "b", GEMMA), 300, "a to see b's gemma warm")
        wait_for(lambda: warm(a, "c", SMOL), 300, "a to see c's smollm2 warm")
        wait_for(lambda: warm_here(a), 300, "a's own smollm2 warm")
        yield {"a": a, "b": b, "c": c, "key": key}
    finally:
        for node in (a, b, c):
            if node.process is not None and node.process.poll() is None:
                node.process.send_signal(signal.SIGTERM)
        for node in (a, b, c):
            if node.process is not None:
                try:
                    node.process.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    node.process.kill()
        mesh.close()


def warm(viewer: Node, name: str, model: str) -> bool | None:
    for peer in viewer.live_peers().values():
        if peer.get("name") == name:
            return any(m["id"] == model and m["loaded"] and m["decode_tokens_per_s"] for m in peer["models"]) or None
    return None


def warm_here(node: Node) -> bool | None:
    models = node.status().get("models", [])
    return any(m["id"] == SMOL and m.get("loaded") for m in models) or None


def ask(lan, scenario: str, arg: str = "", timeout: float = 600) -> dict:
    a: Node = lan["a"]
    done = a.ns.run([python(), str(CLIENT), scenario, URL, lan["key"], arg], env=a.env, timeout=timeout)
    assert done.returncode == 0, f"{scenario}: {done.stderr[-3000:]}\n{a.log_text()[-3000:]}"
    return json.loads(done.stdout)


def metric(text: str, name: str, **labels: str) -> float:
    total = 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                total += sample.value
    return total


def test_models_lists_the_whole_mesh_and_the_ensembles(lan):
    listed = ask(lan, "models")["models"]
    assert sorted(listed[SMOL]["nodes"]) == ["a", "c"]
    assert listed[GEMMA]["nodes"] == ["b"]
    assert listed["ensemble/triage"] == {"kind": "ensemble"}


def test_curl_lists_models_with_the_key_and_is_refused_without(lan):
    a: Node = lan["a"]
    with_key = a.ns.run(["curl", "-s", "-H", f"Authorization: Bearer {lan['key']}", URL + "/v1/models"], timeout=30)
    assert SMOL in {m["id"] for m in json.loads(with_key.stdout)["data"]}
    without = a.ns.run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", URL + "/v1/models"], timeout=30)
    assert without.stdout == "401"
    health = a.ns.run(["curl", "-s", URL + "/health"], timeout=30)
    assert json.loads(health.stdout) == {"status": "ok"}
    assert a.status()["api"] == URL  # `orc-node status` says where it serves


def test_a_chat_with_real_usage(lan):
    reply = ask(lan, "chat", SMOL)
    assert reply["content"].strip() and reply["finish_reason"] in ("stop", "length")
    assert reply["usage"]["prompt_tokens"] > 5 and 0 < reply["usage"]["completion_tokens"] <= 16
    assert reply["orc"]["nodes"][0] in ("a", "c")


def test_a_model_only_another_node_has_runs_there(lan):
    reply = ask(lan, "chat", GEMMA)
    assert reply["orc"]["nodes"] == ["b"] and reply["content"].strip()
    request_id = reply["id"].removeprefix("chatcmpl-")
    served = [json.loads(line) for line in (lan["b"].home / "executions.jsonl").read_text().splitlines()]
    assert any(r["run_id"] == f"api-{request_id}" and r["outcome"] == "completed" for r in served)


def test_a_stream_with_usage(lan):
    chunks = ask(lan, "stream", GEMMA)["chunks"]
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    assert chunks[0]["orc"]["node"] == "b"
    text = "".join(c["choices"][0]["delta"]["content"] or "" for c in chunks if c["choices"])
    assert text.strip()
    assert [c["choices"][0]["finish_reason"] for c in chunks if c["choices"]][-1] in ("stop", "length")
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] > 0


def test_an_ensemble_is_a_model_and_orc_runs_show_finds_its_run(lan, tmp_path):
    reply = ask(lan, "ensemble", "triage")
    assert reply["run_id"] and reply["orc"]["run_id"] == reply["run_id"]
    assert reply["content"].strip() and reply["usage"]["completion_tokens"] > 0
    shown = lan["a"].orc("runs", "show", reply["run_id"], "--json")
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout)["status"] in ("completed", "completed_with_errors")


def test_wrong_key_unknown_model_and_oversized_body(lan):
    found = ask(lan, "errors", SMOL)
    assert found["wrong_key"] == [401, "invalid_api_key"]
    assert found["unknown_model"] == [404, "model_not_found"]
    assert found["oversized"] == [413, "request_too_large"]
    assert found["too_long"] == [400, "context_length_exceeded"]  # not the mesh's fault: not a 503


def test_many_concurrent_requests_are_served_or_refused_cleanly(lan):
    answers = ask(lan, "concurrent", f"{SMOL},16")["answers"]
    served = [a for a in answers if a[0] == 200]
    assert all(a[2] for a in served)  # every served one has an answer
    assert all(a[0] in (200, 429, 503) for a in answers), answers
    assert len(served) >= 12, answers  # the key's burst is 20: at most the queue refuses some
    assert {a[1] for a in served} <= {"a", "c"}
    assert lan["a"].process.poll() is None


def test_a_client_that_hangs_up_cancels_the_generation_on_the_peer(lan):
    b: Node = lan["b"]
    hung_up = ask(lan, "disconnect", GEMMA)
    assert hung_up["node"] == "b"
    run_id = "api-" + hung_up["id"].removeprefix("chatcmpl-")

    def record() -> dict | None:
        for line in (b.home / "executions.jsonl").read_text().splitlines():
            entry = json.loads(line)
            if entry["run_id"] == run_id:
                return entry
        return None

    ended = wait_for(record, 60, "b to log the hung-up generation")
    assert ended["outcome"] == "cancelled", ended
    # 600 tokens of gemma on one thread take far longer than this: it stopped when the client left.
    assert ended["at"] + ended["seconds"] - hung_up["closed_at"] < 10, ended


def test_metrics_parse_and_follow_the_traffic(lan):
    before = ask(lan, "metrics")
    assert before["status"] == 200 and before["content_type"].startswith("text/plain")
    ask(lan, "chat", GEMMA)
    ask(lan, "ensemble", "triage")
    after = ask(lan, "metrics")["text"]
    text = before["text"]
    ok = {"endpoint": "chat.completions", "model": GEMMA, "code": "200"}
    assert metric(after, "orc_api_requests_total", **ok) == metric(text, "orc_api_requests_total", **ok) + 1
    assert metric(after, "orc_completion_tokens_total", model=GEMMA) > metric(text, "orc_completion_tokens_total",
                                                                              model=GEMMA)
    assert metric(after, "orc_time_to_first_token_seconds_count", model=GEMMA) == \
        metric(text, "orc_time_to_first_token_seconds_count", model=GEMMA) + 1
    assert metric(after, "orc_placements_total", node="b") >= metric(text, "orc_placements_total", node="b") + 1
    assert metric(after, "orc_runs_total", status="completed") + metric(after, "orc_runs_total",
                                                                        status="completed_with_errors") >= 1
    assert metric(after, "orc_peers", state="verified") == 2
    assert metric(after, "orc_api_requests_total", endpoint="chat.completions", code="401") == 0  # keys went in
    assert metric(after, "orc_api_requests_total", endpoint="models", code="401") >= 1  # the wrong key above
