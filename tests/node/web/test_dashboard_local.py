"""The dashboard's backend end to end on this machine: the real app in uvicorn over the embedded
model in its runner, spoken to with httpx as the page speaks to it (a session cookie, the
X-Orc-Dashboard header, the event stream)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

import httpx
import pytest
from orc.node.config import ApiConfig
from orc.node.coordinator.placing import LocalPlacer
from orc.node.home import Home
from orc.node.links.static import Endpoint
from orc.node.metrics import NodeMetrics
from orc.node.models.catalog import Catalog
from orc.node.models.hardware import probe
from orc.node.models.runtimes.extra_buffers import LlamaCppConfig
from orc.node.models.runtimes.factory import build_runtimes
from orc.node.protocol.description import PROTOCOL_VERSION, Load, ModelOffer, NodeDescription
from orc.node.protocol.ids import MeshId, NodeId
from orc.node.protocol.messages import PeerView
from orc.node.web.app import build_app
from orc.node.web.dashboard import PAGE_HEADERS
from orc.node.web.gateway import Gateway
from orc.node.web.guard import Guard
from orc.node.web.keys import ApiKeys
from orc.node.web.mesh_view import MeshSnapshot
from orc.node.web.runs import RunHub
from orc.node.web.server import WebServer

pytestmark = pytest.mark.slow

SMOL = "smollm2-135m-instruct"
QUICK = f"""name: quick
description: One short answer.
agents:
  - name: answer
    model: {SMOL}
    temperature: 0
    max_tokens: 6
"""
BUDGETED = f"""name: budgeted
budget: {{max_tokens: 4000, max_seconds: 300}}
agents:
  - name: answer
    model: {SMOL}
    temperature: 0
    max_tokens: 6
    budget: {{max_tokens: 2000}}
"""
# Waits until the file its input names exists: a run that lasts exactly as long as a test wants.
GATED = f"""name: gated
agents:
  - name: wait
    script: gate.py
    timeout_seconds: 120
  - name: say
    depends_on: [wait]
    model: {SMOL}
    temperature: 0
    max_tokens: 4
"""
GATE_SCRIPT = """import json, os, sys, time
path = json.load(sys.stdin)["input_data"]
while not os.path.exists(path):
    time.sleep(0.05)
print(json.dumps({"opened": True}))
"""
BROKEN = """name: broken
agents:
  - name: a
    depends_on: [nobody]
    model: x
