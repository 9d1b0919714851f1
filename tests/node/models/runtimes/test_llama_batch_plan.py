"""The pure decisions of batched decoding: prefixes, slots, prompt chunks and budgets."""

from __future__ import annotations

import pytest

from orc.node.models.runtimes.llama_batch_plan import (
    Admission,
    PromptTooLong,
    admit,
    generation_budget,
    prompt_chunks,
    reusable_prefix,
    shared_prefix,
)


def test_shared_prefix_counts_leading_equal_tokens() -> None:
    assert shared_prefix([1, 2, 3, 4], [1, 2, 9, 4]) == 2
    assert shared_prefix([1, 2], [1, 2, 3]) == 2
    assert shared_prefix([], [1]) == 0


def test_reuse_always_leaves_the_last_tokens_to_compute() -> None:
    prompt = [1, 2, 3, 4, 5]
    assert reusable_prefix(prompt, prompt, block=None) == 4
    assert reusable_prefix(prompt, prompt, block=None, min_tail=2) == 3
    assert reusable_prefix(prompt, [1, 2, 3, 4, 5, 6, 7], block=None) == 4
    assert reusable_prefix([1], [1], block=None) == 0


def test_reuse_rounds_down_to_a_block_when_splits_change_results() -> None:
    prompt = list(range(20))
    assert reusable_prefix(prompt, prompt[:13], block=8) == 8
    assert reusable_prefix(prompt, prompt[:7], block=8) == 0


def test_prompt_chunks_cut_at_fixed_positions() -> None:
    assert prompt_chunks(0, 10, 4) == [(0, 4), (4, 8), (8, 10)]
    # A reused prefix of 5: the rest is cut where it would be without reuse.
    assert prompt_chunks(5, 10, 4) == [(5, 8), (8, 10)]
    assert prompt_chunks(3, 3, 4) == []
    with pytest.raises(ValueError):
        prompt_chunks(0, 3, 0)


def test_generation_budget_fits_the_window() -> None:
    assert generation_budget(10, 64, 2048) == 64
    assert generation_budget(2000, 64, 2048) == 48
    with pytest.raises(PromptTooLong):
        generation_budget(2048, 64, 2048)


def test_admit_takes_the_free_slot_that_holds_the_longest_prefix() -> None:
    prompt = [1, 2, 3, 4, 5, 6]
    cached = {0: [9, 9], 1: [1, 2, 3, 4, 7], 2: [1, 2]}
    assert admit(prompt, [0, 1, 2, 3], cached, {}, block=None) == Admission(slot=1, source=1, reuse=4)


def test_admit_copies_from_a_running_sequence_into_an_empty_slot() -> None:
    prompt = [1, 2, 3, 4, 5, 6]
    cached = {0: [1, 2, 3, 4, 5, 6, 8], 1: [7], 2: []}
    assert admit(prompt, [1, 2], cached, {}, block=None) == Admission(slot=2, source=0, reuse=5)


def test_admit_evicts_the_oldest_cache_when_no_slot_is_empty() -> None:
    cached = {0: [5], 1: [6], 2: [7]}
    assert admit([1, 2, 3], [0, 1, 2], cached, {0: 3, 1: 1, 2: 2}, block=None) == Admission(slot=1, source=None, reuse=0)


def test_admit_waits_when_every_slot_runs() -> None:
    assert admit([1, 2], [], {0: [1, 2, 3]}, {}, block=None) is None
