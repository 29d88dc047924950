"""The Model page's "Find and download" tab: models already on this computer in other tools'
folders (the Hugging Face cache, LM Studio, Ollama; ``backends.model_sources.find_models``) with
their size and a fit badge from the memory plan, imported with one click; and a download from the
Hugging Face Hub by name (``tunedesk models import hf:ORG/NAME --download`` in a child process,
its progress read from the bytes arriving in the cache). No ML library is imported here.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from PySide6.QtCore import QTimer, Signal
from PySide6.QtWidgets import (
    QAbstractItemView,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QProgressBar,
    QPushButton,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from backends import model_sources
from desktop.plan_panel import BADGES, fit_badge, gb
from desktop.worker import JsonCommand, WorkerProcess, WorkerResult

COLUMNS = ("Model", "Found in", "Kind", "Size", "Fits here?")
_REPO = re.compile(r"[\w.-]+/[\w.-]+")
_HUB_URL = re.compile(r"^(?:https?://)?(?:www\.)?(?:huggingface\.co|hf\.co)/")


def repo_id(text: str) -> str | None:
    """The ``ORG/NAME`` a user typed (also a pasted hub address or ``hf:ORG/NAME``); None if it is
    not one."""
    text = _HUB_URL.sub("", text.strip()).removeprefix("hf:").strip("/")
    text = text.split("/tree/")[0].split("/blob/")[0]
    return text if _REPO.fullmatch(text) else None


def folder_bytes(folder: Path) -> int:
    """Bytes of all files under ``folder`` (0 when it does not exist); partial downloads count."""
    total = 0
    for root, _, files in os.walk(folder):
        for name in files:
            try:
                total += os.lstat(os.path.join(root, name)).st_size
            except OSError:
                pass
    return total


def describe_found(item: dict[str, Any]) -> tuple[str, str, str, str, str, str]:
    """(model, found in, kind, size, fit badge, badge tooltip) for a ``find_models`` entry."""
    if item["kind"] == "hf":
        badge, tip = fit_badge(item["path"])
    else:
        badge, tip = "-", "a GGUF file: import it to see whether it fits"
    kind = "GGUF file" if item["kind"] == "gguf" else "model folder"
    return item["ref"], item["source"], kind, gb(item.get("size")), badge, tip


class ModelFinder(QWidget):
    """Found models and the download box. ``import_requested(str)`` asks the page to import a
    reference (``hf:…``, ``lmstudio:…``, ``ollama:…``); ``downloaded(str)`` gives the store name of
    a model downloaded and imported."""

    import_requested = Signal(str)
    downloaded = Signal(str)

    def __init__(self, dtype: Any = None, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.dtype = dtype  # a callable giving the import precision (the page's choice)
        self.found: list[dict[str, Any]] = []
        self.worker: WorkerProcess | None = None
        self._cache_folder: Path | None = None
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        self.note = QLabel("")
        self.note.setWordWrap(True)
        layout.addWidget(self.note)
        self.table = QTableWidget(0, len(COLUMNS))
        self.table.setHorizontalHeaderLabels(COLUMNS)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.setTabKeyNavigation(False)  # Tab leaves the table (keyboard use)
        self.table.verticalHeader().setVisible(False)
        self.table.setAccessibleName("Models found on this computer")
        header = self.table.horizontalHeader()
        header.setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        header.setSectionResizeMode(0, QHeaderView.ResizeMode.Stretch)
        self.table.itemSelectionChanged.connect(self._update)
        self.table.doubleClicked.connect(lambda *_: self.import_selected())
        layout.addWidget(self.table, 1)
        row = QHBoxLayout()
        self.import_button = QPushButton("Import selected")
        self.import_button.setToolTip("Add it to TuneDesk's models (linked, not copied, where it can be)")
        self.import_button.clicked.connect(self.import_selected)
        self.rescan_button = QPushButton("Look again")
        self.rescan_button.clicked.connect(self.scan)
        row.addWidget(self.import_button)
        row.addWidget(self.rescan_button)
        row.addStretch(1)
        layout.addLayout(row)

        hub = QHBoxLayout()
        hub.addWidget(QLabel("Download from Hugging Face:"))
        self.repo = QLineEdit()
        self.repo.setPlaceholderText("ORG/NAME, e.g. HuggingFaceTB/SmolLM2-360M-Instruct")
        self.repo.setAccessibleName("Hugging Face model name to download")
        self.repo.returnPressed.connect(lambda: self.lookup())
        hub.addWidget(self.repo, 1)
        self.lookup_button = QPushButton("Size and fit?")
        self.lookup_button.setToolTip(
            "Ask the Hub for its download size and check whether it fits here, without downloading it"
        )
        self.lookup_button.clicked.connect(lambda: self.lookup())
        hub.addWidget(self.lookup_button)
        self.download_button = QPushButton("Download")
        self.download_button.setToolTip(
            "Needs an internet connection. Only safetensors weights, the config and the tokenizer are fetched."
        )
        self.download_button.clicked.connect(lambda: self.download())
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.clicked.connect(self.cancel)
        hub.addWidget(self.download_button)
        hub.addWidget(self.cancel_button)
        layout.addLayout(hub)
        self.info = QLabel("")  # the looked-up size and fit
        self.info.setWordWrap(True)
        layout.addWidget(self.info)
        self._lookup: JsonCommand | None = None
        self.progress = QProgressBar()
        self.progress.setRange(0, 0)
        self.progress.setVisible(False)
        layout.addWidget(self.progress)
        self.status = QLabel("")
        self.status.setWordWrap(True)
        layout.addWidget(self.status)
        self._timer = QTimer(self)
        self._timer.setInterval(500)
        self._timer.timeout.connect(self._show_progress)
        self.scan()

    # --- found models ---
    def scan(self) -> None:
        """Look through the other tools' folders again and fill the table."""
        self.found = model_sources.find_models()
        self.table.setRowCount(len(self.found))
        for i, item in enumerate(self.found):
            *cells, tip = describe_found(item)
            for j, text in enumerate(cells):
                cell = QTableWidgetItem(text)
                cell.setToolTip(tip if COLUMNS[j] == "Fits here?" else item["path"])
                self.table.setItem(i, j, cell)
        where = "the Hugging Face cache, LM Studio or Ollama"
        self.note.setText(
            f"{len(self.found)} model(s) found in {where} on this computer."
            if self.found
            else f"No model found in {where} on this computer. Download one below, or import a file on "
            "the first tab."
        )
        self._update()

    def refs(self) -> list[str]:
        """References listed, top to bottom."""
        return [item["ref"] for item in self.found]

    def import_selected(self) -> None:
        """Ask the page to import the selected model."""
        rows = self.table.selectionModel().selectedRows()
        if rows:
            self.import_requested.emit(self.found[rows[0].row()]["ref"])

    # --- download ---
    def is_downloading(self) -> bool:
        """True while a download runs."""
        return self.worker is not None and self.worker.is_running()

    def download(self, text: str | None = None) -> bool:
        """Download and import ``text`` (default: the box's) in a child process; False with the
        reason shown when it is not a model name or a download already runs."""
        repo = repo_id(self.repo.text() if text is None else text)
        if repo is None:
            self.status.setText(
                "Type the model's name as ORG/NAME, e.g. HuggingFaceTB/SmolLM2-360M-Instruct."
            )
            return False
        if self.is_downloading():
            return False
        args = ["models", "import", f"hf:{repo}", "--download"]
        if self.dtype is not None:
            args += ["--dtype", str(self.dtype())]
        self._cache_folder = model_sources.hf_cache_dir() / f"models--{repo.replace('/', '--')}"
        self._start_bytes = folder_bytes(self._cache_folder)
        self.worker = WorkerProcess(args, self)
        self.worker.finished.connect(self._on_done)
        self.status.setText(f"Downloading {repo}…")
        self.progress.setVisible(True)
        self._timer.start()
        self.worker.start()
        self._update()
        return True

    def lookup(self, text: str | None = None) -> bool:
        """Ask ``tunedesk models info hf:ORG/NAME --json`` (a child process; only the file list and
        config.json are fetched) for the download size and the memory plan's verdict; False when
        ``text`` (default: the box's) is not a model name."""
        repo = repo_id(self.repo.text() if text is None else text)
        if repo is None:
            self.info.setText("Type the model's name as ORG/NAME, e.g. HuggingFaceTB/SmolLM2-360M-Instruct.")
            return False
        if self._lookup is not None and self._lookup.is_running():
            self._lookup.cancel()
        self._lookup = JsonCommand(["models", "info", f"hf:{repo}", "--json"], self)
        self._lookup.done.connect(self._on_info)
        self.info.setText(f"Looking up {repo}…")
        self._lookup.start()
        return True

    def is_looking_up(self) -> bool:
        """True while a size-and-fit lookup runs."""
        return self._lookup is not None and self._lookup.is_running()

    def _on_info(self, answer: object, error: str) -> None:
        if not isinstance(answer, dict):
            self.info.setText(f"Could not look it up: {error}")
            return
        p = answer["plan"]
        need = int(p["peak"]) + int(p.get("reserve") or 0)
        self.info.setText(
            f"{answer['ref'].removeprefix('hf:')}: {gb(answer['download_bytes'])} to download. "
            f"{BADGES[p['verdict']]}: training with the default settings needs about {gb(need)} "
            f"of the {gb(p.get('available'))} free here."
        )

    def cancel(self) -> None:
        """Stop the download (what arrived stays in the cache; a new download continues it)."""
        if self.is_downloading():
            self.worker.stop()

    def _show_progress(self) -> None:
        if self._cache_folder is not None and self.is_downloading():
            got = max(folder_bytes(self._cache_folder) - self._start_bytes, 0)
            self.status.setText(f"{self.status.text().split('…')[0]}… {gb(got)} so far")

    def _on_done(self, result: WorkerResult) -> None:
        self._timer.stop()
        self.progress.setVisible(False)
        if result.ok:
            lines = [line.strip() for line in result.stdout if line.strip()]
            name = Path(lines[-1]).name if lines else ""
            self.status.setText(f"Downloaded and imported {name}.")
            self.scan()
            self.downloaded.emit(name)
        elif result.stop_requested:
            self.status.setText("Download cancelled; starting it again continues where it stopped.")
        else:
            self.status.setText(f"Download failed: {result.error_text('download')}")
        self._update()

    def _update(self) -> None:
        busy = self.is_downloading()
        self.download_button.setEnabled(not busy)
        self.cancel_button.setEnabled(busy)
        self.import_button.setEnabled(bool(self.table.selectionModel().selectedRows()))
