"""Whether llama.cpp may use its extra buffer types on this CPU: the `llama_cpp:` section of
the home's config.yaml (read with the rest of the file by `orc.node.config`), and the decision
for this machine.

llama.cpp can store a model's weights in "extra" CPU buffer types, repacked into the layout a
faster matrix-multiply path reads: interleaved blocks for AVX2 and NEON (`CPU_REPACK`), or
tiles for Intel's AMX units (`AMX`). On CPUs with AMX, that path has crashed the process with
a segmentation fault at the first prompt (llama.cpp issue #20824; seen on cloud VMs with
Sapphire Rapids Xeons). Loading with extra buffer types off uses llama.cpp's ordinary kernels
instead, which on those machines run as fast.

    llama_cpp:
      extra_buffers: auto   # auto (default) | on | off

`auto` turns them off on a CPU whose /proc/cpuinfo lists an AMX flag and on everywhere else
(any other x86-64, arm64, and macOS, which has no /proc/cpuinfo and no AMX). Reading the CPU
is the shell (`extra_buffers_choice`); the section (`llama_cpp_config`) and the decision
(`choose_extra_buffers`) are pure functions of the parsed file and of the text of /proc/cpuinfo.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from pathlib import Path

from typing_extensions import assert_never

from orc.node.models.hardware import amx_flags, read_cpuinfo
from orc.scheduler.profiles import ConfigInvalid

__all__ = [
    "BadLlamaCppConfig",
    "ExtraBuffers",
    "ExtraBuffersChoice",
    "LlamaCppConfig",
    "choose_extra_buffers",
    "extra_buffers_choice",
    "llama_cpp_config",
]

_KEYS = ("extra_buffers",)


class BadLlamaCppConfig(ConfigInvalid):
    """The `llama_cpp:` section of the node's config.yaml is not usable; the message says what to write."""


class ExtraBuffers(enum.Enum):
    AUTO = "auto"
    ON = "on"
    OFF = "off"


@dataclass(frozen=True)
class LlamaCppConfig:
    extra_buffers: ExtraBuffers = ExtraBuffers.AUTO


@dataclass(frozen=True)
class ExtraBuffersChoice:
    """Whether models load with llama.cpp's extra buffer types, and why."""

    enabled: bool
    setting: ExtraBuffers
    amx: frozenset[str]  # the CPU's AMX flags, empty when it has none

    def explain(self, config_file: Path | str) -> str:
        """One line for the log: the choice, the reason, and how to force the other."""
        state = "on" if self.enabled else "off"
        other = "off" if self.enabled else "on"
        match self.setting:
            case ExtraBuffers.AUTO if self.amx:
                why = (f"this CPU has AMX ({', '.join(sorted(self.amx))}), where llama.cpp's AMX "
                       "matrix-multiply path can crash")
            case ExtraBuffers.AUTO:
                why = "this CPU has no AMX"
            case ExtraBuffers.ON | ExtraBuffers.OFF:
                why = f"`llama_cpp: {{extra_buffers: {self.setting.value}}}` in {config_file}"
            case _:
                assert_never(self.setting)
        return (f"llama.cpp extra buffer types (weight repacking) {state}: {why}; "
                f"to force them {other}, write `llama_cpp: {{extra_buffers: {other}}}` in {config_file}")


def choose_extra_buffers(setting: ExtraBuffers, cpuinfo: str) -> ExtraBuffersChoice:
    """The choice for a CPU described by `cpuinfo` (the text of /proc/cpuinfo, "" if none):
    `on` and `off` are obeyed; `auto` is off exactly when the CPU has an AMX flag."""
    amx = amx_flags(cpuinfo)
    match setting:
        case ExtraBuffers.ON:
            enabled = True
        case ExtraBuffers.OFF:
            enabled = False
        case ExtraBuffers.AUTO:
            enabled = not amx
        case _:
            assert_never(setting)
    return ExtraBuffersChoice(enabled=enabled, setting=setting, amx=amx)


def llama_cpp_config(root: object, source: str = "the config file") -> LlamaCppConfig:
    """The `llama_cpp:` section of a parsed node config; defaults when absent.

    YAML 1.1 reads a bare `on` and `off` as booleans, so true and false are accepted for them.
    """
    section = root.get("llama_cpp") if isinstance(root, dict) else None
    if section is None:
        return LlamaCppConfig()
    fix = "write `extra_buffers: auto` (or on, or off) under `llama_cpp:`"
    if not isinstance(section, dict):
        raise BadLlamaCppConfig(f"{source}: `llama_cpp:` must be a mapping; {fix}")
    unknown = [str(key) for key in section if key not in _KEYS]
    if unknown:
        raise BadLlamaCppConfig(f"{source}: llama_cpp: unknown key {', '.join(map(repr, unknown))} "
                                f"(known: {', '.join(_KEYS)}); {fix}")
    value = section.get("extra_buffers", ExtraBuffers.AUTO.value)
    if value is True or value is False:
        return LlamaCppConfig(ExtraBuffers.ON if value else ExtraBuffers.OFF)
    if isinstance(value, str):
        try:
            return LlamaCppConfig(ExtraBuffers(value.strip().lower()))
        except ValueError:
            pass
    raise BadLlamaCppConfig(f"{source}: llama_cpp.extra_buffers must be auto, on or off, not {value!r}; {fix}")


def extra_buffers_choice(settings: LlamaCppConfig) -> ExtraBuffersChoice:
    """The choice for this machine: the `llama_cpp:` settings against this CPU's /proc/cpuinfo."""
    return choose_extra_buffers(settings.extra_buffers, read_cpuinfo())
