"""The run journal: append-only, durable per record, tolerant of a torn tail, strict elsewhere."""

import msgpack
import pytest

from orc.scheduler.errors import JournalCorrupt, RunNotFound
from orc.scheduler.journal import JournalWriter, RunEnded, RunHeader, read_journal
from orc.scheduler.run import (
    AgentBound,
    AgentFailed,
    AgentSkipped,
    AgentStarted,
    AgentSucceeded,
    Usage,
    apply,
    initial_state,
)
from orc.scheduler.values import freeze


def test_round_trip(tmp_path):
    path = tmp_path / "runs" / "r1.journal"
    writer = JournalWriter.create(path, RunHeader("r1", "ens", "/x.yaml", {"q": [1, 2]}, 10.0))
    events = [AgentStarted("a", 11.0, "local", "m"), AgentSucceeded("a", freeze({"k": ["v"]}), 12.0, Usage(3, 4)),
              AgentFailed("b", "boom", 13.0, True), AgentSkipped("c", "false", 14.0)]
    for event in events:
        writer.append(event)
    writer.append(RunEnded("completed_with_errors", 15.0))
    writer.close()
    contents = read_journal(path)
    assert contents.header.input == {"q": [1, 2]}
    assert contents.events[1] == AgentSucceeded("a", {"k": ["v"]}, 12.0, Usage(3, 4))
    assert contents.events[2:] == tuple(events[2:])
    assert contents.finished == RunEnded("completed_with_errors", 15.0)
    assert oct(path.stat().st_mode & 0o777) == "0o600"


def test_torn_tail_is_ignored_and_cut_on_reopen(tmp_path):
    path = tmp_path / "r.journal"
    writer = JournalWriter.create(path, RunHeader("r", "e", None, "in", 1.0))
    writer.append(AgentSucceeded("a", "done", 2.0))
    writer.close()
    whole = path.read_bytes()
    with open(path, "ab") as stream:
        stream.write(b"\x85\xa1t\xa2ok")  # a record cut off mid-write
    assert len(read_journal(path).events) == 1
    writer = JournalWriter.reopen(path)
    writer.append(AgentSucceeded("b", "more", 3.0))
    writer.close()
    assert path.read_bytes().startswith(whole)
    assert [e.agent for e in read_journal(path).events] == ["a", "b"]


def test_damage_is_reported(tmp_path):
    path = tmp_path / "bad.journal"
    path.write_bytes(b"\xc1" * 10)
    with pytest.raises(JournalCorrupt):
        read_journal(path)
    empty = tmp_path / "empty.journal"
    empty.write_bytes(b"")
    with pytest.raises(JournalCorrupt, match="no run header"):
        read_journal(empty)
    with pytest.raises(RunNotFound):
        read_journal(tmp_path / "missing.journal")


