"""The runtime seam: what the run engine asks of anything that executes an agent.

A model runtime loads a catalog model, streams a generation as typed events and unloads it.
Script agents do not go through this seam (they have no model); see `orc.node.models.runtimes.script`.
The errors of every runtime, scripts included, form the one `RuntimeFailure` hierarchy below,
so the engine maps them to agent errors in one place.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, TypeAlias

from orc.scheduler.run import Usage  # one usage type for runtimes, runs and journals

if TYPE_CHECKING:
    from orc.node.models.entry import ModelEntry

__all__ = [
    "ChatMessage",
    "GenerationDone",
    "GenerationError",
    "GenerationEvent",
    "GenerationParams",
    "ModelLoadError",
    "ModelRuntime",
    "RunnerDied",
    "RuntimeFailure",
    "ScriptFailed",
    "ScriptNotFound",
    "ScriptOutputInvalid",
    "ScriptTimeout",
    "TokenChunk",
    "Usage",
]


@dataclass(frozen=True)
class ChatMessage:
    """One turn of a conversation; `role` is "system", "user" or "assistant"."""

    role: str
    content: str


@dataclass(frozen=True)
class GenerationParams:
    """How to sample. `seed` with `temperature` 0 makes a generation reproducible on a freshly
    loaded model; a loaded llama.cpp model reuses the prompt prefix it evaluated last, and the
    different batching can change a greedy continuation (seen in the mesh benchmark)."""

    temperature: float = 0.7
    max_tokens: int = 256
    seed: int | None = None
    stop: tuple[str, ...] = ()
    top_p: float | None = None


@dataclass(frozen=True)
class TokenChunk:
    """A piece of generated text, in order; concatenated they make the final text."""

    text: str


@dataclass(frozen=True)
class GenerationDone:
    """The last event of every completed generation.

    `text` is the concatenation of every `TokenChunk` before it; `finish_reason` is "stop"
    (end of turn or a stop string) or "length" (`max_tokens` or the context window ran out).
    """

    text: str
    usage: Usage
    finish_reason: str


GenerationEvent: TypeAlias = TokenChunk | GenerationDone


class RuntimeFailure(Exception):
    """An agent could not be executed on this node.

    The message says which model or script failed and, where there is one, what to do about
    it; it is shown to the user as is.
    """


class ModelLoadError(RuntimeFailure):
    """The model's weights file could not be loaded: it is missing, truncated or not a model
    this runtime can read. Re-add it with `orc models add PATH` or pick another model."""


# Every refusal of a request too large for a model's context window says this, whichever node or
# process it comes from (a runner, a peer's Offer, a peer's execution): the message is all that
# crosses processes and the mesh, and the HTTP API answers it as the client's error (400), not the
# mesh's.
DOES_NOT_FIT = "does not fit the context window"


def does_not_fit(message: str) -> bool:
    """`message` says a request was too large for a model's context window."""
    return DOES_NOT_FIT in message


class GenerationError(RuntimeFailure):
    """The model failed while generating, or the request cannot fit its context window."""


class RunnerDied(GenerationError):
    """The process that ran the model died mid-generation (a signal, out of memory).

    The node is fine and restarts the runner; the generation itself may well succeed on
    another node, so coordinators place it again as they would after a dead peer.
    """


class ScriptNotFound(RuntimeFailure):
    """The agent's script file does not exist in any of the places orc looked."""


class ScriptFailed(RuntimeFailure):
    """The agent's script could not be started or exited with an error.

    `exit_code` is the script's exit status (None when it never started) and `stderr_tail`
    the end of what it wrote to stderr.
    """

    def __init__(self, message: str, *, exit_code: int | None = None, stderr_tail: str = "") -> None:
        super().__init__(message)
        self.exit_code = exit_code
        self.stderr_tail = stderr_tail


class ScriptTimeout(RuntimeFailure):
    """The agent's script ran longer than its `timeout_seconds` and was stopped."""


class ScriptOutputInvalid(RuntimeFailure):
    """The agent's script exited successfully but printed nothing usable on stdout."""


class ModelRuntime(Protocol):
    """Loads catalog models and streams generations from them.

    Implementations keep every blocking call off the event loop. `generate` yields
    `TokenChunk`s as tokens come and ends with exactly one `GenerationDone`; if the consumer
    stops iterating (`aclose`) or its task is cancelled, the generation stops within about a
    token and its slot is freed. Failures are raised as `RuntimeFailure` subclasses.
    """

    name: str

    async def load(self, model: ModelEntry) -> None:
        """Make `model` ready to generate; loading an already loaded model does nothing."""
        ...

    def generate(
        self, model: ModelEntry, messages: Sequence[ChatMessage], params: GenerationParams
    ) -> AsyncIterator[GenerationEvent]:
        """Stream one generation; loads the model first if it is not loaded."""
        ...

    async def unload(self, model_id: str) -> None:
        """Free the model's memory once its running generations end; unknown ids are ignored."""
        ...

    def memory_estimate(self, model: ModelEntry) -> int:
        """Bytes of memory the model needs once loaded (weights plus working buffers)."""
        ...

    def capacity(self, model: ModelEntry) -> int:
        """How many generations of `model` this runtime runs at once (decoded together where
        it batches them); at least 1. Admission grants that many running places."""
        ...

    def unavailable_reason(self, model: ModelEntry) -> str | None:
        """Why `model` cannot run here now (its runner kept crashing), or None when it can."""
        ...
