"""Errors shared by every part of TuneDesk, mapped to the CLI's exit codes (see docs in README)."""

from __future__ import annotations

from pathlib import Path

EXIT_OK = 0
EXIT_USER_INPUT = 1
EXIT_USAGE = 2
EXIT_RUN_FAILED = 3
EXIT_STOPPED = 130


class TuneDeskError(Exception):
    """Base class of every error TuneDesk reports to a user (never shown as a bare traceback)."""

    exit_code = EXIT_RUN_FAILED


class UserInputError(TuneDeskError):
    """The user's input (a config, a data file, a model path, a flag) is wrong.

    The message names the file, the line (where one exists) and the field, so the user can fix it.
    """

    exit_code = EXIT_USER_INPUT

    def __init__(
        self,
        message: str,
        *,
        file: str | Path | None = None,
        line: int | None = None,
        field: str | None = None,
        hint: str | None = None,
    ) -> None:
        self.file = str(file) if file is not None else None
        self.line = line
        self.field = field
        self.reason = message
        self.hint = hint
        where = []
        if self.file:
            where.append(self.file + (f":{line}" if line is not None else ""))
        elif line is not None:
            where.append(f"line {line}")
        if field:
            where.append(field)
        text = (": ".join(where) + ": " if where else "") + message
        if hint:
            text += f" ({hint})"
        super().__init__(text)


class UsageError(UserInputError):
    """A command-line option is malformed (e.g. ``--set`` without ``=``): exit 2, as argparse."""

    exit_code = EXIT_USAGE


class RunFailed(TuneDeskError):
    """A training or chat run failed (NaN, out of memory, model or data problem, worker crash).

    ``kind`` is one of the design's ``run_failed`` kinds: nan, diverged, oom, disk, data, model, crash.
    """

    exit_code = EXIT_RUN_FAILED

    def __init__(self, kind: str, message: str, hint: str = "") -> None:
        self.kind = kind
        self.message = message
        self.hint = hint
        super().__init__(message + (f" Hint: {hint}" if hint else ""))


class RunStopped(TuneDeskError):
    """The run was stopped by the user or a signal after saving a checkpoint."""

    exit_code = EXIT_STOPPED
