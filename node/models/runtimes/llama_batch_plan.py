"""The decisions of batched llama.cpp decoding, as pure functions: which slot a new sequence
takes, how much of its prompt it can copy from a cached sequence, how its prompt is split into
decode calls, and how many tokens it may generate.

`orc.node.models.runtimes.llama_batched` carries them out against llama.cpp; nothing here
touches it, so every rule is tested without a model.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

__all__ = ["Admission", "PromptTooLong", "admit", "generation_budget", "prompt_chunks", "reusable_prefix",
           "shared_prefix"]


class PromptTooLong(ValueError):
    """The prompt leaves no room in its sequence's context window for a single new token."""


def shared_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    """How many leading tokens `a` and `b` have in common."""
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


def reusable_prefix(prompt: Sequence[int], cached: Sequence[int], *, block: int | None, min_tail: int = 1) -> int:
    """How many of `prompt`'s leading tokens can be copied from a sequence whose cache holds
    `cached`.

    At least the prompt's last `min_tail` tokens (at least one) are computed again: the last
    one's logits choose the first new token, and a model may compute a decode call of one
    token differently from the same token among others. `block` None means any such length
    may be reused (the model's results do not depend on how a prompt is split into decode
    calls of `min_tail` tokens or more); otherwise the length is rounded down to a multiple of
    `block`, so the rest of the prompt is read in the same decode calls as without reuse.
    """
    n = min(shared_prefix(prompt, cached), len(prompt) - max(min_tail, 1))
    if block is not None:
        n -= n % block
    return max(n, 0)


def prompt_chunks(start: int, end: int, chunk: int) -> list[tuple[int, int]]:
    """The decode calls that read prompt positions [start, end): cut at the multiples of
    `chunk`, so a prompt is split at the same positions whether or not a prefix was reused, and
    as llama-cpp-python splits it (its n_batch)."""
    if chunk < 1:
        raise ValueError("chunk must be at least 1")
    cuts = []
    while start < end:
        stop = min(end, (start // chunk + 1) * chunk)
        cuts.append((start, stop))
        start = stop
    return cuts


def generation_budget(prompt_tokens: int, max_tokens: int, n_ctx: int) -> int:
    """Tokens a sequence may sample: `max_tokens`, cut so prompt plus completion fit `n_ctx`
    (llama-cpp-python's rule); raises `PromptTooLong` when the prompt alone fills the window."""
    if prompt_tokens >= n_ctx:
        raise PromptTooLong(f"the prompt is {prompt_tokens} tokens, the context window {n_ctx}")
    return min(max_tokens, n_ctx - prompt_tokens)


@dataclass(frozen=True)
class Admission:
    """Where a new sequence goes: the slot it takes, the slot whose cache it copies its first
    `reuse` prompt tokens from (None: nothing reused), and `reuse` itself."""

    slot: int
    source: int | None
    reuse: int


def admit(prompt: Sequence[int], free: Sequence[int], cached: Mapping[int, Sequence[int]],
          last_used: Mapping[int, int], *, block: int | None, min_tail: int = 1) -> Admission | None:
    """Choose a slot for a new sequence with `prompt`, or None when no slot is free.

    `free` are the slots no running sequence holds; `cached` the tokens in the cache of each
    slot (running sequences and finished ones kept as prefix cache); `last_used` when each
    free slot last finished (bigger is later). The longest reusable prefix wins. When that
    prefix sits in a free slot, the sequence takes that very slot (no copy needed); otherwise
    it takes an empty slot, else the free slot whose cache is oldest, keeping the cache of
    recently finished sequences for later prompts.
    """
    if not free:
        return None
    best_slot, best = None, 0
    for slot in sorted(cached):
        n = reusable_prefix(prompt, cached[slot], block=block, min_tail=min_tail)
        if n > best or (n == best and n > 0 and slot in free and best_slot not in free):
            best_slot, best = slot, n
    if best_slot is not None and best_slot in free:
        return Admission(slot=best_slot, source=best_slot, reuse=best)
    empty = [slot for slot in free if not cached.get(slot)]
    slot = min(empty) if empty else min(free, key=lambda s: (last_used.get(s, 0), s))
    return Admission(slot=slot, source=best_slot, reuse=best)
