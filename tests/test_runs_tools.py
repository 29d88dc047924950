"""The Runs page's toolbar (pytest-qt, offscreen): rename and notes stored in the run folder's
meta.json (the folder keeps its name, also while the run holds its lock), find and status filter,
sort, and two runs' settings compared with the differing keys first."""

from __future__ import annotations

import json
import os
import socket

import pytest
import yaml

from backends.events import make_event
from desktop.pages.runs_page import RunsPage
from desktop.run_notes import META_FILE, compare_configs, read_meta, write_meta
from desktop.state import AppState
from tests.test_desktop_monitor import started_event, step_event, write_run


def finished(val_loss: float, train_loss: float = 1.0):
    return make_event("run_finished", step=1, adapter="/x/adapter", train_loss=train_loss, val_loss=val_loss)


def evaluated(val_loss: float):
    return make_event("eval", step=1, val_loss=val_loss)


@pytest.fixture
def page(qtbot, tunedesk_home):
    runs = tunedesk_home / "runs"
    write_run(runs, "alpha", [started_event(), step_event(1, 2.0), evaluated(0.9), finished(0.9)])
    write_run(
        runs,
        "beta",
        [started_event(), step_event(1, 2.0), evaluated(0.4), finished(0.4)],
        train_file="faq.jsonl",
    )
    write_run(runs, "gamma", [started_event(), step_event(1, 2.0)], checkpoint_step=1)  # running
    config = runs / "beta" / "config.yaml"
    raw = yaml.safe_load(config.read_text(encoding="utf-8"))
    raw["training"]["learning_rate"] = 0.001
    raw["lora"]["rank"] = 4
    config.write_text(yaml.safe_dump(raw), encoding="utf-8")
    (runs / "gamma" / "run.lock").write_text(f"{socket.gethostname()} {os.getpid()}\n")
    p = RunsPage(AppState())
    qtbot.addWidget(p)
    p.runs = runs
    return p


def shown(page) -> list[str]:
    return [page.table.item(r, 0).text() for r in range(page.table.rowCount())]


def test_rename_and_notes_live_in_the_run_folder(page):
    gamma = str(page.runs / "gamma")
    page.select_paths([gamma])
    assert page.tools.rename_button.isEnabled() and not page.tools.compare_button.isEnabled()
    assert page.tools.rename("  Long  run on FAQ ") is True
    assert read_meta(gamma) == {"name": "Long run on FAQ", "notes": ""}
    assert os.path.isdir(gamma) and (page.runs / "gamma" / "run.lock").exists()  # folder untouched
    assert "Long run on FAQ" in shown(page) and "gamma" not in shown(page)
    assert page.selected_paths() == [gamma]  # the selection survives the redraw
    page.tools.edit_notes("learning rate 1e-3 was too high")
    row = shown(page).index("Long run on FAQ")
    assert page.table.item(row, 0).toolTip().endswith("learning rate 1e-3 was too high")
    # Another page reads the same folder: the name is not kept in the app's memory only.
    again = RunsPage(AppState())
    assert "Long run on FAQ" in shown(again)
    # An empty name goes back to the folder's; a broken meta.json never hides the run.
    page.tools.rename("")
    assert "gamma" in shown(page)
    (page.runs / "gamma" / META_FILE).write_text("{not json", encoding="utf-8")
    page.refresh()
    assert "gamma" in shown(page) and read_meta(gamma) == {"name": "", "notes": ""}
    with pytest.raises(FileNotFoundError):
        write_meta(page.runs / "nope", name="x")


def test_find_status_filter_and_sort(page):
    page.select_paths([str(page.runs / "alpha")])
    page.tools.edit_notes("baseline with defaults")
    page.tools.find.setText("BASELINE")
    assert shown(page) == ["alpha"]
    page.tools.find.setText("faq")  # the data file's name
    assert shown(page) == ["beta"]
    page.tools.find.setText("")
    page.tools.status.setCurrentIndex(page.tools.status.findData("running"))
    assert shown(page) == ["gamma"]
    page.tools.status.setCurrentIndex(page.tools.status.findData("all"))
    page.tools.sort.setCurrentText("Lowest validation loss")
    assert shown(page) == ["beta", "alpha", "gamma"]  # no validation loss yet: last
    page.tools.sort.setCurrentText("Name")
    assert shown(page) == ["alpha", "beta", "gamma"]


def test_compare_lists_the_differing_settings_first(page, qtbot):
    a, b = str(page.runs / "alpha"), str(page.runs / "beta")
    rows = compare_configs(a, b)
    differing = [r[0] for r in rows if r[3]]
    assert differing == ["data.train_file", "lora.rank", "training.learning_rate"]
    assert [r[0] for r in rows[:3]] == differing and not any(r[3] for r in rows[3:])
    page.select_paths([a, b])
    assert page.tools.compare_button.isEnabled() and not page.tools.rename_button.isEnabled()
    dialog = page.tools.compare()
    qtbot.addWidget(dialog)
    table = dialog.table_rows()
    names = [dialog.table.horizontalHeaderItem(j).text() for j in (1, 2)]
    assert sorted(names) == ["alpha", "beta"]
    by_run = [dict(zip(names, row[1:], strict=True)) for row in table[:3]]
    assert [row[0] for row in table[:3]] == differing
    assert by_run[1] == {"alpha": "16", "beta": "4"}
    assert by_run[2] == {"alpha": str(0.0002), "beta": "0.001"}
    assert by_run[0] == {"alpha": "data.jsonl", "beta": "faq.jsonl"}
    assert dialog.summary.text().startswith("3 setting(s) differ")
    assert json.dumps(table).count("data.train_file") == 1
