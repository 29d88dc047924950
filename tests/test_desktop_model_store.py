"""Model page: the store's facts in everyday words, Remove with a confirmation, the import precision."""

from __future__ import annotations

import pytest

from backends import models
from backends.config import DEFAULT_MODEL


@pytest.fixture
def page(qtbot, tiny_model_dir):
    from desktop.pages.model_page import ModelPage
    from desktop.state import AppState

    models.import_model(tiny_model_dir, "tiny", copy=True)
    page = ModelPage(AppState())
    qtbot.addWidget(page)
    return page


def row_of(page, name: str) -> dict[str, str]:
    from desktop.pages.model_page import COLUMNS

    i = page.model_names().index(name)
    return {c: page.table.item(i, j).text() for j, c in enumerate(COLUMNS)}


def test_columns_say_architecture_precision_context_and_template(page):
    row = row_of(page, "tiny")
    assert row["Architecture"] == "Llama"
    assert row["Precision"] == "fp32 (full size)"
    assert row["Context"] == "2,048"
    assert row["Chat template"] == "yes"
    assert row["Parameters"].endswith("M") and row["Size on disk"].endswith("MB")


def test_remove_asks_first_then_removes_in_a_child_process(page, qtbot, monkeypatch):
    from PySide6.QtWidgets import QMessageBox

    page.select("tiny")
    assert page.remove_button.isEnabled()
    asked: list[str] = []

    def answer(reply):
        def question(parent, title, text, *args):
            asked.append(text)
            return reply

        return question

    monkeypatch.setattr(QMessageBox, "question", answer(QMessageBox.StandardButton.No))
    page.remove_button.click()
    assert "frees" in asked[0] and not page.is_busy() and "tiny" in page.model_names()

    monkeypatch.setattr(QMessageBox, "question", answer(QMessageBox.StandardButton.Yes))
    page.remove_button.click()
    assert page.is_busy() and not page.remove_button.isEnabled()
    qtbot.waitUntil(lambda: not page.is_busy(), timeout=60_000)
    assert "tiny" not in page.model_names(), page.status.text()
    assert "bytes freed" in page.status.text()
    assert page.state.model == DEFAULT_MODEL
    assert not (models.paths.models_dir() / "tiny").exists()
    page.select(DEFAULT_MODEL)  # the built-in default is not in the store yet: nothing to remove
    assert not page.remove_button.isEnabled()


def test_import_passes_the_chosen_precision_and_shows_its_percentage(page, monkeypatch):
    from desktop.pages import model_page

    started: list[list[str]] = []

    class Recorder(model_page.WorkerProcess):
        def start(self):
            started.append(self.args)

    monkeypatch.setattr(model_page, "WorkerProcess", Recorder)
    assert page.import_dtype() == "bf16"  # the default
    page.precision.setCurrentIndex([p[0] for p in model_page.PRECISIONS].index("fp32"))
    page.import_path("/models/x.Q4_K_M.gguf")
    assert started == [["models", "import", "/models/x.Q4_K_M.gguf", "--dtype", "fp32"]]
    page._on_log_line("Converting tensors to fp32: 45% (120/272)")
    assert (page.progress.minimum(), page.progress.maximum(), page.progress.value()) == (0, 100, 45)
