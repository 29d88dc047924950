"""The advanced-settings form is generated from the config schema: every field, typed editors,
bounds and tooltips, preset values under the user's edits."""

from __future__ import annotations

import pytest

from backends.config import config_from_dict, field_docs
from desktop.pages.train_page import BASIC_KEYS, resolved_preset_values
from desktop.settings_form import FieldEditor, SettingsForm, flatten, unflatten


def test_every_schema_field_gets_an_editor(qtbot):
    form = SettingsForm(exclude=BASIC_KEYS)
    qtbot.addWidget(form)
    keys = {d["key"] for d in field_docs()} - set(BASIC_KEYS)
    assert set(form.editors) == keys
    kinds = {k: e.kind for k, e in form.editors.items()}
    assert kinds["training.learning_rate"] == "float"
    assert kinds["training.batch_size"] == "int"
    assert kinds["lora.use_dora"] == "bool"
    assert kinds["training.precision"] == "choice"
    assert kinds["lora.target_modules"] == "choice_or_list"
    assert kinds["data.validation_file"] == "path"
    # Bounds and the description (with its unit) are in the tooltip.
    tip = form.editors["training.max_seq_length"].toolTip()
    assert "Tokens per row" in tip and "≥ 8" in tip and "Default: 1024" in tip
    spin = form.editors["training.batch_size"].widget
    assert (spin.minimum(), spin.maximum()) == (1, 4096)


def test_a_new_config_field_shows_up_without_gui_code(qtbot):
    new = {
        "key": "training.label_noise",
        "annotation": "<class 'float'>",
        "default": 0.0,
        "description": "Made-up field for this test.",
        "choices": None,
        "ge": 0.0,
        "gt": None,
        "le": 1.0,
        "lt": None,
    }
    form = SettingsForm(docs=[*field_docs(), new])
    qtbot.addWidget(form)
    editor = form.editors["training.label_noise"]
    assert editor.kind == "float" and "Made-up field" in editor.toolTip()


def test_preset_values_follow_unless_edited(qtbot):
    form = SettingsForm(exclude=BASIC_KEYS)
    qtbot.addWidget(form)
    form.set_base(resolved_preset_values("balanced"))
    assert form.editors["lora.rank"].value() == 16
    form.set_value("training.batch_size", 2)
    form.set_base(resolved_preset_values("quality"))
    assert form.editors["lora.rank"].value() == 32  # not edited: follows the preset
    assert form.editors["training.batch_size"].value() == 2  # edited: kept
    assert form.overrides() == {"training.batch_size": 2}
    form.reset()
    assert form.overrides() == {} and form.editors["training.batch_size"].value() == 4


def test_typed_values_and_validation(qtbot):
    form = SettingsForm(exclude=BASIC_KEYS)
    qtbot.addWidget(form)
    lr = form.editors["training.learning_rate"]
    lr.widget.setText("5e-5")
    lr.widget.textEdited.emit("5e-5")
    assert form.overrides()["training.learning_rate"] == pytest.approx(5e-5)
    lr.widget.setText("-1")
    lr.widget.textEdited.emit("-1")
    with pytest.raises(ValueError, match="learning_rate"):
        form.overrides()
    assert lr.widget.property("invalid") is True
    # Optional int: the lowest value means "not set" (None).
    max_steps = form.editors["training.max_steps"]
    assert max_steps.value() is None
    form.set_value("training.max_steps", 10)
    assert max_steps.value() == 10
    # target_modules: a preset name or a list of module names.
    form.set_value("lora.target_modules", ["q_proj", "v_proj"])
    assert form.editors["lora.target_modules"].value() == ["q_proj", "v_proj"]
    form.set_value("lora.target_modules", "attention")
    assert form.editors["lora.target_modules"].value() == "attention"
    form.set_value("training.learning_rate", 1e-4)
    raw = unflatten(form.overrides())
    config = config_from_dict(raw)
    assert config.training.max_steps == 10 and config.lora.target_modules == "attention"


def test_optional_choice_and_path_editors(qtbot):
    preset_doc = next(d for d in field_docs() if d["key"] == "preset")
    editor = FieldEditor(preset_doc)
    qtbot.addWidget(editor)
    assert editor.value() is None  # "(not set)"
    editor.set_value("quality")
    assert editor.value() == "quality"
    path_doc = next(d for d in field_docs() if d["key"] == "data.validation_file")
    path_editor = FieldEditor(path_doc)
    qtbot.addWidget(path_editor)
    assert path_editor.value() is None
    path_editor.set_value("/data/val.jsonl")
    assert path_editor.value() == "/data/val.jsonl"


def test_flatten_roundtrip():
    nested = {"a": {"b": 1, "c": {"d": [1, 2]}}, "e": None}
    assert flatten(nested) == {"a.b": 1, "a.c.d": [1, 2], "e": None}
    assert unflatten(flatten(nested)) == nested
