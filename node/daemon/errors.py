"""Why a daemon cannot start: one error per cause, each with its exit code (`orc.node.cli.errors`)."""

from __future__ import annotations


class DaemonError(Exception):
    """The daemon cannot start; the message says why and what to do."""

    exit_code = 2  # invalid input: flags, files, identity


class ListenPortInUse(DaemonError):
    """Another program (another orc-node?) listens on the mesh port; stop it or choose another port."""

    exit_code = 3


class ApiPortUnusable(DaemonError):
    """The HTTP API cannot listen where it was asked to (a port in use, an unusable certificate)."""

    exit_code = 3


__all__ = ["ApiPortUnusable", "DaemonError", "ListenPortInUse"]
