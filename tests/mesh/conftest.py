"""Fixtures for multi-host tests: throwaway LANs of network namespaces (see tests/netns.py)."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import netns
import pytest


@pytest.fixture
def netns_mesh() -> Iterator[Callable[[int], netns.NamespaceLan]]:
    """`netns_mesh(n)` -> a Mesh of n namespaces on one bridge, torn down after the test.

    Skips with a loud reason where namespaces cannot be made; fails instead when CI is set.
    """
    netns.require_netns()
    made: list[netns.NamespaceLan] = []

    def make(count: int) -> netns.NamespaceLan:
        mesh = netns.NamespaceLan.create(count)
        made.append(mesh)
        return mesh

    try:
        yield make
    finally:
        for mesh in made:
            mesh.close()
