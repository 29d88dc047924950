"""The Data page's preview of the first rows as a table, with a drop-down per role (what the model
reads: the question, the answer...) choosing the file's column that fills it.

It is built from ``tunedesk data check FILE --json``'s ``"preview"`` (``{"columns": [source column
names], "rows": [[cell strings], ... the first 10 rows]}``) and ``"columns"`` (``{role:
source_column}``, the mapping detected or applied). Changing a drop-down emits
``mapping_changed`` with the full mapping; the page re-runs the check with ``--columns
role=column,...`` and the Train page writes the mapping into the run config as ``data.columns``.
"""

from __future__ import annotations

from typing import Any

from PySide6.QtCore import Signal
from PySide6.QtWidgets import (
    QAbstractItemView,
    QComboBox,
    QGridLayout,
    QHeaderView,
    QLabel,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

NONE = ""  # the drop-down entry "(not used)"
# Roles in everyday words (the field term stays beside them in the drop-down's label).
ROLE_WORDS = {
    "prompt": "Question / prompt",
    "completion": "Answer / completion",
    "instruction": "Instruction",
    "input": "Extra input",
    "output": "Answer / output",
    "system": "System prompt",
    "messages": "Conversation (messages)",
    "conversations": "Conversation (conversations)",
    "text": "Text",
    "chosen": "Better answer (chosen)",
    "rejected": "Worse answer (rejected)",
    "label": "Thumbs up/down (label)",
}
# Roles offered when the check found no mapping (e.g. a CSV of "question" and "answer").
DEFAULT_ROLES = ("prompt", "completion")


def columns_arg(mapping: dict[str, str]) -> str:
    """``{"prompt": "question", "completion": "answer"}`` -> ``prompt=question,completion=answer``
    (roles left unused are left out)."""
    return ",".join(f"{role}={column}" for role, column in mapping.items() if column)


class ColumnMapping(QWidget):
    """Drop-downs (role -> source column) above a table of the first rows."""

    mapping_changed = Signal(object)  # a dict; object keeps its key order (QVariantMap sorts)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        self.note = QLabel("The first rows of the file appear here after the check.")
        self.note.setWordWrap(True)
        layout.addWidget(self.note)
        self.combos_row = QGridLayout()  # two roles a line: label, drop-down, label, drop-down
        layout.addLayout(self.combos_row)
        self.table = QTableWidget(0, 0)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.setWordWrap(False)
        self.table.setTabKeyNavigation(False)  # Tab leaves the table (keyboard use)
        self.table.setAccessibleName("First rows of the data file")
        self.table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.Interactive)
        self.table.horizontalHeader().setStretchLastSection(True)
        layout.addWidget(self.table, 1)
        self.combos: dict[str, QComboBox] = {}
        self.source_columns: list[str] = []

    def show_check(self, report: dict[str, Any] | None) -> None:
        """Fill the drop-downs and the table from a check report (None or no preview: empty)."""
        preview = (report or {}).get("preview") or {}
        self.source_columns = [str(c) for c in preview.get("columns") or []]
        rows = preview.get("rows") or []
        mapping = {str(k): str(v) for k, v in ((report or {}).get("columns") or {}).items()}
        self._fill_combos(mapping)
        self.table.clear()
        self.table.setColumnCount(len(self.source_columns))
        self.table.setRowCount(len(rows))
        self.table.setHorizontalHeaderLabels(self._headers(mapping))
        for i, row in enumerate(rows):
            for j, cell in enumerate(list(row)[: len(self.source_columns)]):
                item = QTableWidgetItem(str(cell))
                item.setToolTip(str(cell)[:2000])
                self.table.setItem(i, j, item)
        self.table.resizeColumnsToContents()
        for j in range(self.table.columnCount()):  # long cells stay readable in their tooltip
            self.table.setColumnWidth(j, min(self.table.columnWidth(j), 260))
        if not self.source_columns:
            self.note.setText("No preview of this file.")
        elif mapping:
            self.note.setText(
                f"The first {len(rows)} rows. Each drop-down says which column the model reads as that "
                "part of an example; change one if the guess is wrong."
            )
        else:
            self.note.setText(
                "TuneDesk could not tell which column is which: choose the column with the question "
                "and the one with the answer."
            )

    def show_failure(self, keep: bool) -> None:
        """The check failed: with the user's own mapping (``keep``) the drop-downs stay, to choose
        other columns; otherwise the preview is emptied (it belonged to another file)."""
        if keep and self.combos:
            self.note.setText(
                "The check failed with these columns (the message is above): choose other columns."
            )
        else:
            self.show_check(None)

    def _headers(self, mapping: dict[str, str]) -> list[str]:
        used = {column: role for role, column in mapping.items() if column}
        return [f"{c} → {used[c]}" if c in used else c for c in self.source_columns]

    def _fill_combos(self, mapping: dict[str, str]) -> None:
        while self.combos_row.count():
            item = self.combos_row.takeAt(0)
            if item.widget() is not None:
                item.widget().deleteLater()
        self.combos = {}
        if not self.source_columns:
            return
        for n, role in enumerate(mapping or dict.fromkeys(DEFAULT_ROLES, NONE)):
            label = QLabel(f"{ROLE_WORDS.get(role, role)}:")
            combo = QComboBox()
            combo.addItem("(not used)", NONE)
            for column in self.source_columns:
                combo.addItem(column, column)
            combo.setCurrentIndex(max(combo.findData(mapping.get(role, NONE)), 0))
            combo.setAccessibleName(f"Column for {ROLE_WORDS.get(role, role)}")
            combo.setToolTip(f"The file's column used as '{role}'")
            label.setBuddy(combo)
            combo.currentIndexChanged.connect(self._emit)
            self.combos_row.addWidget(label, n // 2, 2 * (n % 2))
            self.combos_row.addWidget(combo, n // 2, 2 * (n % 2) + 1)
            self.combos[role] = combo

    def mapping(self) -> dict[str, str]:
        """The chosen mapping, role -> source column ("" for a role left unused)."""
        return {role: str(combo.currentData()) for role, combo in self.combos.items()}

    def choose(self, role: str, column: str) -> None:
        """Set one drop-down (as a user would); emits ``mapping_changed``."""
        combo = self.combos[role]
        combo.setCurrentIndex(combo.findData(column))

    def _emit(self, *_: Any) -> None:
        mapping = self.mapping()
        self.table.setHorizontalHeaderLabels(self._headers(mapping))
        self.mapping_changed.emit({k: v for k, v in mapping.items() if v})
