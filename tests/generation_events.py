"""What a runtime's generation yielded, for the runtime tests (`from generation_events import ...`)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from orc.node.models.entry import ModelEntry
from orc.node.models.runtimes.base import ChatMessage, GenerationDone, GenerationEvent, GenerationParams, TokenChunk


async def generated(runtime: Any, model: ModelEntry, messages: Sequence[ChatMessage],
                    params: GenerationParams) -> list[GenerationEvent]:
    """Every event of one generation, in order."""
    return [event async for event in runtime.generate(model, messages, params)]


def done_of(events: list[GenerationEvent]) -> GenerationDone:
    assert isinstance(events[-1], GenerationDone)
    return events[-1]


def chunks_of(events: list[GenerationEvent]) -> list[TokenChunk]:
    return [event for event in events if isinstance(event, TokenChunk)]
