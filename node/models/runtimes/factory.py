"""This node's model runtimes, built in one place for both composition roots.

`orc-node start` (`orc.node.daemon.root`) and the embedded API (`orc.node.api.Orc`) each call
`build_runtimes` once: llama.cpp always, MLX where mlx-lm is installed, and llama.cpp's extra
buffer types on or off as the `llama_cpp:` settings decide for this CPU.
"""

from __future__ import annotations

import logging
from pathlib import Path

from orc.node.models.runtimes.base import ModelRuntime
from orc.node.models.runtimes.extra_buffers import LlamaCppConfig, extra_buffers_choice
from orc.node.models.runtimes.llama_cpp import LlamaCppRuntime
from orc.node.models.runtimes.mlx import MlxRuntime, mlx_installed

__all__ = ["build_runtimes"]

log = logging.getLogger(__name__)


def build_runtimes(settings: LlamaCppConfig, config_file: Path, *, n_threads: int | None = None) -> dict[str, ModelRuntime]:
    """The runtimes of this node by name ("llama_cpp", and "mlx" where mlx-lm is installed).

    `settings` is the `llama_cpp:` section of `config_file`, named in the one log line (INFO)
    that says whether extra buffer types are on and why. `n_threads`: llama.cpp's CPU threads
    per model (default: every CPU). Loads no model. Blocking: it reads /proc/cpuinfo and finds
    out whether mlx-lm is installed, so async callers use a thread.
    """
    choice = extra_buffers_choice(settings)
    log.info("%s", choice.explain(config_file))
    runtimes: dict[str, ModelRuntime] = {
        "llama_cpp": LlamaCppRuntime(n_threads=n_threads, extra_buffers=choice.enabled)}
    if mlx_installed():
        runtimes["mlx"] = MlxRuntime()
    return runtimes
