"""Runs: every run folder with its status, model, data, method, final losses and duration; select
several to overlay their loss curves; open, show, resume or delete (with confirmation) a run.

Reads only the run folders (``desktop.run_history``), so runs started from the CLI show up too;
refreshed every few seconds while the page is visible.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from PySide6.QtCore import QItemSelectionModel, Qt, QTimer, QUrl, Signal
from PySide6.QtGui import QDesktopServices, QHideEvent, QShowEvent
from PySide6.QtWidgets import (
    QAbstractItemView,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QMessageBox,
    QPushButton,
    QSplitter,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from backends import paths
from desktop.charts import Chart
from desktop.next_steps import has_adapter, open_export
from desktop.pages import intro_label
from desktop.run_history import RunHistory, delete_run
from desktop.run_monitor import drift_text, format_duration
from desktop.runs_tools import RunsTools
from desktop.state import AppState
from desktop.train_guard import AVERAGE_LOSS
from desktop.worker import JsonCommand

COLUMNS = (
    "Run",
    "Status",
    "Model",
    "Data",
    "Method",
    "Steps",
    "Final loss (average)",
    "Validation loss",
    "Drift",
    "Duration",
    "Started",
)
REFRESH_MS = 3000


def _loss(value: Any) -> str:
    return "-" if value is None else f"{value:.4f}"


def _drift(forgetting: dict[str, Any] | None) -> str:
    """The forgetting check's score and verdict, e.g. ``0.031 little`` (``-``: not checked)."""
    if not forgetting or forgetting.get("score") is None:
        return "-"
    return f"{forgetting['score']:.3f} {forgetting.get('verdict') or ''}".strip()


