"""Defects a new user met (issue 21), each pinned by a test: Tab trapped in a table or a text box,
Start with unusable data, a run that never began left at "Starting…", a stale token histogram,
settings editable during a run, a log that does not follow, the memory chart's clock restarting at
resume, two different losses under one name, a quick test that says nothing, and an import that
grows a model without a word."""

from __future__ import annotations

import json
import sys

import pyqtgraph as pg
import pytest
from PySide6.QtCore import Qt
from PySide6.QtTest import QTest
from PySide6.QtWidgets import QApplication

from backends.config import config_from_dict
from backends.events import make_event
from backends.runs import RunDir
from desktop.main_window import MainWindow
from tests.test_desktop_monitor import started_event, step_event
from tests.test_desktop_window import fake_worker


@pytest.fixture
def window(qtbot):
    w = MainWindow(probe_hardware=False)
    qtbot.addWidget(w)
    w.build_all_pages()
    w.resize(1280, 820)
    w.show()
    yield w
    if w.training_running():
        w.train_page.worker.kill()
        w.train_page.worker.wait(10_000)


def press_tab(qtbot, widget) -> None:
    widget.setFocus()
    qtbot.waitUntil(widget.hasFocus, timeout=2000)
    QTest.keyClick(widget, Qt.Key.Key_Tab)


def test_tab_leaves_the_model_table(window, qtbot):
    window.show_page("model")
    table = window.model_page.table
    assert table.rowCount() >= 1
    press_tab(qtbot, table)
    assert not table.hasFocus(), "Tab stayed inside the model table"
    assert window.focusWidget() is not None


def test_tab_leaves_the_chat_text_boxes(window, qtbot):
    window.show_page("chat")
    chat = window.chat_page
    for box in (chat.prompt, chat.system_prompt):
        box.setPlainText("hello")
        press_tab(qtbot, box)
        assert not box.hasFocus(), f"Tab stayed in {box.accessibleName()}"
        assert "\t" not in box.toPlainText()


def test_start_is_refused_while_the_data_check_says_unusable(window, qtbot):
    data, train = window.data_page, window.train_page
    message = "bad.jsonl line 1: not valid JSON (Expecting value)"
    data._on_checked(None, message)  # what the data check's child process answers for a broken file
    window.show_page("train")
    assert not train.start_button.isEnabled()
    assert not train.start() and train.worker is None
    assert train.data_error.isVisible() and message in train.data_error.text()
    # A file whose every row is dropped is unusable too.
    data._on_checked({"rows_read": 3, "rows_kept": 0, "rows_dropped": 3}, "")
    assert not train.start_button.isEnabled() and "none of its 3 rows" in train.data_error.text()
    data._on_checked({"rows_read": 3, "rows_kept": 3, "rows_dropped": 0}, "")
    assert train.start_button.isEnabled() and not train.data_error.isVisible()


def test_a_run_that_never_began_does_not_stay_at_starting(window, qtbot, monkeypatch, tmp_path):
    script = tmp_path / "refuse.py"
    script.write_text(
        "import sys\nprint('error: /data/bad.jsonl:3: messages[0].role: unknown role', file=sys.stderr)\n"
        "sys.exit(1)\n"
    )
    from desktop import worker as worker_module

    monkeypatch.setattr(worker_module, "worker_command", lambda args: (sys.executable, [str(script)]))
    page = window.train_page
    assert page.start()
    qtbot.waitUntil(lambda: not page.is_running(), timeout=60_000)
    monitor = page.monitor
    assert "Starting" not in monitor.title.text() and "did not start" in monitor.title.text()
    assert "Preparing" not in monitor.progress.text()
    assert "messages[0].role: unknown role" in monitor.status.text()


