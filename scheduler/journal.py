"""The run journal: an append-only msgpack file per run, written as the run happens.

Record layout (one msgpack map each; `t` names the kind):
  run    run_id, ensemble, source, input, started_at, agents   (always first)
  start  agent, at, node_id, model
  part   agent, part, output, usage: [prompt, completion], node_id, model, at
  ok     agent, output, at, usage: [prompt, completion], detail (only when not empty)
  fail   agent, error, at, retryable
  skip   agent, reason, at
  end    status, at
A result is flushed and fsynced before any dependent starts, so a killed process loses at
most the agents that were still running. A torn final record (power cut mid-write) is
ignored on reading; damage anywhere else is `JournalCorrupt`. A journal is only ever opened
as a regular file, never through a symbolic link planted in the runs folder.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import msgpack

from orc.scheduler.errors import JournalCorrupt, JournalWriteFailed, RunNotFound
from orc.scheduler.run import (
    AgentBound,
    AgentFailed,
    AgentSkipped,
    AgentStarted,
    AgentSucceeded,
    PartDone,
    PartResult,
    RunEvent,
    RunId,
    Usage,
)
from orc.scheduler.values import thaw

MAX_JOURNAL_BYTES = 256 << 20  # refuse to load absurd files rather than exhaust memory


@dataclass(frozen=True)
class RunHeader:
    run_id: RunId
    ensemble: str
    source: str | None
    input: object
    started_at: float
    agents: tuple[str, ...] = ()


@dataclass(frozen=True)
class RunEnded:
    status: str
    at: float
    reason: str | None = None  # what stopped the run early (a budget), if anything did
    usage: Usage | None = None  # every token the run spent by then, resumes before it included


@dataclass(frozen=True)
class JournalContents:
    header: RunHeader
    events: tuple[RunEvent, ...]
    ends: tuple[RunEnded, ...]

    @property
    def finished(self) -> RunEnded | None:
        return self.ends[-1] if self.ends else None


def _to_record(item: RunEvent | RunHeader | RunEnded) -> dict:
    match item:
        case RunHeader():
            return {"t": "run", "run_id": item.run_id, "ensemble": item.ensemble, "source": item.source,
                    "input": thaw(item.input), "started_at": item.started_at, "agents": list(item.agents)}
        case AgentStarted():
            return {"t": "start", "agent": item.agent, "at": item.at, "node_id": item.node_id, "model": item.model}
        case AgentBound():
            return {"t": "bound", "agent": item.agent, "node_id": item.node_id, "at": item.at,
                    "failover": item.failover}
        case PartDone(result=result):
            return {"t": "part", "agent": item.agent, "part": item.part, "output": thaw(result.output),
                    "usage": [result.usage.prompt_tokens, result.usage.completion_tokens],
                    "node_id": result.node_id, "model": result.model, "at": item.at}
        case AgentSucceeded():
            record = {"t": "ok", "agent": item.agent, "output": thaw(item.output), "at": item.at,
                      "usage": [item.usage.prompt_tokens, item.usage.completion_tokens]}
            if item.detail:
                record["detail"] = thaw(item.detail)
            return record
        case AgentFailed():
            return {"t": "fail", "agent": item.agent, "error": item.error, "at": item.at, "retryable": item.retryable,
                    "permanent": item.permanent}
        case AgentSkipped():
            return {"t": "skip", "agent": item.agent, "reason": item.reason, "at": item.at}
        case RunEnded():
            end: dict = {"t": "end", "status": item.status, "at": item.at}
            if item.reason is not None:
                end["reason"] = item.reason
            if item.usage is not None:
                end["usage"] = [item.usage.prompt_tokens, item.usage.completion_tokens]
            return end
    raise TypeError(f"not a journal item: {item!r}")


def _from_record(record: dict) -> RunEvent | RunHeader | RunEnded:
    kind = record.get("t")
    if kind == "run":
        return RunHeader(RunId(record["run_id"]), record["ensemble"], record.get("source"), record.get("input"),
                         float(record["started_at"]), tuple(record.get("agents") or ()))
    if kind == "start":
        return AgentStarted(record["agent"], float(record["at"]), record.get("node_id"), record.get("model"))
    if kind == "bound":
        node_id = record["node_id"]
        if not isinstance(node_id, str) or not node_id:
            raise ValueError("a bound record names no node")
        return AgentBound(record["agent"], node_id, float(record["at"]), bool(record.get("failover")))
    if kind == "part":
        prompt, completion = record.get("usage") or (0, 0)
        part = record["part"]
        if not isinstance(part, str) or not part:
            raise ValueError("a part record names no part")
        return PartDone(record["agent"], part, PartResult(record.get("output"), Usage(int(prompt), int(completion)),
                                                          record.get("node_id"), record.get("model")),
                        float(record["at"]))
    if kind == "ok":
        prompt, completion = record.get("usage") or (0, 0)
        detail = record.get("detail") or {}
        if not isinstance(detail, dict):
            raise ValueError("an ok record's detail is not a mapping")
        return AgentSucceeded(record["agent"], record.get("output"), float(record["at"]), Usage(prompt, completion),
                              detail)
    if kind == "fail":
        return AgentFailed(record["agent"], record["error"], float(record["at"]), bool(record.get("retryable")),
                           bool(record.get("permanent")))
    if kind == "skip":
        return AgentSkipped(record["agent"], record["reason"], float(record["at"]))
    if kind == "end":
        reason = record.get("reason")
        spent = record.get("usage")
        return RunEnded(record["status"], float(record["at"]), str(reason) if reason is not None else None,
                        Usage(int(spent[0]), int(spent[1])) if spent is not None else None)
    raise ValueError(f"unknown record kind {kind!r}")


def _default(value: object) -> object:
    # Outputs are JSON-like; anything else (a stray object from a script) is kept as text.
    return str(value)


class JournalWriter:
    """Appends records to one run's journal file; each append is durable when it returns."""

    def __init__(self, path: Path, stream: BinaryIO) -> None:
        self.path = path
        self._stream = stream
        self._packer = msgpack.Packer(default=_default, use_bin_type=True)

    @classmethod
    def create(cls, path: Path, header: RunHeader) -> "JournalWriter":
        try:
            _private_folders(path.parent)
            # O_EXCL also refuses a link planted at this name, even one pointing nowhere.
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND | os.O_NOFOLLOW | os.O_CLOEXEC,
                         0o600)
        except OSError as error:
            raise JournalWriteFailed(f"cannot create the run journal {path}: {error.strerror or error}") from None
        writer = cls(path, os.fdopen(fd, "ab"))
        writer.append(header)
        _fsync_folder(path.parent)  # the new file's directory entry must survive a crash too
        return writer

    @classmethod
    def reopen(cls, path: Path) -> "JournalWriter":
        """Continue an existing journal (resume). A torn final record is cut off first."""
        valid = _valid_length(path)
        try:
            fd = _open_journal(path, os.O_WRONLY | os.O_APPEND)
        except OSError as error:
            raise JournalWriteFailed(f"cannot reopen the run journal {path}: {error.strerror or error}") from None
        except JournalCorrupt as error:
            raise JournalWriteFailed(str(error)) from None
        stream = os.fdopen(fd, "ab")
        try:
            stream.truncate(valid)
        except OSError as error:
            stream.close()
            raise JournalWriteFailed(f"cannot reopen the run journal {path}: {error.strerror or error}") from None
        return cls(path, stream)

    def append(self, item: RunEvent | RunHeader | RunEnded) -> None:
        try:
            self._stream.write(self._packer.pack(_to_record(item)))
            self._stream.flush()
            os.fsync(self._stream.fileno())
        except OSError as error:
            # A torn record may be left behind; readers ignore a torn tail and resume cuts it.
            raise JournalWriteFailed(f"cannot write the run journal {self.path}: {error.strerror or error}; "
                                     "what finished before is kept") from None

    def close(self) -> None:
        self._stream.close()


