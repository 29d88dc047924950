"""What to do with a finished run: "Chat with this result" and "Export…" (the Export step,
``desktop.export_dialog``), offered on the Train page when a run ends and on the Runs page."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import Signal
from PySide6.QtWidgets import QHBoxLayout, QLabel, QPushButton, QWidget

from backends.runs import RunDir


def has_adapter(run_dir: str | Path | None) -> bool:
    """True when the run folder holds a final adapter (a finished run)."""
    return bool(run_dir) and (RunDir(Path(str(run_dir))).adapter_dir / "adapter_config.json").is_file()


def open_export(run_dir: str | Path, parent: QWidget) -> QWidget:
    """Open the Export step for ``run_dir`` (non-modal: the app stays usable); returns the dialog."""
    from desktop.export_dialog import ExportDialog

    dialog = ExportDialog(run_dir, parent)
    dialog.show()
    dialog.raise_()
    return dialog


class NextSteps(QWidget):
    """Two buttons for a finished run; ``chat_requested(str)`` asks the window to open Chat with it."""

    chat_requested = Signal(str)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.run_dir: str | None = None
        self.dialog: QWidget | None = None
        row = QHBoxLayout(self)
        row.setContentsMargins(0, 0, 0, 0)
        row.addWidget(QLabel("Next:"))
        self.chat_button = QPushButton("Chat with this result")
        self.chat_button.setToolTip("Talk to the tuned model, beside the base model")
        self.chat_button.clicked.connect(lambda: self.run_dir and self.chat_requested.emit(self.run_dir))
        self.export_button = QPushButton("Export…")
        self.export_button.setToolTip("Use it in Ollama, LM Studio, llama.cpp or transformers")
        self.export_button.clicked.connect(self.export)
        row.addWidget(self.chat_button)
        row.addWidget(self.export_button)
        row.addStretch(1)
        self.setVisible(False)

    def set_run(self, run_dir: str | None) -> None:
        """Offer the steps for ``run_dir`` when it has a final adapter; hide them otherwise."""
        self.run_dir = str(run_dir) if has_adapter(run_dir) else None
        self.setVisible(self.run_dir is not None)

    def export(self) -> None:
        """Open the Export step for the run."""
        if self.run_dir:
            self.dialog = open_export(self.run_dir, self)
