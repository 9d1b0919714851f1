"""The ASGI application of the node's HTTP face: routes, keys, limits, OpenAI's shapes (docs/api.md).

    GET  /health                 no key: is the node up
    GET  /metrics                Prometheus text (key, or loopback by setting)
    GET  /v1/models[/ID]         the mesh's models and this node's ensembles
    POST /v1/chat/completions    one model of the mesh, or `ensemble/NAME`; streamed or not
    POST /v1/completions         the same, with a prompt
    GET  /, /static/*, /api/*    the dashboard (`orc.node.web.dashboard`)

Every request is checked in the same order: the key (401, 429 after repeated failures), the
caller's rate (429), the node's requests in flight (503), the body's size (413), the body (400),
the model (404); only then does anything run. A client that goes away cancels what it asked for.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Protocol

from orc.node.config import ApiConfig
from orc.node.coordinator.generations import NoNode, NoRoom, TimedOut
from orc.node.models.runtimes.base import RuntimeFailure, does_not_fit
from orc.node.protocol.errors import Cancelled
from orc.node.protocol.events import RunProgress
from orc.node.web.answers import Answer, RunFailed, deliverable, samples
from orc.node.web.gateway import (
    EnsembleUnusable,
    Gateway,
    UnknownModel,
    conversation_input,
)
from orc.node.web.dashboard import Dashboard, MeshSource
from orc.node.web.guard import Caller, Guard, Refusal
from orc.node.web.mesh_view import MeshSnapshot
from orc.node.web.openai_wire import (
    ENSEMBLE_PREFIX,
    Ask,
    BadRequest,
    chat_ask,
    error_json,
    parse_body,
    text_ask,
)
from orc.node.web.responses import (
    Drain,
    ShuttingDown,
    BodyTooLarge,
    BodyTooSlow,
    ClientGone,
    EventStream,
    Outcome,
    collect,
    first_answer,
    read_body,
    refusal_response,
    sse_events,
)
from orc.node.web.ray_view import RayView
from orc.node.web.runs import RunHub
from orc.node.web.sessions import Sessions
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

log = logging.getLogger(__name__)


class ApiMetrics(Protocol):
    """What the app reports to, and serves from, the node's metrics (`orc.node.metrics`)."""

    def request(self, endpoint: str, model: str, code: int) -> None: ...

    def generation(self, model: str, prompt_tokens: int, completion_tokens: int, first_token_s: float | None,
                   token_gaps_s: Sequence[float], total_s: float) -> None: ...

    def watched_run(self, events: AsyncIterator[RunProgress]) -> AsyncIterator[RunProgress]: ...

    def render(self, accept: str | None) -> tuple[bytes, str]: ...


def build_app(*, gateway: Gateway, guard: Guard, metrics: ApiMetrics, config: ApiConfig,
              runs: RunHub | None = None, mesh: MeshSource = lambda: MeshSnapshot(None, ()),
              clock: Callable[[], float] = time.time, drain: Drain | None = None,
              ray_address: str | None = None) -> Starlette:
    """The node's HTTP application, over its gateway to the mesh. `runs`: the daemon's run hub,
    which every ensemble run of the API passes through, watched by the metrics (without one, a
    hub of its own, watched by `metrics`); `mesh()`:
    this node's description and its peers now, for the dashboard; `drain`: set by the server
    when it stops (`WebServer(..., drain=)`), ending waiting requests and streams cleanly;
    `ray_address`: the Ray cluster of the node's config, whose models the dashboard lists."""
    runs = runs if runs is not None else RunHub(clock, observe=metrics.watched_run)
    api = _Api(gateway, guard, metrics, config, runs, clock, drain or Drain())
    dashboard = Dashboard(gateway=gateway, guard=guard, runs=runs, sessions=Sessions(time.monotonic), mesh=mesh,
                          config=config, ray=RayView(ray_address))
    routes = [
        Route("/health", api.health, methods=["GET"]),
        Route("/metrics", api.metrics, methods=["GET"]),
        Route("/v1/models", api.models, methods=["GET"]),
        Route("/v1/models/{model:path}", api.model, methods=["GET"]),
        Route("/v1/chat/completions", api.chat, methods=["POST"]),
        Route("/v1/completions", api.text, methods=["POST"]),
        *dashboard.routes(),
    ]
    return Starlette(routes=routes, exception_handlers={HTTPException: _http_error, Exception: _internal_error})


