"""Step 1, Model: the imported models with parameter count and size on disk; import a GGUF file or
an HF folder (file dialog or drag-and-drop) in a child process with a progress indicator."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QDragEnterEvent, QDropEvent
from PySide6.QtWidgets import (
    QAbstractItemView,
    QFileDialog,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QProgressBar,
    QPushButton,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from backends.config import DEFAULT_MODEL
from backends.model_store_info import default_model_installed, list_models
from backends.plan import find_model_dir
from desktop.pages import intro_label
from desktop.plan_panel import fit_badge
from desktop.state import AppState
from desktop.worker import WorkerProcess, WorkerResult

COLUMNS = ("Model", "Parameters", "Size on disk", "Fits here?", "Source")
SOURCE_COLUMN = len(COLUMNS) - 1


def format_params(n: int | None) -> str:
    """``134515008`` -> ``134.5M``."""
    if not n:
        return "-"
    if n >= 1e9:
        return f"{n / 1e9:.2f}B"
    if n >= 1e6:
        return f"{n / 1e6:.1f}M"
    return f"{n / 1e3:.1f}K"


def format_bytes(n: int | None) -> str:
    """``1536`` -> ``1.5 KB`` (powers of 1024)."""
    if n is None:
        return "-"
    size = float(n)
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} TB"


def importable(path: Path) -> bool:
    """True for a ``.gguf`` file or a folder with a ``config.json``."""
    return (path.is_file() and path.suffix.lower() == ".gguf") or (path / "config.json").is_file()


class ModelPage(QWidget):
    """Lists models and imports new ones; selecting a row chooses the model for training."""

    next_requested = Signal()

    def __init__(self, state: AppState, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.state = state
        self.setAcceptDrops(True)
        self._import: WorkerProcess | None = None
        layout = QVBoxLayout(self)
        heading = QLabel("<h2>1. Choose a model</h2>")
        layout.addWidget(heading)
        default = (
            "The default, SmolLM2-135M-Instruct, is built in and imported on first use."
            if default_model_installed()
            else "The installer leaves out the default model, SmolLM2-135M-Instruct: import its GGUF file once."
        )
        layout.addWidget(
            intro_label(
                f"The model you fine-tune. {default} Import a GGUF file or a Hugging Face model folder, "
                "or drop one on this page."
            )
        )
        self.table = QTableWidget(0, len(COLUMNS))
        self.table.setHorizontalHeaderLabels(COLUMNS)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.verticalHeader().setVisible(False)
        header = self.table.horizontalHeader()
        header.setSectionResizeMode(0, QHeaderView.ResizeMode.ResizeToContents)
        header.setSectionResizeMode(SOURCE_COLUMN, QHeaderView.ResizeMode.Stretch)
        self.table.itemSelectionChanged.connect(self._on_select)
        layout.addWidget(self.table, 1)

        buttons = QHBoxLayout()
        self.import_file_button = QPushButton("Import GGUF file…")
        self.import_file_button.clicked.connect(self._pick_file)
        self.import_folder_button = QPushButton("Import model folder…")
        self.import_folder_button.clicked.connect(self._pick_folder)
        buttons.addWidget(self.import_file_button)
        buttons.addWidget(self.import_folder_button)
        buttons.addStretch(1)
        self.next_button = QPushButton("Next: choose data →")
        self.next_button.setDefault(True)
        self.next_button.clicked.connect(self.next_requested)
        buttons.addWidget(self.next_button)
        layout.addLayout(buttons)

        self.progress = QProgressBar()
        self.progress.setRange(0, 0)  # busy indicator: an import reports phases, not fractions
        self.progress.setVisible(False)
        layout.addWidget(self.progress)
        self.status = QLabel("")
        self.status.setWordWrap(True)
        self.status.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        layout.addWidget(self.status)
        self.selected = QLabel("")
        layout.addWidget(self.selected)
        self.refresh()

    # --- listing ---
    def refresh(self) -> None:
        """Re-read the model store and show it; the chosen model's row is selected."""
        badges = {}
        rows = []
        for m in list_models():
            badges[m["name"]] = fit_badge(m.get("path"))
            rows.append(
                (m["name"], format_params(m["params"]), format_bytes(m["size"]), m.get("source") or "")
            )
        names = [r[0] for r in rows]
        if DEFAULT_MODEL not in names:
            if default_model_installed():
                rows.insert(0, (DEFAULT_MODEL, "≈135M", "-", "built in: imported on first use"))
            else:  # the installer bundle leaves the default model out: offer the import instead
                rows.insert(0, (DEFAULT_MODEL, "≈135M", "-", "not included: import its GGUF file first"))
                if not rows[1:]:
                    self.status.setText(
                        "No model yet. Import a GGUF file (e.g. SmolLM2-135M-Instruct.Q4_1.gguf) or a "
                        "Hugging Face model folder to start: the buttons below, or drop it on this page."
                    )
        current = self.state.model
        if current not in [r[0] for r in rows]:
            rows.append((current, "-", "-", "a model folder used in place"))
        self.table.blockSignals(True)
        self.table.setRowCount(len(rows))
        for i, row in enumerate(rows):
            badge, tip = badges.get(row[0]) or fit_badge(find_model_dir(row[0]))
            for j, text in enumerate((*row[:3], badge, row[3])):
                item = QTableWidgetItem(text)
                if j in (1, 2):
                    item.setTextAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
                if j == 3:
                    item.setToolTip(tip)
                self.table.setItem(i, j, item)
        self.table.blockSignals(False)
        self.select(current)

    def model_names(self) -> list[str]:
        """Names shown in the table, top to bottom."""
        return [self.table.item(i, 0).text() for i in range(self.table.rowCount())]

    def select(self, name: str) -> None:
        """Choose the model ``name`` (a row of the table)."""
        for i in range(self.table.rowCount()):
            if self.table.item(i, 0).text() == name:
                self.table.selectRow(i)
                break
        self.state.set_model(name)
        self.selected.setText(f"Selected: <b>{name}</b>")

    def _on_select(self) -> None:
        rows = self.table.selectionModel().selectedRows()
        if rows:
            name = self.table.item(rows[0].row(), 0).text()
            self.state.set_model(name)
            self.selected.setText(f"Selected: <b>{name}</b>")

    # --- importing ---
    def _pick_file(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Import a GGUF model", "", "GGUF models (*.gguf)")
        if path:
            self.import_path(path)

    def _pick_folder(self) -> None:
        path = QFileDialog.getExistingDirectory(self, "Import a Hugging Face model folder")
        if path:
            self.import_path(path)

    def is_importing(self) -> bool:
        """True while an import runs."""
        return self._import is not None and self._import.is_running()

    def import_path(self, path: str) -> None:
        """Import a GGUF file or HF folder in a child process (``tunedesk models import PATH``)."""
        if self.is_importing():
            self.status.setText("An import is already running.")
            return
        self._import = WorkerProcess(["models", "import", path], self)
        self._import.log_line.connect(lambda line: line.strip() and self.status.setText(line.strip()))
        self._import.finished.connect(self._on_import_done)
        self.progress.setVisible(True)
        self.import_file_button.setEnabled(False)
        self.import_folder_button.setEnabled(False)
        self.status.setText(f"Importing {Path(path).name}…")
        self._import.start()

    def _on_import_done(self, result: WorkerResult) -> None:
        self.progress.setVisible(False)
        self.import_file_button.setEnabled(True)
        self.import_folder_button.setEnabled(True)
        if result.ok:
            lines = [line for line in result.stdout if line.strip()]
            name = Path(lines[-1].strip()).name if lines else None
            self.status.setText(f"Imported {name}.")
            self.refresh()
            if name:
                self.select(name)
        else:
            self.status.setText(f"Import failed: {result.error_text('import process')}")

    # --- drag and drop ---
    def dragEnterEvent(self, event: QDragEnterEvent) -> None:  # noqa: N802 (Qt override)
        """Accept a dragged .gguf file or model folder."""
        urls = event.mimeData().urls()
        if urls and urls[0].isLocalFile() and importable(Path(urls[0].toLocalFile())):
            event.acceptProposedAction()

    def dropEvent(self, event: QDropEvent) -> None:  # noqa: N802 (Qt override)
        """Import the dropped file or folder."""
        urls = event.mimeData().urls()
        if urls and urls[0].isLocalFile():
            self.import_path(urls[0].toLocalFile())
            event.acceptProposedAction()
