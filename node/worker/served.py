"""One model this node serves, as its runtime reports it, and what a generation of it costs here.

The node service keeps one `Served` per model variant: whether it is loaded, the speeds measured
here, its capacity (the running places of its admission lane) and why it cannot run now, all
advertised in the node's description; and from them the context window a request must fit and
the seconds a generation is expected to take at the batch it joins.
"""

from __future__ import annotations

from dataclasses import dataclass

from orc.node.models.catalog import ModelEntry
from orc.node.models.runtimes.base import DOES_NOT_FIT, ModelRuntime
from orc.node.protocol.description import MAX_CAPACITY, MAX_UNAVAILABLE_CHARS, ModelOffer
from orc.node.worker.speed import Speed
from orc.scheduler.placement import DEFAULT_LOAD_BYTES_PER_S, UNMEASURED_PREFILL_TOKENS_PER_S, HeldModel, decode_rate

# The context window (prompt plus completion, tokens) of a runtime that does not say its own.
DEFAULT_CONTEXT_TOKENS = 2048


def one_line(reason: str) -> str:
    """A runtime's reason as peers may be sent it: printable, one line, bounded."""
    printable = "".join(c if c.isprintable() else " " for c in reason)
    return printable[:MAX_UNAVAILABLE_CHARS]


@dataclass(frozen=True)
class LaneLoad:
    """One served variant's admission lane at one moment (what `/metrics` shows of it)."""

    model: str  # the catalog id
    runtime: str
    slots: int  # generations it runs at once
    running: int
    queued: int
    leases: int  # live Offer reservations
    unavailable: str  # why it cannot run here now, as advertised; empty when it can


@dataclass
class Served:
    """A served model variant; `runtime` is None when this node lacks the runtime it needs."""

    entry: ModelEntry
    runtime: ModelRuntime | None
    loaded: bool = False
    speed: Speed | None = None
    capacity: int = 1  # generations its runtime runs at once: the lane's running places
    unavailable: str = ""  # why its runtime cannot run it now, as advertised; empty when it can

    def runtime_state(self, default: int) -> tuple[int, str]:
        """(capacity, why unavailable) as the runtime reports them now; `default` capacity without one."""
        if self.runtime is None:
            return default, ""
        # Beyond the wire's cap peers would refuse the whole description.
        capacity = min(max(self.runtime.capacity(self.entry), 1), MAX_CAPACITY)
        return capacity, one_line(self.runtime.unavailable_reason(self.entry) or "")

    def offer(self) -> ModelOffer:
        """The model as this node's description advertises it."""
        speed = self.speed
        return ModelOffer(
            id=self.entry.id, runtime=self.entry.runtime, sha256=self.entry.sha256, size_bytes=self.entry.size_bytes,
            loaded=self.loaded, prefill_tokens_per_s=round(speed.prefill_tokens_per_s, 1) if speed else None,
            decode_tokens_per_s=round(speed.decode_tokens_per_s, 1) if speed else None, capacity=self.capacity,
            batch_decode_tokens_per_s=tuple(round(rate, 1) for rate in speed.batch_decode_tokens_per_s[:self.capacity])
            if speed else (),
            unavailable=self.unavailable)

    def unavailable_message(self) -> str:
        return f"{self.entry.id} cannot run on this node now: {self.unavailable}"

    def context_tokens(self) -> int:
        """The context window on its runtime here (prompt plus completion, tokens)."""
        window = getattr(self.runtime, "context_tokens", None)
        return window(self.entry) if callable(window) else DEFAULT_CONTEXT_TOKENS

    def too_large(self, prompt_tokens: int, max_tokens: int) -> str | None:
        """Why a request cannot fit the model's context window here, or None when it can."""
        window = self.context_tokens()
        if prompt_tokens > window:
            return (f"the prompt (about {prompt_tokens} tokens) {DOES_NOT_FIT} of {self.entry.id} "
                    f"here ({window} tokens)")
        if max_tokens > window:
            return (f"max_tokens {max_tokens} {DOES_NOT_FIT} of {self.entry.id} here "
                    f"({window} tokens); lower max_tokens")
        return None

    def work_seconds(self, prompt_tokens: int, max_tokens: int, batch: int = 1) -> float:
        """Seconds one generation is expected to take here: loading if cold, reading the prompt,
        writing at most `max_tokens` (and no more than the context window leaves) at the speed of
        one of `batch` sequences decoded together; pessimistic speeds for a model not measured."""
        speed = self.speed
        prefill = speed.prefill_tokens_per_s if speed else UNMEASURED_PREFILL_TOKENS_PER_S
        decode = decode_rate(HeldModel(self.entry.id, self.entry.runtime, self.entry.sha256, self.entry.size_bytes,
                                       self.loaded, prefill, speed.decode_tokens_per_s if speed else None,
                                       self.capacity, speed.batch_decode_tokens_per_s if speed else ()), batch)
        load = 0.0 if self.loaded else self.entry.size_bytes / DEFAULT_LOAD_BYTES_PER_S
        window = self.context_tokens()
        prompt = min(max(prompt_tokens, 0), window)
        written = min(max(max_tokens, 0), window - prompt)
        return load + prompt / max(prefill, 1e-3) + written / max(decode, 1e-3)
