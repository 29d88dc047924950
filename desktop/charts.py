"""Live line charts (pyqtgraph) that stay smooth for runs of 100,000+ steps.

Every point is kept (``Series``: growing numpy arrays, amortised O(1) append); what is drawn is
only the visible x-range, cut down to about two points per pixel column by min/max decimation
(``downsample_minmax``), which keeps spikes visible. Redraws are coalesced by a timer, so a burst
of events costs one redraw, not one per event. Colours follow the system palette (light or dark).
"""

from __future__ import annotations

import math

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QEvent, Qt, QTimer
from PySide6.QtGui import QColor, QPalette, QResizeEvent
from PySide6.QtWidgets import QApplication, QWidget

LONG_SERIES = 10_000  # points; longer series redraw at most once a second
LEGEND_MIN_WIDTH = 320  # pixels; a narrower chart shows no legend

# Colour-blind-safe pairs (Okabe-Ito), a darker tone for light and a lighter one for dark backgrounds.
COLORS_LIGHT = ["#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000"]
COLORS_DARK = ["#56B4E9", "#E69F00", "#33CC99", "#EE99CC", "#F0E442", "#9AD0F5", "#FFFFFF"]


def is_dark(palette: QPalette | None = None) -> bool:
    """True when the window background of ``palette`` (default: the app's) is dark."""
    palette = palette or QApplication.palette()
    return palette.color(QPalette.ColorRole.Window).lightness() < 128


def series_color(index: int) -> str:
    """The ``index``-th curve colour for the current palette."""
    colors = COLORS_DARK if is_dark() else COLORS_LIGHT
    return colors[index % len(colors)]


class Series:
    """A growing list of (x, y) points held in numpy arrays; x must not decrease.

    ``append`` is amortised O(1) (capacity doubles). ``truncate_from(x)`` drops the points at or
    after ``x``, used when a resumed run re-emits steps after its last checkpoint.
    ``unique_x``: an x equal to the last one replaces that point (steps); otherwise it is added
    beside it (times, which can repeat at the clock's resolution).
    """

    def __init__(self, capacity: int = 1024, *, unique_x: bool = True) -> None:
        self.unique_x = unique_x
        self._x = np.empty(capacity, dtype=np.float64)
        self._y = np.empty(capacity, dtype=np.float64)
        self._n = 0

    def __len__(self) -> int:
        return self._n

    @property
    def x(self) -> np.ndarray:
        """The x values (a view, length ``len(self)``)."""
        return self._x[: self._n]

    @property
    def y(self) -> np.ndarray:
        """The y values (a view, length ``len(self)``)."""
        return self._y[: self._n]

    def append(self, x: float, y: float | None) -> bool:
        """Add one point; a missing or non-finite ``y`` is skipped. Returns True if added.

        A point whose ``x`` is before the last one (or equal, with ``unique_x``) first drops the
        points from ``x`` on.
        """
        if y is None or not math.isfinite(y) or x is None or not math.isfinite(x):
            return False
        if self._n and (x < self._x[self._n - 1] or (self.unique_x and x == self._x[self._n - 1])):
            self.truncate_from(x)
        if self._n == len(self._x):
            self._x = np.concatenate([self._x, np.empty_like(self._x)])
            self._y = np.concatenate([self._y, np.empty_like(self._y)])
        self._x[self._n] = x
        self._y[self._n] = y
        self._n += 1
        return True

    def truncate_from(self, x: float) -> None:
        """Drop every point whose x is >= ``x``."""
        self._n = int(np.searchsorted(self.x, x, side="left"))

    def clear(self) -> None:
        """Drop every point."""
        self._n = 0

    def last(self) -> tuple[float, float] | None:
        """The last point, or None."""
        return (float(self._x[self._n - 1]), float(self._y[self._n - 1])) if self._n else None


