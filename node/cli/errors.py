"""The one place where errors become a message on stderr and an exit code.

0 success; 1 the run finished with failed agents; 2 invalid input (ensemble, flags, files,
config); 3 the mesh cannot run it (no node has the model); 70 an internal error (a bug:
please report it). Tracebacks only with --debug.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import traceback
from collections.abc import Iterator
from typing import NoReturn

# typer is imported where it is used: the daemon's process (`daemon_process`) reports its errors
# through `error_exit` and must not carry the command line's libraries.


def fail(code: int, message: str) -> NoReturn:
    """Print `message` as one error line (or a short list) and exit with `code`."""
    import typer

    from orc.node.cli.terminal import echo

    echo(f"orc: error: {message}", err=True)
    raise typer.Exit(code)


def exit_code_for(error: BaseException) -> int | None:
    """The documented exit code for an error orc knows, or None for a bug.

    The one mapping from an error to an exit code: by class, most specific first. An error that
    knows its own code (a refused run, a daemon that cannot start) says it.
    """
    from orc.node.coordinator.engine import RunRefused
    from orc.node.daemon.joining import JoinFailed
    from orc.node.daemon.root import DaemonError
    from orc.node.home import HomeError, HomeLocked
    from orc.node.links.errors import DiscoveryError
    from orc.node.models.catalog import CatalogError
    from orc.node.models.runtimes.base import RuntimeFailure
    from orc.node.protocol.errors import InvalidRequest, JoinRefused, NodeError, NotCertificateAuthority
    from orc.node.trust.errors import IdentityError
    from orc.node.web.keys import ApiKeyError
    from orc.scheduler.errors import SchedulerError

    if isinstance(error, (RunRefused, DaemonError)):
        return error.exit_code  # 2 for a bad ensemble or flag; 3 when the mesh or its port cannot
    codes: tuple[tuple[tuple[type[BaseException], ...], int], ...] = (
        ((InvalidRequest, JoinRefused, NotCertificateAuthority), 2),  # the request itself is wrong
        ((NodeError,), 3),  # the daemon or the mesh cannot be reached, or refused
        ((JoinFailed, HomeLocked, RuntimeFailure), 3),  # the mesh, another daemon or a runtime cannot
        ((IdentityError, SchedulerError, CatalogError, HomeError, DiscoveryError), 2),  # files, flags, config
        ((ApiKeyError,), 2),  # an unknown or badly named API key, or a damaged keys file
        ((OSError,), 2),  # a file or folder named on the command line
    )
    for classes, code in codes:
        if isinstance(error, classes):
            return code
    return None


def error_exit(error: BaseException, debug: bool) -> tuple[int, str]:
    """The exit code and the one line that end a command on `error`; with `debug`, its traceback
    is printed to stderr first."""
    code = exit_code_for(error)
    if debug:
        traceback.print_exception(error)
    if code is None:
        return 70, (f"orc: internal error: {type(error).__name__}: {error} "
                    "(please report it; --debug shows the traceback)")
    message = str(error) or error.__class__.__doc__ or type(error).__name__
    return code, f"orc: error: {message}"  # it can quote what a peer or a model sent: printed through `echo`


@contextlib.contextmanager
def guarded(debug: bool, configure_logging: bool = True) -> Iterator[None]:
    """Run a command body, mapping every error to one clear line and its exit code."""
    import typer

    from orc.node.cli.terminal import echo

    if configure_logging:
        logging.basicConfig(level=logging.DEBUG if debug else logging.WARNING, stream=sys.stderr,
                            format="%(levelname)s %(name)s: %(message)s")
    try:
        yield
    except (typer.Exit, typer.Abort, BrokenPipeError):
        raise
    except KeyboardInterrupt:
        typer.echo("orc: interrupted", err=True)
        raise typer.Exit(130) from None
    except Exception as error:  # noqa: BLE001 - the CLI boundary
        code, line = error_exit(error, debug)
        echo(line, err=True)
        raise typer.Exit(code) from None
