"""The real flow through the window, with real child processes: import the tiny model on the Model
page, check a dataset on the Data page (bad rows listed with their line numbers), press Start and
let the real training worker run 10 steps, Stop a run mid-way and Resume it."""

from __future__ import annotations

import html
import json
import re

import pytest
import yaml
from PySide6.QtCore import Qt

from desktop.main_window import MainWindow

RUN_TIMEOUT_MS = 300_000


def messages_rows(n: int) -> list[dict]:
    return [
        {
            "messages": [
                {"role": "user", "content": f"What is the status of order {1000 + i}?"},
                {
                    "role": "assistant",
                    "content": f"Hello! Order {1000 + i} ships tomorrow. Kind regards, Robin",
                },
            ]
        }
        for i in range(n)
    ]


def write_jsonl(path, rows) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return str(path)


@pytest.fixture
def window(qtbot):
    w = MainWindow(probe_hardware=False)
    qtbot.addWidget(w)
    w.build_all_pages()
    w.show()
    yield w
    if w.training_running():
        w.train_page.worker.kill()
        w.train_page.worker.wait(10_000)


def small_run_settings(window, max_steps: int) -> None:
    form = window.train_page.form
    form.set_value("training.max_steps", max_steps)
    form.set_value("training.batch_size", 2)
    form.set_value("training.max_seq_length", 128)
    form.set_value("training.eval_every", 5)
    form.set_value("training.save_every", 0)
    form.set_value("data.validation_fraction", 0.1)


def import_tiny_model(window, qtbot, tiny_model_dir) -> str:
    page = window.model_page
    window.show_page("model")
    page.import_path(str(tiny_model_dir))
    assert page.progress.isVisible()
    qtbot.waitUntil(lambda: not page.is_importing(), timeout=120_000)
    name = tiny_model_dir.name
    assert name in page.model_names(), page.status.text()
    row = page.model_names().index(name)
    assert page.table.item(row, 1).text().endswith("M")  # parameter count from the headers
    assert window.state.model == name
    return name


@pytest.mark.slow
def test_train_ten_steps_from_the_window(window, qtbot, tiny_model_dir, tmp_path):
    name = import_tiny_model(window, qtbot, tiny_model_dir)
    data = write_jsonl(tmp_path / "train.jsonl", messages_rows(24))
    window.state.set_data_file(data)
    window.show_page("train")
    small_run_settings(window, 10)
    page = window.train_page
    qtbot.mouseClick(page.start_button, Qt.MouseButton.LeftButton)
    assert page.is_running() and page.stop_button.isEnabled() and not page.start_button.isEnabled()
    qtbot.waitUntil(lambda: not page.is_running(), timeout=RUN_TIMEOUT_MS)

    monitor = page.monitor
    assert monitor.final_event and monitor.final_event["event"] == "run_finished", monitor.status.text()
    monitor.refresh_charts()
    loss = monitor.loss_chart.series("train loss")
    assert len(loss) == 10 and list(loss.x) == list(range(1, 11))
    assert monitor.loss_chart.displayed_points("train loss") == 10
    assert len(monitor.loss_chart.series("validation loss")) >= 2
    assert monitor.progress.maximum() == 10 and monitor.progress.value() == 10
    assert monitor.progress.text().endswith("(100%)")
    assert len(monitor.memory_chart.series("worker RSS")) == 10
    assert len(monitor.memory_chart.series("system RAM used")) >= 1  # sampled by the GUI
    assert "Finished at step 10" in monitor.status.text()

    run_name = monitor.run_dir.rsplit("/", 1)[-1]
    window.show_page("runs")
    assert window.runs_page.status_of(run_name) == "finished"
    # Settings saved per run: the run folder's config holds what the window set.
    config = yaml.safe_load(open(f"{monitor.run_dir}/config.yaml"))
    assert config["training"]["max_steps"] == 10 and config["training"]["batch_size"] == 2
    assert config["model"] == name and config["data"]["train_file"] == data


