"""What every model runtime does around the model itself: checking a request, rendering a
transcript for base models, cutting the stream at stop strings, and handing tokens on in batches.

The llama.cpp and MLX runtimes share these so an agent behaves the same on either.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeAlias

from typing_extensions import assert_never

from orc.node.models.runtimes.base import (
    ChatMessage,
    GenerationDone,
    GenerationError,
    GenerationEvent,
    GenerationParams,
    TokenChunk,
)

if TYPE_CHECKING:
    from orc.node.models.entry import ModelEntry

__all__ = ["REPEAT_PENALTY", "TRANSCRIPT_STOPS", "StopScanner", "TokenBatcher", "WorkerFailed", "WorkerMessage",
           "check_request", "relay", "render_transcript"]

ROLES = frozenset({"system", "user", "assistant"})
# Requests can come from other peers: every streamed chunk is matched against every stop
# string, so these caps keep a request from making that matching the expensive part.
MAX_STOPS = 16
MAX_STOP_CHARS = 256
TRANSCRIPT_STOPS = ("\nUser:", "\nSystem:")
# A mild repetition penalty (llama.cpp's own CLI default; llama-cpp-python's API default is
# 1.0), used by every runtime and prompt path so they sample alike: models this small loop without it.
REPEAT_PENALTY = 1.1
# Streamed text reaches the consumer at least this often (20 times a second reads as live).
STREAM_INTERVAL_S = 0.05


def check_request(model: ModelEntry, messages: Sequence[ChatMessage], params: GenerationParams) -> None:
    """Raise GenerationError for a request no runtime should start."""
    if not messages:
        raise GenerationError(f"model {model.id!r}: nothing to generate from, the message list is empty")
    bad = sorted({message.role for message in messages} - ROLES)
    if bad:
        raise GenerationError(f"model {model.id!r}: unknown message role(s) {bad}; use system, user or assistant")
    if params.max_tokens < 1:
        raise GenerationError(f"model {model.id!r}: max_tokens must be at least 1, not {params.max_tokens}")
    if len(params.stop) > MAX_STOPS or any(len(stop) > MAX_STOP_CHARS for stop in params.stop):
        raise GenerationError(
            f"model {model.id!r}: at most {MAX_STOPS} stop strings of up to {MAX_STOP_CHARS} characters"
        )
    if params.temperature < 0:
        raise GenerationError(f"model {model.id!r}: temperature must be 0 or more, not {params.temperature}")


def render_transcript(messages: Sequence[ChatMessage]) -> str:
    """The plain-text prompt for a model without a chat template: one "Role: text" paragraph a
    message, ending with "Assistant:" for the model to continue."""
    turns = [f"{message.role.capitalize()}: {message.content.strip()}" for message in messages]
    return "\n\n".join([*turns, "Assistant:"])


class StopScanner:
    """Cuts streamed text at the first stop string, holding back any tail that might be the
    start of one, so no emitted piece ever contains (part of) a stop string."""

    def __init__(self, stops: Sequence[str]) -> None:
        self._stops = tuple(stop for stop in stops if stop)
        self._pending = ""

    def feed(self, text: str) -> tuple[str, bool]:
        """Add streamed text; return the text now safe to emit and whether a stop string hit."""
        self._pending += text
        hits = [i for i in (self._pending.find(stop) for stop in self._stops) if i >= 0]
        if hits:
            safe, self._pending = self._pending[: min(hits)], ""
            return safe, True
        keep = max(
            (k for stop in self._stops for k in range(1, len(stop)) if self._pending.endswith(stop[:k])),
            default=0,
        )
        cut = len(self._pending) - keep
        safe, self._pending = self._pending[:cut], self._pending[cut:]
        return safe, False

    def flush(self) -> str:
        """The held-back text, once the stream ended without a stop string."""
        rest, self._pending = self._pending, ""
        return rest


class TokenBatcher:
    """Collects a generation's text and hands it on as `TokenChunk`s, at most every
    STREAM_INTERVAL_S: each hand-over wakes the event loop's thread, which on a small machine
    preempts one of the model's compute threads and slows the generation."""

    def __init__(self, send: Callable[[TokenChunk], None], clock: Callable[[], float] = time.monotonic) -> None:
        self._send = send
        self._clock = clock
        self._pieces: list[str] = []
        self._pending: list[str] = []
        self._last_sent = clock()

    def add(self, text: str, *, flush: bool = False) -> None:
        if text:
            self._pieces.append(text)
            self._pending.append(text)
        now = self._clock()
        if self._pending and (flush or now - self._last_sent >= STREAM_INTERVAL_S):
            self._send(TokenChunk("".join(self._pending)))
            self._pending.clear()
            self._last_sent = now

    def flush(self) -> None:
        """Hand on whatever is pending (the end of the generation)."""
        self.add("", flush=True)

    @property
    def text(self) -> str:
        """Everything added so far."""
        return "".join(self._pieces)


@dataclass(frozen=True)
class WorkerFailed:
    """Worker-to-loop message: the generation raised `error` (a RuntimeFailure)."""

    error: Exception


WorkerMessage: TypeAlias = TokenChunk | GenerationDone | WorkerFailed


async def relay(start: Callable[[threading.Event, Callable[[WorkerMessage], None]], None]
                ) -> AsyncIterator[GenerationEvent]:
    """Run a generation on a worker thread and stream its events on the event loop.

    `start(cancel, send)` hands the work to the thread without blocking; the thread calls
    `send` for each `TokenChunk`, then once with `GenerationDone` or `WorkerFailed`, and
    checks `cancel` between tokens. Closing this iterator, or cancelling its consumer, sets
    `cancel`.
    """
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[WorkerMessage] = asyncio.Queue()
    cancel = threading.Event()

    def send(message: WorkerMessage) -> None:
        try:
            loop.call_soon_threadsafe(queue.put_nowait, message)
        except RuntimeError:
            pass  # the loop is closed: nobody is listening any more

    start(cancel, send)
    try:
        while True:
            message = await queue.get()
            match message:
                case TokenChunk():
                    yield message
                case GenerationDone():
                    yield message
                    return
                case WorkerFailed(error=error):
                    raise error
                case _:
                    assert_never(message)
    finally:
        # Reached on completion, on aclose() and on cancellation alike; the worker notices
        # before its next token and stops.
        cancel.set()
