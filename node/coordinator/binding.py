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
from dataclasses import dataclass, replace
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
    CascadeTask,
    Condition,
    DispatchTask,
    EnsembleSpec,
    EnsembleTask,
    LlmTask,
    LoopTask,
    ScriptTask,
    Vote,
)
from orc.scheduler.errors import EnsembleInvalid, Problem
from orc.scheduler.loader import EnsembleLibrary, load_ensemble, unresolved_references
from orc.scheduler.profiles import Profiles, ResolvedModel, resolve_model

# Seconds per generated token in a rank: a typical small model decodes ~20 tokens/s on a small
# device. Only the ratios between agents matter to placement, not the absolute seconds.
RANK_SECONDS_PER_TOKEN = 1 / 20.0
RANK_OTHER_AGENT_S = 0.1  # a script or a composite agent, in the same units
# A vote's judge answers with the number of a sample; a few words of preamble fit in this.
JUDGE_MAX_TOKENS = 32


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
class BoundVote:
    """A vote with its models resolved: the samples' models (round-robin), its judge's, its script."""

    spec: Vote
    models: tuple[BoundModel, ...]  # sample i runs on models[i % len(models)]
    judge: BoundModel | None = None  # by: judge
    script: Path | None = None  # by: script


@dataclass(frozen=True)
class BoundLevel:
    """One generation step an LLM agent takes: the agent itself, or one level of its cascade."""

    task: LlmTask  # the keys it runs with (a cascade level's merged over the agent's)
    model: BoundModel
    limits: Limits
    vote: BoundVote | None = None
    accept_if: Condition | None = None  # a cascade level's; None: accepted as it is


