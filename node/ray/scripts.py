"""Script agents as Ray tasks, for ensembles that allow shipping their scripts (`ship_scripts: true`).

Shipping code to other machines is the user's decision, made in the ensemble file: without
`ship_scripts: true` a script runs on the driver, as on the mesh. With it, the driver reads the
script file and sends its text, with the agent's JSON input, to a Ray task on a worker; the
task writes it into a fresh temporary folder there and runs it with orc's own script runner
(`run_script`: the worker's Python for a `.py`, the shebang otherwise), then removes the
folder. A shipped script sees only its own file and its input: not the ensemble's folder, not
the driver's environment.

Who retries: Ray never re-runs the task (`max_retries=0`: a script may have side effects); a
worker lost while running it fails the attempt as a retryable error, and the agent's own
`retries` decide, as for any script.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from orc.node.coordinator.agent_errors import AgentError
from orc.node.models.runtimes.base import RuntimeFailure, ScriptFailed
from orc.node.models.runtimes.script import ScriptResult, run_script

log = logging.getLogger(__name__)

# The text of one shipped script. Each run sends it through Ray's object store and writes it on
# a worker: a script is a few kilobytes; a multi-megabyte "script" is a mistake (or a payload
# smuggled onto every worker), refused before anything is sent.
MAX_SCRIPT_BYTES = 1 << 20


def run_shipped(name: str, source: bytes, payload: Mapping[str, object], timeout: float | None) -> ScriptResult:
    """The task's body, on a worker: `source` written as `name` in a fresh folder, run there.

    Raises the script runner's errors (they cross Ray as the task's error)."""
    folder = Path(tempfile.mkdtemp(prefix="orc-script-"))
    try:
        path = folder / name
        path.write_bytes(source)
        path.chmod(0o700)  # a shebang script needs the run bit; only this worker's user reads it
        return asyncio.run(run_script(path, payload, timeout=timeout, cwd=folder))
    finally:
        shutil.rmtree(folder, ignore_errors=True)


class RayScripts:
    """A `ScriptRunner` (`run_script`'s signature) that runs each script as a Ray task."""

    def __init__(self, cluster: Any) -> None:
        self._cluster = cluster
        self._task: Any = None  # run_shipped wrapped by ray.remote, once

    async def __call__(self, path: Path, payload: Mapping[str, object], *, timeout: float | None,
                       cwd: Path | None = None, env: Mapping[str, str] | None = None) -> ScriptResult:
        import ray.exceptions

        source = await asyncio.to_thread(_read, path)  # off the loop: the driver's runs go on meanwhile
        ray = self._cluster.ray
        if self._task is None:
            self._task = ray.remote(run_shipped).options(num_cpus=0, max_retries=0)
        reference = self._task.remote(path.name, source, dict(payload), timeout)
        try:
            return await reference
        except ray.exceptions.RayTaskError as error:
            cause = error.cause
            if isinstance(cause, RuntimeFailure):
                raise cause from None  # the script's own failure: its message names it and its stderr
            raise ScriptFailed(f"script {path} failed on a Ray worker: {type(cause).__name__}: {cause}") from None
        except (ray.exceptions.WorkerCrashedError, ray.exceptions.NodeDiedError,
                ray.exceptions.ObjectLostError) as error:
            # Not the script's fault: another attempt, on another worker, may succeed.
            raise AgentError(f"script {path}: the Ray worker running it was lost ({_first_line(error)})",
                             retryable=True) from None
        except ray.exceptions.RayError as error:
            raise ScriptFailed(f"script {path} could not run on the Ray cluster: {_first_line(error)}") from None
        except asyncio.CancelledError:
            # The agent was cancelled (its timeout, the run's end): stop the task, whose script
            # runner then stops the script's process group.
            try:
                ray.cancel(reference)
            except Exception as error:  # noqa: BLE001 - best effort: the task's own timeout still bounds it
                log.debug("cancelling shipped script %s: %s", path, error)
            raise


def _read(path: Path) -> bytes:
    try:
        size = path.stat().st_size
        if size > MAX_SCRIPT_BYTES:
            raise ScriptFailed(f"script {path} is {size >> 10} KiB; a shipped script may be at most "
                               f"{MAX_SCRIPT_BYTES >> 10} KiB")
        return path.read_bytes()
    except OSError as error:
        raise ScriptFailed(f"cannot read script {path} to ship it: {error.strerror or error}") from None


def _first_line(error: BaseException) -> str:
    return (str(error).strip().splitlines() or [type(error).__name__])[0]