"""


def own_description() -> NodeDescription:
    return NodeDescription(PROTOCOL_VERSION, NodeId("local"), "laptop", MeshId("mesh"), ("192.0.2.1:7733",),
                           probe(), (ModelOffer(SMOL, "llama_cpp", "0" * 64, 1000, True, 50.0, 20.0, 2),),
                           Load(1, 0, 0.5), 0, 1, 1.0, ("fast",))


def peers() -> tuple[PeerView, ...]:
    pi = replace(own_description(), node_id=NodeId("node-pi"), name="pi", models=(), tags=())
    return (PeerView(pi, "degraded", "192.0.2.9:7733", 123.0, True, 2),
            PeerView(None, "discovered", "192.0.2.7:7733", None, False, 0))


@dataclass
class Served:
    url: str  # keys required
    loopback: str  # keyless loopback allowed; one stream and one page run at once
    key: str
    home: Home
    gates: Path
    hubs: tuple[RunHub, RunHub] = field(default=())  # type: ignore[assignment]


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    root = tmp_path_factory.mktemp("dashboard")
    home = Home(root / "config", root / "data", root / "state")
    home.prepare()
    home.ensembles_dir.mkdir(parents=True, exist_ok=True)
    for name, text in (("quick", QUICK), ("gated", GATED), ("broken", BROKEN), ("budgeted", BUDGETED)):
        (home.ensembles_dir / f"{name}.yaml").write_text(text)
    (home.ensembles_dir / "gate.py").write_text(GATE_SCRIPT)
    keys = ApiKeys(home.api_keys_file)
    _, secret = keys.create("tests")
    ready: dict[str, object] = {}
    stop = threading.Event()

    async def serve() -> None:
        runtimes = build_runtimes(LlamaCppConfig(), home.config_file, n_threads=2, slots=2)
        placer = LocalPlacer(Catalog(home.models_dir), runtimes)
        metrics = NodeMetrics(running=lambda: None)
        gateway = Gateway(home=home, placer=placer, node_id="local", queue_timeout_s=60)
        # A high rate: the tests poll runs as a page would not.
        plain = ApiConfig(listen=Endpoint("127.0.0.1", 0), requests_per_minute=6000)
        loopback = replace(plain, allow_keyless_loopback=True)
        hubs = (RunHub(time.time, observe=metrics.watched_run),
                RunHub(time.time, observe=metrics.watched_run, max_subscribers=1, max_owned=1))
        mesh = lambda: MeshSnapshot(own_description(), peers())  # noqa: E731
        # The keyed server's config names a Ray cluster at a port where nothing listens.
        servers = [WebServer(build_app(gateway=gateway, guard=Guard(config, keys, time.monotonic), metrics=metrics,
                                       config=config, runs=hub, mesh=mesh, ray_address=ray), config)
                   for config, hub, ray in zip((plain, loopback), hubs, (f"ray://127.0.0.1:{closed_port()}", None))]
        for server in servers:
            await server.start()
        ready.update(urls=[s.address for s in servers], hubs=hubs)
        try:
            while not stop.is_set():
                await asyncio.sleep(0.05)
        finally:
            for hub in hubs:
                await hub.close()
            for server in servers:
                await server.stop()
            await asyncio.gather(*(runtime.close() for runtime in runtimes.values()))

    thread = threading.Thread(target=lambda: asyncio.run(serve()), daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while "urls" not in ready:
        assert thread.is_alive() and time.monotonic() < deadline, "the API did not start"
        time.sleep(0.05)
    urls = ready["urls"]
    gates = root / "gates"
    gates.mkdir()
    yield Served(urls[0], urls[1], secret, home, gates, ready["hubs"])  # type: ignore[arg-type,index]
    stop.set()
    thread.join(30)


def bearer(served: Served) -> dict[str, str]:
    return {"Authorization": f"Bearer {served.key}"}


@contextlib.contextmanager
def logged_in(served: Served) -> Iterator[httpx.Client]:
    """A client holding a session cookie, as the page after its login form."""
    with httpx.Client(base_url=served.url, timeout=60) as http:
        answer = http.post("/dashboard/login", json={"key": served.key})
        assert answer.status_code == 204
        yield http


PAGE = {"X-Orc-Dashboard": "1"}


def wait_for(check: Callable[[], object], seconds: float = 120) -> object:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(0.1)
    raise AssertionError("timed out waiting")


def run_of(served: Served, run_id: str) -> dict:
    answer = httpx.get(f"{served.url}/api/runs/{run_id}", headers=bearer(served))
    assert answer.status_code == 200
    return answer.json()


class EventReader:
    """An /api/events stream read in a thread: (kind, data) pairs and comments as they come."""

    def __init__(self, url: str, **request: object) -> None:
        self.events: list[tuple[str, object]] = []
        self.status: int | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._read, args=(url, request), daemon=True)
        self._thread.start()
        wait_for(lambda: self.status is not None, 30)

    def _read(self, url: str, request: dict) -> None:
        with httpx.Client(timeout=None) as http, http.stream("GET", url, **request) as answer:
            self.status = answer.status_code
            self.content_type = answer.headers.get("content-type", "")
            kind = None
            for line in answer.iter_lines():
                if self._stop.is_set():
                    return
                if line.startswith("event: "):
                    kind = line[len("event: "):]
                elif line.startswith("data: "):
                    self.events.append((kind or "message", json.loads(line[len("data: "):])))
            self.events.append(("closed", None))

    def run_events(self, run_id: str) -> list[dict]:
        return [data["event"] for kind, data in self.events if kind == "run" and data["run_id"] == run_id]  # type: ignore[index]

    def close(self) -> None:
        self._stop.set()


# ---- the page and its files ----

def test_the_page_and_its_files_need_no_key_and_carry_the_security_headers(served: Served) -> None:
    page = httpx.get(served.url + "/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert 'id="login"' in page.text
    for name, value in PAGE_HEADERS.items():
        assert page.headers[name] == value
    assert page.headers["content-security-policy"].startswith("default-src 'self'")
    asset = httpx.get(served.url + "/static/index.html")
    assert asset.status_code == 200 and asset.headers["x-frame-options"] == "DENY"
    assert asset.headers["cache-control"] == "no-cache"


def raw_get(url: str, path: str) -> int:
    """The status of `GET path` sent byte for byte (clients tidy `..` away before sending)."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as conn:
        conn.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
        head = conn.recv(64).decode()
    return int(head.split()[1])


