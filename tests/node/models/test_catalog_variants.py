"""Model variants in the catalog: MLX folders beside GGUF files under one id, selectors,
preference and digests. None of this needs MLX installed: the folders are made by hand."""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import pytest

import orc.node.models.digests as digests_module
import orc.node.models.entry as entry_module
from orc.node.models.catalog import (
    DEFAULT_MODEL_ID,
    Catalog,
    CatalogFileCorrupt,
    ModelFileInvalid,
    ModelFileMissing,
    ModelIdTaken,
    ModelNotRemovable,
    UnknownModel,
    default_runtime_preference,
)
from orc.node.models.mlx_convert import ConversionUnsupported, MlxNotInstalled, check_convertible
from orc.scheduler.errors import EnsembleInvalid
from orc.scheduler.loader import load_ensemble_text

LLAMA_FIRST = ("llama_cpp", "mlx")
MLX_FIRST = ("mlx", "llama_cpp")


def write_safetensors(path: Path, tensors: dict[str, bytes]) -> None:
    """A valid safetensors file of uint8 tensors, written by hand."""
    header: dict[str, object] = {"__metadata__": {"format": "mlx"}}
    offset = 0
    for name, data in tensors.items():
        header[name] = {"dtype": "U8", "shape": [len(data)], "data_offsets": [offset, offset + len(data)]}
        offset += len(data)
    encoded = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(encoded)) + encoded + b"".join(tensors.values()))


def make_mlx_folder(folder: Path, *, chat: bool = True, seed: bytes = b"x") -> Path:
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps({"model_type": "llama", "vocab_size": 8}))
    write_safetensors(folder / "model-00001-of-00002.safetensors", {"a.weight": seed * 64})
    write_safetensors(folder / "model-00002-of-00002.safetensors", {"b.weight": seed * 32})
    (folder / "tokenizer.json").write_text("{}")
    (folder / "tokenizer_config.json").write_text(json.dumps({"chat_template": "{{ messages }}"} if chat else {}))
    return folder


def manifest_digest(folder: Path) -> str:
    lines = "".join(
        f"{hashlib.sha256(path.read_bytes()).hexdigest()}  {path.name}\n"
        for path in sorted(folder.glob("model*.safetensors"), key=lambda p: p.name)
    )
    return hashlib.sha256(lines.encode()).hexdigest()


@pytest.fixture
def models_dir(tmp_path: Path) -> Path:
    return tmp_path / "home" / "models"


@pytest.fixture
def mlx_folder(tmp_path: Path) -> Path:
    return make_mlx_folder(tmp_path / "SmolLM2-MLX")


def test_an_mlx_folder_is_added_as_an_mlx_model(models_dir: Path, mlx_folder: Path) -> None:
    entry = Catalog(models_dir).add(mlx_folder)
    assert entry.id == "smollm2-mlx"
    assert entry.runtime == "mlx"
    assert entry.selector == "smollm2-mlx@mlx"
    assert entry.path == mlx_folder.resolve()
    assert entry.chat is True
    assert entry.converted_from is None
    assert entry.size_bytes == sum(p.stat().st_size for p in mlx_folder.glob("model*.safetensors"))
    assert entry.sha256 == manifest_digest(mlx_folder)
    assert Catalog(models_dir).get("smollm2-mlx") == entry


def test_the_mlx_digest_is_what_sha256sum_prints(mlx_folder: Path, models_dir: Path) -> None:
    # docs/runtimes.md tells people to check a digest with exactly this command.
    if shutil.which("sha256sum") is None:
        pytest.skip("no sha256sum here")
    done = subprocess.run("sha256sum model*.safetensors | sha256sum", shell=True, cwd=mlx_folder,
                          capture_output=True, text=True, check=True, env={"LC_ALL": "C", "PATH": "/usr/bin:/bin"})
    assert Catalog(models_dir).add(mlx_folder).sha256 == done.stdout.split()[0]


