"""Where one node keeps its files: config, models, run journals, identity; and keeping them its own.

`--home DIR` (or `ORC_HOME`) puts everything under DIR. Without it, the platform's folders
as `platformdirs` names them: XDG base directories on Linux and BSD (`~/.config/orc`,
`~/.local/share/orc`, `~/.local/state/orc`), `~/Library/Application Support/orc` on macOS,
`%LOCALAPPDATA%\\orc` on Windows. One exception keeps existing installs working: platformdirs
honours `XDG_*_HOME` on macOS too, where orc used to ignore them, so a Mac that already has
`~/Library/Application Support/orc` keeps that home whatever those variables say.

A home holds keys, journals and the daemon's control socket, so it must belong to the user who
runs orc and be writable by nobody else: `Home.locate` refuses one that is not (another user
could plant a symbolic link or swap a file there), folders orc creates are 0700, and the files
orc writes there are opened without following a symbolic link (`open_private`). The daemon
holds the home's lock file for its whole life (`DaemonLock`), so two daemons never share a
home and the commands can tell a daemon that is starting from none at all.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import shlex
import stat
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import platformdirs
from platformdirs.api import PlatformDirsABC


class HomeError(Exception):
    """The orc home folder cannot be used."""


class UnsafeHome(HomeError):
    """A folder of the orc home can be changed by someone other than you; fix its owner or mode."""


class HomeLocked(HomeError):
    """Another orc-node daemon runs for this home."""

    def __init__(self, message: str, pid: int | None) -> None:
        super().__init__(message)
        self.pid = pid


class UnsafeFile(OSError):
    """A file of the home is a symbolic link or not a regular file of this user: it was not opened."""


APP_NAME = "orc"
LOCK_FILE = "orc-node.lock"
LOCK_PATIENCE = 1.0  # seconds a starting daemon waits out a command that holds the lock for a moment


@dataclass(frozen=True)
class Home:
    config_dir: Path
    data_dir: Path
    state_dir: Path

    @classmethod
    def locate(cls, home: str | os.PathLike[str] | None = None) -> "Home":
        """The home named by `home`, else `ORC_HOME`, else the platform default; refused if unsafe."""
        explicit = home if home is not None else os.environ.get("ORC_HOME") or None
        if explicit is not None:
            root = Path(explicit).expanduser().absolute()
            if root.exists() and not root.is_dir():
                raise HomeError(f"--home {root} exists and is not a folder")
            located = cls(root, root, root)
        else:
            located = default_home(sys.platform, platformdirs.PlatformDirs, Path.home())
        located.check()
        return located

    @property
    def config_file(self) -> Path:
        return self.config_dir / "config.yaml"

    @property
    def api_keys_file(self) -> Path:
        """The HTTP API's keys, hashed (`orc-node api-key` writes it; the daemon re-reads it on change)."""
        return self.config_dir / "api-keys.json"

    @property
    def ensembles_dir(self) -> Path:
        return self.config_dir / "ensembles"

    @property
    def models_dir(self) -> Path:
        return self.data_dir / "models"

    @property
    def control_socket(self) -> Path:
        """The daemon's control socket (`orc-node start` opens it; `orc` and `orc-node` connect)."""
        return self.state_dir / "orc-node.sock"

    @property
    def runs_dir(self) -> Path:
        return self.state_dir / "runs"

    @property
    def identity_dir(self) -> Path:
        return self.data_dir / "identity"

    @property
    def lock_file(self) -> Path:
        return self.state_dir / LOCK_FILE

    def journal_path(self, run_id: str) -> Path:
        return self.runs_dir / f"{run_id}.journal"

    def folders(self) -> tuple[Path, ...]:
        """The folders whose owner and mode decide who can change this home (no duplicates)."""
        found: list[Path] = []
        for folder in (self.config_dir, self.data_dir, self.state_dir, self.runs_dir):
            if folder not in found:
                found.append(folder)
        return tuple(found)

    def check(self, uid: int | None = None) -> None:
        """Raise UnsafeHome naming the folder and the fix if one that exists is not `uid`'s alone."""
        if os.name != "posix":  # owners and modes are POSIX; elsewhere the user profile protects it
            return
        uid = os.geteuid() if uid is None else uid
        for folder in self.folders():
            try:
                status = os.stat(folder)
            except FileNotFoundError:
                continue
            problem = folder_problem(folder, status, uid)
            if problem is not None:
                raise UnsafeHome(problem)

    def prepare(self) -> None:
        """Create the home's folders that are missing, 0700 (their parents keep the usual modes)."""
        for folder in (self.config_dir, self.data_dir, self.state_dir):
            private_folder(folder)