def _fsync_folder(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return  # not supported on this platform (e.g. Windows); the file itself is synced
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _private_folders(folder: Path) -> None:
    """Create `folder` and whichever of its parents are missing, each 0700 (mkdir's mode covers only the last)."""
    missing = []
    while not folder.exists():
        missing.append(folder)
        folder = folder.parent
    for made in reversed(missing):
        try:
            os.mkdir(made, 0o700)
        except FileExistsError:
            pass


def _open_journal(path: Path, flags: int) -> int:
    """A descriptor of the journal file itself: a symbolic link or anything but a regular file is refused."""
    try:
        fd = os.open(path, flags | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as error:
        if error.errno == errno.ELOOP:
            raise JournalCorrupt(f"{path} is a symbolic link; orc does not follow links in its runs folder: "
                                 "remove it") from None
        raise
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise JournalCorrupt(f"{path} is not a regular file; move it away")
    return fd


def _iter_records(path: Path) -> Iterator[tuple[dict, int]]:
    """(record, end offset) pairs; stops quietly at a torn tail."""
    try:
        fd = _open_journal(path, os.O_RDONLY)
    except FileNotFoundError:
        raise RunNotFound(f"no journal at {path}") from None
    size = os.fstat(fd).st_size
    if size > MAX_JOURNAL_BYTES:
        os.close(fd)
        raise JournalCorrupt(f"{path}: journal is {size} bytes, over the {MAX_JOURNAL_BYTES} limit")
    with os.fdopen(fd, "rb") as stream:
        unpacker = msgpack.Unpacker(stream, raw=False, strict_map_key=False, max_buffer_size=MAX_JOURNAL_BYTES)
        while True:
            try:
                record = unpacker.unpack()
            except msgpack.OutOfData:
                return
            except (ValueError, msgpack.UnpackException) as error:
                raise JournalCorrupt(f"{path}: unreadable record at byte {unpacker.tell()}: {error}") from None
            if not isinstance(record, dict):
                raise JournalCorrupt(f"{path}: unexpected record at byte {unpacker.tell()}")
            yield record, unpacker.tell()


def _valid_length(path: Path) -> int:
    """Bytes up to the end of the last whole record."""
    ends = [end for _, end in _iter_records(path)]
    return ends[-1] if ends else 0


def read_journal(path: Path) -> JournalContents:
    """Parse a journal file. Raises RunNotFound / JournalCorrupt."""
    header: RunHeader | None = None
    events: list[RunEvent] = []
    ends: list[RunEnded] = []
    for record, _ in _iter_records(path):
        try:
            item = _from_record(record)
        except (KeyError, TypeError, ValueError) as error:
            raise JournalCorrupt(f"{path}: malformed record {record.get('t')!r}: {error}") from None
        match item:
            case RunHeader():
                if header is not None:
                    raise JournalCorrupt(f"{path}: two run headers")
                header = item
            case RunEnded():
                ends.append(item)
            case _:
                if header is None:
                    raise JournalCorrupt(f"{path}: records before the run header")
                events.append(item)
    if header is None:
        raise JournalCorrupt(f"{path}: no run header (empty or torn journal)")
    return JournalContents(header, tuple(events), tuple(ends))
