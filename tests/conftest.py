"""Shared test helpers: an isolated orc home per test and a runner for the real `orc` CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@dataclass
class CliResult:
    code: int
    stdout: str
    stderr: str

    def json(self) -> dict:
        return json.loads(self.stdout)


@pytest.fixture
def home(tmp_path: Path) -> Path:
    path = tmp_path / "home"
    path.mkdir()
    return path


@pytest.fixture
def orc(home: Path, tmp_path: Path):
    """Run `orc ARGS...` as a user would (a real subprocess), with an isolated home and cwd."""
    work = tmp_path / "work"
    work.mkdir(exist_ok=True)

    def run(*args: str, stdin: str | None = None, cwd: Path | None = None, timeout: float = 300) -> CliResult:
        env = {k: v for k, v in os.environ.items() if k != "ORC_HOME"}
        env["ORC_HOME"] = str(home)
        done = subprocess.run(
            [sys.executable, "-m", "orc.node.cli.orc", *args],
            input=stdin if stdin is not None else "", capture_output=True, text=True,
            cwd=cwd or work, env=env, timeout=timeout,
        )
        return CliResult(done.returncode, done.stdout, done.stderr)

    run.work = work  # type: ignore[attr-defined]
    return run


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
