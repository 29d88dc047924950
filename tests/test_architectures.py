"""Other model families than SmolLM2's Llama: tiny random-weight Qwen2, Qwen3, Phi-3 and Gemma 3 shapes
built locally from configs (SmolLM2's tokenizer), imported into the store and trained a few steps."""

from __future__ import annotations

import shutil

import pytest

from backends import models
from tests.test_train_engine import engine_for, random_examples
from tests.tiny_model import TOKENIZER_FILES

SHAPES = {
    "qwen2": ("Qwen2Config", "Qwen2ForCausalLM", {"use_sliding_window": False}),
    "qwen3": ("Qwen3Config", "Qwen3ForCausalLM", {}),
    "phi3": ("Phi3Config", "Phi3ForCausalLM", {"pad_token_id": 2}),
    "gemma3_text": ("Gemma3TextConfig", "Gemma3ForCausalLM", {"sliding_window": 64}),
}


def make_tiny(kind: str, out, tokenizer_from):
    import torch
    import transformers

    config_name, model_name, extra = SHAPES[kind]
    vocab = 49152  # SmolLM2's tokenizer
    config = getattr(transformers, config_name)(
        vocab_size=vocab,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=16,
        max_position_embeddings=1024,
        tie_word_embeddings=True,
        **extra,
    )
    torch.manual_seed(0)
    getattr(transformers, model_name)(config).save_pretrained(out)
    for name in TOKENIZER_FILES:
        if (tokenizer_from / name).is_file():
            shutil.copy2(tokenizer_from / name, out / name)
    return out


@pytest.mark.parametrize("kind", sorted(SHAPES))
def test_tiny_shape_imports_and_trains(kind, tmp_path, smollm2_dir):
    from backends.data import make_batches

    src = make_tiny(kind, tmp_path / kind, smollm2_dir)
    out = models.import_model(src, f"tiny-{kind}")
    row = {m["name"]: m for m in models.list_models()}[f"tiny-{kind}"]
    assert row["architecture"] == SHAPES[kind][1] and row["context_length"] == 1024
    assert row["placed"] == "hardlink" and row["precision"] == "fp32"

    engine = engine_for(out)
    assert any("lora_A" in n for n, _ in engine.model.named_parameters())
    batches = make_batches(random_examples(4), batch_size=4, pad_token_id=0, seed=0, epoch=0)
    first = engine.train_step(batches, 1e-2)["loss"]
    for _ in range(4):
        last = engine.train_step(batches, 1e-2)["loss"]
    assert last < first, (kind, first, last)
