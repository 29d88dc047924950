"""Step 3, Train: settings (preset, method, advanced form from the schema) and the live monitor.

Start writes the run config to a temporary YAML file and launches ``tunedesk train --config FILE
--json`` as a child process; Stop sends it SIGTERM (it saves a checkpoint, emits ``stopped`` and
exits 130); Resume launches ``tunedesk train --resume RUN_DIR --json``. The worker's events feed
the ``RunMonitor``; the GUI samples system memory about once a second meanwhile.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import yaml
from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QComboBox,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QScrollArea,
    QSplitter,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from backends.config import PRESETS, config_from_dict, field_docs
from backends.errors import UserInputError
from backends.runs import RunDir, list_runs
from backends.training.distributed import checkpoint_world_size
from desktop.gpu_choice import GpuChoice
from desktop.next_steps import NextSteps
from desktop.pages import with_change_button
from desktop.plan_panel import PlanPanel
from desktop.run_monitor import RunMonitor
from desktop.settings_form import FieldEditor, SettingsForm, flatten, unflatten
from desktop.state import AppState
from desktop.system_monitor import SystemSampler
from desktop.train_guard import BASIC_KEYS, PRESET_HELP, data_problem, resolved_preset_values, resumable
from desktop.worker import WorkerProcess, WorkerResult


class TrainPage(QWidget):
    """Run settings on the left, the live run on the right.

    Signals: ``run_started(str)`` / ``run_ended(str)`` with the run folder (or "") when a worker
    starts a run / exits; ``show_page(str)`` asks the window to open another step ("model",
    "data"); ``max_seq_length_changed(int)`` when the sequence length in effect changes (the Data
    page checks token lengths against it).
    """

    run_ended = Signal(str)
    run_started = Signal(str)
    show_page = Signal(str)
    max_seq_length_changed = Signal(int)

    def __init__(self, state: AppState, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.gpu_choice_label = QLabel("GPUs to use\n(--nproc)")
        self.state = state
        self.worker: WorkerProcess | None = None
        self._config_file: str | None = None
        self._resuming = False
        self._close_after_stop = False
        self._last_length: int | None = None
        self._data_problem: str | None = None  # why the Data step found the file unusable
        self._change_buttons: list[QPushButton] = []
        self.sampler = SystemSampler(self)

        outer = QHBoxLayout(self)
        split = QSplitter(Qt.Orientation.Horizontal)
        outer.addWidget(split)

        # --- left: settings ---
        left = QWidget()
        left_layout = QVBoxLayout(left)
        left_layout.addWidget(QLabel("<h2>3. Train</h2>"))
        basics = QFormLayout()
        self.model_label = QLabel()
        self.model_label.setWordWrap(True)
        basics.addRow("Model", self._with_link(self.model_label, "model"))
        self.data_label = QLabel()
        self.data_label.setWordWrap(True)
        basics.addRow("Data", self._with_link(self.data_label, "data"))
        self.preset_box = QComboBox()
        for name in PRESETS:
            self.preset_box.addItem(name, name)
            self.preset_box.setItemData(
                self.preset_box.count() - 1, PRESET_HELP.get(name, ""), Qt.ItemDataRole.ToolTipRole
            )
        self.preset_box.currentIndexChanged.connect(self._on_preset)
        basics.addRow("Ready-made settings\n(preset)", self.preset_box)
        self.preset_help = QLabel()
        self.preset_help.setWordWrap(True)
        self.preset_help.setEnabled(False)
        basics.addRow("", self.preset_help)
        method_doc = next(d for d in field_docs() if d["key"] == "method")
        self.method_editor = FieldEditor(method_doc)
        basics.addRow("How to teach\n(method)", self.method_editor)
        self.gpu_choice = GpuChoice()  # shown only with more than one GPU (the window's hardware report)
        basics.addRow(self.gpu_choice_label, self.gpu_choice)
        self.gpu_choice_label.setVisible(False)
        self.gpu_choice.offered.connect(self.gpu_choice_label.setVisible)
        left_layout.addLayout(basics)

        self.data_error = QLabel("")
        self.data_error.setWordWrap(True)
        self.data_error.setStyleSheet("color: #d9534f")
        self.data_error.setVisible(False)
        left_layout.addWidget(self.data_error)
        self.config_error = QLabel("")
        self.config_error.setWordWrap(True)
        self.config_error.setStyleSheet("color: #d9534f")
        self.config_error.setVisible(False)
        left_layout.addWidget(self.config_error)
        self.plan_panel = PlanPanel()
        self.plan_panel.apply_changes.connect(self.apply_changes)
        left_layout.addWidget(self.plan_panel)
        buttons = QHBoxLayout()
        self.start_button = QPushButton("Start training")
        self.start_button.setDefault(True)
        self.start_button.clicked.connect(self.start)
        self.stop_button = QPushButton("Stop")
        self.stop_button.setToolTip("Save a checkpoint and stop; Resume continues from it")
        self.stop_button.clicked.connect(self.stop)
        self.resume_button = QPushButton("Resume")
        self.resume_button.setToolTip("Continue the stopped or crashed run from its last checkpoint")
        self.resume_button.clicked.connect(lambda: self.resume())
        for b in (self.start_button, self.stop_button, self.resume_button):
            buttons.addWidget(b)
        left_layout.addLayout(buttons)
        self.next_steps = NextSteps()  # Chat with this result / Export…, once a run has ended
        left_layout.addWidget(self.next_steps)
        self.advanced_toggle = QToolButton()
        self.advanced_toggle.setText("Advanced settings")
        self.advanced_toggle.setCheckable(True)
        self.advanced_toggle.setChecked(False)
        self.advanced_toggle.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextBesideIcon)
        self.advanced_toggle.setArrowType(Qt.ArrowType.RightArrow)
        self.advanced_toggle.toggled.connect(self._toggle_advanced)
        left_layout.addWidget(self.advanced_toggle)
        self.form = SettingsForm(exclude=BASIC_KEYS)
        self.form.changed.connect(self._on_form_changed)
        self.advanced = QScrollArea()
        self.advanced.setWidgetResizable(True)
        self.advanced.setWidget(self.form)
        self.advanced.setVisible(False)
        left_layout.addWidget(self.advanced, 1)
        self.spacer = QWidget()
        left_layout.addWidget(self.spacer, 1)

        split.addWidget(left)

        # --- right: monitor ---
        self.monitor = RunMonitor()
        split.addWidget(self.monitor)
        split.setStretchFactor(0, 0)
        split.setStretchFactor(1, 1)
        split.setSizes([380, 900])
        self.sampler.sample.connect(self.monitor.add_system_sample)

        # --- restore choices ---
        index = self.preset_box.findData(state.preset)
        self.preset_box.setCurrentIndex(max(index, 0))
        self.method_editor.set_value(state.method)
        self._on_preset()
        self.form.set_overrides(state.saved_overrides())
        state.model_changed.connect(self._update_choices)
        state.data_file_changed.connect(self._update_choices)
        state.data_file_changed.connect(lambda *_: self.set_data_check(None, None))
        state.model_changed.connect(self.refresh_plan)
        self.method_editor.changed.connect(self.refresh_plan)
        self._update_choices()
        runs = list_runs()
        if runs:
            self.monitor.load_run(runs[0].path)
        self._update_buttons()

    # --- settings ---
    def _with_link(self, label: QLabel, page: str) -> QWidget:
        box, change = with_change_button(label, page, lambda: self.show_page.emit(page))
        self._change_buttons.append(change)
        return box

    def _update_choices(self, *_: Any) -> None:
        self.model_label.setText(f"<b>{self.state.model}</b>")
        self.data_label.setText(
            f"<b>{Path(self.state.data_file).name}</b>" if self.state.data_file else "(sample data)"
        )
        self.data_label.setToolTip(self.state.data_file)

    def _on_preset(self, *_: Any) -> None:
        preset = self.preset_box.currentData()
        self.preset_help.setText(PRESET_HELP.get(preset, ""))
        self.form.set_base(resolved_preset_values(preset))
        self._on_form_changed()

    def max_seq_length(self) -> int:
        """The sequence length the next run would use (the preset's, or the user's edit)."""
        return int(self.form.editors["training.max_seq_length"].value())

    def refresh_plan(self, *_: Any) -> None:
        """Recompute the memory plan of the current settings (``PlanPanel``)."""
        try:
            raw = self.build_config()
        except UserInputError:
            raw = None
        self.plan_panel.update_plan(raw)

    def apply_changes(self, changes: dict[str, Any]) -> None:
        """Apply a plan suggestion's settings (dotted config keys) as edits in the form."""
        for key, value in changes.items():
            if key in self.form.editors:
                self.form.set_value(key, value)
        self._on_form_changed()

    def _on_form_changed(self) -> None:
        self.refresh_plan()
        length = self.max_seq_length()
        if length != self._last_length:
            self._last_length = length
            self.max_seq_length_changed.emit(length)

    def _toggle_advanced(self, shown: bool) -> None:
        self.advanced.setVisible(shown)
        self.spacer.setVisible(not shown)
        self.advanced_toggle.setArrowType(Qt.ArrowType.DownArrow if shown else Qt.ArrowType.RightArrow)

    def build_config(self) -> dict[str, Any]:
        """The run config as the user set it: preset, model, method, data file and advanced edits.

        Raises UserInputError (with ``field``) when a value is not valid for the schema.
        """
        try:
            overrides = self.form.overrides()
        except ValueError as exc:
            raise UserInputError(str(exc)) from None
        raw: dict[str, Any] = unflatten(overrides)
        raw["preset"] = self.preset_box.currentData()
        raw["model"] = self.state.model
        raw["method"] = self.method_editor.value()
        if self.state.data_file:
            raw.setdefault("data", {})["train_file"] = self.state.data_file
        if self.state.data_columns:  # the Data page's column mapping
            raw.setdefault("data", {})["columns"] = self.state.data_columns
        config_from_dict(raw, source="the run settings")  # raises UserInputError naming the field
        return raw

    def load_settings(self, run_dir: str) -> None:
        """Take over a past run's settings (its ``config.yaml``): model, data, preset, method and
        every value that differs from the preset, shown as edits in the advanced form."""
        raw = yaml.safe_load((Path(run_dir) / "config.yaml").read_text(encoding="utf-8")) or {}
        values = flatten(raw)
        preset = raw.get("preset") or self.preset_box.currentData()
        self.preset_box.setCurrentIndex(max(self.preset_box.findData(preset), 0))
        if raw.get("method"):
            self.method_editor.set_value(raw["method"])
        if raw.get("model"):
            self.state.set_model(str(raw["model"]))
        if values.get("data.train_file"):
            self.state.set_data_file(str(values["data.train_file"]))
        if isinstance((raw.get("data") or {}).get("columns"), dict):
            self.state.set_data_columns(raw["data"]["columns"])
        base = resolved_preset_values(self.preset_box.currentData())
        self.form.reset()
        for key, value in values.items():
            if key in self.form.editors and base.get(key) != value:
                self.form.set_value(key, value)

    # --- running ---
    def is_running(self) -> bool:
        """True while a training worker runs."""
        return self.worker is not None and self.worker.is_running()

    def start(self) -> bool:
        """Validate the settings and start a new run; False (with the reason shown) if invalid."""
        if self.is_running():
            return False
        self.config_error.setVisible(False)
        if self._data_problem:
            self.config_error.setText("Start needs usable data: choose another file or fix this one first.")
            self.config_error.setVisible(True)
            return False
        try:
            raw = self.build_config()
        except UserInputError as exc:
            if exc.field:
                self.form.mark_error(exc.field, exc.reason)
            self.config_error.setText(f"Please fix the settings: {exc}")
            self.config_error.setVisible(True)
            return False
        self.state.save_train_choices(raw["preset"], raw["method"], self.form.overrides())
        fd, path = tempfile.mkstemp(prefix="tunedesk-run-", suffix=".yaml")
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            yaml.safe_dump(raw, fh, sort_keys=False, allow_unicode=True)
        self._config_file = path
        self._resuming = False
        self.monitor.reset()
        self._launch(["train", "--config", path, "--json", *self.gpu_choice.launch_args()])
        return True

    def resume(self, run_dir: str | None = None) -> bool:
        """Continue a stopped or crashed run (default: the one shown) from its last checkpoint."""
        run_dir = run_dir or self.monitor.run_dir
        if self.is_running() or not run_dir:
            return False
        self.monitor.load_run(run_dir)
        self.monitor.set_status("Resuming from the last checkpoint…")
        self._resuming = True
        # The same number of processes as the checkpoint was written by (its data position counts them).
        n = checkpoint_world_size(RunDir(Path(run_dir)).latest_checkpoint())
        self._launch(["train", "--resume", str(run_dir), "--json", *(["--nproc", str(n)] if n > 1 else [])])
        return True

    def _launch(self, args: list[str]) -> None:
        self.worker = WorkerProcess(args, self)
        self.worker.event.connect(self._on_event)
        self.worker.log_line.connect(self.monitor.add_log)
        self.worker.started.connect(self._on_worker_started)
        self.worker.finished.connect(self._on_worker_finished)
        self.monitor.begin_process()
        self.monitor.add_log(f"$ tunedesk {' '.join(args)}")
        self.worker.start()
        self._update_buttons()

    def _on_worker_started(self) -> None:
        if self.worker is not None:
            self.sampler.set_worker_pid(self.worker.pid())
        self.sampler.start()

    def _on_event(self, event: dict[str, Any]) -> None:
        self.monitor.handle_event(event)
        if event.get("event") == "run_started" and event.get("run_dir"):
            self.state.add_runs_dir(str(Path(event["run_dir"]).parent))
            self.run_started.emit(str(event["run_dir"]))

    def stop(self) -> None:
        """Ask the worker to save a checkpoint and stop; pressed again, end it at once."""
        if not self.is_running() or self.worker is None:
            return
        if self.worker.stop_requested:
            self.worker.kill()
            self.monitor.set_status("Ending the worker without a checkpoint…")
            return
        self.worker.stop()
        self.monitor.set_status("Stopping: saving a checkpoint… (press End now to end at once)")
        self._update_buttons()

    def stop_and_close(self) -> None:
        """Stop the run; the window closes when the worker has saved and exited."""
        self._close_after_stop = True
        self.stop()

    def _on_worker_finished(self, result: WorkerResult) -> None:
        self.sampler.stop()
        self.sampler.set_worker_pid(None)
        self.monitor.show_result(result)
        if self._config_file:
            Path(self._config_file).unlink(missing_ok=True)
            self._config_file = None
        self._update_buttons()
        self.run_ended.emit(self.monitor.run_dir or "")
        if self._close_after_stop and self.window() is not None:
            self.window().close()

    def set_data_check(self, report: dict[str, Any] | None, error: str | None) -> None:
        """The Data step's check of the chosen file (``data check --json``: its report, or None with
        the error): unusable data blocks Start, with the reason shown above the buttons."""
        self._data_problem = data_problem(report, error)
        self.data_error.setText(
            f"The Data step found this file unusable: {self._data_problem}" if self._data_problem else ""
        )
        self.data_error.setVisible(bool(self._data_problem))
        self._update_buttons()

    def _update_buttons(self) -> None:
        running = self.is_running()
        self.next_steps.set_run(None if running else self.monitor.run_dir)
        self.start_button.setEnabled(not running and not self._data_problem)
        # A run's settings are fixed once it starts: the form shows them, greyed, until it ends.
        for widget in (
            self.preset_box,
            self.method_editor,
            self.form,
            self.plan_panel,
            *self._change_buttons,
        ):
            widget.setEnabled(not running)
        self.advanced_toggle.setToolTip("Locked while the run trains" if running else "")
        self.stop_button.setEnabled(running)
        self.resume_button.setEnabled(
            not running and bool(self.monitor.run_dir) and resumable(self.monitor.run_dir or "")
        )
        stopping = running and self.worker is not None and self.worker.stop_requested
        self.stop_button.setText("End now" if stopping else "Stop")
        self.stop_button.setToolTip(
            "End the worker at once, without saving a checkpoint"
            if stopping
            else "Save a checkpoint and stop; Resume continues from it"
        )

    def show_run(self, run_dir: str) -> None:
        """Show a run from its folder (when no worker is running)."""
        if not self.is_running():
            self.monitor.load_run(run_dir)
            self._update_buttons()