@pytest.mark.slow
def test_stop_mid_run_then_resume_finishes(window, qtbot, tiny_model_dir, tmp_path):
    window.state.set_model(str(tiny_model_dir))  # an HF folder path works as the model too
    window.state.set_data_file(write_jsonl(tmp_path / "train.jsonl", messages_rows(24)))
    small_run_settings(window, 40)
    page = window.train_page
    window.show_page("train")
    assert page.start()
    qtbot.waitUntil(lambda: page.monitor.last_step >= 2, timeout=RUN_TIMEOUT_MS)
    qtbot.mouseClick(page.stop_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: not page.is_running(), timeout=RUN_TIMEOUT_MS)
    monitor = page.monitor
    assert monitor.final_event and monitor.final_event["event"] == "stopped", monitor.status.text()
    stopped_at = monitor.final_event["step"]
    assert 2 <= stopped_at < 40
    run_dir = monitor.run_dir
    run_name = run_dir.rsplit("/", 1)[-1]
    window.runs_page.refresh()
    assert window.runs_page.status_of(run_name) == "stopped"
    assert page.resume_button.isEnabled()

    qtbot.mouseClick(page.resume_button, Qt.MouseButton.LeftButton)
    assert page.is_running()
    qtbot.waitUntil(lambda: not page.is_running(), timeout=RUN_TIMEOUT_MS)
    assert monitor.final_event and monitor.final_event["event"] == "run_finished", monitor.status.text()
    assert monitor.run_dir == run_dir
    loss = monitor.loss_chart.series("train loss")
    assert list(loss.x) == list(range(1, 41))  # the steps before the stop and after the resume
    assert monitor.progress.value() == 40 == monitor.progress.maximum()
    window.runs_page.refresh()
    assert window.runs_page.status_of(run_name) == "finished"


@pytest.mark.slow
def test_bad_rows_are_listed_with_row_numbers(window, qtbot, tiny_model_dir, tmp_path):
    rows = messages_rows(5)
    rows[1] = {"messages": [{"role": "user", "content": "no answer"}]}
    rows[3] = {"messages": [{"role": "user", "content": None}, {"role": "assistant", "content": "x"}]}
    window.state.set_model(str(tiny_model_dir))
    window.state.set_data_file(write_jsonl(tmp_path / "bad.jsonl", rows))
    page = window.data_page
    window.show_page("data")
    qtbot.waitUntil(lambda: page.report is not None or page.error is not None, timeout=120_000)
    assert page.report is not None, page.error
    assert page.report["rows_read"] == 5 and page.report["rows_kept"] == 3
    table = page.problem_rows()
    assert [(r[0], r[1]) for r in table] == [
        ("line 2", "messages[0].role"),
        ("line 4", "messages[0].content"),
    ]
    assert "null" in table[1][2]
    assert "3 kept" in page.summary.text() and "2 dropped" in page.summary.text()
    # The example shows the chat template's text with the trained answer highlighted.
    html = page.example.toHtml()
    highlighted = re.findall(r"background-color:[^>]*>([^<]*)<", html)
    assert highlighted and "Order 1000 ships tomorrow. Kind regards, Robin" in highlighted[0]
    assert not any("What is the status" in h for h in highlighted)  # the prompt is not trained on


@pytest.mark.slow
def test_a_failed_run_is_explained_in_plain_words(window, qtbot, tiny_model_dir, tmp_path):
    """fp16 with a huge learning rate overflows (as in tests/test_train_loop.py): the real worker
    reports run_failed and the window shows its message and hint."""
    window.state.set_model(str(tiny_model_dir))
    window.state.set_data_file(write_jsonl(tmp_path / "train.jsonl", messages_rows(24)))
    small_run_settings(window, 30)
    form = window.train_page.form
    form.set_value("training.precision", "fp16")
    form.set_value("training.learning_rate", 1000.0)
    form.set_value("training.lr_scheduler", "constant")
    page = window.train_page
    assert page.start()
    qtbot.waitUntil(lambda: not page.is_running(), timeout=RUN_TIMEOUT_MS)
    failed = page.monitor.final_event
    assert failed and failed["event"] == "run_failed" and failed["kind"] == "nan"
    text = html.unescape(page.monitor.status.text())  # the label holds escaped rich text
    assert failed["message"] in text and f"What to try: {failed['hint']}" in text
    assert "crashed" not in text
    window.runs_page.refresh()
    assert window.runs_page.status_of(page.monitor.run_dir.rsplit("/", 1)[-1]) == "failed"
