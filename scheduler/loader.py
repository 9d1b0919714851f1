"""YAML -> validated `EnsembleSpec`.

The whole file is checked before anything runs and every problem is reported at once, each
naming the file, the agent and a fix. Files are hostile input: size, alias expansion and
nesting are capped before any value is built, so a YAML bomb costs milliseconds, not memory.
"""

from __future__ import annotations

import difflib
import math
import re
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import yaml

from orc.scheduler.dag import find_cycle
from orc.scheduler.ensemble import (
    AgentName,
    AgentSpec,
    AgentTask,
    Condition,
    DispatchTask,
    EnsembleSpec,
    EnsembleTask,
    FieldRef,
    LlmTask,
    LoopTask,
    Placement,
    ScriptTask,
)
from orc.scheduler.errors import EnsembleInvalid, EnsembleNotFound, Problem
from orc.scheduler.model_refs import split_model_ref
from orc.scheduler.values import freeze

# Caps on hostile files. Real ensembles are a few KiB with a few dozen agents.
MAX_FILE_BYTES = 1 << 20  # a 1 MiB ensemble is already absurd; stops memory exhaustion on read
MAX_EXPANDED_NODES = 200_000  # stops "billion laughs" alias expansion before construction
MAX_AGENTS = 500  # stops quadratic validation work on generated junk
MAX_NESTING_DEPTH = 8  # nested `ensemble:` / `loop.body` levels; stops runaway recursion
MAX_LOOP_ITERATIONS = 100
MAX_SYMLINK_HOPS = 4

TOP_LEVEL_KEYS = ("name", "description", "default_task", "agents")
COMMON_KEYS = (
    "name", "depends_on", "fan_out", "input_key", "input_scope", "when",
    "timeout_seconds", "retries", "placement", "output_format",
)
LLM_KEYS = ("model_profile", "model", "provider", "system_prompt", "temperature", "max_tokens", "options",
            "queue_timeout_seconds")
SCRIPT_KEYS = ("script", "parameters")
COMPOSITION_KEYS = ("ensemble", "loop", "dispatch")
AGENT_KEYS = COMMON_KEYS + LLM_KEYS + SCRIPT_KEYS + COMPOSITION_KEYS
INPUT_SCOPES = ("full", "dependencies", "input")
OUTPUT_FORMATS = ("text", "json")

