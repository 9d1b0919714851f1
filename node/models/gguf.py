"""GGUF headers: the metadata of a llama.cpp model file, read without loading the model.

The catalog reads it to tell a chat model from a base model, the llama.cpp runtime to estimate
a model's memory, the MLX converter to check what it can convert.

Why a reader of our own rather than ggml's `gguf` package (`gguf.GGUFReader`), which reads the
same values (tests/benchmarks/gguf_reader.py checks every key on the embedded models):

* speed: `GGUFReader` builds a numpy view of every item of every array (a 49k-token vocabulary
  is three arrays of 49k items) and of every tensor's description, where this reader skips
  arrays by their length and stops before the tensors. On the embedded models it took 60 to
  over 100 times as long (docs/benchmarks.md, "GGUF metadata"): seconds for
  `orc models add` and for a daemon's first memory estimate, instead of a fraction of one.
* safety: a GGUF may be any file in a user's folder, and its header is read before llama.cpp
  ever sees it. `GGUFReader` follows every count and length the header states; this reader
  caps them (below), so a crafted header cannot make it allocate gigabytes or loop for minutes.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

__all__ = ["GGUF_MAGIC", "GgufArray", "is_gguf", "read_gguf_metadata"]

GGUF_MAGIC = b"GGUF"

_SCALARS: dict[int, str] = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}
_STRING = 8
_ARRAY = 9
# A GGUF header is hostile input like any file a user points at: these caps stop a crafted
# header from making the reader allocate gigabytes or loop for minutes. Real headers are far
# below them: a few dozen keys, chat templates of kilobytes, vocabularies of 262k entries.
_MAX_KV = 1 << 16
_MAX_STRING = 16 << 20
_MAX_ARRAY = 1 << 24


@dataclass(frozen=True)
class GgufArray:
    """An array value in GGUF metadata, skipped rather than read: its item type and length."""

    item_type: int
    count: int


def is_gguf(path: Path) -> bool:
    """Whether the file at `path` starts with the GGUF magic; raises `OSError` if unreadable."""
    with path.open("rb") as f:
        return f.read(4) == GGUF_MAGIC


def read_gguf_metadata(path: Path) -> dict[str, object]:
    """The key/value metadata of a GGUF file (version 2 or 3), without loading the model.

    Scalars and strings are returned as Python values; arrays (the tokenizer's vocabulary and
    the like) as `GgufArray`. Raises `ValueError` for a file that is not GGUF, is truncated or
    states a count or length past the caps, `OSError` when it cannot be read.
    """
    with path.open("rb") as f:
        if f.read(4) != GGUF_MAGIC:
            raise ValueError(f"{path} is not a GGUF file")
        (version,) = _unpack(f, "<I")
        if version not in (2, 3):
            raise ValueError(f"{path}: unsupported GGUF version {version}")
        _tensor_count, kv_count = _unpack(f, "<QQ")
        if kv_count > _MAX_KV:
            raise ValueError(f"{path}: implausible metadata count {kv_count}")
        metadata: dict[str, object] = {}
        for _ in range(kv_count):
            key = _read_string(f)
            (value_type,) = _unpack(f, "<I")
            metadata[key] = _read_value(f, value_type)
        return metadata


def _unpack(f: BinaryIO, fmt: str) -> tuple[Any, ...]:
    size = struct.calcsize(fmt)
    data = f.read(size)
    if len(data) != size:
        raise ValueError("truncated GGUF header")
    return struct.unpack(fmt, data)


def _read_string(f: BinaryIO) -> str:
    (length,) = _unpack(f, "<Q")
    if length > _MAX_STRING:
        raise ValueError(f"implausible GGUF string length {length}")
    data = f.read(length)
    if len(data) != length:
        raise ValueError("truncated GGUF header")
    return data.decode("utf-8", errors="replace")


def _read_value(f: BinaryIO, value_type: int) -> object:
    if value_type in _SCALARS:
        return _unpack(f, _SCALARS[value_type])[0]
    if value_type == _STRING:
        return _read_string(f)
    if value_type == _ARRAY:
        item_type, count = _unpack(f, "<IQ")
        if count > _MAX_ARRAY:
            raise ValueError(f"implausible GGUF array length {count}")
        if item_type in _SCALARS:
            f.seek(count * struct.calcsize(_SCALARS[item_type]), os.SEEK_CUR)
        elif item_type == _STRING:
            for _ in range(count):
                (length,) = _unpack(f, "<Q")
                f.seek(length, os.SEEK_CUR)
        else:
            # Nested arrays exist in the spec but in no model header worth reading.
            raise ValueError(f"unsupported GGUF array item type {item_type}")
        return GgufArray(item_type=item_type, count=count)
    raise ValueError(f"unknown GGUF value type {value_type}")
