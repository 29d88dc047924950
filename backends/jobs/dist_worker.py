"""One process of a run on several (``tunedesk train --nproc N``), as torchrun started it.

torchrun (started by ``backends.jobs.launch``) runs ``tunedesk train`` once per process with
``RANK`` / ``WORLD_SIZE`` / ``LOCAL_RANK`` set; the launcher adds ``TUNEDESK_DIST_DIR``, a folder
of its own where:
- each process keeps ``rank-<R>.json`` (``RankStatus``): its pid, the run folder, the last step,
  and at the end its outcome (``finished``, ``stopped``, ``failed``, ``input``) with the
  ``run_failed`` event it would have written. The launcher reads them to name the rank that failed
  first, and writes that one ``run_failed`` event (with ``rank``) itself: a process that loses a
  peer fails too, and only the launcher sees which one went first (or was killed and said nothing);
- ``stop.request`` appears when the launcher is asked to stop (SIGINT/SIGTERM); every process
  watches for it (``watch_stop_file``) and the loop stops them all at the same step.
Rank 0 alone writes events (and ``--json`` lines), the log, checkpoints and the adapter; the other
processes' sinks write nothing (``Process.sink``).
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

from backends.events import EventSink, make_event

DIST_DIR_ENV = "TUNEDESK_DIST_DIR"
STOP_REQUEST = "stop.request"
FINAL_OUTCOMES = ("finished", "stopped", "failed", "input")


def status_path(folder: Path, rank: int) -> Path:
    """Where process ``rank`` keeps its status in the launcher's folder."""
    return Path(folder) / f"rank-{rank}.json"


class RankStatus:
    """This process's ``rank-<R>.json`` (see module docstring); ``update`` merges fields and
    replaces the file (a reader never sees half of it)."""

    def __init__(self, folder: Path, rank: int) -> None:
        self.path = status_path(folder, rank)
        self.fields: dict[str, Any] = {"rank": rank, "pid": os.getpid(), "started": time.time()}
        self.update()

    def update(self, **fields: Any) -> None:
        self.fields.update(fields)
        tmp = self.path.with_name(f".{self.path.name}.tmp")
        tmp.write_text(json.dumps(self.fields), encoding="utf-8")
        os.replace(tmp, self.path)

    def listen(self, event: dict[str, Any]) -> None:
        """Keep the run folder and the last step from the events."""
        if event.get("event") == "run_started":
            self.update(run_dir=event.get("run_dir"))
        elif event.get("event") == "step":
            self.fields["step"] = event.get("step")  # written with the next update, or the outcome

    def finish(self, outcome: str, **fields: Any) -> None:
        self.update(outcome=outcome, ended=time.time(), **fields)


class RankSink(EventSink):
    """The event sink of one of several processes: ``run_failed`` goes into the status (the
    launcher writes the one that names the failing rank; without a launcher, torchrun started by
    hand, rank 0 writes it with its own ``rank``); every other event as ``EventSink``."""

    def __init__(self, path: Path | None, *, status: RankStatus | None, rank: int, **kwargs: Any) -> None:
        super().__init__(path, **kwargs)
        self.status = status
        self.rank = rank

    def emit(self, name: str, /, **fields: Any) -> dict[str, Any]:
        if name == "run_failed":
            fields["rank"] = self.rank
            if self.status is not None:
                event = make_event(name, **fields)
                self.status.update(failure=event, step=event.get("step"))
                return event
        event = super().emit(name, **fields)
        if self.status is not None:
            self.status.listen(event)
        return event


class Process:
    """This process's place in a run on several: ``rank`` (global), ``size``, and the launcher's
    folder (None when torchrun was started by hand: then rank 0 writes ``run_failed`` itself)."""

    def __init__(self, rank: int, size: int, folder: Path | None) -> None:
        self.rank, self.size, self.folder = rank, size, folder
        self.status = RankStatus(folder, rank) if folder is not None else None

    @property
    def writer(self) -> bool:
        return self.rank == 0

    def sink(
        self,
        path: Path | None,
        *,
        stdout: TextIO | None = None,
        listeners: list[Callable[[dict[str, Any]], None]] | None = None,
    ) -> EventSink:
        """Rank 0: a sink to ``path``, ``stdout`` and ``listeners``; the others: one that keeps
        only their status."""
        if not self.writer:
            path, stdout, listeners = None, None, []
        return RankSink(path, status=self.status, rank=self.rank, stdout=stdout, listeners=listeners)

    def finish(self, outcome: str, **fields: Any) -> None:
        if self.status is not None:
            self.status.finish(outcome, **fields)


def current() -> Process | None:
    """This process's ``Process`` when torchrun started it as one of several, else None."""
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size <= 1:
        return None
    folder = os.environ.get(DIST_DIR_ENV)
    return Process(int(os.environ.get("RANK", "0")), size, Path(folder) if folder else None)


def watch_stop_file(process: Process, stop: threading.Event, interval: float = 0.2) -> None:
    """Set ``stop`` when the launcher's ``stop.request`` appears (a daemon thread); and, for the
    whole life of this process, let SIGTERM and SIGINT set it too: torchrun sends SIGTERM to the
    others when one process fails, and this process must still write its status and exit."""

    def handler(signum: int, frame: object) -> None:
        stop.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, handler)
    if process.folder is None:
        return
    request = Path(process.folder) / STOP_REQUEST

    def watch() -> None:
        while not stop.is_set():
            if request.exists():
                stop.set()
                return
            time.sleep(interval)

    threading.Thread(target=watch, name="stop-request", daemon=True).start()
