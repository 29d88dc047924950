"""The Train page's "GPUs" row: how many GPUs a run trains on, shown only where there are several.

It takes the hardware report the window's header probes (``HardwareHeader.ready``: NVML, no ML
library in the GUI process), lists each GPU with its memory in everyday words, and offers 1..N processes, one per GPU (``tunedesk train --nproc N``: DDP through torchrun,
``training.batch_size`` per GPU). With one GPU or none the row stays hidden and runs start as before.
"""

from __future__ import annotations

from typing import Any

from PySide6.QtCore import Signal
from PySide6.QtWidgets import QHBoxLayout, QLabel, QSpinBox, QVBoxLayout, QWidget

from desktop.plan_panel import gb


def gpu_lines(gpus: list[dict[str, Any]]) -> list[str]:
    """One line per GPU: ``GPU 0: NVIDIA A100 (80.0 GB, 79.2 GB free)``."""
    return [
        f"GPU {g.get('index', i)}: {g.get('name', '?')} ({gb(g.get('memory_total'))}, "
        f"{gb(g.get('memory_free'))} free)"
        for i, g in enumerate(gpus)
    ]


class GpuChoice(QWidget):
    """How many GPUs to train on (``count()``, 1 unless the user picks more) and each GPU's memory,
    from the hardware reports given to ``set_report``. ``offered(bool)``: emitted with each report,
    True when the row is shown (more than one GPU)."""

    offered = Signal(bool)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._offered = False
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        row = QHBoxLayout()
        self.spin = QSpinBox()
        self.spin.setRange(1, 1)
        self.spin.setToolTip(
            "Processes, one per GPU (DDP: each GPU holds the model and trains on its share of every "
            "batch). The batch size in the settings is per GPU."
        )
        row.addWidget(self.spin)
        row.addWidget(QLabel("of the GPUs below"), 1)
        layout.addLayout(row)
        self.memory = QLabel()
        self.memory.setWordWrap(True)
        self.memory.setEnabled(False)
        layout.addWidget(self.memory)
        self.setVisible(False)

    def set_report(self, info: dict[str, Any] | None) -> None:
        """Show the GPUs of a hardware report (``tunedesk hardware --json``'s shape); the row is
        visible only with more than one GPU, and offers all of them by default."""
        gpus = list((info or {}).get("gpus") or [])
        self.memory.setText("\n".join(gpu_lines(gpus)))
        self.spin.setRange(1, max(1, len(gpus)))
        self.spin.setValue(max(1, len(gpus)))
        self._offered = len(gpus) > 1
        self.setVisible(self._offered)
        self.offered.emit(self._offered)

    def count(self) -> int:
        """GPUs (processes) the next run uses: 1 unless several are offered and chosen."""
        return int(self.spin.value()) if self._offered else 1

    def launch_args(self) -> list[str]:
        """``["--nproc", "N"]`` for N > 1, else []."""
        n = self.count()
        return ["--nproc", str(n)] if n > 1 else []
