"""The app's side of the chat worker: ``tunedesk chat --serve`` in a child process (``QProcess``
through ``desktop.worker.WorkerProcess``), commands written to its stdin as JSON lines, its events
turned into Qt signals. The protocol is ``backends/chat/worker.py``'s. Nothing here blocks the GUI.
"""

from __future__ import annotations

import json
from typing import Any

from PySide6.QtCore import QObject, Signal

from desktop.worker import WorkerProcess, WorkerResult


class ChatClient(QObject):
    """One chat worker for one base model; restarted by ``start`` for another model.

    Signals: ``ready(dict)`` (``chat_ready``), ``token(str, str, str)`` (request id, stream id,
    text), ``reply_finished(dict)``, ``chat_error(dict)``, ``log(dict)`` (``log`` events, e.g. the
    memory warning), ``validation_prompts(dict)``, ``exited(str)`` (the worker ended; the error in
    words, "" after a normal quit).
    """

    ready = Signal(dict)
    token = Signal(str, str, str)
    reply_finished = Signal(dict)
    chat_error = Signal(dict)
    log = Signal(dict)
    validation_prompts = Signal(dict)
    exited = Signal(str)

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.worker: WorkerProcess | None = None
        self.args: list[str] = []
        self.is_ready = False
        self._counter = 0

    # --- lifecycle ---
    def start(
        self, *, model: str | None = None, adapter: str | None = None, runs_dir: str | None = None
    ) -> None:
        """(Re)start the worker for ``model`` (None: the adapter's base model) with ``adapter``."""
        self.shutdown()
        args = ["chat", "--serve"]
        if model:
            args += ["--model", model]
        if adapter:
            args += ["--adapter", adapter]
        if runs_dir:
            args += ["--runs-dir", runs_dir]
        self.args = args
        self.is_ready = False
        worker = WorkerProcess(args, self)
        worker.event.connect(self._on_event)
        worker.finished.connect(lambda result, w=worker: self._on_finished(w, result))
        self.worker = worker
        worker.start()

    def is_running(self) -> bool:
        """True while a worker process runs."""
        return self.worker is not None and self.worker.is_running()

    def shutdown(self, wait_ms: int = 3000) -> None:
        """Ask the worker to quit, wait up to ``wait_ms``, then kill it."""
        worker, self.worker = self.worker, None
        self.is_ready = False
        if worker is None or not worker.is_running():
            return
        worker.finished.disconnect()
        worker.process.write(b'{"cmd": "stop"}\n{"cmd": "quit"}\n')
        worker.process.closeWriteChannel()
        if not worker.wait(wait_ms):
            worker.kill()
            worker.wait(1000)

    # --- commands ---
    def new_id(self, prefix: str = "r") -> str:
        """A fresh request id."""
        self._counter += 1
        return f"{prefix}{self._counter}"

    def send(self, command: dict[str, Any]) -> None:
        """Write one command (queued by the worker until its model is loaded)."""
        if self.worker is None:
            raise RuntimeError("the chat worker is not started")
        self.worker.process.write((json.dumps(command) + "\n").encode("utf-8"))

    def stop(self) -> None:
        """Stop the replies being written (after their current token)."""
        if self.worker is not None and self.worker.is_running():
            self.send({"cmd": "stop"})

    # --- events ---
    def _on_event(self, event: dict[str, Any]) -> None:
        name = event.get("event")
        if name == "token":
            self.token.emit(str(event.get("request", "")), str(event.get("stream", "")), event["text"])
        elif name == "reply_finished":
            self.reply_finished.emit(event)
        elif name == "chat_ready":
            self.is_ready = True
            self.ready.emit(event)
        elif name == "chat_error":
            self.chat_error.emit(event)
        elif name == "log":
            self.log.emit(event)
        elif name == "validation_prompts":
            self.validation_prompts.emit(event)

    def _on_finished(self, worker: WorkerProcess, result: WorkerResult) -> None:
        if worker is not self.worker:
            return
        self.worker = None
        self.is_ready = False
        self.exited.emit("" if result.ok else result.error_text("chat process"))