# No '.': `${agent.field}` splits on dots. No '[', '/', '#': fan-out instances and nested
# runs are shown as `name[i]`, `parent/child`, `loop#2/child`.
_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_-]{0,127}$")
_REF = re.compile(r"^\$\{\s*([A-Za-z0-9_][A-Za-z0-9_-]*)((?:\.[A-Za-z0-9_-]+)*)\s*\}$")
_COMPARISON = re.compile(r"^(\$\{[^}]*\})\s*(==|!=)\s*(.+)$")



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
        real = _real(path)
        if real in self.cache:
            return self.cache[real]
        text, source = _read_following_links(path)
        spec = self.build(text, source, stack)
        self.cache[real] = spec
        return spec

    def build(self, text: str, source: Path, stack: tuple[Path, ...]) -> EnsembleSpec:
        problems: list[Problem] = []
        document = _parse_yaml(text, source)
        if not isinstance(document, dict):
            raise EnsembleInvalid([Problem(source, None, f"the file must be a YAML mapping, not {_kind(document)}",
                                           "start with 'name:' and 'agents:'")])
        warnings: list[str] = []
        for key in document:
            if key not in TOP_LEVEL_KEYS:
                warnings.append(f"{source}: unknown top-level key '{key}' ignored")
        name = document.get("name", source.stem)
        if not isinstance(name, str) or not name.strip():
            problems.append(Problem(source, None, "'name' must be a non-empty string"))
            name = source.stem
        description = _optional_str(document, "description", source, None, problems) or ""
        default_task = _optional_str(document, "default_task", source, None, problems)
        raw_agents = document.get("agents")
        agents: list[AgentSpec] = []
        if raw_agents is None:
            problems.append(Problem(source, None, "no 'agents' list", "add 'agents:' with at least one agent"))
        elif not isinstance(raw_agents, list) or not raw_agents:
            problems.append(Problem(source, None, f"'agents' must be a non-empty list, not {_kind(raw_agents)}"))
        elif len(raw_agents) > MAX_AGENTS:
            problems.append(Problem(source, None, f"{len(raw_agents)} agents; at most {MAX_AGENTS} are allowed"))
        else:
            outline: list[tuple[str, tuple[AgentName, ...], list[tuple[str, FieldRef]]]] = []
            for index, raw in enumerate(raw_agents):
                agent = _parse_agent(raw, index, source, problems)
                if agent is not None:
                    agents.append(agent)
                    outline.append((agent.name, agent.depends_on, _references(agent)))
                elif isinstance(raw, dict) and isinstance(raw.get("name"), str):
                    # Still check the graph around an agent with other problems, so one
                    # pass reports everything.
                    deps = _parse_depends_on(raw.get("depends_on"), lambda *a, **k: None)
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
            source=source, warnings=tuple(warnings), children=tuple(children),
        )

    def _load_children(self, agents: list[AgentSpec], source: Path, stack: tuple[Path, ...],
                       problems: list[Problem], warnings: list[str]) -> list[tuple[str, EnsembleSpec]]:
        children: list[tuple[str, EnsembleSpec]] = []
        here = _real(source)
        chain = stack + (here,)
        for agent in agents:
            reference = _static_reference(agent.task)
            if reference is None or any(ref == reference for ref, _ in children):
                continue
            try:
                child_path = self.library.resolve(reference, relative_to=source.parent)
            except EnsembleNotFound:
                continue  # machine-dependent: reported by unresolved_references()
            real = _real(child_path)
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


def _real(path: Path) -> Path:
    """`path` with links resolved; a link loop is a problem of the file, not a crash."""
    try:
        return path.resolve()
    except (RuntimeError, OSError):  # Python raises RuntimeError for a symlink loop
        raise EnsembleInvalid([Problem(path, None, "cannot read: its symbolic links form a loop")]) from None


def _read_following_links(path: Path) -> tuple[str, Path]:
    """Read an ensemble file, following git symlinks checked out as one-line text files."""
    current = path
    for _ in range(MAX_SYMLINK_HOPS + 1):
        text = _read_bounded(current)
        target = text.strip()
        if (
            "\n" not in target
            and target.endswith((".yaml", ".yml"))
            and ":" not in target
            and (current.parent / target).is_file()
        ):
            current = current.parent / target
            continue
        return text, current
    raise EnsembleInvalid([Problem(path, None, "too many link hops between ensemble files")])


def _read_bounded(path: Path) -> str:
    try:
        info = path.stat()
        if stat.S_ISDIR(info.st_mode):
            raise EnsembleInvalid([Problem(path, None, "is a folder, not an ensemble file")])
        if not stat.S_ISREG(info.st_mode):
            # A device or a pipe has no size to check and may never end (/dev/zero).
            raise EnsembleInvalid([Problem(path, None, "is not a regular file")])
        if info.st_size > MAX_FILE_BYTES:
            raise EnsembleInvalid([Problem(path, None, f"file is {info.st_size} bytes; "
                                                       f"ensembles are limited to {MAX_FILE_BYTES}")])
        with open(path, "rb") as stream:
            raw = stream.read(MAX_FILE_BYTES + 1)  # the file may grow between stat and read
    except FileNotFoundError:
        raise EnsembleInvalid([Problem(path, None, "file not found")]) from None
    except OSError as error:
        raise EnsembleInvalid([Problem(path, None, f"cannot read: {error.strerror or error}")]) from None
    if len(raw) > MAX_FILE_BYTES:
        raise EnsembleInvalid([Problem(path, None, f"ensembles are limited to {MAX_FILE_BYTES} bytes")])
    if b"\x00" in raw:
        raise EnsembleInvalid([Problem(path, None, "binary data, not YAML text")])
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise EnsembleInvalid([Problem(path, None, f"not UTF-8 text (byte {error.start})")]) from None


