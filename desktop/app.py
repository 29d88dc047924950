"""The desktop app's entry: ``tunedesk`` (no arguments) opens the window;
``tunedesk --screenshot DIR`` renders every page offscreen to ``DIR/<page>.png`` and exits.

With ``TUNEDESK_STARTUP_REPORT=1`` in the environment the app prints
``tunedesk-window-shown <seconds>`` (seconds since its process was created) on stdout when the
window has been shown and painted, then exits: ``benchmarks/gui_startup.py`` measures with it.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

from PySide6.QtCore import QEvent, QObject, Qt, QTimer
from PySide6.QtGui import QGuiApplication
from PySide6.QtWidgets import QApplication


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="tunedesk", description="Open the TuneDesk desktop app.")
    parser.add_argument(
        "--screenshot", metavar="DIR", default=None, help="render each page to DIR/<page>.png and exit"
    )
    return parser.parse_args(argv)


def make_application() -> QApplication:
    """The QApplication (created once): high-DPI safe, named for QSettings, system palette."""
    app = QApplication.instance()
    if app is None:
        QGuiApplication.setHighDpiScaleFactorRoundingPolicy(Qt.HighDpiScaleFactorRoundingPolicy.PassThrough)
        app = QApplication(sys.argv[:1])
    app.setApplicationName("TuneDesk")
    app.setOrganizationName("TuneDesk")
    app.setApplicationDisplayName("TuneDesk")
    return app  # type: ignore[return-value]


class _FirstPaint(QObject):
    """Reports the first paint of the window, then quits (startup measurement)."""

    def __init__(self, app: QApplication) -> None:
        super().__init__(app)
        self.app = app
        self.fired = False

    def eventFilter(self, obj: QObject, event: QEvent) -> bool:  # noqa: N802 (Qt override)
        if not self.fired and event.type() == QEvent.Type.Paint:
            self.fired = True
            QTimer.singleShot(0, self._report)
        return False

    def _report(self) -> None:
        import psutil

        since_start = time.time() - psutil.Process().create_time()
        print(f"tunedesk-window-shown {since_start:.3f}", flush=True)
        for widget in self.app.topLevelWidgets():
            widget.close()  # also ends the hardware probe's child process
        self.app.quit()


def run_app(argv: list[str]) -> int:
    """Open the main window (or render screenshots); returns the exit code."""
    args = _parse(argv)
    app = make_application()
    report = os.environ.get("TUNEDESK_STARTUP_REPORT") == "1"
    if report:
        app.installEventFilter(_FirstPaint(app))
    from desktop.main_window import MainWindow

    window = MainWindow()
    if args.screenshot:
        from desktop.screenshots import capture_pages

        written = capture_pages(window, args.screenshot)
        for path in written:
            print(path)
        return 0 if written else 1
    window.show()
    if not report:
        from desktop.tour import start_tour_once

        start_tour_once(window)  # once per profile; skippable
    return app.exec()
