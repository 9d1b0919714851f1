"""Regenerate the Python code of the orc.v1 wire from the .proto files next to it.

Run `python -m orc.proto.generate` after editing a .proto file and commit the result; a test
(tests/proto/test_generated_code.py) regenerates into a temporary folder and fails when the
committed code differs. The .proto files are compiled under the virtual path `orc/proto/`
(protoc's `-IVIRTUAL=DISK` mapping), so the generated modules import each other as
`orc.proto.v1.<name>_pb2`, the name they are installed under. protoc's output depends only on
its inputs and its version (grpcio-tools pins both protoc and the gRPC plugin).
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path

PROTO_ROOT = Path(__file__).resolve().parent
VERSION_DIR = PROTO_ROOT / "v1"
VIRTUAL_ROOT = "orc/proto"
SUFFIXES = ("_pb2.py", "_pb2.pyi", "_pb2_grpc.py")


class GenerationFailed(Exception):
    """protoc refused the .proto files; its messages are printed above."""


def proto_files() -> list[Path]:
    return sorted(VERSION_DIR.glob("*.proto"))


def generated_names() -> list[str]:
    """The file names generation produces in proto/v1, sorted."""
    return sorted(p.stem + suffix for p in proto_files() for suffix in SUFFIXES)


def generate(destination: Path) -> list[Path]:
    """Compile every proto/v1/*.proto into `destination`; return the files written, sorted."""
    from grpc_tools import protoc  # a test/dev dependency only: the runtime never compiles

    destination.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="orc-protoc-") as scratch:
        arguments = [
            "grpc_tools.protoc",
            f"-I{VIRTUAL_ROOT}={PROTO_ROOT}",
            f"--python_out={scratch}",
            f"--pyi_out={scratch}",
            f"--grpc_python_out={scratch}",
            *(f"{VIRTUAL_ROOT}/{p.relative_to(PROTO_ROOT).as_posix()}" for p in proto_files()),
        ]
        if protoc.main(arguments) != 0:
            raise GenerationFailed(f"protoc failed on {', '.join(p.name for p in proto_files())}")
        produced = Path(scratch) / VIRTUAL_ROOT / "v1"
        written = []
        for name in generated_names():
            target = destination / name
            shutil.copyfile(produced / name, target)
            written.append(target)
    return written


def main() -> int:
    try:
        written = generate(VERSION_DIR)
    except GenerationFailed as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    for path in written:
        print(path.relative_to(PROTO_ROOT.parent))
    return 0


if __name__ == "__main__":
    sys.exit(main())
