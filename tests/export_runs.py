"""A run folder with a random LoRA/DoRA adapter on the tiny Llama, for the export tests, and the
logits of a model folder or of base + adapter in peft."""

from __future__ import annotations

import json
import shutil

from backends.export import export_adapter

PROMPT_IDS = [[1, 520, 33, 4000, 12, 9, 77, 2]]


def make_run(tiny_model_dir, run_dir, *, use_dora=False, use_rslora=False, backend="torch", system=None):
    """A finished run folder whose adapter has random non-zero LoRA weights on the tiny Llama
    (PEFT, or converted exactly to MLX for ``backend="mlx"``), the base's chat template and a
    tunedesk.json naming the base model."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(1)
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    cfg = LoraConfig(
        r=4,
        lora_alpha=8,
        lora_dropout=0.0,
        target_modules=["q_proj", "v_proj", "o_proj", "gate_proj", "down_proj"],
        use_dora=use_dora,
        use_rslora=use_rslora,
    )
    model = get_peft_model(base, cfg)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_" in name:
                p.copy_(p * ("magnitude" in name) + torch.randn_like(p) * 0.2)
    run_dir.mkdir(parents=True)
    (run_dir / "config.yaml").write_text(
        f"model: {tiny_model_dir}\ndata:\n  system_prompt: {json.dumps(system)}\n", encoding="utf-8"
    )
    peft_dir = run_dir / ("adapter" if backend == "torch" else "adapter-peft")
    model.save_pretrained(peft_dir)
    meta = {"base_model": {"name": "tiny", "path": str(tiny_model_dir)}, "backend": backend, "method": "sft"}
    (peft_dir / "tunedesk.json").write_text(json.dumps(meta))
    shutil.copy2(tiny_model_dir / "chat_template.jinja", peft_dir / "chat_template.jinja")
    if backend == "mlx":
        export_adapter(peft_dir, "mlx", run_dir / "adapter")
        shutil.rmtree(peft_dir)
    return run_dir


def hf_logits(folder, dtype="float32"):
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(folder, dtype=getattr(torch, dtype))
    with torch.no_grad():
        return model(torch.tensor(PROMPT_IDS)).logits.float().numpy()


def peft_logits(tiny_model_dir, adapter):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    model = PeftModel.from_pretrained(base, adapter).eval()
    with torch.no_grad():
        return model(torch.tensor(PROMPT_IDS)).logits.numpy()
