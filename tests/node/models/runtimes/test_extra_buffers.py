"""`llama_cpp.extra_buffers` in config.yaml, the choice for a CPU, and both composition roots
passing that choice to the llama.cpp runtime."""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from orc.node.models.runtimes import extra_buffers as extra_buffers_module
from orc.node.models.runtimes.extra_buffers import (
    BadLlamaCppConfig,
    ExtraBuffers,
    LlamaCppConfig,
    choose_extra_buffers,
    extra_buffers_choice,
    llama_cpp_config,
)
from orc.scheduler.profiles import ConfigInvalid

# One line of each machine's /proc/cpuinfo (whole records are parsed in tests/node/models/test_hardware.py).
SAPPHIRE_RAPIDS = ("model name\t: Intel(R) Xeon(R) Platinum 8481C CPU @ 2.70GHz\n"
                   "flags\t\t: fpu sse2 avx2 avx512f hypervisor avx512_bf16 amx_bf16 avx512_fp16 amx_tile amx_int8\n")
AMD_EPYC = "model name\t: AMD EPYC 7B13\nflags\t\t: fpu sse2 avx2 fma sha_ni hypervisor\n"
GRAVITON = "processor\t: 0\nFeatures\t: fp asimd aes crc32 atomics asimddp sve i8mm bf16\nCPU part\t: 0xd40\n"

# -- the choice -----------------------------------------------------------------------------


@pytest.mark.parametrize(("cpuinfo", "enabled"), [
    (SAPPHIRE_RAPIDS, False),  # llama.cpp's AMX path crashes there
    (AMD_EPYC, True),
    (GRAVITON, True),
    ("", True),  # macOS, or /proc/cpuinfo unreadable: no AMX to avoid
])
def test_auto_is_off_exactly_on_cpus_with_amx(cpuinfo: str, enabled: bool) -> None:
    assert choose_extra_buffers(ExtraBuffers.AUTO, cpuinfo).enabled is enabled


@pytest.mark.parametrize("cpuinfo", [SAPPHIRE_RAPIDS, AMD_EPYC, GRAVITON, ""])
def test_on_and_off_are_obeyed_on_every_cpu(cpuinfo: str) -> None:
    assert choose_extra_buffers(ExtraBuffers.ON, cpuinfo).enabled is True
    assert choose_extra_buffers(ExtraBuffers.OFF, cpuinfo).enabled is False


def test_the_log_line_says_the_choice_why_and_how_to_force_the_other() -> None:
    amx = choose_extra_buffers(ExtraBuffers.AUTO, SAPPHIRE_RAPIDS).explain("/h/config.yaml")
    assert "off" in amx and "amx_bf16, amx_int8, amx_tile" in amx and "crash" in amx
    assert "`llama_cpp: {extra_buffers: on}` in /h/config.yaml" in amx
    plain = choose_extra_buffers(ExtraBuffers.AUTO, AMD_EPYC).explain("/h/config.yaml")
    assert " on: this CPU has no AMX" in plain and "`llama_cpp: {extra_buffers: off}`" in plain
    forced = choose_extra_buffers(ExtraBuffers.ON, SAPPHIRE_RAPIDS).explain("/h/config.yaml")
    assert " on: `llama_cpp: {extra_buffers: on}` in /h/config.yaml" in forced
    assert "force them off" in forced


# -- the config section ---------------------------------------------------------------------


@pytest.mark.parametrize(("root", "expected"), [
    (None, ExtraBuffers.AUTO),  # an empty file
    ({}, ExtraBuffers.AUTO),
    ({"admission": {"slots": 1}}, ExtraBuffers.AUTO),
    ({"llama_cpp": None}, ExtraBuffers.AUTO),
    ({"llama_cpp": {}}, ExtraBuffers.AUTO),
    ({"llama_cpp": {"extra_buffers": "auto"}}, ExtraBuffers.AUTO),
    ({"llama_cpp": {"extra_buffers": "on"}}, ExtraBuffers.ON),
    ({"llama_cpp": {"extra_buffers": "OFF "}}, ExtraBuffers.OFF),
    ({"llama_cpp": {"extra_buffers": True}}, ExtraBuffers.ON),  # YAML 1.1 reads a bare `on` as true
    ({"llama_cpp": {"extra_buffers": False}}, ExtraBuffers.OFF),
])
def test_the_section_reads_auto_on_and_off(root: object, expected: ExtraBuffers) -> None:
    assert llama_cpp_config(root, "c.yaml") == LlamaCppConfig(expected)


@pytest.mark.parametrize(("root", "words"), [
    ({"llama_cpp": {"extra_buffers": "maybe"}}, "must be auto, on or off, not 'maybe'"),
    ({"llama_cpp": {"extra_buffers": 1}}, "not 1"),
    ({"llama_cpp": {"extra_buffers": None}}, "not None"),
    ({"llama_cpp": {"extra_buffers": ["on"]}}, "not ['on']"),
    ({"llama_cpp": {"extra_buffer": "off"}}, "unknown key 'extra_buffer' (known: extra_buffers)"),
    ({"llama_cpp": "off"}, "`llama_cpp:` must be a mapping"),
])
def test_a_bad_section_is_one_error_naming_the_file_and_the_fix(root: object, words: str) -> None:
    with pytest.raises(BadLlamaCppConfig) as caught:
        llama_cpp_config(root, "/h/config.yaml")
    message = str(caught.value)
    assert message.startswith("/h/config.yaml: ") and words in message
    assert "write `extra_buffers: auto` (or on, or off) under `llama_cpp:`" in message
    assert isinstance(caught.value, ConfigInvalid)  # exit 2 at the command line


