"""The live view of one training run, fed with its events: progress (step, epoch, ETA), charts of
loss and validation loss, learning rate, tokens/s and memory, a status line and a log tail.

It only consumes events (``handle_event``) and memory samples (``add_system_sample``), so it shows
a live worker, a resumed one, or a finished run read back from its ``events.jsonl`` alike.
"""

from __future__ import annotations

import html
import time
from pathlib import Path
from typing import Any

from PySide6.QtCore import Qt, QTimer
from PySide6.QtGui import QFont, QFontDatabase, QTextCursor
from PySide6.QtWidgets import (
    QGridLayout,
    QLabel,
    QPlainTextEdit,
    QProgressBar,
    QSplitter,
    QVBoxLayout,
    QWidget,
)

from backends.events import read_events
from backends.runs import RunDir, run_status
from desktop.charts import Chart
from desktop.method_charts import MethodCharts
from desktop.run_words import MEMORY_SERIES, drift_text, format_duration
from desktop.run_words import num as _num
from desktop.train_guard import AVERAGE_LOSS, STEP_LOSS, quick_test_note, run_preset
from desktop.worker import WorkerResult

__all__ = ["LOG_LINES", "RunMonitor", "drift_text", "format_duration"]

LOG_LINES = 1000


class RunMonitor(QWidget):
    """Progress, charts and log of the run being shown."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.run_dir: str | None = None
        self.method: str | None = None
        self.max_steps: int | None = None
        self.last_step = 0
        self.final_event: dict[str, Any] | None = None
        self.forgetting: dict[str, Any] | None = None  # the latest forgetting event
        self._t0: float | None = None  # wall time the memory chart counts from
        self._last_step_event: dict[str, Any] | None = None
        self._ui_timer = QTimer(self)
        self._ui_timer.setSingleShot(True)
        self._ui_timer.setInterval(100)
        self._ui_timer.timeout.connect(self._update_progress)

        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        self.title = QLabel("No run yet. Press Start to train.")
        font = QFont(self.title.font())
        font.setBold(True)
        self.title.setFont(font)
        self.title.setWordWrap(True)
        self.title.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        layout.addWidget(self.title)
        self.progress = QProgressBar()
        self.progress.setRange(0, 1)
        self.progress.setValue(0)
        self.progress.setFormat("No run yet")
        layout.addWidget(self.progress)
        self.stats = QLabel("")
        self.stats.setWordWrap(True)
        self.stats.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        layout.addWidget(self.stats)
        self.status = QLabel("")
        self.status.setWordWrap(True)
        self.status.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.status.setVisible(False)
        layout.addWidget(self.status)

        charts = QWidget()
        grid = QGridLayout(charts)
        grid.setContentsMargins(0, 0, 0, 0)
        self.loss_chart = Chart("Loss (lower is better)", "step", "loss")
        self.loss_chart.setToolTip("Loss: how far the model's answers are from your data's; lower is closer")
        self.loss_chart.add_series("train loss", label=STEP_LOSS)
        self.loss_chart.add_series("validation loss", symbol=True, label="loss on held-out rows (validation)")
        self.lr_chart = Chart("Learning rate", "step", "learning rate")
        self.lr_chart.add_series("learning rate")
        self.speed_chart = Chart("Speed", "step", "tokens/s")
        self.speed_chart.add_series("tokens/s", label="tokens per second")
        self.speed_chart.setToolTip(
            "Speed: tokens (text pieces, about ¾ of a word each) trained on per second"
        )
        self.memory_chart = Chart("Memory in use", "training time (minutes)", "memory", y_units="B")
        for name, label in MEMORY_SERIES.items():
            self.memory_chart.add_series(name, unique_x=False, label=label)
        # DPO and ORPO runs: the reward margin and accuracy of each step, validation accuracy.
        self.dpo_chart = Chart("Preference (DPO / ORPO)", "step", "reward margin / accuracy")
        self.dpo_chart.add_series("reward margin")
        self.dpo_chart.add_series("reward accuracy")
        self.dpo_chart.add_series("validation reward accuracy", symbol=True)
        self.dpo_chart.setVisible(False)
        # The forgetting check at eval steps (forgetting.at_eval): drift from the base model.
        self.drift_chart = Chart("General ability drift (forgetting check)", "step", "drift score")
        self.drift_chart.add_series("drift score", symbol=True)
        self.drift_chart.setVisible(False)
        grid.addWidget(self.loss_chart, 0, 0)
        grid.addWidget(self.lr_chart, 0, 1)
        grid.addWidget(self.speed_chart, 1, 0)
        grid.addWidget(self.memory_chart, 1, 1)
        grid.addWidget(self.dpo_chart, 2, 0, 1, 2)
        grid.addWidget(self.drift_chart, 3, 0, 1, 2)
        self.charts = [
            self.loss_chart,
            self.lr_chart,
            self.speed_chart,
            self.memory_chart,
            self.dpo_chart,
            self.drift_chart,
        ]
        self.method_charts = MethodCharts()  # ORPO, KTO, GRPO: each method's own figures
        self.method_charts.place(grid, 4)
        self.charts += self.method_charts.charts

        self.log = QPlainTextEdit()
        self.log.setReadOnly(True)
        self.log.setMaximumBlockCount(LOG_LINES)
        self.log.setFont(QFontDatabase.systemFont(QFontDatabase.SystemFont.FixedFont))
        self.log.setPlaceholderText("The worker's log appears here.")
        self.log.setAccessibleName("Training log")
        self._follow = True  # the log view stays at its newest line
        bar = self.log.verticalScrollBar()
        bar.actionTriggered.connect(self._on_log_scrolled)
        bar.rangeChanged.connect(self._keep_following)  # also when laid out later (a hidden page)
        splitter = QSplitter(Qt.Orientation.Vertical)
        splitter.addWidget(charts)
        splitter.addWidget(self.log)
        splitter.setChildrenCollapsible(False)  # the page scrolls before a chart is cut
        splitter.setStretchFactor(0, 5)
        splitter.setStretchFactor(1, 1)
        splitter.setSizes([600, 120])
        layout.addWidget(splitter, 1)

    # --- run lifecycle ---
    def reset(self, title: str = "") -> None:
        """Empty everything for a new run."""
        for chart in self.charts:
            chart.clear_data()
        self.dpo_chart.setVisible(False)
        self.method_charts.reset()
        self.drift_chart.setVisible(False)
        self.forgetting: dict[str, Any] | None = None
        self.log.clear()
        self._follow = True
        self.run_dir = self.method = None
        self.max_steps = None
        self.last_step = 0
        self.final_event = None
        self._t0 = None
        self._last_step_event = None
        self._ui_timer.stop()
        self.progress.setRange(0, 1)
        self.progress.setValue(0)
        self.progress.setFormat("Preparing…")
        self.stats.setText("")
        self.set_status("")
        self.title.setText(title or "Starting the training worker…")

    def begin_process(self, t0: float | None = None) -> None:
        """A worker process starts at ``t0`` (default now). The memory chart's clock goes on from
        its last point (a resumed run continues its time axis; after ``reset`` it starts at 0)."""
        self._continue_clock(time.time() if t0 is None else t0)
        self.final_event = None

    def _continue_clock(self, start: float) -> None:
        """Count training time from ``start`` on, after the time the memory chart already shows."""
        shown = [s.last()[0] for s in map(self.memory_chart.series, MEMORY_SERIES) if s.last() is not None]
        self._t0 = start - 60.0 * max(shown, default=0.0)

    def _minutes(self, when: float) -> float:
        return (when - (self._t0 or when)) / 60.0

    def set_status(self, text: str, *, error: bool = False) -> None:
        """Show a status message under the progress bar (empty: hide it)."""
        self.status.setVisible(bool(text))
        if error:
            body = html.escape(text).replace("\n", "<br>")
            self.status.setText(f"<span style='color:#d9534f; font-weight:bold'>{body}</span>")
        else:
            self.status.setText(html.escape(text).replace("\n", "<br>"))
        self.status.setProperty("error", error)

    def add_log(self, line: str) -> None:
        """Append one line to the log tail; the view follows new lines unless the user has scrolled
        up to read (``_follow``)."""
        self.log.appendPlainText(line)
        self._keep_following()

    def _on_log_scrolled(self, *_: object) -> None:
        # A scroll by the user (wheel, drag, keys): follow again only once back at the bottom.
        QTimer.singleShot(0, self._update_follow)

    def _update_follow(self) -> None:
        bar = self.log.verticalScrollBar()
        self._follow = bar.value() >= bar.maximum() - 2

    def _keep_following(self, *_: object) -> None:
        if self._follow:
            bar = self.log.verticalScrollBar()
            bar.setValue(bar.maximum())

    # --- events ---
    def handle_event(self, event: dict[str, Any]) -> None:
        """Update the view from one worker event (unknown events are ignored)."""
        name = event.get("event")
        handler = getattr(self, f"_on_{name}", None)
        if handler is not None:
            handler(event)

    def _on_run_started(self, e: dict[str, Any]) -> None:
        self.run_dir = e.get("run_dir")
        self.method = e.get("method")
        self.dpo_chart.setVisible(self.method in ("dpo", "orpo"))
        self.method_charts.show_for(self.method)
        self.max_steps = int(e.get("max_steps") or 0) or None
        if self.max_steps:
            self.progress.setRange(0, self.max_steps)
            self.progress.setValue(min(self.last_step, self.max_steps))
            self.progress.setFormat("Step %v of %m (%p%)")
        if self._t0 is None:
            self._continue_clock(float(e.get("time") or time.time()))
        params = e.get("params_trainable"), e.get("params_total")
        share = (
            f" ({params[0] / params[1]:.2%} of {params[1] / 1e6:.1f}M)" if all(params) and params[1] else ""
        )
        self.title.setText(
            f"{Path(self.run_dir).name if self.run_dir else 'run'}: {e.get('model')} · {e.get('method')} · "
            f"{e.get('backend')} on {e.get('device')} · trainable parameters {_num(params[0], ',')}{share}"
        )
        quick = run_preset(self.run_dir) == "quick-test"
        self.set_status("Training… (a quick test: it checks that everything works)" if quick else "Training…")

    def _on_step(self, e: dict[str, Any]) -> None:
        step = int(e["step"])
        self.last_step = step
        self.loss_chart.series("train loss").append(step, e.get("loss"))
        self.loss_chart.changed()
        self.lr_chart.series("learning rate").append(step, e.get("learning_rate"))
        self.lr_chart.changed()
        self.speed_chart.series("tokens/s").append(step, e.get("tokens_per_second"))
        self.speed_chart.changed()
        memory = e.get("memory") or {}
        if self._t0 is not None and e.get("time") is not None:
            t = self._minutes(float(e["time"]))
            self.memory_chart.series("worker RSS").append(t, memory.get("rss"))
            self.memory_chart.series("device memory (worker)").append(t, memory.get("device_allocated"))
            self.memory_chart.changed()
        if "reward_margin" in e or "reward_accuracy" in e:
            self.dpo_chart.setVisible(True)
            self.dpo_chart.series("reward margin").append(step, e.get("reward_margin"))
            self.dpo_chart.series("reward accuracy").append(step, e.get("reward_accuracy"))
            self.dpo_chart.changed()
        self.method_charts.on_step(e)
        self._last_step_event = e
        if not self._ui_timer.isActive():
            self._ui_timer.start()

    def _update_progress(self) -> None:
        # Coalesced (QProgressBar.setValue repaints at once: ~1 ms, too slow once per event when
        # reading back a 100,000-step run).
        self._ui_timer.stop()
        e = self._last_step_event
        if e is None:
            return
        step = int(e["step"])
        if self.max_steps:
            self.progress.setValue(min(step, self.max_steps))
        self.stats.setText(
            f"Step {step}{f' of {self.max_steps}' if self.max_steps else ''} · "
            f"passes over the data (epochs) {_num(e.get('epoch'), '.2f')} · {STEP_LOSS} {_num(e.get('loss'))} · "
            f"{_num(e.get('tokens_per_second'), ',.0f')} tokens/s · "
            f"time so far {format_duration(e.get('elapsed'))} · time left about {format_duration(e.get('eta'))}"
        )

    def _on_eval(self, e: dict[str, Any]) -> None:
        self.loss_chart.series("validation loss").append(int(e["step"]), e.get("val_loss"))
        self.loss_chart.changed()
        if "reward_accuracy" in e:
            self.dpo_chart.series("validation reward accuracy").append(
                int(e["step"]), e.get("reward_accuracy")
            )
            self.dpo_chart.changed()
        accuracy = f", reward accuracy {_num(e['reward_accuracy'], '.2f')}" if "reward_accuracy" in e else ""
        self.add_log(f"validation at step {e['step']}: val loss {_num(e.get('val_loss'))}{accuracy}")

    def _on_forgetting(self, e: dict[str, Any]) -> None:
        self.forgetting = e
        if e.get("step") is not None and e.get("size") == "quick":
            self.drift_chart.setVisible(True)
            self.drift_chart.series("drift score").append(int(e["step"]), e.get("score"))
            self.drift_chart.changed()
        self.add_log(f"forgetting check: {drift_text(e)}")

    def _on_checkpoint(self, e: dict[str, Any]) -> None:
        self.add_log(f"checkpoint saved at step {e['step']}: {e.get('path')}")

    def _on_log(self, e: dict[str, Any]) -> None:
        self.add_log(f"{e.get('level', 'info')}: {e.get('message')}")

    def _on_stopped(self, e: dict[str, Any]) -> None:
        self.final_event = e
        self.set_status(f"Stopped at step {e['step']}; checkpoint saved. Press Resume to continue.")

    def _on_run_finished(self, e: dict[str, Any]) -> None:
        self.final_event = e
        self._update_progress()
        if self.max_steps:
            self.progress.setValue(self.max_steps)
        else:
            self.progress.setRange(0, 1)
            self.progress.setValue(1)
            self.progress.setFormat("Finished (%p%)")
        text = (
            f"Finished at step {e['step']}: {AVERAGE_LOSS} {_num(e.get('train_loss'))}, "
            f"validation loss {_num(e.get('val_loss'))}. Adapter saved in {e.get('adapter')}"
            + (f"\nGeneral ability: {drift_text(self.forgetting)}" if self.forgetting else "")
        )
        if run_preset(self.run_dir) == "quick-test":
            text += "\n" + quick_test_note(int(e["step"]))
        self.set_status(text)

    def _on_run_failed(self, e: dict[str, Any]) -> None:
        self.final_event = e
        text = f"The run failed at step {e.get('step')} ({e.get('kind')}): {e.get('message')}"
        if e.get("hint"):
            text += f"\nWhat to try: {e['hint']}"
        self.set_status(text, error=True)

    def show_result(self, result: WorkerResult) -> None:
        """Show how the worker ended (a crash without a final event is said in plain words)."""
        text = result.error_text()
        if text and self.run_dir is None:  # it ended before a run began: no "Starting…" left behind
            self.title.setText("The run did not start.")
            self.progress.setFormat("Not started")
        if text and (self.final_event is None or self.final_event.get("event") != "run_failed"):
            self.set_status(text, error=True)
        elif result.stop_requested and self.final_event is None:
            self.set_status("Stopped before the first checkpoint; nothing to resume.")
        self.refresh_charts()

    # --- system samples ---
    def add_system_sample(self, sample: dict[str, Any]) -> None:
        """One GUI-side memory sample (``desktop.system_monitor``) while a worker runs."""
        if self._t0 is None:
            return
        t = self._minutes(sample["time"])
        self.memory_chart.series("system RAM used").append(t, sample.get("ram_used"))
        self.memory_chart.series("system VRAM used").append(t, sample.get("vram_used"))
        self.memory_chart.changed()

    # --- runs read back from their folder ---
    def load_run(self, run_dir: str | Path) -> None:
        """Show a run from its folder's ``events.jsonl`` and ``log.txt`` (finished, stopped, ...)."""
        run_dir = Path(run_dir)
        events = read_events(run_dir / "events.jsonl")
        self.reset(title=run_dir.name)
        for event in events:
            if event.get("event") == "run_started":  # each resume goes on from the time shown
                self._continue_clock(float(event["time"]))
            self.handle_event(event)
        log = run_dir / "log.txt"
        if log.is_file():
            lines = log.read_text(encoding="utf-8", errors="replace").splitlines()[-200:]
            self.log.setPlainText("\n".join(lines))
            self.log.moveCursor(QTextCursor.MoveOperation.End)
            self._follow = True
            self._keep_following()
        if not events:
            self.title.setText(f"{run_dir.name}: no events yet")
        elif run_status(RunDir(run_dir), events) == "running":
            self.set_status("This run is running in another process (e.g. started from the command line).")
        elif self.final_event is None:
            self.set_status(
                "This run ended without a final event (it was killed or crashed). Resume continues it."
            )
        self.run_dir = str(run_dir)
        self.refresh_charts()

    def refresh_charts(self) -> None:
        """Redraw every chart, the progress bar and the statistics line now."""
        self._update_progress()
        for chart in self.charts:
            chart.refresh()
