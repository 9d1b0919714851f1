"""An orc home seen from one working folder: its catalog, ensembles, profiles, and the engines
that run there.

Both composition roots use it: the embedded API (`orc.node.api.Orc`, whose folder is the
caller's) and the daemon's engine factory (`orc.node.daemon.control.mesh_engines`, whose folder
is the one the command line sent), so a run reads profiles, ensembles and journals the same way
wherever it is coordinated.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping
from pathlib import Path

from typing import TYPE_CHECKING

from orc.node.coordinator.local import LOCAL_NODE_ID
from orc.node.home import Home, examples_dir, project_dir
from orc.node.models.catalog import DEFAULT_MODEL_ID, Catalog
from orc.scheduler.ensemble import EnsembleSpec
from orc.scheduler.loader import EnsembleLibrary, load_ensemble
from orc.scheduler.profiles import Profiles, builtin_profiles, load_profiles

if TYPE_CHECKING:  # the engine is imported when one is made: `orc run` through a daemon needs none
    from orc.node.coordinator.agent_errors import ScriptRunner
    from orc.node.coordinator.engine import Engine
    from orc.node.coordinator.placing import Placer
    from orc.node.models.runtimes.base import ModelRuntime


class Workspace:
    """`home` from `folder`: the project enclosing the folder (`.llm-orc/`), if any, applies."""

    def __init__(self, home: Home, folder: Path) -> None:
        self.home = home
        self.folder = folder.absolute()
        self.catalog = Catalog(home.models_dir)
        self.project = project_dir(self.folder)
        self._profiles: Profiles | None = None

    @property
    def library(self) -> EnsembleLibrary:
        """Where ensemble names resolve: the project's, the folder's, the home's, the shipped examples."""
        project_ensembles = (self.project / "ensembles") if self.project else self.folder / ".llm-orc" / "ensembles"
        folders = [project_ensembles, self.folder / "ensembles", self.home.ensembles_dir]
        shipped = examples_dir()
        if shipped is not None:
            folders.append(shipped)
        unique: list[Path] = []
        for candidate in folders:
            if candidate.resolve() not in [f.resolve() for f in unique]:
                unique.append(candidate)
        return EnsembleLibrary(tuple(unique))

    def locate(self, name_or_path: str) -> Path:
        """The ensemble file for a name or a path (raises EnsembleNotFound); a relative path is
        relative to the folder."""
        return self.library.resolve(name_or_path, cwd=self.folder)

    def load(self, name_or_path: str) -> EnsembleSpec:
        """Load and validate an ensemble (raises EnsembleInvalid / EnsembleNotFound)."""
        return load_ensemble(self.locate(name_or_path), self.library)

    @property
    def profiles(self) -> Profiles:
        """The home's profiles, then the project's (its config.yaml and profiles/*.yaml)."""
        if self._profiles is None:
            files = [self.home.config_file]
            if self.project is not None:
                files.append(self.project / "config.yaml")
                profile_dir = self.project / "profiles"
                if profile_dir.is_dir():
                    files.extend(sorted(profile_dir.glob("*.yaml")))
            self._profiles = load_profiles(files, builtin_profiles(DEFAULT_MODEL_ID))
        return self._profiles

    def engine(self, *, runtimes: Mapping[str, ModelRuntime], placer: Placer | None = None,
               node_id: str = LOCAL_NODE_ID, local: bool = False, seed: int | None = None,
               journal: bool = True, clock: Callable[[], float] = time.time,
               entropy: Callable[[int], bytes] = os.urandom,
               shipped_scripts: ScriptRunner | None = None) -> Engine:
        """An engine for runs from this folder. Without `placer`, it runs everything on
        `runtimes`; with one (the daemon's mesh), LLM agents go where it places them and `node_id`
        is the coordinating node's id. `journal`: keep journals under the home's runs folder.
        `shipped_scripts`: where the scripts of ensembles with `ship_scripts: true` run."""
        from orc.node.coordinator.engine import Engine

        return Engine(
            catalog=self.catalog, profiles=self.profiles, library=self.library,
            runs_dir=self.home.runs_dir if journal else None, node_id=node_id, placer=placer, local=local,
            runtimes=dict(runtimes) if placer is None else {}, project_dir=self.project, workdir=self.folder,
            seed=seed, clock=clock, entropy=entropy, shipped_scripts=shipped_scripts,
        )
