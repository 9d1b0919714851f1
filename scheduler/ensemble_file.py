"""Reading an ensemble file as hostile input: bounded in size, links and alias expansion.

A file is read through at most `MAX_SYMLINK_HOPS` one-line git symlink stubs, refused past
`MAX_FILE_BYTES`, and its YAML node graph is measured before any value is built, so a YAML bomb
costs milliseconds, not memory. Parse errors come back as one problem with a fix where one is
known (`yaml_fix`).
"""

from __future__ import annotations

import stat
from pathlib import Path

import yaml

from orc.scheduler.errors import EnsembleInvalid, Problem

MAX_FILE_BYTES = 1 << 20  # a 1 MiB ensemble is already absurd; stops memory exhaustion on read
MAX_EXPANDED_NODES = 200_000  # stops "billion laughs" alias expansion before construction
MAX_SYMLINK_HOPS = 4


def real_path(path: Path) -> Path:
    """`path` with links resolved; a link loop is a problem of the file, not a crash."""
    try:
        return path.resolve()
    except (RuntimeError, OSError):  # Python raises RuntimeError for a symlink loop
        raise EnsembleInvalid([Problem(path, None, "cannot read: its symbolic links form a loop")]) from None


def read_following_links(path: Path) -> tuple[str, Path]:
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


def parse_yaml(text: str, source: Path) -> object:
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
