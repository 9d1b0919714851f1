"""mlx-lm model folders: which files are the weights, and whether a folder is one orc can list.

An MLX variant is a folder with `config.json` (naming a `model_type`), weights in
`model*.safetensors` and a tokenizer. The checks here read headers only, never the weights,
so `orc models add` on a broken copy fails in a moment with the reason.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

from orc.node.models.errors import ModelFileInvalid

__all__ = ["MLX_WEIGHTS_GLOB", "check_mlx_folder", "mlx_has_chat_template", "mlx_weight_files", "read_safetensors_header"]

# The weight files of an mlx-lm folder: what mlx-lm loads, and what an MLX variant's digest covers.
MLX_WEIGHTS_GLOB = "model*.safetensors"
# A safetensors header is JSON read from a user's file: this cap stops a crafted length from
# making `add` read gigabytes.
_SAFETENSORS_MAX_HEADER = 100 << 20


def mlx_weight_files(folder: Path) -> list[Path]:
    """The weight files of an mlx-lm folder, sorted by name (the order of its digest)."""
    return sorted((p for p in folder.glob(MLX_WEIGHTS_GLOB) if p.is_file()), key=lambda p: p.name)


def check_mlx_folder(path: Path) -> None:
    """Check that `path` is an mlx-lm model folder orc can list; raises `ModelFileInvalid`
    saying what is missing or broken."""
    config_file = path / "config.json"
    try:
        config = json.loads(config_file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ModelFileInvalid(
            f"{path} is a folder, but neither a GGUF model file nor an MLX model folder (it has no config.json)"
        ) from None
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise ModelFileInvalid(f"{config_file} cannot be read as JSON, so {path} is not a usable MLX model folder: {exc}") from None
    if not isinstance(config, dict) or not isinstance(config.get("model_type"), str):
        raise ModelFileInvalid(f"{config_file} names no model_type: {path} is not an MLX (mlx-lm) model folder")
    weights = mlx_weight_files(path)
    if not weights:
        raise ModelFileInvalid(f"the MLX model folder {path} has no weights ({MLX_WEIGHTS_GLOB})")
    for weights_file in weights:
        _check_safetensors(weights_file)
    if not any((path / name).is_file() for name in ("tokenizer.json", "tokenizer.model")):
        raise ModelFileInvalid(f"the MLX model folder {path} has no tokenizer (tokenizer.json or tokenizer.model)")


def mlx_has_chat_template(path: Path) -> bool:
    """Whether an mlx-lm folder carries a chat template (in tokenizer_config.json or beside it)."""
    if (path / "chat_template.jinja").is_file() or (path / "chat_template.json").is_file():
        return True
    tokenizer_config = path / "tokenizer_config.json"
    try:
        settings = json.loads(tokenizer_config.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return False
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise ModelFileInvalid(f"{tokenizer_config} cannot be read as JSON: {exc}") from None
    return isinstance(settings, dict) and bool(settings.get("chat_template"))


def read_safetensors_header(path: Path) -> dict[str, Any]:
    """The JSON header of a safetensors file (tensor name -> dtype, shape, data_offsets), read
    without the weights. Raises `ValueError` for a file without a usable header, `OSError`
    when it cannot be read."""
    return _read_header(path)[1]


def _read_header(path: Path) -> tuple[int, dict[str, Any]]:
    """The header's length in bytes, and the header."""
    with path.open("rb") as f:
        head = f.read(8)
        if len(head) != 8:
            raise ValueError("no safetensors header")
        (length,) = struct.unpack("<Q", head)
        if length > _SAFETENSORS_MAX_HEADER:
            raise ValueError(f"implausible safetensors header length {length}")
        header = json.loads(f.read(length))
    if not isinstance(header, dict):
        raise ValueError("the safetensors header is not a JSON object")
    return length, header


def _check_safetensors(path: Path) -> None:
    """A safetensors file whose header parses and whose tensors all lie inside the file: this
    catches the truncated copy, the commonest broken folder, without reading the weights."""
    try:
        length, header = _read_header(path)
        size = path.stat().st_size
    except (OSError, ValueError, UnicodeDecodeError) as exc:
        raise ModelFileInvalid(f"{path} is not a readable safetensors weights file ({exc})") from None
    ends = [
        tensor["data_offsets"][1]
        for name, tensor in header.items()
        if name != "__metadata__" and isinstance(tensor, dict) and isinstance(tensor.get("data_offsets"), list)
    ]
    if 8 + length + max(ends, default=0) > size:
        raise ModelFileInvalid(f"{path} is truncated: its header describes more data than the file holds")
