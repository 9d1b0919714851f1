"""Fixtures of the RPC tests: two unrelated mesh CAs, made with orc.node.trust."""

from __future__ import annotations

import pytest
from rpc_helpers import NOW

from orc.node.trust.certificates import MeshAuthority


@pytest.fixture(scope="session")
def mesh() -> MeshAuthority:
    return MeshAuthority.create("test-ca", NOW)


@pytest.fixture(scope="session")
def other_mesh() -> MeshAuthority:
    return MeshAuthority.create("stranger-ca", NOW)
