"""Help texts that wrap to the terminal: `--help` shows a command's docstring, whose lines are
broken at the source's width (about 95 columns). Typer keeps every line break it finds and
wraps again at the terminal's width, so on an 80-column terminal each long line broke in two,
mid-sentence. `reflow` joins the lines of each prose paragraph and leaves the rest alone;
`reflow_help` applies it to every command and group of an app, once, before it runs.

What stays as written: a paragraph whose first line is indented (examples, command lines), and
the line structure of lists (lines starting with "- ", "* " or "1. "), whose continuation lines
join their item.
"""

from __future__ import annotations

import inspect
import re

import typer

__all__ = ["reflow", "reflow_help"]

_ITEM = re.compile(r"(?:[-*]|\d+\.)\s")


def reflow(text: str) -> str:
    """`text` (a docstring) with each prose paragraph on one line."""
    paragraphs = []
    for paragraph in inspect.cleandoc(text).split("\n\n"):
        lines = paragraph.splitlines()
        if not lines or lines[0].startswith((" ", "\t")):
            paragraphs.append(paragraph)
            continue
        items: list[str] = []
        for line in lines:
            line = line.strip()
            if items and not _ITEM.match(line):
                items[-1] += " " + line
            else:
                items.append(line)
        paragraphs.append("\n".join(items))
    return "\n\n".join(paragraphs)


def reflow_help(app: typer.Typer) -> None:
    """Reflow the help of `app`, its commands and its sub-apps, in place."""
    if isinstance(app.info.help, str):
        app.info.help = reflow(app.info.help)
    callback = app.registered_callback
    if callback is not None and callback.help is None and inspect.getdoc(callback.callback):
        callback.help = reflow(inspect.getdoc(callback.callback) or "")
    for command in app.registered_commands:
        text = command.help if command.help is not None else inspect.getdoc(command.callback)
        if text:
            command.help = reflow(text)
    for group in app.registered_groups:
        if isinstance(group.help, str):
            group.help = reflow(group.help)
        if group.typer_instance is not None:
            reflow_help(group.typer_instance)