def test_a_failed_check_clears_the_previous_files_histogram(window):
    data = window.data_page
    report = {
        "file": "good.jsonl",
        "format": "messages",
        "rows_read": 4,
        "rows_kept": 4,
        "histogram": {"bins": [0, 10, 20, 30], "counts": [1, 2, 1]},
    }
    data._on_checked(report, "")

    def bars():
        return [i for i in data.histogram.plotItem.items if isinstance(i, pg.BarGraphItem)]

    assert len(bars()) == 1
    data._on_checked(None, "other.jsonl line 2: not valid JSON")
    assert bars() == []


def test_settings_are_locked_while_a_run_trains(window, qtbot, monkeypatch, tmp_path):
    fake_worker(
        monkeypatch,
        tmp_path,
        """
        n = 0
        def on_term(*_):
            emit("stopped", step=n, checkpoint=None)
            sys.exit(130)
        signal.signal(signal.SIGTERM, on_term)
        while True:
            n += 1
            step(n)
            time.sleep(0.05)
        """,
    )
    page = window.train_page
    controls = [page.preset_box, page.method_editor, page.form, *page._change_buttons]
    assert all(c.isEnabled() for c in controls)
    assert page.start()
    qtbot.waitUntil(lambda: page.monitor.last_step >= 2, timeout=60_000)
    assert not any(c.isEnabled() for c in controls)
    assert not page.form.editors["training.learning_rate"].isEnabled()  # greyed with its form
    page.stop()
    qtbot.waitUntil(lambda: not page.is_running(), timeout=30_000)
    assert all(c.isEnabled() for c in controls)


def test_the_log_follows_new_lines_after_a_past_runs_log_was_shown(qtbot):
    """The Train page shows the latest run's log.txt when the app opens; a new line then must
    bring the view to the bottom (it stayed where the hidden page had laid it out)."""
    from backends import paths

    run = RunDir.create(config_from_dict({"model": "m"}), paths.runs_dir(), "earlier")
    _write_events(run, [started_event(str(run.path))])
    (run.path / "log.txt").write_text("\n".join(f"old line {i}" for i in range(300)))
    window = MainWindow(probe_hardware=False)
    qtbot.addWidget(window)
    window.build_all_pages()
    window.resize(1024, 640)
    window.show()
    window.show_page("train")
    monitor = window.train_page.monitor
    assert monitor.run_dir == str(run.path)
    bar = monitor.log.verticalScrollBar()
    for i in range(20):
        monitor.add_log(f"new line {i}")
    QApplication.processEvents()
    assert bar.maximum() > 0 and bar.value() == bar.maximum()
    window.show_page("runs")  # lines keep coming while the user looks elsewhere
    for i in range(200):
        monitor.add_log(f"hidden line {i}")
    window.show_page("train")
    QApplication.processEvents()
    assert bar.value() == bar.maximum()
    bar.triggerAction(bar.SliderAction.SliderToMinimum)  # the user scrolls up to read
    QApplication.processEvents()
    monitor.add_log("one more")
    QApplication.processEvents()
    assert bar.value() == 0  # new lines do not pull the view away


def _write_events(run: RunDir, events: list[dict]) -> None:
    with open(run.events_path, "w", encoding="utf-8") as fh:
        for e in events:
            fh.write(json.dumps(e) + "\n")


def test_the_memory_charts_time_goes_on_after_a_resume(qtbot, tmp_path):
    from desktop.run_monitor import RunMonitor

    run = RunDir.create(config_from_dict({"model": "tiny"}), tmp_path / "runs", "resumed")
    t0 = 1_000_000.0
    events = [{**started_event(str(run.path)), "time": t0}]
    events += [{**step_event(s, 2.0), "time": t0 + 60 * s} for s in range(1, 4)]  # minutes 1..3
    events.append({**make_event("stopped", step=3, checkpoint="checkpoints/step-3"), "time": t0 + 200})
    t1 = t0 + 86_400  # resumed the next day
    events.append({**started_event(str(run.path)), "time": t1})
    events += [{**step_event(s, 1.5), "time": t1 + 60 * (s - 3)} for s in range(4, 6)]
    _write_events(run, events)
    monitor = RunMonitor()
    qtbot.addWidget(monitor)
    monitor.load_run(run.path)
    x = list(monitor.memory_chart.series("worker RSS").x)
    assert x == pytest.approx([1, 2, 3, 4, 5]), x  # training minutes, continued; not 1, 2 (restarted)
    # Live: a resumed worker's process continues from the last point too.
    monitor.begin_process(t0=t1 + 500)
    monitor.add_system_sample({"time": t1 + 560, "ram_used": 1e9, "vram_used": None})
    assert monitor.memory_chart.series("system RAM used").x[-1] == pytest.approx(6.0)


