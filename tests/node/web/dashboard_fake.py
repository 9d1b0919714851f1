"""A stand-in for a node's dashboard API, to drive the page in a browser without a mesh.

It serves the page's real files (node/web/static/) under the same headers the node sends, canned
JSON in the contract's shapes (docs/api.md, "Dashboard API"), and an event stream the test writes
to: `FakeNode.emit` reaches every open stream. Runs fold their events the way the node does, so a
page that fetches a run again sees what its events said. Nothing here decides anything for the
page; the real end-to-end check runs the page against daemons.
"""

from __future__ import annotations

import asyncio
import copy
import json
import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response, StreamingResponse
from starlette.routing import Route

import orc.node.web

STATIC = Path(orc.node.web.__file__).parent / "static"
KEY = "orc_fake_dashboard_key"
SESSION = "fake-session"
# The node's headers on the page and its assets: the page must work under exactly this policy.
PAGE_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
                               "connect-src 'self'; frame-ancestors 'none'",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}
PAIR = {"agents": [{"name": "draft", "depends_on": [], "kind": "llm", "model": "smollm2"},
                   {"name": "review", "depends_on": ["draft"], "kind": "llm", "model": "smollm2"},
                   {"name": "count", "depends_on": ["draft"], "kind": "script", "model": None}]}


def node(node_id: str, name: str, state: str, *, me: bool, last_seen: float | None) -> dict[str, Any]:
    return {
        "node_id": node_id, "name": name, "self": me, "state": state,
        "address": None if me else "10.0.0.2:7700", "last_seen": last_seen,
        "hardware": {"arch": "x86_64", "cores": 8, "ram_total_bytes": 16 * 2**30, "ram_available_bytes": 9 * 2**30,
                     "accelerator": None, "system": "Linux"},
        "models": [{"id": "smollm2", "runtime": "llama.cpp", "loaded": me, "size_bytes": 270 * 2**20,
                    "prefill_tokens_per_s": 812.5, "decode_tokens_per_s": 41.2, "capacity": 2, "unavailable": None}],
        "load": {"active_generations": 1, "queued": 0, "cpu_load_1m": 0.42},
        "tags": ["lab"],
    }


def agent(status: str = "pending", **fields: Any) -> dict[str, Any]:
    base = {"status": status, "node_id": None, "node_name": None, "model": None, "attempts": 0, "started_at": None,
            "finished_at": None, "output": None, "error": None, "usage": {"prompt_tokens": 0, "completion_tokens": 0}}
    return base | fields


@dataclass(frozen=True)
class Post:
    """A state-changing request the page sent, with whether it carried the anti-forgery header."""

    path: str
    marked: bool
    body: Any


