"""When a crashing model stops being offered, and when it comes back (pure: times passed in)."""

from __future__ import annotations

from orc.node.models.runners.crashes import COOL_DOWN_S, CRASH_WINDOW_S, MAX_CRASHES, CrashRecord


def test_a_first_crash_switches_to_safe_settings_but_keeps_the_model() -> None:
    record = CrashRecord()
    assert not record.safe
    record = record.crashed(100.0, "SIGSEGV")
    assert record.safe and record.unavailable_reason(100.0) is None


def test_three_crashes_within_the_window_make_the_model_unavailable_with_the_reason() -> None:
    record = CrashRecord()
    for at in (0.0, 60.0, 120.0):
        record = record.crashed(at, "SIGSEGV")
    assert MAX_CRASHES == 3
    assert record.unavailable_reason(121.0) == "its runner crashed 3 times in 10 minutes (last: SIGSEGV)"
    assert record.unavailable_reason(120.0 + COOL_DOWN_S - 1) is not None
    assert record.unavailable_reason(120.0 + COOL_DOWN_S) is None  # cooled down
    assert record.safe  # still safe settings for as long as the node runs


def test_crashes_spread_wider_than_the_window_never_trip() -> None:
    record = CrashRecord()
    for n in range(10):
        record = record.crashed(n * (CRASH_WINDOW_S / 2 + 1), "exit status 1")
        assert record.unavailable_reason(n * (CRASH_WINDOW_S / 2 + 1)) is None


def test_after_the_cool_down_it_takes_three_new_crashes_to_trip_again() -> None:
    record = CrashRecord()
    for at in (0.0, 1.0, 2.0):
        record = record.crashed(at, "SIGKILL")
    later = 2.0 + COOL_DOWN_S
    record = record.crashed(later, "SIGSEGV").crashed(later + 1, "SIGSEGV")
    assert record.unavailable_reason(later + 2) is None
    record = record.crashed(later + 2, "SIGBUS")
    assert record.unavailable_reason(later + 3) == "its runner crashed 3 times in 10 minutes (last: SIGBUS)"
