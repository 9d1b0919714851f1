"""A client of a node's HTTP API, run inside that node's network namespace by test_api_netns.py.

    python api_client.py SCENARIO URL KEY [ARG]

prints one JSON object: what the scenario saw. It uses the clients people use: the `openai`
package, and httpx for what `openai` hides (status codes, raw streams).
"""

from __future__ import annotations

import asyncio
import json
import sys
import time

import httpx
import openai

HELLO = [{"role": "user", "content": "Name three colours."}]


def client(url: str, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=url + "/v1", api_key=key, max_retries=0, timeout=300)


def models(url: str, key: str, _: str) -> dict:
    listed = client(url, key).models.list().data
    return {"models": {m.id: m.model_extra.get("orc", {}) for m in listed}}


def chat(url: str, key: str, model: str) -> dict:
    reply = client(url, key).chat.completions.create(model=model, messages=HELLO, max_tokens=16, temperature=0,
                                                     seed=1)
    return {"content": reply.choices[0].message.content, "finish_reason": reply.choices[0].finish_reason,
            "usage": reply.usage.model_dump(), "orc": reply.model_extra["orc"], "id": reply.id}


def stream(url: str, key: str, model: str) -> dict:
    chunks = []
    for chunk in client(url, key).chat.completions.create(model=model, messages=HELLO, max_tokens=16, stream=True,
                                                          stream_options={"include_usage": True}):
        chunks.append(chunk.model_dump())
    return {"chunks": chunks}


def ensemble(url: str, key: str, name: str) -> dict:
    raw = client(url, key).chat.completions.with_raw_response.create(
        model=f"ensemble/{name}", messages=[{"role": "user", "content": "The printer is on fire."}])
    reply = raw.parse()
    return {"run_id": raw.headers.get("x-orc-run-id"), "content": reply.choices[0].message.content,
            "usage": reply.usage.model_dump(), "orc": reply.model_extra["orc"]}


def errors(url: str, key: str, model: str) -> dict:
    found: dict[str, object] = {}
    try:
        client(url, "orc_wrong").models.list()
    except openai.AuthenticationError as error:
        found["wrong_key"] = [error.status_code, error.code]
    try:
        client(url, key).chat.completions.create(model="no-such-model", messages=HELLO)
    except openai.NotFoundError as error:
        found["unknown_model"] = [error.status_code, error.code]
    big = json.dumps({"model": model, "messages": [{"role": "user", "content": "x" * (2 << 20)}]})
    answer = httpx.post(url + "/v1/chat/completions", content=big, timeout=60,
                        headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"})
    found["oversized"] = [answer.status_code, answer.json()["error"]["code"]]
    try:  # a body within the cap, a prompt beyond every node's context window
        client(url, key).chat.completions.create(model=model, messages=[{"role": "user", "content": "word " * 3000}])
    except openai.BadRequestError as error:
        found["too_long"] = [error.status_code, error.code]
    return found


def concurrent(url: str, key: str, spec: str) -> dict:
    model, count = spec.split(",")

    async def one(api: openai.AsyncOpenAI, index: int) -> list:
        try:
            reply = await api.chat.completions.create(model=model, messages=HELLO, max_tokens=8, seed=index)
            return [200, reply.model_extra["orc"]["nodes"][0], bool(reply.choices[0].message.content)]
        except openai.APIStatusError as error:
            return [error.status_code, error.code, False]

    async def main() -> list:
        api = openai.AsyncOpenAI(base_url=url + "/v1", api_key=key, max_retries=0, timeout=300)
        return await asyncio.gather(*(one(api, i) for i in range(int(count))))

    began = time.monotonic()
    answers = asyncio.run(main())
    return {"answers": answers, "seconds": time.monotonic() - began}


def disconnect(url: str, key: str, model: str) -> dict:
    """Start a long streamed answer, read a few pieces, hang up."""
    body = {"model": model, "messages": [{"role": "system", "content": "You write very long numbered lists."},
                                         {"role": "user", "content": "List every animal you know."}],
            "max_tokens": 600, "temperature": 0, "stream": True}
    pieces = []
    with httpx.Client(timeout=300) as http:
        with http.stream("POST", url + "/v1/chat/completions", json=body,
                         headers={"Authorization": f"Bearer {key}"}) as answer:
            for line in answer.iter_lines():
                if line.startswith("data: {"):
                    pieces.append(json.loads(line[6:]))
                if len(pieces) >= 4:
                    break
    return {"id": pieces[0]["id"], "node": pieces[0]["orc"]["node"], "closed_at": time.time()}


def metrics(url: str, key: str, _: str) -> dict:
    answer = httpx.get(url + "/metrics", headers={"Authorization": f"Bearer {key}"}, timeout=30)
    return {"status": answer.status_code, "content_type": answer.headers.get("content-type"), "text": answer.text}


SCENARIOS = {f.__name__: f for f in (models, chat, stream, ensemble, errors, concurrent, disconnect, metrics)}

if __name__ == "__main__":
    scenario, url, key, *rest = sys.argv[1:]
    print(json.dumps(SCENARIOS[scenario](url, key, rest[0] if rest else "")))
