"""GGUF to MLX: turn a llama-architecture GGUF of the catalog into an mlx-lm model folder.

MLX reads GGUF tensors itself: `mlx.core.load` returns Q4_0, Q4_1 and Q8_0 tensors already in
MLX's affine quantized layout (`weight`, `scales`, `biases`, groups of 32), which is exactly
what mlx-lm's quantized layers hold, so no weight is re-quantized and nothing is lost. What
this module adds:

* **names**: llama.cpp's `blk.N.attn_q` and friends become mlx-lm's
  `model.layers.N.self_attn.q_proj` (see `_LAYER_NAMES`);
* **rotary layout**: llama.cpp's converter permutes the rows of Q and K so that its rotary
  embedding can rotate adjacent pairs; mlx-lm's llama rotates the two halves of each head, as
  the original checkpoints do. `_unpermute_rows` undoes the permutation on the packed weight,
  scales and biases alike (it only moves whole rows);
* **config.json** from the GGUF metadata, with the quantization of every module;
* **the tokenizer**: a Hugging Face fast tokenizer (`tokenizer.json`) rebuilt from the GGUF's
  vocabulary, merges and pre-tokenizer, plus `tokenizer_config.json` with its special tokens
  and chat template;
* **provenance**: `orc-conversion.json` names the GGUF (and its SHA-256) the folder came from.

The same GGUF converted twice, on any machine, gives byte-identical weight files, so the
MLX variant's digest is the same on every node that converted the same GGUF.

Only llama-architecture GGUFs without rope scaling whose tokenizer is a GPT-2 style BPE with
the `smollm` or `gpt-2` pre-tokenizer convert (the SmolLM and SmolLM2 family); anything else
is refused up front with a `ConversionUnsupported` naming what is not supported. `mlx` and `tokenizers` are imported
only when a conversion runs.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from orc.node.models.errors import CatalogError
from orc.node.models.gguf import read_gguf_metadata

__all__ = [
    "CONVERTER",
    "PROVENANCE_FILE",
    "ConversionUnsupported",
    "MlxNotInstalled",
    "Provenance",
    "check_convertible",
    "convert_gguf_to_mlx",
    "read_provenance",
]

CONVERTER = "orc-gguf-to-mlx/1"
PROVENANCE_FILE = "orc-conversion.json"
WEIGHTS_FILE = "model.safetensors"

# GGUF blocks of Q4_0, Q4_1 and Q8_0 hold 32 weights; MLX keeps them as groups of that size.
_GGUF_GROUP_SIZE = 32

# llama.cpp tensor names inside a block -> mlx-lm's llama module paths.
_LAYER_NAMES: Mapping[str, str] = {
    "attn_q": "self_attn.q_proj",
    "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj",
    "ffn_gate": "mlp.gate_proj",
    "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
    "attn_norm": "input_layernorm",
    "ffn_norm": "post_attention_layernorm",
}
_TOP_NAMES: Mapping[str, str] = {
    "token_embd": "model.embed_tokens",
    "output_norm": "model.norm",
    "output": "lm_head",
}
# What a tensor name ends in: a plain tensor, a real bias, or MLX's quantization parts.
_SUFFIXES = ("weight", "bias", "scales", "biases")

# Pre-tokenizers orc can rebuild, by the GGUF's `tokenizer.ggml.pre`: whether digits are split
# one by one before the GPT-2 byte-level split (what llama.cpp's "smollm" pre-tokenizer does).
_PRE_TOKENIZERS: Mapping[str, bool] = {"smollm": True, "gpt-2": False, "gpt2": False}

# GGUF token types (llama.cpp's llama_token_type).
_TOKEN_CONTROL = 3
_TOKEN_USER_DEFINED = 4
# A control token that ends a document; generation ends there as at the end-of-sequence token.
_END_OF_TEXT = "<|endoftext|>"


class ConversionUnsupported(CatalogError):
    """That model cannot be converted to MLX: only llama-architecture GGUFs with Q4_0, Q4_1,
    Q8_0, F16 or F32 tensors and a GPT-2 style BPE tokenizer can (SmolLM2, for one)."""


class MlxNotInstalled(CatalogError):
    """The MLX runtime is not installed. Install it with `pip install 'orc-mesh[mlx]'` (on
    Apple silicon it comes with orc; on Linux `mlx[cpu]` runs it on the CPU)."""


@dataclass(frozen=True)
class Provenance:
    """Where a converted folder came from, as recorded in its `orc-conversion.json`."""

    converter: str
    source_file: str
    source_sha256: str


def read_provenance(folder: Path) -> Provenance | None:
    """The folder's conversion record, or None when it was not made by orc (or is unreadable)."""
    try:
        data = json.loads((folder / PROVENANCE_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict):
        return None
    fields = (data.get("converter"), data.get("source_file"), data.get("source_sha256"))
    if not all(isinstance(value, str) for value in fields):
        return None
    converter, source_file, source_sha256 = fields
    return Provenance(str(converter), str(source_file), str(source_sha256))


def check_convertible(metadata: Mapping[str, object], model_id: str) -> None:
    """Raise `ConversionUnsupported` unless GGUF `metadata` describes a model this converter
    handles; needs only the header (`read_gguf_metadata`), not MLX."""
    arch = metadata.get("general.architecture")
    if arch != "llama":
        raise ConversionUnsupported(
            f"cannot convert {model_id!r} to MLX: it is a {arch} model, and only llama-architecture "
            "GGUFs (such as smollm2-135m-instruct) can be converted; gemma and other architectures "
            "are not supported"
        )
    tokenizer = metadata.get("tokenizer.ggml.model")
    if tokenizer != "gpt2":
        raise ConversionUnsupported(
            f"cannot convert {model_id!r} to MLX: its tokenizer is {tokenizer!r}, and only GPT-2 "
            "style BPE tokenizers can be rebuilt"
        )
    pre = metadata.get("tokenizer.ggml.pre", "gpt-2")
    if pre not in _PRE_TOKENIZERS:
        raise ConversionUnsupported(
            f"cannot convert {model_id!r} to MLX: its tokenizer pre-processing {pre!r} is not one "
            f"orc can rebuild (supported: {', '.join(sorted(_PRE_TOKENIZERS))})"
        )
    scaling = metadata.get("llama.rope.scaling.type")
    if scaling not in (None, "none"):
        raise ConversionUnsupported(f"cannot convert {model_id!r} to MLX: rope scaling {scaling!r} is not supported")


def convert_gguf_to_mlx(gguf: Path, target: Path, *, model_id: str, source_sha256: str) -> None:
    """Write the mlx-lm folder for `gguf` at `target` (replacing whatever is there).

    The folder is built beside `target` and renamed into place, so `target` is never
    half-written. Raises `ConversionUnsupported` for a GGUF this converter cannot handle and
    `MlxNotInstalled` when `mlx` or `tokenizers` is missing.
    """
    try:
        header = read_gguf_metadata(gguf)
    except (OSError, ValueError) as exc:
        raise ConversionUnsupported(f"cannot convert {model_id!r}: cannot read the GGUF header of {gguf}: {exc}") from exc
    check_convertible(header, model_id)
    try:
        import mlx.core as mx
        import tokenizers  # noqa: F401 - checked here so a missing one fails before any work
    except ImportError as exc:
        raise MlxNotInstalled(
            f"converting to MLX needs the mlx and mlx-lm packages ({exc.name} is missing); "
            "install them with: pip install 'orc-mesh[mlx]'"
        ) from None
    try:
        tensors, metadata = mx.load(str(gguf), return_metadata=True)
    except (RuntimeError, ValueError) as exc:
        # MLX reads F32, F16, Q4_0, Q4_1 and Q8_0 tensors; K-quants (Q4_K_M and the like) fail here.
        raise ConversionUnsupported(
            f"cannot convert {model_id!r} to MLX: MLX cannot read its tensors ({exc}); only GGUFs "
            "quantized as Q4_0, Q4_1 or Q8_0 (or not quantized) convert"
        ) from None
    config = _config(metadata, tensors)
    weights = _weights(tensors, config)

    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.", suffix=".partial"))
    try:
        # Sorted keys and fixed metadata: the same GGUF always gives the same bytes.
        mx.save_safetensors(str(staging / WEIGHTS_FILE), dict(sorted(weights.items())), metadata={"format": "mlx"})
        _write_json(staging / "config.json", config)
        tokenizer_json, tokenizer_config = _tokenizer(metadata, config)
        (staging / "tokenizer.json").write_text(tokenizer_json, encoding="utf-8")
        _write_json(staging / "tokenizer_config.json", tokenizer_config)
        _write_json(staging / PROVENANCE_FILE, {
            "converter": CONVERTER,
            "source_file": gguf.name,
            "source_sha256": source_sha256,
        })
        if target.exists():
            shutil.rmtree(target)
        os.replace(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


# -- pieces ----------------------------------------------------------------------------------


def _scalar(metadata: Mapping[str, Any], key: str, default: Any = None) -> Any:
    value = metadata.get(key, default)
    if value is None:
        raise ConversionUnsupported(f"the GGUF lacks {key!r}, which the MLX config needs")
    return value.item() if hasattr(value, "item") else value


def _config(metadata: Mapping[str, Any], tensors: Mapping[str, Any]) -> dict[str, Any]:
    """mlx-lm's llama config.json from the GGUF metadata and the tensors' quantization."""
    heads = int(_scalar(metadata, "llama.attention.head_count"))
    hidden = int(_scalar(metadata, "llama.embedding_length"))
    head_dim = int(_scalar(metadata, "llama.rope.dimension_count", hidden // heads))
    vocab = int(_scalar(metadata, "llama.vocab_size", len(metadata.get("tokenizer.ggml.tokens", ()))))
    config: dict[str, Any] = {
        "model_type": "llama",
        "hidden_size": hidden,
        "num_hidden_layers": int(_scalar(metadata, "llama.block_count")),
        "intermediate_size": int(_scalar(metadata, "llama.feed_forward_length")),
        "num_attention_heads": heads,
        "num_key_value_heads": int(_scalar(metadata, "llama.attention.head_count_kv", heads)),
        "head_dim": head_dim,
        "rms_norm_eps": float(_scalar(metadata, "llama.attention.layer_norm_rms_epsilon")),
        "rope_theta": float(_scalar(metadata, "llama.rope.freq_base", 10000.0)),
        "max_position_embeddings": int(_scalar(metadata, "llama.context_length", 2048)),
        "vocab_size": vocab,
        "tie_word_embeddings": "output.weight" not in tensors,
        "attention_bias": "blk.0.attn_q.bias" in tensors,
        "mlp_bias": "blk.0.ffn_up.bias" in tensors,
    }
    bos = metadata.get("tokenizer.ggml.bos_token_id")
    if bos is not None:
        config["bos_token_id"] = int(bos.item() if hasattr(bos, "item") else bos)
    config["eos_token_id"] = _end_token_ids(metadata)
    quantization = _quantization(tensors)
    if quantization:
        config["quantization"] = quantization
    return config


def _end_token_ids(metadata: Mapping[str, Any]) -> list[int]:
    """The tokens generation ends at: end of sequence, end of turn and the end-of-text control."""
    ids: list[int] = []
    for key in ("tokenizer.ggml.eos_token_id", "tokenizer.ggml.eot_token_id", "tokenizer.ggml.eom_token_id"):
        value = metadata.get(key)
        if value is not None:
            ids.append(int(value.item() if hasattr(value, "item") else value))
    tokens = metadata.get("tokenizer.ggml.tokens") or []
    types = _token_types(metadata, len(tokens))
    ids += [i for i, token in enumerate(tokens) if token == _END_OF_TEXT and types[i] == _TOKEN_CONTROL]
    return list(dict.fromkeys(ids))


def _token_types(metadata: Mapping[str, Any], count: int) -> list[int]:
    types = metadata.get("tokenizer.ggml.token_type")
    if types is None:
        return [1] * count
    return [int(t) for t in (types.tolist() if hasattr(types, "tolist") else types)]


def _quantization(tensors: Mapping[str, Any]) -> dict[str, Any]:
    """{"group_size", "bits"} of the commonest quantization, plus an entry per module that
    differs (SmolLM2's Q4_1 GGUF keeps its embedding as Q8_0)."""
    per_module: dict[str, tuple[int, int]] = {}
    for name, scales in tensors.items():
        if not name.endswith(".scales"):
            continue
        packed = tensors[name[: -len("scales")] + "weight"]
        groups = scales.shape[-1]
        # A group of 32 weights packs into `bits` 32-bit words.
        bits = packed.shape[-1] // groups
        per_module[_mlx_module(name[: -len(".scales")])] = (_GGUF_GROUP_SIZE, bits)
    if not per_module:
        return {}
    (group_size, bits), _ = Counter(per_module.values()).most_common(1)[0]
    quantization: dict[str, Any] = {"group_size": group_size, "bits": bits, "mode": "affine"}
    for module, (module_group, module_bits) in sorted(per_module.items()):
        if (module_group, module_bits) != (group_size, bits):
            quantization[module] = {"group_size": module_group, "bits": module_bits, "mode": "affine"}
    return quantization


def _mlx_module(gguf_module: str) -> str:
    """`blk.3.attn_q` -> `model.layers.3.self_attn.q_proj`; unknown names are refused."""
    parts = gguf_module.split(".")
    if len(parts) == 3 and parts[0] == "blk" and parts[1].isdigit() and parts[2] in _LAYER_NAMES:
        return f"model.layers.{parts[1]}.{_LAYER_NAMES[parts[2]]}"
    if len(parts) == 1 and parts[0] in _TOP_NAMES:
        return _TOP_NAMES[parts[0]]
    raise ConversionUnsupported(f"the GGUF tensor {gguf_module!r} has no place in mlx-lm's llama layout")


def _unpermute_rows(array: Any, heads: int) -> Any:
    """Undo llama.cpp's Q/K row permutation.

    llama.cpp's converter reorders each head's rows from (half, pair) to (pair, half), so
    that its rotary embedding rotates adjacent rows; this restores (half, pair), the layout of
    the original checkpoint that mlx-lm's rotary embedding expects. Whole rows move, so it is
    the same for a float weight and for a quantized one's packed weight, scales and biases.
    """
    rows = array.shape[0]
    return array.reshape(heads, rows // heads // 2, 2, *array.shape[1:]).swapaxes(1, 2).reshape(array.shape)


def _weights(tensors: Mapping[str, Any], config: Mapping[str, Any]) -> dict[str, Any]:
    weights: dict[str, Any] = {}
    for name, array in tensors.items():
        module, _, suffix = name.rpartition(".")
        if suffix not in _SUFFIXES:
            raise ConversionUnsupported(f"the GGUF tensor {name!r} has no place in mlx-lm's llama layout")
        if module.endswith(".attn_q"):
            array = _unpermute_rows(array, config["num_attention_heads"])
        elif module.endswith(".attn_k"):
            array = _unpermute_rows(array, config["num_key_value_heads"])
        weights[f"{_mlx_module(module)}.{suffix}"] = array
    return weights


def _tokenizer(metadata: Mapping[str, Any], config: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
    """tokenizer.json (serialized) and tokenizer_config.json for the GGUF's BPE vocabulary."""
    from tokenizers import (
        AddedToken,
        Tokenizer,
        decoders,
        models,
        pre_tokenizers,
        processors,
    )

    tokens: list[str] = list(metadata["tokenizer.ggml.tokens"])
    merges = [tuple(merge.split(" ", 1)) for merge in metadata.get("tokenizer.ggml.merges") or []]
    types = _token_types(metadata, len(tokens))
    tokenizer = Tokenizer(models.BPE(vocab={token: i for i, token in enumerate(tokens)}, merges=merges))
    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    if _PRE_TOKENIZERS[str(metadata.get("tokenizer.ggml.pre", "gpt-2"))]:
        tokenizer.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True), byte_level])
    else:
        tokenizer.pre_tokenizer = byte_level
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.add_tokens([
        AddedToken(tokens[i], special=types[i] == _TOKEN_CONTROL, normalized=False)
        for i in range(len(tokens)) if types[i] in (_TOKEN_CONTROL, _TOKEN_USER_DEFINED)
    ])

    def special(key: str) -> str | None:
        value = metadata.get(key)
        if value is None:
            return None
        index = int(value.item() if hasattr(value, "item") else value)
        return tokens[index] if 0 <= index < len(tokens) else None

    bos = special("tokenizer.ggml.bos_token_id")
    add_bos = bool(_scalar(metadata, "tokenizer.ggml.add_bos_token", False))
    if add_bos and bos is not None:
        tokenizer.post_processor = processors.TemplateProcessing(
            single=f"{bos} $A", pair=f"{bos} $A {bos} $B", special_tokens=[(bos, tokens.index(bos))])
    tokenizer_config: dict[str, Any] = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": bos,
        "eos_token": special("tokenizer.ggml.eos_token_id"),
        "unk_token": special("tokenizer.ggml.unknown_token_id"),
        "pad_token": special("tokenizer.ggml.padding_token_id"),
        "add_bos_token": add_bos,
        "add_eos_token": False,
        "clean_up_tokenization_spaces": False,
        "model_max_length": config["max_position_embeddings"],
    }
    template = metadata.get("tokenizer.chat_template")
    if isinstance(template, str):
        tokenizer_config["chat_template"] = template
    return tokenizer.to_str(), tokenizer_config


def _write_json(path: Path, data: object) -> None:
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")
