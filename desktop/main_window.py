"""The main window: the hardware header on top, the guided steps (Model, Data, Train, Chat) and
Runs on the left, the current page on the right. Remembers its geometry and page; closing it while
a run trains asks whether to stop and save, or cancel.
"""

from __future__ import annotations

from PySide6.QtCore import QSize
from PySide6.QtGui import QCloseEvent
from PySide6.QtWidgets import (
    QHBoxLayout,
    QListWidget,
    QListWidgetItem,
    QMainWindow,
    QMessageBox,
    QStackedWidget,
    QVBoxLayout,
    QWidget,
)

from desktop.hardware_header import HardwareHeader
from desktop.pages.chat_placeholder import make_chat_page
from desktop.pages.data_page import DataPage
from desktop.pages.model_page import ModelPage
from desktop.pages.runs_page import RunsPage
from desktop.pages.train_page import TrainPage
from desktop.state import AppState
from desktop.worker import WorkerProcess

PAGES = ("model", "data", "train", "chat", "runs")
NAV_TITLES = {
    "model": "1  Model",
    "data": "2  Data",
    "train": "3  Train",
    "chat": "4  Chat",
    "runs": "Runs",
}


class MainWindow(QMainWindow):
    """The app's window. ``probe_hardware``: also run ``tunedesk hardware --json`` for the header."""

    def __init__(self, *, probe_hardware: bool = True) -> None:
        super().__init__()
        self.setWindowTitle("TuneDesk")
        self.state = AppState(self)
        central = QWidget()
        outer = QVBoxLayout(central)
        outer.setContentsMargins(6, 6, 6, 6)
        self.header = HardwareHeader(probe_child=probe_hardware)
        outer.addWidget(self.header)
        body = QHBoxLayout()
        self.nav = QListWidget()
        self.nav.setFixedWidth(130)
        self.nav.setIconSize(QSize(16, 16))
        self.stack = QStackedWidget()
        body.addWidget(self.nav)
        body.addWidget(self.stack, 1)
        outer.addLayout(body, 1)
        self.setCentralWidget(central)

        self.model_page = ModelPage(self.state)
        self.data_page = DataPage(self.state)
        self.train_page = TrainPage(self.state)
        self.chat_page = make_chat_page()
        self.runs_page = RunsPage(self.state)
        self.pages = {
            "model": self.model_page,
            "data": self.data_page,
            "train": self.train_page,
            "chat": self.chat_page,
            "runs": self.runs_page,
        }
        for key in PAGES:
            self.stack.addWidget(self.pages[key])
            item = QListWidgetItem(NAV_TITLES[key])
            item.setSizeHint(QSize(120, 36))
            self.nav.addItem(item)
        self.nav.currentRowChanged.connect(self._on_nav)

        self.model_page.next_requested.connect(lambda: self.show_page("data"))
        self.data_page.next_requested.connect(lambda: self.show_page("train"))
        self.train_page.show_page.connect(self.show_page)
        self.train_page.run_started.connect(lambda _: self.runs_page.refresh())
        self.train_page.run_ended.connect(lambda _: self.runs_page.refresh())
        self.runs_page.show_run.connect(self._show_run)
        self.runs_page.resume_run.connect(self._resume_run)

        settings = self.state.settings
        geometry = settings.value("window/geometry")
        if geometry is None or not self.restoreGeometry(geometry):
            self.resize(1280, 820)
        page = str(settings.value("window/page", "model"))
        self.show_page(page if page in PAGES else "model")

    # --- navigation ---
    def show_page(self, key: str) -> None:
        """Open the page ``key`` (one of ``PAGES``)."""
        self.nav.setCurrentRow(PAGES.index(key))

    def current_page(self) -> str:
        """Key of the page shown."""
        return PAGES[self.stack.currentIndex()]

    def _on_nav(self, row: int) -> None:
        if row < 0:
            return
        self.stack.setCurrentIndex(row)
        if PAGES[row] == "data":
            self.data_page.ensure_checked()
        elif PAGES[row] == "model":
            self.model_page.refresh()

    def _show_run(self, run_dir: str) -> None:
        self.train_page.show_run(run_dir)
        self.show_page("train")

    def _resume_run(self, run_dir: str) -> None:
        self.show_page("train")
        self.train_page.resume(run_dir)

    # --- closing ---
    def ask_stop_on_close(self) -> bool:
        """Ask whether to stop (saving a checkpoint) and close; True for stop-and-save."""
        box = QMessageBox(self)
        box.setIcon(QMessageBox.Icon.Question)
        box.setWindowTitle("Training is running")
        box.setText("A training run is in progress.")
        box.setInformativeText(
            "Stop and save: a checkpoint is saved, then TuneDesk closes; Resume continues the run later."
        )
        stop = box.addButton("Stop and save", QMessageBox.ButtonRole.AcceptRole)
        box.addButton(QMessageBox.StandardButton.Cancel)
        box.setDefaultButton(QMessageBox.StandardButton.Cancel)
        box.setObjectName("closeDuringTraining")
        box.exec()
        return box.clickedButton() is stop

    def closeEvent(self, event: QCloseEvent) -> None:  # noqa: N802 (Qt override)
        """While training: ask stop-and-save or cancel; otherwise save the window state and close."""
        if self.train_page.is_running():
            event.ignore()
            if self.ask_stop_on_close():
                self.train_page.stop_and_close()
            return
        settings = self.state.settings
        settings.setValue("window/geometry", self.saveGeometry())
        settings.setValue("window/page", self.current_page())
        settings.sync()
        for worker in self.findChildren(WorkerProcess):
            if worker.is_running():  # a data check or an import: not worth keeping
                worker.kill()
                worker.wait(3000)
        event.accept()

    def sizeHint(self) -> QSize:  # noqa: N802 (Qt override)
        """Default size on a first start."""
        return QSize(1280, 820)
