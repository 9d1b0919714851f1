"""GGUF metadata: orc's header reader against ggml's `gguf.GGUFReader`, on the embedded models.

    .venv/bin/pip install -q -e '.[bench]'
    .venv/bin/python -m tests.benchmarks.gguf_reader            # print the section
    .venv/bin/python -m tests.benchmarks.gguf_reader --write    # and put it into docs/benchmarks.md

(run.py includes it in the whole report.) Each reader runs in processes of its own, the two
taking turns; each file is read once beforehand, so both read it from the page cache. The run
also checks that both read the same value for every key (an array: the same length) and fails
if they do not. Why orc keeps its own reader is in `orc.node.models.gguf`.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tests.benchmarks.run import REPO, Row, publish_section, standalone_section

TITLE = "GGUF metadata: orc's reader vs ggml's GGUFReader"
MODELS = ("smollm2-135m-instruct", "gemma3-270m")
ROUNDS = 3  # GGUFReader takes seconds to a minute a read on a shared two-core machine


def _read_side(reader: str, path: Path, runs: int) -> dict:
    """A side process: read the header of `path` `runs` times with one reader, report seconds."""
    if reader == "orc":
        from orc.node.models.gguf import read_gguf_metadata as read
    else:
        from gguf import GGUFReader as read  # type: ignore[no-redef]
    seconds = []
    for _ in range(runs):
        started = time.perf_counter()
        read(path)
        seconds.append(time.perf_counter() - started)
    return {"seconds": seconds}


def _run_side(reader: str, path: Path, runs: int) -> list[float]:
    out = subprocess.run(
        [sys.executable, "-m", "tests.benchmarks.gguf_reader", "--side", reader, "--path", str(path),
         "--runs", str(runs)], cwd=REPO, capture_output=True, text=True, check=True, timeout=600)
    return json.loads(out.stdout.splitlines()[-1])["seconds"]


def same_values(path: Path) -> int:
    """Compare the two readers key by key on `path`; returns how many keys agree, raises on a difference."""
    from gguf import GGUFReader

    from orc.node.models.gguf import GgufArray, read_gguf_metadata

    ours = read_gguf_metadata(path)
    theirs = GGUFReader(path).fields
    for key, value in ours.items():
        field = theirs[key]
        if isinstance(value, GgufArray):
            same = len(field.data) == value.count
        elif isinstance(value, float):
            same = abs(float(field.contents()) - value) <= 1e-9 * max(1.0, abs(value))
        else:
            same = field.contents() == value
        if not same:
            raise AssertionError(f"{path.name}: {key}: orc read {value!r}, GGUFReader {field.contents()!r}")
    # GGUFReader adds the header's own counts as GGUF.* pseudo-keys; every real key is compared.
    missing = sorted(k for k in theirs if not k.startswith("GGUF.") and k not in ours)
    if missing:
        raise AssertionError(f"{path.name}: orc's reader returned no {', '.join(missing)}")
    return len(ours)


def bench_gguf_reader(runs: int, rounds: int = ROUNDS) -> tuple[list[Row], str]:
    from orc.node.models.catalog import Catalog

    rows: list[Row] = []
    agreed = []
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as home:
        catalog = Catalog(Path(home) / "models")
        for model_id in MODELS:
            path = catalog.prepare(model_id).path
            path.read_bytes()  # into the page cache: both sides then read from memory
            agreed.append(f"{model_id}: {same_values(path)} keys")
            ours: list[float] = []
            theirs: list[float] = []
            for _ in range(rounds):
                ours += _run_side("orc", path, runs)
                theirs += _run_side("gguf", path, runs)
            mine, ggml = statistics.median(ours), statistics.median(theirs)
            size = f"{path.stat().st_size / 2**20:.0f} MiB file"
            rows.append(Row(f"{model_id}: orc's reader", f"{mine * 1000:.0f} ms", f"{size}; median of {len(ours)}"))
            rows.append(Row(f"{model_id}: GGUFReader", f"{ggml * 1000:.0f} ms", f"median of {len(theirs)}"))
            rows.append(Row(f"**{model_id}: GGUFReader / orc**", f"**{ggml / mine:.0f}×**", "median time over median time"))
    import importlib.metadata

    note = (f"Both readers read the same value for every key ({'; '.join(agreed)}; arrays compared by "
            f"length). gguf {importlib.metadata.version('gguf')}. Each side runs in its own process, "
            f"{runs} read(s) a process, {rounds} processes a side, taking turns. GGUFReader builds a numpy "
            "view of every array item and every tensor description; orc's reader skips arrays by their "
            "length and stops before the tensors, and caps every count and length a header states. "
            f"1-minute load average of the machine {load_before:.1f} before, {os.getloadavg()[0]:.1f} after "
            f"(other work shared its {os.cpu_count()} cores).")
    return rows, note


def section(runs: int, rounds: int = ROUNDS) -> str:
    return standalone_section(TITLE, *bench_gguf_reader(runs, rounds))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=1, help="reads per side process")
    parser.add_argument("--rounds", type=int, default=ROUNDS, help="side processes per reader, taking turns")
    parser.add_argument("--write", action="store_true", help="put the section into --out")
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "benchmarks.md")
    parser.add_argument("--side", choices=("orc", "gguf"), help=argparse.SUPPRESS)
    parser.add_argument("--path", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.side:
        print(json.dumps(_read_side(args.side, args.path, args.runs)))
        return 0
    publish_section(TITLE, section(args.runs, args.rounds), args.out if args.write else None)
    return 0


if __name__ == "__main__":
    sys.exit(main())
