"""Model digests: the SHA-256 that tells two peers they hold the same variant, and the cache
that spares re-hashing a file that has not changed.

A GGUF variant's digest is the SHA-256 of its file; an MLX variant's is the SHA-256 of the
manifest `"<sha256 of file>  <file name>\n"` of its weight files in sorted name order, what
`sha256sum model*.safetensors | sha256sum` prints in the folder. Hashing a model file takes
seconds, so digests are cached in `<models_dir>/digests.json`, keyed by the file's resolved
path and validated by its size and modification time. Blocking: async callers use a thread.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

__all__ = ["DigestCache", "file_sha256", "write_json_atomically"]

log = logging.getLogger(__name__)

_HASH_CHUNK = 1 << 20


def file_sha256(path: Path) -> str:
    """Hex SHA-256 of the file's bytes, read in 1 MiB chunks so memory stays flat."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(_HASH_CHUNK):
            digest.update(block)
    return digest.hexdigest()


def write_json_atomically(path: Path, data: object) -> None:
    """Write `data` as JSON to `path` through a fsynced temporary file and a rename."""
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


class DigestCache:
    """The digests of model files, kept in `cache_file` (read on first use, never required)."""

    def __init__(self, cache_file: Path) -> None:
        self._file = cache_file
        self._digests: dict[str, dict[str, object]] | None = None

    def digest(self, path: Path) -> str:
        """SHA-256 of `path`, hashed only if the cache has no record for its size and mtime."""
        resolved = path.resolve()
        stat = resolved.stat()
        cached = self._load().get(str(resolved))
        if cached is not None and cached.get("size") == stat.st_size and cached.get("mtime_ns") == stat.st_mtime_ns:
            digest = cached.get("sha256")
            if isinstance(digest, str):
                return digest
        log.info("computing the SHA-256 of %s (once; it is cached)", resolved)
        digest = file_sha256(resolved)
        self.remember(resolved, digest)
        return digest

    def folder_digest(self, weights: Sequence[Path]) -> str:
        """An MLX variant's digest: SHA-256 of `"<sha256>  <name>\n"` per weight file, in the
        sorted order `mlx_weight_files` gives (each file's digest comes from the cache)."""
        manifest = "".join(f"{self.digest(path)}  {path.name}\n" for path in weights)
        return hashlib.sha256(manifest.encode("utf-8")).hexdigest()

    def remember(self, path: Path, digest: str) -> None:
        """Record `digest` as the SHA-256 of `path` as it is now (its size and mtime)."""
        resolved = path.resolve()
        stat = resolved.stat()
        digests = self._load()
        digests[str(resolved)] = {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "sha256": digest}
        try:
            write_json_atomically(self._file, {"version": 1, "files": digests})
        except OSError as exc:
            # Only a cache: a read-only home costs a re-hash next time, not a failure now.
            log.warning("cannot write the digest cache %s: %s", self._file, exc)

    def _load(self) -> dict[str, dict[str, object]]:
        if self._digests is None:
            self._digests = {}
            try:
                data = json.loads(self._file.read_text(encoding="utf-8"))
                files = data.get("files") if isinstance(data, dict) else None
                if isinstance(files, dict):
                    self._digests = {k: v for k, v in files.items() if isinstance(v, dict)}
            except FileNotFoundError:
                pass
            except (OSError, ValueError) as exc:
                # Only a cache: rebuild it rather than refuse to list models.
                log.warning("ignoring the unreadable digest cache %s: %s", self._file, exc)
        return self._digests
