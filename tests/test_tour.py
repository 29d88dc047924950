"""The first-run tour (pytest-qt, offscreen): five steps, each opening its page of the real main
window; Back and Next; skipped with Escape; shown once per profile (remembered in settings.ini)."""

from __future__ import annotations

from PySide6.QtCore import Qt

from backends.model_store_info import default_model_installed
from desktop.main_window import MainWindow
from desktop.tour import DEFAULT_MISSING, DEFAULT_READY, STEPS, start_tour_once, tour_done


def test_tour_walks_the_pages_and_is_shown_once(qtbot, tunedesk_home):
    window = MainWindow(probe_hardware=False)
    qtbot.addWidget(window)
    window.show()
    assert not tour_done()
    tour = start_tour_once(window)
    assert tour is not None and tour.isVisible() and window.current_page() == "model"
    assert len(STEPS) == 5 and not tour.back_button.isEnabled()
    installed = default_model_installed()
    assert (DEFAULT_READY in tour.text.text()) == installed and (
        DEFAULT_MISSING in tour.text.text()
    ) != installed
    seen = []
    for _ in STEPS[1:]:
        tour.next_button.click()
        seen.append(window.current_page())
    assert seen == ["data", "train", "chat", "runs"]
    assert tour.title.text() == "<h3>5 of 5: Keep and export</h3>"
    assert tour.next_button.text() == "Start using TuneDesk"
    tour.back_button.click()
    assert window.current_page() == "chat"
    tour.next_button.click()
    tour.next_button.click()  # the last step: back to the first page, the tour is over
    assert not tour.isVisible() and window.current_page() == "model"
    assert tour_done() and "tour" in (tunedesk_home / "settings.ini").read_text()
    assert start_tour_once(window) is None


def test_first_step_says_how_to_get_a_model_when_the_installer_left_it_out(qtbot, monkeypatch):
    import backends.model_store_info as info

    monkeypatch.setattr(info, "default_model_installed", lambda: False)
    window = MainWindow(probe_hardware=False)
    qtbot.addWidget(window)
    tour = start_tour_once(window)
    assert "HuggingFaceTB/SmolLM2-135M-Instruct and press Download" in tour.text.text()
    assert "{default}" not in tour.text.text()


def test_escape_skips_the_tour_for_good(qtbot, tunedesk_home):
    window = MainWindow(probe_hardware=False)
    qtbot.addWidget(window)
    window.show()
    tour = start_tour_once(window)
    tour.next_button.click()
    assert window.current_page() == "data"
    qtbot.keyClick(tour, Qt.Key.Key_Escape)
    assert not tour.isVisible() and tour_done()
    assert start_tour_once(window) is None
