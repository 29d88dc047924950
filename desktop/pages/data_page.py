"""Step 2, Data: pick a training file; ``tunedesk data check FILE --model M --json`` runs in a child
process (the window never freezes) and its report is shown: format, rows kept and dropped, the
dropped rows as a table of row, field and reason, a token-length histogram, and one example
rendered with the model's chat template, the trained (loss-carrying) text highlighted."""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import Qt, QTimer, Signal
from PySide6.QtGui import QColor, QDragEnterEvent, QDropEvent, QPalette
from PySide6.QtWidgets import (
    QAbstractItemView,
    QApplication,
    QFileDialog,
    QGridLayout,
    QGroupBox,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QMenu,
    QProgressBar,
    QPushButton,
    QSplitter,
    QTableWidget,
    QTableWidgetItem,
    QTabWidget,
    QTextBrowser,
    QVBoxLayout,
    QWidget,
)

from desktop.charts import Chart, series_color
from desktop.data_columns import ColumnMapping, columns_arg
from desktop.data_paste import PasteDialog, datasets_dir
from desktop.pages import intro_label
from desktop.state import AppState, sample_data_path
from desktop.worker import JsonCommand

DATA_FILTER = "Datasets (*.jsonl *.json *.csv *.parquet);;All files (*)"


def progress_text(line: str) -> str:
    """A ``data check`` stderr line in words: a ``data_progress`` event (JSON) as "Reading… 45%
    (12,345 rows)", anything else as it is."""
    line = line.strip()
    try:
        event = json.loads(line) if line.startswith("{") else None
    except json.JSONDecodeError:
        event = None
    if not isinstance(event, dict) or event.get("event") != "data_progress":
        return line
    done, total = event.get("done") or 0, event.get("total") or 0
    share = f"{100 * done / total:.0f}%" if total else ""
    return f"Reading… {share} ({int(event.get('rows') or 0):,} rows)"


def _int(value: Any) -> str:
    """A token count for display: rounded to a whole number ('-' when missing)."""
    return "-" if value is None else f"{round(float(value)):,}"


def render_spans(text: str, spans: list[Any], highlight: QColor) -> str:
    """HTML of ``text`` with the character ranges ``spans`` ([start, end) pairs) highlighted."""
    colour = highlight.name()
    out, pos = [], 0
    for span in sorted((int(s[0]), int(s[1])) for s in spans or [] if len(s) >= 2):
        start, end = max(span[0], pos), min(span[1], len(text))
        if end <= start:
            continue
        out.append(html.escape(text[pos:start]))
        out.append(f"<span style='background-color:{colour}'>{html.escape(text[start:end])}</span>")
        pos = end
    out.append(html.escape(text[pos:]))
    return "<pre style='white-space:pre-wrap'>" + "".join(out) + "</pre>"


def folder_summary(report: dict[str, Any]) -> str:
    """One line on a ``data from-folder --json`` report: taken, skipped, secrets, duplicates."""
    secrets = len(report.get("secrets") or [])
    dups = int(report.get("duplicates_exact", 0)) + int(report.get("duplicates_near", 0))
    return (
        f"From {report.get('root')}: {report.get('chunks')} chunks from {report.get('files_taken')} files; "
        f"{len(report.get('skipped') or [])} files or folders skipped (ignored, vendored, binary, ...); "
        f"{secrets} secret(s) removed; {dups} duplicate chunk(s) dropped."
    )


