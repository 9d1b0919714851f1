"""`RunnerRuntime`: a `ModelRuntime` whose models each run in a runner process of their own.

One `RunnerRuntime` per runtime name ("llama_cpp", "mlx"); it starts a runner per model variant
on first use (or `load`), sends it at most its capacity of generations at once (the rest wait
here), and stops it on `unload` or `close`, which gives the model's memory back to the operating
system. The node's process imports neither llama_cpp nor mlx: estimates (memory, context,
capacity before a load) come from the hosted runtime's own methods, which read file headers only.

A runner that dies fails the generations it was running with `RunnerDied`; generations waiting
here go to the next runner, started at once in the background, with safe settings from the first crash on
(`hosted.safe_settings`). A model whose runner crashes MAX_CRASHES times within CRASH_WINDOW_S
is unavailable for COOL_DOWN_S (`orc.node.models.runners.crashes`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import aclosing
from typing import TYPE_CHECKING

from orc.node.models.runners.cpu_share import CpuShare
from orc.node.models.runners.crashes import COOL_DOWN_S, CrashRecord
from orc.node.models.runners.hosted import hosted_runtime, safe_settings
from orc.node.models.runners.process import RUNNER_COMMAND, RunnerProcess, RunnerState
from orc.node.models.runners.protocol import RunnerSettings
from orc.node.models.runtimes.base import (
    ChatMessage,
    GenerationError,
    GenerationEvent,
    GenerationParams,
)
from orc.node.models.runtimes.generation import check_request

if TYPE_CHECKING:
    from orc.node.models.entry import ModelEntry

__all__ = ["RunnerRuntime"]

log = logging.getLogger(__name__)


class RunnerRuntime:
    """Runs the models of runtime `name` in runner processes, one per model variant.

    `settings` are the runners' (threads, context per sequence, slots, extra buffers); `clock`
    is monotonic seconds, for the crash record; `command` starts a runner (`process.RUNNER_COMMAND`);
    `share`, the node's cores shared among the runners generating at once, of this runtime and
    the others (`cpu_share`; None: each runner always computes with its own setting).
    `extra_buffers` mirrors the setting for the log and the tests.
    """

    def __init__(self, name: str, settings: RunnerSettings, *, clock: Callable[[], float] = time.monotonic,
                 command: Sequence[str] = RUNNER_COMMAND, share: CpuShare | None = None) -> None:
        self.name = name
        self.share = share
        self._command = tuple(command)
        self.settings = settings
        self.extra_buffers = settings.extra_buffers
        self._clock = clock
        # Only for estimates: constructing it loads nothing and imports no model library.
        self._estimates = hosted_runtime(name, settings)
        self._runners: dict[str, RunnerProcess] = {}  # by model id: one variant per runtime
        self._locks: dict[str, asyncio.Lock] = {}
        self._locks_loop: object = None
        self._crashes: dict[str, CrashRecord] = {}
        self._restarts: set[asyncio.Task[None]] = set()
        self._dead: set[str] = set()  # models whose last runner died and has no successor yet
        self._restart_counts: dict[str, int] = {}  # by model id: runners started after one died

    # ---- the seam ----

    async def load(self, model: ModelEntry) -> None:
        """Start the model's runner unless it runs; raises ModelLoadError with the runner's own
        message, RunnerDied if the runner dies while loading."""
        await self._runner(model)

    async def generate(self, model: ModelEntry, messages: Sequence[ChatMessage],
                       params: GenerationParams) -> AsyncIterator[GenerationEvent]:
        """Stream one generation from the model's runner, starting it if needed.

        Waits here while the runner runs its capacity of generations; a waiting generation whose
        runner dies goes to the next one. Closing the iterator or cancelling the consumer sends
        the runner Cancel. Raises RunnerDied when the runner dies while this generation runs.
        """
        check_request(model, messages, params)
        while True:
            runner = await self._runner(model)
            async with runner.gate:
                if not runner.alive:
                    continue  # it died while this one waited: to the next runner
                async with aclosing(runner.generate(messages, params)) as events:
                    async for event in events:
                        yield event
                return

    async def unload(self, model_id: str) -> None:
        """Stop the model's runner once the generations it runs end; its memory goes back to the OS."""
        runner = self._runners.pop(model_id, None)
        if runner is None:
            return
        if runner.loop is asyncio.get_running_loop():
            for _ in range(runner.capacity):
                await runner.gate.acquire()
            await runner.stop()
        else:
            runner.kill()

    async def close(self) -> None:
        """Stop every runner now, cancelling what they run (daemon shutdown, the end of an embedded run)."""
        restarts, self._restarts = list(self._restarts), set()
        for task in restarts:
            task.cancel()
        await asyncio.gather(*restarts, return_exceptions=True)
        runners, self._runners = list(self._runners.values()), {}
        here = asyncio.get_running_loop()
        for runner in runners:
            if runner.loop is not here:
                runner.kill()  # its event loop is gone; its exit is reaped by the child watcher
        await asyncio.gather(*(r.stop() for r in runners if r.loop is here), return_exceptions=True)

    def capacity(self, model: ModelEntry) -> int:
        """What the model's runner said when it loaded, or what the settings give before that."""
        runner = self._runners.get(model.id)
        if runner is not None and runner.state is RunnerState.READY:
            return runner.capacity
        return self._estimates.capacity(model)

    def unavailable_reason(self, model: ModelEntry) -> str | None:
        """Why the model is not offered now: its runner crashed too often lately (`crashes`)."""
        record = self._crashes.get(model.id)
        return record.unavailable_reason(self._clock()) if record is not None else None

    def context_tokens(self, model: ModelEntry) -> int:
        """The context window each generation of `model` has (prompt plus completion, tokens)."""
        runner = self._runners.get(model.id)
        if runner is not None and runner.context_tokens:
            return runner.context_tokens
        window = getattr(self._estimates, "context_tokens", None)
        return window(model) if callable(window) else self.settings.context_tokens

    def memory_estimate(self, model: ModelEntry) -> int:
        """Bytes the model's runner needs once loaded, from the model's file headers."""
        return self._estimates.memory_estimate(model)

    # ---- introspection for the node and the tests ----

    def runner(self, model_id: str) -> RunnerProcess | None:
        """The model's live runner (its pid, the settings it started with), or None."""
        runner = self._runners.get(model_id)
        return runner if runner is not None and runner.alive else None

    def restart_counts(self) -> dict[str, int]:
        """By model id, how many times a runner was started again after the one before it died
        (counted once the new runner is up; the node's metrics show it)."""
        return dict(self._restart_counts)

    def runner_settings(self, model_id: str) -> RunnerSettings:
        """The settings the model's next runner starts with (safe ones after a crash)."""
        record = self._crashes.get(model_id)
        return safe_settings(self.settings) if record is not None and record.safe else self.settings

    # ---- runners ----

    def _lock(self, model_id: str) -> asyncio.Lock:
        loop = asyncio.get_running_loop()
        if self._locks_loop is not loop:  # each `asyncio.run` has its own loop
            self._locks, self._locks_loop = {}, loop
        return self._locks.setdefault(model_id, asyncio.Lock())

    async def _runner(self, model: ModelEntry) -> RunnerProcess:
        async with self._lock(model.id):
            reason = self.unavailable_reason(model)
            if reason is not None:
                raise GenerationError(f"model {model.id!r} is unavailable on this node: {reason}")
            runner = self._runners.get(model.id)
            if runner is not None and runner.alive and runner.loop is asyncio.get_running_loop():
                return runner
            if runner is not None and runner.alive:
                runner.kill()  # started on an event loop that has ended: it cannot be talked to
            self._runners.pop(model.id, None)
            runner = await RunnerProcess.start(self.name, model, self.runner_settings(model.id), self._died,
                                               self._command, self.share)
            self._runners[model.id] = runner
            if model.id in self._dead:
                self._dead.discard(model.id)
                self._restart_counts[model.id] = self._restart_counts.get(model.id, 0) + 1
            return runner

    def _died(self, runner: RunnerProcess, cause: str) -> None:
        """A runner died unexpectedly: forget it, count the crash, say so once."""
        model_id = runner.model.id
        if self._runners.get(model_id) is runner:
            del self._runners[model_id]
        self._dead.add(model_id)
        record = self._crashes.get(model_id, CrashRecord()).crashed(self._clock(), cause)
        self._crashes[model_id] = record
        reason = record.unavailable_reason(self._clock())
        if reason is not None:
            log.warning("the runner of %s died: %s; %s, so the model is unavailable here for %g minutes",
                        model_id, cause, reason, COOL_DOWN_S / 60)
        else:
            log.warning("the runner of %s died: %s; it restarts now with safe settings "
                        "(llama.cpp's extra buffer types off)", model_id, cause)
            self._restart_soon(runner.model)

    def _restart_soon(self, model: ModelEntry) -> None:
        """Start the model's runner again in the background, so the node serves it again without
        waiting for a request (a waiting generation would start it anyway)."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return  # no loop (the runner was reaped after its loop ended): next use starts it
        task = loop.create_task(self._restart(model), name=f"restart runner of {model.id}")
        self._restarts.add(task)
        task.add_done_callback(self._restarts.discard)

    async def _restart(self, model: ModelEntry) -> None:
        try:
            await self._runner(model)
        except Exception as error:  # noqa: BLE001 - background task: a failed restart is logged, next use retries
            log.warning("restarting the runner of %s failed: %s", model.id, error)
