"""What the catalog lists: model ids, the entry of one model variant, and the runtime a plain
id prefers on this machine.

A model id names a logical model; each `ModelEntry` is one *variant* of it, served by one
runtime: a GGUF file for `llama_cpp`, an mlx-lm model folder for `mlx`. An id has at most one
variant per runtime; `ID@RUNTIME` pins one (`orc.scheduler.model_refs`, docs/runtimes.md).
"""

from __future__ import annotations

import importlib.util
import platform
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import NewType

__all__ = [
    "DEFAULT_MODEL_ID",
    "GEMMA_MODEL_ID",
    "MODEL_ID_PATTERN",
    "ModelEntry",
    "ModelId",
    "default_runtime_preference",
    "slug_model_id",
]

ModelId = NewType("ModelId", str)

DEFAULT_MODEL_ID = "smollm2-135m-instruct"
GEMMA_MODEL_ID = "gemma3-270m"

# What a model id may be: it is typed on command lines, written into ensembles and sent to peers.
MODEL_ID_PATTERN = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")


@dataclass(frozen=True)
class ModelEntry:
    """One servable model: its id, the runtime that runs it and its weights file.

    `sha256` is the digest of the file at `path`; for an embedded model whose file has not been
    materialized yet (`gemma3-270m` before first use) it is the digest the file will have, since
    it is only ever written after verifying exactly that digest. `chat` is False for base
    models, which have no chat template to follow.

    An entry is one variant of the model `id`: `runtime` is "llama_cpp" (`path` is a GGUF
    file) or "mlx" (`path` is an mlx-lm folder, `size_bytes` and `sha256` cover its weight
    files). `converted_from` is the SHA-256 of the GGUF an MLX variant was converted from.
    """

    id: ModelId
    runtime: str
    path: Path
    size_bytes: int
    sha256: str
    source: str
    description: str = ""
    chat: bool = True
    converted_from: str | None = None

    @property
    def selector(self) -> str:
        """`id@runtime`: the reference that pins this variant."""
        return f"{self.id}@{self.runtime}"


def slug_model_id(file_name: str) -> str:
    """The default id for a model file: its name without `.gguf`, lowercased, runs of other
    characters than `[a-z0-9._-]` turned into "-", cut to 64 characters. Underscores stay: a
    quantization such as `Q4_K_M` keeps the name people search for."""
    stem = file_name[: -len(".gguf")] if file_name.lower().endswith(".gguf") else file_name
    slug = re.sub(r"[^a-z0-9._-]+", "-", stem.lower())
    slug = slug.lstrip("._-")[:64].rstrip("._-")
    return slug


def default_runtime_preference() -> tuple[str, ...]:
    """The order in which this machine prefers runtimes for a plain model id: mlx first on
    Apple silicon with mlx-lm installed (Metal), llama_cpp first everywhere else (on a CPU,
    llama.cpp is many times faster than MLX)."""
    apple_silicon = sys.platform == "darwin" and platform.machine() == "arm64"
    if apple_silicon and importlib.util.find_spec("mlx_lm") is not None:
        return ("mlx", "llama_cpp")
    return ("llama_cpp", "mlx")
