"""The committed generated code is exactly what the .proto files compile to."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from orc.proto import generate

pytest.importorskip("grpc_tools")

FIX = "run `python -m orc.proto.generate` and commit the regenerated proto/v1 files"


def _header_version(text: str) -> str | None:
    found = re.search(r"^# Protobuf Python Version: (\S+)$", text, re.MULTILINE)
    return found.group(1) if found else None


def test_committed_generated_code_matches_the_proto_files(tmp_path: Path) -> None:
    fresh = generate.generate(tmp_path)
    names = [p.name for p in fresh]
    assert names == generate.generated_names()
    committed = sorted(p.name for p in generate.VERSION_DIR.iterdir()
                       if p.name.endswith(generate.SUFFIXES))
    extra = sorted(set(committed) - set(names))
    assert not extra, f"generated files without a .proto behind them: {extra}; delete them or {FIX}"
    for path in fresh:
        target = generate.VERSION_DIR / path.name
        assert target.is_file(), f"proto/v1/{path.name} is missing: {FIX}"
        expected, actual = path.read_bytes(), target.read_bytes()
        if expected != actual:
            hint = ""
            ours, theirs = _header_version(expected.decode()), _header_version(actual.decode())
            if ours != theirs:
                hint = f" (the installed protoc writes {ours}, the committed file says {theirs})"
            pytest.fail(f"proto/v1/{path.name} is out of date{hint}: {FIX}")


def test_generation_is_deterministic(tmp_path: Path) -> None:
    first = {p.name: p.read_bytes() for p in generate.generate(tmp_path / "a")}
    second = {p.name: p.read_bytes() for p in generate.generate(tmp_path / "b")}
    assert first == second


def test_generated_modules_import_each_other_under_the_installed_name() -> None:
    from orc.proto.v1 import control_pb2, mesh_pb2

    text = (generate.VERSION_DIR / "control_pb2.py").read_text()
    assert "from orc.proto.v1 import mesh_pb2" in text
    status = control_pb2.NodeStatus(description=mesh_pb2.NodeDescription(node_id="n"))
    assert control_pb2.NodeStatus.FromString(status.SerializeToString()).description.node_id == "n"
    assert mesh_pb2.DESCRIPTOR.package == "orc.v1"