# Most characters of a client's path or model echoed in an error: the head may hold 64 KiB of
# path, and an error is no place to send it all back.
ECHOED_CHARS = 200


async def _http_error(request: Request, error: Exception) -> Response:
    """404 and 405 from routing, in OpenAI's shape."""
    status = error.status_code if isinstance(error, HTTPException) else 500
    path = _clipped(request.url.path)
    message = {404: f"no such endpoint: {request.method} {path} (see docs/api.md)",
               405: f"{request.method} is not allowed on {path}"}.get(status, "request failed")
    code = {404: "not_found", 405: "method_not_allowed"}.get(status)
    return JSONResponse(error_json(message, "invalid_request_error", code), status_code=status)


async def _internal_error(request: Request, error: Exception) -> Response:
    """A failure nothing above expected, in OpenAI's shape (Starlette logs it with its traceback
    after this answer: it is a bug to fix)."""
    return JSONResponse(error_json(f"internal error: {type(error).__name__}", "server_error", "internal_error"),
                        status_code=500)


def _clipped(text: str) -> str:
    return text if len(text) <= ECHOED_CHARS else text[:ECHOED_CHARS] + "..."


def refusal_for(error: BaseException) -> Refusal:
    """The HTTP answer to a failure before or while a request ran."""
    match error:
        case BodyTooLarge():
            return Refusal(413, str(error), "invalid_request_error", "request_too_large")
        case BodyTooSlow():
            return Refusal(408, str(error), "invalid_request_error", "request_timeout")
        case BadRequest():
            return Refusal(400, str(error), "invalid_request_error", "invalid_request")
        case NoNode() | RuntimeFailure() if does_not_fit(str(error)):
            # Too large for the model wherever it was tried: the client's to fix, not the mesh's.
            return Refusal(400, f"the request is too large for the model: {error}", "invalid_request_error",
                           "context_length_exceeded")
        case UnknownModel():
            return Refusal(404, f"the model '{error}' does not exist on this mesh; GET /v1/models lists the models "
                                "and ensembles it serves", "invalid_request_error", "model_not_found")
        case EnsembleUnusable(mesh_cannot_run=True):
            return Refusal(503, str(error), "server_error", "mesh_cannot_run", retry_after_s=10)
        case EnsembleUnusable():
            return Refusal(400, str(error), "invalid_request_error", "invalid_ensemble")
        case NoRoom():
            return Refusal(503, f"the mesh is saturated: {error}", "server_error", "overloaded", retry_after_s=5)
        case TimedOut():
            return Refusal(500, f"the generation timed out: {error}", "server_error", "timeout")
        case NoNode():
            return Refusal(503, f"no node of the mesh can run this now: {error}", "server_error", "mesh_unavailable",
                           retry_after_s=5)
        case RunFailed():
            return Refusal(500, str(error), "server_error", "run_failed")
        case Cancelled():
            return Refusal(500, str(error), "server_error", "run_cancelled")
        case RuntimeFailure():
            return Refusal(500, f"the generation failed: {error}", "server_error", "generation_failed")
        case ShuttingDown():
            return Refusal(503, str(error), "server_error", "shutting_down", retry_after_s=5)
    log.error("API request failed unexpectedly", exc_info=error)
    return Refusal(500, f"internal error: {type(error).__name__}", "server_error", "internal_error")


