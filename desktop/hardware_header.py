"""The always-visible header: device, memory, and the backend TuneDesk will train with, and why.

Two probes, both off the GUI thread: ``hardware.detect(probe_frameworks=False)`` in a thread (RAM,
NVIDIA GPUs through NVML: instant), then ``tunedesk hardware --json`` as a child process, which
also imports torch / MLX to check CUDA, MPS and Metal (the GUI process never imports them) and
gives the final backend and reason, e.g. "CPU only - 24 GB RAM - PyTorch (slow: no GPU found)".
"""

from __future__ import annotations

from typing import Any

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QFont
from PySide6.QtWidgets import QFrame, QHBoxLayout, QLabel, QVBoxLayout, QWidget

from backends import hardware
from desktop.tasks import run_in_thread
from desktop.worker import JsonCommand

GB = hardware.GB


def quick_line(info: dict[str, Any]) -> str:
    """Device and memory from a probe without frameworks, before the backend is known."""
    if info.get("gpus"):
        g = info["gpus"][0]
        return f"{g['name']} - {g['memory_total'] / GB:.0f} GB VRAM - checking backend…"
    if info.get("apple_silicon"):
        return f"Apple silicon - {info['ram_total'] / GB:.0f} GB unified memory - checking backend…"
    return f"CPU only - {info['ram_total'] / GB:.0f} GB RAM - checking backend…"


class HardwareHeader(QFrame):
    """Shows ``hardware.summary_line`` and the reason; ``info`` holds the latest probe result.

    ``probe_child``: also run ``tunedesk hardware --json`` for the framework-level answer.
    ``ready(dict)`` fires with the final info.
    """

    ready = Signal(dict)

    def __init__(self, parent: QWidget | None = None, *, probe_child: bool = True) -> None:
        super().__init__(parent)
        self.setObjectName("hardwareHeader")
        self.setFrameShape(QFrame.Shape.StyledPanel)
        self.info: dict[str, Any] | None = None
        self.final = False
        layout = QHBoxLayout(self)
        layout.setContentsMargins(12, 6, 12, 6)
        title = QLabel("TuneDesk")
        font = QFont(title.font())
        font.setBold(True)
        font.setPointSizeF(font.pointSizeF() * 1.3)
        title.setFont(font)
        layout.addWidget(title)
        text = QVBoxLayout()
        text.setSpacing(0)
        self.summary = QLabel("Checking this machine…")
        bold = QFont(self.summary.font())
        bold.setBold(True)
        self.summary.setFont(bold)
        self.summary.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.reason = QLabel("")
        self.reason.setWordWrap(True)
        self.reason.setEnabled(False)  # the palette's secondary text colour
        text.addWidget(self.summary)
        text.addWidget(self.reason)
        layout.addSpacing(16)
        layout.addLayout(text, 1)
        self._probe_child = probe_child
        self._command: JsonCommand | None = None
        run_in_thread(lambda: hardware.detect(probe_frameworks=False), self._on_quick, self)

    def _on_quick(self, info: dict[str, Any] | None, error: BaseException | None) -> None:
        if self.final:
            return
        if info is None:
            self.summary.setText("Hardware unknown")
            self.reason.setText(f"The hardware probe failed: {error}")
        else:
            self.info = info
            self.summary.setText(quick_line(info) if self._probe_child else hardware.summary_line(info))
            self.reason.setText(
                "Checking which training backend works here…" if self._probe_child else info["reason"]
            )
        if self._probe_child:
            self._command = JsonCommand(["hardware", "--json"], self)
            self._command.done.connect(self._on_full)
            self._command.start()
        elif info is not None:
            self.final = True
            self.ready.emit(info)

    def _on_full(self, info: dict[str, Any] | None, error: str) -> None:
        self.final = True
        if info is None:
            self.reason.setText(
                f"Could not check the training backend: {error.splitlines()[0] if error else ''}"
            )
            if self.info is not None:
                self.summary.setText(hardware.summary_line(self.info))
            return
        self.info = info
        self.summary.setText(hardware.summary_line(info))
        self.reason.setText(f"Backend: {info['backend']} on {info['device']}, because: {info['reason']}")
        self.ready.emit(info)

    def text(self) -> str:
        """The header's text (summary and reason)."""
        return f"{self.summary.text()}\n{self.reason.text()}"
