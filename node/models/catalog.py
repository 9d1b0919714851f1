"""The model catalog of one node: which weights files it can serve, under which ids.

Two kinds of entries:

* **embedded** models come with orc's dependencies and need no set-up (`embedded`);
* **user** models are GGUF files or mlx-lm folders added with `orc models add PATH` (or
  written by `orc models convert`); the catalog records a reference to each in
  `<models_dir>/catalog.json` and never copies or deletes it.

**Variants.** A model id names a logical model; each entry is one *variant* of it, served by one
runtime (`entry`). `orc models convert ID --to mlx` writes the MLX variant of a GGUF model
into `<models_dir>/mlx/ID/` (`mlx_convert`) and registers it under the same id. A plain id lets
this node pick its preferred variant (mlx first on Apple silicon with mlx-lm installed,
llama_cpp first elsewhere); `ID@RUNTIME` pins one (docs/runtimes.md).

Two peers have the same variant only if the digests match, so every entry carries its digest
(`digests`: what it covers, and the cache in `<models_dir>/digests.json`).

The catalog's vocabulary (`ModelEntry`, the ids, the `CatalogError` family) is defined in
`entry` and `errors` and importable from here too. Nothing here runs on the event loop's
behalf: listing may hash a new file and `prepare` may assemble one, so async callers use
`asyncio.to_thread`.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from orc.node.models.digests import DigestCache, file_sha256, write_json_atomically
from orc.node.models.embedded import EmbeddedModels
from orc.node.models.entry import (
    DEFAULT_MODEL_ID,
    GEMMA_MODEL_ID,
    MODEL_ID_PATTERN,
    ModelEntry,
    ModelId,
    default_runtime_preference,
    slug_model_id,
)
from orc.node.models.errors import (
    CatalogError,
    CatalogFileCorrupt,
    InvalidModelId,
    ModelFileInvalid,
    ModelFileMissing,
    ModelIdTaken,
    ModelNotRemovable,
    UnknownModel,
)
from orc.node.models.gguf import is_gguf, read_gguf_metadata
from orc.node.models.mlx_convert import ConversionUnsupported, check_convertible, convert_gguf_to_mlx, read_provenance
from orc.node.models.mlx_folder import check_mlx_folder, mlx_has_chat_template, mlx_weight_files
from orc.node.models.requantize import GGUF_FOLDER, TARGETS, is_requantized_to, requantize_gguf
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

_CATALOG_VERSION = 1
_MLX_FOLDER = "mlx"  # converted MLX variants live in <models_dir>/mlx/<id>/


@dataclass(frozen=True)
class Converted:
    """What `Catalog.convert` did: the new variant, and whether it had to be written now."""

    entry: ModelEntry
    created: bool


def _gguf_has_chat_template(path: Path) -> bool:
    try:
        return "tokenizer.chat_template" in read_gguf_metadata(path)
    except (OSError, ValueError):
        # A header this reader cannot follow: llama.cpp may still load the model, and the
        # runtime falls back to a plain transcript by itself if there is no template.
        return True


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
        self._digests = DigestCache(models_dir / "digests.json")
        self._embedded = EmbeddedModels(models_dir / "embedded", self._digests)
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
        found: list[ModelEntry] = [*self._embedded.entries()]
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
        found = [entry for entry in self._embedded.entries() if entry.id == model_id]
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
        if entry.source == "embedded":
            entry = self._embedded.prepare(entry)
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
        if not MODEL_ID_PATTERN.fullmatch(chosen):
            hint = " (derived from the file name; choose one with --id)" if model_id is None else ""
            raise InvalidModelId(
                f"{chosen!r} is not a valid model id{hint}: use 1 to 64 characters from "
                "a-z, 0-9, '.', '_' and '-', starting with a letter or digit"
            )
        records = self._read_user_records()
        taken = {(entry.id, entry.runtime) for entry in self._embedded.entries()} | {(r.id, r.runtime) for r in records}
        if (chosen, runtime) in taken:
            raise ModelIdTaken(
                f"the model id {chosen!r} already has a {runtime} variant; pick another id with --id"
            )
        converted_from = None
        if runtime == "mlx":
            chat = mlx_has_chat_template(path)
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
        """Convert the GGUF variant of `model_ref` to `to` and register the result.

        `to` "mlx": an MLX folder written to `<models_dir>/mlx/<id>/` and registered under
        `model_id` (default: the same id, so it becomes a variant of the same model). `to`
        "q8_0" or "q4_0": the GGUF requantized by llama.cpp (orc.node.models.requantize) into
        `<models_dir>/gguf/<id>.gguf`, registered as a model of its own (default id: the
        source's with "-q8_0" or "-q4_0"). Converting again what is already converted from the
        same GGUF does nothing (`created` is False). Raises `UnknownModel`,
        `ConversionUnsupported` (an unknown target; for mlx, not a llama-architecture GGUF),
        `MlxNotInstalled`, `RequantizeFailed`, `InvalidModelId` and `ModelIdTaken` (the id has
        a variant of that runtime made from something else).
        """
        if to != "mlx" and to not in TARGETS:
            raise ConversionUnsupported(f"orc converts GGUF models to mlx, {', '.join(TARGETS)}, not to {to!r}")
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
        if to == "mlx":
            try:
                check_convertible(read_gguf_metadata(source.path), source_id)
            except (OSError, ValueError) as exc:
                raise ConversionUnsupported(f"cannot convert {source_id!r}: cannot read its GGUF header: {exc}") from None
        chosen = (source_id if to == "mlx" else f"{source_id}-{to}") if model_id is None else model_id
        if not MODEL_ID_PATTERN.fullmatch(chosen):
            raise InvalidModelId(
                f"{chosen!r} is not a valid model id: use 1 to 64 characters from a-z, 0-9, '.', '_' and '-', "
                "starting with a letter or digit" + ("; choose one with --id" if model_id is None else "")
            )
        target_runtime = "mlx" if to == "mlx" else "llama_cpp"
        description = (f"converted to MLX from {source.path.name}" if to == "mlx"
                       else f"requantized to {TARGETS[to][1]} from {source.path.name}")
        records = self._read_user_records()
        for record in records:
            if record.id == chosen and record.runtime == target_runtime:
                same_kind = to == "mlx" or is_requantized_to(record.path, to)
                if record.converted_from == source.sha256 and record.path.exists() and same_kind:
                    return Converted(self._user_entry(record), created=False)
                raise ModelIdTaken(
                    f"{chosen!r} already has a {target_runtime} variant ({record.path}); remove it with "
                    f"'orc models remove {chosen}@{target_runtime}' first, or pick another id with --id"
                )
        if (chosen, target_runtime) in {(entry.id, entry.runtime) for entry in self._embedded.entries()}:
            raise ModelIdTaken(f"{chosen!r} is an embedded model's id; pick another id with --id")
        if to == "mlx":
            target = self._models_dir / _MLX_FOLDER / chosen
            convert_gguf_to_mlx(source.path, target, model_id=source_id, source_sha256=source.sha256)
        else:
            target = self._models_dir / GGUF_FOLDER / f"{chosen}.gguf"
            requantize_gguf(source.path, target, to)
        record = _UserRecord(
            id=ModelId(chosen),
            path=target,
            runtime=target_runtime,
            description=description,
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
            if any(e.id == model_id and runtime in (None, e.runtime) for e in self._embedded.entries()):
                raise ModelNotRemovable(f"{model_ref!r} is embedded in orc and cannot be removed")
            raise UnknownModel(f"no user-added model {model_ref!r} in this node's catalog")
        self._write_user_records([r for r in records if r not in removed])
        return tuple(f"{r.id}@{r.runtime}" for r in removed)

    # -- user models -----------------------------------------------------------------------

    def _detect_runtime(self, path: Path) -> str:
        if path.is_dir():
            check_mlx_folder(path)
            return "mlx"
        if not path.is_file():
            raise ModelFileInvalid(f"no model file at {path}")
        try:
            found_gguf = is_gguf(path)
        except OSError as exc:
            raise ModelFileInvalid(f"cannot read {path}: {exc.strerror}") from exc
        if not found_gguf:
            raise ModelFileInvalid(f"{path} is not a GGUF model file (it does not start with b'GGUF')")
        return "llama_cpp"

    def _user_entry(self, record: _UserRecord) -> ModelEntry:
        if record.runtime == "mlx":
            weights = mlx_weight_files(record.path)
            if not weights:
                raise ModelFileMissing(
                    f"the MLX folder of model {record.id!r} is missing or has no weights: {record.path}")
            size = sum(weights_file.stat().st_size for weights_file in weights)
            digest = self._digests.folder_digest(weights)
        else:
            try:
                size = record.path.stat().st_size
            except FileNotFoundError as exc:
                raise ModelFileMissing(f"the weights file of model {record.id!r} is missing: {record.path}") from exc
            digest = self._digests.digest(record.path)
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
        if not isinstance(model_id, str) or not MODEL_ID_PATTERN.fullmatch(model_id):
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
        write_json_atomically(self._catalog_file, data)
