"""Request bodies read under a cap, and answers turned into responses: one JSON object, or a
stream of server-sent events (OpenAI's `chat.completion.chunk`s, then `data: [DONE]`) that
ends what it streams as soon as its client goes away."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

from orc.node.models.runtimes.base import Usage
from orc.node.web.answers import Answer, Ended, Piece, Placed, RunStarted
from orc.node.web.guard import Refusal
from orc.node.web.openai_wire import (
    Ask,
    Choice,
    chunk_json,
    completion_json,
    error_json,
    sse,
    usage_chunk_json,
)
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse
from typing_extensions import assert_never

log = logging.getLogger(__name__)


# A body must have arrived this long after its request began: a client that trickles one in holds
# a place among the requests in flight meanwhile.
BODY_TIMEOUT_S = 30.0


class BodyTooLarge(Exception):
    """The request body is larger than the node accepts (`api.max_body_bytes`)."""


class BodyTooSlow(Exception):
    """The request body did not arrive in time."""


class ClientGone(Exception):
    """The client disconnected before its request was read: there is no one to answer."""


async def read_body(request: Request, limit: int, timeout_s: float = BODY_TIMEOUT_S) -> bytes:
    """The whole body, or BodyTooLarge as soon as it passes `limit` bytes (a declared length past
    it is refused before a byte is read): a client cannot make the node buffer more. BodyTooSlow
    after `timeout_s`, ClientGone if the client hangs up first."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise BodyTooLarge(f"the request body is {int(declared)} bytes; this node accepts at most {limit}")

    async def whole() -> bytes:
        parts: list[bytes] = []
        size = 0
        async for part in request.stream():
            size += len(part)
            if size > limit:
                raise BodyTooLarge(f"the request body is larger than this node accepts ({limit} bytes)")
            parts.append(part)
        return b"".join(parts)

    try:
        return await asyncio.wait_for(whole(), timeout_s)
    except asyncio.TimeoutError:
        raise BodyTooSlow(f"the request body did not arrive within {timeout_s:.0f} s") from None
    except ClientDisconnect:
        raise ClientGone() from None


def refusal_response(refusal: Refusal, param: str | None = None) -> JSONResponse:
    """A refusal in OpenAI's error shape, with `Retry-After` when it says when to retry."""
    headers = {"Retry-After": str(refusal.retry_after_s)} if refusal.retry_after_s else None
    return JSONResponse(error_json(refusal.message, refusal.kind, refusal.code, param), status_code=refusal.status,
                        headers=headers)


@dataclass
class Outcome:
    """What a request produced, sample by sample, and how fast."""

    samples: int
    started: float  # the event loop's clock when the request arrived
    created: int  # unix seconds, for OpenAI's `created`
    texts: dict[int, str] = field(default_factory=dict)
    finish: dict[int, str] = field(default_factory=dict)
    nodes: dict[int, str] = field(default_factory=dict)
    usage: Usage = field(default_factory=Usage)
    run_id: str | None = None
    status: str | None = None
    first_token_s: float | None = None
    token_gaps_s: list[float] = field(default_factory=list)
    total_s: float = 0.0
    response_id: str = field(default_factory=lambda: os.urandom(12).hex())  # a model request's id
    _last_piece: dict[int, float] = field(default_factory=dict)

    def note(self, answer: Answer, now: float) -> None:
        match answer:
            case RunStarted(run_id=run_id):
                self.run_id = run_id
            case Placed(index=index, node=node):
                self.nodes[index] = node
            case Piece(index=index):
                if self.first_token_s is None:
                    self.first_token_s = now - self.started
                if index in self._last_piece:
                    self.token_gaps_s.append(now - self._last_piece[index])
                self._last_piece[index] = now
            case Ended(index=index, text=text, finish_reason=reason, usage=usage, status=status):
                self.texts[index] = text
                self.finish[index] = reason
                # The samples of one request share its prompt: counted once, as OpenAI counts it.
                self.usage = Usage(max(self.usage.prompt_tokens, usage.prompt_tokens),
                                   self.usage.completion_tokens + usage.completion_tokens)
                self.status = status
                self.total_s = now - self.started
            case other:
                assert_never(other)

    def extension(self) -> dict[str, object]:
        """The `orc` field: where the samples ran, the run (for an ensemble)."""
        found: dict[str, object] = {"nodes": [self.nodes.get(i) for i in range(self.samples)]}
        if self.run_id is not None:
            found["run_id"] = self.run_id
            found["status"] = self.status
        return found

    def json(self, ask: Ask) -> dict[str, object]:
        choices = [Choice(i, self.texts.get(i, ""), self.finish.get(i, "stop")) for i in range(self.samples)]
        return completion_json(ask, self._id(ask), self.created, choices, self.usage, self.extension())

    def headers(self) -> dict[str, str]:
        return {"X-Orc-Run-Id": self.run_id} if self.run_id else {}

    def _id(self, ask: Ask) -> str:
        return ("chatcmpl-" if ask.kind == "chat" else "cmpl-") + (self.run_id or self.response_id)


async def first_answer(answers: AsyncIterator[Answer]) -> Answer:
    """The first answer (raises what the request raised before producing one)."""
    try:
        return await answers.__anext__()
    except StopAsyncIteration:
        raise RuntimeError("the request produced nothing") from None


