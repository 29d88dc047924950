"""The Chat page (pytest-qt, offscreen) with a real chat worker on the tiny model: the adapter picker
lists finished and stopped runs, side by side streams the base and the tuned reply, Stop ends a long
reply within a second, another adapter of the same base switches in the same worker, the
validation comparison fills its table, and a broken adapter shows an error naming its path."""

from __future__ import annotations

import os
import shutil
import signal
import time
from pathlib import Path

import pytest

from desktop.chat_page import BASE, TUNED, ChatPage, format_stats
from tests.chat_adapters import ANSWER, PROMPT, ROWS, make_peft_run, write_rows
from tests.test_chat_adapters import _run

TIMEOUT_MS = 240_000


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_model_dir):
    """Two finished runs on the tiny model (the first with validation data), built once."""
    base = tmp_path_factory.mktemp("chat-page")
    data = write_rows(base / "train.jsonl")
    secret = make_peft_run(
        base / "secret", tiny_model_dir, data={"train_file": str(data), "validation_fraction": 0.5}
    )
    banana = make_peft_run(base / "banana", tiny_model_dir, answer="The secret word is banana.")
    return {"secret": secret, "banana": banana}


@pytest.fixture
def runs_dir(tmp_path, trained):
    runs = tmp_path / "runs"
    runs.mkdir()
    for name, src in trained.items():
        shutil.copytree(src, runs / name)
    return runs


@pytest.fixture
def page(qtbot, runs_dir):
    p = ChatPage()
    qtbot.addWidget(p)
    p.set_runs_dir(runs_dir)
    p.resize(1200, 800)
    p.show()
    yield p
    p.shutdown()


def answer_tokens(tiny_model_dir):
    from transformers import AutoTokenizer

    return len(AutoTokenizer.from_pretrained(tiny_model_dir)(ANSWER, add_special_tokens=False)["input_ids"])


def test_picker_lists_finished_and_stopped_runs_and_modes(qtbot, page, runs_dir, tiny_model_dir):
    _run(runs_dir, "paused", final="stopped", adapter=False, checkpoint=True)
    _run(runs_dir, "broken", final="failed", adapter=False, checkpoint=True)
    _run(runs_dir, "live", adapter=False, checkpoint=True, lock=True)
    page.refresh()
    names = sorted(Path(p).name for p in page.adapters())
    assert names == ["banana", "paused", "secret"]
    assert page.adapter_combo.itemText(0).startswith("None")
    # Base model alone: one pane, no side by side.
    page.select_adapter(None)
    assert page.visible_streams() == [BASE] and not page.side_by_side.isEnabled()
    assert not page.model_combo.isHidden() and page.base_label.isHidden()
    page.select_adapter(str(runs_dir / "secret"))
    assert page.visible_streams() == [TUNED] and page.side_by_side.isEnabled()
    assert (
        page.model_combo.isHidden() and page.base_label.text() == f"<b>{tiny_model_dir.name}</b> (the run's)"
    )
    page.side_by_side.setChecked(True)
    assert page.visible_streams() == [BASE, TUNED]
    assert page.panes[TUNED].title.text() == "<b>Tuned: secret</b>"
    # Sampling settings are read from the controls and remembered for the next page.
    page.temperature.setValue(0.7)
    page.max_new_tokens.setValue(33)
    page.system_prompt.setPlainText("Be brief.")
    page._save_settings()
    again = ChatPage()
    qtbot.addWidget(again)
    assert again.sampling()["temperature"] == 0.7 and again.sampling()["max_new_tokens"] == 33
    assert again.system_prompt.toPlainText() == "Be brief."


def test_format_stats():
    text = format_stats(
        {"tokens": 42, "tokens_per_second": 35.14, "time_to_first_token": 0.123, "finish_reason": "stop"}
    )
    assert text == "42 tokens - 35.1 tokens/s - first token 0.12 s - stopped"


