"""Quantised bases (lora.quantize, QLoRA): 4-bit and 8-bit training on both backends, the adapter
against the unquantised base, the CUDA-only 8-bit optimizers, and out-of-memory exits (CUDA's and
MLX's allocation failures are simulated: this machine has neither a GPU nor Metal)."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from backends.config import config_from_dict
from backends.data import make_batches
from backends.errors import EXIT_RUN_FAILED, UserInputError
from tests.test_train_engine import random_examples

pytest.importorskip("bitsandbytes")


def _config(model_dir: Path, backend: str = "torch", **lora):
    return config_from_dict(
        {
            "model": str(model_dir),
            "backend": backend,
            "lora": {"rank": 4, "alpha": 8, "dropout": 0.0, **lora},
            "training": {"precision": "bf16" if backend == "torch" else "fp32", "learning_rate": 1e-2},
        }
    )


def _train(engine, steps: int = 6) -> list[float]:
    batches = make_batches(random_examples(4), batch_size=4, pad_token_id=0, seed=1, epoch=0)
    return [engine.train_step(batches, 1e-2)["loss"] for _ in range(steps)]


@pytest.mark.parametrize("bits", [4, 8])
def test_torch_quantised_base_trains_and_the_adapter_loads_on_the_unquantised_base(
    bits, tiny_model_dir, tmp_path
):
    import bitsandbytes as bnb
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from backends.torch_backend import TorchEngine

    engine = TorchEngine("cpu")
    info = engine.setup(_config(tiny_model_dir, quantize=bits), tiny_model_dir)
    layer = engine.model.get_base_model().model.layers[0].self_attn.q_proj.base_layer
    assert isinstance(layer, bnb.nn.Linear4bit if bits == 4 else bnb.nn.Linear8bitLt)
    assert any(f"quantised to {bits} bits" in n for n in info["notes"])
    assert all(p.dtype == torch.float32 for p in engine._params)  # the adapter stays full precision
    losses = _train(engine)
    assert all(math.isfinite(v) for v in losses) and losses[-1] < losses[0] - 0.1, losses
    engine.save_adapter(tmp_path / "adapter")

    # Plain peft on the unquantised fp32 base: same module names, and the adapter changes the output.
    ids = torch.tensor([[1, 400, 2000, 9000, 17]])
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    with torch.no_grad():
        plain = base(input_ids=ids).logits
        tuned = PeftModel.from_pretrained(base, tmp_path / "adapter")(input_ids=ids).logits
    assert torch.isfinite(tuned).all()
    assert (tuned - plain).abs().max() > 1e-3


def test_mlx_quantised_base_trains_and_the_adapter_loads_on_the_unquantised_base(tiny_model_dir, tmp_path):
    import mlx.core as mx
    import mlx.nn as nn
    from mlx_lm import load

    from backends.mlx_backend import create_engine

    config = _config(tiny_model_dir, backend="mlx", quantize=4)
    engine = create_engine(config)
    engine.setup(config, tiny_model_dir)
    assert isinstance(engine.model.layers[0].self_attn.q_proj.linear, nn.QuantizedLinear)
    losses = _train(engine)
    assert all(math.isfinite(v) for v in losses) and losses[-1] < losses[0] - 0.1, losses
    engine.save_adapter(tmp_path / "adapter")

    plain_model, _ = load(str(tiny_model_dir))
    tuned_model, _ = load(str(tiny_model_dir), adapter_path=str(tmp_path / "adapter"))
    assert isinstance(tuned_model.layers[0].self_attn.q_proj.linear, nn.Linear)  # unquantised base
    ids = mx.array([[1, 400, 2000, 9000, 17]])
    diff = np.abs(np.array(tuned_model(ids)) - np.array(plain_model(ids))).max()
    assert np.isfinite(diff) and diff > 1e-3


def test_eight_bit_optimizers_are_cuda_only(tiny_model_dir):
    from backends.torch_backend import TorchEngine

    config = _config(tiny_model_dir)
    config = config.model_copy(
        update={"training": config.training.model_copy(update={"optimizer": "paged_adamw_8bit"})}
    )
    with pytest.raises(UserInputError) as err:
        TorchEngine("cpu").setup(config, tiny_model_dir)
    assert err.value.field == "training.optimizer" and "NVIDIA GPU" in str(err.value)


def test_a_bitsandbytes_that_cannot_quantise_is_a_clear_error(monkeypatch, tiny_model_dir):
    import bitsandbytes as bnb

    from backends.torch_backend import TorchEngine

    def broken(*args, **kwargs):
        raise RuntimeError("no kernel for this device")

    monkeypatch.setattr(bnb.functional, "quantize_4bit", broken)
    with pytest.raises(UserInputError) as err:
        TorchEngine("cpu").setup(_config(tiny_model_dir, quantize=4), tiny_model_dir)
    assert err.value.field == "lora.quantize" and "no kernel for this device" in str(err.value)


@pytest.mark.parametrize("backend", ["torch", "mlx"])
def test_out_of_memory_exits_3_with_the_plans_setting(backend, tiny_model_dir, tmp_path, monkeypatch, capsys):
    """`tunedesk train` exits 3 with run_failed kind oom and a hint naming settings. Simulated:
    torch raises CUDA's OutOfMemoryError, MLX its allocator's RuntimeError (neither a GPU nor
    Metal here)."""
    from backends.cli import main as cli_main

    if backend == "torch":
        from backends.torch_backend.engine import TorchEngine as cls

        def fail(self, batch):
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

        monkeypatch.setattr(cls, "loss_sum", fail)
    else:
        from backends.mlx_backend.engine import MLXEngine as cls

        def fail(self, micro_batches):
            raise RuntimeError("[metal::malloc] Attempting to allocate 4294967296 bytes")

        monkeypatch.setattr(cls, "loss_and_gradients", fail)
    raw = {
        "model": str(tiny_model_dir),
        "backend": backend,
        "lora": {"rank": 4, "alpha": 8},
        "training": {"batch_size": 4, "max_steps": 2, "precision": "fp32"},
        "data": {"validation_fraction": 0},
        "output": {"runs_dir": str(tmp_path / "runs"), "run_name": "oom"},
    }
    cfg = tmp_path / "oom.yaml"
    cfg.write_text(json.dumps(raw), encoding="utf-8")
    monkeypatch.setattr(sys, "argv", ["tunedesk"])
    assert cli_main(["train", "--config", str(cfg), "--json"]) == EXIT_RUN_FAILED
    events = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    failed = events[-1]
    assert failed["event"] == "run_failed" and failed["kind"] == "oom"
    assert "the memory plan suggests" in failed["hint"] and "--set training." in failed["hint"]
    assert "training.batch_size (now 4, try 2)" in failed["hint"]
