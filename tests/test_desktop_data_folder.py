"""The Data page's "Use a folder": `data from-folder` runs as a child process (the window imports
no ML stack) and its output becomes the chosen data file."""

from __future__ import annotations

import json
from pathlib import Path

from desktop.pages.data_page import DataPage, folder_summary
from desktop.state import AppState

TIMEOUT_MS = 180_000


def test_use_a_folder_makes_the_dataset_in_a_child_and_chooses_it(
    qtbot, tmp_path, tunedesk_home, tiny_model_dir
):
    folder = tmp_path / "handbook"
    folder.mkdir()
    (folder / "intro.md").write_text("# Handbook\n\nHow we answer customers: kindly, briefly, with a fix.\n")
    (folder / "faq.txt").write_text("Refunds take five working days once the parcel is back with us.\n")
    (folder / "photo.jpg").write_bytes(b"\xff\xd8\xff\0\0")
    state = AppState()
    page = DataPage(state)
    qtbot.addWidget(page)
    assert page.folder_button.menu() is not None and len(page.folder_button.menu().actions()) == 2
    page.use_folder(str(folder), "qa")
    assert not page.folder_button.isEnabled()
    qtbot.waitUntil(lambda: page.folder_button.isEnabled(), timeout=TIMEOUT_MS)
    out = Path(tunedesk_home) / "datasets" / "handbook-qa.jsonl"
    assert state.data_file == str(out) and page.path_edit.text() == str(out)
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert sorted(r["source"].split(":")[0] for r in rows) == ["faq.txt", "intro.md"]
    assert page.folder_report["skipped"] == [
        {"path": "photo.jpg", "reason": "not_text", "detail": "not a document or source file (.jpg)"}
    ]
    assert folder_summary(page.folder_report).startswith(f"From {folder}: 2 chunks from 2 files; 1 files")
    state.set_model(str(tiny_model_dir))
    page.run_check()  # (the window runs it when the page is shown): both rows are still empty
    qtbot.waitUntil(lambda: page.error is not None or page.report is not None, timeout=TIMEOUT_MS)
    assert page.error.startswith(
        f"{out}: no usable rows: 2 read, all dropped; first: line 1: completion: unfilled"
    )

    page.use_folder(str(tmp_path / "missing"), "text")
    qtbot.waitUntil(lambda: page.folder_button.isEnabled(), timeout=TIMEOUT_MS)
    assert "Cannot use this folder" in page.summary.text() and "no such folder" in page.summary.text()
    assert state.data_file == str(out)