def default_home(platform: str, folders: type[PlatformDirsABC], user: Path) -> Home:
    """The home of a user whose home folder is `user` on `platform` (`sys.platform`), when no
    `--home` or `ORC_HOME` names one: the folders platformdirs' class for that platform
    (`folders`) gives orc, with no author or version level and not roaming on Windows (the
    home holds a machine's identity, which must not follow the user to another machine).

    On macOS a home an earlier orc made at `~/Library/Application Support/orc` is kept even
    where `XDG_*_HOME` would now point elsewhere, so an upgrade never loses the node's identity.
    """
    if platform == "darwin":
        earlier = user / "Library" / "Application Support" / APP_NAME
        if earlier.is_dir():
            return Home(earlier, earlier, earlier)
    dirs = folders(APP_NAME, appauthor=False, roaming=False)
    return Home(dirs.user_config_path, dirs.user_data_path, dirs.user_state_path)


def folder_problem(path: Path, status: os.stat_result, uid: int) -> str | None:
    """Why a home folder with this `status` is unsafe for user `uid`, with the command that fixes it."""
    quoted = shlex.quote(str(path))
    if not stat.S_ISDIR(status.st_mode):
        return f"{path} should be a folder of the orc home but is not; move it away"
    if status.st_uid != uid:
        return (f"{path} belongs to {_user(status.st_uid)}, not to you ({_user(uid)}), so they could change what orc "
                f"reads and writes there; fix it with: sudo chown {_user(uid)} {quoted} (or use a home of your own)")
    mode = stat.S_IMODE(status.st_mode)
    if mode & 0o022:
        return (f"{path} can be changed by other users (mode {mode:04o}), so they could plant files or links "
                f"there; fix it with: chmod go-w {quoted}")
    return None


def _user(uid: int) -> str:
    try:
        import pwd

        return pwd.getpwuid(uid).pw_name
    except (ImportError, KeyError):
        return str(uid)


