"""What this machine is: architecture, cores, memory, accelerator. Read once, cheaply."""

from __future__ import annotations

import os
import platform
import sys
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Hardware:
    arch: str
    cores: int
    ram_total_bytes: int | None
    ram_available_bytes: int | None
    accelerator: str  # "metal" | "cuda" | "none"
    system: str

    def summary(self) -> str:
        parts = [self.arch, f"{self.cores} cores"]
        if self.ram_total_bytes:
            ram = f"{self.ram_total_bytes / (1 << 30):.1f} GiB RAM"
            if self.ram_available_bytes is not None:
                ram += f" ({self.ram_available_bytes / (1 << 30):.1f} GiB free)"
            parts.append(ram)
        parts.append("no accelerator" if self.accelerator == "none" else self.accelerator)
        return " · ".join(parts)


def probe() -> Hardware:
    """This machine's hardware, from the OS (no subprocesses, no network)."""
    total, available = _memory()
    return Hardware(
        arch=platform.machine() or "unknown",
        cores=os.cpu_count() or 1,
        ram_total_bytes=total,
        ram_available_bytes=available,
        accelerator=_accelerator(),
        system=platform.system() or sys.platform,
    )


def _memory() -> tuple[int | None, int | None]:
    meminfo = Path("/proc/meminfo")
    if meminfo.is_file():
        values: dict[str, int] = {}
        try:
            for line in meminfo.read_text().splitlines():
                key, _, rest = line.partition(":")
                fields = rest.split()
                if fields and fields[0].isdigit():
                    values[key] = int(fields[0]) * 1024  # reported in KiB
        except OSError:
            values = {}
        if "MemTotal" in values:
            return values["MemTotal"], values.get("MemAvailable")
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"), None
    except (ValueError, OSError, AttributeError):
        return None, None


def _accelerator() -> str:
    if sys.platform == "darwin" and platform.machine() == "arm64":
        return "metal"  # every Apple-silicon Mac has a Metal GPU
    if Path("/proc/driver/nvidia/version").exists():
        return "cuda"
    return "none"


# -- CPU features ---------------------------------------------------------------------------

# Intel's Advanced Matrix Extensions (Sapphire Rapids and later Xeons), as Linux names them in
# /proc/cpuinfo. llama.cpp has a matrix-multiply path of its own for them (docs/runtimes.md).
AMX_FLAGS = frozenset({"amx_tile", "amx_int8", "amx_bf16"})

CPUINFO = Path("/proc/cpuinfo")
# /proc/cpuinfo is about 1.5 KiB per logical CPU; this is room for several thousand.
_CPUINFO_MAX_BYTES = 8 << 20


def cpu_flags(cpuinfo: str) -> frozenset[str]:
    """The CPU feature flags listed in the text of /proc/cpuinfo: the union of every `flags`
    line (x86) and every `Features` line (arm64). Empty for text without them."""
    flags: set[str] = set()
    for line in cpuinfo.splitlines():
        key, colon, value = line.partition(":")
        if colon and key.strip() in ("flags", "Features"):
            flags.update(value.split())
    return frozenset(flags)


def amx_flags(cpuinfo: str) -> frozenset[str]:
    """The AMX flags (`amx_tile`, `amx_int8`, `amx_bf16`) of the CPU /proc/cpuinfo describes."""
    return cpu_flags(cpuinfo) & AMX_FLAGS


def read_cpuinfo(path: Path = CPUINFO) -> str:
    """The text of /proc/cpuinfo, or "" where there is none (macOS) or it cannot be read."""
    try:
        with path.open("rb") as f:
            return f.read(_CPUINFO_MAX_BYTES).decode("utf-8", errors="replace")
    except OSError:
        return ""