def _parse_yaml(text: str, source: Path) -> object:
    if len(text.encode("utf-8", errors="replace")) > MAX_FILE_BYTES:
        raise EnsembleInvalid([Problem(source, None, f"ensembles are limited to {MAX_FILE_BYTES} bytes")])
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        if node is None:
            raise EnsembleInvalid([Problem(source, None, "the file is empty", "add 'name:' and 'agents:'")])
        _check_expansion(node, source)
        return yaml.load(text, Loader=yaml.SafeLoader)  # noqa: S506 - SafeLoader, bounded above
    except EnsembleInvalid:
        raise
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        reason = getattr(error, "problem", None) or str(error).splitlines()[0]
        raise EnsembleInvalid([Problem(source, None, f"invalid YAML{where}: {reason}",
                                       yaml_fix(reason, getattr(error, "context", None)))]) from None
    except RecursionError:
        raise EnsembleInvalid([Problem(source, None, "YAML nested too deeply")]) from None


def yaml_fix(problem: str, context: str | None) -> str | None:
    """What to do about a YAML syntax error, from PyYAML's wording of it; None when unsure."""
    if "'\\t'" in problem:
        return "indent with spaces, not tabs"
    if problem.startswith("mapping values are not allowed"):
        return "put quotes around a value that contains ': '"
    if "while scanning a quoted scalar" in (context or ""):
        return "close the quote this value opens"
    if "flow sequence" in (context or "") or "flow mapping" in (context or ""):
        return "close the bracket or brace opened before, with ',' between items"
    if problem.startswith("expected <block end>"):
        return "indent this line like the keys or list items it belongs with"
    if problem.startswith("found undefined alias"):
        return "define the anchor (&name) before using it (*name)"
    return None


def _check_expansion(root: yaml.Node, source: Path) -> None:
    """Reject alias graphs that are cyclic or expand past MAX_EXPANDED_NODES."""
    sizes: dict[int, int] = {}
    on_path: set[int] = set()

    def size(node: yaml.Node, depth: int) -> int:
        key = id(node)
        if key in sizes:
            return sizes[key]
        if key in on_path:
            raise EnsembleInvalid([Problem(source, None, "YAML aliases refer to themselves (recursive structure)")])
        if depth > 200:
            raise EnsembleInvalid([Problem(source, None, "YAML nested too deeply")])
        on_path.add(key)
        total = 1
        if isinstance(node, yaml.SequenceNode):
            total += sum(size(child, depth + 1) for child in node.value)
        elif isinstance(node, yaml.MappingNode):
            total += sum(size(k, depth + 1) + size(v, depth + 1) for k, v in node.value)
        on_path.discard(key)
        if total > MAX_EXPANDED_NODES:
            raise EnsembleInvalid([Problem(source, None,
                                           f"YAML expands to more than {MAX_EXPANDED_NODES} values (alias bomb?)")])
        sizes[key] = total
        return total

    size(root, 0)


def _kind(value: object) -> str:
    return {dict: "a mapping", list: "a list", str: "a string", bool: "a boolean", int: "a number",
            float: "a number", type(None): "empty"}.get(type(value), type(value).__name__)


def _optional_str(mapping: dict, key: str, source: Path, agent: str | None, problems: list[Problem]) -> str | None:
    value = mapping.get(key)
    if value is None:
        return None
    if isinstance(value, (int, float)) and not isinstance(value, bool) and key != "script":
        return str(value)
    if not isinstance(value, str):
        problems.append(Problem(source, agent, f"'{key}' must be a string, not {_kind(value)}"))
        return None
    return value