def test_only_the_page_files_are_served(served: Served) -> None:
    for path in ("/static/../app.py", "/static/..%2Fapp.py", "/static/%2e%2e/gateway.py", "/static/../../pyproject.toml",
                 "/static//etc/passwd", "/static/app.py", "/static/.hidden.js", "/static/nothing.js",
                 "/static/sub/index.html"):
        assert raw_get(served.url, path) == 404, path


# ---- keys, sessions and the header ----

def test_without_a_key_or_session_the_api_answers_401(served: Served) -> None:
    for path in ("/api/mesh", "/api/runs", "/api/runs/abc", "/api/ensembles", "/api/events", "/api/ray"):
        answer = httpx.get(served.url + path)
        assert answer.status_code == 401 and answer.json()["error"]["code"] == "invalid_api_key", path
        junk_cookie = httpx.get(served.url + path, cookies={"orc_session": "forged"})
        assert junk_cookie.status_code == 401, path
    assert httpx.post(served.url + "/api/runs", json={"ensemble": "quick", "input": "x"}).status_code == 401


def test_a_login_gives_a_session_cookie_and_a_logout_ends_it(served: Served) -> None:
    wrong = httpx.post(served.url + "/dashboard/login", json={"key": "orc_not-a-key"})
    assert wrong.status_code == 401 and wrong.json()["error"]["type"] == "authentication_error"
    assert httpx.post(served.url + "/dashboard/login", content=b"not json").status_code == 400
    with httpx.Client(base_url=served.url, timeout=30) as http:
        answer = http.post("/dashboard/login", json={"key": served.key})
        assert answer.status_code == 204
        cookie = answer.headers["set-cookie"]
        assert cookie.startswith("orc_session=")
        for attribute in ("HttpOnly", "SameSite=strict", "Path=/", "Max-Age=43200"):
            assert attribute.lower() in cookie.lower()
        assert "secure" not in cookie.lower()  # no TLS here
        assert http.get("/api/mesh").status_code == 200
        assert http.post("/dashboard/logout", headers=PAGE).status_code == 204
        assert http.get("/api/mesh").status_code == 401
        token = cookie.split(";")[0].split("=", 1)[1]
        assert httpx.get(served.url + "/api/mesh", cookies={"orc_session": token}).status_code == 401


def test_a_revoked_key_ends_its_sessions_at_once(served: Served) -> None:
    keys = ApiKeys(served.home.api_keys_file)
    _, other = keys.create("to-revoke")
    with httpx.Client(base_url=served.url, timeout=30) as http:
        assert http.post("/dashboard/login", json={"key": other}).status_code == 204
        assert http.get("/api/runs").status_code == 200
        keys.revoke("to-revoke")
        assert http.get("/api/runs").status_code == 401


