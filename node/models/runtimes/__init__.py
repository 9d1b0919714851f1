"""Model and script runtimes behind one seam (`ModelRuntime`) and one error hierarchy.

Importing this package imports neither llama-cpp-python nor MLX; that happens when a model loads.
"""

from orc.node.models.runtimes.base import (
    ChatMessage,
    GenerationDone,
    GenerationError,
    GenerationEvent,
    GenerationParams,
    ModelLoadError,
    ModelRuntime,
    RunnerDied,
    RuntimeFailure,
    ScriptFailed,
    ScriptNotFound,
    ScriptOutputInvalid,
    ScriptTimeout,
    TokenChunk,
    Usage,
)
from orc.node.models.runtimes.llama_cpp import LlamaCppRuntime
from orc.node.models.runtimes.mlx import MlxRuntime
from orc.node.models.runtimes.script import ScriptResult, resolve_script, run_script

__all__ = [
    "ChatMessage",
    "GenerationDone",
    "GenerationError",
    "GenerationEvent",
    "GenerationParams",
    "LlamaCppRuntime",
    "MlxRuntime",
    "ModelLoadError",
    "ModelRuntime",
    "RunnerDied",
    "RuntimeFailure",
    "ScriptFailed",
    "ScriptNotFound",
    "ScriptOutputInvalid",
    "ScriptResult",
    "ScriptTimeout",
    "TokenChunk",
    "Usage",
    "resolve_script",
    "run_script",
]
