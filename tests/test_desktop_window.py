"""The main window: defaults a first-time user can start from, remembered choices and geometry,
the hardware header, a crashed worker in plain words, and closing during training.

Protocol edge cases (a worker killed without a final event, a worker that takes SIGTERM) use a
small stand-in child process speaking the real event schema; the real training worker is
driven in tests/test_desktop_flow.py.
"""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import pytest
from PySide6.QtWidgets import QApplication, QMessageBox

from backends import hardware
from backends.config import DEFAULT_MODEL
from desktop import worker as worker_module
from desktop.main_window import MainWindow
from desktop.state import sample_data_path


@pytest.fixture
def make_window(qtbot):
    def make():
        window = MainWindow(probe_hardware=False)
        qtbot.addWidget(window)
        window.build_all_pages()
        window.show()
        return window

    return make


def fake_worker(monkeypatch, tmp_path, body: str) -> None:
    """Run ``body`` (Python, with ``emit(name, **fields)``) as the training worker."""
    script = tmp_path / "fake_worker.py"
    script.write_text(
        textwrap.dedent(
            """
            import os, signal, sys, time
            from backends.events import encode, make_event

            def emit(name, **fields):
                print(encode(make_event(name, **fields)), flush=True)

            def step(n):
                emit("step", step=n, epoch=n / 100, loss=3.0 - n / 100, learning_rate=1e-4, grad_norm=1.0,
                     tokens=10 * n, tokens_per_second=100.0, elapsed=float(n), eta=1.0,
                     memory={"rss": 1000, "device_allocated": None, "device_peak": None})

            emit("run_started", run_dir=sys.argv[-1], backend="torch", device="cpu", model="m", method="sft",
                 params_total=100, params_trainable=10, max_steps=100)
            """
        )
        + textwrap.dedent(body)
    )
    run_dir = str(tmp_path / "fake-run")

    def command(args):
        return sys.executable, [str(script), run_dir]

    monkeypatch.setattr(worker_module, "worker_command", command)


def test_defaults_let_a_first_time_user_start_at_once(make_window):
    window = make_window()
    assert window.state.model == DEFAULT_MODEL
    assert window.state.data_file == str(sample_data_path()) and Path(window.state.data_file).is_file()
    page = window.train_page
    assert page.preset_box.currentData() == "balanced"
    assert not page.advanced.isVisible()  # advanced settings collapsed
    raw = page.build_config()
    assert raw["model"] == DEFAULT_MODEL and raw["preset"] == "balanced"
    assert raw["data"]["train_file"] == str(sample_data_path())
    assert page.start_button.isEnabled() and not page.stop_button.isEnabled()
    assert window.current_page() == "model"


def test_choices_and_geometry_are_remembered(make_window, qtbot, tmp_path):
    window = make_window()
    window.resize(760, 640)  # inside the offscreen screen (800 x 800), so no clamping
    window.train_page.preset_box.setCurrentIndex(window.train_page.preset_box.findData("quality"))
    window.state.set_model(str(tmp_path / "some-model"))
    window.train_page.form.set_value("training.batch_size", 3)
    window.train_page.state.save_train_choices("quality", "sft", window.train_page.form.overrides())
    window.show_page("runs")
    window.close()
    again = make_window()
    assert (again.width(), again.height()) == (760, 640)
    assert again.current_page() == "runs"
    assert again.state.model == str(tmp_path / "some-model")
    assert again.train_page.preset_box.currentData() == "quality"
    assert again.train_page.form.editors["training.batch_size"].value() == 3
    assert again.train_page.form.editors["lora.rank"].value() == 32  # quality preset, not edited


def test_header_names_device_memory_and_backend(qtbot):
    window = MainWindow(probe_hardware=False)
    qtbot.addWidget(window)
    qtbot.waitUntil(lambda: window.header.final, timeout=20_000)
    expected = hardware.summary_line(hardware.detect(probe_frameworks=False))
    assert window.header.summary.text() == expected
    assert "GB" in expected


def test_a_worker_dying_without_an_event_is_reported_as_a_crash(make_window, qtbot, monkeypatch, tmp_path):
    fake_worker(
        monkeypatch,
        tmp_path,
        """
        step(1)
        step(2)
        print("loading shard 3 of 4", file=sys.stderr, flush=True)
        os.kill(os.getpid(), signal.SIGKILL)
        """,
    )
    window = make_window()
    page = window.train_page
    assert page.start()
    qtbot.waitUntil(lambda: not page.is_running(), timeout=60_000)
    text = page.monitor.status.text()
    assert "The training process crashed" in text and "loading shard 3 of 4" in text
    assert len(page.monitor.loss_chart.series("train loss")) == 2
    assert page.start_button.isEnabled()


def _answer_dialog(qtbot, button_text: str) -> None:
    def click():
        box = QApplication.activeModalWidget()
        assert isinstance(box, QMessageBox) and box.objectName() == "closeDuringTraining"
        for button in box.buttons():
            if button_text in button.text():
                button.click()
                return
        raise AssertionError(f"no {button_text!r} button in {[b.text() for b in box.buttons()]}")

    qtbot.waitUntil(lambda: isinstance(QApplication.activeModalWidget(), QMessageBox), timeout=10_000)
    click()