def downsample_minmax(x: np.ndarray, y: np.ndarray, max_points: int) -> tuple[np.ndarray, np.ndarray]:
    """Cut (x, y) to at most ``max_points`` points, keeping each bucket's minimum and maximum.

    The points are split into ``max_points // 2`` equal buckets; from each, its lowest and highest
    point are kept in their original order (the "peak" mode of pyqtgraph's downsampling), so a
    loss spike survives decimation. Inputs of at most ``max_points`` points are returned as they are.
    """
    n = len(x)
    if n <= max_points or max_points < 4:
        return x, y
    size = math.ceil(n / (max_points // 2))
    full = (n // size) * size
    blocks = y[:full].reshape(-1, size)
    base = np.arange(blocks.shape[0]) * size
    pairs = [np.stack([base + np.argmin(blocks, axis=1), base + np.argmax(blocks, axis=1)], axis=1)]
    if full < n:  # the last, partial bucket
        tail = y[full:]
        pairs.append(np.array([[full + int(np.argmin(tail)), full + int(np.argmax(tail))]]))
    idx = np.sort(np.concatenate(pairs), axis=1).ravel()
    return x[idx], y[idx]


class Chart(pg.PlotWidget):
    """A titled plot of several named ``Series``, redrawn at most every ``refresh_ms``.

    Use ``add_series(name)`` to get a series, append points to it, then call ``changed()``.
    """

    def __init__(
        self,
        title: str,
        x_label: str,
        y_label: str,
        *,
        x_units: str | None = None,
        y_units: str | None = None,
        parent: QWidget | None = None,
        refresh_ms: int = 200,
        max_points_per_pixel: float = 2.0,
    ) -> None:
        super().__init__(parent=parent)
        self._title = title
        self._curves: dict[str, tuple[Series, pg.PlotDataItem]] = {}
        self._labels: dict[str, str] = {}  # series name -> legend words
        self._palette_colored: list[str] = []  # series drawn in the palette's colours
        self._max_points_per_pixel = max_points_per_pixel
        self.plotItem.showGrid(x=True, y=True, alpha=0.25)
        self.plotItem.setLabel("bottom", x_label, units=x_units)
        self.plotItem.setLabel("left", y_label, units=y_units)
        if x_units is None:
            self.plotItem.getAxis("bottom").enableAutoSIPrefix(False)
        self.plotItem.setMenuEnabled(False)
        self.legend = self.plotItem.addLegend(offset=(-10, 10))
        self.setMinimumHeight(120)  # two rows of charts still fit a 640-pixel-high screen
        self.setAccessibleName(title)
        self.setFocusPolicy(Qt.FocusPolicy.NoFocus)  # a picture to read, not a stop for the Tab key
        self._timer = QTimer(self)
        self._timer.setSingleShot(True)
        self._refresh_ms = refresh_ms
        self._timer.timeout.connect(self.refresh)
        self.plotItem.vb.sigXRangeChanged.connect(lambda *_: self.changed())
        self._apply_palette()

    # --- series ---
    def add_series(
        self,
        name: str,
        *,
        color: str | None = None,
        dashed: bool = False,
        symbol: bool = False,
        unique_x: bool = True,
        label: str | None = None,
    ) -> Series:
        """A new named series drawn as a line (``symbol``: also a marker at each point;
        ``unique_x``: see ``Series``; ``label``: the legend's words, default ``name``)."""
        series = Series(unique_x=unique_x)
        if color is None:  # a palette colour: it follows a switch between light and dark
            self._palette_colored.append(name)
        color = color or series_color(len(self._curves))
        pen = pg.mkPen(color=color, width=2, style=pg.QtCore.Qt.PenStyle.DashLine if dashed else None)
        item = self.plotItem.plot(
            [],
            [],
            pen=pen,
            name=label or name,
            symbol="o" if symbol else None,
            symbolSize=6,
            symbolBrush=color,
            symbolPen=None,
        )
        self._curves[name] = (series, item)
        self._labels[name] = label or name
        return series

    def series(self, name: str) -> Series:
        """The series called ``name``."""
        return self._curves[name][0]

    def has_series(self, name: str) -> bool:
        """True if a series called ``name`` exists."""
        return name in self._curves

    def remove_series(self, name: str) -> None:
        """Remove one series and its curve."""
        series, item = self._curves.pop(name)
        self._labels.pop(name, None)
        if name in self._palette_colored:
            self._palette_colored.remove(name)
        self.plotItem.removeItem(item)
        self.legend.removeItem(item)

    def names(self) -> list[str]:
        """The names of every series."""
        return list(self._curves)

    def clear_data(self) -> None:
        """Empty every series (the curves stay)."""
        for series, _ in self._curves.values():
            series.clear()
        self.refresh()

    def changed(self) -> None:
        """Schedule a redraw (coalesced; once a second for series of more than 10,000 points)."""
        if not self._timer.isActive():
            longest = max((len(series) for series, _ in self._curves.values()), default=0)
            self._timer.start(self._refresh_ms if longest <= LONG_SERIES else max(self._refresh_ms, 1000))

    def displayed_points(self, name: str) -> int:
        """How many points the curve ``name`` draws now (after decimation)."""
        x, _ = self._curves[name][1].getData()
        return 0 if x is None else len(x)

    # --- drawing ---
    def refresh(self) -> None:
        """Redraw every curve from its series: the visible range, decimated to the plot's width."""
        self._timer.stop()
        vb = self.plotItem.vb
        auto_x = vb.autoRangeEnabled()[0]
        (x0, x1), _ = vb.viewRange()
        width = max(200, int(vb.width() or self.width() or 600))
        max_points = int(width * self._max_points_per_pixel)
        for name, (series, item) in self._curves.items():
            self._show_in_legend(self._labels.get(name, name), item, len(series) > 0)
            x, y = series.x, series.y
            if not auto_x and len(x) > max_points:
                lo = max(0, int(np.searchsorted(x, x0, side="left")) - 1)
                hi = min(len(x), int(np.searchsorted(x, x1, side="right")) + 1)
                x, y = x[lo:hi], y[lo:hi]
            xd, yd = downsample_minmax(x, y, max_points)
            item.setData(xd.copy(), yd.copy())

    def _show_in_legend(self, name: str, item: pg.PlotDataItem, shown: bool) -> None:
        # A series without points (e.g. VRAM on a machine without NVIDIA GPU) stays out of the legend.
        listed = any(sample.item is item for sample, _ in self.legend.items)
        if shown and not listed:
            self.legend.addItem(item, name)
        elif not shown and listed:
            self.legend.removeItem(item)

    def follow_palette(self) -> None:
        """Redraw in the application's current palette (light or dark); the window calls it on a
        theme switch, since a hidden chart may miss the palette-change event."""
        self._apply_palette()

    def _apply_palette(self) -> None:
        palette = QApplication.palette(self)  # a hidden widget's own palette() may lag behind
        self.setBackground(palette.color(QPalette.ColorRole.Base))
        fg = palette.color(QPalette.ColorRole.WindowText)
        for axis in ("left", "bottom"):
            ax = self.plotItem.getAxis(axis)
            ax.setPen(pg.mkPen(fg))
            ax.setTextPen(pg.mkPen(fg))
        self.plotItem.setTitle(self._title, color=fg.name(), size="11pt")
        self.legend.setLabelTextColor(QColor(fg))
        behind = QColor(palette.color(QPalette.ColorRole.Base))
        behind.setAlpha(200)  # the legend stays readable where it covers a curve
        self.legend.setBrush(behind)
        colors = COLORS_DARK if is_dark(palette) else COLORS_LIGHT
        for index, name in enumerate(self._curves):
            if name in self._palette_colored:
                item = self._curves[name][1]
                color = colors[index % len(colors)]
                pen = pg.mkPen(item.opts["pen"])
                pen.setColor(QColor(color))
                item.setPen(pen)
                item.setSymbolBrush(color)
        for _sample, label in self.legend.items:  # re-colour the legend's text
            label.setText(label.text, color=fg.name())

    def resizeEvent(self, event: QResizeEvent) -> None:  # noqa: N802 (Qt override)
        """Hide the legend where the chart is too narrow for it (it would cover the curves and run
        past the edge); it shows again when the chart is widened."""
        super().resizeEvent(event)
        if hasattr(self, "legend"):
            self.legend.setVisible(self.width() >= LEGEND_MIN_WIDTH)

    def changeEvent(self, event: QEvent) -> None:  # noqa: N802 (Qt override)
        """Follow a system switch between light and dark palettes."""
        if event.type() == QEvent.Type.PaletteChange and hasattr(self, "legend"):
            self._apply_palette()
        super().changeEvent(event)