class RunsPage(QWidget):
    """The run history table and the loss overlay of the selected runs.

    Signals: ``show_run(str)`` (open a run in the Train page's monitor), ``resume_run(str)``,
    ``use_settings(str)`` (train again with a run's settings).
    """

    show_run = Signal(str)
    resume_run = Signal(str)
    use_settings = Signal(str)
    chat_with = Signal(str)

    def __init__(self, state: AppState, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.state = state
        self.history = RunHistory()
        self.rows: list[dict[str, Any]] = []
        layout = QVBoxLayout(self)
        layout.addWidget(QLabel("<h2>Runs</h2>"))
        layout.addWidget(
            intro_label(
                "Every training run, also those started from the command line. Select several to compare their loss. "
                "Final loss is the average of the last steps; lower is closer to your data. "
                "Drift: how much the tuning changed the model's general answers (`tunedesk forgetting`)."
            )
        )
        self.tools = RunsTools(self.selected_paths)  # find, sort, rename, notes, compare
        self.tools.changed.connect(self.refresh)
        layout.addWidget(self.tools)
        split = QSplitter(Qt.Orientation.Vertical)
        self.table = QTableWidget(0, len(COLUMNS))
        self.table.setHorizontalHeaderLabels(COLUMNS)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.ExtendedSelection)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.verticalHeader().setVisible(False)
        self.table.setSortingEnabled(False)
        self.table.setTabKeyNavigation(False)  # Tab goes on to the buttons; arrows move between runs
        self.table.setAccessibleName("Training runs")
        tips = {
            "Final loss (average)": f"The {AVERAGE_LOSS} (the Train page's chart shows each step's loss)",
            "Validation loss": "Loss on rows held out from training: how well it does on data it did not see",
            "Drift": "How much the tuning changed the model's general answers (forgetting check)",
        }
        for i, column in enumerate(COLUMNS):
            if column in tips:
                self.table.horizontalHeaderItem(i).setToolTip(tips[column])
        header = self.table.horizontalHeader()
        header.setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        # A stretched name column kept the width of a wide window after a shrink (Qt), hiding the
        # others: a fixed, resizable width with the long names elided in the middle instead.
        header.setSectionResizeMode(0, QHeaderView.ResizeMode.Interactive)
        header.setStretchLastSection(True)
        self.table.setColumnWidth(0, 230)
        self.table.setTextElideMode(Qt.TextElideMode.ElideMiddle)
        self.table.setWordWrap(False)
        self.table.itemSelectionChanged.connect(self._on_selection)
        self.table.doubleClicked.connect(lambda *_: self._show_selected())
        split.addWidget(self.table)
        self.chart = Chart("Training loss of the selected runs", "step", "loss")
        split.addWidget(self.chart)
        split.setSizes([300, 300])
        layout.addWidget(split, 1)

        buttons = QHBoxLayout()
        self.show_button = QPushButton("Show in Train")
        self.show_button.clicked.connect(self._show_selected)
        self.resume_button = QPushButton("Resume")
        self.resume_button.clicked.connect(self._resume_selected)
        self.settings_button = QPushButton("Use settings")
        self.settings_button.setToolTip(
            "Train again with this run's settings (model, data, preset, every value)"
        )
        self.settings_button.clicked.connect(self._use_selected_settings)
        self.chat_button = QPushButton("Chat with it")
        self.chat_button.setToolTip("Talk to this run's tuned model on the Chat page")
        self.chat_button.clicked.connect(self._chat_selected)
        self.export_button = QPushButton("Export…")
        self.export_button.setToolTip("Use the tuned model in Ollama, LM Studio, llama.cpp or transformers")
        self.export_button.clicked.connect(self.export_selected)
        self.check_button = QPushButton("Check forgetting")
        self.check_button.setToolTip(
            "Measure how far the tuning moved the model from its base on 100 general prompts "
            "(`tunedesk forgetting`; a few minutes on a CPU). The score appears under Drift."
        )
        self.check_button.clicked.connect(self.check_selected)
        self._check: JsonCommand | None = None
        self.open_button = QPushButton("Open folder")
        self.open_button.clicked.connect(self._open_selected)
        self.delete_button = QPushButton("Delete…")
        self.delete_button.clicked.connect(self.delete_selected)
        refresh = QPushButton("Refresh")
        refresh.clicked.connect(self.refresh)
        for b in (
            self.show_button,
            self.resume_button,
            self.settings_button,
            self.chat_button,
            self.export_button,
            self.check_button,
            self.open_button,
            self.delete_button,
        ):
            buttons.addWidget(b)
        buttons.addStretch(1)
        buttons.addWidget(refresh)
        layout.addLayout(buttons)

        self._timer = QTimer(self)
        self._timer.setInterval(REFRESH_MS)
        self._timer.timeout.connect(self.refresh)
        self.refresh()

    # --- data ---
    def parents(self) -> list[str]:
        """The folders holding run folders: the default one and any used by runs started here."""
        return [str(paths.runs_dir()), *self.state.extra_runs_dirs()]

    def refresh(self) -> None:
        """Re-read the run folders (cached per folder) and redraw the table, keeping the selection."""
        selected = set(self.selected_paths())
        self.rows = self.tools.arrange(self.history.runs(self.parents()))
        self.table.blockSignals(True)
        self.table.setRowCount(len(self.rows))
        for i, r in enumerate(self.rows):
            steps = f"{r['steps']}" + (f" / {r['max_steps']}" if r.get("max_steps") else "")
            data = Path(str(r["data"])).name if r.get("data") else "(sample)"
            started = (
                time.strftime("%Y-%m-%d %H:%M", time.localtime(r["started"])) if r.get("started") else "-"
            )
            values = (
                r.get("display_name") or r["name"],
                r["status"],
                Path(str(r.get("model") or "-")).name,
                data,
                r.get("method") or "-",
                steps,
                _loss(r.get("train_loss")),
                _loss(r.get("val_loss")),
                _drift(r.get("forgetting")),
                format_duration(r.get("duration")),
                started,
            )
            for j, text in enumerate(values):
                item = QTableWidgetItem(str(text))
                if j == 0:
                    item.setData(Qt.ItemDataRole.UserRole, r["path"])
                    item.setToolTip(r["path"] + (f"\n\n{r['notes']}" if r.get("notes") else ""))
                if j == 1 and r.get("failure"):
                    item.setToolTip(f"{r['failure'].get('message')}\n{r['failure'].get('hint') or ''}")
                if j == 8 and r.get("forgetting"):
                    item.setToolTip(drift_text(r["forgetting"]))
                if j in (5, 6, 7, 8, 9):
                    item.setTextAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
                self.table.setItem(i, j, item)
        self.table.clearSelection()
        for i, r in enumerate(self.rows):
            if r["path"] in selected:
                self._add_row_to_selection(i)
        self.table.blockSignals(False)
        self._on_selection()

    def _add_row_to_selection(self, row: int) -> None:
        model = self.table.selectionModel()
        index = self.table.model().index(row, 0)
        model.select(index, QItemSelectionModel.SelectionFlag.Select | QItemSelectionModel.SelectionFlag.Rows)

    def status_of(self, name: str) -> str | None:
        """The status shown for the run called ``name`` (None if not listed)."""
        return next((r["status"] for r in self.rows if r["name"] == name), None)

    def select_paths(self, paths_: list[str]) -> None:
        """Select the runs with these folders."""
        self.table.clearSelection()
        for i, r in enumerate(self.rows):
            if r["path"] in paths_:
                self._add_row_to_selection(i)

    def selected_paths(self) -> list[str]:
        """Folders of the selected runs, in table order."""
        rows = sorted({index.row() for index in self.table.selectionModel().selectedRows()})
        return [self.table.item(i, 0).data(Qt.ItemDataRole.UserRole) for i in rows if self.table.item(i, 0)]

    # --- overlay ---
    def _on_selection(self) -> None:
        paths_ = self.selected_paths()
        for name in self.chart.names():
            self.chart.remove_series(name)
        for path in paths_:
            steps, losses = self.history.loss_curve(path)
            series = self.chart.add_series(Path(path).name)
            for s, v in zip(steps, losses, strict=True):
                series.append(float(s), float(v))
        self.chart.refresh()
        if paths_:
            self.chart.plotItem.vb.enableAutoRange()
        self.tools.update_buttons(paths_)
        one = len(paths_) == 1
        row = next((r for r in self.rows if paths_ and r["path"] == paths_[0]), None)
        self.show_button.setEnabled(one)
        self.open_button.setEnabled(one)
        self.settings_button.setEnabled(one)
        finished = one and has_adapter(paths_[0])
        self.chat_button.setEnabled(finished)
        self.export_button.setEnabled(finished)
        self.resume_button.setEnabled(
            one and row is not None and row["status"] in ("stopped", "failed") and bool(row.get("checkpoint"))
        )
        self.delete_button.setEnabled(
            bool(paths_) and all(r["status"] != "running" for r in self.rows if r["path"] in paths_)
        )
        self.check_button.setEnabled(
            one and self._check is None and row is not None and row["status"] in ("finished", "stopped")
        )

    # --- actions ---
    def check_selected(self) -> None:
        """Run ``tunedesk forgetting`` on the selected run in a child process; the table shows the
        score when it is done (it is recorded in the run folder)."""
        paths_ = self.selected_paths()
        if len(paths_) != 1 or self._check is not None:
            return
        self._check = JsonCommand(["forgetting", paths_[0], "--json"], self)
        self._check.done.connect(self._on_checked)
        self.check_button.setText("Checking…")
        self.check_button.setEnabled(False)
        self._check.start()

    def _on_checked(self, answer: object, error: str) -> None:
        self._check = None
        self.check_button.setText("Check forgetting")
        self.refresh()
        if error:
            QMessageBox.warning(self, "Forgetting check", error)
        elif isinstance(answer, dict):
            QMessageBox.information(self, "Forgetting check", f"General ability: {drift_text(answer)}")

    def _show_selected(self) -> None:
        paths_ = self.selected_paths()
        if paths_:
            self.show_run.emit(paths_[0])

    def _resume_selected(self) -> None:
        paths_ = self.selected_paths()
        if paths_:
            self.resume_run.emit(paths_[0])

    def _use_selected_settings(self) -> None:
        paths_ = self.selected_paths()
        if paths_:
            self.use_settings.emit(paths_[0])

    def _chat_selected(self) -> None:
        paths_ = self.selected_paths()
        if paths_:
            self.chat_with.emit(paths_[0])

    def export_selected(self) -> QWidget | None:
        """Open the Export step for the selected run; returns its dialog."""
        paths_ = self.selected_paths()
        return open_export(paths_[0], self) if paths_ else None

    def _open_selected(self) -> None:
        paths_ = self.selected_paths()
        if paths_:
            QDesktopServices.openUrl(QUrl.fromLocalFile(paths_[0]))

    def delete_selected(self) -> bool:
        """Delete the selected runs after confirmation; True if deleted."""
        paths_ = self.selected_paths()
        if not paths_:
            return False
        names = "\n".join(Path(p).name for p in paths_)
        answer = QMessageBox.question(
            self,
            "Delete runs",
            f"Delete {len(paths_)} run folder(s) with their checkpoints and adapters?\n\n{names}\n\nThis cannot be undone.",
            QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.Cancel,
            QMessageBox.StandardButton.Cancel,
        )
        if answer != QMessageBox.StandardButton.Yes:
            return False
        errors = []
        for p in paths_:
            try:
                delete_run(p)
            except (OSError, RuntimeError) as exc:
                errors.append(str(exc))
        if errors:
            QMessageBox.warning(self, "Delete runs", "\n".join(errors))
        self.refresh()
        return not errors

    # --- visibility ---
    def showEvent(self, event: QShowEvent) -> None:  # noqa: N802 (Qt override)
        """Refresh now and every few seconds while visible."""
        self.refresh()
        self._timer.start()
        super().showEvent(event)

    def hideEvent(self, event: QHideEvent) -> None:  # noqa: N802 (Qt override)
        """Stop refreshing while hidden."""
        self._timer.stop()
        super().hideEvent(event)
