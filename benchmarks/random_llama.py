"""Random-weight Llama models of published shapes (``backends.model_shape.LLAMA_SHAPES``) for the
benchmarks: built locally in seconds, nothing downloaded. The tokenizer (for the data pipeline and
chat template) is copied from another model folder, e.g. the imported SmolLM2, whose ids all lie
inside Llama-3's 128256-token vocabulary."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "chat_template.jinja",
    "special_tokens_map.json",
)


def llama_config(shape: dict[str, Any]) -> Any:
    """A transformers ``LlamaConfig`` of ``shape`` (config.json fields; ``model_type`` is implied)."""
    from transformers import LlamaConfig

    fields = {k: v for k, v in shape.items() if k != "model_type"}
    return LlamaConfig(**fields, bos_token_id=1, eos_token_id=2, pad_token_id=2)


def random_llama(shape: dict[str, Any], *, seed: int = 0, device: str = "cpu") -> Any:
    """A ``LlamaForCausalLM`` of ``shape`` with random bf16 weights (seeded), built on ``device``."""
    import torch
    from transformers import LlamaForCausalLM

    torch.manual_seed(seed)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.bfloat16)
    try:
        with torch.device(device):
            return LlamaForCausalLM(llama_config(shape))
    finally:
        torch.set_default_dtype(previous)


def build_random_llama(
    out: Path, shape: dict[str, Any], tokenizer_from: Path | None = None, *, device: str = "cpu"
) -> Any:
    """Write a random ``shape`` Llama (safetensors, bf16) into ``out`` with the tokenizer files of
    ``tokenizer_from`` and ``rope_theta`` at the top of config.json (as mlx-lm reads it); returns
    the model object (already in memory, e.g. to add an adapter)."""
    from backends.models import fix_config_for_mlx

    model = random_llama(shape, device=device)
    model.save_pretrained(out, safe_serialization=True)
    for name in TOKENIZER_FILES if tokenizer_from else ():
        if (Path(tokenizer_from) / name).is_file():
            shutil.copy2(Path(tokenizer_from) / name, Path(out) / name)
    fix_config_for_mlx(Path(out) / "config.json")
    return model
