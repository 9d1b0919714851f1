"""Helpers the tests import (`from support import write`), shared across the test tree."""

from __future__ import annotations

import contextlib
import json
import shutil
import socket
import tempfile
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path


@dataclass
class CliResult:
    code: int
    stdout: str
    stderr: str

    def json(self) -> dict:
        return json.loads(self.stdout)


def write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))
    return path


def assert_one_clean_error(result: CliResult, code: int) -> None:
    """The documented exit code, a message on stderr, and no traceback."""
    assert result.code == code, (result.code, result.stderr)
    assert "Traceback" not in result.stderr and "Traceback" not in result.stdout
    assert result.stderr.strip().startswith("orc: error:") or result.stderr.strip().startswith("error:"), result.stderr


@contextlib.contextmanager
def short_tmp(prefix: str) -> Iterator[Path]:
    """A fresh folder under /tmp, removed afterwards: short enough for a Unix socket path (~100 bytes),
    which pytest's tmp_path is not."""
    folder = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def free_port_pair() -> int:
    """A port P with P and P + 1 free on 127.0.0.1 (a node's mesh and join servers)."""
    for _ in range(50):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port >= 65535:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port + 1))
            except OSError:
                continue
        return port
    raise RuntimeError("no free port pair")


def child_pids(pid: int) -> list[int]:
    """The pids of the live (or zombie) children of process `pid`, read from /proc (Linux)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(stat.parent.name))
        except (OSError, IndexError, ValueError):
            continue  # it exited while we looked
    return found
