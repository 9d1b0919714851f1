"""The script runtime, with real subprocesses written into tmp_path."""

from __future__ import annotations

import asyncio
import os
import stat
import sys
import textwrap
import time
from pathlib import Path

import pytest

from orc.node.models.runtimes.base import ScriptFailed, ScriptNotFound, ScriptOutputInvalid, ScriptTimeout
from orc.node.models.runtimes.script import ScriptResult, resolve_script, run_script

PAYLOAD = {
    "agent_name": "a",
    "input_data": "hello",
    "dependencies": {"up": {"response": "x"}},
    "parameters": {"n": 3},
    "context": {},
}


def write_script(folder: Path, name: str, body: str, *, executable: bool = False) -> Path:
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(body).lstrip())
    if executable:
        path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


def run(path: Path, payload: dict[str, object] = PAYLOAD, **kwargs: object) -> ScriptResult:
    kwargs.setdefault("timeout", 30)
    return asyncio.run(run_script(path, payload, **kwargs))  # type: ignore[arg-type]


def is_gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    # A killed process whose parent died too stays a zombie until init reaps it: not running.
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, IndexError):
        return True
    return state == "Z"


def wait_gone(pid: int, within: float = 5.0) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if is_gone(pid):
            return True
        time.sleep(0.05)
    return is_gone(pid)


SPAWNER = """
    import subprocess, sys, time, pathlib
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    pathlib.Path(sys.argv[0]).with_suffix(".pids").write_text(f"{child.pid} {__import__('os').getpid()}")
    print("started", flush=True)
    time.sleep(60)
"""


def read_pids(script: Path) -> tuple[int, int]:
    deadline = time.monotonic() + 10
    pids_file = script.with_suffix(".pids")
    while not pids_file.exists() or not pids_file.read_text():
        assert time.monotonic() < deadline, "the script never started"
        time.sleep(0.02)
    child, parent = pids_file.read_text().split()
    return int(child), int(parent)


def test_json_round_trip(tmp_path: Path) -> None:
    script = write_script(
        tmp_path,
        "echo.py",
        """
        import json, sys
        data = json.load(sys.stdin)
        print(json.dumps({"got": data, "argv": sys.argv[1:]}))
        """,
    )
    result = run(script)
    assert result.output == {"got": PAYLOAD, "argv": []}
    assert result.duration_s > 0


def test_plain_text_stdout_is_the_stripped_text(tmp_path: Path) -> None:
    script = write_script(tmp_path, "text.py", 'print("  not json, just words  ")\nprint()\n')
    assert run(script).output == "not json, just words"


def test_json_scalar_output_is_parsed(tmp_path: Path) -> None:
    script = write_script(tmp_path, "num.py", "print(42)\n")
    assert run(script).output == 42


def test_stderr_is_returned_on_success(tmp_path: Path) -> None:
    script = write_script(tmp_path, "warn.py", 'import sys\nprint("warning: careful", file=sys.stderr)\nprint("{}")\n')
    result = run(script)
    assert result.output == {}
    assert "warning: careful" in result.stderr


def test_nonzero_exit_is_script_failed_with_stderr_tail(tmp_path: Path) -> None:
    script = write_script(
        tmp_path,
        "fail.py",
        """
        import sys
        for i in range(100):
            print(f"noise line {i}", file=sys.stderr)
        print("the real reason: disk on fire", file=sys.stderr)
        sys.exit(3)
        """,
    )
    with pytest.raises(ScriptFailed) as caught:
        run(script)
    assert caught.value.exit_code == 3
    assert "the real reason: disk on fire" in caught.value.stderr_tail
    assert "the real reason: disk on fire" in str(caught.value)
    assert "status 3" in str(caught.value)
    assert "noise line 0" not in str(caught.value)


def test_stderr_tail_is_capped(tmp_path: Path) -> None:
    script = write_script(
        tmp_path,
        "chatty.py",
        """
        import sys
        sys.stderr.write("A" * (1 << 20))
        sys.stderr.write("THE END")
        sys.exit(1)
        """,
    )
    with pytest.raises(ScriptFailed) as caught:
        run(script)
    assert caught.value.stderr_tail.endswith("THE END")
    assert len(caught.value.stderr_tail) <= 64 << 10