def test_the_digest_covers_the_weights_only(models_dir: Path, tmp_path: Path) -> None:
    one = Catalog(models_dir).add(make_mlx_folder(tmp_path / "one"), "one")
    two = make_mlx_folder(tmp_path / "two")
    (two / "tokenizer.json").write_text('{"reformatted": true}')
    assert Catalog(models_dir).add(two, "two").sha256 == one.sha256
    three = Catalog(models_dir).add(make_mlx_folder(tmp_path / "three", seed=b"y"), "three")
    assert three.sha256 != one.sha256


def test_an_mlx_folder_under_a_gguf_id_becomes_its_second_variant(models_dir: Path, mlx_folder: Path) -> None:
    added = Catalog(models_dir, prefer=LLAMA_FIRST).add(mlx_folder, DEFAULT_MODEL_ID)
    catalog = Catalog(models_dir, prefer=LLAMA_FIRST)
    rows = [(e.id, e.runtime) for e in catalog.entries() if e.id == DEFAULT_MODEL_ID]
    assert rows == [(DEFAULT_MODEL_ID, "llama_cpp"), (DEFAULT_MODEL_ID, "mlx")]
    assert [e.runtime for e in catalog.variants(DEFAULT_MODEL_ID)] == ["llama_cpp", "mlx"]
    assert catalog.get(DEFAULT_MODEL_ID).runtime == "llama_cpp"  # type: ignore[union-attr]
    assert catalog.get(f"{DEFAULT_MODEL_ID}@mlx") == added
    assert catalog.prepare(f"{DEFAULT_MODEL_ID}@mlx") == added
    assert catalog.get(f"{DEFAULT_MODEL_ID}@llama_cpp").source == "embedded"  # type: ignore[union-attr]
    # On a node that prefers MLX, the plain id picks the MLX variant.
    apple = Catalog(models_dir, prefer=MLX_FIRST)
    assert apple.get(DEFAULT_MODEL_ID) == added
    assert [e.runtime for e in apple.variants(DEFAULT_MODEL_ID)] == ["mlx", "llama_cpp"]


def test_one_variant_per_runtime_and_id(models_dir: Path, mlx_folder: Path, tmp_path: Path) -> None:
    catalog = Catalog(models_dir)
    catalog.add(mlx_folder, "tiny")
    with pytest.raises(ModelIdTaken, match="mlx variant"):
        catalog.add(make_mlx_folder(tmp_path / "other"), "tiny")
    gguf = tmp_path / "tiny.gguf"
    gguf.write_bytes(b"GGUF" + b"\0" * 64)
    assert catalog.add(gguf, "tiny").runtime == "llama_cpp"  # the other runtime: a second variant
    assert sorted(e.runtime for e in catalog.variants("tiny")) == ["llama_cpp", "mlx"]


def test_removing_variants(models_dir: Path, mlx_folder: Path, tmp_path: Path) -> None:
    catalog = Catalog(models_dir)
    catalog.add(mlx_folder, DEFAULT_MODEL_ID)
    assert catalog.remove(f"{DEFAULT_MODEL_ID}@mlx") == (f"{DEFAULT_MODEL_ID}@mlx",)
    assert catalog.get(f"{DEFAULT_MODEL_ID}@mlx") is None
    assert mlx_folder.is_dir(), "removing a model must not delete the user's folder"
    with pytest.raises(ModelNotRemovable):
        catalog.remove(f"{DEFAULT_MODEL_ID}@llama_cpp")
    with pytest.raises(ModelNotRemovable):
        catalog.remove(DEFAULT_MODEL_ID)
    # A plain id removes every user variant and leaves the embedded one.
    gguf = tmp_path / "t.gguf"
    gguf.write_bytes(b"GGUF" + b"\0" * 64)
    catalog.add(mlx_folder, "both")
    catalog.add(gguf, "both")
    assert sorted(catalog.remove("both")) == ["both@llama_cpp", "both@mlx"]
    with pytest.raises(UnknownModel):
        catalog.remove("both@mlx")


