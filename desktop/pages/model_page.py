"""Step 1, Model: the imported models (parameters, size on disk, source, architecture, precision,
context length, chat template); import a GGUF file (in the chosen precision) or an HF folder (file
dialog or drag-and-drop) in a child process with a progress bar; remove a model after a confirmation."""

from __future__ import annotations

import re
from pathlib import Path

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QDragEnterEvent, QDropEvent
from PySide6.QtWidgets import (
    QAbstractItemView,
    QComboBox,
    QFileDialog,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QMessageBox,
    QProgressBar,
    QPushButton,
    QTableWidget,
    QTableWidgetItem,
    QTabWidget,
    QVBoxLayout,
    QWidget,
)

from backends.config import DEFAULT_MODEL
from backends.model_shape import find_model_dir
from backends.model_store_info import (
    DEFAULT_DTYPE,
    default_model_installed,
    list_models,
)
from desktop.model_finder import ModelFinder
from desktop.model_words import format_bytes, format_params, size_note
from desktop.pages import intro_label
from desktop.plan_panel import fit_badge
from desktop.state import AppState
from desktop.worker import WorkerProcess, WorkerResult

COLUMNS = (
    "Model",
    "Parameters",
    "Size on disk",
    "Source",
    "Architecture",
    "Precision",
    "Context",
    "Chat template",
    "Fits here?",  # the memory plan's verdict for default settings (desktop.plan_panel.fit_badge)
)
FIT_COLUMN = len(COLUMNS) - 1
# Import precision of a GGUF file (`models import --dtype`), in everyday words beside the term.
PRECISIONS = (
    ("bf16", "bf16 (recommended)", "half the size of fp32 and trains as well: 2 bytes per weight"),
    ("f16", "f16", "half size too, for older GPUs without bf16: 2 bytes per weight"),
    ("fp32", "fp32 (full size)", "full precision, twice the disk and memory: 4 bytes per weight"),
)
_SIZE_WORDS = {"bf16": "half size", "f16": "half size", "fp32": "full size"}
_PROGRESS = re.compile(r"(\d{1,3})% \(")


