"""`--help` texts wrap to the terminal: prose paragraphs are joined, examples and lists keep
their lines."""

from __future__ import annotations

import typer

from orc.node.cli.help_text import reflow


def test_prose_is_joined_and_examples_and_lists_keep_their_lines() -> None:
    text = """First line.

        A paragraph broken
        at the source's width.

        Examples:

          orc run triad "hi"
          orc run triad --json

        - one item
          that goes on
        - another item
        1. numbered
    """
    assert reflow(text) == ("First line.\n\nA paragraph broken at the source's width.\n\nExamples:\n\n"
                            "  orc run triad \"hi\"\n  orc run triad --json\n\n"
                            "- one item that goes on\n- another item\n1. numbered")


def _prose_paragraphs(app: typer.Typer) -> list[tuple[str, str]]:
    found = [("app", app.info.help)] if isinstance(app.info.help, str) else []
    found += [(command.name or command.callback.__name__, command.help) for command in app.registered_commands]
    for group in app.registered_groups:
        found += _prose_paragraphs(group.typer_instance)
    return [(name, paragraph) for name, text in found if text for paragraph in text.split("\n\n")
            if not paragraph.startswith(" ") and not any(line[:2] in ("- ", "* ") for line in paragraph.splitlines())]


def test_every_command_of_both_programs_has_its_prose_on_one_line_a_paragraph() -> None:
    from orc.node.cli.orc import app as orc_app
    from orc.node.cli.orc_node import app as orc_node_app

    paragraphs = _prose_paragraphs(orc_app) + _prose_paragraphs(orc_node_app)
    assert len(paragraphs) > 40  # every command has its help
    broken = [(name, paragraph) for name, paragraph in paragraphs
              if "\n" in paragraph and not paragraph.splitlines()[1][:1].isdigit()]
    assert broken == []
