"""Every page at a small (1024x640) and a large (1920x1080) screen with no widget cut off, in light
and dark; the dark switch (charts follow it); keyboard access to every control, with a name for
each; every setting in everyday words with its term beside them."""

from __future__ import annotations

import pytest
from PySide6.QtCore import Qt
from PySide6.QtGui import QPalette
from PySide6.QtTest import QTest
from PySide6.QtWidgets import QApplication, QLabel, QPushButton, QWidget

from backends.config import field_docs
from desktop.a11y import focusable
from desktop.charts import COLORS_DARK, COLORS_LIGHT
from desktop.main_window import PAGES, MainWindow
from desktop.screenshots import SCREENS, page_problems
from desktop.settings_words import PLAIN


@pytest.fixture
def window(qtbot):
    w = MainWindow(probe_hardware=False)
    qtbot.addWidget(w)
    w.build_all_pages()
    w.show()
    yield w
    w.set_theme("system", save=False)
    chat = w._pages.get("chat")
    if chat is not None:
        chat.shutdown()


def settle() -> None:
    for _ in range(3):
        QApplication.processEvents()


@pytest.mark.parametrize("theme", ["light", "dark"])
def test_no_widget_is_cut_off_at_either_screen_size(window, theme):
    window.set_theme(theme, save=False)
    problems = []
    for width, height in SCREENS:
        window.resize(width, height)
        settle()
        assert (window.width(), window.height()) == (width, height), "the window cannot take this size"
        for key in PAGES:
            window.show_page(key)
            settle()
            problems += [f"{width}x{height} {key}: {p}" for p in page_problems(window, key)]
        window.show_page("train")
        window.train_page.advanced_toggle.setChecked(True)  # the advanced settings open too
        settle()
        problems += [f"{width}x{height} train+advanced: {p}" for p in page_problems(window, "train")]
        window.train_page.advanced_toggle.setChecked(False)
    assert not problems, "\n".join(problems)


def test_dark_mode_switch_is_remembered_and_charts_follow(window):
    chart = window.train_page.monitor.loss_chart
    window.set_theme("dark")
    assert QApplication.palette().color(QPalette.ColorRole.Window).lightness() < 128
    assert chart.backgroundBrush().color().lightness() < 128
    pen = chart._curves["train loss"][1].opts["pen"]
    assert pen.color().name().lower() == COLORS_DARK[0].lower()
    assert window.state.settings.value("view/theme") == "dark"
    assert window.theme_actions["dark"].isChecked()
    window.set_theme("light")
    assert QApplication.palette().color(QPalette.ColorRole.Window).lightness() >= 128
    assert chart.backgroundBrush().color().lightness() >= 128
    assert chart._curves["train loss"][1].opts["pen"].color().name().lower() == COLORS_LIGHT[0].lower()
    # A new window opens in the remembered appearance.
    window.set_theme("dark")
    again = MainWindow(probe_hardware=False)
    assert again.theme.theme == "dark" and again.theme_actions["dark"].isChecked()
    again.set_theme("system")
    again.close()
    assert QApplication.palette().color(QPalette.ColorRole.Window).lightness() >= 128  # offscreen: light


def test_every_control_is_reached_by_tab_and_has_a_name(window, qtbot):
    window.resize(1280, 820)
    window.activateWindow()
    unnamed, unreached, no_enter = [], [], []
    for key in PAGES:
        window.show_page(key)
        settle()
        page = window.page(key)
        controls = [
            w for w in page.findChildren(QWidget) if w.isVisibleTo(page) and w.isEnabled() and focusable(w)
        ]
        unnamed += [f"{key}: {type(w).__name__}" for w in controls if not w.accessibleName()]
        no_enter += [
            f"{key}: {w.text()}" for w in controls if isinstance(w, QPushButton) and not w.autoDefault()
        ]
        start = controls[0]
        start.setFocus()
        qtbot.waitUntil(start.hasFocus, timeout=2000)
        seen = set()
        for _ in range(4 * len(controls) + 10):
            QTest.keyClick(QApplication.focusWidget(), Qt.Key.Key_Tab)
            seen.add(QApplication.focusWidget())
        unreached += [f"{key}: {w.accessibleName() or type(w).__name__}" for w in controls if w not in seen]
    assert not unnamed, unnamed
    assert not no_enter, f"Enter does not press: {no_enter}"
    assert not unreached, unreached


def test_every_setting_has_everyday_words_and_its_term(window):
    keys = {d["key"] for d in field_docs()}
    assert keys <= set(PLAIN), f"settings without everyday words: {sorted(keys - set(PLAIN))}"
    form = window.train_page.form
    editor = form.editors["lora.rank"]
    labels = [w.text() for w in form.findChildren(QLabel)]
    assert any("Adapter size" in t and "(rank)" in t for t in labels)
    assert any(t == PLAIN["lora.rank"][1] for t in labels)  # the one-line explanation under the field
    assert editor.widget.accessibleName() == "Adapter size"
    assert any("Passes over your data" in t and "(epochs)" in t for t in labels)
