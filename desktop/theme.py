"""Light and dark appearance. By default the app follows the system (Qt 6's
``QStyleHints.colorScheme``, and its ``colorSchemeChanged`` signal); View > Appearance picks Light
or Dark instead, remembered in the settings (``view/theme``). A forced scheme uses the Fusion style
with an explicit palette, which every platform draws the same; the charts follow any palette change
(``desktop.charts.Chart``).
"""

from __future__ import annotations

from PySide6.QtCore import QObject, Qt, Signal
from PySide6.QtGui import QColor, QGuiApplication, QPalette
from PySide6.QtWidgets import QApplication, QStyleFactory

THEMES = {"system": "Follow the system", "light": "Light", "dark": "Dark"}

# (role, colour) pairs of the dark palette: dark grey surfaces, light text, a blue highlight.
_DARK = {
    QPalette.ColorRole.Window: "#2b2b2b",
    QPalette.ColorRole.WindowText: "#e6e6e6",
    QPalette.ColorRole.Base: "#1e1e1e",
    QPalette.ColorRole.AlternateBase: "#2f2f2f",
    QPalette.ColorRole.ToolTipBase: "#3a3a3a",
    QPalette.ColorRole.ToolTipText: "#e6e6e6",
    QPalette.ColorRole.PlaceholderText: "#9a9a9a",
    QPalette.ColorRole.Text: "#e6e6e6",
    QPalette.ColorRole.Button: "#353535",
    QPalette.ColorRole.ButtonText: "#e6e6e6",
    QPalette.ColorRole.BrightText: "#ff6b6b",
    QPalette.ColorRole.Link: "#6cb4ff",
    QPalette.ColorRole.Highlight: "#3d7bd9",
    QPalette.ColorRole.HighlightedText: "#ffffff",
    QPalette.ColorRole.Light: "#505050",
    QPalette.ColorRole.Midlight: "#404040",
    QPalette.ColorRole.Mid: "#303030",
    QPalette.ColorRole.Dark: "#1a1a1a",
    QPalette.ColorRole.Shadow: "#000000",
}
_DISABLED_TEXT = "#808080"


def dark_palette() -> QPalette:
    """The palette of the Dark appearance (disabled text greyed)."""
    palette = QPalette()
    for role, color in _DARK.items():
        palette.setColor(role, QColor(color))
    for role in (QPalette.ColorRole.WindowText, QPalette.ColorRole.Text, QPalette.ColorRole.ButtonText):
        palette.setColor(QPalette.ColorGroup.Disabled, role, QColor(_DISABLED_TEXT))
    return palette


def system_is_dark() -> bool:
    """True when the system asks for a dark appearance (Qt's ``colorScheme``; Unknown counts as light)."""
    return QGuiApplication.styleHints().colorScheme() == Qt.ColorScheme.Dark


class ThemeManager(QObject):
    """Applies a theme to the application and re-applies "system" when the system switches.

    ``changed(bool)`` fires with ``dark`` after each change.
    """

    changed = Signal(bool)

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        app = QApplication.instance()
        assert isinstance(app, QApplication), "create the QApplication first"
        self.app = app
        # The style the platform gave the app: "system" goes back to it.
        self._native_style = app.property("tunedesk_native_style") or app.style().name()
        app.setProperty("tunedesk_native_style", self._native_style)
        self.theme = "system"
        self._forced = False  # a palette of ours is set on the application
        QGuiApplication.styleHints().colorSchemeChanged.connect(self._on_system_change)

    def apply(self, theme: str) -> bool:
        """Switch to ``theme`` (a key of ``THEMES``; unknown: "system"); returns True when dark."""
        self.theme = theme if theme in THEMES else "system"
        dark = self.is_dark()
        style = self._native_style if self.theme == "system" else "Fusion"
        if self.app.style().name().lower() != style.lower():
            self.app.setStyle(QStyleFactory.create(style))
        if self.theme == "dark":
            self.app.setPalette(dark_palette())
        elif self.theme == "light":
            self.app.setPalette(self.app.style().standardPalette())
        elif self._forced:  # an empty palette: the platform theme's own colours again
            self.app.setPalette(QPalette())
        self._forced = self.theme != "system"
        self.changed.emit(dark)
        return dark

    def is_dark(self) -> bool:
        """True when the current theme draws dark."""
        return self.theme == "dark" or (self.theme == "system" and system_is_dark())

    def _on_system_change(self, *_: object) -> None:
        if self.theme == "system":
            self.apply("system")