@pytest.mark.parametrize("ref", ["nope", "nope@mlx", f"{DEFAULT_MODEL_ID}@mlx", f"{DEFAULT_MODEL_ID}@bogus", "@mlx"])
def test_unknown_references(models_dir: Path, ref: str) -> None:
    catalog = Catalog(models_dir)
    assert catalog.get(ref) is None
    assert catalog.variants(ref) == ()
    with pytest.raises(UnknownModel):
        catalog.prepare(ref)


def test_a_vanished_mlx_folder(models_dir: Path, mlx_folder: Path, caplog: pytest.LogCaptureFixture) -> None:
    Catalog(models_dir).add(mlx_folder, DEFAULT_MODEL_ID)
    shutil.rmtree(mlx_folder)
    catalog = Catalog(models_dir, prefer=MLX_FIRST)
    with caplog.at_level(logging.WARNING):
        assert [e.runtime for e in catalog.entries() if e.id == DEFAULT_MODEL_ID] == ["llama_cpp"]
    assert "missing" in caplog.text
    # The plain id still has its GGUF; the pinned variant is reported missing.
    assert catalog.get(DEFAULT_MODEL_ID).runtime == "llama_cpp"  # type: ignore[union-attr]
    with pytest.raises(ModelFileMissing):
        catalog.get(f"{DEFAULT_MODEL_ID}@mlx")


@pytest.mark.parametrize(
    ("breakage", "message"),
    [
        ("no-config", "no config.json"),
        ("bad-config", "cannot be read as JSON"),
        ("no-model-type", "names no model_type"),
        ("no-weights", "has no weights"),
        ("truncated", "truncated"),
        ("not-safetensors", "not a readable safetensors"),
        ("no-tokenizer", "has no tokenizer"),
    ],
)
def test_a_broken_mlx_folder_is_refused(models_dir: Path, mlx_folder: Path, breakage: str, message: str) -> None:
    weights = mlx_folder / "model-00001-of-00002.safetensors"
    if breakage == "no-config":
        (mlx_folder / "config.json").unlink()
    elif breakage == "bad-config":
        (mlx_folder / "config.json").write_text("{nope")
    elif breakage == "no-model-type":
        (mlx_folder / "config.json").write_text("{}")
    elif breakage == "no-weights":
        for path in mlx_folder.glob("model*.safetensors"):
            path.unlink()
    elif breakage == "truncated":
        weights.write_bytes(weights.read_bytes()[:-10])
    elif breakage == "not-safetensors":
        weights.write_bytes(b"\xff" * 64)
    elif breakage == "no-tokenizer":
        (mlx_folder / "tokenizer.json").unlink()
    with pytest.raises(ModelFileInvalid, match=message):
        Catalog(models_dir).add(mlx_folder)
    assert not (models_dir / "catalog.json").exists()


def test_a_converted_folder_keeps_its_provenance(models_dir: Path, mlx_folder: Path) -> None:
    source = "ab" * 32
    (mlx_folder / "orc-conversion.json").write_text(json.dumps(
        {"converter": "orc-gguf-to-mlx/1", "source_file": "x.gguf", "source_sha256": source}))
    entry = Catalog(models_dir).add(mlx_folder)
    assert entry.converted_from == source
    assert json.loads((models_dir / "catalog.json").read_text())["models"][0]["converted_from"] == source
    assert Catalog(models_dir).get(entry.id) == entry


def test_a_catalog_record_with_an_unknown_runtime_is_corrupt(models_dir: Path) -> None:
    models_dir.mkdir(parents=True)
    (models_dir / "catalog.json").write_text(json.dumps(
        {"models": [{"id": "x", "path": "/x", "runtime": "onnx"}]}))
    with pytest.raises(CatalogFileCorrupt, match="onnx"):
        Catalog(models_dir).entries()


