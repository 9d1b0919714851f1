"""A runner process: one model variant, hosted by one in-process runtime, served over a socket.

    python -m orc.node.models.runners.child FD PARENT_PID LOG_LEVEL

FD is this process's end of the socketpair its node made (passed with `pass_fds`), PARENT_PID
the node's pid, LOG_LEVEL the level of the node's `orc` logger. The runner loads what the first
`Load` names, runs each `Generate` as its own task (the hosted runtime runs as many at once as
its capacity and queues the rest), streams their text, cancels on `Cancel`, computes with the
threads a `Threads` gives from then on, and exits on `Stop`,
when the socket closes, or when the node dies (PR_SET_PDEATHSIG on Linux; the socket's end of
file everywhere). It never unloads on the way out: the process's memory goes back to the
operating system when it exits.

Its log records (llama.cpp's log among them, routed to `orc.llama_cpp` as in the node) go to
stderr as `ORC-LOG` lines, which the node logs as its own (`orc.node.models.runners.runner_log`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import sys
from contextlib import aclosing
from collections.abc import Callable
from pathlib import Path

from typing_extensions import assert_never

from orc.node.models.entry import ModelEntry, ModelId
from orc.node.models.runners.hosted import hosted_runtime
from orc.node.models.runners.protocol import (
    MAX_MESSAGE_CHARS,
    MAX_REQUEST_FRAME_BYTES,
    AskStats,
    Cancel,
    Done,
    Failed,
    Generate,
    Load,
    Loaded,
    Reply,
    Stats,
    Stop,
    Text,
    Threads,
    decode_request,
    frame,
    read_frame,
)
from orc.node.models.runners.resident import resident_bytes
from orc.node.models.runtimes.base import GenerationDone, ModelRuntime, RuntimeFailure, TokenChunk
from orc.node.models.runtimes.generation import STREAM_INTERVAL_S

log = logging.getLogger(__name__)

_PR_SET_PDEATHSIG = 1  # linux/prctl.h


def die_with_parent(parent_pid: int) -> None:
    """Have the kernel kill this process when its parent dies (Linux), and exit now if it already has."""
    if sys.platform.startswith("linux"):
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent_pid:  # the parent died before the call above: nobody will kill us
        os._exit(0)


class _TextBatch:
    """A generation's text on its way to the node, sent at most every STREAM_INTERVAL_S: each
    frame wakes the node's event loop, which must not happen per token. The first piece goes at
    once (time to first token), and whatever is held goes before the generation's Done."""

    def __init__(self, send: Callable[[str], None]) -> None:
        self._send = send
        self._loop = asyncio.get_running_loop()
        self._held: list[str] = []
        self._sent_at = float("-inf")
        self._timer: asyncio.TimerHandle | None = None

    def add(self, text: str) -> None:
        if not text:
            return
        self._held.append(text)
        wait = self._sent_at + STREAM_INTERVAL_S - self._loop.time()
        if wait <= 0:
            self.flush()
        elif self._timer is None:
            self._timer = self._loop.call_later(wait, self.flush)

    def flush(self) -> None:
        self.close()
        if self._held:
            self._send("".join(self._held))
            self._held.clear()
            self._sent_at = self._loop.time()

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None


