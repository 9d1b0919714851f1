"""One runner process as the node sees it: started, loaded, asked for generations, stopped, or dead.

    starting ──Loaded──> ready ──stop()──> stopping ──exit──> stopped
        │                  │
        │ Failed(load)     │ exit, a signal, a bad frame
        v                  v
      stopped            dead (cause: "SIGSEGV", "exit status 1", "it sent a bad frame (...)")

The node talks to the runner over a socketpair (`orc.node.models.runners.protocol`) and reads
its stderr (`orc.node.models.runners.runner_log`). Every generation in flight when the runner
dies ends with `RunnerDied`; a frame that breaks the protocol kills the runner with SIGKILL and
counts as its death, never as an error of the node.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import os
import signal
import socket
import sys
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass

from typing_extensions import assert_never

from orc.node.models.runners.protocol import (
    MAX_REPLY_FRAME_BYTES,
    MAX_REQUEST_FRAME_BYTES,
    AskStats,
    Cancel,
    Done,
    Failed,
    Generate,
    Load,
    Loaded,
    ModelFields,
    ProtocolError,
    Reply,
    Request,
    RunnerSettings,
    Stats,
    Stop,
    Text,
    Threads,
    decode_reply,
    encode,
    frame,
    read_frame,
)
from orc.node.models.runners.cpu_share import CpuShare
from orc.node.models.runners.runner_log import MAX_LOG_LINE_CHARS, parse_log_line
from orc.node.models.runtimes.base import (
    ChatMessage,
    GenerationDone,
    GenerationError,
    GenerationEvent,
    GenerationParams,
    ModelLoadError,
    RunnerDied,
    TokenChunk,
    Usage,
)
from orc.node.models.entry import ModelEntry

__all__ = ["RUNNER_COMMAND", "RunnerProcess", "RunnerState", "death_cause"]

log = logging.getLogger(__name__)

# How long a runner asked to stop may take before it is killed: it only has to cancel its
# generations and exit, which takes milliseconds; a runner stuck in native code gets SIGKILL.
STOP_GRACE_S = 5.0
# Text a generation may have waiting for its consumer. A runner sends a batch every 50 ms;
# more than this means it floods, and it is killed (a slow consumer never falls this far behind).
MAX_PENDING_TEXT_CHARS = 16 << 20


# How the node starts a runner: this interpreter, so the runner runs the same orc and libraries.
RUNNER_COMMAND = (sys.executable, "-m", "orc.node.models.runners.child")


class RunnerState(enum.Enum):
    STARTING = "starting"
    READY = "ready"
    STOPPING = "stopping"
    STOPPED = "stopped"
    DEAD = "dead"


@dataclass(frozen=True)
class _Died:
    """Queue marker: the runner died while this generation was in flight."""

    cause: str


def death_cause(returncode: int) -> str:
    """How a process ended, as a person reads it: the signal's name, or the exit status."""
    if returncode < 0:
        try:
            return signal.Signals(-returncode).name
        except ValueError:
            return f"signal {-returncode}"
    return f"exit status {returncode}"


