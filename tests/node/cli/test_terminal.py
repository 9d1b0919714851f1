"""Text from models and peers on a terminal: what is removed, what is kept, and the real `orc`
under a pseudo-terminal (made safe) and into a pipe (unchanged)."""

from __future__ import annotations

import json
import os
import pty
import select
import subprocess
import sys
import time
from pathlib import Path

import pyte
import pytest

from support import write

from orc.node.cli.terminal import TerminalFilter, for_stream, one_line, terminal_safe

TITLE = "\x1b]0;pwned\x07"  # OSC 0: set the window title
TITLE_ST = "\x1b]2;pwned\x1b\\"  # the same, ended by ST
CLEAR = "\x1b[2J\x1b[H"  # CSI: clear the screen, cursor home
CLIPBOARD = "\x1b]52;c;aGVsbG8=\x07"  # OSC 52: write the clipboard
CSI_8BIT = "\x9b31m"  # the one-byte C1 form of CSI
OSC_8BIT = "\x9d0;pwned\x9c"  # C1 OSC ended by C1 ST
DCS = "\x1bPq#0;2;0;0;0\x1b\\"  # DCS (sixel)
APC, PM, SOS = "\x1b_hidden\x1b\\", "\x1b^hidden\x1b\\", "\x1bXhidden\x1b\\"
RESET = "\x1bc"  # a lone ESC sequence: full reset
BIDI = "\u202e\u2066\u2069\u202a"  # right-to-left override and isolates


@pytest.mark.parametrize("sequence", [TITLE, TITLE_ST, CLEAR, CLIPBOARD, CSI_8BIT, OSC_8BIT, DCS, APC, PM, SOS,
                                      RESET, BIDI, "\x07", "\x08", "\r", "\x7f", "\x85", "\x1b7", "\x1b(B"])
def test_each_control_is_removed_and_the_text_around_it_kept(sequence):
    assert terminal_safe(f"before{sequence}after") == "beforeafter"


def test_a_lone_escape_is_removed():
    assert terminal_safe("end\x1b") == "end"
    assert terminal_safe("line\x1b\nnext") == "line\nnext"


def test_newlines_tabs_and_ordinary_unicode_are_kept():
    text = "line one\n\tindented · café ✓ 日本語 — “quotes”\n"
    assert terminal_safe(text) == text


def test_a_sequence_split_across_pieces_is_removed_whole():
    stream = TerminalFilter()
    pieces = ["ok \x1b", "]52;c;", "aGVs", "bG8=\x1b", "\\ done \x1b[", "3", "1m!"]
    assert "".join(stream.feed(piece) for piece in pieces) == "ok  done !"


def test_an_unterminated_string_swallows_what_follows_like_a_terminal_would():
    assert terminal_safe("shown\x1b]0;never ended, never shown") == "shown"


def test_one_line_flattens_a_field():
    assert one_line(f"a\nb\tc{TITLE}d\r\ne") == "a b cd e"


def test_a_pipe_gets_the_text_unchanged(tmp_path):
    text = f"x{TITLE}{CLIPBOARD}{BIDI}y"
    with open(tmp_path / "out.txt", "w") as not_a_terminal:
        assert for_stream(text, not_a_terminal) == text


# ---- the real CLI --------------------------------------------------------------------------------

HOSTILE = f"title{TITLE}|clear{CLEAR}|clip{CLIPBOARD}|csi8{CSI_8BIT}|bidi{BIDI}evil|reset{RESET}|end"
SCRIPT = f"""\
import json, sys
json.load(sys.stdin)
sys.stdout.write({HOSTILE!r} + "\\n")
"""
FAILING = f"""\
import sys
sys.stderr.write({("boom" + CLIPBOARD + TITLE)!r})
sys.exit(3)
"""
ENSEMBLE = """\
name: hostile
default_task: go
agents:
  - {name: loud, script: loud.py}
"""
CONTROLS = ("\x1b]", "\x1b[2J", "\x9b", "\u202e", "\u2066", "\u2069", "\x1bc", "\x07")


