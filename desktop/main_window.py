"""The main window: the hardware header on top, the guided steps (Model, Data, Train, Chat) and
Runs on the left, the current page on the right. Remembers its geometry and page; closing it while
a run trains asks whether to stop and save, or cancel.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from PySide6.QtCore import QSize, QTimer
from PySide6.QtGui import QAction, QActionGroup, QCloseEvent, QPaintEvent, QResizeEvent, QShowEvent
from PySide6.QtWidgets import (
    QFrame,
    QHBoxLayout,
    QListWidget,
    QListWidgetItem,
    QMainWindow,
    QMessageBox,
    QScrollArea,
    QStackedWidget,
    QVBoxLayout,
    QWidget,
)

from desktop.a11y import enter_presses_buttons, name_controls
from desktop.hardware_header import HardwareHeader
from desktop.state import AppState
from desktop.theme import THEMES, ThemeManager
from desktop.worker import WorkerProcess

if TYPE_CHECKING:
    from desktop.pages.data_page import DataPage
    from desktop.pages.model_page import ModelPage
    from desktop.pages.runs_page import RunsPage
    from desktop.pages.train_page import TrainPage

PAGES = ("model", "data", "train", "chat", "runs")
NAV_TITLES = {
    "model": "1  Model",
    "data": "2  Data",
    "train": "3  Train",
    "chat": "4  Chat",
    "runs": "Runs",
}


class PageScroll(QScrollArea):
    """Holds a page: it fills the view, and scrolls only where the view is smaller than the page's
    minimum size, so a small screen never forces the window larger than the screen.

    (QScrollArea's own ``widgetResizable`` sizes pages with wrapped labels to their preferred
    height-for-width, which would make tall pages scroll on any screen.)
    """

    def __init__(self, page: QWidget) -> None:
        super().__init__()
        self.setFrameShape(QFrame.Shape.NoFrame)
        self.setWidgetResizable(False)
        self.setWidget(page)

    def resizeEvent(self, event: QResizeEvent) -> None:  # noqa: N802 (Qt override)
        """Size the page to the view, but not below its minimum."""
        super().resizeEvent(event)
        self._fit()

    def _fit(self) -> None:
        page = self.widget()
        least = page.minimumSizeHint().expandedTo(page.minimumSize())
        view = self.maximumViewportSize()
        width = max(view.width(), least.width())
        height = max(view.height(), least.height())
        # A scroll bar in one direction takes room from the other.
        if width > view.width():
            height = max(view.height() - self.horizontalScrollBar().sizeHint().height(), least.height())
        if height > view.height():
            width = max(view.width() - self.verticalScrollBar().sizeHint().width(), least.width())
        page.resize(width, height)


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
        self.nav.setAccessibleName("Steps")
        self.nav.setFixedWidth(130)
        self.nav.setIconSize(QSize(16, 16))
        self.stack = QStackedWidget()
        body.addWidget(self.nav)
        body.addWidget(self.stack, 1)
        outer.addLayout(body, 1)
        self.setCentralWidget(central)

        # Pages are built on first use, and the rest right after the window is first shown: the
        # chart pages import pyqtgraph (about half a second), which a first paint need not wait for.
        self._pages: dict[str, QWidget] = {}
        self._painted = False
        self._placeholders: dict[str, QWidget] = {}
        for key in PAGES:
            placeholder = QWidget()
            self._placeholders[key] = placeholder
            self.stack.addWidget(placeholder)
            item = QListWidgetItem(NAV_TITLES[key])
            item.setSizeHint(QSize(120, 36))
            self.nav.addItem(item)
        self.nav.currentRowChanged.connect(self._on_nav)

        settings = self.state.settings
        self.theme = ThemeManager(self)
        self._build_menu(str(settings.value("view/theme", "system")))
        geometry = settings.value("window/geometry")
        if geometry is None or not self.restoreGeometry(geometry):
            self.resize(1280, 820)
        page = str(settings.value("window/page", "model"))
        self.show_page(page if page in PAGES else "model")

    # --- menu ---
    def _build_menu(self, theme: str) -> None:
        view = self.menuBar().addMenu("&View")
        appearance = view.addMenu("&Appearance")
        group = QActionGroup(self)
        self.theme_actions: dict[str, QAction] = {}
        for key, words in THEMES.items():
            action = QAction(words, self, checkable=True)
            action.triggered.connect(lambda _=False, key=key: self.set_theme(key))
            group.addAction(action)
            appearance.addAction(action)
            self.theme_actions[key] = action
        self.set_theme(theme, save=False)

    def set_theme(self, theme: str, *, save: bool = True) -> None:
        """Use the appearance ``theme`` ("system", "light" or "dark"), remembered when ``save``."""
        self.theme.apply(theme)
        self.theme_actions[self.theme.theme].setChecked(True)
        for widget in self.findChildren(QWidget):  # charts, built or hidden: redraw in the new colours
            follow = getattr(widget, "follow_palette", None)
            if callable(follow):
                follow()
        if save:
            self.state.settings.setValue("view/theme", self.theme.theme)

    # --- pages ---
    def page(self, key: str) -> QWidget:
        """The page ``key``, built now if it was not yet."""
        if key not in self._pages:
            page = self._build(key)
            name_controls(page)
            enter_presses_buttons(page)
            self._pages[key] = page
            index = PAGES.index(key)
            placeholder = self._placeholders.pop(key)
            current = self.stack.currentIndex()
            scroll = PageScroll(page)
            scroll.setAccessibleName(f"{NAV_TITLES[key].split()[-1]} page")  # a Tab stop when it scrolls
            self.stack.insertWidget(index, scroll)
            self.stack.removeWidget(placeholder)
            placeholder.deleteLater()
            self.stack.setCurrentIndex(current)
        return self._pages[key]

    def page_scroll(self, key: str) -> PageScroll:
        """The scroll area that shows the page ``key`` (built now if it was not yet)."""
        self.page(key)
        return self.stack.widget(PAGES.index(key))  # type: ignore[return-value]

    def _build(self, key: str) -> QWidget:
        if key == "model":
            from desktop.pages.model_page import ModelPage

            model_page = ModelPage(self.state)
            model_page.next_requested.connect(lambda: self.show_page("data"))
            return model_page
        if key == "data":
            from desktop.pages.data_page import DataPage

            data_page = DataPage(self.state)
            data_page.next_requested.connect(lambda: self.show_page("train"))
            return data_page
        if key == "train":
            from desktop.pages.train_page import TrainPage

            train_page = TrainPage(self.state)
            train_page.show_page.connect(self.show_page)
            train_page.run_started.connect(self._refresh_runs)
            train_page.run_ended.connect(self._refresh_runs)
            train_page.max_seq_length_changed.connect(self._sync_max_seq_length)
            train_page.next_steps.chat_requested.connect(self.chat_with)
            self.header.ready.connect(train_page.gpu_choice.set_report)  # the GPUs row
            if self.header.info is not None:
                train_page.gpu_choice.set_report(self.header.info)
            self._sync_max_seq_length(train_page.max_seq_length())
            data_page = self.data_page  # Start is refused while the Data step finds the file unusable
            data_page.check_finished.connect(
                lambda report: train_page.set_data_check(report, data_page.error)
            )
            if data_page.report is not None or data_page.error:
                train_page.set_data_check(data_page.report, data_page.error)
            return train_page
        if key == "chat":
            from backends import paths
            from desktop.chat_page import ChatPage

            chat_page = ChatPage()
            chat_page.set_runs_dir(str(paths.runs_dir()))
            return chat_page
        from desktop.pages.runs_page import RunsPage

        runs_page = RunsPage(self.state)
        runs_page.show_run.connect(self._show_run)
        runs_page.resume_run.connect(self._resume_run)
        runs_page.use_settings.connect(self._use_settings)
        runs_page.chat_with.connect(self.chat_with)
        return runs_page

    def build_all_pages(self) -> None:
        """Build every page not built yet."""
        for key in PAGES:
            self.page(key)

    def _build_next_page(self) -> None:
        missing = [key for key in PAGES if key not in self._pages]
        if missing:
            self.page(missing[0])
            QTimer.singleShot(0, self._build_next_page)

    def showEvent(self, event: QShowEvent) -> None:  # noqa: N802 (Qt override)
        """Build the other pages soon even on a platform that sends the window no paint event."""
        super().showEvent(event)
        QTimer.singleShot(1000, self._build_next_page)

    def paintEvent(self, event: QPaintEvent) -> None:  # noqa: N802 (Qt override)
        """After the first paint, build the remaining pages one per event-loop turn."""
        super().paintEvent(event)
        if not self._painted:
            self._painted = True
            QTimer.singleShot(0, self._build_next_page)

    @property
    def model_page(self) -> ModelPage:
        """Step 1."""
        return self.page("model")  # type: ignore[return-value]

    @property
    def data_page(self) -> DataPage:
        """Step 2."""
        return self.page("data")  # type: ignore[return-value]

    @property
    def train_page(self) -> TrainPage:
        """Step 3."""
        return self.page("train")  # type: ignore[return-value]

    @property
    def chat_page(self) -> QWidget:
        """Step 4 (the chat feature's page or a placeholder)."""
        return self.page("chat")

    @property
    def runs_page(self) -> RunsPage:
        """The run history."""
        return self.page("runs")  # type: ignore[return-value]

    def _refresh_runs(self, *_: object) -> None:
        if "runs" in self._pages:
            self.runs_page.refresh()
        refresh_chat = getattr(self._pages.get("chat"), "refresh", None)
        if callable(refresh_chat):  # the chat page lists the new adapter
            refresh_chat()

    def _sync_max_seq_length(self, length: int) -> None:
        self.data_page.set_max_seq_length(length)

    def training_running(self) -> bool:
        """True while a training worker runs."""
        return "train" in self._pages and self.train_page.is_running()

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
        self.page(PAGES[row])
        self.stack.setCurrentIndex(row)
        if PAGES[row] == "data":
            self.data_page.ensure_checked()
        elif PAGES[row] == "model":
            self.model_page.refresh()

    def _show_run(self, run_dir: str) -> None:
        self.train_page.show_run(run_dir)
        self.show_page("train")

    def chat_with(self, run_dir: str) -> None:
        """Open Chat with a run's adapter chosen (when the chat page lists it)."""
        page = self.chat_page
        if callable(getattr(page, "select_adapter", None)):
            page.refresh()
            try:
                page.select_adapter(run_dir)
            except ValueError:  # a run outside the folder the chat page lists
                pass
        self.show_page("chat")

    def _use_settings(self, run_dir: str) -> None:
        self.train_page.load_settings(run_dir)
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
        if self.training_running():
            event.ignore()
            if self.ask_stop_on_close():
                self.train_page.stop_and_close()
            return
        settings = self.state.settings
        settings.setValue("window/geometry", self.saveGeometry())
        settings.setValue("window/page", self.current_page())
        settings.sync()
        shutdown_chat = getattr(self._pages.get("chat"), "shutdown", None)
        if callable(shutdown_chat):
            shutdown_chat()
        for worker in self.findChildren(WorkerProcess):
            if worker.is_running():  # a data check, an import, an export: not worth keeping
                worker.stop()  # SIGTERM first: an export removes its temporary folder
                if not worker.wait(3000):
                    worker.kill()
                    worker.wait(3000)
        event.accept()

    def sizeHint(self) -> QSize:  # noqa: N802 (Qt override)
        """Default size on a first start."""
        return QSize(1280, 820)
