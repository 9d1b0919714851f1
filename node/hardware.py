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
