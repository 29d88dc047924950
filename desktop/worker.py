"""Child processes of the app: the training worker and one-shot commands (data check, model import).

Everything that needs the ML stack runs as ``tunedesk <command>`` in a child process started with
``QProcess``: ``[sys.executable, "-m", "desktop", ...]`` from a source install, or
``[sys.executable, ...]`` inside a PyInstaller bundle (``sys.frozen``), whose executable is the
same entry point. Its stdout carries JSON-line events (``backends.events``); stderr carries the
human-readable log. Stop is the workers' contract: SIGTERM makes the worker save a checkpoint,
emit ``stopped`` and exit 130.
"""

from __future__ import annotations

import json
import os
import signal
import sys
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from PySide6.QtCore import QObject, QProcess, QProcessEnvironment, Signal

from backends.errors import EXIT_OK, EXIT_STOPPED, EXIT_USER_INPUT
from backends.events import parse_line

FINAL_EVENTS = ("stopped", "run_finished", "run_failed", "export_failed")
# A process killed by SIGKILL: 137 through a shell, -9 from Python's subprocess; with nobody
# stopping it, that is almost always the kernel's out-of-memory killer, which leaves no message.
KILLED_EXIT_CODES = (137, -9)
KILLED_TEXT = (
    "Nobody asked it to stop, so the system most likely ran out of memory and ended it (the "
    "out-of-memory killer leaves no message). Lower training.batch_size or training.max_seq_length, "
    "turn on training.gradient_checkpointing, close other programs or use a smaller model; "
    "the run resumes from its last checkpoint."
)


def worker_command(args: list[str]) -> tuple[str, list[str]]:
    """Program and arguments that run ``tunedesk <args>`` with this app's own interpreter.

    Inside a frozen bundle ``sys.executable`` is the app itself (its entry runs CLI commands). The
    Windows bundle's app (``TuneDesk.exe``) is a windowed program; its console twin
    ``tunedesk-cli.exe`` beside it (packaging/tunedesk.spec) runs the workers, so their stdout and
    stderr are real pipes.
    """
    if getattr(sys, "frozen", False):
        console = os.path.join(os.path.dirname(sys.executable), "tunedesk-cli.exe")
        if sys.platform == "win32" and os.path.isfile(console):
            return console, list(args)
        return sys.executable, list(args)
    return sys.executable, ["-m", "desktop", *args]


@dataclass
class WorkerResult:
    """How a child process ended.

    ``exit_code``: its exit status (None if it never started); ``crashed``: killed by a signal or
    failed to start; ``final_event``: its last ``stopped``/``run_finished``/``run_failed``/
    ``export_failed`` event; ``log_tail``: its last stderr (and stray stdout) lines; ``stdout``:
    stdout lines that were not events (a one-shot command's JSON answer).
    """

    exit_code: int | None
    crashed: bool
    stop_requested: bool
    final_event: dict[str, Any] | None
    log_tail: list[str]
    stdout: list[str] = field(default_factory=list)
    start_error: str | None = None

    @property
    def ok(self) -> bool:
        """True when the command exited 0."""
        return self.exit_code == EXIT_OK and not self.crashed

    def error_text(self, what: str = "training process") -> str:
        """What went wrong, in words for the user (empty when it went fine); ``what`` names the child.

        Exit 1 is bad input: the worker's message (stderr) says which file, line and field. A
        ``run_failed`` event gives its message and hint. A process that ended in any other way
        without a final event crashed: say so with the last lines of its log.
        """
        if self.start_error:
            return f"The worker process could not be started: {self.start_error}"
        if self.ok:
            return ""
        event = self.final_event
        if event is not None and event.get("event") == "run_failed":
            text = f"The run failed ({event.get('kind')}): {event.get('message')}"
            if event.get("hint"):
                text += f"\nWhat to try: {event['hint']}"
            return text
        if event is not None and event.get("event") == "stopped":
            return ""
        if event is not None and event.get("event") == "export_failed":
            kind, message = event.get("kind"), str(event.get("message"))
            if kind == "stopped":
                return ""
            text = message if kind == "input" else f"The export failed ({kind}): {message}"
            return text + (f"\nWhat to try: {event['hint']}" if event.get("hint") else "")
        if self.exit_code == EXIT_USER_INPUT and not self.crashed:
            lines = [line for line in self.log_tail if line.strip()]
            message = lines[-1] if lines else "wrong input"
            return message.removeprefix("error: ")
        if self.stop_requested and (self.exit_code == EXIT_STOPPED or self.crashed):
            return ""
        tail = "\n".join(self.log_tail[-12:]) or "(no output)"
        how = "was killed" if self.crashed else f"exited with code {self.exit_code}"
        text = f"The {what} crashed ({how})."
        if self.crashed or self.exit_code in KILLED_EXIT_CODES:
            text += " " + KILLED_TEXT
        return f"{text} Last lines of its log:\n{tail}"


