"""What one llama.cpp instance of a GGUF model costs in memory, from the file's header.

    file size
    + n_ctx x layers x kv_heads x (key_length + value_length) x 2 B   (f16 K and V cache)
    + 32 MiB + 128 B x vocabulary size                               (working buffers)

Sliding-window layers are counted as full ones, so this errs high. The header is read once
per file (and again when the file changes); arrays are skipped, not read.
"""

from __future__ import annotations

import functools
from pathlib import Path

from orc.node.models.gguf import GgufArray, read_gguf_metadata

__all__ = ["WORKING_BYTES_FIXED", "instance_bytes"]

# llama.cpp keeps its K and V caches in f16 unless told otherwise.
_KV_BYTES_PER_VALUE = 2
# Compute buffers and logits rows beyond weights and KV cache: a fit to the resident memory
# measured after loading and generating with SmolLM2-135M (49k vocab) and Gemma-3-270M
# (262k vocab) at n_ctx 2048 on x86-64, within 2% for both.
WORKING_BYTES_FIXED = 32 << 20
_WORKING_BYTES_PER_VOCAB_ENTRY = 128


def instance_bytes(path: Path, n_ctx: int) -> int:
    """Bytes one instance of the GGUF at `path` needs with a context of `n_ctx` tokens.

    Raises `OSError` when the file cannot be read and `ValueError` when its header is not GGUF
    or lacks the attention shape.
    """
    stat = path.stat()
    metadata = _cached_metadata(path, stat.st_size, stat.st_mtime_ns)
    return (stat.st_size + _kv_cache_bytes(metadata, n_ctx) + WORKING_BYTES_FIXED
            + _WORKING_BYTES_PER_VOCAB_ENTRY * _vocab_size(metadata))


@functools.lru_cache(maxsize=64)
def _cached_metadata(path: Path, size: int, mtime_ns: int) -> dict[str, object]:
    # size and mtime_ns are part of the key so a replaced file is read again.
    return read_gguf_metadata(path)


def _kv_cache_bytes(metadata: dict[str, object], n_ctx: int) -> int:
    arch = metadata.get("general.architecture")
    layers = _positive(metadata.get(f"{arch}.block_count"))
    heads = _positive(metadata.get(f"{arch}.attention.head_count"))
    embedding = _positive(metadata.get(f"{arch}.embedding_length"))
    kv_heads = _positive(metadata.get(f"{arch}.attention.head_count_kv", heads))
    key_length = _positive(metadata.get(f"{arch}.attention.key_length", embedding // heads))
    value_length = _positive(metadata.get(f"{arch}.attention.value_length", embedding // heads))
    return n_ctx * layers * kv_heads * (key_length + value_length) * _KV_BYTES_PER_VALUE


def _positive(value: object) -> int:
    # The header is read from a user's file: a shape that is not a positive whole number is
    # a header this estimate cannot use, never a crash.
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError("the GGUF lacks the attention shape")
    return value


def _vocab_size(metadata: dict[str, object]) -> int:
    tokens = metadata.get("tokenizer.ggml.tokens")
    return tokens.count if isinstance(tokens, GgufArray) else 0