class _Api:
    def __init__(self, gateway: Gateway, guard: Guard, metrics: ApiMetrics, config: ApiConfig, runs: RunHub,
                 clock: Callable[[], float], drain: Drain) -> None:
        self.drain = drain
        self.gateway = gateway
        self.runs = runs
        self.guard = guard
        self.metrics_sink = metrics
        self.config = config
        self.clock = clock

    # ---- unauthenticated ----

    async def health(self, request: Request) -> Response:
        self.metrics_sink.request("health", "", 200)
        return JSONResponse({"status": "ok"})

    # ---- read-only, with a key ----

    async def metrics(self, request: Request) -> Response:
        caller = self.guard.admit(request.headers.get("authorization"), _client(request), metrics=True)
        if isinstance(caller, Refusal):
            self.metrics_sink.request("metrics", "", caller.status)
            return refusal_response(caller)
        self.metrics_sink.request("metrics", "", 200)
        body, content_type = self.metrics_sink.render(request.headers.get("accept"))
        return Response(body, media_type=content_type)

    async def models(self, request: Request) -> Response:
        caller = self.guard.admit(request.headers.get("authorization"), _client(request))
        if isinstance(caller, Refusal):
            self.metrics_sink.request("models", "", caller.status)
            return refusal_response(caller)
        listing = await asyncio.to_thread(self._listing)
        self.metrics_sink.request("models", "", 200)
        return JSONResponse({"object": "list", "data": listing})

    async def model(self, request: Request) -> Response:
        caller = self.guard.admit(request.headers.get("authorization"), _client(request))
        if isinstance(caller, Refusal):
            self.metrics_sink.request("models", "", caller.status)
            return refusal_response(caller)
        wanted = request.path_params["model"]
        found = next((m for m in await asyncio.to_thread(self._listing) if m["id"] == wanted), None)
        if found is None:
            self.metrics_sink.request("models", "", 404)
            return refusal_response(refusal_for(UnknownModel(_clipped(wanted))), "model")
        self.metrics_sink.request("models", "", 200)
        return JSONResponse(found)

    def _listing(self) -> list[dict[str, object]]:
        listing: list[dict[str, object]] = [
            {"id": m.id, "object": "model", "created": 0, "owned_by": "orc",
             "orc": {"kind": "model", "nodes": list(m.nodes), "runtimes": list(m.runtimes)}}
            for m in self.gateway.models()]
        listing += [{"id": ENSEMBLE_PREFIX + name, "object": "model", "created": 0, "owned_by": "orc",
                     "orc": {"kind": "ensemble"}} for name in self.gateway.ensembles()]
        return listing

    # ---- generating ----

    async def chat(self, request: Request) -> Response:
        return await self._complete(request, "chat.completions", chat_ask)

    async def text(self, request: Request) -> Response:
        return await self._complete(request, "completions", text_ask)

    async def _complete(self, request: Request, endpoint: str, parse: Callable[[dict], Ask]) -> Response:
        caller = self.guard.admit(request.headers.get("authorization"), _client(request))
        if isinstance(caller, Refusal):
            self.metrics_sink.request(endpoint, "", caller.status)
            return refusal_response(caller)
        busy = self.guard.enter()
        if busy is not None:
            self.metrics_sink.request(endpoint, "", busy.status)
            return refusal_response(busy)
        leave = self.guard.leave
        model_label = ""
        started, created = asyncio.get_running_loop().time(), int(self.clock())
        try:
            try:
                ask = parse(parse_body(await read_body(request, self.config.max_body_bytes)))  # type: ignore[arg-type]
                answers, model_label, request_id = await self._start(ask, caller)
                if ask.stream:
                    response = await self._streamed(request, endpoint, ask, answers,
                                                    Outcome(ask.samples, started, created, response_id=request_id))
                    if isinstance(response, EventStream):
                        leave = _nothing  # the stream leaves when it ends; a 499 before it began leaves here
                    return response
                outcome = await _unless_gone(request, collect(answers, Outcome(ask.samples, started, created,
                                                                               response_id=request_id)), self.drain)
            except ClientGone:
                self.metrics_sink.request(endpoint, model_label, 499)
                return Response(status_code=499)
            except (BadRequest, BodyTooLarge, BodyTooSlow, UnknownModel, EnsembleUnusable, NoNode, RunFailed,
                    RuntimeFailure, Cancelled, ShuttingDown) as error:
                refusal = refusal_for(error)
                self.metrics_sink.request(endpoint, model_label, refusal.status)
                param = "model" if isinstance(error, UnknownModel) else getattr(error, "param", None)
                return refusal_response(refusal, param)
            if outcome is None:  # the client went away: nothing to answer
                self.metrics_sink.request(endpoint, model_label, 499)
                return Response(status_code=499)
            self._observe(model_label, outcome)
            self.metrics_sink.request(endpoint, model_label, 200)
            return JSONResponse(outcome.json(ask), headers=outcome.headers())
        finally:
            leave()

    async def _start(self, ask: Ask, caller: Caller) -> tuple[AsyncIterator[Answer], str, str]:
        """The answers a checked request will produce, its model's metric label and its id (in
        the response's `id`, and in the `run_id` of its executions in the peers' logs: `api-ID`);
        raises UnknownModel, EnsembleUnusable and BadRequest before anything runs."""
        ensemble = ask.ensemble
        if ensemble is not None:
            if ask.samples > 1:
                raise BadRequest("n > 1 is for models; run the ensemble several times instead", "n")
            if ensemble not in await asyncio.to_thread(self.gateway.ensembles):
                raise UnknownModel(ask.model)
            sinks, events = await self.gateway.run(ensemble, conversation_input(ask.messages), ask.params.seed)
            log.info("API: %s runs ensemble %s", caller.key_name or caller.id, ensemble)
            return deliverable(self.runs.watched(events), sinks), ask.model, self.gateway.request_id()
        if not self.gateway.serves(ask.model):
            raise UnknownModel(ask.model)
        request_id = self.gateway.request_id()
        streams = [self.gateway.generate(request_id, i, ask.model, ask.messages, ask.sample_params(i))
                   for i in range(ask.samples)]
        return samples(streams), ask.model, request_id

    async def _streamed(self, request: Request, endpoint: str, ask: Ask, answers: AsyncIterator[Answer],
                        outcome: Outcome) -> Response:
        """The first answer is awaited before the response starts, so a request the mesh refuses
        (saturated, unknown ensemble model) still gets its HTTP status; the rest streams."""
        first = await _unless_gone(request, first_answer(answers), self.drain)
        if first is None:
            await answers.aclose()  # type: ignore[attr-defined]
            self.metrics_sink.request(endpoint, ask.model, 499)
            return Response(status_code=499)
        def finished(outcome: Outcome | None, error: BaseException | None) -> None:
            self.guard.leave()
            if error is not None:
                self.metrics_sink.request(endpoint, ask.model, refusal_for(error).status)
            elif outcome is None:
                self.metrics_sink.request(endpoint, ask.model, 499)
            else:
                self._observe(ask.model, outcome)
                self.metrics_sink.request(endpoint, ask.model, 200)

        body, headers = sse_events(ask, first, answers, outcome, refusal_for)
        return EventStream(body, headers, finished, self.drain)  # type: ignore[return-value]

    def _observe(self, model: str, outcome: Outcome) -> None:
        self.metrics_sink.generation(model, outcome.usage.prompt_tokens, outcome.usage.completion_tokens,
                                     outcome.first_token_s, outcome.token_gaps_s, outcome.total_s)


def _nothing() -> None:
    pass


def _client(request: Request) -> str | None:
    return request.client.host if request.client else None


async def _unless_gone(request: Request, work: Awaitable[object], drain: Drain):  # -> its result, or None
    """`work`'s result, or None (and `work` cancelled) if the client disconnects first;
    ShuttingDown (and `work` cancelled) if the server stops first."""
    task = asyncio.ensure_future(work)
    gone = asyncio.ensure_future(_disconnected(request))
    stopping = asyncio.ensure_future(drain.event.wait())
    try:
        await asyncio.wait({task, gone, stopping}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        left = gone.done()
        gone.cancel()
        stopping.cancel()
        if not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
    if task.cancelled():
        if drain.event.is_set() and not left:
            raise ShuttingDown("the node is shutting down; ask again in a moment")
        return None
    return task.result()


async def _disconnected(request: Request) -> None:
    """Returns when the client has gone (the body was read already: only a disconnect can come)."""
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return


__all__ = ["ApiMetrics", "build_app", "json"]
