"""System-wide memory sampled by the GUI about once a second: RAM (psutil), NVIDIA VRAM (NVML,
when a driver is present) and the resident memory of the worker process and its children.

Every probe is guarded: no NVML or a vanished worker gives None for that value, never an error.
Memory is in bytes.
"""

from __future__ import annotations

import time
from typing import Any

import psutil
from PySide6.QtCore import QObject, QTimer, Signal


class _Nvml:
    """NVML opened once, lazily; ``used()`` is the summed used VRAM of every GPU, or None."""

    def __init__(self) -> None:
        self._handles: list[Any] | None = None
        self._pynvml: Any = None

    def _open(self) -> list[Any]:
        if self._handles is None:
            self._handles = []
            try:
                import pynvml

                pynvml.nvmlInit()
                self._pynvml = pynvml
                self._handles = [
                    pynvml.nvmlDeviceGetHandleByIndex(i) for i in range(pynvml.nvmlDeviceGetCount())
                ]
            except Exception:  # no library, no driver, no GPU
                self._handles = []
        return self._handles

    def used_total(self) -> tuple[int, int] | None:
        handles = self._open()
        if not handles:
            return None
        try:
            infos = [self._pynvml.nvmlDeviceGetMemoryInfo(h) for h in handles]
        except Exception:
            return None
        return sum(int(i.used) for i in infos), sum(int(i.total) for i in infos)


def process_tree_rss(pid: int) -> int | None:
    """Resident memory of a process and all its descendants, in bytes (None if it is gone)."""
    try:
        proc = psutil.Process(pid)
        total = proc.memory_info().rss
        for child in proc.children(recursive=True):
            try:
                total += child.memory_info().rss
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                pass
        return int(total)
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return None


class SystemSampler(QObject):
    """Emits ``sample(dict)`` every ``interval_ms`` while started.

    A sample has ``time`` (Unix seconds), ``ram_used``, ``ram_total``, ``vram_used``,
    ``vram_total`` (None without NVML) and ``worker_rss`` (None without a worker pid).
    """

    sample = Signal(dict)

    def __init__(self, parent: QObject | None = None, interval_ms: int = 1000) -> None:
        super().__init__(parent)
        self._timer = QTimer(self)
        self._timer.setInterval(interval_ms)
        self._timer.timeout.connect(self.take_sample)
        self._nvml = _Nvml()
        self._pid: int | None = None

    def set_worker_pid(self, pid: int | None) -> None:
        """The worker process whose memory to include (None: none)."""
        self._pid = pid

    def start(self) -> None:
        """Start sampling (one sample at once, then every interval)."""
        self.take_sample()
        self._timer.start()

    def stop(self) -> None:
        """Stop sampling."""
        self._timer.stop()

    def is_active(self) -> bool:
        """True while sampling."""
        return self._timer.isActive()

    def take_sample(self) -> dict[str, Any]:
        """Measure now, emit and return the sample."""
        vm = psutil.virtual_memory()
        vram = self._nvml.used_total()
        data = {
            "time": time.time(),
            "ram_used": int(vm.total - vm.available),
            "ram_total": int(vm.total),
            "vram_used": vram[0] if vram else None,
            "vram_total": vram[1] if vram else None,
            "worker_rss": process_tree_rss(self._pid) if self._pid else None,
        }
        self.sample.emit(data)
        return data
