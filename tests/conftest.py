"""Fixtures for every test: an isolated orc home per test and a runner for the real `orc` CLI.

Helpers that tests import live in `support.py` (sub-folders have conftest files of their own,
so `from conftest import ...` would be ambiguous)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from support import CliResult

REPO = Path(__file__).resolve().parents[1]


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
