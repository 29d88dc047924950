"""Bringing data on the Data page (pytest-qt, offscreen): pasted examples become a JSONL file in the
app's datasets folder that the data check reads back; the preview table and the column drop-downs are
filled from the check's ``preview`` and ``columns`` (a fake check result: no child process), and a
changed drop-down re-runs the check with ``--columns`` and reaches the run config as
``data.columns``."""

from __future__ import annotations

import json

import pytest

from backends.config import DataConfig
from backends.data.check import check_file
from backends.errors import UserInputError
from desktop.data_columns import columns_arg
from desktop.data_paste import parse_pasted
from desktop.pages import data_page as data_page_module
from desktop.pages.data_page import DataPage
from desktop.state import AppState

PASTED = """Q: How do I reset my password?
A: Open Settings, choose Account,
then Reset password.

question: Can I pay by card?
answer: Yes, all major cards.

User: Hi
Assistant: Hello! How can I help?
User: Opening hours?
Assistant: 9 to 5, Monday to Friday.
"""

REPORT = {
    "file": "faq.csv",
    "format": "prompt_completion",
    "rows_read": 3,
    "rows_kept": 3,
    "rows_dropped": 0,
    "columns": {"prompt": "question", "completion": "answer"},
    "preview": {
        "columns": ["id", "question", "answer", "notes"],
        "rows": [
            ["1", "Hours?", "9 to 5", ""],
            ["2", "Card?", "Yes", "checked"],
            ["3", "Refund?", "30 days", ""],
        ],
    },
}


class FakeCheck:
    """Stands in for JsonCommand: records the arguments, answers with nothing."""

    started: list[list[str]] = []

    def __init__(self, args, parent=None):
        from PySide6.QtCore import QObject, Signal

        class _Sig(QObject):
            done = Signal(object, str)
            log_line = Signal(str)

        self._sig = _Sig()
        self.done, self.log_line, self.args = self._sig.done, self._sig.log_line, args

    def start(self):
        FakeCheck.started.append(self.args)

    def is_running(self):
        return False


def test_pasted_blocks_spreadsheet_columns_and_json_lines():
    rows = parse_pasted(PASTED)
    assert len(rows) == 3
    assert rows[0]["messages"][1] == {
        "role": "assistant",
        "content": "Open Settings, choose Account,\nthen Reset password.",
    }
    assert [m["role"] for m in rows[2]["messages"]] == ["user", "assistant", "user", "assistant"]
    assert parse_pasted("Hours?\t9 to 5\nCard?\tYes") == [
        {"messages": [{"role": "user", "content": "Hours?"}, {"role": "assistant", "content": "9 to 5"}]},
        {"messages": [{"role": "user", "content": "Card?"}, {"role": "assistant", "content": "Yes"}]},
    ]
    assert parse_pasted('{"prompt": "a", "completion": "b"}\n\n{"text": "c"}') == [
        {"prompt": "a", "completion": "b"},
        {"text": "c"},
    ]
    for text, words in (
        ("Q: one\nA: two\n\nQ: three\n", "pasted line 4: this question has no answer"),
        ("Q: one\nA: two\n\nwhat is this\n", "pasted line 4 does not start with Q: or A:"),
        ('{"prompt": "a"}\n{"prompt": b}', "pasted line 2 is not valid JSON"),
        ("Q: one\nQ: two\nA: x", "pasted line 2: two questions in a row"),
        ("Q: one\nA:   \n", "pasted line 2: the answer is empty"),
        ("  \n\n", "nothing pasted"),
    ):
        with pytest.raises(UserInputError, match=words):
            parse_pasted(text)


def test_paste_dialog_writes_a_file_the_check_reads(qtbot, tunedesk_home, tiny_model_dir):
    state = AppState()
    page = DataPage(state)
    qtbot.addWidget(page)
    dialog = page.paste_examples()
    dialog.text.setPlainText("Q: one\nA: two\n\nnot an example")
    dialog.accept()
    assert dialog.isVisible() and "pasted line 4" in dialog.error.text()  # stays open, says where
    dialog.text.setPlainText(PASTED)
    dialog.accept()
    path = dialog.path
    assert not dialog.isVisible() and path.parent == tunedesk_home / "datasets" and path.suffix == ".jsonl"
    assert state.data_file == str(path) and page.path_edit.text() == str(path)
    assert len(path.read_text(encoding="utf-8").splitlines()) == 3
    report = check_file(path, str(tiny_model_dir))
    assert report["format"] == "messages" and report["rows_kept"] == 3 and report["rows_dropped"] == 0