def did_you_mean(word: str, choices: tuple[str, ...] | list[str]) -> str | None:
    """"did you mean 'X'?" for the choice closest to a mistyped `word`, or None when none is close."""
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f"did you mean '{close[0]}'?" if close else None


def parse_ref(text: object) -> FieldRef | None:
    """`${agent.field.sub}` -> FieldRef, or None if `text` is not exactly one reference."""
    if not isinstance(text, str):
        return None
    match = _REF.match(text.strip())
    if not match:
        return None
    path = tuple(part for part in match.group(2).split(".") if part)
    return FieldRef(AgentName(match.group(1)), path)


def parse_condition(value: object) -> Condition | None:
    """`${dep.field}` (truthiness) or `${dep.field} == literal` / `!=`; None if malformed."""
    if not isinstance(value, str):
        return None
    text = value.strip()
    comparison = _COMPARISON.match(text)
    if comparison:
        ref = parse_ref(comparison.group(1))
        if ref is None:
            return None
        literal = _literal(comparison.group(3))
        if literal is _INVALID:
            return None
        return Condition(ref, comparison.group(2), literal)
    ref = parse_ref(text)
    return Condition(ref) if ref else None


_INVALID = object()


def _literal(text: str) -> object:
    """A guard's right-hand side: a quoted string, true/false/null, a number, or a bare word.

    Deliberately not YAML 1.1, where `yes`, `on` and `no` would silently become booleans.
    """
    text = text.strip()
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"":
        return text[1:-1]
    lowered = text.lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    if lowered in ("null", "none", "~"):
        return None
    try:
        return int(text)
    except ValueError:
        pass
    try:
        return float(text)
    except ValueError:
        pass
    if not text or text[0] in "[{" or " " in text:
        return _INVALID
    return text


def _parse_agent(raw: object, index: int, source: Path, problems: list[Problem]) -> AgentSpec | None:
    if not isinstance(raw, dict):
        problems.append(Problem(source, f"#{index + 1}", f"each agent must be a mapping, not {_kind(raw)}"))
        return None
    name = raw.get("name")
    label = name if isinstance(name, str) and name else f"#{index + 1}"
    before = len(problems)

    def bad(message: str, fix: str | None = None) -> None:
        problems.append(Problem(source, label, message, fix))

    if not isinstance(name, str) or not name:
        bad("missing 'name'", "give every agent a unique name")
    elif not _NAME.match(name):
        bad(f"invalid name {name!r}", "use letters, digits, '_' and '-'")
    for key in raw:
        if key not in AGENT_KEYS:
            bad(f"unknown key '{key}'", did_you_mean(str(key), AGENT_KEYS) or "see docs/ensembles.md for the keys")

    task = _parse_task(raw, bad)
    depends_on = _parse_depends_on(raw.get("depends_on"), bad)
    fan_out = _bool(raw, "fan_out", False, bad)
    if fan_out and not depends_on:
        bad("'fan_out' needs 'depends_on'", "fan-out runs once per item of an upstream agent's list output")
    input_key = _optional_str(raw, "input_key", source, label, problems)
    input_scope = raw.get("input_scope", "full")
    if input_scope not in INPUT_SCOPES:
        bad(f"'input_scope' must be one of {', '.join(INPUT_SCOPES)}, not {input_scope!r}")
        input_scope = "full"
    when = None
    if "when" in raw:
        when = parse_condition(raw["when"])
        if when is None:
            bad(f"invalid 'when': {raw['when']!r}", "write '${agent.field}' or '${agent.field} == value'")
    timeout = _number(raw, "timeout_seconds", bad, low=0.001, high=7 * 24 * 3600)
    queue_timeout = _number(raw, "queue_timeout_seconds", bad, low=0.001, high=7 * 24 * 3600)
    retries = _integer(raw, "retries", bad, low=0, high=10)
    placement = _parse_placement(raw.get("placement"), bad)
    output_format = raw.get("output_format")
    if output_format is not None and output_format not in OUTPUT_FORMATS:
        bad(f"'output_format' must be one of {', '.join(OUTPUT_FORMATS)}, not {output_format!r}")
        output_format = None
    if len(problems) > before or task is None:
        return None
    return AgentSpec(
        name=AgentName(name), task=task, depends_on=depends_on, fan_out=fan_out, input_key=input_key,
        input_scope=input_scope, when=when, timeout_seconds=timeout, queue_timeout_seconds=queue_timeout,
        retries=retries,
        placement=placement, output_format=output_format,
    )


