"""The packages' layering, read from the source: who may import whom, who may import grpc.

Every import counts, including those inside functions and under `if TYPE_CHECKING`: a lazy
import is still a dependency, only a hidden one. docs/architecture.md explains the layers.
"""

from __future__ import annotations

import ast
import functools
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
TREES = ("scheduler", "node", "proto")  # folders of the orc.scheduler, orc.node, orc.proto packages

# Lowest first. A package may import the packages of any lower row; packages on one row are
# siblings and may not import each other.
LAYERS: tuple[tuple[str, ...], ...] = (
    ("scheduler",),                    # pure: ensembles, runs, placement, the simulator
    ("node.models",),                  # the catalog, the runtimes, the hardware probe
    ("node.protocol",),                # the vocabulary nodes exchange, the domain errors
    ("node.trust", "node.metrics"),    # identity, certificates, membership | what the node counts
    ("node.links", "node.worker"),     # peers found and kept; generations served
    ("node.coordinator",),             # runs coordinated: the engine and the placer
    ("node.config",),                  # the home's config.yaml, read once into one value
    ("node.rpc", "node.web", "node.ray"),  # gRPC servers, clients, the wire | the HTTP face | a Ray cluster
    ("node.daemon", "node.api"),       # the two composition roots
    ("node.cli",),                     # orc and orc-node
)
# Imports nothing of orc; every node package may import it (scheduler may not).
LEAF = "node.home"
# The generated messages and stubs: imported by node.rpc alone.
GENERATED = "proto"
# Packages that may import grpc (and protobuf).
WIRE_PACKAGES = {"node.rpc", GENERATED}

# Edges that break the layering today, each with the change that removes it. The list may only
# shrink: an entry whose import is gone fails the test until it is deleted here.
KNOWN_VIOLATIONS: dict[tuple[str, str], str] = {}

MAX_LINES = 500
# Modules over MAX_LINES today, being split. The list may only shrink: a module that fits
# again fails the test until it is deleted here; no module may join it.
OVERSIZED: set[str] = set()


@dataclass(frozen=True)
class Import:
    module: str  # the importing module, e.g. orc.node.trust.membership
    line: int
    text: str  # the import statement's first line, as written
    target: str  # the imported module, absolute


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(["orc", *parts])


def _modules() -> Iterator[tuple[Path, str]]:
    for tree in TREES:
        for path in sorted((REPO / tree).rglob("*.py")):
            yield path, _module_name(path)


def _imports(path: Path, module: str) -> Iterator[Import]:
    source = path.read_text(encoding="utf-8")
    is_package = path.name == "__init__.py"
    lines = source.splitlines()
    for node in ast.walk(ast.parse(source, filename=str(path))):
        if not isinstance(node, (ast.Import, ast.ImportFrom)):
            continue
        text = lines[node.lineno - 1].strip()
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield Import(module, node.lineno, text, alias.name)
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolved against the importing module's package
                base = module.split(".")
                base = base[: len(base) - node.level + (1 if is_package else 0)]
                origin = ".".join(base + ([node.module] if node.module else []))
            else:
                origin = node.module or ""
            yield Import(module, node.lineno, text, origin)
            for alias in node.names:  # `from orc.node import api` imports orc.node.api
                yield Import(module, node.lineno, text, f"{origin}.{alias.name}")


def package_of(module: str) -> str | None:
    """The layer a module of orc belongs to (`node.trust`), or None for a module outside orc."""
    parts = module.split(".")
    if parts[0] != "orc" or len(parts) < 2:
        return None
    if parts[1] == "node":
        return "node" if len(parts) == 2 else f"node.{parts[2]}"
    return parts[1]


def _is_wire_library(module: str) -> bool:
    top = module.split(".")[0]
    return top == "grpc" or top.startswith("grpc_") or module.startswith("google.protobuf")


@functools.cache
def _all_imports() -> tuple[Import, ...]:
    return tuple(found for path, module in _modules() for found in _imports(path, module))


def _where(found: Import) -> str:
    return f"{found.module} line {found.line}: {found.text}"


RANK = {package: rank for rank, row in enumerate(LAYERS) for package in row}


def _allowed(source: str, target: str) -> bool:
    if source == target:
        return True
    if target == LEAF:
        return source.startswith("node.")
    if source == LEAF:
        return False
    if target == GENERATED:
        return source == "node.rpc"
    if source == GENERATED:
        return False
    return RANK[target] < RANK[source]