def test_timeout_kills_the_whole_process_group(tmp_path: Path) -> None:
    script = write_script(tmp_path, "spawner.py", SPAWNER)
    started = time.monotonic()
    with pytest.raises(ScriptTimeout) as caught:
        run(script, timeout=1.5)
    assert time.monotonic() - started < 10
    assert "timeout" in str(caught.value)
    child, parent = read_pids(script)
    assert wait_gone(parent), "the script survived its timeout"
    assert wait_gone(child), "the script's child survived the timeout"


def test_cancelling_the_caller_kills_the_process_group(tmp_path: Path) -> None:
    script = write_script(tmp_path, "spawner.py", SPAWNER)

    async def scenario() -> None:
        task = asyncio.create_task(run_script(script, PAYLOAD, timeout=None))
        await asyncio.to_thread(read_pids, script)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(scenario())
    child, parent = read_pids(script)
    assert wait_gone(parent)
    assert wait_gone(child)


def test_children_left_behind_do_not_outlive_the_script(tmp_path: Path) -> None:
    # The child inherits stdout: without killing it, reading stdout would wait the full 60 s.
    script = write_script(
        tmp_path,
        "leaver.py",
        """
        import subprocess, sys
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
        print(child.pid)
        """,
    )
    started = time.monotonic()
    result = run(script, timeout=30)
    assert time.monotonic() - started < 10
    assert isinstance(result.output, int)
    assert wait_gone(result.output)