def test_a_change_through_the_cookie_needs_the_dashboard_header(served: Served) -> None:
    with logged_in(served) as http:
        refused = http.post("/api/runs", json={"ensemble": "quick", "input": "hi"})
        assert refused.status_code == 403 and refused.json()["error"]["code"] == "missing_dashboard_header"
        assert http.post("/api/runs/abc/cancel").status_code == 403
        assert http.post("/api/runs/abc/resume").status_code == 403
        assert http.post("/api/runs/abc/cancel", headers=PAGE).status_code == 404
    # A bearer key is no browser's: it needs no header.
    answer = httpx.post(served.url + "/api/runs", headers=bearer(served), json={"ensemble": "nope", "input": "x"})
    assert answer.status_code == 404 and answer.json()["error"]["code"] == "ensemble_not_found"
    # Keyless loopback is what a page of another site would reach: the header is needed too.
    assert httpx.get(served.loopback + "/api/mesh").status_code == 200
    keyless = httpx.post(served.loopback + "/api/runs", json={"ensemble": "quick", "input": "x"})
    assert keyless.status_code == 403


# ---- what there is ----

def test_the_ray_cluster_of_the_config_is_listed_or_said_unreachable(served: Served) -> None:
    # The real `orc models --on` child process, refused at once: nothing listens there.
    ray = httpx.get(served.url + "/api/ray", headers=bearer(served), timeout=90).json()
    assert ray["address"].startswith("ray://127.0.0.1:") and ray["models"] == []
    assert "no Ray cluster answers at" in ray["error"] and "Traceback" not in ray["error"]
    # A node whose config names no cluster lists none, and starts nothing to say so.
    assert httpx.get(served.loopback + "/api/ray").json() == {"address": None, "models": [], "error": None, "age_s": None}


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]  # closed when the probe is: a connection there is refused


def test_the_mesh_is_this_node_then_its_peers_by_name(served: Served) -> None:
    mesh = httpx.get(served.url + "/api/mesh", headers=bearer(served)).json()
    assert mesh["self"] == "local"
    own, *others = mesh["nodes"]
    assert own["self"] is True and own["state"] == "self" and own["name"] == "laptop"
    assert own["address"] == "192.0.2.1:7733" and own["tags"] == ["fast"]
    assert own["models"] == [{"id": SMOL, "runtime": "llama_cpp", "loaded": True, "size_bytes": 1000,
                              "prefill_tokens_per_s": 50.0, "decode_tokens_per_s": 20.0, "capacity": 2,
                              "unavailable": ""}]
    assert set(own["hardware"]) == {"arch", "cores", "ram_total_bytes", "ram_available_bytes", "accelerator", "system"}
    assert own["load"] == {"active_generations": 1, "queued": 0, "cpu_load_1m": 0.5}
    assert [n["name"] for n in others] == ["192.0.2.7:7733", "pi"]
    unknown, pi = others
    assert unknown["node_id"] is None and unknown["state"] == "discovered" and unknown["hardware"] is None
    assert pi["state"] == "degraded" and pi["last_seen"] == 123.0 and pi["self"] is False


def test_ensembles_are_listed_with_their_graphs_and_problems(served: Served) -> None:
    listed = {e["name"]: e for e in httpx.get(served.url + "/api/ensembles", headers=bearer(served)).json()["ensembles"]}
    assert listed["gated"]["valid"] is True and listed["gated"]["graph"] == {"agents": [
        {"name": "wait", "depends_on": [], "kind": "script", "model": None},
        {"name": "say", "depends_on": ["wait"], "kind": "llm", "model": SMOL}]}
    assert listed["quick"]["description"] == "One short answer."
    assert listed["broken"]["valid"] is False and listed["broken"]["graph"] is None
    assert any("nobody" in problem for problem in listed["broken"]["problems"])
    assert "perspectives" in listed  # the shipped examples too


def test_an_unknown_run_is_404(served: Served) -> None:
    for path in ("/api/runs/0123456789abcdef", "/api/runs/..%2F..%2Fsecrets"):
        answer = httpx.get(served.url + path, headers=bearer(served))
        assert answer.status_code == 404, path
    assert httpx.post(served.url + "/api/runs/0123456789abcdef/resume", headers=bearer(served)).status_code == 404


# ---- runs ----

