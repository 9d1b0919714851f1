"""The HTTP API end to end on this machine: the real app in uvicorn, the real embedded model in
its runner, the real `openai` client and httpx. (The mesh, a model only a peer has, and a
cancelled peer generation are in tests/mesh/test_api_netns.py.)"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace

import httpx
import openai
import pytest
from orc.node.config import ApiConfig
from orc.node.coordinator.placing import LocalPlacer
from orc.node.home import Home
from orc.node.links.static import Endpoint
from orc.node.metrics import NodeMetrics
from orc.node.models.catalog import Catalog
from orc.node.models.runtimes.extra_buffers import LlamaCppConfig
from orc.node.models.runtimes.factory import build_runtimes
from orc.node.web.app import build_app
from orc.node.web.gateway import Gateway
from orc.node.web.guard import Guard
from orc.node.web.keys import ApiKeys
from orc.node.web.server import WebServer
from prometheus_client.parser import text_string_to_metric_families

pytestmark = pytest.mark.slow

SMOL = "smollm2-135m-instruct"
HELLO = [{"role": "user", "content": "Name three colours."}]


@dataclass
class Served:
    url: str  # the default listener
    tight: str  # a second listener over the same node with small limits
    key: str
    home: Home
    metrics: NodeMetrics
    guards: tuple[Guard, Guard]


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    root = tmp_path_factory.mktemp("api")
    home = Home(root / "config", root / "data", root / "state")
    home.prepare()
    keys = ApiKeys(home.api_keys_file)
    _, secret = keys.create("tests")
    ready: dict[str, object] = {}
    stop = threading.Event()

    async def serve() -> None:
        runtimes = build_runtimes(LlamaCppConfig(), home.config_file, n_threads=2, slots=4)
        placer = LocalPlacer(Catalog(home.models_dir), runtimes)
        metrics = NodeMetrics(running=lambda: None)
        gateway = Gateway(home=home, placer=placer, node_id="local", queue_timeout_s=30)
        plain = ApiConfig(listen=Endpoint("127.0.0.1", 0))
        tight = replace(plain, max_concurrent=1, requests_per_minute=30, max_body_bytes=4096)
        guards = (Guard(plain, keys, time.monotonic), Guard(tight, keys, time.monotonic))
        servers = [WebServer(build_app(gateway=gateway, guard=guard, metrics=metrics, config=config), config)
                   for guard, config in zip(guards, (plain, tight))]
        for server in servers:
            await server.start()
        ready.update(urls=[s.address for s in servers], metrics=metrics, guards=guards)
        try:
            while not stop.is_set():
                await asyncio.sleep(0.05)
        finally:
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
    yield Served(urls[0], urls[1], secret, home, ready["metrics"], ready["guards"])  # type: ignore[arg-type,index]
    stop.set()
    thread.join(30)


def client(served: Served, key: str | None = None) -> openai.OpenAI:
    return openai.OpenAI(base_url=served.url + "/v1", api_key=key or served.key, max_retries=0, timeout=120)


def auth(served: Served) -> dict[str, str]:
    return {"Authorization": f"Bearer {served.key}"}


def test_health_answers_without_a_key(served: Served) -> None:
    answer = httpx.get(served.url + "/health")
    assert answer.status_code == 200 and answer.json() == {"status": "ok"}


def test_models_lists_the_models_with_their_nodes_and_the_ensembles(served: Served) -> None:
    listed = {m.id: m for m in client(served).models.list().data}
    assert SMOL in listed and listed[SMOL].owned_by == "orc"
    assert listed[SMOL].model_extra["orc"]["nodes"] == ["local"]
    assert "ensemble/perspectives" in listed
    assert client(served).models.retrieve(SMOL).id == SMOL
    with pytest.raises(openai.NotFoundError):
        client(served).models.retrieve("no-such-model")


def test_a_chat_has_real_usage_and_is_reproducible_with_a_seed(served: Served) -> None:
    ask = {"model": SMOL, "messages": HELLO, "max_tokens": 12, "temperature": 0, "seed": 3}
    first = client(served).chat.completions.create(**ask)
    second = client(served).chat.completions.create(**ask)
    choice = first.choices[0]
    assert choice.message.role == "assistant" and choice.message.content.strip()
    assert choice.finish_reason in ("stop", "length")
    assert first.usage.prompt_tokens > 5  # the chat template and the question, as the model saw them
    assert 0 < first.usage.completion_tokens <= 12
    assert first.usage.total_tokens == first.usage.prompt_tokens + first.usage.completion_tokens
    assert first.object == "chat.completion" and first.model == SMOL
    assert second.choices[0].message.content == choice.message.content
    assert first.model_extra["orc"]["nodes"] == ["local"]


def test_a_stream_opens_with_the_role_and_ends_with_finish_usage_and_done(served: Served) -> None:
    with httpx.stream("POST", served.url + "/v1/chat/completions", headers=auth(served), timeout=120,
                      json={"model": SMOL, "messages": HELLO, "max_tokens": 16, "stream": True,
                            "stream_options": {"include_usage": True}}) as answer:
        assert answer.status_code == 200
        assert answer.headers["content-type"].startswith("text/event-stream")
        events = [line[len("data: "):] for line in answer.iter_lines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert chunks[0]["orc"]["node"] == "local"
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    assert text.strip()
    finishing = [c for c in chunks if c["choices"] and c["choices"][0]["finish_reason"]]
    assert len(finishing) == 1 and finishing[0]["choices"][0]["finish_reason"] in ("stop", "length")
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] > 0
    assert all(c["usage"] is None for c in chunks[:-1])


def test_the_openai_client_streams_too(served: Served) -> None:
    stream = client(served).chat.completions.create(model=SMOL, messages=HELLO, max_tokens=8, stream=True)
    pieces = [c.choices[0].delta.content or "" for c in stream if c.choices]
    assert "".join(pieces).strip()


def test_n_samples_come_back_together(served: Served) -> None:
    reply = client(served).chat.completions.create(model=SMOL, messages=HELLO, max_tokens=8, n=3, seed=5,
                                                   temperature=1.0)
    assert [c.index for c in reply.choices] == [0, 1, 2]
    assert all(c.message.content.strip() for c in reply.choices)
    assert 3 <= reply.usage.completion_tokens <= 24  # every sample's tokens
    single = client(served).chat.completions.create(model=SMOL, messages=HELLO, max_tokens=1)
    assert reply.usage.prompt_tokens == single.usage.prompt_tokens  # one prompt, counted once


def test_completions_take_a_prompt(served: Served) -> None:
    reply = client(served).completions.create(model=SMOL, prompt="Say hello.", max_tokens=8, temperature=0)
    assert reply.object == "text_completion" and reply.choices[0].text.strip()
    assert reply.usage.prompt_tokens > 0


def test_an_ensemble_is_a_model_and_its_run_is_journaled(served: Served) -> None:
    raw = client(served).chat.completions.with_raw_response.create(
        model="ensemble/triage", messages=[{"role": "user", "content": "The printer is on fire."}])
    reply = raw.parse()
    run_id = raw.headers["x-orc-run-id"]
    assert reply.model_extra["orc"]["run_id"] == run_id
    assert reply.choices[0].message.content.strip()
    assert reply.usage.prompt_tokens > 0 and reply.usage.completion_tokens > 0
    assert served.home.journal_path(run_id).is_file()


def test_errors_have_openais_shape_and_status(served: Served) -> None:
    with pytest.raises(openai.AuthenticationError):
        client(served, "orc_not-a-key").models.list()
    no_key = httpx.get(served.url + "/v1/models")
    assert no_key.status_code == 401 and no_key.json()["error"]["code"] == "invalid_api_key"
    with pytest.raises(openai.NotFoundError) as unknown:
        client(served).chat.completions.create(model="gpt-4o", messages=HELLO)
    assert unknown.value.code == "model_not_found"
    with pytest.raises(openai.NotFoundError):
        client(served).chat.completions.create(model="ensemble/no-such-ensemble", messages=HELLO)
    with pytest.raises(openai.BadRequestError) as bad:
        client(served).chat.completions.create(model=SMOL, messages=HELLO, temperature=5)
    assert bad.value.param == "temperature"
    junk = httpx.post(served.url + "/v1/chat/completions", headers=auth(served), content=b"\x00{not json")
    assert junk.status_code == 400 and junk.json()["error"]["type"] == "invalid_request_error"
    nowhere = httpx.get(served.url + "/v2/anything", headers=auth(served))
    assert nowhere.status_code == 404 and "error" in nowhere.json()
    wrong_method = httpx.get(served.url + "/v1/chat/completions", headers=auth(served))
    assert wrong_method.status_code == 405 and "error" in wrong_method.json()


def test_a_prompt_beyond_the_context_window_is_the_clients_error(served: Served) -> None:
    with pytest.raises(openai.BadRequestError) as too_long:
        client(served).chat.completions.create(model=SMOL, messages=[{"role": "user", "content": "word " * 3000}])
    assert too_long.value.status_code == 400 and too_long.value.code == "context_length_exceeded"
    assert "does not fit the context window" in too_long.value.message


def test_an_oversized_body_is_413_whether_declared_or_not(served: Served) -> None:
    big = json.dumps({"model": SMOL, "messages": [{"role": "user", "content": "x" * 10_000}]}).encode()
    declared = httpx.post(served.tight + "/v1/chat/completions", headers=auth(served), content=big)
    assert declared.status_code == 413 and declared.json()["error"]["code"] == "request_too_large"

    def chunked() -> Iterator[bytes]:  # no Content-Length: the cap counts what arrives
        for start in range(0, len(big), 1000):
            yield big[start:start + 1000]

    undeclared = httpx.post(served.tight + "/v1/chat/completions", headers=auth(served), content=chunked())
    assert undeclared.status_code == 413


def wait_until(check: Callable[[], bool], seconds: float = 10) -> bool:
    deadline = time.monotonic() + seconds
    while not check() and time.monotonic() < deadline:
        time.sleep(0.02)
    return check()


def test_past_the_in_flight_cap_a_request_gets_503(served: Served) -> None:
    tight_guard = served.guards[1]
    host, port = served.tight.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port))) as slow:  # a request whose body trickles in
        slow.sendall(f"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {served.key}\r\n"
                     "Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{".encode())
        assert wait_until(lambda: tight_guard.in_flight == 1)
        busy = httpx.post(served.tight + "/v1/chat/completions", headers=auth(served),
                          json={"model": SMOL, "messages": HELLO, "max_tokens": 4})
        assert busy.status_code == 503 and busy.json()["error"]["code"] == "overloaded"
        assert int(busy.headers["retry-after"]) >= 1
    assert wait_until(lambda: tight_guard.in_flight == 0)  # the client hung up: its place is free


def test_a_client_that_hangs_up_mid_stream_frees_its_place(served: Served) -> None:
    guard = served.guards[0]
    body = {"model": SMOL, "messages": HELLO, "max_tokens": 300, "stream": True}
    with httpx.Client(timeout=120) as http:
        with http.stream("POST", served.url + "/v1/chat/completions", headers=auth(served), json=body) as answer:
            assert answer.status_code == 200
            next(answer.iter_lines())
    assert wait_until(lambda: guard.in_flight == 0)
    assert client(served).chat.completions.create(model=SMOL, messages=HELLO, max_tokens=4).choices


def test_a_key_has_its_rate(served: Served) -> None:
    _, fresh = ApiKeys(served.home.api_keys_file).create("rate")  # its own bucket; taken without a restart
    statuses = [httpx.get(served.tight + "/v1/models", headers={"Authorization": f"Bearer {fresh}"}).status_code
                for _ in range(8)]
    assert statuses[:5] == [200] * 5 and 429 in statuses  # a burst of 5 at 30 a minute


def test_metrics_parse_and_move_with_the_traffic(served: Served) -> None:
    def samples() -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        text = httpx.get(served.url + "/metrics", headers=auth(served)).text
        return {(s.name, tuple(sorted(s.labels.items()))): s.value
                for family in text_string_to_metric_families(text) for s in family.samples}

    def value(found: dict, name: str, **labels: str) -> float:
        return found.get((name, tuple(sorted(labels.items()))), 0.0)

    before = samples()
    client(served).chat.completions.create(model=SMOL, messages=HELLO, max_tokens=6)
    after = samples()
    ok = {"endpoint": "chat.completions", "model": SMOL, "code": "200"}
    assert value(after, "orc_api_requests_total", **ok) == value(before, "orc_api_requests_total", **ok) + 1
    assert value(after, "orc_completion_tokens_total", model=SMOL) > value(before, "orc_completion_tokens_total",
                                                                           model=SMOL)
    assert value(after, "orc_time_to_first_token_seconds_count", model=SMOL) == \
        value(before, "orc_time_to_first_token_seconds_count", model=SMOL) + 1
    assert httpx.get(served.url + "/metrics").status_code == 401
