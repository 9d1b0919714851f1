"""Sampled log lines: the first event per source a window, then one count, with a fake clock."""

from __future__ import annotations

import pytest

from orc.node.rpc.log_sampling import OTHER_SOURCES, SampledLog, Summary


def test_the_first_event_of_a_window_is_logged_and_the_rest_counted() -> None:
    sampled = SampledLog(window_s=60.0)
    assert sampled.event("node-a", 0.0) is True
    assert [sampled.event("node-a", t / 10) for t in range(1, 600)] == [False] * 599
    assert sampled.event("node-b", 1.0) is True  # each source has its own window
    assert sampled.due(59.9) == ()
    assert sampled.next_due() == 60.0
    assert sampled.due(60.0) == (Summary("node-a", 599, 0.0),)  # node-b counted nothing more
    assert sampled.due(120.0) == ()
    assert sampled.next_due() is None


def test_a_new_window_logs_again_and_reports_the_old_one() -> None:
    sampled = SampledLog(window_s=60.0)
    sampled.event("node-a", 0.0)
    sampled.event("node-a", 1.0)
    sampled.event("node-a", 2.0)
    assert sampled.event("node-a", 61.0) is True  # before any due(): the old window ends here
    assert sampled.due(61.0) == (Summary("node-a", 2, 0.0),)
    assert sampled.event("node-a", 62.0) is False


def test_the_table_is_capped_and_counts_what_it_forgets() -> None:
    sampled = SampledLog(window_s=60.0, max_sources=3)
    for source in ("a", "b", "c"):
        sampled.event(source, 0.0)
        sampled.event(source, 0.5)
    assert sampled.event("d", 1.0) is True
    assert len(sampled) == 3 and sampled.dropped == 1  # "a" and its one unlogged event are gone
    summaries = sampled.due(61.0)
    assert Summary(OTHER_SOURCES, 1, 1.0) in summaries
    assert {s.source for s in summaries} == {"b", "c", OTHER_SOURCES}
    for index in range(10_000):  # a flood of sources never grows the table
        sampled.event(f"10.0.{index // 256}.{index % 256}", 100.0)
    assert len(sampled) == 3


def test_nonsense_settings_are_refused() -> None:
    with pytest.raises(ValueError):
        SampledLog(window_s=0)
    with pytest.raises(ValueError):
        SampledLog(max_sources=0)