def test_a_run_started_from_the_page_streams_its_events_and_completes(served: Served) -> None:
    with logged_in(served) as http:
        stream = EventReader(served.url + "/api/events", cookies=http.cookies)
        try:
            assert stream.status == 200 and stream.content_type.startswith("text/event-stream")
            wait_for(lambda: len(stream.events) >= 2, 30)
            assert [kind for kind, _ in stream.events[:2]] == ["mesh", "runs"]
            started = http.post("/api/runs", headers=PAGE, json={"ensemble": "quick", "input": "Name a colour."})
            assert started.status_code == 201
            run_id = started.json()["run_id"]
            wait_for(lambda: any(e["type"] == "run_finished" for e in stream.run_events(run_id)))
            events = stream.run_events(run_id)
            kinds = [e["type"] for e in events]
            assert kinds[0] == "run_began" and kinds[-1] == "run_finished"
            assert {"agent_began", "agent_working", "token", "agent_ended"} <= set(kinds)  # no mesh: no placement
            assert all(isinstance(e["at"], float) and e["at"] > 1e9 for e in events)
            assert events[-1]["status"] == "completed" and events[-1]["deliverable"]
            ended = next(e for e in events if e["type"] == "agent_ended")
            assert ended["agent"] == "answer" and ended["status"] == "completed" and ended["usage"]["completion_tokens"] > 0
            wait_for(lambda: any(kind == "runs" and any(r["run_id"] == run_id and r["status"] == "completed"
                                                        for r in data["runs"])  # type: ignore[index]
                                 for kind, data in stream.events), 30)
        finally:
            stream.close()
        run = http.get(f"/api/runs/{run_id}").json()
    assert run["status"] == "completed" and run["active"] is False and run["ensemble"] == "quick"
    assert run["input"] == "Name a colour." and run["deliverable"] and run["finished_at"] >= run["started_at"]
    assert run["graph"]["agents"][0]["name"] == "answer"
    answer = run["agents"]["answer"]
    assert answer["status"] == "completed" and answer["output"] and answer["node_id"] == "local"
    assert answer["node_name"] == "laptop"  # the name the mesh knows the node by
    assert answer["attempts"] == 1 and answer["tokens"]
    assert [e["type"] for e in run["events"]] == kinds
    listed = httpx.get(served.url + "/api/runs", headers=bearer(served)).json()["runs"]
    assert listed[0]["run_id"] == run_id and listed[0]["status"] == "completed" and listed[0]["active"] is False


def test_a_run_says_what_it_spent_and_of_which_budget(served: Served) -> None:
    with logged_in(served) as http:
        ids = []
        for ensemble in ("budgeted", "quick"):
            started = http.post("/api/runs", headers=PAGE, json={"ensemble": ensemble, "input": "Name a colour."})
            assert started.status_code == 201
            ids.append(started.json()["run_id"])
        runs = [wait_for(lambda run_id=run_id: (lambda r: r if r["status"] == "completed" and not r["active"] else None)(
            run_of(served, run_id))) for run_id in ids]
    budgeted, quick = runs
    answer = budgeted["agents"]["answer"]
    spent = answer["usage"]["prompt_tokens"] + answer["usage"]["completion_tokens"]
    assert budgeted["usage"] == answer["usage"] and spent > 0
    assert budgeted["budget"]["max_tokens"] == 4000 and budgeted["budget"]["max_seconds"] == 300
    assert budgeted["budget"]["used_tokens"] == spent and budgeted["budget"]["exhausted"] is None
    assert 0 < budgeted["budget"]["used_seconds"] < 300
    assert answer["budget"] == {"max_tokens": 2000, "max_seconds": None, "used_tokens": spent,
                                "used_seconds": answer["budget"]["used_seconds"], "exhausted": None}
    assert quick["budget"] is None and "budget" not in quick["agents"]["answer"] and quick["usage"]["completion_tokens"] > 0


