"""Where one node keeps its files: config, models, run journals, identity.

`--home DIR` (or `ORC_HOME`) puts everything under DIR. Without it, platform defaults:
XDG base directories on Linux and BSD, `~/Library/Application Support/orc` on macOS.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path


class HomeError(Exception):
    """The orc home folder cannot be used."""


@dataclass(frozen=True)
class Home:
    config_dir: Path
    data_dir: Path
    state_dir: Path

    @classmethod
    def locate(cls, home: str | os.PathLike[str] | None = None) -> "Home":
        """The home named by `home`, else `ORC_HOME`, else the platform default."""
        explicit = home if home is not None else os.environ.get("ORC_HOME") or None
        if explicit is not None:
            root = Path(explicit).expanduser().absolute()
            if root.exists() and not root.is_dir():
                raise HomeError(f"--home {root} exists and is not a folder")
            return cls(root, root, root)
        user = Path.home()
        if sys.platform == "darwin":
            root = user / "Library" / "Application Support" / "orc"
            return cls(root, root, root)
        return cls(
            Path(os.environ.get("XDG_CONFIG_HOME") or user / ".config") / "orc",
            Path(os.environ.get("XDG_DATA_HOME") or user / ".local" / "share") / "orc",
            Path(os.environ.get("XDG_STATE_HOME") or user / ".local" / "state") / "orc",
        )

    @property
    def config_file(self) -> Path:
        return self.config_dir / "config.yaml"

    @property
    def ensembles_dir(self) -> Path:
        return self.config_dir / "ensembles"

    @property
    def models_dir(self) -> Path:
        return self.data_dir / "models"

    @property
    def runs_dir(self) -> Path:
        return self.state_dir / "runs"

    @property
    def identity_dir(self) -> Path:
        return self.data_dir / "identity"

    def journal_path(self, run_id: str) -> Path:
        return self.runs_dir / f"{run_id}.journal"


def examples_dir() -> Path | None:
    """The example ensembles shipped with orc (`ensembles/` of the source tree or the wheel)."""
    here = Path(__file__).resolve().parent
    for candidate in (here.parent / "ensembles", here / "examples"):
        if candidate.is_dir():
            return candidate
    return None


def project_dir(start: Path) -> Path | None:
    """The enclosing llm-orc project folder (`.llm-orc/`), searching upwards from `start`."""
    for folder in (start, *start.parents):
        candidate = folder / ".llm-orc"
        if candidate.is_dir():
            return candidate
    return None