def _parse_task(raw: dict, bad: Callable[..., None]) -> AgentTask | None:
    kinds = [k for k in ("script", "ensemble", "loop", "dispatch") if k in raw]
    llm_keys = [k for k in LLM_KEYS if k in raw]
    if len(kinds) > 1:
        bad(f"has both {' and '.join(repr(k) for k in kinds)}", "an agent does exactly one thing")
        return None
    if kinds and llm_keys and not (kinds == ["script"] and set(llm_keys) <= {"system_prompt"}):
        bad(f"'{kinds[0]}' agent cannot take model keys ({', '.join(llm_keys)})",
            "split it into a script agent and an LLM agent")
        return None
    if "parameters" in raw and kinds != ["script"]:
        bad("'parameters' only applies to script agents")
        return None
    kind = kinds[0] if kinds else "llm"
    if kind == "script":
        script = raw["script"]
        if not isinstance(script, str) or not script.strip():
            bad("'script' must be a path to a script file")
            return None
        parameters = raw.get("parameters") or {}
        if not isinstance(parameters, dict):
            bad(f"'parameters' must be a mapping, not {_kind(parameters)}")
            return None
        return ScriptTask(script=script, parameters=freeze(parameters))
    if kind == "ensemble":
        ref = raw["ensemble"]
        if not isinstance(ref, str) or not ref.strip():
            bad("'ensemble' must name an ensemble")
            return None
        return EnsembleTask(ref.strip())
    if kind == "dispatch":
        target = parse_ref(raw["dispatch"])
        if target is None:
            bad(f"'dispatch' must be a reference like '${{agent.field}}', not {raw['dispatch']!r}")
            return None
        return DispatchTask(target)
    if kind == "loop":
        return _parse_loop(raw["loop"], bad)
    return _parse_llm(raw, bad)


def _parse_loop(loop: object, bad: Callable[..., None]) -> LoopTask | None:
    if not isinstance(loop, dict):
        bad(f"'loop' must be a mapping with body, until, max_iterations, not {_kind(loop)}")
        return None
    for key in loop:
        if key not in ("body", "until", "max_iterations", "carry"):
            bad(f"unknown loop key '{key}'", did_you_mean(str(key), ("body", "until", "max_iterations", "carry")))
            return None
    body = loop.get("body")
    if not isinstance(body, str) or not body.strip():
        bad("'loop.body' must name the ensemble to repeat")
        return None
    until = None
    if loop.get("until") is not None:
        until = parse_condition(loop["until"])
        if until is None:
            bad(f"invalid 'loop.until': {loop['until']!r}", "write '${agent.field}' naming an agent of the body")
            return None
    iterations = loop.get("max_iterations")
    if isinstance(iterations, bool) or not isinstance(iterations, int) or not 1 <= iterations <= MAX_LOOP_ITERATIONS:
        bad(f"'loop.max_iterations' must be a whole number from 1 to {MAX_LOOP_ITERATIONS}, not {iterations!r}",
            "every loop must be bounded")
        return None
    carry = None
    if loop.get("carry") is not None:
        carry = parse_ref(loop["carry"])
        if carry is None:
            bad(f"invalid 'loop.carry': {loop['carry']!r}", "write '${agent.field}'")
            return None
    return LoopTask(body=body.strip(), until=until, max_iterations=iterations, carry=carry)