class _Pending:
    """One generation in flight: what the runner sent for it, waiting for its consumer."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[Text | Done | Failed | _Died] = asyncio.Queue()
        self.pending_chars = 0


class RunnerProcess:
    """One runner child hosting one model; build with `await RunnerProcess.start(...)`."""

    def __init__(self, model: ModelEntry, settings: RunnerSettings, process: asyncio.subprocess.Process,
                 reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                 on_death: Callable[[RunnerProcess, str], None], share: CpuShare | None = None) -> None:
        self.model = model
        self.settings = settings
        self.pid = process.pid
        self.loop = asyncio.get_running_loop()
        self.state = RunnerState.STARTING
        self.capacity = 1
        self.context_tokens = 0
        self.rss_bytes = 0
        self.cause = ""  # why it died, once DEAD
        self._process = process
        self._writer = writer
        self._on_death = on_death
        self._share = share
        self._requests: dict[int, _Pending] = {}
        self._next_id = 1
        self._loaded: asyncio.Future[None] = self.loop.create_future()
        self._stats: asyncio.Future[Stats] | None = None
        self._bad_frame: str | None = None
        self._tasks = [asyncio.create_task(self._read_replies(reader), name=f"runner {model.id} replies"),
                       asyncio.create_task(self._relay_stderr(), name=f"runner {model.id} stderr"),
                       asyncio.create_task(self._watch_exit(), name=f"runner {model.id} exit")]
        # One gate per process: the node sends a runner at most `capacity` generations at once;
        # the others wait here, and go to the next runner if this one dies meanwhile.
        self.gate = asyncio.Semaphore(1)

    @classmethod
    async def start(cls, runtime: str, model: ModelEntry, settings: RunnerSettings,
                    on_death: Callable[[RunnerProcess, str], None],
                    command: Sequence[str] = RUNNER_COMMAND, share: CpuShare | None = None) -> RunnerProcess:
        """Start a runner for `model` and load it; raises ModelLoadError with the runner's
        message, or RunnerDied when the runner dies before it has loaded. With a `share`, the
        runner computes with its share of the node's cores while others generate too.

        `command` starts the runner; it gets three more arguments: its socket's file
        descriptor, the node's pid and the node's log level (`orc.node.models.runners.child`).
        """
        ours, theirs = socket.socketpair()
        try:
            process = await asyncio.create_subprocess_exec(
                *command, str(theirs.fileno()), str(os.getpid()), str(logging.getLogger("orc").getEffectiveLevel()),
                stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.PIPE, pass_fds=(theirs.fileno(),))
        except BaseException:
            ours.close()
            raise
        finally:
            theirs.close()
        reader, writer = await asyncio.open_connection(sock=ours)
        runner = cls(model, settings, process, reader, writer, on_death, share)
        log.debug("runner of %s started (pid %d)", model.id, runner.pid)
        try:
            await runner._load(runtime, settings)
        except BaseException:
            await runner.stop()
            raise
        return runner

    async def _load(self, runtime: str, settings: RunnerSettings) -> None:
        model = self.model
        self._send(Load(runtime, ModelFields(model.id, model.runtime, str(model.path), model.size_bytes, model.sha256,
                                             model.chat), settings))
        await self._loaded
        self.gate = asyncio.Semaphore(self.capacity)
        self.state = RunnerState.READY

    @property
    def alive(self) -> bool:
        return self.state in (RunnerState.STARTING, RunnerState.READY)

    @property
    def in_flight(self) -> int:
        return len(self._requests)

    @property
    def max_threads(self) -> int | None:
        """The CPU threads this runner computes with when alone (None: every core)."""
        return self.settings.threads

    def set_threads(self, threads: int) -> None:
        """Have the runner compute with `threads` threads from its next step on (`CpuShare`)."""
        if self.alive:
            self._send(Threads(threads))

    def __repr__(self) -> str:
        return f"<runner of {self.model.id}, pid {self.pid}>"

    def _send(self, message: Request) -> None:
        if self._writer.is_closing():
            return
        self._writer.write(frame(message))

    async def generate(self, messages: Sequence[ChatMessage], params: GenerationParams) -> AsyncIterator[GenerationEvent]:
        """Stream one generation from the runner (the caller holds a place of `gate`).

        Closing the iterator or cancelling its consumer sends Cancel. Raises GenerationError
        for a failure the runner reports and RunnerDied when the runner dies meanwhile.
        """
        rid, self._next_id = self._next_id, self._next_id + 1
        body = encode(Generate(rid, tuple(messages), params))
        if len(body) > MAX_REQUEST_FRAME_BYTES:
            raise GenerationError(f"model {self.model.id!r}: the prompt is too large to send to its runner "
                                  f"({len(body)} bytes, at most {MAX_REQUEST_FRAME_BYTES})")
        if not self.alive:
            raise RunnerDied(self._died_message())
        pending = self._requests[rid] = _Pending()
        if self._share is not None and len(self._requests) == 1:
            self._share.busy(self)  # its share of the cores goes out before the request
        self._writer.write(len(body).to_bytes(4, "big") + body)
        finished = False
        try:
            while True:
                item = await pending.queue.get()
                match item:
                    case Text(text=text):
                        pending.pending_chars -= len(text)
                        yield TokenChunk(text)
                    case Done(text=text, prompt_tokens=prompt, completion_tokens=completion, finish_reason=reason):
                        finished = True
                        yield GenerationDone(text, Usage(prompt, completion), reason)
                        return
                    case Failed(message=message):
                        finished = True
                        raise GenerationError(message)
                    case _Died():
                        finished = True
                        raise RunnerDied(self._died_message())
                    case _:
                        assert_never(item)
        finally:
            self._requests.pop(rid, None)
            if not finished and self.alive:
                self._send(Cancel(rid))
            if self._share is not None and not self._requests:
                self._share.idle(self)

    def _died_message(self) -> str:
        return f"the runner of {self.model.id} died: {self.cause or 'it stopped'}"

    async def stats(self) -> Stats:
        """The runner's own account of its memory and generations."""
        if not self.alive:
            raise RunnerDied(self._died_message())
        if self._stats is None or self._stats.done():
            self._stats = self.loop.create_future()
            self._send(AskStats())
        return await self._stats

    async def stop(self) -> None:
        """Ask the runner to exit, kill it if it has not within STOP_GRACE_S, and reap it."""
        if self.state in (RunnerState.STARTING, RunnerState.READY):
            self.state = RunnerState.STOPPING
        self._send(Stop())
        with contextlib.suppress(Exception):
            self._writer.close()
        try:
            await asyncio.wait_for(asyncio.shield(self._process.wait()), STOP_GRACE_S)
        except asyncio.TimeoutError:
            self.kill()
            await self._process.wait()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def kill(self) -> None:
        """SIGKILL the runner now (it may already be gone)."""
        with contextlib.suppress(ProcessLookupError):
            self._process.kill()

    # ---- the tasks that listen to the runner ----

    async def _read_replies(self, reader: asyncio.StreamReader) -> None:
        try:
            while True:
                body = await read_frame(reader, MAX_REPLY_FRAME_BYTES)
                if body is None:
                    return  # the runner closed its end: _watch_exit learns how it ended
                self._handle(decode_reply(body))
        except ProtocolError as error:
            self._bad_frame = f"it sent a bad frame ({error})"
        except (ConnectionError, OSError) as error:
            log.debug("runner of %s: its socket failed: %s", self.model.id, error)
            return
        self.kill()

    def _handle(self, reply: Reply) -> None:
        match reply:
            case Loaded(capacity=capacity, context_tokens=context, rss_bytes=rss):
                self.capacity, self.context_tokens, self.rss_bytes = capacity, context, rss
                if not self._loaded.done():
                    self._loaded.set_result(None)
            case Failed(request_id=0, load=True, message=message):
                if not self._loaded.done():
                    self._loaded.set_exception(ModelLoadError(message))
            case Text(request_id=rid, text=text):
                pending = self._requests.get(rid)
                if pending is not None:  # else cancelled: its last text may still come
                    pending.pending_chars += len(text)
                    if pending.pending_chars > MAX_PENDING_TEXT_CHARS:
                        raise ProtocolError(f"more than {MAX_PENDING_TEXT_CHARS} characters waiting for one generation")
                    pending.queue.put_nowait(reply)
            case Done(request_id=rid) | Failed(request_id=rid):
                pending = self._requests.get(rid)
                if pending is not None:
                    pending.queue.put_nowait(reply)
            case Stats():
                self.rss_bytes = reply.rss_bytes
                if self._stats is not None and not self._stats.done():
                    self._stats.set_result(reply)
            case _:
                assert_never(reply)

    async def _relay_stderr(self) -> None:
        stream = self._process.stderr
        assert stream is not None
        partial = ""
        while True:
            chunk = await stream.read(65536)
            if not chunk:
                break
            lines = (partial + chunk.decode("utf-8", errors="replace")).split("\n")
            partial = lines.pop()[:MAX_LOG_LINE_CHARS]  # a line with no end in sight is cut, not kept whole
            for line in lines:
                self._log_line(line)
        if partial:
            self._log_line(partial)

    def _log_line(self, line: str) -> None:
        if not line.strip():
            return
        record = parse_log_line(line)
        if record is None:
            log.warning("runner of %s: %s", self.model.id, line[:MAX_LOG_LINE_CHARS])
        else:
            logging.getLogger(record.logger).log(record.level, "[%s] %s", self.model.id, record.message)

    async def _watch_exit(self) -> None:
        returncode = await self._process.wait()
        expected = self.state in (RunnerState.STOPPING, RunnerState.STOPPED)
        self.cause = self._bad_frame or death_cause(returncode)
        if expected and self._bad_frame is None:
            self.state = RunnerState.STOPPED
        else:
            self.state = RunnerState.DEAD
        for pending in self._requests.values():
            pending.queue.put_nowait(_Died(self.cause))
        if not self._loaded.done():
            self._loaded.set_exception(RunnerDied(self._died_message()))
        if self._stats is not None and not self._stats.done():
            self._stats.cancel()
        with contextlib.suppress(Exception):
            self._writer.close()
        if self.state is RunnerState.DEAD:
            self._on_death(self, self.cause)
        else:
            log.debug("runner of %s (pid %d) stopped", self.model.id, self.pid)
