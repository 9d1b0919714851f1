"""The runner's serving loop in this process, over a real socketpair, hosting a recording runtime:
text is coalesced before it crosses, Cancel stops a generation, Stop ends the loop."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Sequence

import pytest

from orc.node.models.runners import child
from orc.node.models.runners.protocol import (
    MAX_REPLY_FRAME_BYTES,
    Cancel,
    Done,
    Generate,
    Load,
    Loaded,
    ModelFields,
    RunnerSettings,
    Stop,
    Text,
    decode_reply,
    frame,
    read_frame,
)
from orc.node.models.runtimes.base import ChatMessage, GenerationDone, GenerationParams, TokenChunk, Usage


class TokenByToken:
    """Yields one chunk per token, as fast as it can (a runtime that does not batch), or forever."""

    def __init__(self, tokens: int | None) -> None:
        self.tokens = tokens
        self.closed = asyncio.Event()

    async def load(self, model: object) -> None:
        pass

    def capacity(self, model: object) -> int:
        return 2

    def context_tokens(self, model: object) -> int:
        return 512

    async def generate(self, model: object, messages: Sequence[ChatMessage],
                       params: GenerationParams) -> AsyncIterator[object]:
        try:
            if self.tokens is None:
                while True:
                    yield TokenChunk("x")
                    await asyncio.sleep(0.001)
            for i in range(self.tokens):
                yield TokenChunk(f"t{i} ")
            yield GenerationDone("".join(f"t{i} " for i in range(self.tokens)), Usage(5, self.tokens), "length")
        finally:
            self.closed.set()


def run_child(runtime: TokenByToken, requests: list[object], until) -> list[object]:  # type: ignore[no-untyped-def]
    """Serve `requests` with `runtime` hosted; collect replies until `until(replies)` is true, then Stop."""

    async def scenario() -> list[object]:
        ours, theirs = socket.socketpair()
        serving = asyncio.create_task(child.serve(theirs))
        reader, writer = await asyncio.open_connection(sock=ours)
        for request in requests:
            writer.write(frame(request))  # type: ignore[arg-type]
        replies: list[object] = []
        while not until(replies):
            body = await asyncio.wait_for(read_frame(reader, MAX_REPLY_FRAME_BYTES), 30)
            assert body is not None
            replies.append(decode_reply(body))
            if isinstance(replies[-1], Text) and len(replies) == 2 and runtime.tokens is None:
                writer.write(frame(Cancel(1)))
                await asyncio.wait_for(runtime.closed.wait(), 30)
                break
        writer.write(frame(Stop()))
        await asyncio.wait_for(serving, 30)
        writer.close()
        return replies

    return asyncio.run(scenario())


LOAD = Load("llama_cpp", ModelFields("m", "llama_cpp", "/nowhere", 1, "", True), RunnerSettings())
GENERATE = Generate(1, (ChatMessage("user", "hi"),), GenerationParams())


def test_text_is_coalesced_before_it_crosses_to_the_node(monkeypatch: pytest.MonkeyPatch) -> None:
    runtime = TokenByToken(200)
    monkeypatch.setattr(child, "hosted_runtime", lambda name, settings: runtime)
    replies = run_child(runtime, [LOAD, GENERATE], lambda r: any(isinstance(x, Done) for x in r))
    assert replies[0] == Loaded(capacity=2, context_tokens=512, rss_bytes=replies[0].rss_bytes)  # type: ignore[union-attr]
    texts = [r for r in replies if isinstance(r, Text)]
    done = replies[-1]
    assert isinstance(done, Done) and done.completion_tokens == 200
    # 200 chunks in one go: the first at once, the rest held and sent together before Done.
    assert [t.text for t in texts] == ["t0 ", done.text[len("t0 "):]]


def test_cancel_stops_the_generation_in_the_runner(monkeypatch: pytest.MonkeyPatch) -> None:
    runtime = TokenByToken(None)
    monkeypatch.setattr(child, "hosted_runtime", lambda name, settings: runtime)
    replies = run_child(runtime, [LOAD, GENERATE], lambda r: False)
    assert runtime.closed.is_set()  # the hosted generation was closed by the Cancel
    assert isinstance(replies[1], Text)


def test_a_runner_started_by_hand_is_refused_in_one_line() -> None:
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-m", "orc.node.models.runners.child"], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 2
    assert done.stderr == "orc: error: this is a model runner; the node starts it (orc-node start, orc run)\n"