def _package_edges() -> dict[tuple[str, str], list[Import]]:
    edges: dict[tuple[str, str], list[Import]] = {}
    for found in _all_imports():
        source, target = package_of(found.module), package_of(found.target)
        if source is None or target is None or source == target or target == "node":
            continue  # `import orc.node.x` also names the namespace orc.node: not an edge
        edges.setdefault((source, target), []).append(found)
    return edges


def test_every_package_has_a_place_in_the_table() -> None:
    known = set(RANK) | {LEAF, GENERATED, "node"}
    found = {package_of(module) for _, module in _modules()}
    assert found - known == set(), "a new package needs a row in LAYERS (tests/test_import_graph.py)"


def test_the_scheduler_imports_nothing_of_the_node() -> None:
    offending = [_where(f) for f in _all_imports()
                 if package_of(f.module) == "scheduler" and (package_of(f.target) or "").startswith("node")]
    assert offending == [], "the scheduler is pure and below every node package:\n" + "\n".join(offending)


def test_only_the_rpc_package_imports_grpc() -> None:
    offending = [_where(f) for f in _all_imports()
                 if _is_wire_library(f.target) and package_of(f.module) not in WIRE_PACKAGES]
    assert offending == [], "grpc and protobuf belong to orc.node.rpc (and the generated proto):\n" + "\n".join(offending)


def test_every_import_respects_the_layers() -> None:
    offending = sorted({f"{_where(f)}  ({source} may not import {target})"
                        for (source, target), imports in _package_edges().items()
                        if not _allowed(source, target) and (source, target) not in KNOWN_VIOLATIONS
                        for f in imports})
    assert offending == [], "imports against the layering (see LAYERS):\n" + "\n".join(offending)


def test_known_violations_still_exist() -> None:
    edges = _package_edges()
    gone = [f"{source} -> {target}" for source, target in KNOWN_VIOLATIONS if (source, target) not in edges]
    assert gone == [], "fixed, so delete from KNOWN_VIOLATIONS: " + ", ".join(gone)
    legal = [f"{source} -> {target}" for source, target in KNOWN_VIOLATIONS if _allowed(source, target)]
    assert legal == [], "not a violation, so delete from KNOWN_VIOLATIONS: " + ", ".join(legal)


def test_there_are_no_cycles_between_packages() -> None:
    edges = _package_edges()
    graph: dict[str, set[str]] = {}
    for source, target in edges:
        graph.setdefault(source, set()).add(target)
    cycles: set[tuple[str, ...]] = set()

    def walk(path: list[str]) -> None:
        for target in graph.get(path[-1], ()):
            if target in path:
                cycle = path[path.index(target):]
                first = cycle.index(min(cycle))  # one spelling per cycle, whichever package it starts at
                cycles.add(tuple(cycle[first:] + cycle[:first]))
            else:
                walk(path + [target])

    for start in sorted(graph):
        walk([start])
    report = []
    for cycle in sorted(cycles):
        report.append(" -> ".join(cycle + (cycle[0],)))
        report += [f"  {_where(edges[pair][0])}" for pair in zip(cycle, cycle[1:] + cycle[:1])]
    assert not cycles, "package cycles:\n" + "\n".join(report)


def test_the_checker_sees_lazy_and_type_checking_imports(tmp_path: Path) -> None:
    module = tmp_path / "sample.py"
    module.write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from orc.node.cli import orc\n"
                      "def f():\n    import grpc\n    from orc.node import rpc\n")
    targets = {found.target for found in _imports(module, "orc.scheduler.sample")}
    assert {"orc.node.cli", "grpc", "orc.node.rpc"} <= targets
    assert not _allowed("node.trust", "node.rpc") and not _allowed("node.links", "node.worker")
    assert _allowed("node.rpc", "proto") and not _allowed("node.daemon", "proto")
    assert _allowed("node.worker", "node.home") and not _allowed("scheduler", "node.home")


@pytest.mark.parametrize("path", [p for p, _ in _modules() if "proto" not in p.relative_to(REPO).parts[:1]],
                         ids=lambda p: str(p.relative_to(REPO)))
def test_no_module_grows_past_the_limit(path: Path) -> None:
    name = str(path.relative_to(REPO).as_posix())
    lines = len(path.read_text(encoding="utf-8").splitlines())
    if name in OVERSIZED:
        assert lines > MAX_LINES, f"{name} has {lines} lines now: delete it from OVERSIZED"
    else:
        assert lines <= MAX_LINES, f"{name} has {lines} lines (at most {MAX_LINES}): split it by role"


def test_every_oversized_module_still_exists() -> None:
    """A module split or removed leaves the allow-list too, so the list only ever shrinks."""
    assert sorted(name for name in OVERSIZED if not (REPO / name).is_file()) == []