def test_mlx_digests_are_cached_per_file(models_dir: Path, mlx_folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    entry = Catalog(models_dir).add(mlx_folder)

    def no_hashing(path: Path) -> str:
        raise AssertionError(f"{path} was hashed again")

    monkeypatch.setattr(digests_module, "file_sha256", no_hashing)
    assert Catalog(models_dir).get(entry.id) == entry


def test_default_preference(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "platform", "linux")
    assert default_runtime_preference() == LLAMA_FIRST
    monkeypatch.setattr(sys, "platform", "darwin")
    monkeypatch.setattr(entry_module.platform, "machine", lambda: "arm64")
    monkeypatch.setattr(entry_module.importlib.util, "find_spec",
                        lambda name: object() if name == "mlx_lm" else None)
    assert default_runtime_preference() == MLX_FIRST
    monkeypatch.setattr(entry_module.importlib.util, "find_spec", lambda name: None)
    assert default_runtime_preference() == LLAMA_FIRST  # no mlx-lm: llama.cpp even on a Mac


# -- model references in ensembles -------------------------------------------------------------


def test_the_loader_refuses_an_unknown_runtime_with_a_fix(tmp_path: Path) -> None:
    text = "name: x\nagents:\n  - name: a\n    model: smollm2-135m-instruct@mlxx\n  - name: b\n    model: m@mlx\n"
    with pytest.raises(EnsembleInvalid) as caught:
        load_ensemble_text(text, tmp_path / "x.yaml")
    message = str(caught.value)
    assert "agent 'a'" in message and "unknown runtime 'mlxx'" in message
    assert "'@llama_cpp' or '@mlx'" in message
    assert "agent 'b'" not in message


# -- what conversion refuses before it needs MLX -------------------------------------------------


@pytest.mark.parametrize(
    ("metadata", "message"),
    [
        ({"general.architecture": "gemma3"}, "gemma3 model"),
        ({"general.architecture": "qwen2", "tokenizer.ggml.model": "gpt2"}, "qwen2 model"),
        ({"general.architecture": "llama", "tokenizer.ggml.model": "llama"}, "tokenizer is 'llama'"),
        ({"general.architecture": "llama", "tokenizer.ggml.model": "gpt2", "tokenizer.ggml.pre": "qwen2"}, "'qwen2'"),
        ({"general.architecture": "llama", "tokenizer.ggml.model": "gpt2", "llama.rope.scaling.type": "yarn"}, "yarn"),
    ],
)
def test_unsupported_ggufs_are_named(metadata: dict[str, object], message: str) -> None:
    with pytest.raises(ConversionUnsupported, match=message):
        check_convertible(metadata, "m")


def test_check_convertible_accepts_smollm2_metadata() -> None:
    check_convertible({"general.architecture": "llama", "tokenizer.ggml.model": "gpt2", "tokenizer.ggml.pre": "smollm"}, "m")


def test_convert_without_mlx_says_what_to_install(models_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "mlx", None)  # makes `import mlx.core` fail as if not installed
    monkeypatch.setitem(sys.modules, "mlx.core", None)
    with pytest.raises(MlxNotInstalled, match=r"pip install 'orc-mesh\[mlx\]'"):
        Catalog(models_dir).convert(DEFAULT_MODEL_ID, to="mlx")
    assert not (models_dir / "mlx").exists() or not any((models_dir / "mlx").iterdir())


def test_convert_refuses_other_targets_and_sources(models_dir: Path, mlx_folder: Path) -> None:
    catalog = Catalog(models_dir)
    with pytest.raises(ConversionUnsupported, match="to mlx, q8_0, q4_0, not to 'onnx'"):
        catalog.convert(DEFAULT_MODEL_ID, to="onnx")
    with pytest.raises(UnknownModel):
        catalog.convert("nope", to="mlx")
    catalog.add(mlx_folder, "only-mlx")
    with pytest.raises(UnknownModel, match="only these variants: mlx"):
        catalog.convert("only-mlx", to="mlx")
    with pytest.raises(ConversionUnsupported, match="starts from a GGUF"):
        catalog.convert(f"{DEFAULT_MODEL_ID}@mlx", to="mlx")