def test_closing_during_training_asks_stop_and_save_or_cancel(make_window, qtbot, monkeypatch, tmp_path):
    fake_worker(
        monkeypatch,
        tmp_path,
        """
        n = 0
        def on_term(*_):
            emit("checkpoint", step=n, path="checkpoints/step-%d" % n)
            emit("stopped", step=n, checkpoint="checkpoints/step-%d" % n)
            sys.exit(130)
        signal.signal(signal.SIGTERM, on_term)
        while True:
            n += 1
            step(n)
            time.sleep(0.05)
        """,
    )
    window = make_window()
    page = window.train_page
    page.start()
    qtbot.waitUntil(lambda: page.monitor.last_step >= 3, timeout=60_000)
    from PySide6.QtCore import QTimer

    QTimer.singleShot(0, lambda: _answer_dialog(qtbot, "Cancel"))
    window.close()
    assert window.isVisible() and page.is_running()  # cancelled: keeps training
    QTimer.singleShot(0, lambda: _answer_dialog(qtbot, "Stop and save"))
    window.close()
    qtbot.waitUntil(lambda: not window.isVisible(), timeout=30_000)
    assert not page.is_running()
    assert page.monitor.final_event["event"] == "stopped"
    assert "Stopped at step" in page.monitor.status.text()


def test_train_again_with_a_past_runs_settings(make_window, tmp_path):
    from backends import paths
    from backends.config import config_from_dict
    from backends.runs import RunDir

    data = tmp_path / "mine.jsonl"
    data.write_text("{}\n")
    config = config_from_dict(
        {
            "preset": "quality",
            "model": "some-model",
            "data": {"train_file": str(data)},
            "training": {"batch_size": 3},
        }
    )
    run = RunDir.create(config, paths.runs_dir(), "earlier-run")
    window = make_window()
    runs = window.runs_page
    runs.refresh()
    runs.select_paths([str(run.path)])
    assert runs.settings_button.isEnabled()
    runs.settings_button.click()
    page = window.train_page
    assert window.current_page() == "train"
    assert page.preset_box.currentData() == "quality"
    assert window.state.model == "some-model" and window.state.data_file == str(data)
    # Only what differs from the preset counts as an edit.
    assert page.form.overrides() == {"training.batch_size": 3}
    assert page.form.editors["lora.rank"].value() == 32


@pytest.mark.slow
def test_header_takes_the_backend_from_the_hardware_child_process(qtbot):
    import json
    import subprocess

    window = MainWindow(probe_hardware=True)
    qtbot.addWidget(window)
    qtbot.waitUntil(lambda: window.header.final, timeout=120_000)
    out = subprocess.run(
        [sys.executable, "-m", "desktop", "hardware", "--json"], capture_output=True, text=True, timeout=120
    )
    info = json.loads(out.stdout)
    assert window.header.summary.text() == hardware.summary_line(info)
    assert info["reason"] in window.header.reason.text()
    window.close()


def _answer_question(button) -> None:
    from PySide6.QtCore import QTimer

    def answer():
        box = QApplication.activeModalWidget()
        if isinstance(box, QMessageBox):
            box.button(button).click()
        else:
            QTimer.singleShot(20, answer)

    QTimer.singleShot(0, answer)


def test_runs_page_deletes_only_after_confirmation(make_window):
    from backends import paths
    from backends.config import config_from_dict
    from backends.runs import RunDir

    run = RunDir.create(config_from_dict({"model": "m"}), paths.runs_dir(), "to-delete")
    window = make_window()
    runs = window.runs_page
    runs.refresh()
    runs.select_paths([str(run.path)])
    _answer_question(QMessageBox.StandardButton.Cancel)
    assert not runs.delete_selected() and run.path.is_dir()
    runs.select_paths([str(run.path)])
    _answer_question(QMessageBox.StandardButton.Yes)
    assert runs.delete_selected() and not run.path.exists()
    assert runs.status_of("to-delete") is None


def test_drag_and_drop_of_models_and_data(qtbot, tmp_path):
    from PySide6.QtCore import QMimeData, QPointF, Qt, QUrl
    from PySide6.QtGui import QDragEnterEvent, QDropEvent

    from desktop.pages.data_page import DataPage
    from desktop.pages.model_page import ModelPage, importable
    from desktop.state import AppState

    folder = tmp_path / "hf-model"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    gguf = tmp_path / "m.Q4_0.gguf"
    gguf.write_bytes(b"GGUF")
    other = tmp_path / "notes.txt"
    other.write_text("x")
    assert importable(folder) and importable(gguf) and not importable(other) and not importable(tmp_path)

    def drag(widget, path):
        mime = QMimeData()
        mime.setUrls([QUrl.fromLocalFile(str(path))])
        enter = QDragEnterEvent(
            QPointF(5, 5).toPoint(),
            Qt.DropAction.CopyAction,
            mime,
            Qt.MouseButton.LeftButton,
            Qt.KeyboardModifier.NoModifier,
        )
        widget.dragEnterEvent(enter)
        return enter.isAccepted(), mime

    state = AppState()
    models = ModelPage(state)
    qtbot.addWidget(models)
    assert drag(models, gguf)[0] and drag(models, folder)[0]
    assert not drag(models, other)[0]
    data = DataPage(state)
    qtbot.addWidget(data)
    accepted, mime = drag(data, other)
    assert accepted
    drop = QDropEvent(
        QPointF(5, 5),
        Qt.DropAction.CopyAction,
        mime,
        Qt.MouseButton.LeftButton,
        Qt.KeyboardModifier.NoModifier,
    )
    data.dropEvent(drop)
    assert state.data_file == str(other) and data.path_edit.text() == str(other)
