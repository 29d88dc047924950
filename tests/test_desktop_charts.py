"""Charts keep every point but draw a decimated, peak-preserving view (smooth at 100,000 steps)."""

from __future__ import annotations

import numpy as np

from desktop.charts import Chart, Series, downsample_minmax


def test_series_keeps_all_points_and_truncates_on_rerun():
    s = Series(capacity=4)
    for step in range(1, 11):
        assert s.append(step, 10.0 - step)
    assert len(s) == 10 and s.x[-1] == 10 and s.y[0] == 9.0
    # A resumed run re-emits steps after its checkpoint (step 6): the old 6..10 are replaced.
    s.append(6, 0.5)
    assert list(s.x) == [1, 2, 3, 4, 5, 6] and s.y[-1] == 0.5
    assert not s.append(7, None) and not s.append(7, float("nan"))
    assert len(s) == 6


def test_downsample_minmax_bounds_points_and_keeps_spikes():
    x = np.arange(100_000, dtype=float)
    y = np.sin(x / 1000.0)
    y[31_337] = 50.0  # a loss spike
    y[77_777] = -50.0
    xd, yd = downsample_minmax(x, y, 2000)
    assert len(xd) <= 2000
    assert yd.max() == 50.0 and yd.min() == -50.0
    assert np.all(np.diff(xd) >= 0)  # still in x order
    # Short inputs are untouched.
    xs, ys = downsample_minmax(x[:100], y[:100], 2000)
    assert len(xs) == 100 and np.array_equal(ys, y[:100])


def test_chart_draws_a_bounded_number_of_points_for_100k_steps(qtbot):
    chart = Chart("Loss", "step", "loss")
    qtbot.addWidget(chart)
    chart.resize(600, 300)
    chart.show()
    series = chart.add_series("train loss")
    for step in range(1, 100_001):
        series.append(step, 1.0 / step)
    chart.refresh()
    assert len(series) == 100_000  # every point is kept
    drawn = chart.displayed_points("train loss")
    assert 0 < drawn <= 2 * max(600, chart.plotItem.vb.width())
    # Zoomed into steps 100..200, the view shows that range at full resolution.
    chart.plotItem.vb.setXRange(100, 200, padding=0)
    chart.refresh()
    x, _ = chart.plotItem.listDataItems()[0].getData()
    assert x.min() <= 100 and x.max() >= 200 and len(x) <= 110


def test_chart_follows_a_switch_to_a_dark_palette(qtbot):
    from PySide6.QtGui import QColor, QPalette
    from PySide6.QtWidgets import QApplication

    from desktop.charts import COLORS_DARK, is_dark, series_color

    app = QApplication.instance()
    old = app.palette()
    chart = Chart("Loss", "step", "loss")
    qtbot.addWidget(chart)
    dark = QPalette(old)
    dark.setColor(QPalette.ColorRole.Window, QColor(30, 30, 30))
    dark.setColor(QPalette.ColorRole.Base, QColor(20, 20, 20))
    dark.setColor(QPalette.ColorRole.WindowText, QColor(230, 230, 230))
    try:
        app.setPalette(dark)
        qtbot.waitUntil(lambda: chart.backgroundBrush().color() == QColor(20, 20, 20), timeout=2000)
        assert is_dark() and series_color(0) == COLORS_DARK[0]
    finally:
        app.setPalette(old)
