"""The HTTP API against clients that misbehave: hang-ups at every moment, connections that never
finish their request, floods of connections, odd methods and paths, failures nothing expected.
The real app, guard, keys and uvicorn listener; the mesh behind them is a stand-in that places
nothing until it is cancelled, so each moment of a request can be caught."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
from orc.node.config import ApiConfig
from orc.node.home import Home
from orc.node.links.static import Endpoint
from orc.node.coordinator.generations import Bound
from orc.node.models.runtimes.base import TokenChunk
from orc.node.metrics import NodeMetrics
from orc.node.web import server as web_server
from orc.node.web.app import build_app
from orc.node.web.guard import Guard
from orc.node.web.keys import ApiKeys
from orc.node.web.responses import Drain
from orc.node.web.server import WebServer

MODEL = "smollm2-135m-instruct"


class SilentMesh:
    """A gateway whose mesh never places a generation: each waits until it is cancelled."""

    def __init__(self, failure: Exception | None = None, home: Home | None = None) -> None:
        self.home = home  # the dashboard reads journals under it
        self.started = 0
        self.cancelled = 0
        self.failure = failure

    def serves(self, model: str) -> bool:
        if self.failure is not None:
            raise self.failure
        return True

    def request_id(self) -> str:
        return "0" * 24

    def models(self) -> tuple[()]:
        return ()

    def ensembles(self) -> tuple[()]:
        return ()

    async def generate(self, request_id, index, model, messages, params) -> AsyncIterator[object]:
        self.started += 1
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            self.cancelled += 1
            raise
        yield  # an async generator that never yields


class TrickleMesh(SilentMesh):
    """A gateway whose generations run on node "t" and write a token every 50 ms, forever."""

    async def generate(self, request_id, index, model, messages, params) -> AsyncIterator[object]:
        self.started += 1
        yield Bound("t", "t")
        try:
            while True:
                await asyncio.sleep(0.05)
                yield TokenChunk("tick ")
        except (asyncio.CancelledError, GeneratorExit):
            self.cancelled += 1
            raise


@dataclass
class Api:
    host: str
    port: int
    key: str
    guard: Guard
    mesh: SilentMesh
    server: WebServer

    def request(self, body: dict[str, object], key: str | None = None) -> bytes:
        data = json.dumps(body).encode()
        return (f"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key or self.key}\r\n"
                f"Content-Type: application/json\r\nContent-Length: {len(data)}\r\n\r\n").encode() + data

    async def exchange(self, raw: bytes) -> bytes:
        """What the server answers to `raw` on a fresh connection, until it closes it (or 5 s)."""
        reader, writer = await asyncio.open_connection(self.host, self.port)
        writer.write(raw)
        await writer.drain()
        try:
            return await asyncio.wait_for(reader.read(), 5)
        finally:
            writer.close()


@asynccontextmanager
async def serving(tmp_path: Path, mesh: SilentMesh | None = None) -> AsyncIterator[Api]:
    keys = ApiKeys(tmp_path / "api-keys.json")
    _, secret = keys.create("tests")
    config = ApiConfig(listen=Endpoint("127.0.0.1", 0))
    guard = Guard(config, keys, time.monotonic)
    mesh = mesh or SilentMesh()
    if mesh.home is None:
        mesh.home = Home(tmp_path / "config", tmp_path / "data", tmp_path / "state")
        mesh.home.prepare()
    drain = Drain()
    app = build_app(gateway=mesh, guard=guard, metrics=NodeMetrics(running=lambda: None),  # type: ignore[arg-type]
                    config=config, drain=drain)
    server = WebServer(app, config, drain)
    await server.start()
    host, port = server.address.removeprefix("http://").rsplit(":", 1)
    try:
        yield Api(host, int(port), secret, guard, mesh, server)
    finally:
        await server.stop()


async def until(check: Callable[[], bool], seconds: float = 10) -> bool:
    deadline = time.monotonic() + seconds
    while not check() and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
    return check()


def run(scenario) -> None:
    asyncio.run(scenario)


def test_a_stream_hung_up_before_its_first_answer_frees_its_place(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with serving(tmp_path) as api:
            for attempt in range(1, 4):
                _, writer = await asyncio.open_connection(api.host, api.port)
                writer.write(api.request({"model": MODEL, "stream": True,
                                          "messages": [{"role": "user", "content": "hi"}]}))
                await writer.drain()
                assert await until(lambda: api.mesh.started == attempt)  # waiting for a node
                writer.close()
            assert await until(lambda: api.mesh.cancelled == 3)
            assert await until(lambda: api.guard.in_flight == 0)

    run(scenario())


def test_a_plain_request_hung_up_while_waiting_frees_its_place(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with serving(tmp_path) as api:
            _, writer = await asyncio.open_connection(api.host, api.port)
            writer.write(api.request({"model": MODEL, "messages": [{"role": "user", "content": "hi"}]}))
            await writer.drain()
            assert await until(lambda: api.mesh.started == 1)
            writer.close()
            assert await until(lambda: api.mesh.cancelled == 1 and api.guard.in_flight == 0)

    run(scenario())


def test_an_unexpected_failure_is_a_500_in_openais_shape(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with serving(tmp_path, SilentMesh(failure=RuntimeError("a bug"))) as api:
            answer = await api.exchange(api.request({"model": MODEL, "messages": [{"role": "user", "content": "x"}]}))
            head, _, body = answer.partition(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 500") and b"application/json" in head
            assert json.loads(body)["error"]["code"] == "internal_error"
            assert api.guard.in_flight == 0

    run(scenario())


def test_odd_methods_and_long_paths_get_short_openai_errors(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with serving(tmp_path) as api:
            trace = await api.exchange(b"TRACE /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            assert trace.startswith(b"HTTP/1.1 405")
            assert json.loads(trace.partition(b"\r\n\r\n")[2])["error"]["code"] == "method_not_allowed"
            long = await api.exchange(b"GET /" + b"a" * 30_000 + b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            head, _, body = long.partition(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 404") and len(body) < 1000  # the path is not echoed whole
            assert json.loads(body)["error"]["code"] == "not_found"

    run(scenario())


@pytest.fixture
def quick_heads(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setattr(web_server, "HEAD_TIMEOUT_S", 0.5)
    yield


def test_a_connection_that_never_finishes_its_request_head_is_closed(tmp_path: Path, quick_heads: None) -> None:
    async def scenario() -> None:
        async with serving(tmp_path) as api:
            silent = await asyncio.open_connection(api.host, api.port)  # says nothing at all
            partial = await asyncio.open_connection(api.host, api.port)
            partial[1].write(b"GET /health HTTP/1.1\r\nHost: x\r\n")  # and never the blank line
            trickle = await asyncio.open_connection(api.host, api.port)
            trickle[1].write(b"GET /health HTTP/1.1\r\n")
            started = time.monotonic()
            for reader, _ in (silent, partial):
                assert await asyncio.wait_for(reader.read(), 5) == b""  # closed by the server
            with pytest.raises(ConnectionError):
                for _ in range(20):  # a header every 0.2 s: busy, but never done
                    trickle[1].write(b"X-Slow: 1\r\n")
                    await trickle[1].drain()
                    await asyncio.sleep(0.2)
            assert time.monotonic() - started < 3
            fine = await api.exchange(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            assert fine.startswith(b"HTTP/1.1 200")

    run(scenario())


def test_a_kept_alive_connection_must_send_its_next_head_in_time_too(tmp_path: Path, quick_heads: None) -> None:
    async def scenario() -> None:
        async with serving(tmp_path) as api:
            reader, writer = await asyncio.open_connection(api.host, api.port)
            writer.write(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
            assert (await reader.readuntil(b'{"status":"ok"}')).startswith(b"HTTP/1.1 200")
            writer.write(b"GET /health HTTP/1.1\r\n")  # the next request starts, and stalls
            assert await asyncio.wait_for(reader.read(), 5) == b""

    run(scenario())


def test_idle_connections_from_one_address_cannot_lock_the_api(tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(web_server, "MAX_CONNECTIONS_PER_CLIENT", 20)

    async def scenario() -> None:
        async with serving(tmp_path) as api:
            # A stranger at 127.0.0.2 opens more idle connections than the whole listener allows.
            flood = [await asyncio.open_connection(api.host, api.port, local_addr=("127.0.0.2", 0))
                     for _ in range(web_server.MAX_CONNECTIONS + 10)]
            refused = []
            for reader, _ in flood:
                try:
                    refused.append(await asyncio.wait_for(reader.read(), 0.05))
                except asyncio.TimeoutError:
                    pass
            assert len(refused) == web_server.MAX_CONNECTIONS + 10 - 20  # all but its share, each with a 503
            assert all(b" 503 " in answer and b'"code": "overloaded"' in answer for answer in refused)
            # Meanwhile another client is served at once.
            served = await api.exchange(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            assert served.startswith(b"HTTP/1.1 200")
            for _, writer in flood:
                writer.close()

    run(scenario())


def test_requests_still_waiting_when_the_node_stops_get_a_clear_503(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with serving(tmp_path) as api:
            plain = asyncio.ensure_future(api.exchange(api.request(
                {"model": MODEL, "messages": [{"role": "user", "content": "hi"}]})))
            streamed = asyncio.ensure_future(api.exchange(api.request(
                {"model": MODEL, "stream": True, "messages": [{"role": "user", "content": "hi"}]})))
            assert await until(lambda: api.mesh.started == 2)
            await api.server.stop()
            for answer in await asyncio.gather(plain, streamed):
                head, _, body = answer.partition(b"\r\n\r\n")
                assert head.startswith(b"HTTP/1.1 503"), answer[:300]
                assert json.loads(body)["error"]["code"] == "shutting_down"
            assert api.mesh.cancelled == 2

    run(scenario())


def test_a_stream_running_when_the_node_stops_ends_with_an_error_event(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with serving(tmp_path, TrickleMesh()) as api:
            reader, writer = await asyncio.open_connection(api.host, api.port)
            writer.write(api.request({"model": MODEL, "stream": True, "messages": [{"role": "user", "content": "hi"}]}))
            await writer.drain()
            seen = b""
            while seen.count(b"tick") < 3:
                seen += await asyncio.wait_for(reader.read(4096), 5)
            await api.server.stop()
            rest = await asyncio.wait_for(reader.read(), 5)
            writer.close()
            events = [line for line in (seen + rest).split(b"\n") if line.startswith(b"data: ")]
            assert json.loads(events[-1][6:])["error"]["code"] == "shutting_down"
            assert api.mesh.cancelled == 1

    run(scenario())
