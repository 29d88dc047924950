"""The Chat page's conversation actions: Regenerate the last reply, Copy it, Save the conversation
as training data, and the system prompt a run trained with, filled in when its adapter is chosen.
A mixin of ``desktop.chat_page.ChatPage`` (it uses the page's panes, prompt box, ``send`` and
``system_prompt``).

Saved conversations are one JSON line each in the ``messages`` format the data pipeline reads
(``backends/data/formats.py``): ``{"messages": [{"role": "system"|"user"|"assistant", "content":
str}, ...]}``, appended to a JSONL file (by default ``<TUNEDESK_HOME>/datasets/chats.jsonl``), so good
answers become rows of the next training run.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import yaml
from PySide6.QtGui import QGuiApplication
from PySide6.QtWidgets import QFileDialog, QHBoxLayout, QPushButton

from desktop.chat_views import BASE, TUNED, ChatPane
from desktop.data_paste import datasets_dir

CHATS_FILE = "chats.jsonl"


def chats_file() -> Path:
    """Where Save puts conversations unless the user picks another file: the app's datasets folder."""
    return datasets_dir() / CHATS_FILE


def _read(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
        value = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (OSError, ValueError, yaml.YAMLError):
        return {}
    return value if isinstance(value, dict) else {}


def run_system_prompt(run_dir: str | Path | None) -> str | None:
    """The system prompt a run trained with; None when it had none. Read from the files alone, in
    the order of ``backends.data.run_prompt.spec_for_run`` (which the GUI cannot import: it loads
    transformers for templates): ``adapter/tunedesk.json``'s ``prompt``, the run's ``prompt.json``,
    then ``config.yaml``'s ``data.system_prompt``."""
    if not run_dir:
        return None
    run = Path(run_dir)
    meta = _read(run / "adapter" / "tunedesk.json").get("prompt")
    for spec in (meta if isinstance(meta, dict) else None, _read(run / "prompt.json") or None):
        if spec is not None:
            return str(spec.get("system_prompt") or "") or None
    data = _read(run / "config.yaml").get("data")
    if not isinstance(data, dict):
        return None
    return str(data.get("system_prompt") or "") or None


def append_row(path: str | Path, messages: list[dict[str, str]]) -> Path:
    """Append one ``{"messages": [...]}`` line to the JSONL file ``path`` (created with its folder
    when missing; a last line without its newline is completed first). Returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    line = json.dumps({"messages": messages}, ensure_ascii=False) + "\n"
    with open(path, "a+b") as fh:
        fh.seek(0, os.SEEK_END)
        if fh.tell() > 0:
            fh.seek(-1, os.SEEK_END)
            if fh.read(1) != b"\n":
                fh.write(b"\n")
        fh.write(line.encode("utf-8"))
        fh.flush()
        os.fsync(fh.fileno())
    return path


def render_pane(pane: ChatPane, assistant: str) -> None:
    """Redraw ``pane``'s transcript from its ``messages`` (speaker ``assistant`` for replies)."""
    pane.view.clear()
    for m in pane.messages:
        pane.view.begin_turn("You" if m["role"] == "user" else assistant)
        pane.view.append_text(m["content"])


class ChatActions:
    """Regenerate, Copy, Save, and the run's system prompt."""

    _prefilled_system: str | None = None

    def _action_row(self) -> QHBoxLayout:
        """Regenerate, Copy reply and Save…, in a row under the conversation."""
        layout = QHBoxLayout()
        self.regenerate_button = QPushButton("Regenerate")
        self.regenerate_button.setToolTip("Write the last reply again (with the current settings)")
        self.copy_button = QPushButton("Copy reply")
        self.copy_button.setToolTip("Copy the last reply to the clipboard")
        self.save_button = QPushButton("Save as training data…")
        self.save_button.setToolTip(
            "Add this conversation as one example (a 'messages' row) to a JSONL file you can train on; "
            "an existing file gets the row appended"
        )
        for button in (self.regenerate_button, self.copy_button, self.save_button):
            layout.addWidget(button)
        layout.addStretch(1)
        self.regenerate_button.clicked.connect(self.regenerate)
        self.copy_button.clicked.connect(self.copy_reply)
        self.save_button.clicked.connect(self._pick_save_file)
        return layout

    # --- which pane ---
    def main_pane(self) -> ChatPane:
        """The pane whose conversation Copy and Save use: the tuned one when shown, else the base."""
        return self.panes[TUNED] if not self.panes[TUNED].isHidden() else self.panes[BASE]

    def last_reply(self) -> str:
        """The last reply in the main pane ("" when none)."""
        return next(
            (m["content"] for m in reversed(self.main_pane().messages) if m["role"] == "assistant"), ""
        )

    def conversation(self) -> list[dict[str, str]]:
        """The main pane's conversation as a training row's messages: the system prompt first (when
        set), then the user and assistant turns."""
        system = self.system_prompt.toPlainText().strip()
        head = [{"role": "system", "content": system}] if system else []
        return head + [dict(m) for m in self.main_pane().messages]

    # --- actions ---
    def regenerate(self) -> bool:
        """Drop the last reply of each shown pane and ask for it again; False when there is none
        or replies are being written."""
        streams = self.visible_streams()
        last_user = None
        if self.busy() or not streams:
            return False
        for key in streams:
            messages = self.panes[key].messages
            while messages and messages[-1]["role"] == "assistant":
                messages.pop()
            if messages and messages[-1]["role"] == "user":
                last_user = messages.pop()["content"]
            render_pane(self.panes[key], "Base model" if key == BASE else "Tuned model")
        if last_user is None:
            return False
        typed = self.prompt.toPlainText()
        self.prompt.setPlainText(last_user)
        self.send()
        self.prompt.setPlainText(typed)
        return True

    def copy_reply(self) -> str:
        """Put the last reply on the clipboard; returns it."""
        text = self.last_reply()
        if text:
            QGuiApplication.clipboard().setText(text)
            self.status.setText("Reply copied.")
        return text

    def save_conversation(self, path: str | Path) -> Path | None:
        """Append the conversation to ``path`` as one training row; None when there is no reply."""
        messages = self.conversation()
        if not any(m["role"] == "assistant" for m in messages):
            self.status.setText("Nothing to save yet: send a message and wait for the reply.")
            return None
        out = append_row(path, messages)
        self.status.setText(
            f"Saved as training data: {out} (one 'messages' row). Choose this file on the Data page to train on it."
        )
        return out

    def _pick_save_file(self) -> None:
        default = chats_file()
        default.parent.mkdir(parents=True, exist_ok=True)
        path, _ = QFileDialog.getSaveFileName(
            self,
            "Save the conversation as training data",
            str(default),
            "JSON lines (*.jsonl)",
            options=QFileDialog.Option.DontConfirmOverwrite,  # the row is appended, nothing is lost
        )
        if path:
            self.save_conversation(path)

    # --- the run's system prompt ---
    def prefill_system_prompt(self) -> None:
        """Fill the system prompt with the one the chosen run trained with; going back to a run
        without one (or the base model) restores what the box held before."""
        wanted = run_system_prompt(self.current_adapter())
        current = self.system_prompt.toPlainText()
        if wanted:
            if self._prefilled_system is None:
                self._user_system = current
            self.system_prompt.setPlainText(wanted)
            self.system_prompt.setToolTip("The system prompt this run trained with (you can change it)")
            self._prefilled_system = wanted
        elif self._prefilled_system is not None:
            if current == self._prefilled_system:
                self.system_prompt.setPlainText(getattr(self, "_user_system", ""))
            self.system_prompt.setToolTip("Sent as the first, system message of every request")
            self._prefilled_system = None

    def _update_actions(self, *_: Any) -> None:
        busy = self.busy()
        has_reply = bool(self.last_reply())
        self.regenerate_button.setEnabled(not busy and has_reply)
        self.copy_button.setEnabled(has_reply)
        self.save_button.setEnabled(not busy and has_reply)
