"""One real local Ray cluster for the module that asks for it (`ray_cluster`), stopped by pid."""

from __future__ import annotations

import shutil
from collections.abc import Iterator

import pytest
from ray_cluster import LocalCluster, require_ray, start_cluster


@pytest.fixture(scope="module")
def ray_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    require_ray()
    home = tmp_path_factory.mktemp("ray-home")
    cluster = start_cluster(home)
    try:
        yield cluster
    finally:
        cluster.stop()
        shutil.rmtree(cluster.temp, ignore_errors=True)
