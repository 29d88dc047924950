"""Step 4, Chat: the chat feature's page (``desktop.chat_page.ChatPage``) when it is installed,
else a placeholder saying chat testing arrives with the chat feature."""

from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QLabel, QVBoxLayout, QWidget

from backends import paths


def make_chat_page(parent: QWidget | None = None) -> QWidget:
    """The chat page if ``desktop.chat_page`` exists, else a placeholder."""
    try:
        from desktop.chat_page import ChatPage
    except ModuleNotFoundError as exc:
        if exc.name != "desktop.chat_page":
            raise
        return ChatPlaceholder(parent)
    page = ChatPage(parent)
    page.set_runs_dir(str(paths.runs_dir()))
    return page


class ChatPlaceholder(QWidget):
    """Says that chat testing is not in this build yet."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        layout = QVBoxLayout(self)
        layout.addWidget(QLabel("<h2>4. Chat with your model</h2>"))
        text = QLabel(
            "Chat testing arrives with the chat feature: you will talk to the tuned model here, "
            "beside the base model on the same prompt.\n\nUntil then, the trained adapter is in the "
            "run folder (see Runs)."
        )
        text.setWordWrap(True)
        text.setAlignment(Qt.AlignmentFlag.AlignTop | Qt.AlignmentFlag.AlignLeft)
        layout.addWidget(text)
        layout.addStretch(1)