def test_shell_metacharacters_reach_the_script_verbatim(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    nasty = (
        f"$(touch {marker}) `touch {marker}`; touch {marker} && echo | cat > {marker} "
        "'single' \"double\" \\back\\slash $HOME * ? [a] ~ \n newline \t tab \x01 ünïcødé 🚀"
    )
    payload = {**PAYLOAD, "input_data": nasty, "parameters": {"arg": "--rm -rf /"}}
    py = write_script(tmp_path, "echo.py", "import json, sys\nprint(json.dumps(json.load(sys.stdin)))\n")
    assert run(py, payload).output == payload
    # Through a shebang script too: `cat` gives back exactly the bytes it was handed.
    sh = write_script(tmp_path, "echo.sh", "#!/bin/sh\ncat\n", executable=True)
    assert run(sh, payload).output == payload
    assert not marker.exists()


def test_env_adds_to_the_inherited_environment(tmp_path: Path) -> None:
    script = write_script(
        tmp_path,
        "env.py",
        'import json, os\nprint(json.dumps({"x": os.environ.get("ORC_TEST_X"), "path": "PATH" in os.environ}))\n',
    )
    assert run(script, env={"ORC_TEST_X": "a b;c"}).output == {"x": "a b;c", "path": True}


def test_cwd_is_honoured(tmp_path: Path) -> None:
    work = tmp_path / "work"
    work.mkdir()
    script = write_script(tmp_path, "cwd.py", "import json, os\nprint(json.dumps(os.getcwd()))\n")
    assert Path(str(run(script, cwd=work).output)).resolve() == work.resolve()


def test_py_scripts_run_with_orcs_python_without_exec_bit(tmp_path: Path) -> None:
    script = write_script(tmp_path, "which.py", "import json, sys\nprint(json.dumps(sys.executable))\n")
    assert not os.access(script, os.X_OK)
    assert run(script).output == sys.executable


def test_non_py_script_without_exec_bit_is_refused_with_a_fix(tmp_path: Path) -> None:
    script = write_script(tmp_path, "tool.sh", "#!/bin/sh\necho '{}'\n", executable=False)
    with pytest.raises(ScriptFailed) as caught:
        run(script)
    assert "chmod +x" in str(caught.value)
    assert caught.value.exit_code is None


def test_non_py_script_without_shebang_is_refused_with_a_fix(tmp_path: Path) -> None:
    script = write_script(tmp_path, "tool.sh", "echo '{}'\n", executable=True)
    with pytest.raises(ScriptFailed) as caught:
        run(script)
    assert "#!" in str(caught.value)


def test_shebang_script_with_exec_bit_runs(tmp_path: Path) -> None:
    script = write_script(tmp_path, "tool.sh", '#!/bin/sh\necho \'{"ok": true}\'\n', executable=True)
    assert run(script).output == {"ok": True}


def test_empty_stdout_is_invalid_output(tmp_path: Path) -> None:
    script = write_script(tmp_path, "quiet.py", "import sys\nsys.stdin.read()\n")
    with pytest.raises(ScriptOutputInvalid, match="printed nothing"):
        run(script)


def test_binary_stdout_is_invalid_output(tmp_path: Path) -> None:
    script = write_script(tmp_path, "binary.py", "import sys\nsys.stdout.buffer.write(bytes([0xff, 0xfe, 0x00]))\n")
    with pytest.raises(ScriptOutputInvalid, match="UTF-8"):
        run(script)


def test_stdout_flood_is_stopped_at_the_cap(tmp_path: Path) -> None:
    script = write_script(
        tmp_path,
        "flood.py",
        """
        import sys
        block = "x" * (1 << 20)
        while True:
            sys.stdout.write(block)
        """,
    )
    started = time.monotonic()
    with pytest.raises(ScriptOutputInvalid, match="MiB"):
        run(script, timeout=60)
    assert time.monotonic() - started < 30


def test_large_input_is_delivered_whole(tmp_path: Path) -> None:
    # More than a pipe buffer, so writing stdin and reading stdout must overlap.
    payload = {**PAYLOAD, "input_data": "y" * (4 << 20)}
    script = write_script(tmp_path, "len.py", "import json, sys\nprint(len(json.load(sys.stdin)['input_data']))\n")
    assert run(script, payload).output == 4 << 20


def test_missing_script_file_is_script_not_found(tmp_path: Path) -> None:
    with pytest.raises(ScriptNotFound):
        run(tmp_path / "nope.py")


# -- resolution -------------------------------------------------------------------------------


def make_project(tmp_path: Path) -> tuple[Path, Path]:
    project = tmp_path / "proj"
    llm_orc = project / ".llm-orc"
    ensembles = llm_orc / "ensembles" / "team"
    ensembles.mkdir(parents=True)
    return ensembles, llm_orc


def test_missing_script_lists_every_place_looked(tmp_path: Path) -> None:
    ensembles, llm_orc = make_project(tmp_path)
    with pytest.raises(ScriptNotFound) as caught:
        resolve_script("scripts/missing.py", ensemble_dir=ensembles, project_dir=llm_orc)
    message = str(caught.value)
    for place in (
        ensembles / "scripts/missing.py",
        llm_orc / "scripts" / "scripts/missing.py",
        llm_orc / "scripts/missing.py",
        llm_orc.parent / "scripts/missing.py",
    ):
        assert str(place) in message


def test_resolution_prefers_the_ensemble_folder(tmp_path: Path) -> None:
    ensembles, llm_orc = make_project(tmp_path)
    local = write_script(ensembles, "tool.py", "print(1)\n")
    write_script(llm_orc, "tool.py", "print(2)\n")
    assert resolve_script("tool.py", ensemble_dir=ensembles, project_dir=llm_orc) == local.resolve()


def test_resolution_falls_back_to_the_llm_orc_project(tmp_path: Path) -> None:
    ensembles, llm_orc = make_project(tmp_path)
    in_scripts = write_script(llm_orc / "scripts", "primitives/file-ops/read_file.py", "print(1)\n")
    in_project = write_script(llm_orc, "scripts/analyze.py", "print(2)\n")
    in_parent = write_script(llm_orc.parent, "tools/top.py", "print(3)\n")
    resolve = lambda s: resolve_script(s, ensemble_dir=ensembles, project_dir=llm_orc)  # noqa: E731
    assert resolve("primitives/file-ops/read_file.py") == in_scripts.resolve()
    assert resolve("scripts/analyze.py") == in_project.resolve()
    assert resolve("tools/top.py") == in_parent.resolve()


def test_resolution_without_a_project_looks_only_beside_the_ensemble(tmp_path: Path) -> None:
    with pytest.raises(ScriptNotFound) as caught:
        resolve_script("x.py", ensemble_dir=tmp_path, project_dir=None)
    assert str(caught.value).count("\n") == 1


def test_absolute_paths_are_taken_as_is(tmp_path: Path) -> None:
    script = write_script(tmp_path / "elsewhere", "abs.py", "print(1)\n")
    assert resolve_script(str(script), ensemble_dir=tmp_path / "ens", project_dir=None) == script.resolve()
    with pytest.raises(ScriptNotFound):
        resolve_script(str(tmp_path / "gone.py"), ensemble_dir=tmp_path, project_dir=None)