async def collect(answers: AsyncIterator[Answer], outcome: Outcome) -> Outcome:
    """Every answer, gathered into `outcome` (the whole response)."""
    clock = asyncio.get_running_loop().time
    try:
        async for answer in answers:
            outcome.note(answer, clock())
    finally:
        await answers.aclose()  # type: ignore[attr-defined]
    return outcome


class SseBody:
    """The events of a streamed response; `outcome` and `error` tell how it ended."""

    def __init__(self, ask: Ask, first: Answer, rest: AsyncIterator[Answer], outcome: Outcome,
                 refusal_for: Callable[[BaseException], Refusal]) -> None:
        self._ask = ask
        self._first = first
        self._rest = rest
        self._clock = asyncio.get_running_loop().time
        self._refusal_for = refusal_for
        self.outcome = outcome
        self.error: BaseException | None = None
        self.complete = False

    async def chunks(self) -> AsyncIterator[bytes]:
        ask, outcome = self._ask, self.outcome
        created = outcome.created
        opened: set[int] = set()  # samples whose role chunk went out
        streamed: set[int] = set()  # samples with text already sent

        def chunk(index: int, **fields: object) -> bytes:
            """A chunk of sample `index`; its first is preceded by one with the role alone (as
            OpenAI sends it), which also says where the sample runs and, for an ensemble, the run."""
            opening = b""
            if index not in opened:
                opened.add(index)
                extension: dict[str, object] = {"node": outcome.nodes.get(index)}
                if outcome.run_id:
                    extension["run_id"] = outcome.run_id
                opening = sse(chunk_json(ask, outcome._id(ask), created, index, role=ask.kind == "chat",
                                         text="", extension=extension))
            return opening + sse(chunk_json(ask, outcome._id(ask), created, index, **fields))  # type: ignore[arg-type]

        try:
            answer: Answer | None = self._first
            while answer is not None:
                outcome.note(answer, self._clock())
                match answer:
                    case RunStarted() | Placed(replaces=None):
                        pass
                    case Placed(index=index, replaces=why):
                        if index in streamed:  # what went out cannot be taken back
                            raise MidStreamFailover(f"the node generating this answer failed mid-stream ({why}); "
                                                    "ask again" + (f" (run {outcome.run_id})" if outcome.run_id else ""))
                    case Piece(index=index, text=text):
                        streamed.add(index)
                        yield chunk(index, text=text)
                    case Ended(index=index, text=text, finish_reason=reason):
                        if index not in streamed and text:
                            yield chunk(index, text=text)
                        yield chunk(index, finish_reason=reason)
                    case other:
                        assert_never(other)
                answer = await anext(self._rest, None)
            if ask.include_usage:
                yield sse(usage_chunk_json(ask, outcome._id(ask), created, outcome.usage, outcome.extension()))
            yield sse("[DONE]")
            self.complete = True
        except asyncio.CancelledError:
            raise
        except Exception as error:  # noqa: BLE001 - the stream's boundary: said in the stream, then ended
            self.error = error
            refusal = self._refusal_for(error)
            yield sse(error_json(refusal.message, refusal.kind, refusal.code))
        finally:
            await self._rest.aclose()  # type: ignore[attr-defined]


class MidStreamFailover(Exception):
    """The node streaming an answer failed after part of it was sent; its retry elsewhere would
    start over, which a stream cannot show."""


def sse_events(ask: Ask, first: Answer, rest: AsyncIterator[Answer], outcome: Outcome,
               refusal_for: Callable[[BaseException], Refusal]) -> tuple[SseBody, dict[str, str]]:
    """The streamed response to `ask` whose first answer is `first`, and its headers."""
    body = SseBody(ask, first, rest, outcome, refusal_for)
    headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    if isinstance(first, RunStarted):
        headers["X-Orc-Run-Id"] = first.run_id
    return body, headers


class EventStream:
    """An ASGI response streaming `body`'s events. When the client disconnects, the stream is
    closed at once (what it generates is cancelled on its node); `finished(outcome, error)` is
    called once at the end: outcome None when the client left first."""

    def __init__(self, body: SseBody, headers: dict[str, str],
                 finished: Callable[[Outcome | None, BaseException | None], None]) -> None:
        self._body = body
        self._headers = headers
        self._finished = finished

    async def __call__(self, scope: object, receive: Callable, send: Callable) -> None:
        headers = [(b"content-type", b"text/event-stream; charset=utf-8")]
        headers += [(k.lower().encode(), v.encode()) for k, v in self._headers.items()]
        chunks = self._body.chunks()
        left = False
        try:
            await send({"type": "http.response.start", "status": 200, "headers": headers})
            pump = asyncio.ensure_future(self._pump(chunks, send))
            gone = asyncio.ensure_future(_until_disconnect(receive))
            try:
                await asyncio.wait({pump, gone}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                left = gone.done() and not pump.done()
                for task in (pump, gone):
                    task.cancel()
                with contextlib.suppress(BaseException):
                    await asyncio.gather(pump, gone, return_exceptions=True)
            if pump.done() and not pump.cancelled() and pump.exception() is not None:
                left = True  # the connection broke while sending
        finally:
            await chunks.aclose()
            body = self._body
            try:
                if left and not body.complete:
                    self._finished(None, None)
                else:
                    self._finished(body.outcome, body.error)
            except Exception:
                log.exception("finishing a streamed response failed")

    @staticmethod
    async def _pump(chunks: AsyncIterator[bytes], send: Callable) -> None:
        async for data in chunks:
            await send({"type": "http.response.body", "body": data, "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})


async def _until_disconnect(receive: Callable) -> None:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return
