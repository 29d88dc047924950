"""Config schema: YAML loading, presets, --set overrides, and clear errors naming file/line/key."""

from __future__ import annotations

import pytest
import yaml

from backends.config import PRESETS, RunConfig, dump_config, field_docs, load_config
from backends.errors import UsageError, UserInputError


def write(tmp_path, text):
    p = tmp_path / "run.yaml"
    p.write_text(text)
    return p


def test_defaults_and_roundtrip(tmp_path):
    cfg = load_config(write(tmp_path, "model: my-model\ntraining:\n  batch_size: 2\n"))
    assert cfg.model == "my-model"
    assert cfg.training.batch_size == 2
    assert cfg.lora.rank == 16 and cfg.lora.alpha == 32.0
    # The dumped config has every default written out and loads back to the same config.
    dumped = yaml.safe_load(dump_config(cfg))
    assert dumped["training"]["learning_rate"] == 2e-4
    assert RunConfig.model_validate(dumped) == cfg


def test_unknown_key_names_key_and_line(tmp_path):
    p = write(tmp_path, "model: m\nlora:\n  rank: 8\n  rnak: 4\n")
    with pytest.raises(UserInputError) as info:
        load_config(p)
    assert info.value.field == "lora.rnak"
    assert info.value.line == 4
    assert "unknown key" in str(info.value) and str(p) in str(info.value)


def test_wrong_type_is_named(tmp_path):
    with pytest.raises(UserInputError) as info:
        load_config(write(tmp_path, "training:\n  batch_size: lots\n"))
    assert info.value.field == "training.batch_size"
    assert info.value.line == 2
    assert "'lots'" in str(info.value)


def test_out_of_range_value_is_named(tmp_path):
    with pytest.raises(UserInputError) as info:
        load_config(write(tmp_path, "lora:\n  dropout: 1.5\n"))
    assert info.value.field == "lora.dropout"
    assert "less than 1" in str(info.value)


def test_bad_choice_and_empty_target_list(tmp_path):
    with pytest.raises(UserInputError) as info:
        load_config(write(tmp_path, "training:\n  precision: fp8\n"))
    assert info.value.field == "training.precision"
    with pytest.raises(UserInputError) as info:
        load_config(write(tmp_path, "lora:\n  target_modules: []\n"))
    assert info.value.field == "lora.target_modules"


def test_invalid_yaml_names_line(tmp_path):
    with pytest.raises(UserInputError) as info:
        load_config(write(tmp_path, "model: m\nlora: [1, 2\n"))
    assert info.value.line is not None and "YAML" in str(info.value)


def test_missing_file(tmp_path):
    with pytest.raises(UserInputError, match="not found"):
        load_config(tmp_path / "nope.yaml")


def test_overrides_apply_after_file_and_parse_values(tmp_path):
    p = write(tmp_path, "training:\n  learning_rate: 0.001\n")
    cfg = load_config(
        p, ["training.learning_rate=1e-4", "lora.target_modules=[q_proj, v_proj]", "data.packing=true"]
    )
    assert cfg.training.learning_rate == pytest.approx(1e-4)
    assert cfg.lora.target_modules == ["q_proj", "v_proj"]
    assert cfg.data.packing is True


def test_override_unknown_key_rejected():
    with pytest.raises(UserInputError) as info:
        load_config(None, ["training.learnin_rate=1"])
    assert info.value.field == "training.learnin_rate"
    with pytest.raises(UsageError, match="KEY=VALUE") as usage:
        load_config(None, ["training.learning_rate"])
    assert usage.value.exit_code == 2 and str(usage.value).startswith(
        "--set 'training.learning_rate': expected"
    )


def test_a_bad_override_names_the_set_item_not_the_file(tmp_path):
    """A wrong value given with --set is reported as coming from --set, never with a line of the
    config file (where it is not); a wrong value in the file still names file and line."""
    p = write(tmp_path, "data:\n  validation_fraction: 0.1\ntraining:\n  max_steps: 5\n")
    with pytest.raises(UserInputError) as info:
        load_config(p, ["data.validation_fraction=1.5"])
    text = str(info.value)
    assert info.value.file is None and info.value.line is None
    assert text.startswith("data.validation_fraction: ") and text.endswith(
        "(from --set data.validation_fraction=1.5)"
    )
    with pytest.raises(UserInputError) as info:
        load_config(p, ["training.learning_rate=abc"])
    assert "(got 'abc')" in str(info.value) and "--set training.learning_rate=abc" in str(info.value)
    bad = write(tmp_path, "training:\n  max_steps: -5\n")
    with pytest.raises(UserInputError) as info:
        load_config(bad, ["lora.rank=8"])
    assert info.value.file == str(bad) and info.value.line == 2 and "--set" not in str(info.value)


def test_preset_fills_what_file_leaves_out(tmp_path):
    cfg = load_config(write(tmp_path, "preset: quick-test\nlora:\n  rank: 4\n"))
    assert cfg.training.max_steps == PRESETS["quick-test"]["training"]["max_steps"]
    assert cfg.lora.rank == 4  # the file wins over the preset
    assert cfg.lora.alpha == PRESETS["quick-test"]["lora"]["alpha"]
    quality = load_config(None, preset="quality")
    assert quality.training.epochs == 3 and quality.lora.rank == 32
    with pytest.raises(UserInputError, match="unknown preset"):
        load_config(write(tmp_path, "preset: fastest\n"))


def test_field_docs_cover_every_leaf_with_bounds():
    docs = {d["key"]: d for d in field_docs()}
    assert docs["lora.rank"]["ge"] == 1 and docs["lora.rank"]["default"] == 16
    assert docs["training.precision"]["choices"] == ["auto", "fp32", "bf16", "fp16"]
    assert all(d["description"] for d in docs.values()), [k for k, d in docs.items() if not d["description"]]
