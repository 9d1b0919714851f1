"""CpuShare: the cores split evenly among the runners generating at once, each runner told only
when its share changes, within its own limit."""

from __future__ import annotations

import pytest

from orc.node.models.runners.cpu_share import CpuShare, shares


class FakeRunner:
    def __init__(self, name: str, max_threads: int | None = None) -> None:
        self.name = name
        self.max_threads = max_threads
        self.told: list[int] = []

    def set_threads(self, threads: int) -> None:
        self.told.append(threads)


@pytest.mark.parametrize(("cores", "limits", "expected"), [
    (8, [], []),
    (8, [None], [8]),
    (8, [None, None], [4, 4]),
    (8, [None, None, None], [3, 3, 2]),  # the first ones take what does not divide
    (2, [None, None, None], [1, 1, 1]),  # never less than one thread
    (8, [2, None], [2, 4]),  # a runner set to fewer threads keeps its own setting
    (4, [16], [4]),  # and never more than the cores
    (1, [None], [1]),
])
def test_shares(cores: int, limits: list[int | None], expected: list[int]) -> None:
    assert shares(cores, limits) == expected


def test_each_runner_is_told_its_share_when_it_changes_and_only_then() -> None:
    share = CpuShare(cores=4)
    a, b, c = FakeRunner("a"), FakeRunner("b"), FakeRunner("c")
    share.busy(a)
    assert a.told == [4] and share.generating == 1
    share.busy(a)  # already busy: nothing changes
    share.busy(b)
    assert (a.told, b.told) == ([4, 2], [2])
    share.busy(c)
    assert (a.told, b.told, c.told) == ([4, 2], [2, 1], [1])  # 4 = 2 + 1 + 1: a keeps its 2
    share.idle(b)
    assert (a.told, b.told, c.told) == ([4, 2], [2, 1], [1, 2])
    share.idle(a)
    assert (a.told, c.told) == ([4, 2], [1, 2, 4])
    share.idle(a)  # not busy: nothing changes
    share.idle(c)
    assert share.generating == 0 and share.told(c) == 4
    share.busy(b)  # alone again, after it was told 1
    assert b.told == [2, 1, 4]


def test_an_idle_runner_is_not_told_anything() -> None:
    share = CpuShare(cores=2)
    a, b = FakeRunner("a"), FakeRunner("b")
    share.busy(a)
    share.idle(a)
    share.busy(b)
    assert a.told == [2] and b.told == [2]
    assert share.told(FakeRunner("never")) is None
