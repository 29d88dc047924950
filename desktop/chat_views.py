"""What the Chat page shows of a conversation: the transcript view, one pane per model (base or
tuned) with its reply statistics, and the statistics line itself."""

from __future__ import annotations

from typing import Any

from PySide6.QtCore import Qt
from PySide6.QtGui import QFont, QTextCursor
from PySide6.QtWidgets import QLabel, QTextBrowser, QVBoxLayout, QWidget

COMPARE_COLUMNS = ("Prompt", "Reference answer", "Base reply", "Tuned reply")


BASE, TUNED = "base", "tuned"


def format_stats(event: dict[str, Any]) -> str:
    """One line of a reply's statistics, e.g. '42 tokens - 35.1 tokens/s - first token 0.12 s'."""
    parts = [f"{event.get('tokens', 0)} tokens"]
    if event.get("tokens_per_second") is not None:
        parts.append(f"{event['tokens_per_second']:.1f} tokens/s")
    if event.get("time_to_first_token") is not None:
        parts.append(f"first token {event['time_to_first_token']:.2f} s")
    reason = {"length": "max new tokens reached", "stop": "stopped"}.get(event.get("finish_reason", ""))
    if reason:
        parts.append(reason)
    return " - ".join(parts)


class ConversationView(QTextBrowser):
    """A conversation as text: a bold speaker line per turn, then the turn's text (streamed in)."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setOpenLinks(False)
        self.setPlaceholderText("The conversation appears here.")

    def begin_turn(self, speaker: str) -> None:
        """Start a new turn by ``speaker``."""
        cursor = self.textCursor()
        cursor.movePosition(QTextCursor.MoveOperation.End)
        bold = cursor.charFormat()
        bold.setFontWeight(QFont.Weight.Bold)
        plain = cursor.charFormat()
        plain.setFontWeight(QFont.Weight.Normal)
        if not self.document().isEmpty():
            cursor.insertBlock()
            cursor.insertBlock()
        cursor.insertText(f"{speaker}:", bold)
        cursor.insertBlock()
        cursor.setCharFormat(plain)
        self.setTextCursor(cursor)

    def append_text(self, text: str) -> None:
        """Add streamed text at the end and keep it in view."""
        cursor = self.textCursor()
        cursor.movePosition(QTextCursor.MoveOperation.End)
        fmt = cursor.charFormat()
        fmt.setFontWeight(QFont.Weight.Normal)
        cursor.insertText(text, fmt)
        self.setTextCursor(cursor)
        self.ensureCursorVisible()


class ChatPane(QWidget):
    """One side of the chat: a title, the conversation, the last reply's statistics, and the
    history (``messages``) this side sends with each request."""

    def __init__(self, title: str, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        self.title = QLabel(f"<b>{title}</b>")
        self.view = ConversationView()
        self.stats = QLabel("")
        self.stats.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        layout.addWidget(self.title)
        layout.addWidget(self.view, 1)
        layout.addWidget(self.stats)
        self.messages: list[dict[str, str]] = []
        self.set_title(title)

    def set_title(self, title: str) -> None:
        """The heading above the conversation (also the conversation's accessible name)."""
        self.title.setText(f"<b>{title}</b>")
        self.view.setAccessibleName(f"Conversation: {title}")

    def clear(self) -> None:
        """Start a new conversation."""
        self.messages = []
        self.view.clear()
        self.stats.setText("")
