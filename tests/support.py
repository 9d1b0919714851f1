"""Helpers the tests import (`from support import write`), shared across the test tree."""

from __future__ import annotations

import json
import textwrap
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
