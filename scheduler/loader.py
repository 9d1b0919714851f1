"""YAML -> validated `EnsembleSpec`.

The whole file is checked before anything runs and every problem is reported at once, each
naming the file, the agent and a fix. Files are hostile input: size, alias expansion and
nesting are capped before any value is built, so a YAML bomb costs milliseconds, not memory.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path


from orc.scheduler.dag import find_cycle
from orc.scheduler.ensemble import (
    AgentName,
    AgentSpec,
    AgentTask,
    DispatchTask,
    EnsembleSpec,
    EnsembleTask,
    FieldRef,
    LoopTask,
)
from orc.scheduler.errors import EnsembleInvalid, EnsembleNotFound, Problem, did_you_mean
from orc.scheduler.agent_parser import (
    TOP_LEVEL_KEYS,
    kind_of,
    optional_str,
    parse_agent,
    parse_condition,
    parse_depends_on,
)
from orc.scheduler.primitives_parser import parse_budget
from orc.scheduler.ensemble_file import parse_yaml, read_following_links, real_path

# Caps on hostile files. Real ensembles are a few KiB with a few dozen agents.
MAX_AGENTS = 500  # stops quadratic validation work on generated junk
MAX_NESTING_DEPTH = 8  # nested `ensemble:` / `loop.body` levels; stops runaway recursion


# No '.': `${agent.field}` splits on dots. No '[', '/', '#': fan-out instances and nested
# runs are shown as `name[i]`, `parent/child`, `loop#2/child`.



@dataclass(frozen=True)
class EnsembleLibrary:
    """Where ensemble names resolve: folders searched in order (first match wins)."""

    folders: tuple[Path, ...]

    def resolve(self, reference: str, *, relative_to: Path | None = None, cwd: Path | None = None) -> Path:
        """The file for a name or a path (raises EnsembleNotFound).

        A path (it has a '/', starts with '.' or '~', or ends in .yaml/.yml) is looked for in
        `relative_to` (the folder of the ensemble that nests it) first, then relative to `cwd`
        (the caller's folder; default: this process's). `NAME.yaml` that is no file falls back
        to the name NAME; a path with a '/' does not: it is reported as a missing file. A name
        is looked for in `relative_to`, then in the library folders in order.
        """
        as_path = Path(reference).expanduser()
        anchored = as_path if as_path.is_absolute() or cwd is None else cwd / as_path
        suffixed = reference.endswith((".yaml", ".yml"))
        pathlike = "/" in reference or "\\" in reference or reference.startswith((".", "~"))
        name = reference
        if suffixed or pathlike:
            nested = [relative_to / as_path] if relative_to and not as_path.is_absolute() else []
            for candidate in [*nested, anchored]:
                if candidate.is_file():
                    return candidate
            if anchored.exists() or anchored.is_symlink():
                return anchored  # there but not a regular file: the loader says exactly what is wrong
            if pathlike:
                raise EnsembleNotFound(reference, (), missing_file=anchored.absolute())
            name = reference.rsplit(".", 1)[0]
        folders = ((relative_to,) if relative_to else ()) + self.folders
        for folder in folders:
            found = _find_in_folder(folder, name)
            if found is not None:
                return found
        available = self.available()
        raise EnsembleNotFound(reference, tuple(f for f in folders if f.is_dir()), available,
                               suggestion=did_you_mean(name, available),
                               missing_file=anchored.absolute() if suffixed else None)

    def available(self) -> tuple[str, ...]:
        """Every ensemble name found in the library folders, sorted, first folder winning."""
        names: dict[str, Path] = {}
        for folder in self.folders:
            for path in _yaml_files(folder):
                names.setdefault(path.stem, path)
        return tuple(sorted(names))

    def entries(self) -> tuple[tuple[str, Path], ...]:
        """(name, file) of every ensemble in the library; a name shadowed by an earlier folder is left out."""
        names: dict[str, Path] = {}
        for folder in self.folders:
            for path in _yaml_files(folder):
                names.setdefault(path.stem, path)
        return tuple(sorted(names.items()))


def _yaml_files(folder: Path) -> list[Path]:
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.rglob("*") if p.suffix in (".yaml", ".yml") and p.is_file())


def _find_in_folder(folder: Path, name: str) -> Path | None:
    if not folder.is_dir():
        return None
    for suffix in (".yaml", ".yml"):
        direct = folder / f"{name}{suffix}"
        if direct.is_file():
            return direct
    files = _yaml_files(folder)
    for path in files:
        if path.stem == name:
            return path
    # Fall back to the `name:` field: llm-orc resolves by the declared name, not the file name.
    declared = re.compile(rf"^name:\s*['\"]?{re.escape(name)}['\"]?\s*$", re.MULTILINE)
    for path in files:
        try:
            head = path.read_text(encoding="utf-8", errors="replace")[:4096]
        except OSError:
            continue
        if declared.search(head):
            return path
    return None


def load_ensemble(path: Path, library: EnsembleLibrary | None = None) -> EnsembleSpec:
    """Load and validate the ensemble at `path` and every ensemble it nests.

    Raises `EnsembleInvalid` listing every structural problem. References that depend on the
    machine (nested ensembles that cannot be found) are listed by `unresolved_references(spec)`;
    the caller decides whether they are fatal.
    """
    return _Loader(library or EnsembleLibrary(())).load(Path(path).absolute(), stack=())


def load_ensemble_text(text: str, source: Path, library: EnsembleLibrary | None = None) -> EnsembleSpec:
    """Validate ensemble YAML given as text; `source` names it in messages and anchors relative paths."""
    loader = _Loader(library or EnsembleLibrary(()))
    return loader.build(text, Path(source), stack=())


def unresolved_references(spec: EnsembleSpec) -> tuple[tuple[Path | None, str, str], ...]:
    """(file, agent, reference) for every nested ensemble that could not be found, recursively."""
    found: list[tuple[Path | None, str, str]] = []
    resolved = {ref for ref, _ in spec.children}
    for agent in spec.agents:
        ref = _static_reference(agent.task)
        if ref is not None and ref not in resolved:
            found.append((spec.source, agent.name, ref))
    for _, child in spec.children:
        found.extend(unresolved_references(child))
    return tuple(found)


def _static_reference(task: AgentTask) -> str | None:
    match task:
        case EnsembleTask(ensemble=ref):
            return ref
        case LoopTask(body=ref):
            return ref
        case _:
            return None


@dataclass
class _Loader:
    library: EnsembleLibrary
    cache: dict[Path, EnsembleSpec] = field(default_factory=dict)

    def load(self, path: Path, stack: tuple[Path, ...]) -> EnsembleSpec:
        real = real_path(path)
        if real in self.cache:
            return self.cache[real]
        text, source = read_following_links(path)
        spec = self.build(text, source, stack)
        self.cache[real] = spec
        return spec

    def build(self, text: str, source: Path, stack: tuple[Path, ...]) -> EnsembleSpec:
        problems: list[Problem] = []
        document = parse_yaml(text, source)
        if not isinstance(document, dict):
            raise EnsembleInvalid([Problem(source, None, f"the file must be a YAML mapping, not {kind_of(document)}",
                                           "start with 'name:' and 'agents:'")])
        warnings: list[str] = []
        for key in document:
            if key not in TOP_LEVEL_KEYS:
                warnings.append(f"{source}: unknown top-level key '{key}' ignored")
        name = document.get("name", source.stem)
        if not isinstance(name, str) or not name.strip():
            problems.append(Problem(source, None, "'name' must be a non-empty string"))
            name = source.stem
        description = optional_str(document, "description", source, None, problems) or ""
        default_task = optional_str(document, "default_task", source, None, problems)
        budget = None
        if document.get("budget") is not None:
            budget = parse_budget(document["budget"], lambda message, fix=None: problems.append(
                Problem(source, None, message, fix)), where="budget")
        ship_scripts = document.get("ship_scripts", False)
        if not isinstance(ship_scripts, bool):
            problems.append(Problem(source, None, f"'ship_scripts' must be true or false, not {kind_of(ship_scripts)}",
                                    "write 'ship_scripts: true' to let a Ray cluster run this file's scripts"))
            ship_scripts = False
        raw_agents = document.get("agents")
        agents: list[AgentSpec] = []
        if raw_agents is None:
            problems.append(Problem(source, None, "no 'agents' list", "add 'agents:' with at least one agent"))
        elif not isinstance(raw_agents, list) or not raw_agents:
            problems.append(Problem(source, None, f"'agents' must be a non-empty list, not {kind_of(raw_agents)}"))
        elif len(raw_agents) > MAX_AGENTS:
            problems.append(Problem(source, None, f"{len(raw_agents)} agents; at most {MAX_AGENTS} are allowed"))
        else:
            outline: list[tuple[str, tuple[AgentName, ...], list[tuple[str, FieldRef]]]] = []
            for index, raw in enumerate(raw_agents):
                agent = parse_agent(raw, index, source, problems)
                if agent is not None:
                    agents.append(agent)
                    outline.append((agent.name, agent.depends_on, _references(agent)))
                elif isinstance(raw, dict) and isinstance(raw.get("name"), str):
                    # Still check the graph around an agent with other problems, so one
                    # pass reports everything.
                    deps = parse_depends_on(raw.get("depends_on"), lambda *a, **k: None)
                    when = parse_condition(raw.get("when")) if "when" in raw else None
                    outline.append((raw["name"], deps, [("when", when.ref)] if when else []))
            _check_graph(outline, source, problems)
        children: list[tuple[str, EnsembleSpec]] = []
        if not problems:
            children = self._load_children(agents, source, stack, problems, warnings)
        if problems:
            raise EnsembleInvalid(problems)
        return EnsembleSpec(
            name=name, agents=tuple(agents), description=description, default_task=default_task,
            source=source, warnings=tuple(warnings), children=tuple(children), budget=budget,
            ship_scripts=ship_scripts,
        )

    def _load_children(self, agents: list[AgentSpec], source: Path, stack: tuple[Path, ...],
                       problems: list[Problem], warnings: list[str]) -> list[tuple[str, EnsembleSpec]]:
        children: list[tuple[str, EnsembleSpec]] = []
        here = real_path(source)
        chain = stack + (here,)
        for agent in agents:
            reference = _static_reference(agent.task)
            if reference is None or any(ref == reference for ref, _ in children):
                continue
            try:
                child_path = self.library.resolve(reference, relative_to=source.parent)
            except EnsembleNotFound:
                continue  # machine-dependent: reported by unresolved_references()
            real = real_path(child_path)
            if real in chain:
                cycle = " -> ".join(p.stem for p in chain[chain.index(real):]) + f" -> {real.stem}"
                problems.append(Problem(source, agent.name, f"nested ensembles form a cycle: {cycle}",
                                        "an ensemble cannot contain itself; use 'loop:' to repeat work"))
                continue
            if len(chain) >= MAX_NESTING_DEPTH:
                problems.append(Problem(source, agent.name,
                                        f"ensembles nest deeper than {MAX_NESTING_DEPTH} levels",
                                        "flatten the composition"))
                continue
            try:
                child = self.load(child_path, chain)
            except EnsembleInvalid as invalid:
                problems.extend(invalid.problems)
                continue
            warnings.extend(child.warnings)
            children.append((reference, child))
        return children


def _check_graph(outline: list[tuple[str, tuple[AgentName, ...], list[tuple[str, FieldRef]]]],
                 source: Path, problems: list[Problem]) -> None:
    names = [name for name, _, _ in outline]
    seen: set[str] = set()
    for name in names:
        if name in seen:
            problems.append(Problem(source, name, "duplicate agent name", "agent names must be unique"))
        seen.add(name)
    for name, depends_on, references in outline:
        for dep in depends_on:
            if dep == name:
                problems.append(Problem(source, name, "depends on itself", "remove it from depends_on"))
            elif dep not in seen:
                problems.append(Problem(source, name, f"depends on unknown agent '{dep}'",
                                        did_you_mean(dep, names) or f"agents are: {', '.join(names)}"))
        for what, ref in references:
            if ref.agent not in depends_on:
                fix = f"add '{ref.agent}' to depends_on" if ref.agent in seen else \
                    (did_you_mean(ref.agent, names) or "refer to an agent of this ensemble")
                problems.append(Problem(source, name, f"'{what}' refers to '{ref.agent}', "
                                        "which is not in its depends_on", fix))
    graph = {name: tuple(d for d in deps if d in seen and d != name) for name, deps, _ in outline}
    cycle = find_cycle(graph)
    if cycle:
        problems.append(Problem(source, cycle[0], "dependency cycle: " + " -> ".join(cycle),
                                "remove one of these depends_on entries"))


def _references(agent: AgentSpec) -> list[tuple[str, FieldRef]]:
    refs: list[tuple[str, FieldRef]] = []
    if agent.when is not None:
        refs.append(("when", agent.when.ref))
    if isinstance(agent.task, DispatchTask):
        refs.append(("dispatch", agent.task.target))
    return refs
