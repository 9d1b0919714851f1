"""Which in-process runtime a runner hosts for a runtime name, and what "safe settings" are.

`hosted_runtime` is the one place that choice is made: the runner process calls it to run its
model, and the node calls it for estimates alone (memory, context, capacity before a load),
which construct the runtime but import neither llama_cpp nor mlx: those load with a model,
inside the runner.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from orc.node.models.runners.protocol import RunnerSettings
from orc.node.models.runtimes.base import ModelRuntime

__all__ = ["RUNTIME_NAMES", "hosted_runtime", "safe_settings"]

RUNTIME_NAMES = ("llama_cpp", "mlx")


def hosted_runtime(name: str, settings: RunnerSettings) -> ModelRuntime:
    """The in-process runtime a runner of runtime `name` runs, built with `settings`."""
    if name == "llama_cpp":
        from orc.node.models.runtimes.llama_batched import BatchedLlamaRuntime

        # Up to `slots` generations of the model decoded together in one context.
        return BatchedLlamaRuntime(n_threads=settings.threads, n_ctx=settings.context_tokens,
                                   extra_buffers=settings.extra_buffers, slots=settings.slots,
                                   probe_cache=Path(settings.probe_cache) if settings.probe_cache else None)
    if name == "mlx":
        from orc.node.models.runtimes.mlx import MlxRuntime

        return MlxRuntime(n_ctx=settings.context_tokens)
    raise ValueError(f"no runtime named {name!r} (known: {', '.join(RUNTIME_NAMES)})")


def safe_settings(settings: RunnerSettings) -> RunnerSettings:
    """The settings a runner restarts with after a crash: llama.cpp's extra buffer types off
    (the weight-repacking and AMX kernels are where llama.cpp has crashed on some CPUs). MLX
    has no optional fast path orc turns on, so for MLX they are its usual settings."""
    return replace(settings, extra_buffers=False)