class WorkerProcess(QObject):
    """One child ``tunedesk`` command, read line by line.

    Signals: ``event(dict)`` for each JSON-line event on stdout; ``log_line(str)`` for each stderr
    line and each stdout line that is not an event; ``started()``; ``finished(WorkerResult)``.
    """

    event = Signal(dict)
    log_line = Signal(str)
    started = Signal()
    finished = Signal(object)

    def __init__(self, args: list[str], parent: QObject | None = None, *, tail_lines: int = 200) -> None:
        super().__init__(parent)
        self.args = list(args)
        self._tail: deque[str] = deque(maxlen=tail_lines)
        self._stdout_lines: list[str] = []
        self._buffers = {"out": b"", "err": b""}
        self._final: dict[str, Any] | None = None
        self._stop_requested = False
        self._start_error: str | None = None
        self._done = False
        self.process = QProcess(self)
        env = QProcessEnvironment.systemEnvironment()
        env.insert("PYTHONUNBUFFERED", "1")
        env.insert("PYTHONIOENCODING", "utf-8")
        self.process.setProcessEnvironment(env)
        self.process.readyReadStandardOutput.connect(self._read_stdout)
        self.process.readyReadStandardError.connect(self._read_stderr)
        self.process.finished.connect(self._on_finished)
        self.process.errorOccurred.connect(self._on_error)
        self.process.started.connect(self.started)

    # --- control ---
    def start(self) -> None:
        """Start the child (asynchronously); ``finished`` always follows, also on a failed start."""
        program, arguments = worker_command(self.args)
        self.process.start(program, arguments)

    def is_running(self) -> bool:
        """True while the child runs."""
        return self.process.state() != QProcess.ProcessState.NotRunning

    def pid(self) -> int | None:
        """The child's process id while it runs."""
        pid = int(self.process.processId())
        return pid or None

    def stop(self) -> None:
        """Ask the child to stop: SIGTERM (the worker saves a checkpoint, emits ``stopped``, exits 130)."""
        if not self.is_running():
            return
        self._stop_requested = True
        pid = self.pid()
        if pid and os.name == "posix":
            try:
                os.kill(pid, signal.SIGTERM)
                return
            except ProcessLookupError:
                return
        self.process.terminate()

    def kill(self) -> None:
        """End the child at once (no checkpoint)."""
        if self.is_running():
            self._stop_requested = True
            self.process.kill()

    def wait(self, msecs: int) -> bool:
        """Block until the child ends (for shutdown paths only); True if it ended."""
        return self.process.waitForFinished(msecs)

    @property
    def stop_requested(self) -> bool:
        """True once ``stop`` or ``kill`` was called."""
        return self._stop_requested

    # --- reading ---
    def _split(self, channel: str, data: bytes) -> list[str]:
        buf = self._buffers[channel] + data
        *lines, rest = buf.split(b"\n")
        self._buffers[channel] = rest
        return [line.decode("utf-8", errors="replace").rstrip("\r") for line in lines]

    def _read_stdout(self) -> None:
        for line in self._split("out", bytes(self.process.readAllStandardOutput().data())):
            self._handle_stdout_line(line)

    def _read_stderr(self) -> None:
        for line in self._split("err", bytes(self.process.readAllStandardError().data())):
            self._handle_log_line(line)

    def _handle_stdout_line(self, line: str) -> None:
        event = parse_line(line)
        if event is None:
            self._stdout_lines.append(line)
            if line.strip():
                self._handle_log_line(line)
            return
        if event.get("event") in FINAL_EVENTS:
            self._final = event
        self.event.emit(event)

    def _handle_log_line(self, line: str) -> None:
        # tqdm-style progress bars redraw with \r; keep only the last state of such a line.
        line = line.rsplit("\r", 1)[-1]
        self._tail.append(line)
        self.log_line.emit(line)

    def _flush(self) -> None:
        self._read_stdout()
        self._read_stderr()
        for channel, handler in (("out", self._handle_stdout_line), ("err", self._handle_log_line)):
            rest = self._buffers[channel]
            self._buffers[channel] = b""
            if rest:
                handler(rest.decode("utf-8", errors="replace"))

    def _on_error(self, error: QProcess.ProcessError) -> None:
        if error == QProcess.ProcessError.FailedToStart and not self._done:
            self._start_error = self.process.errorString()
            self._finish(None, crashed=True)

    def _on_finished(self, exit_code: int, status: QProcess.ExitStatus) -> None:
        self._flush()
        self._finish(exit_code, crashed=status == QProcess.ExitStatus.CrashExit)

    def _finish(self, exit_code: int | None, *, crashed: bool) -> None:
        if self._done:
            return
        self._done = True
        self.finished.emit(
            WorkerResult(
                exit_code=exit_code,
                crashed=crashed,
                stop_requested=self._stop_requested,
                final_event=self._final,
                log_tail=list(self._tail),
                stdout=list(self._stdout_lines),
                start_error=self._start_error,
            )
        )


