"""The Runs page's toolbar: find (filter by words and status), sort, rename, notes, and compare two
runs' settings side by side. Names and notes are stored in the run folder (``desktop.run_notes``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QFont
from PySide6.QtWidgets import (
    QAbstractItemView,
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QHBoxLayout,
    QHeaderView,
    QInputDialog,
    QLabel,
    QLineEdit,
    QMessageBox,
    QPushButton,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from desktop.run_notes import SORTS, STATUSES, arrange, compare_configs, read_meta, with_meta, write_meta


def _text(value: Any) -> str:
    return "(not set)" if value is None else str(value)


class CompareDialog(QDialog):
    """Two runs' settings in a table: setting, run A, run B; the settings that differ first (bold)."""

    def __init__(self, a: str, b: str, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        names = [read_meta(p)["name"] or Path(p).name for p in (a, b)]
        self.setWindowTitle(f"Compare settings: {names[0]} and {names[1]}")
        self.rows = compare_configs(a, b)
        differ = sum(1 for r in self.rows if r[3])
        layout = QVBoxLayout(self)
        self.summary = QLabel(
            f"{differ} setting(s) differ, listed first in bold; {len(self.rows) - differ} are the same."
        )
        layout.addWidget(self.summary)
        self.table = QTableWidget(len(self.rows), 3)
        self.table.setHorizontalHeaderLabels(["Setting", names[0], names[1]])
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.verticalHeader().setVisible(False)
        self.table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.Stretch)
        bold = QFont()
        bold.setBold(True)
        for i, (key, va, vb, differs) in enumerate(self.rows):
            for j, text in enumerate((key, _text(va), _text(vb))):
                item = QTableWidgetItem(text)
                item.setToolTip(text)
                if differs:
                    item.setFont(bold)
                else:
                    item.setForeground(self.palette().placeholderText())
                self.table.setItem(i, j, item)
        layout.addWidget(self.table, 1)
        close = QDialogButtonBox(QDialogButtonBox.StandardButton.Close)
        close.rejected.connect(self.reject)
        layout.addWidget(close)
        self.resize(720, 520)

    def table_rows(self) -> list[tuple[str, str, str]]:
        """The table as text, top to bottom."""
        return [
            tuple(self.table.item(i, j).text() for j in range(3))  # type: ignore[misc]
            for i in range(self.table.rowCount())
        ]


class RunsTools(QWidget):
    """Find, status and sort controls, and Rename…, Notes… and Compare… for the selected runs.
    ``changed`` asks the page to redraw its table; ``selected`` is a callable returning the selected
    run folders."""

    changed = Signal()

    def __init__(self, selected: Any, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.selected = selected
        self.dialog: QDialog | None = None
        row = QHBoxLayout(self)
        row.setContentsMargins(0, 0, 0, 0)
        row.addWidget(QLabel("Find:"))
        self.find = QLineEdit()
        self.find.setPlaceholderText("name, model, data or notes")
        self.find.setClearButtonEnabled(True)
        self.find.setAccessibleName("Find runs")
        row.addWidget(self.find, 1)
        self.status = QComboBox()
        for status in STATUSES:
            self.status.addItem("All runs" if status == "all" else status.capitalize(), status)
        self.status.setAccessibleName("Show runs with this status")
        row.addWidget(self.status)
        row.addWidget(QLabel("Sort:"))
        self.sort = QComboBox()
        self.sort.addItems(list(SORTS))
        self.sort.setAccessibleName("Sort runs")
        row.addWidget(self.sort)
        self.rename_button = QPushButton("Rename…")
        self.rename_button.setToolTip("Give the run a name of your own (its folder keeps its name)")
        self.notes_button = QPushButton("Notes…")
        self.notes_button.setToolTip("Write down what you tried and what you saw")
        self.compare_button = QPushButton("Compare settings…")
        self.compare_button.setToolTip("Two selected runs' settings side by side, the differences first")
        for b in (self.rename_button, self.notes_button, self.compare_button):
            row.addWidget(b)
        self.find.textChanged.connect(self.changed)
        self.status.currentIndexChanged.connect(self.changed)
        self.sort.currentIndexChanged.connect(self.changed)
        self.rename_button.clicked.connect(lambda: self.rename())
        self.notes_button.clicked.connect(lambda: self.edit_notes())
        self.compare_button.clicked.connect(lambda: self.compare())
        self.update_buttons([])

    def arrange(self, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """``rows`` with names and notes, filtered and sorted as the controls say."""
        return arrange(
            with_meta(rows), self.find.text(), str(self.status.currentData()), self.sort.currentText()
        )

    def update_buttons(self, paths_: list[str]) -> None:
        """Enable what fits the selection: one run to rename or annotate, two to compare."""
        self.rename_button.setEnabled(len(paths_) == 1)
        self.notes_button.setEnabled(len(paths_) == 1)
        self.compare_button.setEnabled(len(paths_) == 2)

    def _one(self) -> str | None:
        paths_ = self.selected()
        return paths_[0] if len(paths_) == 1 else None

    def _write(self, run: str, **changes: str) -> bool:
        try:
            write_meta(run, **changes)
        except OSError as exc:
            QMessageBox.warning(self, "Runs", f"Could not save to {run}: {exc}")
            return False
        self.changed.emit()
        return True

    def rename(self, name: str | None = None) -> bool:
        """Set the selected run's display name (asked for when ``name`` is None; "" restores the
        folder's name). True when saved."""
        run = self._one()
        if run is None:
            return False
        if name is None:
            current = read_meta(run)["name"] or Path(run).name
            name, ok = QInputDialog.getText(self, "Rename run", "Name shown for this run:", text=current)
            if not ok:
                return False
        return self._write(run, name=name)

    def edit_notes(self, notes: str | None = None) -> bool:
        """Set the selected run's notes (asked for when ``notes`` is None). True when saved."""
        run = self._one()
        if run is None:
            return False
        if notes is None:
            notes, ok = QInputDialog.getMultiLineText(
                self, "Run notes", f"Notes on {Path(run).name}:", read_meta(run)["notes"]
            )
            if not ok:
                return False
        return self._write(run, notes=notes)

    def compare(self) -> CompareDialog | None:
        """Open the side-by-side settings of the two selected runs (non-modal); returns the dialog."""
        paths_ = self.selected()
        if len(paths_) != 2:
            return None
        self.dialog = CompareDialog(paths_[0], paths_[1], self)
        self.dialog.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose, False)
        self.dialog.show()
        return self.dialog
