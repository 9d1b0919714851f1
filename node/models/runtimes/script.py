"""The script runtime: run an agent's script as a subprocess, llm-orc style.

The script gets one JSON document on stdin (the engine's payload:
`{"agent_name", "input_data", "dependencies", "parameters", "context"}`, passed through as is)
and prints its result on stdout. Stdout that parses as JSON is the agent's output as that
value; any other text is the output as a string, stripped (llm-orc tolerates plain text, and
so do we). A script that exits 0 but prints nothing, prints more than the stdout cap or prints
bytes that are not UTF-8 fails with `ScriptOutputInvalid`: the agents downstream would get
nothing usable, and the error points at the script rather than at them.

How a script runs:

* `.py` scripts run with orc's own Python (`sys.executable`), so they need neither the run bit
  nor a shebang and see the packages orc sees; anything else is executed directly and needs a
  `#!` line and the run bit.
* No shell is involved: the argument vector is fixed and the payload goes through stdin only,
  so nothing in it is ever interpreted.
* The script starts a new session, hence its own process group. A timeout, a cancelled
  caller or a flood of output stops the whole group (SIGTERM, then SIGKILL after a grace
  period), and whatever the script left running in its group is killed when it exits, so no
  agent leaves processes behind or holds orc's pipes open.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from orc.node.models.runtimes.base import ScriptFailed, ScriptNotFound, ScriptOutputInvalid, ScriptTimeout

__all__ = ["ScriptResult", "resolve_script", "run_script"]

# A script is code the user chose to run, but its output lands in orc's memory, the journal
# and every agent downstream. 16 MiB of stdout stops a runaway `print` loop from exhausting
# memory; 64 KiB of stderr keeps the end of a traceback without keeping a chatty log.
_STDOUT_CAP = 16 << 20
_STDERR_TAIL = 64 << 10
_READ_CHUNK = 64 << 10
# Time a script gets to exit after SIGTERM before its group is killed outright.
_KILL_GRACE_S = 2.0
# Lines of the stderr tail quoted in a ScriptFailed message (all of it is on the exception).
_MESSAGE_STDERR_LINES = 5


@dataclass(frozen=True)
class ScriptResult:
    """What a script produced: `output` is its stdout parsed as JSON, or the stripped text when
    stdout is not JSON; `stderr` is the (possibly cut) end of its stderr."""

    output: object
    stderr: str
    duration_s: float


def resolve_script(script: str, *, ensemble_dir: Path, project_dir: Path | None) -> Path:
    """The file a `script:` value names.

    An absolute path is taken as is. A relative one is looked up, first match wins, in:
    the ensemble file's folder; then, inside an llm-orc project (`project_dir` is its
    `.llm-orc/` folder), `.llm-orc/scripts/` (where llm-orc keeps scripts, so its
    `primitives/...` references resolve), `.llm-orc/` and the project's own folder.
    Raises `ScriptNotFound` listing every place looked.
    """
    reference = Path(script).expanduser()
    if reference.is_absolute():
        candidates = [reference]
    else:
        candidates = [ensemble_dir / reference]
        if project_dir is not None:
            candidates += [project_dir / "scripts" / reference, project_dir / reference, project_dir.parent / reference]
    for candidate in candidates:
        if candidate.is_file():
            return candidate.resolve()
    looked = "\n".join(f"  {candidate}" for candidate in candidates)
    raise ScriptNotFound(f"script {script!r} not found; looked for:\n{looked}")


def _command(path: Path) -> list[str]:
    if not path.is_file():
        raise ScriptNotFound(f"script {str(path)!r} not found")
    if path.suffix.lower() == ".py":
        return [sys.executable, str(path)]
    try:
        with path.open("rb") as f:
            has_shebang = f.read(2) == b"#!"
    except OSError as exc:
        raise ScriptFailed(f"cannot read script {path}: {exc.strerror}") from None
    if not has_shebang:
        raise ScriptFailed(
            f"script {path} cannot be run: it has no '#!' line. Start it with one "
            "(for example '#!/bin/sh'), or give a Python script the .py suffix so orc runs it "
            "with its own Python"
        )
    if not os.access(path, os.X_OK):
        raise ScriptFailed(f"script {path} cannot be run: it is not executable. Fix: chmod +x {path}")
    return [str(path)]


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass  # the group is already gone (PermissionError: macOS's answer for a zombie leader)


async def _wait_exit(proc: asyncio.subprocess.Process) -> int:
    """The script's exit status, as soon as the script itself has exited."""
    # Before Python 3.12, Process.wait() also waits until every pipe is closed, which a child
    # the script left running (or a stdout nobody reads any more) delays forever. The exit
    # status itself is recorded at once, so it is polled as well.
    waiter = asyncio.ensure_future(proc.wait())
    try:
        while proc.returncode is None and not waiter.done():
            await asyncio.wait({waiter}, timeout=0.05)
    finally:
        waiter.cancel()
    assert proc.returncode is not None
    return proc.returncode


async def _stop_group(proc: asyncio.subprocess.Process) -> None:
    """SIGTERM the script's process group; SIGKILL whatever is left after the grace period."""
    # start_new_session made the script a group leader, so its pid is the group id.
    _signal_group(proc.pid, signal.SIGTERM)
    try:
        await asyncio.wait_for(_wait_exit(proc), _KILL_GRACE_S)
    except asyncio.TimeoutError:
        pass
    finally:
        # Also reached when this wait is itself cancelled: nothing may outlive the agent.
        _signal_group(proc.pid, signal.SIGKILL)
    await _wait_exit(proc)