def test_preview_table_and_column_mapping(qtbot, tunedesk_home, monkeypatch):
    monkeypatch.setattr(data_page_module, "JsonCommand", FakeCheck)
    FakeCheck.started = []
    state = AppState()
    page = DataPage(state)
    qtbot.addWidget(page)
    page._on_checked(REPORT, "")
    cmap = page.column_map
    assert cmap.mapping() == {"prompt": "question", "completion": "answer"}
    assert [cmap.table.horizontalHeaderItem(j).text() for j in range(4)] == [
        "id",
        "question → prompt",
        "answer → completion",
        "notes",
    ]
    assert cmap.table.rowCount() == 3 and cmap.table.item(1, 3).text() == "checked"
    assert [cmap.combos["prompt"].itemText(i) for i in range(5)] == [
        "(not used)",
        "id",
        "question",
        "answer",
        "notes",
    ]

    # The user says the answer is in "notes": the mapping is kept and the check runs again with it.
    cmap.choose("completion", "notes")
    assert state.data_columns == {"prompt": "question", "completion": "notes"}
    page.run_check()
    args = FakeCheck.started[-1]
    assert args[args.index("--columns") + 1] == "prompt=question,completion=notes"
    assert columns_arg({"prompt": "q", "input": ""}) == "prompt=q"
    # A check that fails with the user's mapping keeps the drop-downs, to choose again.
    page._on_checked(None, "faq.csv: line 2: completion: empty")
    assert list(cmap.combos) == ["prompt", "completion"] and "choose other columns" in cmap.note.text()
    # Remembered for the next session; another file starts from its own detection.
    assert AppState().data_columns == {"prompt": "question", "completion": "notes"}
    state.set_data_file(str(tunedesk_home / "other.jsonl"))
    assert state.data_columns == {} and AppState().data_columns == {}

    # A failed check empties the preview; a report without a mapping offers question and answer.
    page._on_checked(None, "faq.csv: cannot read")
    assert cmap.table.rowCount() == 0 and cmap.combos == {}
    page._on_checked({**REPORT, "columns": {}}, "")
    assert list(cmap.combos) == ["prompt", "completion"] and cmap.mapping() == {
        "prompt": "",
        "completion": "",
    }
    assert "could not tell which column" in cmap.note.text()


@pytest.mark.skipif("columns" not in DataConfig.model_fields, reason="data.columns is not in the schema yet")
def test_the_mapping_goes_into_the_run_config(qtbot, tunedesk_home):
    from desktop.pages.train_page import TrainPage

    state = AppState()
    page = TrainPage(state)
    qtbot.addWidget(page)
    state.set_data_columns({"prompt": "question", "completion": "answer"})
    assert page.build_config()["data"]["columns"] == {"prompt": "question", "completion": "answer"}
    assert json.dumps(page.build_config()).count("question") == 1


@pytest.mark.skipif("columns" not in DataConfig.model_fields, reason="data.columns is not in the schema yet")
def test_real_check_fills_the_preview_and_a_new_mapping_is_applied(qtbot, tmp_path, tiny_model_dir):
    """The real `tunedesk data check --json` in a child process: a CSV of question/answer columns is
    detected, shown, and remapped (the answer taken from another column) with --columns."""
    csv = tmp_path / "faq.csv"
    csv.write_text(
        "id,question,answer,better\n"
        "1,What are your hours?,9 to 5,Nine to five on weekdays\n"
        "2,Can I pay by card?,Yes,Yes: Visa and Mastercard\n",
        encoding="utf-8",
    )
    state = AppState()
    state.set_model(str(tiny_model_dir))
    state.set_data_file(str(csv))
    page = DataPage(state)
    qtbot.addWidget(page)
    page.run_check()
    qtbot.waitUntil(lambda: not page.is_checking(), timeout=120_000)
    assert page.report is not None, page.error
    cmap = page.column_map
    assert cmap.mapping() == {"prompt": "question", "completion": "answer"}
    assert cmap.source_columns == ["id", "question", "answer", "better"]
    assert cmap.table.item(1, 3).text() == "Yes: Visa and Mastercard"
    cmap.choose("completion", "better")
    page.run_check()
    assert page.check_args[page.check_args.index("--columns") + 1] == "prompt=question,completion=better"
    qtbot.waitUntil(lambda: not page.is_checking(), timeout=120_000)
    assert page.report is not None, page.error
    assert page.report["columns"] == {"prompt": "question", "completion": "better"}
    assert "Nine to five on weekdays" in page.report["example"]["text"]
    assert cmap.mapping() == {"prompt": "question", "completion": "better"}
