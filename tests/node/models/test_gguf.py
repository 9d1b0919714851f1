"""GGUF headers: what the reader reads from the embedded models, and what a crafted header cannot
make it do. The known values below are what ggml's own reader (`gguf.GGUFReader`) reads from the
same files; tests/benchmarks/gguf_reader.py compares the two readers key by key."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from orc.node.models.entry import ModelEntry
from orc.node.models.gguf import GgufArray, is_gguf, read_gguf_metadata

STRING, ARRAY, UINT32 = 8, 9, 4


def test_smollm2_reads_as_ggml_reads_it(smollm2: ModelEntry) -> None:
    metadata = read_gguf_metadata(smollm2.path)
    assert len(metadata) == 33
    assert metadata["general.architecture"] == "llama"
    assert metadata["llama.block_count"] == 30
    assert metadata["llama.context_length"] == 8192
    assert metadata["llama.embedding_length"] == 576
    assert (metadata["llama.attention.head_count"], metadata["llama.attention.head_count_kv"]) == (9, 3)
    assert metadata["llama.rope.freq_base"] == 100000.0
    assert metadata["tokenizer.ggml.add_bos_token"] is False
    assert metadata["tokenizer.ggml.pre"] == "smollm"
    assert metadata["tokenizer.ggml.tokens"] == GgufArray(item_type=STRING, count=49152)
    assert metadata["tokenizer.ggml.merges"] == GgufArray(item_type=STRING, count=48900)
    template = metadata["tokenizer.chat_template"]
    assert isinstance(template, str) and len(template) == 368 and "<|im_start|>" in template


def test_gemma_reads_as_ggml_reads_it(gemma: ModelEntry) -> None:
    metadata = read_gguf_metadata(gemma.path)
    assert len(metadata) == 33
    assert metadata["general.architecture"] == "gemma3"
    assert metadata["gemma3.block_count"] == 18
    assert metadata["gemma3.attention.key_length"] == metadata["gemma3.attention.value_length"] == 256
    assert metadata["gemma3.attention.head_count_kv"] == 1
    assert metadata["gemma3.attention.sliding_window"] == 512
    assert metadata["general.file_type"] == 15  # Q4_K_M
    assert metadata["tokenizer.ggml.tokens"] == GgufArray(item_type=STRING, count=262144)
    assert metadata["tokenizer.ggml.scores"] == GgufArray(item_type=6, count=262144)
    assert "tokenizer.chat_template" not in metadata  # a base model


def header(*pairs: bytes, kv_count: int | None = None) -> bytes:
    count = len(pairs) if kv_count is None else kv_count
    return b"GGUF" + struct.pack("<IQQ", 3, 0, count) + b"".join(pairs)


def text(value: str) -> bytes:
    data = value.encode()
    return struct.pack("<Q", len(data)) + data


def test_a_small_header_of_each_kind_of_value(tmp_path: Path) -> None:
    path = tmp_path / "small.gguf"
    path.write_bytes(header(
        text("name") + struct.pack("<I", STRING) + text("tiny"),
        text("layers") + struct.pack("<II", UINT32, 4),
        text("ids") + struct.pack("<IIQ", ARRAY, UINT32, 3) + struct.pack("<3I", 1, 2, 3),
        text("words") + struct.pack("<IIQ", ARRAY, STRING, 2) + text("a") + text("bc"),
    ))
    assert is_gguf(path)
    assert read_gguf_metadata(path) == {
        "name": "tiny", "layers": 4, "ids": GgufArray(UINT32, 3), "words": GgufArray(STRING, 2)}


@pytest.mark.parametrize(("content", "words"), [
    (b"GGUF" + b"\xff" * 64, "version"),
    (b"NOPE" + b"\0" * 64, "not a GGUF"),
    (header(kv_count=1 << 40), "implausible metadata count"),
    # A string as long as the file system allows would be read into memory whole.
    (header(struct.pack("<Q", 1 << 40)), "implausible GGUF string length"),
    # Without a cap, a huge count of empty strings is a loop of one turn per 8 bytes of the
    # file: minutes over a model-sized file of zeros.
    (header(text("k") + struct.pack("<IIQ", ARRAY, STRING, 1 << 60)), "implausible GGUF array length"),
    (header(text("k") + struct.pack("<IIQ", ARRAY, STRING, 1000) + text("a")), "truncated"),
    (header(text("k") + struct.pack("<I", 99)), "unknown GGUF value type"),
])
def test_a_crafted_or_broken_header_is_one_value_error(tmp_path: Path, content: bytes, words: str) -> None:
    path = tmp_path / "crafted.gguf"
    path.write_bytes(content)
    with pytest.raises(ValueError, match=words):
        read_gguf_metadata(path)


def test_a_file_that_is_not_gguf(tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_text("hello")
    assert not is_gguf(path)
    with pytest.raises(ValueError):
        read_gguf_metadata(path)
