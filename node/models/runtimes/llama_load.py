"""Loading a llama.cpp model: quiet, one load at a time in the process, and with llama.cpp's
extra buffer types (weight repacking, and the AMX path that crashes on some Intel Xeons) on or
off as asked (`orc.node.models.runtimes.extra_buffers`). llama.cpp's own log is routed to
Python logging at DEBUG (`orc.node.models.runtimes.llama_log`), never to the terminal.

`llama_cpp` itself is imported only when a model loads.
"""

from __future__ import annotations

import contextlib
import functools
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from orc.node.models.hardware import read_cpuinfo
from orc.node.models.runtimes import llama_log
from orc.node.models.runtimes.base import ModelLoadError
from orc.node.models.runtimes.extra_buffers import ExtraBuffers, choose_extra_buffers

__all__ = ["extra_buffers_for_this_cpu", "load_llama"]

# llama-cpp-python's `verbose=False` silences a load by pointing the process's stdout and
# stderr file descriptors at /dev/null and back. Two loads interleaved in two threads would
# restore them in the wrong order and leave stderr pointing at /dev/null for good, so loads
# never overlap, in this runtime or any other in the process. `load_llama` also swaps a
# function of llama-cpp-python's module for the length of a load, which this lock keeps to one
# load at a time.
_LOAD_LOCK = threading.Lock()


@functools.lru_cache(maxsize=1)
def extra_buffers_for_this_cpu() -> bool:
    """The `auto` choice for this machine's CPU: off where it has AMX (read once a process)."""
    return choose_extra_buffers(ExtraBuffers.AUTO, read_cpuinfo()).enabled


def load_llama(path: Path, *, extra_buffers: bool, **options: Any) -> Any:
    """Blocking: a quiet `llama_cpp.Llama` for the GGUF at `path`, loaded with llama.cpp's extra
    buffer types on or off, its log routed to the `orc.llama_cpp` logger.

    `options` are `Llama`'s other keyword arguments (n_ctx, n_threads, ...). Raises what
    `Llama` raises, and `ModelLoadError` when `extra_buffers` is False and this
    llama-cpp-python is too old to turn them off.
    """
    import llama_cpp

    llama_log.route_llama_logs(llama_cpp)
    with _LOAD_LOCK, llama_log.held(), _model_params(llama_cpp.llama_cpp, use_extra_bufts=extra_buffers):
        return llama_cpp.Llama(model_path=str(path), verbose=False, **options)


@contextlib.contextmanager
def _model_params(bindings: Any, *, use_extra_bufts: bool) -> Iterator[None]:
    """While the block runs, llama-cpp-python's model parameters come with `use_extra_bufts` set.

    `Llama.__init__` takes no argument for it: it starts from
    `llama_cpp.llama_cpp.llama_model_default_params()`, looked up on that module when called, so
    the defaults are replaced there for the length of one load (under `_LOAD_LOCK`). llama.cpp
    itself has no environment variable for it (`--no-repack` belongs to its command-line
    tools), and a `Llama` cannot be told after loading, as the weights are placed by then.
    """
    fields = {name for name, *_ in getattr(bindings.llama_model_params, "_fields_", ())}
    if "use_extra_bufts" not in fields:
        if not use_extra_bufts:
            raise ModelLoadError(
                "this llama-cpp-python cannot turn off llama.cpp's extra buffer types "
                "(its model parameters have no use_extra_bufts); upgrade it: pip install -U llama-cpp-python")
        yield  # an old llama.cpp: extra buffer types are always on, as asked
        return
    defaults = bindings.llama_model_default_params

    def with_extra_bufts() -> Any:
        params = defaults()
        params.use_extra_bufts = use_extra_bufts
        return params

    bindings.llama_model_default_params = with_extra_bufts
    try:
        yield
    finally:
        bindings.llama_model_default_params = defaults