class DataPage(QWidget):
    """Chooses the data file and shows its check report."""

    next_requested = Signal()
    check_finished = Signal(object)  # the report dict, or None on failure

    def __init__(self, state: AppState, parent: QWidget | None = None, *, max_seq_length: int = 1024) -> None:
        super().__init__(parent)
        self.state = state
        self.max_seq_length = max_seq_length
        self.report: dict[str, Any] | None = None
        self.error: str | None = None
        self._check: JsonCommand | None = None
        self.check_args: list[str] = []  # the last `tunedesk data check` arguments
        self.folder_report: dict[str, Any] | None = None  # the last `data from-folder --json` report
        self.setAcceptDrops(True)

        layout = QVBoxLayout(self)
        layout.addWidget(QLabel("<h2>2. Add your data</h2>"))
        layout.addWidget(
            intro_label(
                "A JSONL, JSON, CSV or Parquet file of chat conversations, instruction/answer pairs, "
                "prompt/completion pairs or plain text. Every row is checked before training."
            )
        )
        row = QHBoxLayout()
        self.path_edit = QLineEdit()
        self.path_edit.setReadOnly(True)
        self.path_edit.setAccessibleName("Chosen data file")
        row.addWidget(self.path_edit, 1)
        browse = QPushButton("Choose file…")
        browse.clicked.connect(self._browse)
        row.addWidget(browse)
        self.paste_button = QPushButton("Paste examples…")
        self.paste_button.setToolTip("Type or paste questions and answers; they are saved as a data file")
        self.paste_button.clicked.connect(self.paste_examples)
        row.addWidget(self.paste_button)
        sample = QPushButton("Use sample data")
        sample.setToolTip(f"The built-in sample: {sample_data_path()}")
        sample.clicked.connect(lambda: self.state.set_data_file(str(sample_data_path())))
        row.addWidget(sample)
        self.folder_button = QPushButton("Use a folder…")
        self.folder_button.setToolTip(
            "Make a dataset from a folder of documents or a code repository (tunedesk data from-folder): "
            "skips what .gitignore ignores, removes secrets and duplicates"
        )
        folder_menu = QMenu(self.folder_button)
        folder_menu.addAction(
            "As plain text, to learn its content (continued pre-training)…"
        ).triggered.connect(lambda: self._choose_folder("text"))
        folder_menu.addAction("As questions and answers to fill in (qa)…").triggered.connect(
            lambda: self._choose_folder("qa")
        )
        self.folder_button.setMenu(folder_menu)
        row.addWidget(self.folder_button)
        self._from_folder: JsonCommand | None = None
        self.recheck = QPushButton("Check again")
        self.recheck.clicked.connect(self.run_check)
        row.addWidget(self.recheck)
        layout.addLayout(row)

        self.progress = QProgressBar()
        self.progress.setRange(0, 0)
        self.progress.setVisible(False)
        layout.addWidget(self.progress)
        self.summary = QLabel("")
        self.summary.setWordWrap(True)
        self.summary.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        layout.addWidget(self.summary)

        split = QSplitter(Qt.Orientation.Horizontal)
        left = QWidget()
        left_layout = QVBoxLayout(left)
        left_layout.setContentsMargins(0, 0, 0, 0)
        problems_box = QGroupBox("Dropped rows")
        pb = QVBoxLayout(problems_box)
        self.problems = QTableWidget(0, 3)
        self.problems.setHorizontalHeaderLabels(["Row", "Field", "Reason"])
        self.problems.verticalHeader().setVisible(False)
        self.problems.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.problems.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        h = self.problems.horizontalHeader()
        h.setSectionResizeMode(0, QHeaderView.ResizeMode.ResizeToContents)
        h.setSectionResizeMode(1, QHeaderView.ResizeMode.ResizeToContents)
        h.setSectionResizeMode(2, QHeaderView.ResizeMode.Stretch)
        pb.addWidget(self.problems)
        left_layout.addWidget(problems_box, 1)
        self.histogram = Chart("Length of each row", "text pieces (tokens)", "rows")
        left_layout.addWidget(self.histogram, 1)
        split.addWidget(left)
        example_box = QGroupBox("Example, as the model sees it (highlighted: trained on)")
        eb = QGridLayout(example_box)
        self.example = QTextBrowser()
        self.example.setOpenLinks(False)
        eb.addWidget(self.example)
        self.right_tabs = QTabWidget()
        self.right_tabs.addTab(example_box, "Example")
        self.column_map = ColumnMapping()  # preview of the first rows, column drop-downs
        self.column_map.mapping_changed.connect(self.state.set_data_columns)
        self.right_tabs.addTab(self.column_map, "Preview and columns")
        self.right_tabs.tabBar().setAccessibleName("Example, or preview and columns")
        split.addWidget(self.right_tabs)
        split.setSizes([500, 500])
        layout.addWidget(split, 1)

        buttons = QHBoxLayout()
        buttons.addStretch(1)
        self.next_button = QPushButton("Next: train →")
        self.next_button.clicked.connect(self.next_requested)
        buttons.addWidget(self.next_button)
        layout.addLayout(buttons)

        self._debounce = QTimer(self)
        self._debounce.setSingleShot(True)
        self._debounce.setInterval(300)
        self._debounce.timeout.connect(self.run_check)
        state.data_file_changed.connect(self._on_choice_changed)
        state.model_changed.connect(self._on_choice_changed)
        state.data_columns_changed.connect(self._on_choice_changed)
        self.path_edit.setText(state.data_file)

    # --- choosing ---
    def _browse(self) -> None:
        start = str(Path(self.state.data_file).parent) if self.state.data_file else ""
        path, _ = QFileDialog.getOpenFileName(self, "Choose training data", start, DATA_FILTER)
        if path:
            self.state.set_data_file(path)

    def _choose_folder(self, mode: str) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Choose a folder of documents or code")
        if folder:
            self.use_folder(folder, mode)

    def use_folder(self, folder: str, mode: str = "text") -> None:
        """Run ``tunedesk data from-folder FOLDER --mode MODE`` in a child process, writing
        ``<app data>/datasets/<folder name>[-qa].jsonl``, then choose that file (and check it)."""
        out = datasets_dir() / f"{Path(folder).name or 'folder'}{'-qa' if mode == 'qa' else ''}.jsonl"
        args = ["data", "from-folder", folder, "--out", str(out), "--mode", mode, "--json"]
        self._from_folder = JsonCommand(args, self)
        self._from_folder.done.connect(self._on_folder_done)
        self._from_folder.log_line.connect(
            lambda line: line.strip() and self.summary.setText(html.escape(line.strip()))
        )
        self.folder_button.setEnabled(False)
        self.progress.setVisible(True)
        self.summary.setText(f"Reading {html.escape(folder)}…")
        self._from_folder.start()

    def _on_folder_done(self, report: dict[str, Any] | None, error: str) -> None:
        self.folder_button.setEnabled(True)
        self.progress.setVisible(False)
        if report is None:
            self.summary.setText(
                f"<span style='color:#d9534f'><b>Cannot use this folder:</b> {html.escape(error)}</span>"
            )
            return
        self.folder_report = report
        self.state.set_data_file(report["out"])
        self._on_choice_changed()  # checks the new file at once (the page is visible)

    def _on_choice_changed(self, *_: Any) -> None:
        self.path_edit.setText(self.state.data_file)
        self.report = None
        if self.isVisible():  # otherwise the check runs when the page is shown
            self._debounce.start()

    def dragEnterEvent(self, event: QDragEnterEvent) -> None:  # noqa: N802 (Qt override)
        """Accept a dragged data file."""
        urls = event.mimeData().urls()
        if urls and urls[0].isLocalFile() and Path(urls[0].toLocalFile()).is_file():
            event.acceptProposedAction()

    def dropEvent(self, event: QDropEvent) -> None:  # noqa: N802 (Qt override)
        """Use the dropped file."""
        urls = event.mimeData().urls()
        if urls and urls[0].isLocalFile():
            self.state.set_data_file(urls[0].toLocalFile())
            event.acceptProposedAction()

    def set_max_seq_length(self, length: int) -> None:
        """Check token lengths against ``length`` (the Train page's setting) from now on."""
        if length != self.max_seq_length:
            self.max_seq_length = length
            self._on_choice_changed()

    def paste_examples(self) -> PasteDialog:
        """Open the Paste examples box; its file becomes the data file when accepted."""
        dialog = PasteDialog(self)
        dialog.accepted.connect(lambda: dialog.path and self.state.set_data_file(str(dialog.path)))
        dialog.open()
        return dialog

    # --- checking ---
    def is_checking(self) -> bool:
        """True while a check runs."""
        return self._check is not None and self._check.is_running()

    def ensure_checked(self) -> None:
        """Run the check if the current file has no report yet (e.g. when the page is first shown)."""
        if self.report is None and not self.is_checking():
            self.run_check()

    def run_check(self) -> None:
        """Check the chosen file in a child process; a running check is cancelled first."""
        self._debounce.stop()
        if self._check is not None and self._check.is_running():
            self._check.cancel()
        path = self.state.data_file
        if not path:
            self.summary.setText("Choose a data file.")
            return
        args = ["data", "check", path, "--model", self.state.model, "--json"]
        args += ["--max-seq-length", str(self.max_seq_length)]
        if self.state.data_columns:
            args += ["--columns", columns_arg(self.state.data_columns)]
        self.check_args = args
        self._check = JsonCommand(args, self)
        self._check.done.connect(self._on_checked)
        self._check.log_line.connect(
            lambda line: line.strip() and self.summary.setText(html.escape(progress_text(line)))
        )
        self.progress.setVisible(True)
        self.summary.setText(f"Checking {html.escape(Path(path).name)}…")
        self._check.start()

    def _on_checked(self, report: dict[str, Any] | None, error: str) -> None:
        self.progress.setVisible(False)
        self.report, self.error = report, (error or None)
        if report is None:
            self.summary.setText(
                f"<span style='color:#d9534f'><b>Cannot use this file:</b> {html.escape(error)}</span>"
            )
            self.problems.setRowCount(0)
            self.example.clear()
            self._show_histogram({})  # the bars are plot items, not series: clear_data keeps them
            self.column_map.show_failure(keep=bool(self.state.data_columns))
        else:
            self.show_report(report)
            folder = self.folder_report
            if folder and report.get("file") == folder.get("out"):
                self.summary.setText(f"{html.escape(folder_summary(folder))}<br>{self.summary.text()}")
        self.check_finished.emit(report)

    # --- showing ---
    def show_report(self, report: dict[str, Any]) -> None:
        """Fill the page from a ``data check --json`` report."""
        dropped = report.get("rows_dropped", 0)
        lengths = report.get("token_lengths") or {}
        parts = [
            f"<b>{html.escape(Path(str(report.get('file', self.state.data_file))).name)}</b>: "
            f"format <b>{html.escape(str(report.get('format')))}</b>",
            f"{report.get('rows_read', 0)} rows read, <b>{report.get('rows_kept', 0)} kept</b>, "
            + (f"<b style='color:#d9534f'>{dropped} dropped</b>" if dropped else "0 dropped"),
        ]
        if lengths:
            parts.append(
                f"length in text pieces (tokens): shortest {_int(lengths.get('min'))}, middle {_int(lengths.get('median'))}, "
                f"95 % under {_int(lengths.get('p95'))}, longest {_int(lengths.get('max'))}"
                + (
                    f"; {lengths.get('over_max')} longer than the limit (cut to fit)"
                    if lengths.get("over_max")
                    else ""
                )
            )
        notices = [html.escape(str(n)) for n in report.get("notices") or []]
        text = " · ".join(parts)
        if notices:
            text += "<br>" + "<br>".join(f"• {n}" for n in notices)
        self.summary.setText(text)

        problems = report.get("problems") or []
        total = int(report.get("problem_count") or len(problems))
        if total > len(problems):
            self.summary.setText(
                f"{text}<br>The table lists the first {len(problems)} of {total} dropped rows."
            )
        self.problems.setRowCount(len(problems))
        for i, p in enumerate(problems):
            where = "line" if p.get("where") == "line" else "row"
            row_item = QTableWidgetItem(f"{where} {p.get('row')}")
            row_item.setData(Qt.ItemDataRole.UserRole, p.get("row"))
            self.problems.setItem(i, 0, row_item)
            self.problems.setItem(i, 1, QTableWidgetItem(str(p.get("field", ""))))
            self.problems.setItem(i, 2, QTableWidgetItem(str(p.get("reason", ""))))

        self._show_histogram(report.get("histogram") or {})
        self.column_map.show_check(report)
        example = report.get("example") or {}
        if example.get("text"):
            # A tint of the palette's highlight colour keeps the text readable on light and dark.
            palette = QApplication.palette(self)  # this page's palette() may lag behind a theme switch
            highlight = palette.color(QPalette.ColorRole.Highlight)
            base = palette.color(QPalette.ColorRole.Base)
            tint = QColor(
                (highlight.red() + 2 * base.red()) // 3,
                (highlight.green() + 2 * base.green()) // 3,
                (highlight.blue() + 2 * base.blue()) // 3,
            )
            self.example.setHtml(render_spans(example["text"], example.get("spans") or [], tint))
        else:
            self.example.setPlainText("(no example: no row was kept)")

    def _show_histogram(self, histogram: dict[str, Any]) -> None:
        self.histogram.plotItem.clear()
        bins = np.asarray(histogram.get("bins") or [], dtype=float)
        counts = np.asarray(histogram.get("counts") or [], dtype=float)
        if len(counts) == 0:
            return
        if len(bins) == len(counts) + 1:  # edges
            x0, x1 = bins[:-1], bins[1:]
        else:  # left edges
            width = np.diff(bins).mean() if len(bins) > 1 else 1.0
            x0, x1 = bins[: len(counts)], bins[: len(counts)] + width
        bars = pg.BarGraphItem(x0=x0, x1=x1, height=counts, brush=series_color(0), pen=None)
        self.histogram.plotItem.addItem(bars)
        line = pg.InfiniteLine(
            pos=self.max_seq_length,
            angle=90,
            pen=pg.mkPen(series_color(1), width=2, style=Qt.PenStyle.DashLine),
        )
        if self.max_seq_length <= x1.max() * 1.2:
            self.histogram.plotItem.addItem(line)

    def follow_palette(self) -> None:
        """Draw the report again in the current colours (the window calls it on a theme switch)."""
        if self.report is not None:
            self.show_report(self.report)

    def problem_rows(self) -> list[tuple[str, str, str]]:
        """The dropped-rows table as text: (row, field, reason) per line."""
        return [
            tuple(self.problems.item(i, j).text() for j in range(3))  # type: ignore[misc]
            for i in range(self.problems.rowCount())
        ]
