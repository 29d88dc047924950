"""The measured peak memory of a training run (``run_finished.memory_peak``), in bytes.

What is measured, by backend and device (the same quantity ``backends.plan`` predicts):
- torch on CUDA: ``torch.cuda.max_memory_allocated()`` (the engine's ``device_peak``);
- MLX: ``mx.get_peak_memory()`` (the engine's ``device_peak``; unified memory on Apple silicon);
- torch on the CPU (and MPS): the process's peak resident set size. On Linux the kernel's
  high-water mark (``VmHWM``) is reset once the model is loaded (``/proc/self/clear_refs``, value 5,
  Linux >= 4.0), after freed loader memory is handed back (glibc ``malloc_trim``), so the figure is
  the training phase's peak, not the load's transient one; elsewhere it is the whole process's peak
  (``getrusage``'s ``ru_maxrss``, or psutil's ``peak_wset`` on Windows).
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import sys
from typing import Any

import psutil


def release_freed_memory() -> None:
    """Collect garbage and hand freed heap memory back to the OS (glibc only; a no-op elsewhere)."""
    gc.collect()
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL("libc.so.6").malloc_trim(0)


def reset_peak_rss() -> bool:
    """Start a new peak-RSS window (Linux: clear ``VmHWM``); False where the OS cannot."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def peak_rss_bytes() -> int:
    """The process's peak resident set size in bytes since start or the last ``reset_peak_rss``."""
    if sys.platform.startswith("linux"):
        try:
            with open("/proc/self/status", encoding="ascii") as fh:
                for line in fh:
                    if line.startswith("VmHWM:"):
                        return int(line.split()[1]) * 1024
        except (OSError, ValueError, IndexError):
            pass
    info: Any = psutil.Process().memory_info()
    if hasattr(info, "peak_wset"):  # Windows
        return int(info.peak_wset)
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak) if sys.platform == "darwin" else int(peak) * 1024


def measured_peak(engine_memory: dict[str, int | None]) -> int:
    """``run_finished.memory_peak``: the engine's device peak where it has one (CUDA, MLX), else the
    peak RSS (see the module docstring). ``engine_memory``: ``Engine.memory()``'s dict."""
    device_peak = engine_memory.get("device_peak")
    return int(device_peak) if device_peak is not None else peak_rss_bytes()
