"""The advanced-settings form, generated from the config schema (``backends.config.field_docs``).

Each leaf field of ``RunConfig`` gets an editor chosen from its type: a check box for booleans, a
drop-down for choices, a spin box for integers (with the schema's bounds), a text field for floats
(scientific notation accepted, bounds checked), a text field with a browse button for paths. The
tooltip carries the field's description, its range and its default, so a new config field shows up
here without GUI code. Fields the user has not touched follow the chosen preset; ``overrides()``
returns only what the user changed.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

from PySide6.QtCore import Signal
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QFileDialog,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from backends.config import field_docs
from desktop.settings_words import choice_words, plain_words

SECTION_TITLES = {
    "": "General",
    "data": "Data",
    "lora": "The adapter: the small part that learns (LoRA)",
    "dpo": "Good-vs-bad pairs (DPO)",
    "orpo": "Good-vs-bad pairs, one pass (ORPO)",
    "kto": "Thumbs up / down (KTO)",
    "grpo": "Scored answers (GRPO)",
    "training": "Training",
    "forgetting": "What it forgets (general ability check)",
    "output": "Where results go",
}
INT_LIMIT = 2_147_483_647  # QSpinBox holds a C int


def flatten(values: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}`` (lists stay values)."""
    out: dict[str, Any] = {}
    for key, value in values.items():
        if isinstance(value, dict):
            out.update(flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def unflatten(values: dict[str, Any]) -> dict[str, Any]:
    """``{"a.b": 1}`` -> ``{"a": {"b": 1}}``."""
    out: dict[str, Any] = {}
    for key, value in values.items():
        node = out
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return out


def label_for(key: str) -> str:
    """A field's label: its last key part in words (``gradient_accumulation_steps`` -> ``Gradient accumulation steps``)."""
    words = key.rsplit(".", 1)[-1].replace("_", " ")
    return words[:1].upper() + words[1:]


def _fmt_number(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def tooltip_for(doc: dict[str, Any]) -> str:
    """Description, allowed range, choices and default of one field (``field_docs`` entry)."""
    lines = [doc.get("description") or ""]
    bounds = []
    for name, sign in (("ge", "≥"), ("gt", ">"), ("le", "≤"), ("lt", "<")):
        if doc.get(name) is not None:
            bounds.append(f"{sign} {_fmt_number(doc[name])}")
    if bounds:
        lines.append("Allowed: " + ", ".join(bounds))
    if doc.get("choices"):
        lines.append("Choices: " + ", ".join(str(c) for c in doc["choices"]))
    default = doc.get("default")
    lines.append(f"Default: {'(none)' if default is None else _fmt_number(default)}")
    lines.append(f"Config key: {doc['key']}")
    return "\n".join(line for line in lines if line)


class FieldEditor(QWidget):
    """An editor for one config field; ``changed`` fires on user edits.

    ``value()`` returns the typed value or raises ValueError with a reason when the text is not
    valid; ``set_value`` shows a value without marking the field as edited.
    """

    changed = Signal()

    def __init__(self, doc: dict[str, Any], parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.doc = doc
        self.key = doc["key"]
        ann = doc["annotation"]
        self.optional = "None" in ann or "Optional[" in ann or doc.get("default") is None
        self.kind = self._kind(doc)
        layout = QHBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        self._setting = False
        self.widget: QWidget
        if self.kind == "bool":
            self.widget = QCheckBox()
            self.widget.toggled.connect(self._emit)
        elif self.kind in ("choice", "choice_or_list"):
            box = QComboBox()
            if self.optional:
                box.addItem("(not set)", None)
            for choice in doc["choices"]:
                box.addItem(choice_words(self.key, choice), choice)
            if self.kind == "choice_or_list":
                box.setEditable(True)
                box.lineEdit().setPlaceholderText("a choice, or module names separated by commas")
                box.editTextChanged.connect(self._emit)
            box.currentIndexChanged.connect(self._emit)
            self.widget = box
        elif self.kind == "int":
            spin = QSpinBox()
            lo = (
                doc["ge"]
                if doc.get("ge") is not None
                else (doc["gt"] + 1 if doc.get("gt") is not None else 0)
            )
            hi = (
                doc["le"]
                if doc.get("le") is not None
                else (doc["lt"] - 1 if doc.get("lt") is not None else INT_LIMIT)
            )
            if self.optional:
                lo -= 1
                spin.setSpecialValueText("(not set)")
            spin.setRange(int(max(lo, -INT_LIMIT)), int(min(hi, INT_LIMIT)))
            spin.setAccelerated(True)
            spin.valueChanged.connect(self._emit)
            self.widget = spin
            self._none_value = spin.minimum()
        else:  # float, str, path
            edit = QLineEdit()
            if self.kind == "float":
                edit.setPlaceholderText("a number, e.g. 2e-4")
            elif self.optional:
                edit.setPlaceholderText("(not set)")
            edit.textEdited.connect(self._emit)
            self.widget = edit
        layout.addWidget(self.widget, 1)
        if self.kind == "path":
            browse = QPushButton("…")
            browse.setToolTip("Choose a file or folder")
            browse.setFixedWidth(32)
            browse.clicked.connect(self._browse)
            layout.addWidget(browse)
        self.setToolTip(tooltip_for(doc))
        self.widget.setToolTip(self.toolTip())
        name, explanation = plain_words(self.key, doc.get("description") or "")
        self.widget.setAccessibleName(name)
        self.widget.setAccessibleDescription(explanation)
        self.set_value(doc.get("default"))

    @staticmethod
    def _kind(doc: dict[str, Any]) -> str:
        ann = doc["annotation"]
        if doc.get("choices"):
            return "choice_or_list" if "list" in ann else "choice"
        if "bool" in ann:
            return "bool"
        if "int" in ann:
            return "int"
        if "float" in ann:
            return "float"
        if "Path" in ann:
            return "path"
        return "str"

    def _emit(self, *_: Any) -> None:
        if not self._setting:
            self.set_error(None)
            self.changed.emit()

    def _browse(self) -> None:
        if self.key.endswith("_dir"):
            path = QFileDialog.getExistingDirectory(self, label_for(self.key))
        else:
            path, _ = QFileDialog.getOpenFileName(self, label_for(self.key))
        if path:
            self.widget.setText(path)
            self._emit()

    def set_value(self, value: Any) -> None:
        """Show ``value`` (None: empty / not set) without counting it as a user edit."""
        self._setting = True
        try:
            w = self.widget
            if self.kind == "bool":
                w.setChecked(bool(value))
            elif self.kind in ("choice", "choice_or_list"):
                index = w.findData(value) if not isinstance(value, list) else -1
                if index >= 0:
                    w.setCurrentIndex(index)
                elif isinstance(value, list):
                    w.setEditText(", ".join(value))
                elif value is not None:
                    w.setEditText(str(value))
            elif self.kind == "int":
                w.setValue(self._none_value if value is None else int(value))
            else:
                w.setText("" if value is None else _fmt_number(value))
        finally:
            self._setting = False

    def value(self) -> Any:
        """The typed value; raises ValueError (with a reason) for text that is not valid."""
        w = self.widget
        if self.kind == "bool":
            return w.isChecked()
        if self.kind == "choice":
            return w.currentData()
        if self.kind == "choice_or_list":
            text = w.currentText().strip()
            if text in [str(c) for c in self.doc["choices"]]:
                return text
            names = [p.strip() for p in text.split(",") if p.strip()]
            if not names:
                raise ValueError("enter a choice or module names separated by commas")
            return names
        if self.kind == "int":
            v = w.value()
            return None if self.optional and v == self._none_value else v
        text = w.text().strip()
        if not text:
            if self.optional:
                return None
            raise ValueError("a value is required")
        if self.kind == "float":
            try:
                number = float(text)
            except ValueError:
                raise ValueError(f"{text!r} is not a number") from None
            if not math.isfinite(number):
                raise ValueError("must be a finite number")
            d = self.doc
            if (
                (d.get("ge") is not None and number < d["ge"])
                or (d.get("gt") is not None and number <= d["gt"])
                or (d.get("le") is not None and number > d["le"])
                or (d.get("lt") is not None and number >= d["lt"])
            ):
                raise ValueError(f"{text} is out of range ({tooltip_for(d).splitlines()[1]})")
            return number
        return text

    def set_error(self, message: str | None) -> None:
        """Mark the field as wrong (``message`` shown as its tooltip) or clear the mark."""
        self.widget.setProperty("invalid", bool(message))
        self.widget.setStyleSheet("border: 2px solid #d9534f;" if message else "")
        self.widget.setToolTip(f"{message}\n\n{self.toolTip()}" if message else self.toolTip())


class SettingsForm(QWidget):
    """Every config field except ``exclude``, grouped by section, generated from ``field_docs``.

    ``set_base(values)`` shows resolved values (e.g. of a preset) in the fields the user has not
    edited; ``overrides()`` returns ``{dotted key: value}`` of the edited fields only.
    """

    changed = Signal()

    def __init__(
        self,
        exclude: Iterable[str] = (),
        parent: QWidget | None = None,
        docs: list[dict[str, Any]] | None = None,
    ) -> None:
        super().__init__(parent)
        self.editors: dict[str, FieldEditor] = {}
        self._edited: set[str] = set()
        self._base: dict[str, Any] = {}
        excluded = set(exclude)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        sections: dict[str, QFormLayout] = {}
        for doc in docs if docs is not None else field_docs():
            key = doc["key"]
            if key in excluded:
                continue
            section = key.split(".", 1)[0] if "." in key else ""
            if section not in sections:
                box = QGroupBox(SECTION_TITLES.get(section, label_for(section)))
                form = QFormLayout(box)
                form.setFieldGrowthPolicy(QFormLayout.FieldGrowthPolicy.AllNonFixedFieldsGrow)
                form.setRowWrapPolicy(QFormLayout.RowWrapPolicy.WrapLongRows)  # narrow panels: field below
                layout.addWidget(box)
                sections[section] = form
            editor = FieldEditor(doc)
            editor.changed.connect(lambda key=key: self._on_edit(key))
            name, explanation = plain_words(key, doc.get("description") or "")
            term = key.rsplit(".", 1)[-1].replace("_", " ")
            # Everyday words first, the field's term beside them (for those who know it).
            label = QLabel(
                name if term.lower() == name.lower() else f"{name} <span style='color:gray'>({term})</span>"
            )
            label.setToolTip(editor.toolTip())
            label.setBuddy(editor.widget)
            field = QWidget()
            column = QVBoxLayout(field)
            column.setContentsMargins(0, 0, 0, 0)
            column.setSpacing(1)
            column.addWidget(editor)
            hint = QLabel(explanation)
            hint.setWordWrap(True)
            hint.setEnabled(False)  # drawn greyed: a note, not a control
            column.addWidget(hint)
            sections[section].addRow(label, field)
            self.editors[key] = editor
        reset = QPushButton("Reset to preset")
        reset.setToolTip("Forget every change made here; the preset's values apply again")
        reset.clicked.connect(self.reset)
        layout.addWidget(reset)

    def _on_edit(self, key: str) -> None:
        self._edited.add(key)
        self.changed.emit()

    def set_base(self, values: dict[str, Any]) -> None:
        """Flat resolved values; fields the user has not edited show them."""
        self._base = dict(values)
        for key, editor in self.editors.items():
            if key not in self._edited and key in values:
                editor.set_value(values[key])

    def set_value(self, key: str, value: Any, *, edited: bool = True) -> None:
        """Set one field (``edited``: it then overrides the preset)."""
        self.editors[key].set_value(value)
        if edited:
            self._edited.add(key)
        else:
            self._edited.discard(key)
        self.changed.emit()

    def set_overrides(self, overrides: dict[str, Any]) -> None:
        """Restore saved overrides (unknown keys, e.g. of an older schema, are ignored)."""
        for key, value in overrides.items():
            if key in self.editors:
                self.set_value(key, value)

    def reset(self) -> None:
        """Forget every edit; the base values show again."""
        self._edited.clear()
        for editor in self.editors.values():
            editor.set_error(None)
        self.set_base(self._base)
        self.changed.emit()

    def edited_keys(self) -> set[str]:
        """Keys the user changed."""
        return set(self._edited)

    def overrides(self) -> dict[str, Any]:
        """``{dotted key: value}`` of the edited fields; raises ValueError naming the bad field."""
        out = {}
        for key in sorted(self._edited):
            try:
                out[key] = self.editors[key].value()
            except ValueError as exc:
                self.editors[key].set_error(str(exc))
                raise ValueError(f"{label_for(key)} ({key}): {exc}") from None
        return out

    def mark_error(self, key: str | None, message: str) -> bool:
        """Show a validation error on the field ``key`` (dotted); False if no such field here."""
        if key in self.editors:
            self.editors[key].set_error(message)
            return True
        return False
