"""The pages of the main window's guided flow: Model, Data, Train, (Chat), Runs."""

from __future__ import annotations

from PySide6.QtWidgets import QLabel


def intro_label(text: str) -> QLabel:
    """A page's explanatory paragraph: wrapped, so it never forces the window wider."""
    label = QLabel(text)
    label.setWordWrap(True)
    return label