def test_the_choice_for_this_machine_reads_the_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(extra_buffers_module, "read_cpuinfo", lambda: SAPPHIRE_RAPIDS)
    assert extra_buffers_choice(LlamaCppConfig()).enabled is False
    assert extra_buffers_choice(LlamaCppConfig(ExtraBuffers.ON)).enabled is True
    monkeypatch.setattr(extra_buffers_module, "read_cpuinfo", lambda: AMD_EPYC)
    assert extra_buffers_choice(LlamaCppConfig(ExtraBuffers.OFF)).enabled is False
    assert extra_buffers_choice(LlamaCppConfig()).enabled is True


# -- the composition roots ------------------------------------------------------------------


@pytest.mark.parametrize(("text", "cpuinfo", "enabled"), [
    ("", SAPPHIRE_RAPIDS, False),
    ("", AMD_EPYC, True),
    ("llama_cpp:\n  extra_buffers: on\n", SAPPHIRE_RAPIDS, True),
    ("llama_cpp:\n  extra_buffers: off\n", GRAVITON, False),
])
def test_the_embedded_mode_builds_its_runtime_with_the_choice(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, text: str, cpuinfo: str, enabled: bool
) -> None:
    from orc.node.api import Orc

    monkeypatch.setattr(extra_buffers_module, "read_cpuinfo", lambda: cpuinfo)
    home = tmp_path / "home"
    home.mkdir()
    (home / "config.yaml").write_text(text)
    assert Orc(home).runtimes()["llama_cpp"].extra_buffers is enabled  # type: ignore[attr-defined]


def test_the_embedded_mode_refuses_a_bad_value(tmp_path: Path) -> None:
    from orc.node.api import Orc

    home = tmp_path / "home"
    home.mkdir()
    (home / "config.yaml").write_text("llama_cpp:\n  extra_buffers: fast\n")
    with pytest.raises(ConfigInvalid, match="extra_buffers must be auto, on or off, not 'fast'"):
        Orc(home).runtimes()


@pytest.mark.parametrize(("text", "cpuinfo", "enabled", "words"), [
    ("", SAPPHIRE_RAPIDS, False, "off: this CPU has AMX (amx_bf16, amx_int8, amx_tile)"),
    ("", AMD_EPYC, True, "on: this CPU has no AMX"),
    ("llama_cpp:\n  extra_buffers: on\n", SAPPHIRE_RAPIDS, True, "on: `llama_cpp: {extra_buffers: on}`"),
])
def test_the_daemon_builds_its_runtime_with_the_choice_and_logs_it_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
    text: str, cpuinfo: str, enabled: bool, words: str,
) -> None:
    from orc.node.daemon.root import Daemon, DaemonOptions
    from orc.node.home import Home

    monkeypatch.setattr(extra_buffers_module, "read_cpuinfo", lambda: cpuinfo)
    (tmp_path / "home").mkdir()
    home = Home.locate(tmp_path / "home")
    home.config_file.write_text(text)
    with caplog.at_level(logging.INFO, logger="orc.node.models.runtimes.factory"):
        runtimes = Daemon(home, DaemonOptions(mdns=False))._runtimes()
    assert runtimes["llama_cpp"].extra_buffers is enabled  # type: ignore[attr-defined]
    lines = [r for r in caplog.records if "extra buffer types" in r.getMessage()]
    assert len(lines) == 1 and lines[0].levelno == logging.INFO
    assert words in lines[0].getMessage() and str(home.config_file) in lines[0].getMessage()


def test_the_daemon_refuses_a_bad_value_before_it_runs(tmp_path: Path) -> None:
    from orc.node.daemon.root import Daemon, DaemonError, DaemonOptions
    from orc.node.home import Home

    (tmp_path / "home").mkdir()
    home = Home.locate(tmp_path / "home")
    home.config_file.write_text("llama_cpp:\n  extra_buffers: yes please\n")
    # Refused when the daemon is built: `run`, which opens the sockets, is never reached.
    with pytest.raises(DaemonError, match=f"{home.config_file}: llama_cpp.extra_buffers must be auto, on or off"):
        Daemon(home, DaemonOptions(mdns=False))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("command", [["orc", "run", "perspectives", "x"], ["orc_node", "start", "--no-mdns", "--no-api"]])
def test_a_bad_value_at_the_command_line_is_exit_2_naming_the_file(tmp_path: Path, command: list[str]) -> None:
    home = tmp_path / "home"
    home.mkdir()
    env = {**os.environ, "ORC_HOME": str(home)}
    if command[0] == "orc_node":
        command = [*command, "--listen", f"127.0.0.1:{free_port()}"]
        init = subprocess.run([sys.executable, "-m", "orc.node.cli.orc_node", "init"], env=env,
                              capture_output=True, text=True, timeout=60)
        assert init.returncode == 0, init.stderr
    (home / "config.yaml").write_text("llama_cpp:\n  extra_buffers: sometimes\n")
    done = subprocess.run([sys.executable, "-m", f"orc.node.cli.{command[0]}", *command[1:]], env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    error = [line for line in done.stderr.splitlines() if "error" in line]
    assert error == [f"orc: error: {home / 'config.yaml'}: llama_cpp.extra_buffers must be auto, on or off, "
                     "not 'sometimes'; write `extra_buffers: auto` (or on, or off) under `llama_cpp:`"]
