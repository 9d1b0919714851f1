"""The dashboard's routes: its page and assets, the browser login, the JSON API and the live
event stream (docs/api.md, "Dashboard API").

    GET  /                          the page (no key: it holds no data)
    GET  /static/NAME               its assets, files of node/web/static/ only
    POST /dashboard/login           {"key": "orc_..."} -> a session cookie
    POST /dashboard/logout          ends the cookie's session
    GET  /api/mesh | /api/runs | /api/runs/ID | /api/ensembles
    GET  /api/ray                   the models of the Ray cluster in the config (`ray: {address}`)
    POST /api/runs                  {"ensemble", "input"}: a run the daemon owns
    POST /api/runs/ID/cancel | /api/runs/ID/resume
    GET  /api/events                text/event-stream: mesh, runs, every event of every run

/api/* takes a bearer key as /v1/* does, or the session cookie; a POST that does not carry a
bearer key (a cookie, or keyless loopback) must also carry `X-Orc-Dashboard: 1`, a header a
page of another site cannot make a browser send, so it cannot act through the user's session.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

from orc.node.config import ApiConfig
from orc.node.coordinator.journal_lock import journal_in_use
from orc.node.protocol.events import RunProgress
from orc.node.web.gateway import RUN_ID, EnsembleUnusable, Gateway, UnknownModel
from orc.node.web.guard import Guard, Refusal
from orc.node.web.mesh_view import MeshSnapshot, mesh_json
from orc.node.web.ray_view import RayView
from orc.node.web.openai_wire import BadRequest, parse_body
from orc.node.web.responses import BodyTooLarge, BodyTooSlow, ClientGone, read_body, refusal_response
from orc.node.web.run_record import Json
from orc.node.web.run_views import JournalIndex, ensembles_json, read_run, run_json, runs_json, spec_of
from orc.node.web.runs import RunHub, Subscription, TooManyRuns, TooManySubscribers
from orc.node.web.sessions import COOKIE, SESSION_LIFETIME_S, Sessions
from orc.scheduler.errors import RunNotFound
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

STATIC = Path(__file__).resolve().parent / "static"
# An asset's name as a request may give it: one file directly in STATIC, never a path.
ASSET_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,99}")
CONTENT_TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
                 ".css": "text/css; charset=utf-8", ".svg": "image/svg+xml", ".png": "image/png",
                 ".ico": "image/x-icon", ".json": "application/json", ".woff2": "font/woff2"}
# The page and its assets: nothing but this node's own files may run in it, nothing may frame it.
PAGE_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
                               "connect-src 'self'; frame-ancestors 'none'",
    "X-Frame-Options": "DENY", "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}
API_HEADERS = {"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"}
MAX_LOGIN_BYTES = 4096  # {"key": "orc_..."} is under 100 bytes
MESH_CHECK_S = 1.0  # how often a stream looks whether the mesh changed
KEEP_ALIVE_S = 15.0  # a comment line this often keeps proxies from closing an idle stream; the key is re-checked then
MESH_FRESH_S = 0.5  # the mesh is described at most this often for all streams together (it probes the hardware)

MeshSource = Callable[[], MeshSnapshot]


class Dashboard:
    """The dashboard over the node's gateway and run hub."""

    def __init__(self, *, gateway: Gateway, guard: Guard, runs: RunHub, sessions: Sessions, mesh: MeshSource,
                 config: ApiConfig, static: Path = STATIC, clock: Callable[[], float] = time.monotonic,
                 ray: RayView | None = None) -> None:
        """`mesh()`: this node and its peers now; `static`: the page's files; `clock`: seconds,
        for the mesh cache; `ray`: the Ray cluster of the node's config (None: none)."""
        self._gateway = gateway
        self._guard = guard
        self._runs = runs
        self._sessions = sessions
        self._mesh_source = mesh
        self._ray = ray if ray is not None else RayView(None)
        self._config = config
        self._static = static
        self._clock = clock
        self._journals = JournalIndex(gateway.home.runs_dir)
        self._mesh: tuple[float, MeshSnapshot] | None = None
        self._resuming: set[str] = set()  # run ids between a resume's checks and its start

    def routes(self) -> list[Route]:
        return [
            Route("/", self.page, methods=["GET"]),
            Route("/static/{name:path}", self.asset, methods=["GET"]),
            Route("/dashboard/login", self.login, methods=["POST"]),
            Route("/dashboard/logout", self.logout, methods=["POST"]),
            Route("/api/mesh", self.mesh, methods=["GET"]),
            Route("/api/runs", self.runs, methods=["GET"]),
            Route("/api/runs", self.start, methods=["POST"]),
            Route("/api/runs/{run_id}", self.run, methods=["GET"]),
            Route("/api/runs/{run_id}/cancel", self.cancel, methods=["POST"]),
            Route("/api/runs/{run_id}/resume", self.resume, methods=["POST"]),
            Route("/api/ensembles", self.ensembles, methods=["GET"]),
            Route("/api/ray", self.ray, methods=["GET"]),
            Route("/api/events", self.events, methods=["GET"]),
        ]

    # ---- the page ----

    async def page(self, request: Request) -> Response:
        return await self._file("index.html")

    async def asset(self, request: Request) -> Response:
        return await self._file(request.path_params["name"])

    async def _file(self, name: str) -> Response:
        path = self._static / name
        content_type = CONTENT_TYPES.get(path.suffix)
        if not ASSET_NAME.fullmatch(name) or content_type is None:
            return _refused(Refusal(404, f"no such file: {name[:100]}", "invalid_request_error", "not_found"))
        try:
            body = await asyncio.to_thread(_read_file, path)
        except OSError:
            return _refused(Refusal(404, f"no such file: {name}", "invalid_request_error", "not_found"))
        return Response(body, media_type=content_type, headers=PAGE_HEADERS)

    # ---- sessions ----

    async def login(self, request: Request) -> Response:
        try:
            body = parse_body(await read_body(request, MAX_LOGIN_BYTES))
        except (BadRequest, BodyTooLarge, BodyTooSlow, ClientGone) as error:
            return _refused(_body_refusal(error))
        key = body.get("key")
        if not isinstance(key, str) or not key:
            return _refused(Refusal(400, 'give the key as {"key": "orc_..."}', "invalid_request_error",
                                    "invalid_request"))
        caller = self._guard.admit(f"Bearer {key}", _client(request))
        if isinstance(caller, Refusal):
            return _refused(caller)
        response = Response(status_code=204, headers=API_HEADERS)
        response.set_cookie(COOKIE, self._sessions.open(key), max_age=int(SESSION_LIFETIME_S), path="/",
                            httponly=True, samesite="strict", secure=self._config.tls_certificate is not None)
        return response

    async def logout(self, request: Request) -> Response:
        self._sessions.close(request.cookies.get(COOKIE))
        response = Response(status_code=204, headers=API_HEADERS)
        response.delete_cookie(COOKIE, path="/", httponly=True, samesite="strict",
                               secure=self._config.tls_certificate is not None)
        return response

    def _admit(self, request: Request, *, changes: bool = False) -> Callable[[], bool] | Response:
        """Whether the request may go on: as a function telling later whether it still may (a
        stream asks it again), or the refusal."""
        authorization = request.headers.get("authorization")
        token = request.cookies.get(COOKIE) if authorization is None else None
        key = self._sessions.key(token) if token is not None else None
        effective = f"Bearer {key}" if key is not None else authorization
        caller = self._guard.admit(effective, _client(request), reads=not changes)
        if isinstance(caller, Refusal):
            return _refused(caller)
        if changes and authorization is None and request.headers.get("x-orc-dashboard") != "1":
            return _refused(Refusal(403, "a dashboard request that changes something must carry the header "
                                         "'X-Orc-Dashboard: 1' (or a bearer key)", "permission_error",
                                    "missing_dashboard_header"))
        if key is not None:
            return lambda: self._sessions.key(token) is not None and self._guard.still_valid(effective)
        return lambda: self._guard.still_valid(effective)

    # ---- what there is ----

    async def mesh(self, request: Request) -> Response:
        refused = self._admit(request)
        if isinstance(refused, Response):
            return refused
        return _json(mesh_json(self._mesh_now()))

    async def ray(self, request: Request) -> Response:
        refused = self._admit(request)
        if isinstance(refused, Response):
            return refused
        return _json(await self._ray.snapshot())

    async def runs(self, request: Request) -> Response:
        refused = self._admit(request)
        if isinstance(refused, Response):
            return refused
        return _json(await self._runs_listing())

    async def run(self, request: Request) -> Response:
        refused = self._admit(request)
        if isinstance(refused, Response):
            return refused
        run_id = request.path_params["run_id"]
        found = await self._run_json(run_id)
        return _json(found) if found is not None else _refused(_unknown_run(run_id))

    async def ensembles(self, request: Request) -> Response:
        refused = self._admit(request)
        if isinstance(refused, Response):
            return refused
        gateway = self._gateway
        listing = await asyncio.to_thread(lambda: ensembles_json(gateway.ensemble_files(), gateway.library))
        return _json(listing)

    async def _runs_listing(self) -> Json:
        journals = await asyncio.to_thread(self._journals.newest)
        return runs_json(journals, self._runs.runs())

    async def _run_json(self, run_id: str) -> Json | None:
        """RUN for `run_id`, or None if neither the hub nor a journal knows it."""
        if not RUN_ID.fullmatch(run_id):
            return None
        path = self._gateway.home.journal_path(run_id)
        library = self._gateway.library

        def read():  # -> (contents, in use, spec)
            contents = read_run(path)
            spec = spec_of(contents, library) if contents is not None else None
            return contents, contents is not None and journal_in_use(path), spec

        contents, in_use, spec = await asyncio.to_thread(read)
        live = self._runs.run(run_id)
        if contents is None and live is None:
            return None
        return run_json(contents, in_use, spec, live, self._mesh_now().node_name)

    def _mesh_now(self) -> MeshSnapshot:
        now = self._clock()
        if self._mesh is None or now - self._mesh[0] >= MESH_FRESH_S:
            self._mesh = (now, self._mesh_source())
        return self._mesh[1]

    # ---- doing ----

    async def start(self, request: Request) -> Response:
        refused = self._admit(request, changes=True)
        if isinstance(refused, Response):
            return refused
        try:
            body = parse_body(await read_body(request, self._config.max_body_bytes))
            ensemble, run_input = body.get("ensemble"), body.get("input")
            if not isinstance(ensemble, str) or not ensemble:
                raise BadRequest("ensemble must name an ensemble of this node (GET /api/ensembles)", "ensemble")
            if not isinstance(run_input, str):
                raise BadRequest("input must be a string", "input")

            async def begin() -> AsyncIterator[RunProgress]:
                _, events = await self._gateway.run(ensemble, run_input, None)
                return events

            run_id = await self._runs.launch(begin)
        except (BadRequest, BodyTooLarge, BodyTooSlow, ClientGone, UnknownModel, EnsembleUnusable,
                TooManyRuns) as error:
            return _refused(_run_refusal(error), getattr(error, "param", None))
        return _json({"run_id": run_id}, 201)

    async def cancel(self, request: Request) -> Response:
        refused = self._admit(request, changes=True)
        if isinstance(refused, Response):
            return refused
        run_id = request.path_params["run_id"]
        if self._runs.cancel(run_id):
            return _json({"run_id": run_id, "cancelled": True})
        if await self._run_json(run_id) is None:
            return _refused(_unknown_run(run_id))
        return _refused(Refusal(409, f"run {run_id} is not running here", "invalid_request_error", "run_not_active"))

    async def resume(self, request: Request) -> Response:
        refused = self._admit(request, changes=True)
        if isinstance(refused, Response):
            return refused
        run_id = request.path_params["run_id"]
        if run_id in self._resuming:  # two clicks at once must not run one journal twice
            return _refused(Refusal(409, f"run {run_id} is running", "invalid_request_error", "run_running"))
        self._resuming.add(run_id)
        try:
            found = await self._run_json(run_id)
            if found is None:
                return _refused(_unknown_run(run_id))
            if found["status"] in ("running", "completed"):
                why = "is running" if found["status"] == "running" else "completed: there is nothing to resume"
                return _refused(Refusal(409, f"run {run_id} {why}", "invalid_request_error", f"run_{found['status']}"))
            resumed = await self._runs.launch(lambda: self._gateway.resume(run_id))
        except RunNotFound:
            return _refused(_unknown_run(run_id))
        except (EnsembleUnusable, TooManyRuns) as error:
            return _refused(_run_refusal(error))
        finally:
            self._resuming.discard(run_id)  # from here the hub knows the run is active
        return _json({"run_id": resumed}, 201)

    # ---- the live stream ----

    async def events(self, request: Request) -> Response:
        still_allowed = self._admit(request)
        if isinstance(still_allowed, Response):
            return still_allowed
        try:
            subscription = self._runs.subscribe()
        except TooManySubscribers as error:
            return _refused(Refusal(503, str(error), "server_error", "overloaded", retry_after_s=5))
        return StreamingResponse(self._stream(subscription, still_allowed), media_type="text/event-stream",
                                 headers={**API_HEADERS, "X-Accel-Buffering": "no"})

    async def _stream(self, subscription: Subscription, still_allowed: Callable[[], bool]) -> AsyncIterator[str]:
        """`mesh` and `runs` first; then every run event as it comes, `runs` when a run starts or
        ends, `mesh` when it changed; a keep-alive comment every KEEP_ALIVE_S. Ends when the
        subscription is dropped (the client fell behind, or the daemon stops) or the key or
        session that opened it is no more."""
        loop = asyncio.get_running_loop()
        try:
            mesh = mesh_json(self._mesh_now())
            yield _frame("mesh", json.dumps(mesh, ensure_ascii=False))
            yield _frame("runs", json.dumps(await self._runs_listing(), ensure_ascii=False))
            next_mesh, next_ping = loop.time() + MESH_CHECK_S, loop.time() + KEEP_ALIVE_S
            while True:
                await subscription.wait(max(0.0, min(next_mesh, next_ping) - loop.time()))
                if subscription.dropped:
                    return
                items, runs_changed = subscription.take()
                if items:
                    yield "".join(_frame(kind, data) for kind, data in items)
                if runs_changed:
                    yield _frame("runs", json.dumps(await self._runs_listing(), ensure_ascii=False))
                now = loop.time()
                if now >= next_mesh:
                    next_mesh = now + MESH_CHECK_S
                    fresh = mesh_json(self._mesh_now())
                    if fresh != mesh:
                        mesh = fresh
                        yield _frame("mesh", json.dumps(mesh, ensure_ascii=False))
                if now >= next_ping:
                    next_ping = now + KEEP_ALIVE_S
                    if not still_allowed():
                        return
                    yield ": keep-alive\n\n"
        finally:
            self._runs.unsubscribe(subscription)