def test_write_failure_is_one_clear_error(tmp_path, monkeypatch):
    from orc.scheduler.errors import JournalWriteFailed

    writer = JournalWriter.create(tmp_path / "w.journal", RunHeader("w", "e", None, "in", 1.0))

    def no_space(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("orc.scheduler.journal.os.fsync", no_space)
    with pytest.raises(JournalWriteFailed, match="cannot write the run journal .*No space left on device"):
        writer.append(AgentSucceeded("a", "x", 2.0))
    blocked = tmp_path / "not-a-folder"
    blocked.write_text("a file where the runs folder should be")
    with pytest.raises(JournalWriteFailed, match="cannot create the run journal"):
        JournalWriter.create(blocked / "x.journal", RunHeader("x", "e", None, "in", 1.0))


def test_bindings_round_trip_with_their_failover_flag(tmp_path):
    path = tmp_path / "runs" / "b.journal"
    writer = JournalWriter.create(path, RunHeader("b", "ens", None, "in", 1.0, ("a",)))
    events = [AgentStarted("a", 2.0, None, "m"), AgentBound("a", "pi", 2.5),
              AgentBound("a", "mac", 3.5, failover=True), AgentSucceeded("a", "done", 4.0)]
    for event in events:
        writer.append(event)
    writer.close()
    contents = read_journal(path)
    assert contents.events == tuple(events)
    bound = [e for e in contents.events if isinstance(e, AgentBound)]
    assert [(e.node_id, e.failover) for e in bound] == [("pi", False), ("mac", True)]
    assert all(type(e.failover) is bool and type(e.at) is float for e in bound)


def test_a_replayed_journal_restores_nodes_and_failovers(tmp_path):
    from orc.scheduler.loader import load_ensemble_text

    spec = load_ensemble_text("name: e\nagents:\n  - {name: a, model: m}\n", tmp_path / "e.yaml")
    path = tmp_path / "r.journal"
    writer = JournalWriter.create(path, RunHeader("r", "e", None, "in", 1.0, ("a",)))
    for event in (AgentStarted("a", 2.0, None, "m"), AgentBound("a", "pi", 2.1),
                  AgentBound("a", "mac", 3.0, failover=True), AgentSucceeded("a", "ok", 4.0)):
        writer.append(event)
    writer.close()
    state = initial_state("r", spec, "in", 1.0)
    for event in read_journal(path).events:
        state = apply(state, event)
    record = state.agents["a"]
    assert record.nodes == ("pi", "mac") and record.node_id == "mac" and record.failovers == 1 and record.tries == 2


def test_a_binding_without_a_node_is_corrupt(tmp_path):
    path = tmp_path / "x.journal"
    writer = JournalWriter.create(path, RunHeader("x", "e", None, "in", 1.0))
    writer.close()
    with open(path, "ab") as stream:
        stream.write(msgpack.packb({"t": "bound", "agent": "a", "at": 2.0, "failover": False}))
        stream.write(msgpack.packb({"t": "end", "status": "completed", "at": 3.0}))
    with pytest.raises(JournalCorrupt, match="malformed record 'bound'"):
        read_journal(path)


# ---- links planted in the runs folder are never followed ----

def _journal_bytes(tmp_path) -> bytes:
    real = tmp_path / "real.journal"
    writer = JournalWriter.create(real, RunHeader("r", "e", None, "in", 1.0))
    writer.close()
    return real.read_bytes()


def test_a_link_planted_where_a_journal_goes_is_not_written_through(tmp_path):
    from orc.scheduler.errors import JournalWriteFailed

    victim = tmp_path / "victim"
    victim.write_bytes(b"precious")
    path = tmp_path / "runs" / "r.journal"
    path.parent.mkdir()
    path.symlink_to(victim)
    with pytest.raises(JournalWriteFailed, match="cannot create"):
        JournalWriter.create(path, RunHeader("r", "e", None, "in", 1.0))
    dangling = tmp_path / "runs" / "d.journal"
    dangling.symlink_to(tmp_path / "made-elsewhere")
    with pytest.raises(JournalWriteFailed):
        JournalWriter.create(dangling, RunHeader("d", "e", None, "in", 1.0))
    assert victim.read_bytes() == b"precious" and not (tmp_path / "made-elsewhere").exists()


def test_a_journal_that_is_a_link_is_neither_read_nor_resumed(tmp_path):
    from orc.scheduler.errors import JournalWriteFailed

    target = tmp_path / "elsewhere.journal"
    target.write_bytes(_journal_bytes(tmp_path) + b"\x85\xa1t")  # a valid journal with a torn tail
    before = target.read_bytes()
    path = tmp_path / "r.journal"
    path.symlink_to(target)
    with pytest.raises(JournalCorrupt, match="symbolic link"):
        read_journal(path)
    with pytest.raises((JournalCorrupt, JournalWriteFailed), match="symbolic link"):
        JournalWriter.reopen(path)
    assert target.read_bytes() == before  # not truncated through the link


def test_a_fifo_in_place_of_a_journal_is_refused_not_waited_on(tmp_path):
    import os

    path = tmp_path / "r.journal"
    os.mkfifo(path)
    with pytest.raises(JournalCorrupt, match="not a regular file"):
        read_journal(path)


def test_the_folders_a_journal_needs_are_made_private(tmp_path):
    import stat

    path = tmp_path / "state" / "orc" / "runs" / "r.journal"
    JournalWriter.create(path, RunHeader("r", "e", None, "in", 1.0)).close()
    for folder in (tmp_path / "state", tmp_path / "state" / "orc", tmp_path / "state" / "orc" / "runs"):
        assert stat.S_IMODE(folder.stat().st_mode) == 0o700, folder
