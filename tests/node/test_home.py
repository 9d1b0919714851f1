"""The home is the user's own: ownership and mode checks, private folders, the daemon's lock."""

from __future__ import annotations

import os
import pwd
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from orc.node.home import (
    DaemonLock,
    Home,
    HomeError,
    HomeLocked,
    UnsafeFile,
    UnsafeHome,
    daemon_holds,
    folder_problem,
    offline_change,
)

ME = os.geteuid()


def stat_of(path: Path, *, uid: int | None = None, mode: int | None = None) -> os.stat_result:
    """`path`'s real stat with its owner or mode replaced (the pure check takes any stat)."""
    real = list(os.stat(path))
    if uid is not None:
        real[stat.ST_UID] = uid
    if mode is not None:
        real[stat.ST_MODE] = stat.S_IFMT(real[stat.ST_MODE]) | mode
    return os.stat_result(real)


# ---- the pure check ----

def test_a_folder_of_the_user_not_writable_by_others_is_fine(tmp_path):
    assert folder_problem(tmp_path, stat_of(tmp_path, uid=1000, mode=0o755), 1000) is None
    assert folder_problem(tmp_path, stat_of(tmp_path, uid=1000, mode=0o700), 1000) is None


def test_a_folder_of_another_user_is_refused_with_the_chown_that_fixes_it(tmp_path):
    problem = folder_problem(tmp_path, stat_of(tmp_path, uid=54321, mode=0o700), 54322)
    assert problem is not None and str(tmp_path) in problem
    assert "belongs to 54321, not to you" in problem and f"sudo chown 54322 {tmp_path}" in problem


@pytest.mark.parametrize("mode", [0o777, 0o775, 0o757, 0o1777, 0o720])
def test_a_folder_others_can_write_is_refused_with_the_chmod_that_fixes_it(tmp_path, mode):
    problem = folder_problem(tmp_path, stat_of(tmp_path, uid=1000, mode=mode), 1000)
    assert problem is not None and f"chmod go-w {tmp_path}" in problem and f"{mode:04o}" in problem


def test_a_file_where_a_home_folder_should_be_is_refused(tmp_path):
    file = tmp_path / "f"
    file.write_text("")
    assert "not" in folder_problem(file, os.stat(file), ME)


# ---- the shell: every folder of the home, real owners and modes ----

