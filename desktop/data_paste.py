"""Examples pasted into the Data page, turned into a JSONL training file in the app's datasets folder.

What a person may paste (``parse_pasted``):

- JSON lines (every non-empty line a JSON object): kept as they are, in any training format;
- question/answer blocks separated by blank lines, each part starting with ``Q:``/``A:``,
  ``Question:``/``Answer:`` or ``User:``/``Assistant:`` (later lines continue the part);
- two columns copied from a spreadsheet: ``question<TAB>answer`` per line.

Blocks become ``{"messages": [{"role": "user", ...}, {"role": "assistant", ...}]}`` rows, the
``messages`` format of ``backends/data/formats.py``. Mistakes raise ``UserInputError`` naming the
pasted line.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any

from PySide6.QtWidgets import QDialog, QDialogButtonBox, QLabel, QPlainTextEdit, QVBoxLayout, QWidget

from backends import paths
from backends.errors import UserInputError
from backends.runs import atomic_write_text

_PREFIX = re.compile(r"^\s*(q|question|user|a|answer|assistant)\s*:\s?", re.IGNORECASE)
_ROLE = {"q": "user", "question": "user", "user": "user", "a": "assistant", "answer": "assistant"}
_ROLE["assistant"] = "assistant"
EXAMPLE = "Q: How do I reset my password?\nA: Open Settings, choose Account, then Reset password.\n\nQ: ..."


def _pair(user: str, answer: str) -> dict[str, Any]:
    return {"messages": [{"role": "user", "content": user}, {"role": "assistant", "content": answer}]}


def _json_lines(lines: list[str]) -> list[dict[str, Any]] | None:
    filled = [(i, line) for i, line in enumerate(lines, 1) if line.strip()]
    if not filled or not all(line.lstrip().startswith("{") for _, line in filled):
        return None
    rows = []
    for i, line in filled:
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise UserInputError(
                f"pasted line {i} is not valid JSON: {exc.msg} (column {exc.colno})"
            ) from None
        if not isinstance(row, dict):
            raise UserInputError(f"pasted line {i} is not a JSON object")
        rows.append(row)
    return rows


def _blocks(lines: list[str]) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    turns: list[list[Any]] = []  # [role, text, first line] of the current block
    start = 0

    def close() -> None:
        if not turns:
            return
        messages = [{"role": role, "content": text.strip()} for role, text, _ in turns]
        for (role, text, line), nxt in zip(turns, [*turns[1:], None], strict=True):
            if not text.strip():
                raise UserInputError(
                    f"pasted line {line}: the {'question' if role == 'user' else 'answer'} is empty"
                )
            if nxt is not None and nxt[0] == role:
                raise UserInputError(
                    f"pasted line {nxt[2]}: two {'questions' if role == 'user' else 'answers'} in a row"
                )
        if messages[0]["role"] != "user":
            raise UserInputError(f"pasted line {start}: an example starts with its question (Q:)")
        if messages[-1]["role"] != "assistant":
            raise UserInputError(f"pasted line {turns[-1][2]}: this question has no answer (A:) after it")
        rows.append({"messages": messages})
        turns.clear()

    for i, line in enumerate(lines, 1):
        if not line.strip():
            close()
            continue
        match = _PREFIX.match(line)
        if match:
            if not turns:
                start = i
            turns.append([_ROLE[match.group(1).lower()], line[match.end() :], i])
        elif "\t" in line and not turns:
            user, _, answer = line.partition("\t")
            if not user.strip() or not answer.strip():
                raise UserInputError(f"pasted line {i}: a question and an answer, separated by a tab")
            rows.append(_pair(user.strip(), answer.strip()))
        elif turns:
            turns[-1][1] += "\n" + line
        else:
            raise UserInputError(
                f"pasted line {i} does not start with Q: or A: ({line.strip()[:40]!r})",
                hint="start each question with 'Q:' and each answer with 'A:', a blank line between examples",
            )
    close()
    return rows


def parse_pasted(text: str) -> list[dict[str, Any]]:
    """The training rows in pasted ``text`` (see the module doc). Raises UserInputError naming the
    pasted line when it cannot be read, or when there is no example at all."""
    lines = text.replace("\r\n", "\n").split("\n")
    rows = _json_lines(lines)
    if rows is None:
        rows = _blocks(lines)
    if not rows:
        raise UserInputError("nothing pasted: no example found", hint=EXAMPLE.split("\n\n")[0])
    return rows


def datasets_dir() -> Path:
    """Where the app writes the data files it makes (pasted examples, saved chats, a folder's
    dataset): ``<TUNEDESK_HOME>/datasets``."""
    return paths.home() / "datasets"


def save_pasted(rows: list[dict[str, Any]], folder: str | Path | None = None) -> Path:
    """Write ``rows`` as ``pasted-YYYYmmdd-HHMMSS.jsonl`` in ``folder`` (default: ``datasets_dir()``),
    atomically; returns its path."""
    out_dir = Path(folder) if folder is not None else datasets_dir()
    out_dir.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    path, n = out_dir / f"pasted-{stamp}.jsonl", 1
    while path.exists():
        n += 1
        path = out_dir / f"pasted-{stamp}-{n}.jsonl"
    atomic_write_text(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    return path


class PasteDialog(QDialog):
    """A text box for examples; OK writes them to a JSONL file (``path``) or shows what is wrong."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Paste examples")
        self.path: Path | None = None
        layout = QVBoxLayout(self)
        intro = QLabel(
            "Type or paste examples of what the model should answer: a question after 'Q:', its answer "
            "after 'A:', a blank line between examples. Two columns copied from a spreadsheet, or JSON "
            "lines, work too. They are saved as a file in TuneDesk's datasets folder."
        )
        intro.setWordWrap(True)
        layout.addWidget(intro)
        self.text = QPlainTextEdit()
        self.text.setPlaceholderText(EXAMPLE)
        self.text.setTabChangesFocus(True)
        self.text.setAccessibleName("Examples")
        layout.addWidget(self.text, 1)
        self.error = QLabel("")
        self.error.setWordWrap(True)
        self.error.setStyleSheet("color: #c62828")
        layout.addWidget(self.error)
        buttons = QDialogButtonBox(
            QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel
        )
        buttons.button(QDialogButtonBox.StandardButton.Ok).setText("Use these examples")
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        layout.addWidget(buttons)
        self.resize(640, 460)

    def accept(self) -> None:
        """Save the examples and close; on a mistake, say which line and stay open."""
        try:
            rows = parse_pasted(self.text.toPlainText())
        except UserInputError as exc:
            self.error.setText(str(exc))
            return
        self.path = save_pasted(rows)
        super().accept()
