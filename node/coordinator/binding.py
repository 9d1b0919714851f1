"""Binding: an ensemble checked against this machine and its mesh, resolved into a frozen `BoundRun`.

Everything a run needs to know before it starts is decided here, once, for every agent of
the ensemble and of the ensembles it nests: the model (after profiles, aliases and fallbacks)
and the digest of its weights, the critical-path rank, the time limits, whether it may leave
this node, and the script file. A problem anywhere refuses the whole run (`RunRefused`) with
every problem listed; nothing has started then. The engine runs a `BoundRun` and never looks
the ensemble up again; only a `dispatch:` target, known once its upstream agents ran, is
bound when it is chosen.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType

from orc.node.coordinator.limits import Limits, agent_limits
from orc.node.coordinator.placing import Placer
from orc.node.models.catalog import DEFAULT_MODEL_ID, Catalog, CatalogError
from orc.node.models.runtimes.base import ModelRuntime, RuntimeFailure
from orc.node.models.runtimes.script import resolve_script
from orc.scheduler.dag import critical_path_lengths
from orc.scheduler.ensemble import (
    AgentSpec,
    DispatchTask,
    EnsembleSpec,
    EnsembleTask,
    LlmTask,
    LoopTask,
    ScriptTask,
)
from orc.scheduler.errors import EnsembleInvalid, Problem
from orc.scheduler.loader import EnsembleLibrary, load_ensemble, unresolved_references
from orc.scheduler.profiles import Profiles, ResolvedModel, resolve_model

# Seconds per generated token in a rank: a typical small model decodes ~20 tokens/s on a small
# device. Only the ratios between agents matter to placement, not the absolute seconds.
RANK_SECONDS_PER_TOKEN = 1 / 20.0
RANK_OTHER_AGENT_S = 0.1  # a script or a composite agent, in the same units


class RunRefused(Exception):
    """The ensemble cannot run on this machine; nothing was started."""

    def __init__(self, problems: list[Problem], exit_code: int) -> None:
        self.problems = tuple(problems)
        self.exit_code = exit_code
        super().__init__(EnsembleInvalid(problems).summary())


@dataclass(frozen=True)
class BoundModel:
    """The model an LLM agent runs on, resolved before the run."""

    resolved: ResolvedModel  # the model reference ("ID" or "ID@RUNTIME") and its generation settings
    sha256: str | None  # with a mesh: the weights this node has under that id, which peers must match; else None

    @property
    def ref(self) -> str:
        return self.resolved.model


@dataclass(frozen=True)
class BoundAgent:
    """One agent with everything this machine resolved for it."""

    spec: AgentSpec
    limits: Limits
    rank: float  # critical-path length from this agent to the end of its ensemble, estimated seconds
    stays_here: bool  # `local_only`, or the run is `--local`: its generations never leave this node
    model: BoundModel | None = None  # LLM agents
    script: Path | None = None  # script agents: the file `script:` names
    child: BoundRun | None = None  # `ensemble:` and loop agents: the nested ensemble, bound too

    @property
    def name(self) -> str:
        return self.spec.name


@dataclass(frozen=True)
class BoundRun:
    """An ensemble ready to run here: every agent bound, in file order."""

    spec: EnsembleSpec
    agents: Mapping[str, BoundAgent]
    folder: Path  # the ensemble file's folder, where its dispatch targets are looked for first
    warnings: tuple[str, ...] = ()  # what may not work as the author meant (exit 0), for the user

    def agent(self, name: str) -> BoundAgent:
        return self.agents[name]


@dataclass(frozen=True)
class Binder:
    """Binds ensembles against this machine and, when the node is in a mesh, against the mesh."""

    catalog: Catalog
    profiles: Profiles
    library: EnsembleLibrary
    runtimes: Mapping[str, ModelRuntime]
    mesh: Placer | None  # None: no daemon, every agent runs here
    local: bool  # `--local`: every generation stays on this node, even with a mesh
    project_dir: Path | None

    def bind(self, spec: EnsembleSpec) -> BoundRun:
        """Bind `spec` and its nested ensembles, or raise RunRefused listing every problem.

        Missing scripts, profiles and nested ensembles exit 2; models or tags nobody has exit 3.
        May hash a model file the first time: call it off the event loop.
        """
        problems: list[Problem] = []
        missing: list[Problem] = []
        for file, agent, reference in unresolved_references(spec):
            folders = ", ".join(str(f) for f in self.library.folders if f.is_dir())
            problems.append(Problem(file, agent, f"nested ensemble '{reference}' not found next to the file "
                                    f"or in {folders or 'any ensemble folder'}",
                                    "create it or fix the name"))
        bound = self._bind(spec, problems, missing)
        if problems:
            raise RunRefused(problems + missing, 2)
        if missing:
            raise RunRefused(missing, 3)
        return BoundRun(bound.spec, bound.agents, bound.folder, tuple(spec.warnings) + tuple(self.profiles.warnings))

    def bind_dispatched(self, reference: str, parent: BoundRun) -> BoundRun:
        """The ensemble a dispatch agent chose, found next to `parent` or in the library, bound."""
        path = self.library.resolve(reference, relative_to=parent.folder)
        return self.bind(load_ensemble(path, self.library))

    def _bind(self, spec: EnsembleSpec, problems: list[Problem], missing: list[Problem]) -> BoundRun:
        folder = spec.source.parent if spec.source else Path.cwd()
        models = {agent.name: self._model(spec, agent, problems, missing) for agent in spec.agents}
        cost = {name: (model.resolved.max_tokens * RANK_SECONDS_PER_TOKEN if model else RANK_OTHER_AGENT_S)
                for name, model in models.items()}
        ranks = critical_path_lengths(spec, cost)
        agents: dict[str, BoundAgent] = {}
        for agent in spec.agents:
            script: Path | None = None
            child: BoundRun | None = None
            match agent.task:
                case ScriptTask(script=reference):
                    try:
                        script = resolve_script(reference, ensemble_dir=folder, project_dir=self.project_dir)
                    except RuntimeFailure as error:
                        problems.append(Problem(spec.source, agent.name, str(error)))
                case EnsembleTask(ensemble=reference) | LoopTask(body=reference):
                    nested = spec.child(reference)
                    if nested is not None:  # else listed by unresolved_references
                        child = self._bind(nested, problems, missing)
                case LlmTask() | DispatchTask():
                    pass  # a dispatch target is only known at run time
            model = models[agent.name]
            agents[agent.name] = BoundAgent(
                spec=agent, limits=agent_limits(agent, model.resolved if model else None, self.profiles, spec.source),
                rank=ranks.get(agent.name, 0.0), stays_here=self.local or agent.placement.local_only,
                model=model, script=script, child=child)
        return BoundRun(spec, MappingProxyType(agents), folder)

    def _model(self, spec: EnsembleSpec, agent: AgentSpec, problems: list[Problem],
               missing: list[Problem]) -> BoundModel | None:
        """An agent's model, once its placement can be met; None (with the problem noted) otherwise."""
        here = self.local or agent.placement.local_only
        tags = agent.placement.require_tags
        if tags and (self.mesh is None or not self.mesh.tagged(tags, here)):
            # Without a mesh there is one node, this one, and it carries no tags.
            missing.append(Problem(spec.source, agent.name,
                                   f"no node has the tags it requires ({', '.join(sorted(tags))})",
                                   "start a node with 'orc-node start --tag TAG', or drop require_tags"))
            return None
        if not isinstance(agent.task, LlmTask):
            return None
        mesh = self.mesh
        resolved = resolve_model(agent, agent.task, self.profiles, spec.source,
                                 available=lambda m: self.catalog.get(m) is not None
                                 or (mesh is not None and mesh.offers(m, here)))
        if isinstance(resolved, Problem):
            problems.append(resolved)
            return None
        if mesh is not None:
            return self._on_mesh(mesh, spec, agent, resolved, here, missing)
        entry = self.catalog.get(resolved.model)
        if entry is None:
            have = ", ".join(dict.fromkeys(e.id for e in self.catalog.entries())) or "none"
            via = f" (profile '{resolved.profile}')" if resolved.profile else ""
            missing.append(Problem(spec.source, agent.name,
                                   f"no node has model '{resolved.model}'{via}; models here: {have}",
                                   f"map it in your orc config: model_aliases: {{'{resolved.model}': "
                                   f"{self._default_model()}}}, or add it with 'orc models add PATH'"))
            return None
        if entry.runtime not in self.runtimes:
            missing.append(Problem(spec.source, agent.name,
                                   f"model '{resolved.model}' is served by the {entry.runtime} runtime, "
                                   f"which is not installed on this node",
                                   "install it with: pip install 'orc-mesh[mlx]'" if entry.runtime == "mlx"
                                   else f"run it on a node with the {entry.runtime} runtime"))
            return None
        return BoundModel(resolved, sha256=None)

    def _on_mesh(self, mesh: Placer, spec: EnsembleSpec, agent: AgentSpec, resolved: ResolvedModel, here: bool,
                 missing: list[Problem]) -> BoundModel | None:
        """With a mesh (this node included), placement decides at run time; here: does anyone serve it?"""
        if mesh.offers(resolved.model, here):
            # The weights this node knows under that name, if any: peers must serve the same ones.
            try:
                entry = self.catalog.get(resolved.model)
            except CatalogError:
                entry = None
            return BoundModel(resolved, sha256=entry.sha256 if entry else None)
        have = ", ".join(mesh.model_ids(here)) or "none"
        if here:
            why = "it is local_only" if agent.placement.local_only else "the run is --local"
            missing.append(Problem(spec.source, agent.name,
                                   f"{why}, and this node does not serve model '{resolved.model}' "
                                   f"(models here: {have})",
                                   f"start this node with 'orc-node start --model {resolved.model}', "
                                   + ("or drop local_only" if agent.placement.local_only else "or run without --local")))
        else:
            missing.append(Problem(spec.source, agent.name,
                                   f"no live node has model '{resolved.model}' (models in the mesh: {have})",
                                   "start a node that serves it, e.g. 'orc-node start --model "
                                   f"{resolved.model}', or map it with model_aliases in your orc config"))
        return None

    def _default_model(self) -> str:
        default = self.profiles.profiles.get("default")
        return default.model if default else DEFAULT_MODEL_ID
