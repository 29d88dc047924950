"""The Chat page's conversation actions (pytest-qt, offscreen, no chat worker: the worker's commands
are captured): Regenerate resends the last message without the old reply, Copy puts the reply on
the clipboard, Save appends a ``messages`` row that ``tunedesk data check`` reads back as a valid
SFT row, Clear empties the panes, and the system prompt a run trained with is filled in."""

from __future__ import annotations

import json

import pytest
import yaml
from PySide6.QtWidgets import QApplication

from backends import cli
from desktop.chat_actions import chats_file, run_system_prompt
from desktop.chat_page import BASE, TUNED, ChatPage
from tests.test_chat_adapters import _run


@pytest.fixture
def page(qtbot, tmp_path, monkeypatch):
    runs = tmp_path / "runs"
    runs.mkdir()
    p = ChatPage()
    qtbot.addWidget(p)
    sent: list[dict] = []
    monkeypatch.setattr(p, "ensure_worker", lambda: None)
    monkeypatch.setattr(p.client, "send", sent.append)
    p.sent = sent
    p.set_runs_dir(runs)
    p.runs = runs
    p.resize(1100, 700)
    p.show()
    return p


def _reply(page, stream: str, text: str) -> None:
    """What the worker would report for the last generate command."""
    request = page.sent[-1]["id"]
    page._on_token(request, stream, text)
    page._on_reply_finished({"request": request, "stream": stream, "text": text, "tokens": 3})


def test_regenerate_copy_save_and_clear(page, tiny_model_dir, capsys):
    page.prompt.setPlainText("What is the capital of France?")
    page.send_button.click()
    assert not page.regenerate_button.isEnabled()  # a reply is being written
    _reply(page, BASE, "Paris.")
    assert page.regenerate_button.isEnabled() and page.save_button.isEnabled()

    # Regenerate: the same question goes out again, without the old reply in the history.
    page.prompt.setPlainText("half-typed next question")
    assert page.regenerate() is True
    cmd = page.sent[-1]
    assert cmd["cmd"] == "generate"
    assert cmd["streams"][0]["messages"] == [{"role": "user", "content": "What is the capital of France?"}]
    assert page.prompt.toPlainText() == "half-typed next question"  # what the user typed stays
    _reply(page, BASE, "The capital of France is Paris.")
    view = page.panes[BASE].view.toPlainText()
    assert "Paris.\n" not in view and view.count("You:") == 1
    assert view.endswith("The capital of France is Paris.")

    assert page.copy_reply() == "The capital of France is Paris."
    assert QApplication.clipboard().text() == "The capital of France is Paris."

    # Save: twice into the app's datasets folder, appended; the data check reads both rows back.
    page.system_prompt.setPlainText("Answer in one sentence.")
    out = page.save_conversation(chats_file())
    assert out == chats_file() and out.parent.name == "datasets"
    page.save_conversation(out)
    rows = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert rows[0] == {
        "messages": [
            {"role": "system", "content": "Answer in one sentence."},
            {"role": "user", "content": "What is the capital of France?"},
            {"role": "assistant", "content": "The capital of France is Paris."},
        ]
    }
    assert len(rows) == 2
    capsys.readouterr()
    code = cli.main(["data", "check", str(out), "--model", str(tiny_model_dir), "--json"])
    report = json.loads(capsys.readouterr().out)
    assert code == 0
    assert report["format"] == "messages" and report["rows_kept"] == 2 and report["rows_dropped"] == 0
    assert "The capital of France is Paris." in report["example"]["text"]

    # Clear: both panes empty, nothing left to save or copy.
    page.new_button.click()
    assert page.panes[BASE].messages == [] and page.panes[BASE].view.toPlainText() == ""
    assert not page.copy_button.isEnabled() and page.save_conversation(out) is None
    assert len(out.read_text(encoding="utf-8").splitlines()) == 2


def test_side_by_side_regenerate_drops_both_replies(page):
    run = _run(page.runs, "plain", final="finished")
    page.refresh()
    page.select_adapter(str(run))
    page.side_by_side.setChecked(True)
    page.prompt.setPlainText("hi")
    page.send()
    _reply(page, BASE, "base says hi")
    _reply(page, TUNED, "tuned says hi")
    assert page.last_reply() == "tuned says hi"  # the tuned pane is the one copied and saved
    page.regenerate()
    streams = {s["id"]: s["messages"] for s in page.sent[-1]["streams"]}
    assert streams == {BASE: [{"role": "user", "content": "hi"}], TUNED: [{"role": "user", "content": "hi"}]}


def test_the_runs_system_prompt_is_filled_in(page):
    page.system_prompt.setPlainText("my own prompt")
    trained = _run(page.runs, "pirate", final="finished")
    spec = {"template": None, "template_choice": "model", "system_prompt": "You are a pirate."}
    (trained / "prompt.json").write_text(json.dumps(spec), encoding="utf-8")
    plain = _run(page.runs, "plain", final="finished")
    assert run_system_prompt(trained) == "You are a pirate." and run_system_prompt(plain) is None
    # A run from before prompt.json: its config.yaml's data.system_prompt; the adapter's record wins.
    config = yaml.safe_load((plain / "config.yaml").read_text(encoding="utf-8"))
    config["data"]["system_prompt"] = "Be terse."
    (plain / "config.yaml").write_text(yaml.safe_dump(config), encoding="utf-8")
    assert run_system_prompt(plain) == "Be terse."
    meta = json.loads((plain / "adapter" / "tunedesk.json").read_text(encoding="utf-8"))
    meta["prompt"] = {**spec, "system_prompt": None}
    (plain / "adapter" / "tunedesk.json").write_text(json.dumps(meta), encoding="utf-8")
    assert run_system_prompt(plain) is None
    page.refresh()
    page.select_adapter(str(trained))
    assert page.system_prompt.toPlainText() == "You are a pirate."
    page.select_adapter(str(plain))
    assert page.system_prompt.toPlainText() == "my own prompt"
    page.select_adapter(str(trained))
    page.prompt.setPlainText("Ahoy?")
    page.send()
    assert page.sent[-1]["system"] == "You are a pirate."