def _parse_llm(raw: dict, bad: Callable[..., None]) -> LlmTask | None:
    ok = True
    strings: dict[str, str | None] = {}
    for key in ("model_profile", "model", "provider", "system_prompt"):
        value = raw.get(key)
        if value is not None and not isinstance(value, str):
            bad(f"'{key}' must be a string, not {_kind(value)}")
            ok = False
        strings[key] = value
    temperature = _number(raw, "temperature", bad, low=0.0, high=5.0)
    max_tokens = _integer(raw, "max_tokens", bad, low=1, high=1 << 17)
    options = raw.get("options") or {}
    if not isinstance(options, dict):
        bad(f"'options' must be a mapping, not {_kind(options)}")
        ok = False
    if ("temperature" in raw and temperature is None) or ("max_tokens" in raw and max_tokens is None):
        ok = False
    if isinstance(strings["model"], str):
        try:
            split_model_ref(strings["model"])
        except ValueError as error:
            bad(f"model {error}", f"write '{strings['model'].rpartition('@')[0] or 'ID'}' to let the node choose, "
                "or pin a variant with '@llama_cpp' or '@mlx'")
            ok = False
    if not ok:
        return None
    return LlmTask(
        model_profile=strings["model_profile"], model=strings["model"], provider=strings["provider"],
        system_prompt=strings["system_prompt"], temperature=temperature, max_tokens=max_tokens,
        options=freeze(options),
    )


def _parse_depends_on(value: object, bad: Callable[..., None]) -> tuple[AgentName, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list):
        bad(f"'depends_on' must be a list of agent names, not {_kind(value)}")
        return ()
    names: list[AgentName] = []
    for item in value:
        if isinstance(item, dict) and isinstance(item.get("agent_name"), str):
            extra = [k for k in item if k != "agent_name"]
            if extra:
                bad(f"unknown key '{extra[0]}' in depends_on entry", "write {agent_name: NAME}")
            names.append(AgentName(item["agent_name"]))
        elif isinstance(item, str) and item:
            names.append(AgentName(item))
        else:
            bad(f"invalid depends_on entry {item!r}", "write an agent name or {agent_name: NAME}")
    return tuple(dict.fromkeys(names))


def _bool(raw: dict, key: str, default: bool, bad: Callable[..., None]) -> bool:
    value = raw.get(key, default)
    if value is None:
        return default
    if not isinstance(value, bool):
        bad(f"'{key}' must be true or false, not {value!r}")
        return default
    return value


def _number(raw: dict, key: str, bad: Callable[..., None], *, low: float, high: float) -> float | None:
    value = raw.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
            or not low <= value <= high:
        bad(f"'{key}' must be a number from {low:g} to {high:g}, not {value!r}")
        return None
    return float(value)


def _integer(raw: dict, key: str, bad: Callable[..., None], *, low: int, high: int) -> int | None:
    value = raw.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        bad(f"'{key}' must be a whole number from {low} to {high}, not {value!r}")
        return None
    return value


def _parse_placement(value: object, bad: Callable[..., None]) -> Placement:
    if value is None:
        return Placement()
    if not isinstance(value, dict):
        bad(f"'placement' must be a mapping, not {_kind(value)}")
        return Placement()
    allowed = ("local_only", "require_tags", "prefer_tags")
    for key in value:
        if key not in allowed:
            bad(f"unknown placement key '{key}'", did_you_mean(str(key), allowed))
    local_only = _bool(value, "local_only", False, bad)
    tags: dict[str, frozenset[str]] = {}
    for key in ("require_tags", "prefer_tags"):
        items = value.get(key) or []
        if isinstance(items, str):
            items = [items]
        if not isinstance(items, list) or not all(isinstance(t, str) for t in items):
            bad(f"'placement.{key}' must be a list of tags")
            items = []
        tags[key] = frozenset(items)
    return Placement(local_only, tags["require_tags"], tags["prefer_tags"])


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
