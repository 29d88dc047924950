"""The forgetting check in the app (no ML imports): the Train page's monitor charts the drift of
eval-time checks and states the verdict, the Runs page shows every run's drift score."""

from __future__ import annotations

from backends.events import make_event
from desktop.pages.runs_page import COLUMNS, RunsPage
from desktop.run_monitor import RunMonitor
from desktop.state import AppState
from tests.test_desktop_monitor import started_event, step_event, write_run


def drift_event(step, score, verdict, size="quick", advice=()):
    return make_event(
        "forgetting",
        kl_mean=score,
        ppl_base=10.0,
        ppl_tuned=10.0,
        answers_changed=3,
        probes=12,
        score=score,
        verdict=verdict,
        size=size,
        step=step,
        advice=list(advice),
    )


def finished_event(step):
    return make_event("run_finished", step=step, adapter="/runs/r1/adapter", train_loss=0.5, val_loss=0.6)


def test_monitor_charts_drift_at_eval_steps_and_states_the_verdict(qtbot):
    monitor = RunMonitor()
    qtbot.addWidget(monitor)
    monitor.handle_event(started_event(max_steps=4))
    assert not monitor.drift_chart.isVisibleTo(monitor)
    for step, score in ((2, 0.02), (4, 0.4)):
        monitor.handle_event(step_event(step, 1.0))
        monitor.handle_event(drift_event(step, score, "little" if score < 0.1 else "large"))
    monitor.handle_event(
        drift_event(4, 0.4, "large", advice=["mix general examples into training: data.replay: 0.1"])
    )
    monitor.handle_event(finished_event(4))
    monitor.refresh_charts()
    series = monitor.drift_chart.series("drift score")
    assert monitor.drift_chart.isVisibleTo(monitor)
    assert list(series.x) == [2, 4] and list(series.y) == [0.02, 0.4]
    status = monitor.status.text()
    assert "General ability: large change" in status and "data.replay: 0.1" in status


def test_runs_page_shows_the_drift_score_of_each_run(qtbot, tmp_path, monkeypatch):
    runs = tmp_path / "runs"
    write_run(
        runs,
        "checked",
        [started_event(), step_event(1, 1.0), drift_event(1, 0.031, "little"), finished_event(1)],
    )
    write_run(runs, "unchecked", [started_event(), step_event(1, 1.0), finished_event(1)])
    monkeypatch.setenv("TUNEDESK_HOME", str(tmp_path))
    page = RunsPage(AppState())
    qtbot.addWidget(page)
    column = COLUMNS.index("Drift")
    shown = {page.table.item(r, 0).text(): page.table.item(r, column) for r in range(page.table.rowCount())}
    assert shown["checked"].text() == "0.031 little" and "3 of 12 probe answers" in shown["checked"].toolTip()
    assert shown["unchecked"].text() == "-"


def test_check_forgetting_button_runs_the_command_and_reports_its_error(qtbot, tmp_path, monkeypatch):
    """A finished run whose adapter folder is gone: the child command's error is shown in words."""
    from PySide6.QtWidgets import QMessageBox

    runs = tmp_path / "runs"
    write_run(runs, "lost", [started_event(), step_event(1, 1.0), finished_event(1)])
    monkeypatch.setenv("TUNEDESK_HOME", str(tmp_path))
    shown = []
    monkeypatch.setattr(QMessageBox, "warning", lambda *a: shown.append(a[2]))
    page = RunsPage(AppState())
    qtbot.addWidget(page)
    page.select_paths([str(runs / "lost")])
    assert page.check_button.isEnabled()
    page.check_button.click()
    assert page.check_button.text() == "Checking…" and not page.check_button.isEnabled()
    qtbot.waitUntil(lambda: bool(shown), timeout=120_000)
    assert "lost" in shown[0] and page.check_button.text() == "Check forgetting"
