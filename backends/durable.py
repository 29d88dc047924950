"""Durable file-system steps for run folders: fsync before a rename marks something complete, an
atomic swap of a folder (no moment without it), cleanup of a killed writer's leftovers, a torn
last line repaired before appending, and the disk-full error in words.

Why fsync: ``rename`` is atomic in the file system's namespace, but without an fsync of the files
(and of their folder) a power cut after the rename can leave a folder that is marked complete
while its files are empty or short. The order here is: write, fsync every file, fsync the folder,
rename, fsync the parent folder (so the rename itself is durable).

Why a swap: replacing ``adapter/`` by rename-away-then-rename-in leaves an instant where no
``adapter/`` exists (a reader then sees a finished run without its adapter). On Linux
``renameat2(RENAME_EXCHANGE)`` and on macOS ``renamex_np(RENAME_SWAP)`` exchange two folders in
one step; elsewhere (Windows, old kernels, file systems without it) the two-rename fallback is
used and the gap is a few microseconds.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import errno
import os
import shutil
import sys
from pathlib import Path

# Leftovers of a writer killed mid-way: temporary folders being filled, and old folders swapped out.
LEFTOVER_PREFIXES = (".tmp-", ".old-")
# errno values that mean the disk (or the user's quota, or the file-size limit) is full.
DISK_FULL_ERRNOS = frozenset(getattr(errno, n) for n in ("ENOSPC", "EDQUOT", "EFBIG") if hasattr(errno, n))
# What torch's zip writer and safetensors say when a write came up short (they drop the errno).
_SHORT_WRITE_TEXTS = ("unexpected pos", "file write failed", "no space left", "disk quota", "file too large")


def fsync_path(path: str | Path) -> None:
    """fsync one file or folder (a folder's fsync makes the names in it durable). Folders cannot
    be opened on Windows; there the call does nothing for them."""
    path = Path(path)
    if path.is_dir() and sys.platform == "win32":
        return
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    except OSError as exc:  # some file systems refuse fsync on folders (EINVAL): nothing to make durable
        if exc.errno not in (errno.EINVAL, errno.EBADF, errno.ENOTSUP):
            raise
    finally:
        os.close(fd)


def fsync_tree(root: str | Path) -> None:
    """fsync every file under ``root``, then every folder (deepest first), then ``root`` itself."""
    root = Path(root)
    folders = []
    for dirpath, _dirnames, filenames in os.walk(root):
        for name in filenames:
            fsync_path(Path(dirpath) / name)
        folders.append(Path(dirpath))
    for folder in reversed(folders):
        fsync_path(folder)


def _exchange_function() -> object | None:
    """The platform's atomic two-name exchange as a ctypes function (Linux renameat2, macOS
    renamex_np), or None."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
    except OSError:
        return None
    if sys.platform.startswith("linux") and hasattr(libc, "renameat2"):
        return libc.renameat2
    if sys.platform == "darwin" and hasattr(libc, "renamex_np"):
        return libc.renamex_np
    return None


_EXCHANGE = _exchange_function()
_AT_FDCWD = -100
_RENAME_EXCHANGE = 2  # linux/fs.h
_RENAME_SWAP = 2  # macOS sys/stdio.h


def exchange(a: str | Path, b: str | Path) -> bool:
    """Atomically swap the names ``a`` and ``b`` (both must exist); False when this platform or
    file system cannot, so the caller falls back to two renames."""
    if _EXCHANGE is None:
        return False
    a_b, b_b = os.fsencode(str(a)), os.fsencode(str(b))
    if sys.platform == "darwin":
        rc = _EXCHANGE(a_b, b_b, ctypes.c_uint(_RENAME_SWAP))
    else:
        rc = _EXCHANGE(_AT_FDCWD, a_b, _AT_FDCWD, b_b, ctypes.c_uint(_RENAME_EXCHANGE))
    if rc == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP, errno.EOPNOTSUPP):
        return False
    raise OSError(err, os.strerror(err), str(a))


def replace_dir(tmp: str | Path, final: str | Path) -> None:
    """Put the complete folder ``tmp`` at ``final``: its files and itself are fsynced first; an
    existing ``final`` is exchanged with it in one step where the platform can (so ``final``
    always exists), then removed; the parent folder is fsynced after the rename."""
    tmp, final = Path(tmp), Path(final)
    fsync_tree(tmp)
    if final.exists():
        if exchange(tmp, final):
            shutil.rmtree(tmp, ignore_errors=True)  # ``tmp`` now names the old folder
        else:
            old = final.with_name(f".old-{final.name}-{os.getpid()}")
            os.replace(final, old)
            os.replace(tmp, final)
            shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, final)
    fsync_path(final.parent)


def clean_leftovers(folder: str | Path, names: tuple[str, ...] | None = None) -> list[Path]:
    """Remove the temporary and swapped-out folders (``.tmp-*``, ``.old-*``) a killed writer left
    in ``folder``; ``names`` limits it to leftovers of those final names (``("adapter",)``).
    Returns what was removed."""
    folder = Path(folder)
    removed = []
    if not folder.is_dir():
        return removed
    for child in folder.iterdir():
        if not child.name.startswith(LEFTOVER_PREFIXES) or not child.is_dir():
            continue
        if names is not None and not any(
            child.name.startswith(p + n + "-") for p in LEFTOVER_PREFIXES for n in names
        ):
            continue
        shutil.rmtree(child, ignore_errors=True)
        removed.append(child)
    return removed


def repair_torn_tail(path: str | Path) -> bool:
    """End a file whose last line was cut off (a writer killed mid-line) with a newline, so the
    next appended line starts on a line of its own instead of being glued to the fragment (which
    would make both unreadable). Returns True when it repaired something."""
    path = Path(path)
    try:
        with open(path, "rb+") as fh:
            fh.seek(0, os.SEEK_END)
            if fh.tell() == 0:
                return False
            fh.seek(-1, os.SEEK_END)
            if fh.read(1) == b"\n":
                return False
            fh.write(b"\n")
            fh.flush()
            os.fsync(fh.fileno())
            return True
    except FileNotFoundError:
        return False


def is_disk_full(exc: BaseException) -> bool:
    """True when ``exc`` (or what caused it) says the disk, the quota or the file-size limit is
    full: errno ENOSPC/EDQUOT/EFBIG, or torch's and safetensors' short-write messages, which drop
    the errno ("unexpected pos N vs M")."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, OSError) and exc.errno in DISK_FULL_ERRNOS:
            return True
        text = str(exc).lower()
        if any(t in text for t in _SHORT_WRITE_TEXTS):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def folder_bytes(folder: str | Path) -> int:
    """Total size in bytes of the files under ``folder`` (0 when it does not exist)."""
    total = 0
    for dirpath, _dirs, files in os.walk(folder):
        for name in files:
            with contextlib.suppress(OSError):
                total += (Path(dirpath) / name).stat().st_size
    return total


def disk_full_message(target: str | Path, needed: int | None) -> str:
    """'no space left on device' with the free bytes where ``target`` is written and the bytes the
    write needed (``needed``: an estimate, e.g. the previous checkpoint's size)."""
    target = Path(target)
    probe = target
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    try:
        free = shutil.disk_usage(probe).free
    except OSError:
        free = None
    parts = [f"no space left on device while writing {target}"]
    if free is not None:
        parts.append(f"{free:,} bytes free")
    if needed:
        parts.append(f"it needs about {needed:,} bytes")
    return "; ".join(parts)
