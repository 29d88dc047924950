"""PEFT <-> MLX adapter conversion (backends.export) and `tunedesk export adapter`: a PEFT adapter
converted to MLX and back gives the logits of the original in peft and in mlx-lm; key names,
transposes, scale vs alpha and config fields; clear errors for what cannot convert."""

from __future__ import annotations

import json

import numpy as np
import pytest

from backends.cli import main
from backends.errors import UserInputError
from backends.export import export_adapter, lora_scale

PROMPT_IDS = [[1, 520, 33, 4000, 12, 9, 77]]


def _peft_adapter(
    tiny_model_dir, out, *, use_dora=False, use_rslora=False, targets=("q_proj", "v_proj", "down_proj")
):
    """A PEFT adapter with random non-zero A and B (and magnitudes) on the tiny Llama, saved to ``out``;
    returns its logits on PROMPT_IDS."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    cfg = LoraConfig(
        r=4,
        lora_alpha=12,
        lora_dropout=0.0,
        target_modules=list(targets),
        use_dora=use_dora,
        use_rslora=use_rslora,
    )
    model = get_peft_model(base, cfg)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_" in name:
                p.copy_(
                    torch.randn_like(p) * (0.1 if "magnitude" not in name else 0.05)
                    + ("magnitude" in name) * p
                )
    model.eval()
    model.save_pretrained(out)
    (out / "tunedesk.json").write_text(json.dumps({"base_model": str(tiny_model_dir), "backend": "torch"}))
    (out / "chat_template.jinja").write_text("{{ messages }}")
    with torch.no_grad():
        return model(torch.tensor(PROMPT_IDS)).logits.numpy()


def _peft_logits(tiny_model_dir, adapter):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    model = PeftModel.from_pretrained(base, adapter).eval()
    with torch.no_grad():
        return model(torch.tensor(PROMPT_IDS)).logits.numpy()


def _mlx_logits(tiny_model_dir, adapter):
    mx = pytest.importorskip("mlx.core")
    from mlx_lm import load

    model, _ = load(str(tiny_model_dir), adapter_path=str(adapter))
    return np.array(model(mx.array(PROMPT_IDS)))


@pytest.mark.parametrize("use_dora", [False, True], ids=["lora", "dora"])
def test_peft_to_mlx_and_back_keeps_the_logits(tiny_model_dir, tmp_path, use_dora):
    original = _peft_adapter(tiny_model_dir, tmp_path / "adapter", use_dora=use_dora)
    assert (
        main(["export", "adapter", str(tmp_path / "adapter"), "--to", "mlx", "--out", str(tmp_path / "mlx")])
        == 0
    )
    mlx_logits = _mlx_logits(tiny_model_dir, tmp_path / "mlx")
    np.testing.assert_allclose(mlx_logits, original, atol=1e-4)
    back = export_adapter(tmp_path / "mlx", "peft", tmp_path / "peft")
    np.testing.assert_allclose(_peft_logits(tiny_model_dir, back), original, atol=1e-4)
    # The adapter matters: logits differ from the base model's by far more than the tolerance.
    import torch
    from transformers import AutoModelForCausalLM

    with torch.no_grad():
        plain = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)(
            torch.tensor(PROMPT_IDS)
        )
    assert np.abs(plain.logits.numpy() - original).max() > 1e-2
    # Side files travel along; tunedesk.json names the new format.
    meta = json.loads((back / "tunedesk.json").read_text())
    assert meta["format"] == "peft" and meta["backend"] == "torch"
    assert (back / "chat_template.jinja").read_text() == "{{ messages }}"


def test_keys_transposes_and_config_fields(tiny_model_dir, tmp_path):
    from safetensors.numpy import load_file

    _peft_adapter(tiny_model_dir, tmp_path / "adapter", use_dora=True)
    export_adapter(tmp_path / "adapter", "mlx", tmp_path / "mlx")
    peft_w = load_file(tmp_path / "adapter" / "adapter_model.safetensors")
    mlx_w = load_file(tmp_path / "mlx" / "adapters.safetensors")
    a = peft_w["base_model.model.model.layers.1.self_attn.v_proj.lora_A.weight"]
    b = peft_w["base_model.model.model.layers.1.self_attn.v_proj.lora_B.weight"]
    m = peft_w["base_model.model.model.layers.1.self_attn.v_proj.lora_magnitude_vector"]
    assert a.shape == (4, 64) and b.shape == (32, 4)
    np.testing.assert_array_equal(mlx_w["model.layers.1.self_attn.v_proj.lora_a"], a.T)
    np.testing.assert_array_equal(mlx_w["model.layers.1.self_attn.v_proj.lora_b"], b.T)
    np.testing.assert_array_equal(mlx_w["model.layers.1.self_attn.v_proj.m"], m)
    assert len(mlx_w) == len(peft_w) == 2 * 3 * 3
    cfg = json.loads((tmp_path / "mlx" / "adapter_config.json").read_text())
    assert cfg["fine_tune_type"] == "dora" and cfg["num_layers"] == 2
    assert cfg["lora_parameters"]["rank"] == 4 and cfg["lora_parameters"]["scale"] == 3.0  # 12 / 4
    assert "model.layers.0.mlp.down_proj" in cfg["lora_parameters"]["keys"]
    back = export_adapter(tmp_path / "mlx", "peft")
    assert back == tmp_path / "mlx-peft"
    pcfg = json.loads((back / "adapter_config.json").read_text())
    assert (pcfg["r"], pcfg["lora_alpha"], pcfg["use_dora"]) == (4, 12, True)
    assert pcfg["target_modules"] == ["down_proj", "q_proj", "v_proj"]


def test_rslora_scale_and_partial_layers(tiny_model_dir, tmp_path):
    assert lora_scale(16, 4) == 4.0 and lora_scale(16, 4, use_rslora=True) == 8.0
    original = _peft_adapter(
        tiny_model_dir, tmp_path / "adapter", use_rslora=True, targets=("model.layers.1.self_attn.q_proj",)
    )
    export_adapter(tmp_path / "adapter", "mlx", tmp_path / "mlx")
    cfg = json.loads((tmp_path / "mlx" / "adapter_config.json").read_text())
    assert cfg["lora_parameters"]["scale"] == pytest.approx(12 / 2)  # alpha / sqrt(r)
    np.testing.assert_allclose(_mlx_logits(tiny_model_dir, tmp_path / "mlx"), original, atol=1e-4)
    back = export_adapter(tmp_path / "mlx", "peft", tmp_path / "peft")
    pcfg = json.loads((back / "adapter_config.json").read_text())
    # Only layer 1 has the adapter: peft gets the full path, so layer 0 stays untouched.
    assert pcfg["target_modules"] == ["model.layers.1.self_attn.q_proj"] and pcfg["lora_alpha"] == 24
    np.testing.assert_allclose(_peft_logits(tiny_model_dir, back), original, atol=1e-4)


def test_unconvertible_adapters_and_bad_folders(tiny_model_dir, tmp_path, capsys):
    _peft_adapter(tiny_model_dir, tmp_path / "adapter")
    cfg_path = tmp_path / "adapter" / "adapter_config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["rank_pattern"] = {"q_proj": 8}
    cfg_path.write_text(json.dumps(cfg))
    with pytest.raises(UserInputError) as err:
        export_adapter(tmp_path / "adapter", "mlx")
    assert err.value.field == "rank_pattern"
    assert not (tmp_path / "adapter-mlx").exists()  # nothing half-written
    (tmp_path / "run").mkdir()
    assert main(["export", "adapter", str(tmp_path / "run"), "--to", "peft"]) == 1
    assert "no adapter here" in capsys.readouterr().err


def test_run_folder_resolves_to_its_adapter(tiny_model_dir, tmp_path):
    _peft_adapter(tiny_model_dir, tmp_path / "run" / "adapter")
    out = export_adapter(tmp_path / "run", "mlx")
    assert out == tmp_path / "run" / "adapter-mlx"
    assert (out / "adapters.safetensors").is_file() and (out / "chat_template.jinja").is_file()
