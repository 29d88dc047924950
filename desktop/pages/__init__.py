"""The pages of the main window's guided flow: Model, Data, Train, (Chat), Runs."""

from __future__ import annotations

from collections.abc import Callable

from PySide6.QtWidgets import QHBoxLayout, QLabel, QPushButton, QWidget


def intro_label(text: str) -> QLabel:
    """A page's explanatory paragraph: wrapped, so it never forces the window wider."""
    label = QLabel(text)
    label.setWordWrap(True)
    return label


def with_change_button(
    label: QLabel, what: str, on_change: Callable[[], None]
) -> tuple[QWidget, QPushButton]:
    """``label`` with a "Change…" button beside it (named "Change the ``what``" for screen readers)."""
    box = QWidget()
    row = QHBoxLayout(box)
    row.setContentsMargins(0, 0, 0, 0)
    row.addWidget(label, 1)
    change = QPushButton("Change…")
    change.setAccessibleName(f"Change the {what}")
    change.clicked.connect(on_change)
    row.addWidget(change)
    return box, change