def test_the_two_losses_have_different_plain_names(window, qtbot):
    from backends.training.loop import RECENT_LOSSES
    from desktop.pages.runs_page import COLUMNS

    monitor = window.train_page.monitor
    monitor.handle_event(started_event())
    monitor.handle_event(step_event(1, 2.5))
    monitor.refresh_charts()
    assert "this step's loss 2.5000" in monitor.stats.text()
    assert "Train loss" not in COLUMNS
    runs = window.runs_page
    column = next(c for c in COLUMNS if "loss" in c.lower() and "validation" not in c.lower())
    index = COLUMNS.index(column)
    assert "average" in column.lower()
    assert (
        f"average loss of the last {RECENT_LOSSES} steps" in runs.table.horizontalHeaderItem(index).toolTip()
    )
    monitor.handle_event(make_event("run_finished", step=1, adapter="a", train_loss=2.25, val_loss=None))
    assert f"average loss of the last {RECENT_LOSSES} steps 2.2500" in monitor.status.text()


def test_a_finished_quick_test_says_it_learned_little(qtbot, tmp_path):
    from desktop.run_monitor import RunMonitor

    for preset, said in (("quick-test", True), ("balanced", False)):
        run = RunDir.create(config_from_dict({"model": "tiny", "preset": preset}), tmp_path / "runs", preset)
        finished = make_event("run_finished", step=20, adapter="adapter", train_loss=2.9, val_loss=3.0)
        _write_events(run, [started_event(str(run.path), max_steps=20), step_event(20, 2.9), finished])
        monitor = RunMonitor()
        qtbot.addWidget(monitor)
        monitor.load_run(run.path)
        text = monitor.status.text()
        assert ("This was a quick test" in text and "too few" in text and "balanced" in text) is said, text


@pytest.mark.slow  # the smollm2_dir fixture imports the real model once a session
def test_importing_a_gguf_file_says_it_grows_and_by_how_much(qtbot, monkeypatch, smollm2_dir):
    from backends.model_store_info import folder_size
    from backends.models import default_gguf_path
    from desktop.pages import model_page
    from desktop.state import AppState

    gguf = default_gguf_path()
    note = model_page.size_note(gguf, "bf16")
    file_mb = gguf.stat().st_size / 1e6  # decimal MB, as the app says it
    assert f"{file_mb:.1f} MB file" in note and "unquantised in bf16" in note, note
    # The estimate is what the real import (the smollm2_dir fixture) stored, within 5 %.
    stored = float(note.split("about ")[1].split(" MB")[0]) * 1e6
    weights = sum(p.stat().st_size for p in smollm2_dir.glob("*.safetensors"))
    assert abs(stored - weights) / weights < 0.05, (stored, folder_size(smollm2_dir))

    class Recorder(model_page.WorkerProcess):
        def start(self):
            pass

    monkeypatch.setattr(model_page, "WorkerProcess", Recorder)
    page = model_page.ModelPage(AppState())
    qtbot.addWidget(page)
    page.import_path(str(gguf))
    assert note in page.status.text()  # said before the import starts
    page._on_log_line("Converting tensors to bf16: 45% (120/272)")
    assert "Unpacking the model for training: 45%" in page.status.text()