def _frame(kind: str, data: str) -> str:
    return f"event: {kind}\ndata: {data}\n\n"


def _read_file(path: Path) -> bytes:
    if not path.is_file():
        raise FileNotFoundError(path)
    return path.read_bytes()


def _json(body: Json, status: int = 200) -> Response:
    return JSONResponse(body, status_code=status, headers=API_HEADERS)


def _refused(refusal: Refusal, param: str | None = None) -> Response:
    response = refusal_response(refusal, param)
    response.headers.update(API_HEADERS)
    return response


def _unknown_run(run_id: str) -> Refusal:
    return Refusal(404, f"no run '{run_id[:128]}' on this node (GET /api/runs lists them)", "invalid_request_error",
                   "run_not_found")


def _body_refusal(error: BaseException) -> Refusal:
    match error:
        case BodyTooLarge():
            return Refusal(413, str(error), "invalid_request_error", "request_too_large")
        case BodyTooSlow():
            return Refusal(408, str(error), "invalid_request_error", "request_timeout")
        case ClientGone():
            return Refusal(499, "the client went away", "invalid_request_error", "client_gone")
    return Refusal(400, str(error), "invalid_request_error", "invalid_request")


def _run_refusal(error: BaseException) -> Refusal:
    match error:
        case UnknownModel():
            return Refusal(404, f"no ensemble '{str(error).removeprefix('ensemble/')}' on this node "
                                "(GET /api/ensembles lists them)", "invalid_request_error", "ensemble_not_found")
        case EnsembleUnusable(mesh_cannot_run=True):
            return Refusal(503, str(error), "server_error", "mesh_cannot_run", retry_after_s=10)
        case EnsembleUnusable():
            return Refusal(400, str(error), "invalid_request_error", "invalid_ensemble")
        case TooManyRuns():
            return Refusal(429, str(error), "rate_limit_error", "too_many_runs", retry_after_s=5)
    return _body_refusal(error)


def _client(request: Request) -> str | None:
    return request.client.host if request.client else None
