"""Hostile and broken ensemble files: each is refused with a clear problem, quickly, without crashing."""

import os
import time
from pathlib import Path

import pytest

from orc.scheduler.errors import EnsembleInvalid
from orc.scheduler.ensemble_file import MAX_FILE_BYTES
from orc.scheduler.loader import EnsembleLibrary, load_ensemble

BOMB = """
a: &a ["x","x","x","x","x","x","x","x","x"]
b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]
c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]
d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]
e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]
f: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]
g: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f]
name: bomb
agents: [*g]
"""

CASES = {
    "yaml-bomb": (BOMB.encode(), "alias bomb"),
    "recursive-alias": (b"name: r\nagents: &x [*x]\n", "refer to themselves"),
    "binary": (bytes(range(256)) * 4, "binary data"),
    "latin1": ("name: caf\xe9\nagents: []\n".encode("latin-1"), "not UTF-8"),
    "empty": (b"", "empty"),
    "scalar": (b"just a string\n", "must be a YAML mapping"),
    "list": (b"- a\n- b\n", "must be a YAML mapping"),
    "bad-yaml": (b"name: x\nagents: [\n", "invalid YAML"),
    "tabs": (b"name: x\n\tagents: []\n", "invalid YAML"),
    "agents-not-list": (b"name: x\nagents: {a: 1}\n", "'agents' must be a non-empty list"),
    "agent-not-mapping": (b"name: x\nagents: [3]\n", "each agent must be a mapping"),
    "wrong-types": (b"name: x\nagents:\n  - {name: a, model: 3, max_tokens: -1, timeout_seconds: .inf}\n",
                    "must be"),
    "name-injection": (b"name: x\nagents:\n  - {name: 'a b;rm -rf', model: m}\n", "invalid name"),
    "deep-nesting": (b"name: x\nagents: " + b"[" * 5000 + b"]" * 5000 + b"\n", "nested too deeply"),
    "two-kinds": (b"name: x\nagents:\n  - {name: a, script: s.py, ensemble: e}\n", "does exactly one thing"),
    "huge-loop": (b"name: x\nagents:\n  - {name: a, loop: {body: b, max_iterations: 1000000}}\n",
                  "max_iterations"),
    "null-name": (b"name: x\nagents:\n  - {name: null, model: m}\n", "missing 'name'"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_hostile_file_is_refused_clearly(tmp_path, case):
    data, expected = CASES[case]
    path = tmp_path / f"{case}.yaml"
    path.write_bytes(data)
    began = time.perf_counter()
    with pytest.raises(EnsembleInvalid) as caught:
        load_ensemble(path)
    assert expected in str(caught.value), str(caught.value)
    assert str(path) in str(caught.value)
    # Not a timing assertion on speed, a guard against hanging: a bomb must not be expanded.
    assert time.perf_counter() - began < 30


def test_huge_file_refused_before_parsing(tmp_path):
    path = tmp_path / "huge.yaml"
    path.write_bytes(b"# " + b"x" * (MAX_FILE_BYTES + 10))
    with pytest.raises(EnsembleInvalid) as caught:
        load_ensemble(path)
    assert "limited to" in str(caught.value)


def test_folder_and_missing_file(tmp_path):
    with pytest.raises(EnsembleInvalid, match="is a folder"):
        load_ensemble(tmp_path)
    with pytest.raises(EnsembleInvalid, match="file not found"):
        load_ensemble(tmp_path / "nope.yaml")


def test_devices_pipes_and_link_loops_are_refused_without_reading_forever(tmp_path):
    fifo = tmp_path / "pipe.yaml"
    os.mkfifo(fifo)
    loop_a, loop_b = tmp_path / "a.yaml", tmp_path / "b.yaml"
    loop_a.symlink_to(loop_b)
    loop_b.symlink_to(loop_a)
    for path, expected in ((Path("/dev/zero"), "not a regular file"), (fifo, "not a regular file"),
                           (loop_a, "symbolic links form a loop")):
        with pytest.raises(EnsembleInvalid, match=expected):
            load_ensemble(path)
        assert EnsembleLibrary(()).resolve(str(path)) == path  # a path is handed to the loader to explain
