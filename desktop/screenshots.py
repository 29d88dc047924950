"""Render every page of the window to PNG files (``tunedesk --screenshot DIR``), with real data:
the hardware probe's answer, the model store, a real ``data check`` of the chosen file, the latest
run of ``<TUNEDESK_HOME>/runs`` in the Train page and every run in the Runs page.

Works offscreen (``QT_QPA_PLATFORM=offscreen``). To produce the README's pictures, train a run
first in the same ``TUNEDESK_HOME`` (e.g. ``tunedesk train --config ... --preset quick-test``).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from PySide6.QtCore import QEventLoop, QTimer
from PySide6.QtWidgets import QApplication

from desktop.main_window import PAGES, MainWindow

SIZE = (1280, 820)


def wait_until(predicate: Callable[[], bool], timeout_s: float) -> bool:
    """Run the event loop until ``predicate()`` holds or ``timeout_s`` passes; returns the predicate."""
    deadline = time.monotonic() + timeout_s
    loop = QEventLoop()
    while not predicate() and time.monotonic() < deadline:
        QTimer.singleShot(50, loop.quit)
        loop.exec()
    return predicate()


def capture_pages(window: MainWindow, out_dir: str | Path, *, timeout_s: float = 600.0) -> list[Path]:
    """Show each page at ``SIZE``, wait for its data, save ``<out_dir>/<page>.png``; returns the files."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    window.resize(*SIZE)
    window.show()
    QApplication.processEvents()
    wait_until(lambda: window.header.final, timeout_s)
    written = []
    for key in PAGES:
        window.show_page(key)
        if key == "data":
            window.data_page.ensure_checked()
            wait_until(lambda: not window.data_page.is_checking(), timeout_s)
        if key == "train":
            window.train_page.monitor.refresh_charts()
        if key == "runs":
            window.runs_page.refresh()
            if window.runs_page.rows:
                window.runs_page.select_paths([r["path"] for r in window.runs_page.rows[:3]])
        wait_until(lambda: False, 0.5)  # let charts redraw and layouts settle
        path = out / f"{key}.png"
        if window.grab().save(str(path)):
            written.append(path)
    window.close()
    return written