def private_folder(path: Path) -> Path:
    """`path` as a folder: created 0700 if missing (an existing one is left as it is)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(FileExistsError):
        os.mkdir(path, 0o700)
    return path


def open_private(path: Path, flags: int, mode: int = 0o600) -> int:
    """A file descriptor for `path`, never through a symbolic link planted there.

    The last component is opened with O_NOFOLLOW (a link is refused, not followed) and
    O_NONBLOCK (a planted FIFO cannot hang the caller); what was opened must be a regular file
    of this user. Raises UnsafeFile (an OSError) otherwise, FileNotFoundError and friends as usual.
    """
    try:
        fd = os.open(path, flags | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, mode)
    except OSError as error:
        if error.errno == errno.ELOOP:
            raise UnsafeFile(f"{path} is a symbolic link; orc does not follow links in its home: remove it") from None
        raise
    status = os.fstat(fd)
    if not stat.S_ISREG(status.st_mode) or status.st_uid != os.geteuid():
        os.close(fd)
        raise UnsafeFile(f"{path} is not a regular file of yours; move it away")
    return fd


class DaemonLock:
    """A daemon's claim on its home: `<state>/orc-node.lock`, flocked for the daemon's life, with its pid."""

    def __init__(self, path: Path, fd: int) -> None:
        self.path = path
        self._fd: int | None = fd

    @classmethod
    def acquire(cls, home: Home, *, patience: float = LOCK_PATIENCE, clock: Callable[[], float] = time.monotonic,
                sleep: Callable[[float], None] = time.sleep) -> DaemonLock:
        """Take the lock or raise HomeLocked. Blocking (it may wait `patience` seconds): run it off the loop.

        A command that changes the home without a daemon holds the lock shared for a moment;
        that is waited out. A daemon holds it for good, so after `patience` the start is refused.
        """
        path = private_folder(home.state_dir) / LOCK_FILE
        fd = open_private(path, os.O_RDWR | os.O_CREAT)
        deadline = clock() + patience
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if clock() >= deadline:
                    pid = _pid_in(fd)
                    os.close(fd)
                    holder = f"pid {pid}" if pid is not None else f"see {path}"
                    raise HomeLocked(f"another orc-node daemon runs for this home ({holder})", pid) from None
                sleep(0.05)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        return cls(path, fd)

    @classmethod
    def inherit(cls, home: Home, fd: int) -> DaemonLock:
        """The lock a process held before it exec'd this one (`keep_across_exec`), by descriptor.

        Raises HomeError unless `fd` is this home's lock file, HomeLocked if another process
        holds the lock (taking it again through the descriptor that holds it is a no-op).
        """
        path = home.lock_file
        try:
            held, named = os.fstat(fd), os.stat(path)
            if (held.st_dev, held.st_ino) != (named.st_dev, named.st_ino):
                raise HomeError(f"descriptor {fd} is not {path}")
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            pid = _pid_in(fd)
            holder = f"pid {pid}" if pid is not None else f"see {path}"
            raise HomeLocked(f"another orc-node daemon runs for this home ({holder})", pid) from None
        except OSError as error:
            raise HomeError(f"the daemon's lock on {path} was not handed over: {error}") from None
        os.set_inheritable(fd, False)  # not into the processes this one starts
        return cls(path, fd)

    def keep_across_exec(self) -> int:
        """Make the lock survive an `exec` of this process; its descriptor, for `inherit`."""
        assert self._fd is not None, "released"
        os.set_inheritable(self._fd, True)
        return self._fd

    def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is None:
            return
        with contextlib.suppress(OSError):
            os.ftruncate(fd, 0)  # no pid of a stopped daemon left behind
        os.close(fd)  # closing the last descriptor releases the flock


def daemon_holds(home: Home) -> bool:
    """Whether a daemon holds this home's lock (it is starting or running)."""
    try:
        fd = open_private(home.lock_file, os.O_RDONLY)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # also drops the shared lock this probe may have taken
    return False


@contextlib.contextmanager
def offline_change(home: Home) -> Iterator[bool]:
    """Hold the home's lock shared while a command changes it with no daemon running.

    Yields True while held (no daemon can start until the block ends, so it cannot load state
    this command is about to change), False if a daemon holds the lock: ask the daemon instead.
    """
    path = private_folder(home.state_dir) / LOCK_FILE
    fd = open_private(path, os.O_RDWR | os.O_CREAT)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        yield True
    finally:
        os.close(fd)


def _pid_in(fd: int) -> int | None:
    try:
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def examples_dir() -> Path | None:
    """The example ensembles shipped with orc (`ensembles/` of the source tree or the wheel)."""
    here = Path(__file__).resolve().parent
    for candidate in (here.parent / "ensembles", here / "examples"):
        if candidate.is_dir():
            return candidate
    return None


def project_dir(start: Path) -> Path | None:
    """The enclosing llm-orc project folder (`.llm-orc/`), searching upwards from `start`."""
    for folder in (start, *start.parents):
        candidate = folder / ".llm-orc"
        if candidate.is_dir():
            return candidate
    return None
