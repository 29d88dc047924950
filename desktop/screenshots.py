"""Render every page of the window to PNG files (``tunedesk --screenshot DIR``), with real data:
the hardware probe's answer, the model store, a real ``data check`` of the chosen file, the latest
run of ``<TUNEDESK_HOME>/runs`` in the Train page and every run in the Runs page.

``DIR/<page>.png`` is the default size (the README's pictures); ``DIR/<W>x<H>-<theme>/<page>.png``
are the small and large screens (``SCREENS``) in light and dark, each page checked for widgets cut
off (``desktop.layout_check``); the problems found are printed and returned.

Works offscreen (``QT_QPA_PLATFORM=offscreen``). To produce the README's pictures, train a run
first in the same ``TUNEDESK_HOME`` (e.g. ``tunedesk train --config ... --preset quick-test``).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from PySide6.QtCore import QEventLoop, QTimer
from PySide6.QtWidgets import QApplication

from desktop.layout_check import cut_off_widgets
from desktop.main_window import PAGES, MainWindow

SIZE = (1280, 820)
SCREENS = ((1024, 640), (1920, 1080))
THEMES = ("light", "dark")


def wait_until(predicate: Callable[[], bool], timeout_s: float) -> bool:
    """Run the event loop until ``predicate()`` holds or ``timeout_s`` passes; returns the predicate."""
    deadline = time.monotonic() + timeout_s
    loop = QEventLoop()
    while not predicate() and time.monotonic() < deadline:
        QTimer.singleShot(50, loop.quit)
        loop.exec()
    return predicate()


def capture_pages(window: MainWindow, out_dir: str | Path, *, timeout_s: float = 600.0) -> list[Path]:
    """Show each page at ``SIZE``, wait for its data, save ``<out_dir>/<page>.png``; then every
    screen of ``SCREENS`` in each of ``THEMES`` into ``<out_dir>/<W>x<H>-<theme>/<page>.png``.
    Returns the files; widgets found cut off are printed."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    window.resize(*SIZE)
    window.show()
    QApplication.processEvents()
    wait_until(lambda: window.header.final, timeout_s)
    written = _capture(window, out, timeout_s)
    theme = window.theme.theme
    for name in THEMES:
        window.set_theme(name, save=False)
        for width, height in SCREENS:
            window.resize(width, height)
            folder = out / f"{width}x{height}-{name}"
            folder.mkdir(exist_ok=True)
            written += _capture(window, folder, timeout_s)
            for key in PAGES:
                window.show_page(key)
                wait_until(lambda: False, 0.2)
                for problem in page_problems(window, key):
                    print(f"cut off at {width}x{height} on {key}: {problem}")
    window.set_theme(theme, save=False)
    window.close()
    return written


def page_problems(window: MainWindow, key: str) -> list[str]:
    """Widgets cut off on the page ``key`` as the window shows it now (``cut_off_widgets``); the
    window's own size is checked too (a window that cannot shrink to the screen is cut off)."""
    scroll = window.page_scroll(key)
    problems = cut_off_widgets(window.page(key), scroll.viewport())
    screen = window.size()
    least = window.minimumSizeHint()
    if least.width() > screen.width() or least.height() > screen.height():
        problems.append(f"the window needs {least.width()}x{least.height()}")
    return problems


def _capture(window: MainWindow, out: Path, timeout_s: float) -> list[Path]:
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
    return written