def test_locate_refuses_a_home_owned_by_another_user(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    nobody = pwd.getpwnam("nobody").pw_uid
    os.chown(home, nobody, -1)
    with pytest.raises(UnsafeHome, match="chown"):
        Home.locate(home)


def test_locate_refuses_a_world_writable_state_folder(tmp_path, monkeypatch):
    for kind in ("CONFIG", "DATA", "STATE"):
        (tmp_path / kind.lower()).mkdir(mode=0o700)
        monkeypatch.setenv(f"XDG_{kind}_HOME", str(tmp_path / kind.lower()))
    monkeypatch.delenv("ORC_HOME", raising=False)
    monkeypatch.setattr(sys, "platform", "linux")
    state = tmp_path / "state" / "orc"
    state.mkdir()
    Home.locate()  # fine so far
    os.chmod(state, 0o777)
    with pytest.raises(UnsafeHome, match=f"{state}.*chmod go-w"):
        Home.locate()
    os.chmod(state, 0o700)
    runs = state / "runs"
    runs.mkdir()
    os.chmod(runs, 0o770)
    with pytest.raises(UnsafeHome, match="runs"):
        Home.locate()


def test_a_home_that_does_not_exist_yet_is_fine_and_prepare_makes_it_private(tmp_path):
    home = Home.locate(tmp_path / "new")
    home.prepare()
    assert stat.S_IMODE(os.stat(tmp_path / "new").st_mode) == 0o700


def test_commands_refuse_an_unsafe_home_with_one_line_and_exit_2(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    os.chmod(home, 0o777)
    env = {**os.environ, "ORC_HOME": str(home)}
    for module, args in (("orc_node", ("status",)), ("orc_node", ("start", "--no-mdns", "--no-api")), ("orc", ("peers",)),
                         ("orc", ("run", "perspectives", "x"))):
        done = subprocess.run([sys.executable, "-m", f"orc.node.cli.{module}", *args], capture_output=True,
                              text=True, env=env, timeout=120)
        assert done.returncode == 2, (args, done.stderr)
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and str(home) in lines[0] and "chmod go-w" in lines[0], (args, done.stderr)
        assert "Traceback" not in done.stderr


# ---- the daemon's lock ----

def test_one_daemon_per_home_and_the_second_is_told_the_first_ones_pid(tmp_path):
    home = Home.locate(tmp_path / "home")
    assert not daemon_holds(home)
    first = DaemonLock.acquire(home)
    try:
        assert daemon_holds(home)
        assert (home.state_dir / "orc-node.lock").read_text().strip() == str(os.getpid())
        # flock locks belong to open files, so a second acquire in this process conflicts too.
        with pytest.raises(HomeLocked, match=f"another orc-node daemon runs for this home \\(pid {os.getpid()}\\)"):
            DaemonLock.acquire(home, patience=0.0)
        with offline_change(home) as held:
            assert held is False  # a command must ask the daemon instead of changing files under it
    finally:
        first.release()
    assert not daemon_holds(home)
    assert (home.state_dir / "orc-node.lock").read_text() == ""  # no stale pid left
    DaemonLock.acquire(home).release()


def test_the_lock_is_handed_over_across_an_exec_by_its_descriptor(tmp_path):
    home = Home.locate(tmp_path / "home")
    first = DaemonLock.acquire(home)
    fd = first.keep_across_exec()
    assert os.get_inheritable(fd)
    inherited = DaemonLock.inherit(home, fd)  # what the exec'd process does with the number
    assert not os.get_inheritable(fd)  # the processes the daemon starts do not get the lock
    assert daemon_holds(home)
    inherited.release()
    assert not daemon_holds(home)


def test_a_descriptor_that_is_not_the_homes_lock_or_does_not_hold_it_is_refused(tmp_path):
    home = Home.locate(tmp_path / "home")
    DaemonLock.acquire(home).release()  # the lock file exists, nobody holds it
    other = os.open(tmp_path / "other", os.O_RDWR | os.O_CREAT)
    try:
        with pytest.raises(HomeError, match="is not"):
            DaemonLock.inherit(home, other)
    finally:
        os.close(other)
    holder = DaemonLock.acquire(home)
    stranger = os.open(home.lock_file, os.O_RDWR)  # the same file, another open file: not the holder
    try:
        with pytest.raises(HomeLocked, match=f"pid {os.getpid()}"):
            DaemonLock.inherit(home, stranger)
    finally:
        os.close(stranger)
        holder.release()
    with pytest.raises(HomeError, match="not handed over"):
        DaemonLock.inherit(home, 987654)  # no such descriptor


def test_a_command_changing_the_home_holds_off_a_starting_daemon(tmp_path):
    home = Home.locate(tmp_path / "home")
    with offline_change(home) as held:
        assert held
        assert not daemon_holds(home)  # shared holders do not look like a daemon
        with pytest.raises(HomeLocked):
            DaemonLock.acquire(home, patience=0.1)
    DaemonLock.acquire(home, patience=0.1).release()


def test_a_link_planted_for_the_lock_file_is_refused(tmp_path):
    home = Home.locate(tmp_path / "home")
    home.prepare()
    victim = tmp_path / "victim"
    victim.write_text("precious")
    (home.state_dir / "orc-node.lock").symlink_to(victim)
    with pytest.raises(UnsafeFile, match="symbolic link"):
        DaemonLock.acquire(home)
    with pytest.raises(UnsafeFile):
        daemon_holds(home)
    assert victim.read_text() == "precious"