class FakeNode:
    """Two nodes (`alpha` is this one, `beta` a peer), the `pair` and `broken` ensembles, one old run."""

    def __init__(self, now: float) -> None:
        self.lock = threading.Lock()
        self.sessions = set[str]()
        self.posts: list[Post] = []
        self.stream: list[tuple[str, Any]] = []
        self.generation = 0  # bumped to end every open stream (the page must reconnect)
        self.closing = False
        self.nodes = [node("alpha-id", "alpha", "self", me=True, last_seen=None),
                      node("beta-id", "beta", "verified", me=False, last_seen=now - 2)]
        self.ensembles = [
            {"name": "pair", "valid": True, "problems": [], "description": "A draft, reviewed and counted.", "graph": PAIR},
            {"name": "broken", "valid": False, "problems": ["agent 'c' depends on 'd', which no agent is called"],
             "description": None, "graph": {"agents": [{"name": "c", "depends_on": ["d"], "kind": "llm", "model": None}]}},
        ]
        self.runs: dict[str, dict[str, Any]] = {
            "run-old": {"run_id": "run-old", "ensemble": "pair", "status": "interrupted", "active": False,
                        "input": "old input", "started_at": now - 600, "finished_at": None, "graph": PAIR,
                        "deliverable": None, "events": [],
                        "usage": {"prompt_tokens": 90, "completion_tokens": 30},
                        "budget": {"max_tokens": 200, "max_seconds": 60, "used_tokens": 120, "used_seconds": 20.25,
                                   "exhausted": None},
                        "agents": {"draft": agent("completed", node_id="alpha-id", node_name="alpha", attempts=1,
                                                  started_at=now - 600, finished_at=now - 590, output="an old draft",
                                                  budget={"max_tokens": 100, "max_seconds": None, "used_tokens": 100,
                                                          "used_seconds": 10.0,
                                                          "exhausted": "budget: agent draft spent its 100 tokens"}),
                                   "review": agent("failed", node_id="beta-id", node_name="beta", attempts=2,
                                                   started_at=now - 590, finished_at=now - 580, error="beta went away"),
                                   "count": agent()}},
        }
        self.app = Starlette(routes=[
            Route("/", self.page), Route("/static/{name}", self.asset),
            Route("/dashboard/login", self.login, methods=["POST"]),
            Route("/dashboard/logout", self.logout, methods=["POST"]),
            Route("/api/mesh", self.mesh), Route("/api/ensembles", self.ensembles_json),
            Route("/api/runs", self.runs_json), Route("/api/runs", self.start, methods=["POST"]),
            Route("/api/runs/{run_id}", self.run_json),
            Route("/api/runs/{run_id}/cancel", self.cancel, methods=["POST"]),
            Route("/api/runs/{run_id}/resume", self.resume, methods=["POST"]),
            Route("/api/events", self.events), Route("/api/ray", self.ray_json),
        ])
        self.ray: dict[str, Any] = {"address": None, "models": [], "error": None, "age_s": None}  # none configured

    # ---- what the test does -------------------------------------------------------------------

    def emit(self, kind: str, data: Any) -> None:
        with self.lock:
            self.stream.append((kind, copy.deepcopy(data)))

    def run_event(self, run_id: str, event: dict[str, Any], *, output: str | None = None) -> None:
        """One event of a run: folded into the run as the node would, then sent to the page."""
        event = {"at": time.time()} | event
        with self.lock:
            run = self.runs[run_id]
            run["events"].append(event)
            match event["type"]:
                case "agent_ended":
                    ended = {key: event[key] for key in ("status", "node_id", "model", "attempts", "error", "usage")}
                    names = {each["node_id"]: each["name"] for each in self.nodes}
                    run["agents"][event["agent"]] |= ended | {"node_name": names.get(event["node_id"]), "output": output}
                case "run_finished":
                    run |= {"status": event["status"], "active": False, "finished_at": event["at"],
                            "deliverable": event["deliverable"]}
                case _:
                    pass
        self.emit("run", {"run_id": run_id, "event": event})

    def set_state(self, node_id: str, state: str) -> None:
        with self.lock:
            for each in self.nodes:
                if each["node_id"] == node_id:
                    each["state"] = state
        self.emit("mesh", self.mesh_body())

    def drop_streams(self) -> None:
        with self.lock:
            self.generation += 1

    def revoke(self) -> None:
        """The key behind every session is revoked: sessions stop, open streams end."""
        with self.lock:
            self.sessions.clear()
            self.generation += 1

    # ---- the API ------------------------------------------------------------------------------

    def mesh_body(self) -> dict[str, Any]:
        return {"self": "alpha-id", "nodes": copy.deepcopy(self.nodes)}

    def runs_body(self) -> dict[str, Any]:
        keys = ("run_id", "ensemble", "status", "active", "started_at", "finished_at")
        ordered = sorted(self.runs.values(), key=lambda run: run["started_at"], reverse=True)
        return {"runs": [{key: run[key] for key in keys} for run in ordered]}

    def authorized(self, request: Request) -> bool:
        return request.cookies.get("orc_session") in self.sessions

    @staticmethod
    def refused() -> Response:
        return JSONResponse({"error": {"message": "A key is needed.", "type": "authentication_error"}}, 401)

    def post(self, request: Request, body: Any = None) -> Response | None:
        """Records a POST; answers for it when it is refused."""
        marked = request.headers.get("x-orc-dashboard") == "1"
        self.posts.append(Post(request.url.path, marked, body))
        if not self.authorized(request):
            return self.refused()
        if not marked:
            return JSONResponse({"error": {"message": "missing X-Orc-Dashboard", "type": "forbidden"}}, 403)
        return None

    async def page(self, request: Request) -> Response:
        return FileResponse(STATIC / "index.html", headers=PAGE_HEADERS)

    async def asset(self, request: Request) -> Response:
        name = request.path_params["name"]
        if name not in {"app.js", "style.css", "index.html"}:
            return Response(status_code=404)
        return FileResponse(STATIC / name, headers=PAGE_HEADERS)

    async def login(self, request: Request) -> Response:
        body = await request.json()
        self.posts.append(Post("/dashboard/login", request.headers.get("x-orc-dashboard") == "1", body))
        if body.get("key") != KEY:
            return JSONResponse({"error": {"message": "Incorrect API key.", "type": "invalid_request_error"}}, 401)
        with self.lock:
            self.sessions.add(SESSION)
        response = Response(status_code=204)
        response.set_cookie("orc_session", SESSION, httponly=True, samesite="strict", path="/")
        return response

    async def logout(self, request: Request) -> Response:
        if refusal := self.post(request):
            return refusal
        with self.lock:
            self.sessions.discard(SESSION)
        return Response(status_code=204)

    async def mesh(self, request: Request) -> Response:
        with self.lock:
            return JSONResponse(self.mesh_body()) if self.authorized(request) else self.refused()

    async def ray_json(self, request: Request) -> Response:
        with self.lock:
            return JSONResponse(copy.deepcopy(self.ray)) if self.authorized(request) else self.refused()

    async def ensembles_json(self, request: Request) -> Response:
        return JSONResponse({"ensembles": self.ensembles}) if self.authorized(request) else self.refused()

    async def runs_json(self, request: Request) -> Response:
        with self.lock:
            return JSONResponse(self.runs_body()) if self.authorized(request) else self.refused()

    async def run_json(self, request: Request) -> Response:
        if not self.authorized(request):
            return self.refused()
        with self.lock:
            run = self.runs.get(request.path_params["run_id"])
            return JSONResponse(run) if run else JSONResponse({"error": {"message": "unknown run"}}, 404)

    async def start(self, request: Request) -> Response:
        body = await request.json()
        if refusal := self.post(request, body):
            return refusal
        run_id = f"run-{len(self.runs)}"
        with self.lock:
            self.runs[run_id] = {"run_id": run_id, "ensemble": body["ensemble"], "status": "running", "active": True,
                                 "input": body["input"], "started_at": time.time(), "finished_at": None,
                                 "graph": PAIR, "deliverable": None, "events": [],
                                 "agents": {name: agent() for name in ("draft", "review", "count")}}
            runs = self.runs_body()
        self.emit("runs", runs)
        return JSONResponse({"run_id": run_id}, 201)

    async def cancel(self, request: Request) -> Response:
        if refusal := self.post(request):
            return refusal
        run_id = request.path_params["run_id"]
        self.run_event(run_id, {"type": "run_finished", "status": "failed", "deliverable": None})
        self.emit("runs", self.runs_body())
        return JSONResponse({"run_id": run_id, "cancelled": True})

    async def resume(self, request: Request) -> Response:
        if refusal := self.post(request):
            return refusal
        with self.lock:
            self.runs[request.path_params["run_id"]] |= {"status": "running", "active": True}
        return JSONResponse({"run_id": request.path_params["run_id"]}, 201)

    async def events(self, request: Request) -> Response:
        if not self.authorized(request):
            return self.refused()
        with self.lock:
            start, generation = len(self.stream), self.generation
            first = [("mesh", self.mesh_body()), ("runs", self.runs_body())]

        async def lines():
            for kind, data in first:
                yield f"event: {kind}\ndata: {json.dumps(data)}\n\n"
            index = start
            while not self.closing:
                with self.lock:
                    if self.generation != generation:
                        return
                    fresh = self.stream[index:]
                index += len(fresh)
                for kind, data in fresh:
                    yield f"event: {kind}\ndata: {json.dumps(data)}\n\n"
                await asyncio.sleep(0.05)

        return StreamingResponse(lines(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})


class Served:
    """The fake on a free loopback port, in a thread of its own, until `stop`."""

    def __init__(self, fake: FakeNode) -> None:
        self.fake = fake
        listener = socket.socket()
        listener.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{listener.getsockname()[1]}"
        config = uvicorn.Config(fake.app, log_level="warning", lifespan="off", timeout_graceful_shutdown=2)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [listener]}, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("the fake dashboard server did not start")
            time.sleep(0.02)

    def stop(self) -> None:
        self.fake.closing = True
        self.server.should_exit = True
        self.thread.join(timeout=10)
