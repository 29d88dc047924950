"""Export a run for other tools: pick a format (and a quantisation for GGUF), see the size to expect,
run ``tunedesk export RUN_DIR --format F [--quant Q] --out DIR --json`` as a child process with a
progress bar from its ``export_progress`` events and Cancel, then show how to run the result in
Ollama, LM Studio and llama.cpp (or transformers / mlx-lm) with commands to copy.

The command writes into a temporary folder and renames it at the end, so Cancel (SIGTERM to the
child) leaves no half-written export; the dialog checks and says so.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from PySide6.QtCore import Qt, QTimer
from PySide6.QtGui import QCloseEvent, QFontDatabase, QGuiApplication
from PySide6.QtWidgets import (
    QComboBox,
    QDialog,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPlainTextEdit,
    QProgressBar,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from backends.errors import UserInputError
from backends.jobs.export.howto import run_commands
from backends.jobs.export.source import (
    BITS_PER_WEIGHT,
    GGUF_QUANTS,
    ExportSource,
    default_out,
    estimate_bytes,
    resolve_quant,
    resolve_source,
    side_files_bytes,
)
from desktop.pages.model_page import format_bytes
from desktop.worker import WorkerProcess, WorkerResult

KILL_AFTER_MS = 15_000  # a cancelled export that has not ended by then is killed
GGUF_FORMATS = ("gguf", "ollama")
# The formats and quantisations in everyday words beside the field's terms.
FORMAT_WORDS = {
    "gguf": "GGUF: one file for llama.cpp and LM Studio",
    "ollama": "Ollama: a GGUF plus a Modelfile (chat template, stop words)",
    "merged": "Merged model: Hugging Face safetensors, for transformers and vLLM",
    "mlx": "MLX: a fused model folder for mlx-lm on Apple silicon",
}
QUANT_WORDS = {
    "q4_k_m": "smallest that stays good; the usual pick for 1B parameters and up",
    "q5_k_m": "a little larger, a little closer to the original",
    "q6_k": "larger, very close to the original",
    "q8_0": "about half of 16-bit, almost no loss; the safe pick for small models",
    "f16": "no quantisation (16-bit floats), largest",
    "bf16": "no quantisation (bfloat16), largest",
}


class ExportDialog(QDialog):
    """The Export step for one run folder. ``worker`` is the running child (None when idle);
    ``result`` the ``export_finished`` event once done."""

    def __init__(self, run_dir: str | Path, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.run_dir = Path(run_dir)
        self.worker: WorkerProcess | None = None
        self.result: dict[str, Any] | None = None
        self._out: Path | None = None
        self._fresh: Path | None = None  # the export just finished, until the choices change
        self.setWindowTitle(f"Export {self.run_dir.name}")
        self.setObjectName("exportDialog")
        layout = QVBoxLayout(self)
        layout.addWidget(QLabel(f"<h3>Use {self.run_dir.name} outside TuneDesk</h3>"))
        try:
            self.source: ExportSource | None = resolve_source(self.run_dir)
            self.model_error = ""
        except UserInputError as exc:
            self.source, self.model_error = None, str(exc)

        form = QFormLayout()
        self.format_box = QComboBox()
        for key, words in FORMAT_WORDS.items():
            self.format_box.addItem(words, key)
        form.addRow("Format (which program will run it)", self.format_box)
        self.quant_box = QComboBox()
        for key in ("q4_k_m", "q5_k_m", "q6_k", "q8_0", "f16", "bf16"):
            assert key in GGUF_QUANTS
            self.quant_box.addItem(
                f"{key.upper()}: {QUANT_WORDS[key]} ({BITS_PER_WEIGHT[key]:g} bits per weight)", key
            )
        if self.source is not None:  # the export command's default for this model
            self.quant_box.setCurrentIndex(self.quant_box.findData(resolve_quant("gguf", None, self.source)))
        form.addRow("Quantisation (smaller file, slightly lower quality)", self.quant_box)
        out_row = QHBoxLayout()
        self.out_edit = QLineEdit()
        browse = QPushButton("Browse…")
        browse.clicked.connect(self._browse)
        out_row.addWidget(self.out_edit, 1)
        out_row.addWidget(browse)
        form.addRow("Save to (a new folder)", out_row)
        layout.addLayout(form)
        self.estimate_label = QLabel()
        self.estimate_label.setWordWrap(True)
        layout.addWidget(self.estimate_label)

        self.progress = QProgressBar()
        self.progress.setVisible(False)
        layout.addWidget(self.progress)
        self.status = QLabel()
        self.status.setWordWrap(True)
        self.status.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        layout.addWidget(self.status)
        self.howto = QWidget()  # replaced by _show_howto
        self.howto.setVisible(False)
        self.howto_slot = QVBoxLayout()
        self.howto_slot.addWidget(self.howto)
        layout.addLayout(self.howto_slot, 1)

        buttons = QHBoxLayout()
        buttons.addStretch(1)
        self.start_button = QPushButton("Export")
        self.start_button.setDefault(True)
        self.start_button.clicked.connect(self.start)
        self.cancel_button = QPushButton("Close")
        self.cancel_button.clicked.connect(self.cancel)
        buttons.addWidget(self.start_button)
        buttons.addWidget(self.cancel_button)
        layout.addLayout(buttons)

        self.format_box.currentIndexChanged.connect(self._on_choice)
        self.quant_box.currentIndexChanged.connect(self._on_choice)
        self.out_edit.textEdited.connect(self._on_out_edited)
        self._on_choice()
        self.resize(720, 460)

    # --- choices ---
    def fmt(self) -> str:
        """The chosen format (``gguf``, ``ollama``, ``merged``, ``mlx``)."""
        return str(self.format_box.currentData())

    def quant(self) -> str | None:
        """The chosen quantisation for GGUF formats, else None."""
        return str(self.quant_box.currentData()) if self.fmt() in GGUF_FORMATS else None

    def set_choice(self, fmt: str, quant: str | None = None) -> None:
        """Choose a format (and quantisation) as a user would."""
        self.format_box.setCurrentIndex(self.format_box.findData(fmt))
        if quant is not None:
            self.quant_box.setCurrentIndex(self.quant_box.findData(quant))

    def _resolved_quant(self) -> str:
        """The quantisation (GGUF) or precision (merged, MLX: the base model's) the command will use."""
        return resolve_quant(self.fmt(), self.quant(), self.source) if self.source else str(self.quant())

    def _default_out(self) -> Path:
        if self.source is None:
            return self.run_dir / "exports" / self.fmt()
        return default_out(self.source, self.fmt(), self._resolved_quant())

    def _on_choice(self) -> None:
        self._fresh = None
        self.quant_box.setEnabled(self.fmt() in GGUF_FORMATS)
        self.out_edit.setText(str(self._default_out()))
        self._update_estimate()

    def _on_out_edited(self, *_: object) -> None:
        self._fresh = None
        self._update_estimate()

    def _browse(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Export into", str(self.run_dir))
        if folder:
            self.out_edit.setText(str(Path(folder) / self._default_out().name))
            self._on_out_edited()

    def out_dir(self) -> Path:
        """The output folder the command will create."""
        return Path(self.out_edit.text().strip() or self._default_out()).expanduser()

    def _update_estimate(self) -> None:
        if self.source is None:
            self.estimate_label.setText(f"Cannot export: {self.model_error}")
            self.start_button.setEnabled(False)
            return
        quant = self._resolved_quant()
        size, needed = estimate_bytes(
            self.fmt(), quant, self.source.params, side_files_bytes(self.source.base_dir)
        )
        text = (
            f"Expected size: about <b>{format_bytes(size)}</b> ({self.source.params / 1e6:.0f}M weights "
            f"at {BITS_PER_WEIGHT[quant]:g} bits{'' if self.quant() else f', {quant} as the base model'})."
        )
        out = self.out_dir()
        probe = next((p for p in (out, *out.parents) if p.exists()), None)
        free = shutil.disk_usage(probe).free if probe is not None else None
        if free is not None:
            text += f" Needs {format_bytes(needed)} free while writing; {format_bytes(free)} free there."
        problems = []
        if out.exists() and self._fresh != out:  # (the folder just written is no problem)
            problems.append(f"{out} already exists: choose another folder.")
        if free is not None and free < needed:
            problems.append("Not enough free space there: choose another folder or free some space.")
        for problem in problems:
            text += f"<br><span style='color:#d9534f'>{problem}</span>"
        self.estimate_label.setText(text)
        self.start_button.setEnabled(not out.exists() and not problems and not self.is_running())

    # --- running ---
    def command(self) -> list[str]:
        """The ``tunedesk`` arguments of the chosen export."""
        args = ["export", str(self.run_dir), "--format", self.fmt()]
        if self.quant():
            args += ["--quant", str(self.quant())]
        return [*args, "--out", str(self.out_dir()), "--json"]

    def is_running(self) -> bool:
        """True while the export child runs."""
        return self.worker is not None and self.worker.is_running()

    def start(self) -> bool:
        """Start the export (False when one runs or the choices cannot be exported)."""
        if self.is_running() or self.source is None or self.out_dir().exists():
            return False
        self.result = None
        self._out = self.out_dir()
        self._clear_howto()
        self.worker = WorkerProcess(self.command(), self)
        self.worker.event.connect(self._on_event)
        self.worker.finished.connect(self._on_finished)
        self.progress.setRange(0, 0)  # busy until the first progress event
        self.progress.setFormat("Starting…")
        self.progress.setVisible(True)
        self.status.setText(f"$ tunedesk {' '.join(self.command())}")
        for w in (self.format_box, self.quant_box, self.out_edit, self.start_button):
            w.setEnabled(False)
        self.cancel_button.setText("Cancel")
        self.worker.start()
        return True

    def cancel(self) -> None:
        """While exporting: stop the child (it removes its temporary folder); otherwise close."""
        if not self.is_running() or self.worker is None:
            self.reject()
            return
        self.worker.stop()
        self.status.setText("Cancelling…")
        self.cancel_button.setEnabled(False)
        QTimer.singleShot(KILL_AFTER_MS, self.worker.kill)

    def _on_event(self, event: dict[str, Any]) -> None:
        name = event.get("event")
        if name == "export_progress":
            total, done = int(event.get("total") or 0), int(event.get("done") or 0)
            if total > 0:
                self.progress.setRange(0, total)
                self.progress.setValue(min(done, total))
            self.progress.setFormat(f"{event.get('stage', '')}: %p%")
        elif name == "export_finished":
            self.result = event

    def _on_finished(self, result: WorkerResult) -> None:
        for w in (self.format_box, self.out_edit):
            w.setEnabled(True)
        self.quant_box.setEnabled(self.fmt() in GGUF_FORMATS)
        self.cancel_button.setEnabled(True)
        self.cancel_button.setText("Close")
        if result.stop_requested:
            self.progress.setVisible(False)
            left = self._out is not None and self._out.exists()
            self.status.setText(
                f"Cancelled. {self._out} was left behind: delete it by hand."
                if left
                else "Cancelled. Nothing was written."
            )
        elif result.ok and self.result is not None:
            self.progress.setRange(0, 1)
            self.progress.setValue(1)
            self.progress.setFormat("Done")
            size = format_bytes(int(self.result.get("bytes") or 0))
            self.status.setText(f"Exported to {self.result.get('path')} ({size}).")
            self._fresh = self._out
            self._show_howto()
        else:
            self.progress.setVisible(False)
            text = result.error_text("export") or "The export ended without saying where it wrote."
            self.status.setText(f"<span style='color:#d9534f'>{text}</span>")
        self._update_estimate()

    # --- afterwards ---
    def _clear_howto(self) -> None:
        old, self.howto = self.howto, QWidget()
        self.howto.setVisible(False)
        self.howto_slot.replaceWidget(old, self.howto)
        old.deleteLater()

    def _show_howto(self) -> None:
        self._clear_howto()
        box = QVBoxLayout(self.howto)
        box.setContentsMargins(0, 0, 0, 0)
        box.addWidget(QLabel("<b>How to run it</b>"))
        mono = QFontDatabase.systemFont(QFontDatabase.SystemFont.FixedFont)
        for tool, commands in self.howto_texts().items():
            row = QHBoxLayout()
            label = QLabel(tool)
            label.setMinimumWidth(90)
            text = QPlainTextEdit(commands)
            text.setReadOnly(True)
            text.setFont(mono)
            text.setFixedHeight(12 + text.fontMetrics().lineSpacing() * (commands.count("\n") + 2))
            copy = QPushButton("Copy")
            copy.setToolTip(f"Copy the {tool} commands")
            copy.clicked.connect(lambda *_, c=commands: QGuiApplication.clipboard().setText(c))
            row.addWidget(label)
            row.addWidget(text, 1)
            row.addWidget(copy)
            box.addLayout(row)
        box.addStretch(1)
        self.howto.setVisible(True)

    def howto_texts(self) -> dict[str, str]:
        """Tool -> commands to run the finished export (empty before; ``run_commands``)."""
        return dict(run_commands(self.result)) if self.result else {}

    def closeEvent(self, event: QCloseEvent) -> None:  # noqa: N802 (Qt override)
        """Closing the window while exporting cancels the export first."""
        if self.is_running():
            event.ignore()
            self.cancel()
            return
        super().closeEvent(event)

    def reject(self) -> None:
        """Escape or Close: cancel a running export instead of leaving it behind."""
        if self.is_running():
            self.cancel()
            return
        super().reject()
