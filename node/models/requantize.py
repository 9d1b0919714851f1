"""Another quantization of a GGUF model, made by llama.cpp's own quantizer.

`orc models convert ID --to q8_0` (or `q4_0`) writes `<models_dir>/gguf/NEW_ID.gguf` from the
model's GGUF and registers it as a model of its own (`ID-q8_0` unless `--id` says otherwise):
two files of one runtime cannot be variants of one id, and the texts they write differ.

Why a user would: how fast a small model decodes on a CPU depends on its quantization's
kernels more than on its size. On an x86 CPU without AMX, SmolLM2's Q4_1 kernels redo the
dot product for every row and llama.cpp repacks none of its weights; requantized to Q8_0 it
keeps its quality (perplexity 1.01x) and decodes faster, and to Q4_0, whose weights llama.cpp
repacks for AVX2 and arm64, much faster at a cost in quality (docs/benchmarks.md, "Batching and
quality by quantization"; docs/runtimes.md says when to pick which).

Requantizing starts from already rounded weights, so the result carries both roundings; the
quantizer is told so (`allow_requantize`). The file is written beside its final name and
renamed into place only when whole: a failure (a full disk, an unreadable source) leaves no
partial model behind. `llama_cpp` is imported only here, on use.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
from pathlib import Path

from orc.node.models.errors import CatalogError

__all__ = ["GGUF_FOLDER", "TARGETS", "RequantizeFailed", "is_requantized_to", "requantize_gguf"]

GGUF_FOLDER = "gguf"  # requantized variants live in <models_dir>/gguf/<id>.gguf
# `--to` value: (llama.cpp's file type constant, how docs and messages name it).
TARGETS: dict[str, tuple[str, str]] = {
    "q8_0": ("LLAMA_FTYPE_MOSTLY_Q8_0", "Q8_0"),
    "q4_0": ("LLAMA_FTYPE_MOSTLY_Q4_0", "Q4_0"),
}
# The same types as a GGUF header's `general.file_type` states them (llama.cpp's enum llama_ftype).
_FILE_TYPES = {"q8_0": 7, "q4_0": 2}


class RequantizeFailed(CatalogError):
    """llama.cpp's quantizer could not write the new file (its reason is in `orc --debug`'s log)."""


def is_requantized_to(path: Path, to: str) -> bool:
    """Whether the GGUF at `path` says in its header that it is of type `to` (a key of TARGETS)."""
    from orc.node.models.gguf import read_gguf_metadata

    try:
        return read_gguf_metadata(path).get("general.file_type") == _FILE_TYPES[to]
    except (OSError, ValueError):
        return False


def requantize_gguf(source: Path, target: Path, to: str, *, threads: int | None = None) -> None:
    """Write `source` requantized to `to` (a key of TARGETS) at `target`, atomically.

    Raises `RequantizeFailed` when the quantizer fails or the file cannot be written.
    """
    import llama_cpp

    from orc.node.models.runtimes import llama_log

    constant, name = TARGETS[to]
    llama_log.route_llama_logs(llama_cpp)
    partial = target.with_name(f".{target.name}.{os.getpid()}.partial")
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = getattr(llama_cpp, constant)
    params.allow_requantize = True
    params.nthread = threads or os.cpu_count() or 1
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        code = llama_cpp.llama_model_quantize(str(source).encode(), str(partial).encode(), ctypes.byref(params))
        if code != 0 or not partial.is_file():
            raise RequantizeFailed(f"llama.cpp could not requantize {source.name} to {name} (code {code}); "
                                   "run again with --debug for its log, and check the free space in "
                                   f"{target.parent}")
        with partial.open("rb") as written:
            os.fsync(written.fileno())
        os.replace(partial, target)
    except OSError as exc:
        raise RequantizeFailed(f"cannot write {target}: {exc.strerror or exc}") from None
    finally:
        with contextlib.suppress(FileNotFoundError):
            partial.unlink()