def _under_a_terminal(args: list[str], home: Path, cwd: Path, timeout: float = 120) -> tuple[int, bytes]:
    """Run `orc ARGS` with stdin, stdout and stderr on a pseudo-terminal; what the terminal got."""
    leader, follower = pty.openpty()
    env = {k: v for k, v in os.environ.items() if k != "ORC_HOME"}
    env.update(ORC_HOME=str(home), TERM="xterm-256color", COLUMNS="100", LINES="40")
    process = subprocess.Popen([sys.executable, "-m", "orc.node.cli.orc", *args], stdin=follower, stdout=follower,
                               stderr=follower, cwd=cwd, env=env, close_fds=True)
    os.close(follower)
    received = b""
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([leader], [], [], 1.0)
            if ready:
                try:
                    chunk = os.read(leader, 65536)
                except OSError:  # EIO: the child closed the terminal
                    break
                if not chunk:
                    break
                received += chunk
            elif process.poll() is not None:
                break
        code = process.wait(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
        os.close(leader)
    return code, received


def _screen(received: str, width: int = 100, height: int = 40) -> list[str]:
    """The rows a terminal shows after `received` (a pseudo-terminal already turned \\n into \\r\\n)."""
    screen = pyte.Screen(width, height)
    pyte.Stream(screen).feed(received)
    return [row.rstrip() for row in screen.display if row.strip()]


def test_a_terminal_gets_the_deliverable_without_its_controls(home, orc):
    write(orc.work, "loud.py", SCRIPT)
    write(orc.work, "hostile.yaml", ENSEMBLE)
    code, received = _under_a_terminal(["run", "hostile.yaml"], home, orc.work)
    text = received.decode("utf-8", errors="replace")
    assert code == 0, text
    for control in CONTROLS:
        assert control not in text, (control, text)
    rows = _screen(text)
    assert rows[-1] == "title|clear|clip|csi8|bidievil|reset|end"
    assert rows[0].startswith("orc: running hostile (1 agent), run ")
    assert rows[1].startswith("  ✓ loud ")  # the live view ran, and left only the finished line
    assert not any("working" in row or "waiting" in row for row in rows)


def test_a_pipe_gets_the_deliverable_byte_for_byte_and_json_keeps_it(orc):
    write(orc.work, "loud.py", SCRIPT)
    write(orc.work, "hostile.yaml", ENSEMBLE)
    piped = orc("run", "hostile.yaml")
    assert piped.code == 0, piped.stderr
    assert piped.stdout == HOSTILE + "\n"
    as_json = orc("run", "hostile.yaml", "--json")
    assert json.loads(as_json.stdout)["deliverable"] == HOSTILE
    assert as_json.stderr == ""  # --json: nothing on stderr but warnings


def test_an_error_a_script_wrote_reaches_a_terminal_without_its_controls(home, orc):
    write(orc.work, "loud.py", FAILING)
    write(orc.work, "hostile.yaml", ENSEMBLE)
    code, received = _under_a_terminal(["run", "hostile.yaml"], home, orc.work)
    text = received.decode("utf-8", errors="replace")
    assert code == 1 and "boom" in text
    for control in CONTROLS:
        assert control not in text, (control, text)


def test_runs_show_is_safe_on_a_terminal_and_unchanged_in_a_pipe(home, orc):
    write(orc.work, "loud.py", SCRIPT)
    write(orc.work, "hostile.yaml", ENSEMBLE)
    assert orc("run", "hostile.yaml", "--quiet").code == 0
    run_id = json.loads(orc("runs", "list", "--json").stdout)[0]["run_id"]
    code, received = _under_a_terminal(["runs", "show", run_id], home, orc.work)
    shown = received.decode("utf-8", errors="replace")
    assert code == 0 and "title|clear|clip|csi8|bidievil|reset|end" in shown
    for control in CONTROLS:
        assert control not in shown, (control, shown)
    assert HOSTILE in orc("runs", "show", run_id).stdout  # a pipe: as the script wrote it
