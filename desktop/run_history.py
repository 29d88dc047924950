"""Past runs, read from their run folders only (so runs started from the CLI show up too): summary
rows for the Runs page and loss curves to overlay. No Qt; re-reading is cached per folder by the
size and modification time of its ``events.jsonl``, so refreshing a list with a 100,000-step run
in it costs a ``stat`` call, not a re-parse.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np

from backends.events import read_events
from backends.runs import RunDir, list_runs, summarize_run


def _stamp(run: RunDir) -> tuple[Any, ...]:
    try:
        st = run.events_path.stat()
        events = (st.st_size, st.st_mtime_ns)
    except FileNotFoundError:
        events = (0, 0)
    lock = (run.path / "run.lock").exists()
    return (*events, lock)


class RunHistory:
    """Summaries and loss curves of every run folder under the given parents."""

    def __init__(self) -> None:
        self._summaries: dict[Path, tuple[tuple[Any, ...], dict[str, Any]]] = {}
        self._curves: dict[Path, tuple[tuple[Any, ...], tuple[np.ndarray, np.ndarray]]] = {}

    def runs(self, parents: list[str | Path]) -> list[dict[str, Any]]:
        """``summarize_run`` of every run folder under ``parents``, newest first.

        Adds ``checkpoint`` (True when a complete checkpoint exists) to each summary.
        """
        found: dict[Path, RunDir] = {}
        for parent in parents:
            for run in list_runs(parent):
                found[run.path.resolve()] = run
        rows = []
        for key, run in found.items():
            stamp = _stamp(run)
            cached = self._summaries.get(key)
            if cached is None or cached[0] != stamp:
                summary = summarize_run(run)
                summary["checkpoint"] = run.latest_checkpoint() is not None
                cached = (stamp, summary)
                self._summaries[key] = cached
            rows.append(cached[1])
        for gone in set(self._summaries) - set(found):
            del self._summaries[gone]
        return sorted(rows, key=lambda r: r.get("started") or 0, reverse=True)

    def loss_curve(self, run_dir: str | Path) -> tuple[np.ndarray, np.ndarray]:
        """(steps, train losses) of a run; a step re-run after a resume keeps its latest value."""
        run = RunDir(Path(run_dir))
        key = run.path.resolve()
        stamp = _stamp(run)
        cached = self._curves.get(key)
        if cached is None or cached[0] != stamp:
            by_step: dict[int, float] = {}
            for e in read_events(run.events_path):
                if e.get("event") == "step" and e.get("loss") is not None:
                    by_step[int(e["step"])] = float(e["loss"])
            steps = np.array(sorted(by_step), dtype=float)
            losses = np.array([by_step[int(s)] for s in steps], dtype=float)
            cached = (stamp, (steps, losses))
            self._curves[key] = cached
        return cached[1]


def delete_run(run_dir: str | Path) -> None:
    """Delete a run folder. Raises RuntimeError while a worker holds it (a running run)."""
    run = RunDir(Path(run_dir))
    if run.lock_holder() is not None:
        raise RuntimeError(f"{run.path.name} is running; stop it first")
    shutil.rmtree(run.path)