def test_a_cancelled_run_is_interrupted_and_a_resume_finishes_it(served: Served) -> None:
    gate = served.gates / "cancel-resume"
    started = httpx.post(served.url + "/api/runs", headers=bearer(served), json={"ensemble": "gated", "input": str(gate)})
    assert started.status_code == 201
    run_id = started.json()["run_id"]
    running = wait_for(lambda: (r := run_of(served, run_id))["agents"]["wait"]["status"] == "running" and r)
    assert running["status"] == "running" and running["active"] is True  # type: ignore[index]
    listed = httpx.get(served.url + "/api/runs", headers=bearer(served)).json()["runs"]
    assert any(r["run_id"] == run_id and r["active"] for r in listed)
    assert httpx.post(f"{served.url}/api/runs/{run_id}/resume", headers=bearer(served)).status_code == 409

    cancelled = httpx.post(f"{served.url}/api/runs/{run_id}/cancel", headers=bearer(served))
    assert cancelled.status_code == 200 and cancelled.json() == {"run_id": run_id, "cancelled": True}
    stopped = wait_for(lambda: (r := run_of(served, run_id))["status"] == "interrupted" and r)
    assert stopped["active"] is False and stopped["agents"]["wait"]["status"] == "pending"  # type: ignore[index]
    again = httpx.post(f"{served.url}/api/runs/{run_id}/cancel", headers=bearer(served))
    assert again.status_code == 409 and again.json()["error"]["code"] == "run_not_active"

    gate.write_text("open")
    resumed = httpx.post(f"{served.url}/api/runs/{run_id}/resume", headers=bearer(served))
    assert resumed.status_code == 201 and resumed.json() == {"run_id": run_id}
    done = wait_for(lambda: (r := run_of(served, run_id))["status"] == "completed" and r)
    assert done["agents"]["wait"]["output"] and done["agents"]["say"]["status"] == "completed"  # type: ignore[index]
    assert done["events"][0]["type"] == "run_began" and done["events"][0]["resumed"] is True  # type: ignore[index]
    finished = httpx.post(f"{served.url}/api/runs/{run_id}/resume", headers=bearer(served))
    assert finished.status_code == 409 and finished.json()["error"]["code"] == "run_completed"


def test_an_api_ensemble_run_passes_through_the_hub(served: Served) -> None:
    answer = httpx.post(served.url + "/v1/chat/completions", headers=bearer(served), timeout=120,
                        json={"model": "ensemble/quick", "messages": [{"role": "user", "content": "Hi"}]})
    assert answer.status_code == 200
    run = run_of(served, answer.headers["x-orc-run-id"])
    assert run["status"] == "completed" and [e["type"] for e in run["events"]][0] == "run_began"


def test_streams_and_page_runs_have_caps(served: Served) -> None:
    first = EventReader(served.loopback + "/api/events")  # keyless loopback: the second listener
    try:
        assert first.status == 200
        second = httpx.get(served.loopback + "/api/events")
        assert second.status_code == 503 and second.json()["error"]["code"] == "overloaded"
    finally:
        first.close()
    gate = served.gates / "caps"
    start = {"ensemble": "gated", "input": str(gate)}
    one = httpx.post(served.loopback + "/api/runs", headers=PAGE, json=start)
    assert one.status_code == 201
    two = httpx.post(served.loopback + "/api/runs", headers=PAGE, json=start)
    assert two.status_code == 429 and two.json()["error"]["code"] == "too_many_runs"
    gate.write_text("open")
    hub = served.hubs[1]
    wait_for(lambda: not hub.active(one.json()["run_id"]))
    assert httpx.post(served.loopback + "/api/runs", headers=PAGE,
                      json={"ensemble": "quick", "input": "x"}).status_code == 201


def test_a_run_started_with_bad_input_is_refused_before_it_runs(served: Served) -> None:
    for body, status, param in (({"ensemble": "quick"}, 400, "input"), ({"input": "x"}, 400, "ensemble"),
                                ({"ensemble": "broken", "input": "x"}, 400, None),
                                ({"ensemble": "../quick", "input": "x"}, 404, None)):
        answer = httpx.post(served.url + "/api/runs", headers=bearer(served), json=body)
        assert answer.status_code == status, body
        assert answer.json()["error"]["param"] == param