def describe_row(m: dict) -> tuple[str, ...]:
    """One table row, in everyday words, for a ``list_models`` entry."""
    size = format_bytes(m.get("own_size"))
    if m.get("placed") in ("hardlink", "symlink"):
        size = f"{format_bytes(m.get('size'))} (linked, {size} own)"
    precision = m.get("precision")
    words = _SIZE_WORDS.get(precision or "")
    context = m.get("context_length")
    architecture = m.get("architecture") or "-"
    return (
        m["name"],
        format_params(m.get("params")),
        size,
        Path(m["source"]).name if m.get("source") else "",
        architecture.removesuffix("ForCausalLM"),  # the model family: Llama, Qwen2, Gemma3...
        f"{precision} ({words})" if words else (precision or "-"),
        f"{context:,}" if context else "-",
        "yes" if m.get("chat_template") else "none",
    )


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
        self._import: WorkerProcess | None = None  # the running import or removal
        self._job = ""
        self._listed: dict[str, dict] = {}
        self._import_note = ""  # what the import stores, in sizes (size_note)
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
                "or drop one on this page. A GGUF file is compressed: the import unpacks it so it can be "
                "trained, which takes more disk space (the page says how much)."
            )
        )
        self.table = QTableWidget(0, len(COLUMNS))
        self.table.setHorizontalHeaderLabels(COLUMNS)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.verticalHeader().setVisible(False)
        header = self.table.horizontalHeader()
        header.setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        header.setSectionResizeMode(COLUMNS.index("Source"), QHeaderView.ResizeMode.Stretch)
        header.setSectionResizeMode(0, QHeaderView.ResizeMode.Interactive)  # long names elide
        self.table.setColumnWidth(0, 170)
        self.table.setTextElideMode(Qt.TextElideMode.ElideMiddle)
        self.table.setWordWrap(False)
        # Tab moves on to the buttons (arrow keys move between rows): never trapped in the table.
        self.table.setTabKeyNavigation(False)
        self.table.setAccessibleName("Models on this computer")
        tips = {
            "Architecture": "The model family (its transformers class, e.g. LlamaForCausalLM)",
            "Precision": "How the weights are stored: bf16/f16 take 2 bytes per weight, fp32 takes 4",
            "Context": "The longest text the model was built for, in tokens",
            "Chat template": "Whether the model knows a chat format; without one, training uses ChatML",
            "Size on disk": "Linked models share their files with where they came from",
        }
        for i, column in enumerate(COLUMNS):
            if column in tips:
                self.table.horizontalHeaderItem(i).setToolTip(tips[column])
        self.table.itemSelectionChanged.connect(self._on_select)
        self.finder = ModelFinder(self.import_dtype)  # found in other tools' folders; downloads
        self.finder.import_requested.connect(self._import_found)
        self.finder.downloaded.connect(self._on_downloaded)
        self.tabs = QTabWidget()
        self.tabs.addTab(self.table, "Your models")
        self.tabs.addTab(self.finder, "Find and download")
        self.tabs.tabBar().setAccessibleName("Your models, or find and download")
        layout.addWidget(self.tabs, 1)

        buttons = QHBoxLayout()
        self.import_file_button = QPushButton("Import GGUF file…")
        self.import_file_button.clicked.connect(self._pick_file)
        self.import_folder_button = QPushButton("Import model folder…")
        self.import_folder_button.clicked.connect(self._pick_folder)
        self.precision = QComboBox()
        for i, (key, label, words) in enumerate(PRECISIONS):
            self.precision.addItem(label, key)
            self.precision.setItemData(i, words, Qt.ItemDataRole.ToolTipRole)
        self.precision.setCurrentIndex([p[0] for p in PRECISIONS].index(DEFAULT_DTYPE))
        self.precision.setToolTip("Precision a GGUF file's weights are stored in after the import")
        self.remove_button = QPushButton("Remove…")
        self.remove_button.setToolTip("Delete the selected model from the model store")
        self.remove_button.clicked.connect(self._confirm_remove)
        buttons.addWidget(self.import_file_button)
        buttons.addWidget(QLabel("as"))
        buttons.addWidget(self.precision)
        buttons.addWidget(self.import_folder_button)
        buttons.addWidget(self.remove_button)
        buttons.addStretch(1)
        self.next_button = QPushButton("Next: choose data →")
        self.next_button.setDefault(True)
        self.next_button.clicked.connect(self.next_requested)
        buttons.addWidget(self.next_button)
        layout.addLayout(buttons)

        self.progress = QProgressBar()
        self.progress.setRange(0, 0)  # busy until the import reports a percentage
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
        self._listed = {m["name"]: m for m in list_models()}
        rows = [describe_row(m) for m in self._listed.values()]
        names = [r[0] for r in rows]
        if DEFAULT_MODEL not in names:
            if default_model_installed():
                rows.insert(
                    0,
                    (DEFAULT_MODEL, "≈135M", "-", "built in: imported on first use")
                    + ("Llama", "bf16 (half size)", "8,192", "yes"),
                )
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
        rows = [tuple(r) + ("",) * (len(COLUMNS) - len(r)) for r in rows]
        self.table.blockSignals(True)
        self.table.setRowCount(len(rows))
        for i, row in enumerate(rows):
            for j, text in enumerate(row):
                item = QTableWidgetItem(text)
                listed = self._listed.get(row[0], {})
                item.setToolTip(str(listed.get("source") or text) if COLUMNS[j] == "Source" else text)
                if j in (1, 2):
                    item.setTextAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
                self.table.setItem(i, j, item)
            badge, tip = fit_badge(find_model_dir(row[0]))
            badge_item = QTableWidgetItem(badge)
            badge_item.setToolTip(tip)
            self.table.setItem(i, FIT_COLUMN, badge_item)
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
        self._update_remove()

    def _update_remove(self) -> None:
        self.remove_button.setEnabled(self.state.model in self._listed and not self.is_busy())

    def _on_select(self) -> None:
        rows = self.table.selectionModel().selectedRows()
        if rows:
            name = self.table.item(rows[0].row(), 0).text()
            self.state.set_model(name)
            self.selected.setText(f"Selected: <b>{name}</b>")
        self._update_remove()

    def _import_found(self, ref: str) -> None:
        self.tabs.setCurrentIndex(0)
        self.import_path(ref)

    def _on_downloaded(self, name: str) -> None:
        self.refresh()
        if name:
            self.select(name)
            self.tabs.setCurrentIndex(0)

    # --- removing ---
    def _confirm_remove(self) -> None:
        name = self.state.model
        m = self._listed.get(name)
        if m is None or self.is_busy():
            return
        linked = (
            " Linked files stay where they came from." if m.get("placed") in ("hardlink", "symlink") else ""
        )
        answer = QMessageBox.question(
            self,
            "Remove model",
            f"Remove {name} from the model store? This frees {format_bytes(m.get('own_size'))} on disk.{linked}",
            QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.No,
            QMessageBox.StandardButton.No,
        )
        if answer == QMessageBox.StandardButton.Yes:
            self.remove(name)

    def remove(self, name: str) -> None:
        """Remove ``name`` from the store in a child process (``tunedesk models remove NAME --yes``)."""
        self._start(["models", "remove", name, "--yes"], f"Removing {name}…", self._on_remove_done)

    def _on_remove_done(self, result: WorkerResult) -> None:
        self._end()
        if result.ok:
            lines = [line.strip() for line in result.stdout if line.strip()]
            self.status.setText(lines[-1] if lines else "Removed.")
            if self.state.model not in [m["name"] for m in list_models()]:
                self.state.set_model(DEFAULT_MODEL)
            self.refresh()
        else:
            self.status.setText(f"Remove failed: {result.error_text('remove process')}")

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
        return self._import is not None and self._import.is_running() and self._job == "import"

    def is_busy(self) -> bool:
        """True while an import or a removal runs."""
        return self._import is not None and self._import.is_running()

    def import_dtype(self) -> str:
        """The chosen import precision (``bf16`` | ``f16`` | ``fp32``)."""
        return str(self.precision.currentData())

    def import_path(self, path: str) -> None:
        """Import a GGUF file or HF folder in a child process
        (``tunedesk models import PATH --dtype D``)."""
        args = ["models", "import", path, "--dtype", self.import_dtype()]
        self._import_note = size_note(path, self.import_dtype())
        message = f"Importing {Path(path).name}… {self._import_note}".strip()
        self._start(args, message, self._on_import_done, job="import")

    def _start(self, args: list[str], message: str, done: object, job: str = "remove") -> None:
        if self.is_busy():
            self.status.setText("An import or removal is already running.")
            return
        self._job = job
        self._import = WorkerProcess(args, self)
        self._import.log_line.connect(self._on_log_line)
        self._import.finished.connect(done)
        self.progress.setRange(0, 0)
        self.progress.setVisible(True)
        for button in (self.import_file_button, self.import_folder_button, self.remove_button):
            button.setEnabled(False)
        self.status.setText(message)
        self._import.start()

    def _on_log_line(self, line: str) -> None:
        line = line.strip()
        if not line:
            return
        match = _PROGRESS.search(line)
        if match:  # "Converting tensors to bf16: 45% (120/272)": unpacking (dequantising) the weights
            self.progress.setRange(0, 100)
            self.progress.setValue(int(match.group(1)))
            line = f"Unpacking the model for training: {match.group(1)}%. {self._import_note}".strip()
        self.status.setText(line)

    def _end(self) -> None:
        self.progress.setVisible(False)
        self.import_file_button.setEnabled(True)
        self.import_folder_button.setEnabled(True)
        self._job = ""
        self._update_remove()

    def _on_import_done(self, result: WorkerResult) -> None:
        self._end()
        if result.ok:
            lines = [line for line in result.stdout if line.strip()]
            name = Path(lines[-1].strip()).name if lines else None
            self.status.setText(f"Imported {name}. {self._import_note}".strip())
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
