"""Adapter loading cannot silently go wrong: an adapter whose tensors do not all load is refused
(exit 1, naming the keys) on both chat backends instead of chatting as the base model; a legacy
mlx-lm config (``lora_layers``) is read; a weights-file path stands for its folder."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from safetensors.torch import load_file, save_file

from backends.cli import main
from backends.export import export_adapter
from tests.chat_adapters import _write_run


@pytest.fixture(scope="module")
def peft_run(tiny_model_dir, tmp_path_factory) -> Path:
    """A finished run folder with an untrained PEFT LoRA adapter on q_proj and v_proj."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    run = tmp_path_factory.mktemp("peft-run")
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    model = get_peft_model(model, LoraConfig(r=2, lora_alpha=4, target_modules=["q_proj", "v_proj"]))
    model.save_pretrained(run / "adapter")
    _write_run(run, tiny_model_dir, (tiny_model_dir / "chat_template.jinja").read_text(), "torch")
    return run


def chat(model_dir: Path, adapter: Path, backend: str) -> int:
    return main(
        ["chat", "--model", str(model_dir), "--adapter", str(adapter), "--prompt", "Hi"]
        + ["--max-new-tokens", "1", "--backend", backend]
    )


def copy_run(run: Path, dest: Path) -> Path:
    import shutil

    shutil.copytree(run, dest)
    return dest


def test_torch_refuses_an_adapter_with_a_renamed_and_a_missing_tensor(
    peft_run, tiny_model_dir, tmp_path, capsys
):
    run = copy_run(peft_run, tmp_path / "run")
    weights = run / "adapter" / "adapter_model.safetensors"
    tensors = load_file(weights)
    renamed = next(k for k in sorted(tensors) if k.endswith("q_proj.lora_A.weight"))
    dropped = next(k for k in sorted(tensors) if k.endswith("v_proj.lora_B.weight"))
    tensors[renamed.replace("lora_A", "lora_down")] = tensors.pop(renamed)
    del tensors[dropped]
    save_file(tensors, weights)
    assert chat(tiny_model_dir, run, "torch") == 1
    err = capsys.readouterr().err
    assert "do not all load" in err and renamed.replace("lora_A", "lora_down") in err
    assert renamed in err and dropped in err


def test_torch_loads_a_complete_adapter_given_as_its_weights_file(peft_run, tiny_model_dir, capsys):
    assert chat(tiny_model_dir, peft_run / "adapter" / "adapter_model.safetensors", "torch") == 0
    assert "adapter" in capsys.readouterr().err


def test_mlx_refuses_a_missing_tensor_and_reads_a_legacy_config(peft_run, tiny_model_dir, tmp_path, capsys):
    import mlx.core as mx

    mlx_adapter = export_adapter(peft_run / "adapter", "mlx", tmp_path / "mlx-adapter")
    config_path = mlx_adapter / "adapter_config.json"
    config = json.loads(config_path.read_text())
    config["lora_layers"] = config.pop("num_layers")  # older mlx-lm's name for it
    config_path.write_text(json.dumps(config))
    assert chat(tiny_model_dir, mlx_adapter, "mlx") == 0
    capsys.readouterr()

    weights = mlx_adapter / "adapters.safetensors"
    arrays = dict(mx.load(str(weights)))
    dropped = sorted(arrays)[0]
    del arrays[dropped]
    mx.save_safetensors(str(weights), arrays)
    assert chat(tiny_model_dir, mlx_adapter, "mlx") == 1
    err = capsys.readouterr().err
    assert "do not all load" in err and dropped in err
