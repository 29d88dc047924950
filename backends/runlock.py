"""The run lock: one process at a time writes a run folder.

``run.lock`` holds ``<host> <pid>`` (for the app and ``tunedesk runs`` to show who runs it) and is
held with an exclusive ``flock`` (POSIX) or ``msvcrt.locking`` (Windows) on an open descriptor,
kept for the whole run. The kernel drops the lock when the process dies, however it dies, so a
killed run never leaves a lock that blocks its resume, and two processes can never both hold it
(a check-then-write lock can be won by both). After taking the lock, the holder checks that the
file it locked is still the one at the path (a releasing holder unlinks it), and retries if not.
"""

from __future__ import annotations

import contextlib
import os
import socket
import sys
from pathlib import Path

from backends.errors import UserInputError

if sys.platform == "win32":  # pragma: no cover - exercised on Windows only
    import msvcrt

    def _try_lock(fd: int) -> bool:
        try:
            os.lseek(fd, 0, os.SEEK_SET)
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
            return True
        except OSError:
            return False

    def _unlock(fd: int) -> None:
        with contextlib.suppress(OSError):
            os.lseek(fd, 0, os.SEEK_SET)
            msvcrt.locking(fd, msvcrt.LK_UNLCK, 1)

else:
    import fcntl

    def _try_lock(fd: int) -> bool:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            return False

    def _unlock(fd: int) -> None:
        with contextlib.suppress(OSError):
            fcntl.flock(fd, fcntl.LOCK_UN)


# path -> open descriptor holding the lock, for the locks this process holds
_HELD: dict[str, int] = {}


def _read_holder(path: Path) -> tuple[str, int] | None:
    try:
        host, pid_text = path.read_text().split()
        return host, int(pid_text)
    except (OSError, ValueError):
        return None


def acquire(path: str | Path, run_dir: str | Path) -> None:
    """Take the lock at ``path`` for this process (again: no-op). Raises UserInputError naming
    ``run_dir`` and the holder's pid when another live process holds it."""
    path = Path(path)
    key = str(path.resolve())
    if key in _HELD:
        return
    for _ in range(5):
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        if not _try_lock(fd):
            os.close(fd)
            holder = _read_holder(path)
            who = f"process {holder[1]} on {holder[0]}" if holder else "another process"
            raise UserInputError(f"run is already running ({who})", file=run_dir)
        try:
            same = os.fstat(fd).st_ino == os.stat(path).st_ino
        except FileNotFoundError:
            same = False
        if not same:  # the previous holder unlinked it between our open and lock: take the new one
            _unlock(fd)
            os.close(fd)
            continue
        os.ftruncate(fd, 0)
        os.write(fd, f"{socket.gethostname()} {os.getpid()}\n".encode())
        os.fsync(fd)
        _HELD[key] = fd
        return
    raise UserInputError("could not take the run lock (it keeps changing)", file=run_dir)


def release(path: str | Path) -> None:
    """Drop this process's lock at ``path`` and remove the file (nothing when not held)."""
    path = Path(path)
    fd = _HELD.pop(str(path.resolve()), None)
    if fd is None:
        return
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
    _unlock(fd)
    os.close(fd)


def holder(path: str | Path) -> int | None:
    """Pid of the live process that holds the lock at ``path``, else None.

    This process's own lock (or a lock file naming this process) gives its pid. Otherwise the lock is probed with a non-blocking lock
    of our own (released at once): if it can be taken nobody holds it, whatever pid the file
    names. A lock file written on another host (a shared folder) cannot be probed: None."""
    path = Path(path)
    info = _read_holder(path)
    if info is None:
        return None
    host, pid = info
    if str(path.resolve()) in _HELD or pid == os.getpid():
        return os.getpid()
    if host != socket.gethostname():
        return None
    try:
        fd = os.open(path, os.O_RDWR)
    except OSError:
        return None
    try:
        if _try_lock(fd):
            _unlock(fd)
            return None
        return pid
    finally:
        os.close(fd)
