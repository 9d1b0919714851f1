"""Every error orc knows maps to its documented exit code in one function; a bug is exit 70."""

from __future__ import annotations

import pytest
import typer

from orc.node.cli.errors import exit_code_for, guarded
from orc.node.daemon.joining import JoinFailed
from orc.node.daemon.root import ApiPortUnusable, DaemonError, ListenPortInUse
from orc.node.home import HomeLocked, UnsafeHome
from orc.node.links.errors import BadPeerAddress
from orc.node.models.catalog import UnknownModel
from orc.node.models.runtimes.base import ModelLoadError
from orc.node.protocol import errors as domain
from orc.node.trust.errors import NotMember
from orc.scheduler.errors import EnsembleNotFound
from orc.scheduler.profiles import ConfigInvalid

INVALID_INPUT = [domain.InvalidRequest(), domain.WireError(), domain.JoinRefused(), domain.NotCertificateAuthority(),
                 NotMember(), EnsembleNotFound("x", []), ConfigInvalid("x"), UnknownModel("x"), UnsafeHome("x"),
                 BadPeerAddress("x"), DaemonError("x"), FileNotFoundError("x")]
MESH_CANNOT = [domain.MeshCannotRun(), domain.DaemonNotRunning(), domain.Revoked(), domain.TimedOut(),
               domain.Internal(), JoinFailed("x"), HomeLocked("x", 1), ModelLoadError("x"), ListenPortInUse("x"),
               ApiPortUnusable("x")]


@pytest.mark.parametrize("error", INVALID_INPUT, ids=lambda e: type(e).__name__)
def test_invalid_input_is_exit_2(error: Exception) -> None:
    assert exit_code_for(error) == 2


@pytest.mark.parametrize("error", MESH_CANNOT, ids=lambda e: type(e).__name__)
def test_what_the_mesh_or_daemon_cannot_do_is_exit_3(error: Exception) -> None:
    assert exit_code_for(error) == 3


@pytest.mark.parametrize("bug", [KeyError("k"), AttributeError("a"), TypeError("t"), ValueError("v")],
                         ids=lambda e: type(e).__name__)
def test_a_bug_is_not_called_invalid_input(bug: Exception, capsys: pytest.CaptureFixture[str]) -> None:
    assert exit_code_for(bug) is None
    with pytest.raises(typer.Exit) as leaving, guarded(debug=False, configure_logging=False):
        raise bug
    assert leaving.value.exit_code == 70
    assert "internal error" in capsys.readouterr().err


def test_a_known_error_prints_one_line_and_its_code(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(typer.Exit) as leaving, guarded(debug=False, configure_logging=False):
        raise domain.DaemonNotRunning("no daemon here")
    assert leaving.value.exit_code == 3
    assert capsys.readouterr().err.strip() == "orc: error: no daemon here"
