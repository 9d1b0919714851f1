"""The MLX variant of the embedded SmolLM2, converted once per test session.

tests/node/models/conftest.py builds its fixtures on these helpers, so the conversion
(a second or two) is shared by all of them.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest

from orc.node.models.catalog import DEFAULT_MODEL_ID, Catalog

HAS_MLX = all(importlib.util.find_spec(name) is not None for name in ("mlx", "mlx_lm"))
_converted: list[Catalog] = []  # the session's one converted catalog, once made


def require_mlx() -> None:
    """Skip without MLX, except in CI, where the test extra installs it and missing is a bug."""
    if HAS_MLX:
        return
    if os.environ.get("CI"):
        pytest.fail("mlx and mlx-lm are not installed (the test extra installs mlx[cpu] and mlx-lm)")
    pytest.skip("mlx and mlx-lm are not installed (pip install -e '.[test]' or '.[mlx]')")


def converted_catalog(tmp_path_factory: pytest.TempPathFactory) -> Catalog:
    """A catalog whose SmolLM2 has both variants: the embedded GGUF and its MLX conversion."""
    require_mlx()
    if not _converted:
        catalog = Catalog(tmp_path_factory.mktemp("mlx-home") / "models")
        catalog.convert(DEFAULT_MODEL_ID, to="mlx")
        _converted.append(catalog)
    return _converted[0]


def copy_folder(source: Path, target: Path) -> Path:
    """A copy of a model folder, for tests that change or break it."""
    target.mkdir()
    for item in source.iterdir():
        (target / item.name).write_bytes(item.read_bytes())
    return target
