"""The memory plan in the app: the Train page shows the verdict and peak before Start, a
suggestion's button applies its settings, and the Model page shows a fit badge per model. The
model is a folder holding only a Llama-3.2-1B-shaped config.json: the plan needs nothing else."""

from __future__ import annotations

import json

import pytest

from backends import plan
from desktop.main_window import MainWindow
from desktop.pages.model_page import FIT_COLUMN
from tests.test_memory_plan import LLAMA_1B


@pytest.fixture
def shape_only_model(tmp_path):
    folder = tmp_path / "llama-1b-shape"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(LLAMA_1B), encoding="utf-8")
    return folder


def test_train_page_plan_and_one_click_suggestion(qtbot, monkeypatch, shape_only_model):
    # This machine's free memory is replaced by 6 GB so the 1B model at batch 4 x 1024 does not fit.
    monkeypatch.setattr(plan, "available_memory", lambda target: 6 * plan.GB)
    window = MainWindow(probe_hardware=False)
    qtbot.addWidget(window)
    window.build_all_pages()
    page = window.train_page
    window.state.set_model(str(shape_only_model))
    page.form.set_value("training.batch_size", 4)
    page.form.set_value("training.max_seq_length", 1024)
    page.form.set_value("training.gradient_checkpointing", False)
    page.refresh_plan()
    panel = page.plan_panel
    assert panel.result is not None and panel.result.verdict == "does_not_fit"
    assert "Does not fit" in panel.label.text() and "GB" in panel.label.text()
    shown = [b for b in panel.buttons if not b.isHidden()]
    assert shown and shown[0].text().startswith("Use ")
    first = panel.result.suggestions[0]["changes"]
    shown[0].click()
    for key, value in first.items():
        assert page.form.editors[key].value() == value
    assert panel.result.verdict == "fits"  # the plan was recomputed with the applied settings

    window.model_page.refresh()
    table = window.model_page.table
    row = next(i for i in range(table.rowCount()) if table.item(i, 0).text() == str(shape_only_model))
    # default settings (batch 4 x 1024) do not fit in 6 GB, a suggestion does
    assert table.item(row, FIT_COLUMN).text() == "~ fits with changes"
    assert "It fits with: " in table.item(row, FIT_COLUMN).toolTip()