def test_side_by_side_stop_switch_and_compare_with_a_real_worker(qtbot, page, runs_dir, tiny_model_dir):
    n = answer_tokens(tiny_model_dir)
    page.select_adapter(str(runs_dir / "secret"))
    page.side_by_side.setChecked(True)
    page.max_new_tokens.setValue(n)
    page.prompt.setPlainText(PROMPT[0]["content"])
    page.send_button.click()
    assert page.busy() and page.stop_button.isEnabled() and not page.send_button.isEnabled()
    qtbot.waitUntil(lambda: not page.busy(), timeout=TIMEOUT_MS)
    assert page.banner_text() == ""
    tuned_text = page.panes[TUNED].view.toPlainText()
    base_text = page.panes[BASE].view.toPlainText()
    assert tuned_text.endswith("Tuned model:\n" + ANSWER)
    assert PROMPT[0]["content"] in base_text and ANSWER not in base_text
    assert page.panes[TUNED].messages[-1] == {"role": "assistant", "content": ANSWER}
    assert "tokens/s" in page.panes[TUNED].stats.text() and "tokens/s" in page.panes[BASE].stats.text()
    assert page.status.text().startswith("Ready: ") and "adapter secret" in page.status.text()
    pid = page.client.worker.pid()

    # Stop a long reply: it ends within a second of the click.
    page.new_button.click()
    page.side_by_side.setChecked(False)
    page.max_new_tokens.setValue(100_000)
    page.prompt.setPlainText("Tell me a very long story.")
    page.send_button.click()
    qtbot.waitUntil(lambda: len(page.panes[TUNED].view.toPlainText()) > 80, timeout=TIMEOUT_MS)
    t0 = time.perf_counter()
    page.stop_button.click()
    qtbot.waitUntil(lambda: not page.busy(), timeout=10_000)
    latency = time.perf_counter() - t0
    assert page.last_replies[TUNED]["finish_reason"] == "stop"
    assert latency < 1.0, f"stop took {latency:.3f} s"

    # Another adapter of the same base model switches inside the same worker process.
    page.select_adapter(str(runs_dir / "banana"))
    qtbot.waitUntil(lambda: "adapter banana" in page.status.text(), timeout=60_000)
    assert page.client.worker.pid() == pid
    page.max_new_tokens.setValue(n)
    page.prompt.setPlainText(PROMPT[0]["content"])
    page.send_button.click()
    qtbot.waitUntil(lambda: not page.busy(), timeout=TIMEOUT_MS)
    assert page.panes[TUNED].messages[-1]["content"] == "The secret word is banana."
    assert page.client.worker.pid() == pid

    # Compare on the run's validation prompts: prompt, reference, base reply, tuned reply.
    page.select_adapter(str(runs_dir / "secret"))
    page.tabs.setCurrentIndex(1)
    page.compare_n.setValue(5)
    page.compare_button.click()
    qtbot.waitUntil(lambda: page.table.rowCount() > 0 and not page.busy(), timeout=TIMEOUT_MS)
    assert page.table.rowCount() == 2  # half of the 4 rows are held out
    refs = dict(ROWS)
    for row in range(2):
        prompt, reference, base, tuned = (page.table.item(row, c).text() for c in range(4))
        assert reference == refs[prompt]
        assert base and tuned and base != tuned
        assert "tokens/s" in page.table.item(row, 3).toolTip()
    assert "from validation data" in page.compare_note.text() and page.compare_note.text().endswith("done")

    # General-ability probes (the forgetting check's) side by side in the same table.
    from backends.forgetting.probes import load_probes

    page.compare_n.setValue(3)
    page.probes_button.click()
    qtbot.waitUntil(lambda: page.table.rowCount() == 3 and not page.busy(), timeout=TIMEOUT_MS)
    probes = {p.prompt: p.category for p in load_probes()}
    categories = set()
    for row in range(3):
        prompt, reference, base, tuned = (page.table.item(row, c).text() for c in range(4))
        categories.add(probes[prompt])
        assert reference == f"(general probe: {probes[prompt]})" and base and tuned
    assert len(categories) == 3 and page.compare_note.text().endswith("done")

    # A worker that dies mid-reply is reported in words, and the page is usable again.
    page.tabs.setCurrentIndex(0)
    page.max_new_tokens.setValue(100_000)
    page.prompt.setPlainText("Tell me a very long story.")
    page.send_button.click()
    qtbot.waitUntil(lambda: len(page.panes[TUNED].view.toPlainText()) > 80, timeout=TIMEOUT_MS)
    os.kill(page.client.worker.pid(), signal.SIGKILL)  # from outside, as a crash would
    qtbot.waitUntil(lambda: not page.busy(), timeout=30_000)
    assert "chat process crashed" in page.banner_text() and page.send_button.isEnabled()
    assert not page.client.is_running() and "starts it again" in page.status.text()


def test_broken_adapter_shows_an_error_naming_the_path(qtbot, page, runs_dir, tiny_model_dir):
    (runs_dir / "banana" / "adapter" / "adapter_config.json").unlink()
    page.refresh()
    assert str(runs_dir / "banana") not in page.adapters()  # no longer offered
    page.select_adapter(str(runs_dir / "secret"))
    shutil.rmtree(runs_dir / "secret" / "adapter")  # gone after it was listed
    page.prompt.setPlainText("hi")
    page.send_button.click()
    qtbot.waitUntil(lambda: page.banner_text() != "" and not page.busy(), timeout=TIMEOUT_MS)
    assert str(runs_dir / "secret") in page.banner_text()
    assert page.send_button.isEnabled()
