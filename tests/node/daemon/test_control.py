"""The control service's runs: it takes what the command line resolved, validates it, and hands
it to an engine from its factory (a recording stand-in here: no daemon, no socket)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from orc.node.coordinator.binding import RunRefused
from orc.node.daemon.control import ControlService
from orc.node.daemon.startup import Running, Startup
from orc.node.home import Home
from orc.node.protocol.events import RunPlanned
from orc.node.protocol.messages import RunRequest
from orc.node.protocol.errors import InvalidRequest, MeshCannotRun
from orc.scheduler.errors import Problem
from orc.scheduler.loader import EnsembleLibrary


class RecordingEngine:
    def __init__(self, refuse: int | None = None) -> None:
        self.library = EnsembleLibrary(())
        self.refuse = refuse
        self.ran: list[tuple[object, object, bool]] = []

    def preflight(self, spec):
        if self.refuse is not None:
            raise RunRefused([Problem(spec.source, "a", "no live node has model 'm'")], self.refuse)
        return ("bound", spec.name)

    def forecast(self, bound, run_input):
        return RunPlanned(bound[1], "me", 1.0, ())

    async def run(self, bound, run_input, *, resume=None, explain=False):
        self.ran.append((bound, run_input, explain))
        yield ("event", run_input)


@pytest.fixture
def control(tmp_path):
    made: list[dict] = []
    engine = RecordingEngine()

    def engines(**settings):
        made.append(settings)
        return engine

    startup = Startup()
    startup.member(object())  # type: ignore[arg-type]
    startup.started(Running(service=None, runtimes={}, peers=tuple, placer=None))  # type: ignore[arg-type]
    service = ControlService(home=Home.locate(tmp_path / "home"), startup=startup, engines=engines,
                             open_join_server=_never, join_address=lambda: None)
    (tmp_path / "e.yaml").write_text("name: e\ndefault_task: the default\nagents:\n  - {name: a, model: m}\n")
    return service, made, engine


async def _never() -> str:
    raise AssertionError("no join server in these tests")


def _collect(service: ControlService, request: RunRequest) -> list:
    async def go():
        return [event async for event in service.run(request)]
    return asyncio.run(go())


def test_a_run_gets_the_engine_for_the_callers_folder_and_options(control, tmp_path):
    service, made, engine = control
    events = _collect(service, RunRequest(str(tmp_path / "e.yaml"), None, str(tmp_path), seed=4, local=True,
                                          explain=True))
    assert made == [{"folder": tmp_path, "seed": 4, "local": True}]
    assert engine.ran == [(("bound", "e"), "the default", True)] and events == [("event", "the default")]


def test_a_plan_only_forecasts(control, tmp_path):
    service, _, engine = control
    events = _collect(service, RunRequest(str(tmp_path / "e.yaml"), "x", str(tmp_path), plan=True))
    assert events == [RunPlanned("e", "me", 1.0, ())] and engine.ran == []


@pytest.mark.parametrize("reference, cwd, message", [
    ("e.yaml", "ABS", "the ensemble file must be an absolute path, not 'e.yaml'"),
    ("ABS/e.yaml", "work", "the working folder must be an absolute path, not 'work'"),
    ("ABS/missing.yaml", "ABS", "the ensemble file 'ABS/missing.yaml' does not exist on this node"),
    ("ABS/e.yaml", "ABS/nowhere", "the working folder 'ABS/nowhere' does not exist on this node"),
])
def test_what_the_command_line_did_not_resolve_is_refused_with_one_message(control, tmp_path, reference, cwd,
                                                                             message):
    service, made, _ = control
    absolute = str(tmp_path)
    request = RunRequest(reference.replace("ABS", absolute), None, cwd.replace("ABS", absolute))
    with pytest.raises(InvalidRequest) as refused:
        _collect(service, request)
    assert str(refused.value).startswith(message.replace("ABS", absolute)) and made == []


def test_a_resume_names_a_run_id_not_a_path(control, tmp_path):
    service, _, _ = control
    for run_id, why in (("../../etc/passwd", "is not a run id"), ("0123abcd", "no run '0123abcd'")):
        with pytest.raises(InvalidRequest) as refused:
            _collect(service, RunRequest(str(tmp_path / "e.yaml"), None, str(tmp_path), resume=run_id))
        assert why in str(refused.value)


def test_a_refused_binding_maps_to_its_exit_code(control, tmp_path):
    service, _, engine = control
    for code, error in ((3, MeshCannotRun), (2, InvalidRequest)):
        engine.refuse = code
        with pytest.raises(error, match="no live node has model 'm'"):
            _collect(service, RunRequest(str(tmp_path / "e.yaml"), None, str(tmp_path)))


def test_the_ensemble_is_read_from_the_given_file_not_looked_up(control, tmp_path, monkeypatch):
    service, _, engine = control
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "e.yaml").write_text("name: decoy\nagents:\n  - {name: a, model: m}\n")
    monkeypatch.chdir(elsewhere)  # the daemon's own folder holds a file of the same name
    _collect(service, RunRequest(str(tmp_path / "e.yaml"), "x", str(Path(elsewhere))))
    assert engine.ran[0][0] == ("bound", "e")