class _Runner:
    """The serving loop's state: the hosted runtime, its model and the generations running."""

    def __init__(self, writer: asyncio.StreamWriter) -> None:
        self._writer = writer
        self.runtime: ModelRuntime | None = None
        self.model: ModelEntry | None = None
        self.capacity = 1
        self.generations: dict[int, asyncio.Task[None]] = {}

    def send(self, message: Reply) -> None:
        if not self._writer.is_closing():
            self._writer.write(frame(message))

    async def load(self, request: Load) -> None:
        fields = request.model
        model = ModelEntry(id=ModelId(fields.id), runtime=fields.runtime, path=Path(fields.path),
                           size_bytes=fields.size_bytes, sha256=fields.sha256, source="runner", chat=fields.chat)
        try:
            runtime = hosted_runtime(request.runtime, request.settings)
            await runtime.load(model)
        except RuntimeFailure as error:
            self.send(Failed(0, str(error)[:MAX_MESSAGE_CHARS], load=True))
            return
        except Exception as error:  # noqa: BLE001 - a foreign library's boundary: reported, not raised
            log.exception("loading %s failed", fields.id)
            self.send(Failed(0, f"cannot load model {fields.id!r}: {type(error).__name__}: {error}"[:MAX_MESSAGE_CHARS],
                             load=True))
            return
        self.runtime, self.model = runtime, model
        self.capacity = runtime.capacity(model)
        window = getattr(runtime, "context_tokens", None)
        context = window(model) if callable(window) else request.settings.context_tokens
        self.send(Loaded(self.capacity, context, resident_bytes()))

    def generate(self, request: Generate) -> None:
        if self.runtime is None or self.model is None or request.request_id in self.generations:
            self.send(Failed(request.request_id, "the runner has no model loaded", load=False))
            return
        task = asyncio.create_task(self._generate(self.runtime, self.model, request))
        self.generations[request.request_id] = task

    async def _generate(self, runtime: ModelRuntime, model: ModelEntry, request: Generate) -> None:
        rid = request.request_id
        batch = _TextBatch(lambda text: self.send(Text(rid, text)))
        try:
            async with aclosing(runtime.generate(model, request.messages, request.params)) as events:
                async for event in events:
                    match event:
                        case TokenChunk(text=text):
                            batch.add(text)
                        case GenerationDone(text=text, usage=usage, finish_reason=reason):
                            batch.flush()
                            self.send(Done(rid, text, usage.prompt_tokens, usage.completion_tokens, reason))
                        case _:
                            assert_never(event)
        except asyncio.CancelledError:
            pass  # cancelled by the node: it expects nothing more for this id
        except RuntimeFailure as error:
            self.send(Failed(rid, str(error)[:MAX_MESSAGE_CHARS], load=False))
        except Exception as error:  # noqa: BLE001 - task boundary: the node hears of every failure
            log.exception("generation %d failed", rid)
            self.send(Failed(rid, f"generation with model {model.id!r} failed: {type(error).__name__}: {error}"
                             [:MAX_MESSAGE_CHARS], load=False))
        finally:
            batch.close()
            self.generations.pop(rid, None)

    def set_threads(self, threads: int) -> None:
        """The node's share of its cores for this runner; a runtime that cannot take it (MLX
        computes on one core) keeps its own."""
        take = getattr(self.runtime, "set_threads", None)
        if callable(take):
            take(threads)

    def stats(self) -> Stats:
        running = len(self.generations)
        threads = getattr(self.runtime, "threads", None)
        return Stats(resident_bytes(), min(running, self.capacity), max(0, running - self.capacity),
                     threads() if callable(threads) else 0)


async def serve(sock: socket.socket) -> None:
    """Answer the node's requests on `sock` until Stop or the end of the stream."""
    reader, writer = await asyncio.open_connection(sock=sock)
    runner = _Runner(writer)
    try:
        while True:
            body = await read_frame(reader, MAX_REQUEST_FRAME_BYTES)
            if body is None:
                return  # the node closed its end, or died
            request = decode_request(body)
            match request:
                case Load():
                    await runner.load(request)
                case Generate():
                    runner.generate(request)
                case Cancel(request_id=rid):
                    task = runner.generations.get(rid)
                    if task is not None:
                        task.cancel()
                case Stop():
                    return
                case AskStats():
                    runner.send(runner.stats())
                case Threads(threads=threads):
                    runner.set_threads(threads)
                case _:
                    assert_never(request)
            await writer.drain()
    finally:
        for task in list(runner.generations.values()):
            task.cancel()
        with contextlib.suppress(Exception):
            await writer.drain()


def main(argv: list[str]) -> None:
    """The runner's process, as `process.RunnerProcess` starts it: FD PARENT_PID LOG_LEVEL."""
    try:
        fd, parent_pid, level = (int(arg) for arg in argv)
    except ValueError:
        sys.stderr.write("orc: error: this is a model runner; the node starts it (orc-node start, orc run)\n")
        sys.exit(2)
    die_with_parent(parent_pid)
    # Ctrl-C in a terminal reaches the whole process group: the node decides when a runner stops.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    from orc.node.models.runners.runner_log import RunnerLogHandler

    root = logging.getLogger()
    root.handlers[:] = [RunnerLogHandler(sys.stderr)]
    root.setLevel(level)
    code = 0
    try:
        asyncio.run(serve(socket.socket(fileno=fd)))
    except Exception:  # noqa: BLE001 - the process's boundary: logged for the node, then exit 1
        log.exception("the runner stopped")
        code = 1
    sys.stderr.flush()
    # Straight out: no interpreter teardown racing the runtime's threads (MLX aborts the
    # process when a thread that ran it exits first), and the OS frees the model at once.
    os._exit(code)


if __name__ == "__main__":
    main(sys.argv[1:])
