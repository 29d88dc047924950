"""target_modules rules shared by the backends (backends.lora_targets), on plain path lists."""

from __future__ import annotations

import pytest

from backends.errors import UserInputError
from backends.lora_targets import select_targets

LLAMA = [
    f"model.layers.{i}.{m}"
    for i in range(2)
    for m in (
        "self_attn.q_proj",
        "self_attn.k_proj",
        "self_attn.v_proj",
        "self_attn.o_proj",
        "mlp.gate_proj",
        "mlp.up_proj",
        "mlp.down_proj",
    )
] + ["lm_head"]
PHI3 = [
    f"model.layers.{i}.{m}"
    for i in range(2)
    for m in ("self_attn.qkv_proj", "self_attn.o_proj", "mlp.gate_up_proj", "mlp.down_proj")
] + ["lm_head"]


def test_all_linear_leaves_out_the_output_head():
    assert select_targets(LLAMA, "all-linear") == LLAMA[:-1]


def test_attention_preset_per_architecture():
    assert [p.rsplit(".", 1)[-1] for p in select_targets(LLAMA, "attention")] == [
        "q_proj",
        "k_proj",
        "v_proj",
        "o_proj",
    ] * 2
    assert [p.rsplit(".", 1)[-1] for p in select_targets(PHI3, "attention")] == ["qkv_proj", "o_proj"] * 2
    with pytest.raises(UserInputError, match="attention"):
        select_targets(["model.layers.0.mlp.fc1", "model.layers.0.mlp.fc2"], "attention")


def test_names_match_by_suffix_and_unknown_names_are_listed():
    assert select_targets(LLAMA, ["down_proj", "model.layers.1.self_attn.q_proj"]) == [
        "model.layers.0.mlp.down_proj",
        "model.layers.1.self_attn.q_proj",
        "model.layers.1.mlp.down_proj",
    ]
    with pytest.raises(UserInputError) as err:
        select_targets(LLAMA, ["q_proj", "proj"])  # a name matches whole path parts only
    assert err.value.field == "lora.target_modules"
    assert "'proj'" in str(err.value) and "q_proj (x2)" in str(err.value) and "lm_head" not in str(err.value)
