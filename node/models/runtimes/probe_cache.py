"""What the step loop's probes found, kept across loads of the same model on the same machine.

At every load the step loop (`orc.node.models.runtimes.llama_steps`) probes how the model's
numbers behave on this CPU: the shortest prompt piece that reads exactly (`min_tail`), how
many rows one decode call can hold with each row bit-identical to the row alone
(`exact_rows`), and whether fewer threads give the same logits (`thread_invariant`). That
costs about 0.9 s with SmolLM2 on two cores, more than the load itself, and `orc run` without
a daemon loads its models in every run. The answers depend only on the model's bytes, the
llama.cpp build, the CPU (which kernels ggml picks, and whether it repacks weights) and the
loop's settings, so they are kept in a small JSON file of the home (`llama-probes.json` in its
state folder) under a key made of exactly those, and a load that finds its key skips the
probes.

The file is this user's own, but it is read as untrusted all the same: an entry whose values
are not of the right type or range is ignored (and probed again), as is a file that is not
JSON; writing is best effort (a read-only home or a full disk only costs the probes next
time) and atomic, so two runners loading at once lose at most one entry, never the file. At
most MAX_ENTRIES keys are kept, the oldest dropped first.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import platform
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["FILE_NAME", "MAX_ENTRIES", "ProbeCache", "ProbeResult", "machine_facts", "probe_key"]

log = logging.getLogger(__name__)

FILE_NAME = "llama-probes.json"
MAX_ENTRIES = 64
MAX_FILE_BYTES = 1 << 20
# Part of every key: a change to what the probes measure or how must not reuse old answers.
PROBE_VERSION = 1


@dataclass(frozen=True)
class ProbeResult:
    min_tail: int | None
    exact_rows: int
    thread_invariant: bool


def machine_facts(native: Any) -> dict[str, str]:
    """What about this machine and this llama.cpp decides which kernels run: the build, the
    CPU features ggml reports using, the CPU's model name and the architecture."""
    import llama_cpp

    info = native.llama_print_system_info()
    return {
        "llama_cpp": str(getattr(llama_cpp, "__version__", "")),
        "system": info.decode("utf-8", "replace") if isinstance(info, bytes) else str(info),
        "cpu": _cpu_name(),
        "machine": platform.machine(),
    }


def _cpu_name() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text(errors="replace").splitlines():
            if line.startswith(("model name", "Hardware", "CPU part")):
                return line.split(":", 1)[-1].strip()
    return platform.processor()


def probe_key(**facts: object) -> str:
    """A key for `facts` (JSON values): the SHA-256 of their canonical JSON."""
    text = json.dumps({"probe_version": PROBE_VERSION, **facts}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


class ProbeCache:
    """The probe answers kept in the JSON file at `path`."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def get(self, key: str, *, slots: int, chunk: int) -> ProbeResult | None:
        """The answer kept for `key`, if there is one and it could have come from a probe of a
        loop with `slots` slots and prompt chunks of `chunk` tokens."""
        entry = self._read().get(key)
        if not isinstance(entry, dict):
            return None
        min_tail, rows, invariant = entry.get("min_tail"), entry.get("exact_rows"), entry.get("thread_invariant")
        if not (min_tail is None or (type(min_tail) is int and 1 <= min_tail <= chunk)):
            return None
        if not (type(rows) is int and 1 <= rows <= slots) or type(invariant) is not bool:
            return None
        return ProbeResult(min_tail, rows, invariant)

    def put(self, key: str, result: ProbeResult) -> None:
        """Keep `result` under `key` (best effort: a failure to write is logged at DEBUG)."""
        entries = self._read()
        entries.pop(key, None)
        entries[key] = {"min_tail": result.min_tail, "exact_rows": result.exact_rows,
                        "thread_invariant": result.thread_invariant, "at": int(time.time())}
        while len(entries) > MAX_ENTRIES:
            entries.pop(next(iter(entries)))
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd, temporary = tempfile.mkstemp(prefix=f".{self.path.name}.", dir=self.path.parent)
            try:
                with os.fdopen(fd, "w") as out:
                    json.dump(entries, out)
                os.replace(temporary, self.path)
            except BaseException:
                with contextlib.suppress(OSError):
                    os.unlink(temporary)
                raise
        except OSError as error:
            log.debug("cannot keep the probe results in %s: %s", self.path, error)

    def _read(self) -> dict[str, Any]:
        """The file's entries, oldest first; empty when it is missing, too large or not a JSON object."""
        try:
            with self.path.open("rb") as f:
                data = f.read(MAX_FILE_BYTES + 1)
        except OSError:
            return {}
        if len(data) > MAX_FILE_BYTES:
            return {}
        try:
            entries = json.loads(data)
        except ValueError:
            return {}
        if not isinstance(entries, dict):
            return {}
        return dict(sorted(((k, v) for k, v in entries.items() if isinstance(k, str) and isinstance(v, dict)),
                           key=lambda item: item[1].get("at") if type(item[1].get("at")) is int else 0))