class JsonCommand(QObject):
    """A one-shot child command whose stdout is one JSON document (``data check --json``,
    ``models list --json``, ``hardware --json``).

    ``done(object, str)``: the parsed answer (None on failure) and an error text ("" on success).
    ``log_line(str)``: its stderr lines as they come (progress messages).
    """

    done = Signal(object, str)
    log_line = Signal(str)

    def __init__(self, args: list[str], parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.worker = WorkerProcess(args, self)
        self.worker.log_line.connect(self.log_line)
        self.worker.finished.connect(self._on_finished)

    def start(self) -> None:
        """Start the command."""
        self.worker.start()

    def cancel(self) -> None:
        """Kill the command; ``done`` is not emitted afterwards."""
        self.worker.finished.disconnect(self._on_finished)
        self.worker.kill()

    def is_running(self) -> bool:
        """True while the command runs."""
        return self.worker.is_running()

    def _on_finished(self, result: WorkerResult) -> None:
        if not result.ok:
            if result.exit_code == EXIT_USER_INPUT or result.start_error:
                text = _json_error_message(result.stdout) or result.error_text()
            else:
                tail = "\n".join(result.log_tail[-8:]) or "(no output)"
                text = f"`tunedesk {' '.join(self.worker.args)}` failed (exit {result.exit_code}):\n{tail}"
            self.done.emit(None, text)
            return
        text = "\n".join(result.stdout).strip()
        try:
            answer = json.loads(text) if text else None
        except json.JSONDecodeError as exc:
            self.done.emit(None, f"unreadable answer from the worker: {exc}")
            return
        self.done.emit(answer, "")


def _json_error_message(stdout: list[str]) -> str:
    """The message of a ``--json`` command's ``{"ok": false, "error": {...}}`` answer, else ""."""
    try:
        answer = json.loads("\n".join(stdout).strip() or "null")
    except json.JSONDecodeError:
        return ""
    error = answer.get("error") if isinstance(answer, dict) else None
    if not isinstance(error, dict) or not error.get("message"):
        return ""
    return str(error["message"])  # already names file, line and field
