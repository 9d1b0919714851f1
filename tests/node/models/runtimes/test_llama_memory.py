"""The memory one llama.cpp instance needs, from a GGUF header, including headers that lie."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from orc.node.models.entry import ModelEntry, ModelId
from orc.node.models.runtimes.llama_cpp import LlamaCppRuntime
from orc.node.models.runtimes.llama_memory import WORKING_BYTES_FIXED, instance_bytes

STRING, UINT32 = 8, 4


def text(value: str) -> bytes:
    data = value.encode()
    return struct.pack("<Q", len(data)) + data


def gguf(path: Path, **numbers: object) -> Path:
    """A header-only GGUF of architecture "tiny" with the given `tiny.*` values."""
    pairs = [text("general.architecture") + struct.pack("<I", STRING) + text("tiny")]
    for key, value in numbers.items():
        name = "tiny." + key.replace("__", ".")
        if isinstance(value, str):
            pairs.append(text(name) + struct.pack("<I", STRING) + text(value))
        else:
            pairs.append(text(name) + struct.pack("<II", UINT32, value))
    path.write_bytes(b"GGUF" + struct.pack("<IQQ", 3, 0, len(pairs)) + b"".join(pairs))
    return path


def test_the_kv_cache_follows_the_header(tmp_path: Path) -> None:
    path = gguf(tmp_path / "tiny.gguf", block_count=2, attention__head_count=4, embedding_length=64,
                attention__head_count_kv=2)
    size = path.stat().st_size
    # 2 layers x 2 kv heads x (16 + 16) x 2 bytes per context token
    assert instance_bytes(path, 100) == size + 100 * 2 * 2 * 32 * 2 + WORKING_BYTES_FIXED


@pytest.mark.parametrize("shape", [
    {"block_count": 2, "attention__head_count": "four", "embedding_length": 64},
    {"block_count": 2, "attention__head_count": 4, "embedding_length": 64, "attention__head_count_kv": "two"},
    {"block_count": 0, "attention__head_count": 4, "embedding_length": 64},
    {"attention__head_count": 4, "embedding_length": 64},
])
def test_a_header_whose_shape_is_missing_or_not_numbers_falls_back_to_the_file_size(
        tmp_path: Path, shape: dict[str, object]) -> None:
    path = gguf(tmp_path / "liar.gguf", **shape)
    with pytest.raises(ValueError, match="attention shape"):
        instance_bytes(path, 100)
    entry = ModelEntry(ModelId("liar"), "llama_cpp", path, 1000, "0" * 64, "user")
    assert LlamaCppRuntime(n_ctx=100).memory_estimate(entry) == 1000 * 5 // 4 + WORKING_BYTES_FIXED
