"""Accessible names for every control a keyboard or a screen reader reaches, and Enter on a
focused button presses it (Qt does that only inside dialogs: ``enter_presses_buttons``).

``name_controls(root)`` gives each focusable control under ``root`` that has no accessible name
one, from (in this order) its form label (``QFormLayout``) or buddy label, its own text, its
placeholder, the first line of its tooltip, or the title of the group box it sits in. Controls named on purpose keep their names.
"""

from __future__ import annotations

import re

from PySide6.QtCore import Qt
from PySide6.QtWidgets import (
    QAbstractButton,
    QFormLayout,
    QGroupBox,
    QLabel,
    QLineEdit,
    QPlainTextEdit,
    QPushButton,
    QWidget,
)

_TAGS = re.compile(r"<[^>]+>")


def plain(text: str) -> str:
    """``text`` without rich-text tags, mnemonics (&), ellipses and arrows, on one line."""
    text = _TAGS.sub("", text).replace("&&", "\0").replace("&", "").replace("\0", "&")
    return " ".join(text.replace("…", "").replace("→", "").split()).strip(" :")


def focusable(widget: QWidget) -> bool:
    """True for a control the Tab key reaches."""
    return bool(widget.focusPolicy() & Qt.FocusPolicy.TabFocus) and widget.focusProxy() is None


def _own_words(widget: QWidget) -> str:
    if isinstance(widget, QAbstractButton) and widget.text():
        return plain(widget.text())
    if isinstance(widget, QLineEdit | QPlainTextEdit) and widget.placeholderText():
        return plain(widget.placeholderText())
    return plain(widget.toolTip().split("\n", 1)[0]) if widget.toolTip() else ""


def _group_title(widget: QWidget) -> str:
    parent = widget.parentWidget()
    while parent is not None and not isinstance(parent, QGroupBox):
        parent = parent.parentWidget()
    return plain(parent.title()) if parent is not None else ""


def name_controls(root: QWidget) -> None:
    """Give every focusable control under ``root`` without an accessible name one (see module)."""
    labelled: dict[QWidget, str] = {}
    for form in root.findChildren(QFormLayout):
        for row in range(form.rowCount()):
            label = form.itemAt(row, QFormLayout.ItemRole.LabelRole)
            field = form.itemAt(row, QFormLayout.ItemRole.FieldRole)
            if label is None or field is None or not isinstance(label.widget(), QLabel):
                continue
            words = plain(label.widget().text())
            target = field.widget()
            if not words or target is None:
                continue
            for widget in [target, *target.findChildren(QWidget)]:
                labelled.setdefault(widget, words)
    for label in root.findChildren(QLabel):
        if label.buddy() is not None and label.text():
            labelled.setdefault(label.buddy(), plain(label.text()))
    for widget in [root, *root.findChildren(QWidget)]:
        if widget.accessibleName() or not focusable(widget):
            continue
        words = _own_words(widget) if isinstance(widget, QAbstractButton) else ""
        words = words or labelled.get(widget, "") or _own_words(widget) or _group_title(widget)
        if words:
            widget.setAccessibleName(words)


def enter_presses_buttons(root: QWidget) -> None:
    """Let Enter press the focused push button under ``root``, as Space does (Qt's ``autoDefault``,
    on by default only in dialogs)."""
    for button in root.findChildren(QPushButton):
        button.setAutoDefault(True)
