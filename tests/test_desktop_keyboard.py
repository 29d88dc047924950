"""The whole flow by keyboard alone (issue 21): from the first window to a finished quick-test run
and a chat reply, moving with Tab and the arrow keys and pressing with Space and Enter; only the
chat message itself is typed. Real child processes: the data check, the training worker (the
tiny model, the built-in sample data, the quick-test preset) and the chat worker."""

from __future__ import annotations

import pytest
from PySide6.QtCore import Qt
from PySide6.QtTest import QTest
from PySide6.QtWidgets import QApplication, QWidget

from backends import models
from desktop.main_window import MainWindow

ALLOWED = {Qt.Key.Key_Tab, Qt.Key.Key_Up, Qt.Key.Key_Down, Qt.Key.Key_Left, Qt.Key.Key_Right}
ALLOWED |= {Qt.Key.Key_Return, Qt.Key.Key_Enter, Qt.Key.Key_Space}
RUN_TIMEOUT_MS = 300_000


class Keyboard:
    """Key presses sent to whichever widget has the focus, as a keyboard would."""

    def __init__(self, qtbot, window: MainWindow) -> None:
        self.qtbot = qtbot
        self.window = window
        self.pressed: list[str] = []

    def focused(self) -> QWidget:
        widget = QApplication.focusWidget()
        assert widget is not None, "nothing has the keyboard focus"
        return widget

    def press(self, key: Qt.Key) -> None:
        assert key in ALLOWED, f"{key} is not a navigation key"
        self.pressed.append(key.name)
        QTest.keyClick(self.focused(), key)
        QApplication.processEvents()

    def tab_to(self, target: QWidget, most: int = 80) -> None:
        """Press Tab until ``target`` has the focus (fails after ``most`` presses)."""
        for _ in range(most):
            if target.hasFocus():
                return
            self.press(Qt.Key.Key_Tab)
        raise AssertionError(f"Tab never reached {target.accessibleName() or target}; last: {self.focused()}")

    def arrow_until(self, done, key: Qt.Key = Qt.Key.Key_Down, most: int = 20) -> None:
        for _ in range(most):
            if done():
                return
            self.press(key)
        assert done(), "the arrow keys never got there"

    def type_text(self, text: str) -> None:
        QTest.keyClicks(self.focused(), text)


@pytest.mark.slow
def test_keyboard_only_from_the_first_window_to_a_chat_reply(qtbot, tiny_model_dir):
    models.import_model(tiny_model_dir, "tiny", copy=True)  # a model imported earlier
    window = MainWindow(probe_hardware=False)
    qtbot.addWidget(window)
    window.resize(1024, 640)
    window.show()
    window.activateWindow()
    qtbot.waitUntil(lambda: QApplication.focusWidget() is not None, timeout=5000)
    keys = Keyboard(qtbot, window)
    try:
        # 1. Model: into the table, arrows to the tiny model, on to Next.
        assert window.current_page() == "model"
        model_page = window.model_page
        keys.tab_to(model_page.table)
        keys.arrow_until(lambda: window.state.model == "tiny")
        keys.tab_to(model_page.next_button)
        keys.press(Qt.Key.Key_Space)
        assert window.current_page() == "data"

        # 2. Data: the built-in sample is checked in a child process; Enter on Next.
        data_page = window.data_page
        qtbot.waitUntil(lambda: data_page.report is not None or data_page.error is not None, timeout=120_000)
        assert data_page.report is not None and data_page.report["rows_kept"] > 0, data_page.error
        keys.tab_to(data_page.next_button)
        keys.press(Qt.Key.Key_Return)
        assert window.current_page() == "train"

        # 3. Train: the quick-test preset with the arrow keys, then Start with Space.
        train = window.train_page
        keys.tab_to(train.preset_box)
        keys.arrow_until(lambda: train.preset_box.currentData() == "quick-test", Qt.Key.Key_Up)
        keys.tab_to(train.start_button)
        keys.press(Qt.Key.Key_Space)
        assert train.is_running()
        qtbot.waitUntil(lambda: not train.is_running(), timeout=RUN_TIMEOUT_MS)
        final = train.monitor.final_event
        assert final and final["event"] == "run_finished", train.monitor.status.text()
        assert "This was a quick test" in train.monitor.status.text()

        # 4. Chat with the result: the next step's button, a typed message, Send with Space.
        keys.tab_to(train.next_steps.chat_button)
        keys.press(Qt.Key.Key_Space)
        assert window.current_page() == "chat"
        chat = window.chat_page
        assert chat.current_adapter() == train.monitor.run_dir
        keys.tab_to(chat.prompt)
        keys.type_text("What is the status of order 1001?")
        keys.tab_to(chat.send_button)
        keys.press(Qt.Key.Key_Space)
        qtbot.waitUntil(lambda: "tuned" in chat.last_replies, timeout=RUN_TIMEOUT_MS)
        reply = chat.last_replies["tuned"]
        assert reply.get("tokens", 0) > 0, reply
        assert "Tuned model:" in chat.panes["tuned"].view.toPlainText()
        assert set(keys.pressed) <= {k.name for k in ALLOWED}
    finally:
        chat_page = window._pages.get("chat")
        if chat_page is not None:
            chat_page.shutdown()
