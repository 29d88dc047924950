"""A short first-run tour: five steps, each opening its page of the main window with two or three
sentences on what to do there. Back, Next and "Skip the tour" (also Escape); shown once, then
remembered in the app's settings (``tour/done``), so it never comes back on its own.
"""

from __future__ import annotations

from typing import Any

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QDialog, QHBoxLayout, QLabel, QPushButton, QVBoxLayout, QWidget

from desktop.state import app_settings

SETTING = "tour/done"
# (page key of the main window, title, what to do there)
STEPS = (
    (
        "model",
        "1 of 5: Choose a model",
        "The model is the starting point you teach. {default} 'Find and download' lists models already "
        "on this computer and fetches others by name; 'Fits here?' says whether one fits in this "
        "computer's memory.",
    ),
    (
        "data",
        "2 of 5: Add your data",
        "Examples of the answers you want: a file, a folder of documents, or examples you paste in. "
        "Every row is checked; 'Preview and columns' shows the first rows and which column is the "
        "question and which the answer. The sample data works for a first try.",
    ),
    (
        "train",
        "3 of 5: Train",
        "Pick a preset ('Quick test' takes a few minutes) and press Start. The chart shows the loss "
        "(how wrong the model still is) going down. Stop keeps what was learnt; Resume continues.",
    ),
    (
        "chat",
        "4 of 5: Chat with the result",
        "When the run ends, 'Chat with this result' opens here. Ask it what your data taught it, side "
        "by side with the model before training. Good answers can be saved as more training data.",
    ),
    (
        "runs",
        "5 of 5: Keep and export",
        "Every run is listed here: rename it, write notes, compare two runs' settings. 'Export…' "
        "makes the tuned model a file for Ollama or LM Studio, ready for `ollama run`.",
    ),
)


DEFAULT_READY = "The small built-in one (SmolLM2-135M-Instruct) is ready to use."
DEFAULT_MISSING = (
    "This installation has no model yet: on 'Find and download', type "
    "HuggingFaceTB/SmolLM2-135M-Instruct and press Download (about 270 MB), or import a file."
)


def step_text(index: int) -> str:
    """The words of step ``index``: the first says whether the default model is there."""
    from backends.model_store_info import default_model_installed

    text = STEPS[index][2]
    if "{default}" in text:
        text = text.format(default=DEFAULT_READY if default_model_installed() else DEFAULT_MISSING)
    return text


def tour_done() -> bool:
    """True once the tour was finished or skipped on this profile."""
    return str(app_settings().value(SETTING, "false")).lower() == "true"


class Tour(QDialog):
    """The tour beside the main window (not modal: the pages behind it stay usable).
    ``window``: anything with ``show_page(key)``."""

    def __init__(self, window: Any, parent: QWidget | None = None) -> None:
        super().__init__(parent if parent is not None else window)
        self.window_ = window
        self.setWindowTitle("Welcome to TuneDesk")
        self.setModal(False)
        self.index = 0
        layout = QVBoxLayout(self)
        self.title = QLabel("")
        self.text = QLabel("")
        self.text.setWordWrap(True)
        self.text.setTextFormat(Qt.TextFormat.PlainText)
        self.text.setAlignment(Qt.AlignmentFlag.AlignTop | Qt.AlignmentFlag.AlignLeft)
        layout.addWidget(self.title)
        layout.addWidget(self.text, 1)
        row = QHBoxLayout()
        self.skip_button = QPushButton("Skip the tour")
        self.back_button = QPushButton("Back")
        self.next_button = QPushButton("Next")
        self.next_button.setDefault(True)
        row.addWidget(self.skip_button)
        row.addStretch(1)
        row.addWidget(self.back_button)
        row.addWidget(self.next_button)
        layout.addLayout(row)
        self.skip_button.clicked.connect(self.finish)
        self.back_button.clicked.connect(lambda: self.go(self.index - 1))
        self.next_button.clicked.connect(self.next)
        self.resize(460, 220)
        self.go(0)

    def go(self, index: int) -> None:
        """Show step ``index`` (0-based) and open its page."""
        self.index = max(0, min(index, len(STEPS) - 1))
        page, title, _ = STEPS[self.index]
        self.title.setText(f"<h3>{title}</h3>")
        self.text.setText(step_text(self.index))
        self.back_button.setEnabled(self.index > 0)
        last = self.index == len(STEPS) - 1
        self.next_button.setText("Start using TuneDesk" if last else "Next")
        self.window_.show_page(page)

    def next(self) -> None:
        """The next step; after the last one, the first page again and the tour is over."""
        if self.index == len(STEPS) - 1:
            self.window_.show_page("model")
            self.finish()
        else:
            self.go(self.index + 1)

    def finish(self) -> None:
        """End the tour (finished or skipped) and remember that it was seen."""
        settings = app_settings()
        settings.setValue(SETTING, "true")
        settings.sync()
        QDialog.done(self, QDialog.DialogCode.Accepted)

    def reject(self) -> None:
        """Escape or the window's close button skips the tour."""
        self.finish()


def start_tour_once(window: Any) -> Tour | None:
    """Open the tour unless it was seen before on this profile; returns it (None when not shown)."""
    if tour_done():
        return None
    tour = Tour(window)
    tour.show()
    return tour
