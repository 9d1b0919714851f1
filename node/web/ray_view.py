"""A Ray cluster's models, for the dashboard (`GET /api/ray`): what `orc models --on ADDRESS --json`
lists for the cluster in the node's config (`ray: {address}`).

The daemon never imports Ray (its memory and start-up stay a mesh node's): the listing comes
from that command in a child process, bounded in time and output. Joining a cluster as a
driver takes seconds and registers a job on its head, so one listing at most is in flight and
its answer is reused for `FRESH_S`, however many pages ask.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

from orc.node.models.entry import MODEL_ID_PATTERN

Json = dict[str, Any]
Lister = Callable[[str], Awaitable[list[Json]]]  # address -> rows of `orc models --on --json`

FRESH_S = 30.0  # an answer (or an error) is shown this long before the cluster is asked again
LIST_TIMEOUT_S = 60.0  # joining: up to 10 s for the head's port, then Ray's own handshake
# What the child may print: a cluster of a few hundred workers is well under this; more is not
# a listing, and is not kept in the daemon's memory.
MAX_OUTPUT_BYTES = 1 << 20
MAX_ROWS = 1000  # rows the page gets at most
ERROR_CHARS = 500


class RayUnlisted(Exception):
    """The cluster's models could not be listed; the message says why, for the page."""


class RayView:
    """The configured cluster's models as of the last listing (None address: no cluster configured)."""

    def __init__(self, address: str | None, *, lister: Lister | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.address = address
        self._lister = lister or list_models
        self._clock = clock
        self._answer: tuple[float, Json] | None = None
        self._lock = asyncio.Lock()

    async def snapshot(self) -> Json:
        """{"address", "models": [rows], "error", "age_s"}: rows are {id, worker, node_id, actors,
        tags}; `error` says why there are none when the listing failed."""
        if self.address is None:
            return {"address": None, "models": [], "error": None, "age_s": None}
        async with self._lock:  # one listing in flight; the others wait for its answer
            now = self._clock()
            if self._answer is None or now - self._answer[0] >= FRESH_S:
                try:
                    body = {"models": _rows(await self._lister(self.address)), "error": None}
                except RayUnlisted as error:
                    body = {"models": [], "error": str(error)[:ERROR_CHARS]}
                self._answer = (self._clock(), {"address": self.address, **body})
            taken, answer = self._answer
        return {**answer, "age_s": round(self._clock() - taken, 1)}


async def list_models(address: str) -> list[Json]:
    """`orc models --on ADDRESS --json` in a child process: its rows, or RayUnlisted."""
    try:
        child = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "orc.node.cli.orc", "models", "--on", address, "--json",
            stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    except OSError as error:
        raise RayUnlisted(f"cannot start `orc models --on`: {error.strerror or error}") from None
    try:
        out, err = await asyncio.wait_for(_read(child), LIST_TIMEOUT_S)
    except asyncio.TimeoutError:
        raise RayUnlisted(f"the cluster at {address} did not answer within {LIST_TIMEOUT_S:.0f} s") from None
    finally:
        if child.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                child.kill()
            await child.wait()
    if child.returncode != 0:
        lines = [line.strip() for line in err.decode("utf-8", "replace").splitlines() if line.strip()]
        raise RayUnlisted(lines[-1] if lines else f"`orc models --on` exited with {child.returncode}")
    try:
        rows = json.loads(out)
    except ValueError:
        raise RayUnlisted("`orc models --on` printed something that is not JSON") from None
    if not isinstance(rows, list):
        raise RayUnlisted("`orc models --on` printed no list")
    return rows


async def _read(child: asyncio.subprocess.Process) -> tuple[bytes, bytes]:
    assert child.stdout is not None and child.stderr is not None
    out, err = await asyncio.gather(_capped(child.stdout), _capped(child.stderr))
    if out is None:
        raise RayUnlisted(f"`orc models --on` printed more than {MAX_OUTPUT_BYTES >> 10} KiB")
    await child.wait()
    return out, err or b""


async def _capped(stream: asyncio.StreamReader) -> bytes | None:
    """All of `stream`, or None once it passes MAX_OUTPUT_BYTES (the rest is not kept)."""
    chunks, size = [], 0
    while chunk := await stream.read(64 << 10):
        size += len(chunk)
        if size > MAX_OUTPUT_BYTES:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


def _rows(rows: list[Any]) -> list[Json]:
    """The rows as the page may draw them: typed fields only, model ids orc could have written."""
    kept = []
    for row in rows[:MAX_ROWS]:
        if not isinstance(row, dict) or not isinstance(row.get("id"), str) or not MODEL_ID_PATTERN.match(row["id"]):
            continue
        actors = row.get("actors")
        tags = row.get("tags")
        kept.append({"id": row["id"], "worker": str(row.get("worker", ""))[:200],
                     "node_id": str(row.get("node_id", ""))[:64],
                     "actors": actors if isinstance(actors, int) and not isinstance(actors, bool) else 0,
                     "tags": [str(t)[:64] for t in tags[:32]] if isinstance(tags, list) else []})
    return kept