async def _feed(proc: asyncio.subprocess.Process, data: bytes) -> None:
    assert proc.stdin is not None
    try:
        proc.stdin.write(data)
        await proc.stdin.drain()
    except (BrokenPipeError, ConnectionResetError):
        pass  # a script need not read its input
    finally:
        proc.stdin.close()


async def _read_capped(stream: asyncio.StreamReader, cap: int, on_overflow: asyncio.Event) -> bytes:
    data = bytearray()
    while chunk := await stream.read(_READ_CHUNK):
        if len(data) + len(chunk) > cap:
            on_overflow.set()
        # Past the cap, keep reading and dropping until the script is stopped, so its end of
        # the pipe is seen to close.
        if not on_overflow.is_set():
            data += chunk
    return bytes(data)


async def _read_tail(stream: asyncio.StreamReader, keep: int) -> bytes:
    tail = bytearray()
    while chunk := await stream.read(_READ_CHUNK):
        tail += chunk
        del tail[:-keep]
    return bytes(tail)


async def run_script(
    path: Path,
    payload: Mapping[str, object],
    *,
    timeout: float | None,
    cwd: Path | None = None,
    env: Mapping[str, str] | None = None,
) -> ScriptResult:
    """Run the script at `path` with `payload` as JSON on stdin and return what it printed.

    `timeout` (seconds, None for none) bounds the whole run; `env` adds variables to orc's own
    environment. Raises `ScriptNotFound`, `ScriptFailed` (could not start, or a non-zero exit,
    with the stderr tail), `ScriptTimeout` or `ScriptOutputInvalid`. Cancelling the caller
    stops the script's whole process group before the cancellation propagates.
    """
    argv = _command(path)
    try:
        stdin_data = json.dumps(payload).encode("utf-8")
    except (TypeError, ValueError) as exc:
        raise ScriptFailed(f"cannot pass the input to script {path} as JSON: {exc}") from None
    full_env = {**os.environ, **env} if env is not None else None
    started = time.monotonic()
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            cwd=cwd,
            env=full_env,
            start_new_session=True,
        )
    except OSError as exc:
        raise ScriptFailed(f"cannot start script {path}: {exc.strerror or exc}") from None

    overflow = asyncio.Event()

    async def communicate() -> tuple[int, bytes, bytes]:
        assert proc.stdout is not None and proc.stderr is not None
        feeder = asyncio.ensure_future(_feed(proc, stdin_data))
        out_task = asyncio.ensure_future(_read_capped(proc.stdout, _STDOUT_CAP, overflow))
        err_task = asyncio.ensure_future(_read_tail(proc.stderr, _STDERR_TAIL))
        overflow_wait = asyncio.ensure_future(overflow.wait())
        exit_wait = asyncio.ensure_future(_wait_exit(proc))
        try:
            await asyncio.wait({exit_wait, overflow_wait}, return_when=asyncio.FIRST_COMPLETED)
            if overflow.is_set():
                await _stop_group(proc)
            # Children the script left in its group would keep our pipes open (and run on
            # unsupervised): they end with it.
            _signal_group(proc.pid, signal.SIGKILL)
            returncode = await exit_wait
            stdout, stderr = await asyncio.gather(out_task, err_task)
            await feeder
            return returncode, stdout, stderr
        finally:
            for task in (feeder, out_task, err_task, overflow_wait, exit_wait):
                task.cancel()

    try:
        returncode, stdout, stderr_bytes = await asyncio.wait_for(communicate(), timeout)
    except asyncio.TimeoutError:
        await _stop_group(proc)
        raise ScriptTimeout(f"script {path} ran longer than its timeout of {timeout:g} s and was stopped") from None
    except BaseException:
        # Cancelled (or failed) while the script runs: it must not outlive its caller.
        await _stop_group(proc)
        raise
    duration = time.monotonic() - started
    stderr = stderr_bytes.decode("utf-8", errors="replace")
    return ScriptResult(output=_interpret(path, returncode, stdout, stderr, overflow.is_set()), stderr=stderr, duration_s=duration)


def _interpret(path: Path, returncode: int, stdout: bytes, stderr: str, overflowed: bool) -> object:
    if overflowed:
        raise ScriptOutputInvalid(f"script {path} printed more than {_STDOUT_CAP >> 20} MiB on stdout and was stopped")
    if returncode != 0:
        if returncode < 0:
            try:
                how = f"was killed by {signal.Signals(-returncode).name}"
            except ValueError:
                how = f"was killed by signal {-returncode}"
        else:
            how = f"exited with status {returncode}"
        tail_lines = stderr.rstrip().splitlines()[-_MESSAGE_STDERR_LINES:]
        detail = ("; stderr ends with:\n" + "\n".join(f"  {line}" for line in tail_lines)) if tail_lines else " (no stderr)"
        raise ScriptFailed(f"script {path} {how}{detail}", exit_code=returncode, stderr_tail=stderr)
    try:
        text = stdout.decode("utf-8")
    except UnicodeDecodeError:
        raise ScriptOutputInvalid(f"script {path} printed bytes on stdout that are not UTF-8 text") from None
    if not text.strip():
        raise ScriptOutputInvalid(
            f"script {path} exited successfully but printed nothing on stdout; a script agent "
            "must print its result (JSON, or plain text)"
        )
    try:
        return json.loads(text)
    except ValueError:
        return text.strip()
