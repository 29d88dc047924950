"""The run folder: the single source of truth of a run (layout in ``../shared/design.md``).

``runs/<name>/`` holds ``config.yaml``, ``events.jsonl``, ``checkpoints/step-<N>/``, ``adapter/``
and ``log.txt``. Every file and checkpoint is written atomically: into a temporary sibling, then
renamed into place, so a killed process never leaves a half-written file that resume would pick.
A checkpoint counts only when its ``COMPLETE`` marker is inside (written last, before the rename).
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from backends import runlock
from backends.config import RunConfig, config_from_dict, dump_config
from backends.durable import fsync_path, replace_dir
from backends.errors import UserInputError
from backends.events import read_events

CHECKPOINT_RE = re.compile(r"^step-(\d+)$")
COMPLETE_MARKER = "COMPLETE"
LOCK_FILE = "run.lock"


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write ``text`` to ``path`` via a temporary file in the same folder and ``os.replace``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; a run folder is the user's normal files
        os.replace(tmp, path)
        fsync_path(path.parent)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def atomic_dir(final: str | Path) -> Iterator[Path]:
    """Yield a temporary folder beside ``final``; on success it is renamed to ``final``.

    An existing ``final`` is replaced without a moment of absence where the platform can swap
    two folders (``backends.durable.replace_dir``); every file is fsynced before the rename. On an
    exception the temporary folder is removed and ``final`` is untouched. Files are made 0644
    before the rename: some writers (safetensors) create 0600 files, and run folders and the model
    store are the user's ordinary files.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{final.name}-", dir=final.parent))
    os.chmod(tmp, 0o755)  # mkdtemp creates 0700
    try:
        yield tmp
        for path in tmp.rglob("*"):
            if path.is_file():
                path.chmod(0o644)
        replace_dir(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


@dataclass(frozen=True)
class RunDir:
    """Paths of one run folder. Create with ``RunDir.create`` or wrap an existing folder."""

    path: Path

    @property
    def config_path(self) -> Path:
        return self.path / "config.yaml"

    @property
    def events_path(self) -> Path:
        return self.path / "events.jsonl"

    @property
    def checkpoints_dir(self) -> Path:
        return self.path / "checkpoints"

    @property
    def adapter_dir(self) -> Path:
        return self.path / "adapter"

    @property
    def log_path(self) -> Path:
        return self.path / "log.txt"

    @classmethod
    def create(cls, config: RunConfig, runs_dir: str | Path | None = None, name: str | None = None) -> RunDir:
        """Make a new run folder and write its resolved ``config.yaml`` (atomically).

        The name defaults to ``config.output.run_name`` or ``<model>-<method>-<timestamp>``; an
        existing folder of that name gets a numeric suffix rather than being overwritten.
        """
        from backends import paths

        base = Path(runs_dir or config.output.runs_dir or paths.runs_dir())
        base.mkdir(parents=True, exist_ok=True)
        name = name or config.output.run_name
        if not name:
            model = re.sub(r"[^A-Za-z0-9._-]+", "-", Path(config.model).name)[:40]
            name = f"{model}-{config.method}-{time.strftime('%Y%m%d-%H%M%S')}"
        candidate = base / name
        n = 2
        while True:
            try:
                candidate.mkdir()  # atomic: of two processes picking this name, one gets it
                break
            except FileExistsError:
                candidate = base / f"{name}-{n}"
                n += 1
        run = cls(candidate)
        atomic_write_text(run.config_path, dump_config(config))
        return run

    def load_config(self) -> RunConfig:
        """The run's resolved config; UserInputError if the folder is not a run folder."""
        if not self.config_path.is_file():
            if not self.path.exists():
                raise UserInputError("no such run folder", file=self.path)
            raise UserInputError("not a run folder (no config.yaml)", file=self.path)
        raw = yaml.safe_load(self.config_path.read_text(encoding="utf-8")) or {}
        return config_from_dict(raw, source=str(self.config_path))

    def checkpoints(self) -> list[tuple[int, Path]]:
        """Complete checkpoints as (step, path), oldest first. Temporary/incomplete ones are ignored."""
        out = []
        if self.checkpoints_dir.is_dir():
            for child in self.checkpoints_dir.iterdir():
                m = CHECKPOINT_RE.match(child.name)
                if m and (child / COMPLETE_MARKER).is_file():
                    out.append((int(m.group(1)), child))
        return sorted(out)

    def latest_checkpoint(self) -> Path | None:
        """The newest complete checkpoint folder, or None."""
        cps = self.checkpoints()
        return cps[-1][1] if cps else None

    @contextlib.contextmanager
    def new_checkpoint(self, step: int) -> Iterator[Path]:
        """Yield a temporary folder to fill; on exit it gets the COMPLETE marker and is renamed
        to ``checkpoints/step-<step>``."""
        with atomic_dir(self.checkpoints_dir / f"step-{step}") as tmp:
            yield tmp
            atomic_write_text(tmp / COMPLETE_MARKER, f"{step}\n")

    def prune_checkpoints(self, keep: int) -> None:
        """Delete all but the newest ``keep`` complete checkpoints, and stale temporary folders."""
        cps = self.checkpoints()
        for _, path in cps[: max(0, len(cps) - keep)]:
            shutil.rmtree(path, ignore_errors=True)
        if self.checkpoints_dir.is_dir():
            for child in self.checkpoints_dir.iterdir():
                if child.name.startswith((".tmp-", ".old-")):
                    shutil.rmtree(child, ignore_errors=True)

    def events(self) -> list[dict[str, Any]]:
        """Every event written so far."""
        return read_events(self.events_path)

    # --- liveness: ``run.lock``, held with flock by the process writing the run (backends.runlock) ---
    def acquire_lock(self) -> None:
        """Mark the run as running by this process; UserInputError if another live process holds it."""
        runlock.acquire(self.path / LOCK_FILE, self.path)

    def release_lock(self) -> None:
        """Release the lock and remove the lock file."""
        runlock.release(self.path / LOCK_FILE)

    def lock_holder(self) -> int | None:
        """Pid of the live process that holds the run, else None."""
        return runlock.holder(self.path / LOCK_FILE)


def run_status(run: RunDir, events: list[dict[str, Any]] | None = None) -> str:
    """One of ``running``, ``finished``, ``stopped``, ``failed``, ``new``, from events and the lock.

    A run whose worker died without a final event (killed) reads as ``failed`` (it can be resumed).
    """
    events = run.events() if events is None else events
    if run.lock_holder() is not None:
        return "running"
    last = None
    for e in events:
        if e["event"] in {"run_started", "stopped", "run_finished", "run_failed"}:
            last = e["event"]
    return {
        None: "new",
        "run_started": "failed",
        "stopped": "stopped",
        "run_finished": "finished",
        "run_failed": "failed",
    }[last]


def summarize_run(run: RunDir) -> dict[str, Any]:
    """What the Runs page and ``tunedesk runs`` show about a run, read from its folder only.

    ``train_loss``: the run's own figure once finished (``run_finished.train_loss``: the mean of
    its last 10 step losses), otherwise that mean over the steps so far; ``val_loss``: the last
    evaluation's; ``forgetting``: the latest forgetting check's score, verdict and figures (None
    before one ran)."""
    events = run.events()
    info: dict[str, Any] = {"name": run.path.name, "path": str(run.path), "status": run_status(run, events)}
    try:
        cfg = yaml.safe_load(run.config_path.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError):
        cfg = {}
    info["model"] = cfg.get("model")
    info["method"] = cfg.get("method")
    info["data"] = (cfg.get("data") or {}).get("train_file")
    started = next((e for e in events if e["event"] == "run_started"), None)
    info["backend"] = started.get("backend") if started else None
    steps = [e for e in events if e["event"] == "step"]
    evals = [e for e in events if e["event"] == "eval"]
    info["steps"] = steps[-1]["step"] if steps else 0
    info["max_steps"] = started.get("max_steps") if started else None
    # As run_finished reports it: the mean loss of the last (up to) 10 steps, less noisy than one.
    finished = next((e for e in reversed(events) if e["event"] == "run_finished"), None)
    recent = [e["loss"] for e in steps[-10:] if e.get("loss") is not None]
    if finished is not None and finished.get("train_loss") is not None:
        info["train_loss"] = finished["train_loss"]
    else:
        info["train_loss"] = sum(recent) / len(recent) if recent else None
    info["val_loss"] = evals[-1]["val_loss"] if evals else None
    info["started"] = events[0]["time"] if events else None
    info["duration"] = (events[-1]["time"] - events[0]["time"]) if len(events) > 1 else 0.0
    drift = next((e for e in reversed(events) if e["event"] == "forgetting"), None)
    info["forgetting"] = (
        {
            k: drift.get(k)
            for k in ("score", "verdict", "kl_mean", "answers_changed", "probes", "size", "advice")
        }
        if drift
        else None
    )
    failed = next((e for e in reversed(events) if e["event"] == "run_failed"), None)
    info["failure"] = {k: failed.get(k) for k in ("kind", "message", "hint")} if failed else None
    return info


def list_runs(runs_dir: str | Path | None = None) -> list[RunDir]:
    """Every run folder (has a config.yaml) under ``runs_dir``, newest first."""
    from backends import paths

    base = Path(runs_dir or paths.runs_dir())
    if not base.is_dir():
        return []
    runs = [RunDir(p) for p in base.iterdir() if p.is_dir() and (p / "config.yaml").is_file()]
    return sorted(runs, key=lambda r: r.config_path.stat().st_mtime, reverse=True)
