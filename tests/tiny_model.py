"""Build a tiny random Llama with a real tokenizer, for fast tests of both backends."""

from __future__ import annotations

import shutil
from pathlib import Path

TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "chat_template.jinja",
    "special_tokens_map.json",
)


def make_tiny_llama(
    out: Path, tokenizer_from: Path, *, seed: int = 0, hidden: int = 64, layers: int = 2
) -> Path:
    """Write a 2-layer, hidden-64 LlamaForCausalLM with fixed random weights into ``out``.

    The tokenizer files (and chat template) are copied from ``tokenizer_from``; ``rope_theta`` is
    written at the top level of config.json so mlx-lm reads the same value as transformers.
    """
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from backends.models import fix_config_for_mlx

    src_cfg = __import__("json").loads((Path(tokenizer_from) / "config.json").read_text())
    config = LlamaConfig(
        vocab_size=src_cfg["vocab_size"],
        hidden_size=hidden,
        intermediate_size=hidden * 2,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=hidden // 4,
        max_position_embeddings=2048,
        rms_norm_eps=1e-5,
        tie_word_embeddings=True,
        bos_token_id=src_cfg.get("bos_token_id"),
        eos_token_id=src_cfg.get("eos_token_id"),
        pad_token_id=src_cfg.get("pad_token_id"),
        rope_theta=10000.0,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    model.save_pretrained(out, safe_serialization=True)
    for name in TOKENIZER_FILES:
        f = Path(tokenizer_from) / name
        if f.is_file():
            shutil.copy2(f, Path(out) / name)
    fix_config_for_mlx(Path(out) / "config.json")
    return Path(out)
