"""The execution log: one private JSON line per served execution, bounded, never failing its caller."""

from __future__ import annotations

import json
import logging
import os
import stat
from datetime import datetime

from orc.node.worker.execution_log import ExecutionLog, ExecutionRecord, read


def record(n: int = 1, outcome: str = "completed") -> ExecutionRecord:
    return ExecutionRecord(at=1000.0 + n, caller="peerid", run_id="run1", agent=f"agent{n}",
                           model="smollm2-135m-instruct@llama_cpp", execution_id=f"e{n}", prompt_chars=42,
                           outcome=outcome, seconds=0.25)


def test_each_record_is_one_json_line_in_a_private_file(tmp_path):
    path = tmp_path / "executions.jsonl"
    log = ExecutionLog(path)
    log.append(record(1))
    log.append(record(2, "failed:deadline"))
    lines = path.read_text().splitlines()
    assert len(lines) == 2
    first = json.loads(lines[0])
    assert first == {"at": 1001.0, "caller": "peerid", "run_id": "run1", "agent": "agent1",
                     "model": "smollm2-135m-instruct@llama_cpp", "execution_id": "e1", "prompt_chars": 42,
                     "outcome": "completed", "seconds": 0.25, "queued_s": None,
                     "date": "1970-01-01T00:16:41.000Z"}
    assert [r["outcome"] for r in read(path)] == ["completed", "failed:deadline"]
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_an_existing_file_with_loose_modes_is_made_private(tmp_path):
    path = tmp_path / "executions.jsonl"
    path.write_text("")
    path.chmod(0o644)
    ExecutionLog(path).append(record())
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_hostile_strings_stay_on_one_line(tmp_path):
    path = tmp_path / "executions.jsonl"
    ExecutionLog(path).append(ExecutionRecord(0.0, "peer", "run\n{\"x\": 1}", "a\u2028b\r", "m", "e", 0, "refused", 0.0))
    assert len(path.read_bytes().splitlines()) == 1
    assert read(path)[0]["run_id"] == "run\n{\"x\": 1}"


def test_the_file_is_rotated_before_it_passes_its_limit_keeping_one_old_generation(tmp_path):
    probe = tmp_path / "probe.jsonl"
    ExecutionLog(probe).append(record(1))
    line = probe.stat().st_size  # every record below has a line of this length
    path = tmp_path / "executions.jsonl"
    log = ExecutionLog(path, max_bytes=3 * line)
    for n in range(1, 8):
        log.append(record(n))
        assert path.stat().st_size <= 3 * line
    old = path.with_suffix(".1")
    assert not path.with_suffix(".2").exists()
    assert [r["execution_id"] for r in read(old)] == ["e4", "e5", "e6"]  # e1-e3 went with the second rotation
    assert [r["execution_id"] for r in read(path)] == ["e7"]


def test_reading_skips_damaged_lines(tmp_path):
    path = tmp_path / "executions.jsonl"
    log = ExecutionLog(path)
    log.append(record(1))
    with path.open("ab") as file:
        file.write(b"not json\n[1, 2]\n\xff\xfe\n")
    log.append(record(2))
    with path.open("ab") as file:
        file.write(b'{"at": 3, "cal')  # a line torn by a crash
    assert [r["execution_id"] for r in read(path)] == ["e1", "e2"]
    assert read(tmp_path / "missing.jsonl") == []


def test_a_failing_write_never_raises_and_is_logged_once(tmp_path, caplog):
    folder = tmp_path / "gone"
    log = ExecutionLog(folder / "executions.jsonl")
    with caplog.at_level(logging.WARNING, logger="orc.node.worker.execution_log"):
        log.append(record(1))  # the folder does not exist: it is not created
        log.append(record(2))
    assert len(caplog.records) == 1 and "execution log" in caplog.records[0].getMessage()
    assert not folder.exists()
    folder.mkdir()
    log.append(record(3))
    assert [r["execution_id"] for r in read(folder / "executions.jsonl")] == ["e3"]


def test_each_line_carries_its_instant_as_a_utc_date_beside_the_unix_time(tmp_path):
    path = tmp_path / "executions.jsonl"
    at = 1_746_091_800.25  # 2025-05-01 09:30:00.250 UTC
    ExecutionLog(path).append(ExecutionRecord(at, "peer", "run", "a", "m", "e", 0, "completed", 0.0))
    (line,) = read(path)
    assert line["at"] == at and line["date"] == "2025-05-01T09:30:00.250Z"
    assert datetime.fromisoformat(line["date"].replace("Z", "+00:00")).timestamp() == at


def test_a_link_planted_for_the_log_is_never_followed(tmp_path, caplog):
    victim = tmp_path / "victim"
    victim.write_text("precious\n")
    victim.chmod(0o644)
    path = tmp_path / "executions.jsonl"
    path.symlink_to(victim)
    log = ExecutionLog(path)
    with caplog.at_level(logging.WARNING, logger="orc.node.worker.execution_log"):
        log.append(record(1))
    assert victim.read_text() == "precious\n" and stat.S_IMODE(victim.stat().st_mode) == 0o644  # not re-moded
    assert path.is_symlink() and "symbolic link" in caplog.text
    # A link pointing nowhere is not followed to create its target either.
    path.unlink()
    path.symlink_to(tmp_path / "created-elsewhere")
    log.append(record(2))
    assert not (tmp_path / "created-elsewhere").exists()


def test_rotation_moves_a_planted_link_aside_without_writing_through_it(tmp_path):
    probe = tmp_path / "probe.jsonl"
    ExecutionLog(probe).append(record(1))
    line = probe.stat().st_size
    victim = tmp_path / "victim"
    victim.write_text("x" * (3 * line))
    path = tmp_path / "executions.jsonl"
    path.symlink_to(victim)
    ExecutionLog(path, max_bytes=3 * line).append(record(2))
    assert victim.read_text() == "x" * (3 * line)  # neither appended to nor renamed
    assert path.is_symlink() and not path.with_suffix(".1").exists()


def test_a_fifo_planted_for_the_log_cannot_hang_the_node(tmp_path):
    path = tmp_path / "executions.jsonl"
    os.mkfifo(path)
    ExecutionLog(path).append(record(1))  # returns: refused, logged, not blocked on the FIFO
    assert stat.S_ISFIFO(path.lstat().st_mode)
