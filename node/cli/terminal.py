"""Text from a model or a peer, made safe for a terminal, and the rule for when to do it.

A model's tokens, a peer's name or an error a peer sent can hold escape sequences that set the
terminal's title, clear the screen, write the clipboard (OSC 52) or rewrite what was printed
before. The rule (docs/cli.md, "Terminal safety"): what goes to a terminal is made safe with
`TerminalFilter`; what goes to a pipe or a file, and every `--json`, is the text as generated.

Made safe means: newlines and tabs kept; escape sequences removed whole (CSI, OSC, DCS, APC,
PM, SOS, in their 7-bit `ESC x` and 8-bit C1 forms, and any other `ESC` sequence); other C0
controls, DEL and C1 controls removed; bidirectional overrides and isolates (U+202A–U+202E,
U+2066–U+2069), which can make text read in another order than it is, removed.
"""

from __future__ import annotations

from enum import Enum
from typing import Any, TextIO

# C1 controls that open a sequence, by the 7-bit final character of their ESC form.
_C1_OPENERS = {"\x9b": "[", "\x9d": "]", "\x90": "P", "\x98": "X", "\x9e": "^", "\x9f": "_"}
_STRING_OPENERS = frozenset("]PX^_")  # OSC, DCS, SOS, PM, APC: a string up to a terminator
_BIDI_CONTROLS = frozenset(chr(c) for c in (*range(0x202A, 0x202F), *range(0x2066, 0x206A)))


class _State(Enum):
    TEXT = "text"
    ESCAPE = "escape"  # after ESC, before the character that says which sequence this is
    ESCAPE_INTERMEDIATE = "escape intermediate"  # ESC, then 0x20-0x2F bytes, until a final byte
    CSI = "csi"  # parameters and intermediates until a final byte 0x40-0x7E
    STRING = "string"  # an OSC/DCS/SOS/PM/APC body, until BEL (OSC) or ST
    STRING_ESCAPE = "string escape"  # ESC inside a string: `ESC \` ends it


class TerminalFilter:
    """Removes what a terminal would act on from text that arrives in pieces (streamed tokens):
    a sequence split across two pieces is removed whole. Holds no text, only where it is in a
    sequence, so an unterminated sequence costs no memory; it swallows what follows, as the
    terminal itself would have."""

    def __init__(self) -> None:
        self._state = _State.TEXT

    def feed(self, text: str) -> str:
        kept: list[str] = []
        state = self._state
        for char in text:
            code = ord(char)
            match state:
                case _State.TEXT:
                    if char == "\x1b":
                        state = _State.ESCAPE
                    elif char in _C1_OPENERS:
                        state = _State.CSI if _C1_OPENERS[char] == "[" else _State.STRING
                    elif char in "\n\t" or not (code < 0x20 or 0x7F <= code <= 0x9F or char in _BIDI_CONTROLS):
                        kept.append(char)
                case _State.ESCAPE:
                    if char == "[":
                        state = _State.CSI
                    elif char in _STRING_OPENERS:
                        state = _State.STRING
                    elif 0x20 <= code <= 0x2F:
                        state = _State.ESCAPE_INTERMEDIATE
                    elif char == "\x1b":
                        state = _State.ESCAPE
                    elif char in "\n\t":  # a lone ESC at the end of a line: the line stays
                        kept.append(char)
                        state = _State.TEXT
                    else:
                        # A two-character sequence (ESC c resets the terminal, ESC 7 saves the
                        # cursor): dropped. A control character here is dropped with it.
                        state = _State.TEXT
                case _State.ESCAPE_INTERMEDIATE:
                    if not 0x20 <= code <= 0x2F:
                        state = _State.TEXT
                case _State.CSI:
                    if 0x40 <= code <= 0x7E or code > 0x7E:
                        # The final byte; anything outside a CSI's alphabet also ends it, so a
                        # broken sequence cannot swallow the text after it.
                        state = _State.TEXT
                    elif char == "\x1b":
                        state = _State.ESCAPE
                case _State.STRING:
                    if char == "\x07" or char == "\x9c":  # BEL ends an OSC; C1 ST ends any string
                        state = _State.TEXT
                    elif char == "\x1b":
                        state = _State.STRING_ESCAPE
                case _State.STRING_ESCAPE:
                    state = _State.TEXT if char == "\\" else _State.STRING
        self._state = state
        return "".join(kept)


def terminal_safe(text: str) -> str:
    """`text` with every escape sequence and control character removed (newlines and tabs kept)."""
    return TerminalFilter().feed(text)


def one_line(text: str) -> str:
    """`terminal_safe(text)` on one line: newlines and tabs become spaces, for a field shown in a row."""
    return terminal_safe(text).replace("\n", " ").replace("\t", " ")


def is_terminal(stream: Any) -> bool:
    """Whether `stream` is a terminal (a pseudo-terminal counts); a closed or absent stream is not."""
    try:
        return bool(stream is not None and stream.isatty())
    except (AttributeError, ValueError, OSError):
        return False


def for_stream(text: str, stream: TextIO | None) -> str:
    """`text` made safe when `stream` is a terminal, unchanged when it is a pipe or a file."""
    return terminal_safe(text) if is_terminal(stream) else text


def echo(text: str, *, err: bool = False, nl: bool = True) -> None:
    """`typer.echo` of text that may hold what a model or a peer wrote, following the rule above."""
    import typer  # here: the daemon's process uses this module's filters and carries no typer

    stream = typer.get_text_stream("stderr" if err else "stdout")
    # color=True: left to itself, click strips some ANSI codes from what goes to a pipe, and a
    # pipe gets the text as generated.
    typer.echo(for_stream(text, stream), err=err, nl=nl, color=True)
