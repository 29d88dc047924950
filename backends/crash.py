"""An unexpected exception (a bug, or a fault nothing else names) as a short message and a log
file, never a bare traceback on the terminal: ``tunedesk`` then exits 3 and names the file."""

from __future__ import annotations

import os
import tempfile
import time
import traceback
from pathlib import Path


def crash_log_dir() -> Path:
    """``<TUNEDESK_HOME>/logs`` (created), or the system's temporary folder when that cannot be made."""
    from backends import paths

    try:
        folder = paths.home() / "logs"
        folder.mkdir(parents=True, exist_ok=True)
        return folder
    except OSError:
        return Path(tempfile.gettempdir())


def write_crash_log(exc: BaseException, argv: list[str] | None = None) -> Path | None:
    """Write the traceback of ``exc`` (and the command line) to ``crash-<time>-<pid>.txt`` in
    ``crash_log_dir()``; returns its path, or None when no file could be written."""
    text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    header = f"tunedesk {' '.join(argv or [])}\n{time.strftime('%Y-%m-%d %H:%M:%S')}\n\n"
    path = crash_log_dir() / f"crash-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.txt"
    try:
        path.write_text(header + text, encoding="utf-8")
    except OSError:
        return None
    return path


def crash_message(exc: BaseException, log: Path | None) -> str:
    """One line for the terminal: what was raised and where the traceback is."""
    first = str(exc).splitlines()[0][:300] if str(exc) else ""
    where = f"the traceback is in {log}" if log is not None else "no log file could be written"
    return f"error: unexpected {type(exc).__name__}{': ' + first if first else ''} ({where})"
