"""This node's model runtimes, built in one place for both composition roots.

`orc-node start` (`orc.node.daemon.root`) and the embedded API (`orc.node.api.Orc`) each call
`build_runtimes` once: llama.cpp always, MLX where mlx-lm is installed, each running its models
in runner processes (`orc.node.models.runners`), and llama.cpp's extra buffer types on or off as
the `llama_cpp:` settings decide for this CPU.
"""

from __future__ import annotations

import logging
from pathlib import Path

from orc.node.models.runners import RunnerRuntime, RunnerSettings
from orc.node.models.runners.cpu_share import CpuShare
from orc.node.models.runtimes.extra_buffers import LlamaCppConfig, extra_buffers_choice
from orc.node.models.runtimes.mlx import mlx_installed
from orc.node.models.runtimes.probe_cache import FILE_NAME as PROBES_FILE

__all__ = ["build_runtimes"]

log = logging.getLogger(__name__)


def build_runtimes(settings: LlamaCppConfig, config_file: Path, *, n_threads: int | None = None,
                   slots: int = 1, state_dir: Path | None = None) -> dict[str, RunnerRuntime]:
    """The runtimes of this node by name ("llama_cpp", and "mlx" where mlx-lm is installed).

    `settings` is the `llama_cpp:` section of `config_file`, named in the one log line (INFO)
    that says whether extra buffer types are on and why. `n_threads`: llama.cpp's CPU threads
    per model (default: every CPU), shared evenly among the runners generating at the same time
    (`orc.node.models.runners.cpu_share`); `slots`: sequences one runner decodes together where its
    runtime batches (the `admission: slots:` setting); `state_dir`: the home's state folder,
    where llama.cpp runners keep what their load probes found (`llama-probes.json`; None: they
    probe at every load). Starts no runner and imports neither
    llama_cpp nor mlx. Blocking: it reads /proc/cpuinfo and finds out whether mlx-lm is
    installed, so async callers use a thread. Callers `close()` each runtime when done.
    """
    choice = extra_buffers_choice(settings)
    log.info("%s", choice.explain(config_file))
    probes = str(state_dir / PROBES_FILE) if state_dir is not None else ""
    runner_settings = RunnerSettings(threads=n_threads, slots=slots, extra_buffers=choice.enabled, probe_cache=probes)
    share = CpuShare()  # one for the node: runners of every runtime compete for the same cores
    runtimes = {"llama_cpp": RunnerRuntime("llama_cpp", runner_settings, share=share)}
    if mlx_installed():
        runtimes["mlx"] = RunnerRuntime("mlx", runner_settings, share=share)
    return runtimes
