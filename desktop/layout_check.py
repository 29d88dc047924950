"""Which widgets of a page are cut off: the check behind the screenshots and their test.

A widget counts as cut off when it is shown on the page but does not lie wholly inside the part of
the page the window shows (the page's scroll area's viewport) or inside its own parent. Widgets
inside an inner scroll area (a table's cells, a chart's items, a settings form that scrolls) are
left to that scroll area; the scroll area itself is checked.
"""

from __future__ import annotations

from PySide6.QtCore import QPoint, QRect
from PySide6.QtWidgets import QAbstractScrollArea, QWidget

TOLERANCE = 1  # pixels: rounding at fractional scale factors


def _inside(inner: QRect, outer: QRect) -> bool:
    return outer.adjusted(-TOLERANCE, -TOLERANCE, TOLERANCE, TOLERANCE).contains(inner)


def _describe(widget: QWidget) -> str:
    text = ""
    for getter in ("text", "title", "placeholderText"):
        value = getattr(widget, getter, None)
        if callable(value):
            try:
                text = str(value())
            except TypeError:
                continue
            if text:
                break
    name = widget.objectName() or widget.accessibleName() or text[:40]
    return f"{type(widget).__name__}({name!r})"


def cut_off_widgets(page: QWidget, view: QWidget) -> list[str]:
    """Widgets of ``page`` shown but not wholly inside ``view`` (the viewport that shows the page)
    or inside their parent; each as ``Type('name'): rect`` for the failure message."""
    problems = []
    visible = QRect(QPoint(0, 0), view.size())
    for widget in page.findChildren(QWidget):
        if not widget.isVisibleTo(page) or widget.isWindow():
            continue
        parent = widget.parentWidget()
        skip = False
        while parent is not None and parent is not page:
            if isinstance(parent, QAbstractScrollArea):
                skip = True  # scrolled by an inner scroll area, which is itself checked
                break
            parent = parent.parentWidget()
        if skip:
            continue
        rect = QRect(widget.mapTo(view, QPoint(0, 0)), widget.size())
        own = QRect(widget.pos(), widget.size())
        if not _inside(rect, visible) or not _inside(own, widget.parentWidget().rect()):
            problems.append(f"{_describe(widget)}: {rect.x()},{rect.y()} {rect.width()}x{rect.height()}")
    return problems
