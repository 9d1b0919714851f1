"""What both model runtimes share: request checks and batched token hand-over."""

from __future__ import annotations

from pathlib import Path

import pytest

from orc.node.models.catalog import ModelEntry
from orc.node.models.runtimes.base import ChatMessage, GenerationError, GenerationParams, TokenChunk
from orc.node.models.runtimes.generation import STREAM_INTERVAL_S, TokenBatcher, check_request

MODEL = ModelEntry("m", "llama_cpp", Path("/nowhere"), 1, "0" * 64, "user")


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_tokens_are_handed_on_in_batches_and_nothing_is_lost():
    sent: list[TokenChunk] = []
    clock = Clock()
    batcher = TokenBatcher(sent.append, clock)
    batcher.add("Hel")
    batcher.add("lo")
    assert sent == []  # within one interval: held
    clock.now += STREAM_INTERVAL_S + 0.001
    batcher.add(",")
    assert sent == [TokenChunk("Hello,")]
    batcher.add("")  # nothing new: nothing sent
    batcher.add(" world")
    batcher.flush()
    assert sent == [TokenChunk("Hello,"), TokenChunk(" world")]
    batcher.flush()
    assert len(sent) == 2 and batcher.text == "Hello, world"


@pytest.mark.parametrize("messages, params, words", [
    ((), GenerationParams(), "message list is empty"),
    ((ChatMessage("robot", "hi"),), GenerationParams(), "unknown message role"),
    ((ChatMessage("user", "hi"),), GenerationParams(max_tokens=0), "max_tokens"),
    ((ChatMessage("user", "hi"),), GenerationParams(temperature=-1), "temperature"),
    ((ChatMessage("user", "hi"),), GenerationParams(stop=("x",) * 17), "stop strings"),
    ((ChatMessage("user", "hi"),), GenerationParams(stop=("x" * 257,)), "stop strings"),
])
def test_requests_no_runtime_should_start_are_refused(messages, params, words):
    with pytest.raises(GenerationError, match=words):
        check_request(MODEL, messages, params)
    check_request(MODEL, (ChatMessage("user", "hi"),), GenerationParams())