@dataclass(frozen=True)
class BoundAgent:
    """One agent with everything this machine resolved for it."""

    spec: AgentSpec
    limits: Limits
    rank: float  # critical-path length from this agent to the end of its ensemble, estimated seconds
    stays_here: bool  # `local_only`, or the run is `--local`: its generations never leave this node
    model: BoundModel | None = None  # LLM agents; a cascade: its first level's
    script: Path | None = None  # script agents: the file `script:` names
    child: BoundRun | None = None  # `ensemble:` and loop agents: the nested ensemble, bound too
    vote: BoundVote | None = None  # an LLM agent with `vote:`
    levels: tuple[BoundLevel, ...] = ()  # a cascade agent: its levels, in order

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
        models: dict[str, BoundModel | None] = {}
        votes: dict[str, BoundVote | None] = {}
        levels: dict[str, tuple[BoundLevel, ...]] = {}
        for agent in spec.agents:
            model = self._model(spec, agent, agent.task, problems, missing)
            models[agent.name] = model
            match agent.task:
                case LlmTask(vote=vote) if vote is not None and model is not None:
                    votes[agent.name] = self._vote(spec, agent, vote, model, folder, problems, missing)
                case CascadeTask():
                    levels[agent.name] = self._levels(spec, agent, agent.task, folder, problems, missing)
                    models[agent.name] = levels[agent.name][0].model if levels[agent.name] else None
        cost = {name: (model.resolved.max_tokens * RANK_SECONDS_PER_TOKEN if model else RANK_OTHER_AGENT_S)
                for name, model in models.items()}
        for name, bound_levels in levels.items():
            # A cascade may try every level, one after the other.
            cost[name] = sum(level.model.resolved.max_tokens for level in bound_levels) * RANK_SECONDS_PER_TOKEN
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
                case LlmTask() | DispatchTask() | CascadeTask():
                    pass  # a dispatch target is only known at run time
            model = models[agent.name]
            agents[agent.name] = BoundAgent(
                spec=agent, limits=agent_limits(agent, model.resolved if model else None, self.profiles, spec.source),
                rank=ranks.get(agent.name, 0.0), stays_here=self.local or agent.placement.local_only,
                model=model, script=script, child=child, vote=votes.get(agent.name),
                levels=levels.get(agent.name, ()))
        return BoundRun(spec, MappingProxyType(agents), folder)

    def _vote(self, spec: EnsembleSpec, agent: AgentSpec, vote: Vote, model: BoundModel, folder: Path,
              problems: list[Problem], missing: list[Problem]) -> BoundVote | None:
        """The models a vote's samples and judge run on (the agent's own settings with each model
        swapped in), and its script; None (with the problems noted) when one cannot be bound."""
        ok = True
        sample_models: list[BoundModel] = []
        for ref in vote.models or (model.ref,):
            swapped = self._swapped(spec, agent, model, ref, "vote.models", problems, missing)
            ok = ok and swapped is not None
            if swapped is not None:
                sample_models.append(swapped)
        judge: BoundModel | None = None
        if vote.by == "judge":
            spec_judge = vote.judge
            ref = spec_judge.model if spec_judge is not None and spec_judge.model else model.ref
            judge = self._swapped(spec, agent, model, ref, "its judge", problems, missing)
            if judge is not None:
                # The judge answers with a number: its own prompt (None: the voting code's), few tokens.
                judge = BoundModel(replace(judge.resolved,
                                           system_prompt=spec_judge.system_prompt if spec_judge else None,
                                           max_tokens=(spec_judge.max_tokens if spec_judge else None)
                                           or JUDGE_MAX_TOKENS), judge.sha256)
            ok = ok and judge is not None
        script: Path | None = None
        if vote.by == "script" and vote.script is not None:
            try:
                script = resolve_script(vote.script, ensemble_dir=folder, project_dir=self.project_dir)
            except RuntimeFailure as error:
                problems.append(Problem(spec.source, agent.name, f"vote script: {error}"))
                ok = False
        return BoundVote(vote, tuple(sample_models), judge, script) if ok else None

    def _swapped(self, spec: EnsembleSpec, agent: AgentSpec, model: BoundModel, ref: str, what: str,
                 problems: list[Problem], missing: list[Problem]) -> BoundModel | None:
        """`model`'s settings on the model `ref` names (aliases applied), checked like `model:`."""
        if ref == model.ref:
            return model
        task = LlmTask(model=ref)
        found = self._model(spec, agent, task, problems, missing, what=what)
        return BoundModel(replace(model.resolved, model=found.ref), found.sha256) if found is not None else None

    def _levels(self, spec: EnsembleSpec, agent: AgentSpec, cascade: CascadeTask, folder: Path,
                problems: list[Problem], missing: list[Problem]) -> tuple[BoundLevel, ...]:
        """A cascade's levels, each bound like an LLM agent of its own; () when one cannot be."""
        levels: list[BoundLevel] = []
        for index, level in enumerate(cascade.levels):
            what = f"cascade level {index + 1}"
            model = self._model(spec, agent, level.task, problems, missing, what=what)
            if model is None:
                continue
            vote = None
            if level.task.vote is not None:
                vote = self._vote(spec, agent, level.task.vote, model, folder, problems, missing)
                if vote is None:
                    continue
            as_llm = replace(agent, task=level.task)
            levels.append(BoundLevel(level.task, model, agent_limits(as_llm, model.resolved, self.profiles,
                                                                      spec.source), vote, level.accept_if))
        return tuple(levels) if len(levels) == len(cascade.levels) else ()

    def _model(self, spec: EnsembleSpec, agent: AgentSpec, task: object, problems: list[Problem],
               missing: list[Problem], what: str | None = None) -> BoundModel | None:
        """The model of `task` (the agent's own, a level's, a vote's), once the agent's placement
        can be met; None (with the problem noted) otherwise. `what` names which of the agent's
        models this is, in its problems."""
        here = self.local or agent.placement.local_only
        tags = agent.placement.require_tags
        if what is None and tags and (self.mesh is None or not self.mesh.tagged(tags, here)):
            # Without a mesh there is one node, this one, and it carries no tags.
            missing.append(Problem(spec.source, agent.name,
                                   f"no node has the tags it requires ({', '.join(sorted(tags))})",
                                   "start a node with 'orc-node start --tag TAG', or drop require_tags"))
            return None
        if not isinstance(task, LlmTask):
            return None
        mesh = self.mesh
        resolved = resolve_model(agent, task, self.profiles, spec.source,
                                 available=lambda m: self.catalog.get(m) is not None
                                 or (mesh is not None and mesh.offers(m, here)))
        if isinstance(resolved, Problem):
            problems.append(_about(resolved, what))
            return None
        problems_before = len(missing)
        bound = self._resolved(spec, agent, resolved, here, missing)
        if what is not None:
            missing[problems_before:] = [_about(p, what) for p in missing[problems_before:]]
        return bound

    def _resolved(self, spec: EnsembleSpec, agent: AgentSpec, resolved: ResolvedModel, here: bool,
                  missing: list[Problem]) -> BoundModel | None:
        mesh = self.mesh
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
        elif (missing_model := getattr(mesh, "missing_model", None)) is not None:
            what, fix = missing_model(resolved.model)
            missing.append(Problem(spec.source, agent.name, f"{what} (models there: {have})", fix))
        else:
            missing.append(Problem(spec.source, agent.name,
                                   f"no live node has model '{resolved.model}' (models in the mesh: {have})",
                                   "start a node that serves it, e.g. 'orc-node start --model "
                                   f"{resolved.model}', or map it with model_aliases in your orc config"))
        return None

    def _default_model(self) -> str:
        default = self.profiles.profiles.get("default")
        return default.model if default else DEFAULT_MODEL_ID


def _about(problem: Problem, what: str | None) -> Problem:
    """`problem`, said of one of an agent's models other than its own (`what`: "its judge", ...)."""
    return problem if what is None else replace(problem, message=f"{what}: {problem.message}")
