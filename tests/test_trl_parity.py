"""ORPO and KTO on the torch engine against TRL's own trainers (``trl.experimental.orpo.ORPOTrainer``,
``trl.KTOTrainer``): the first step's loss and the gradient of every LoRA weight, on the tiny Llama
with identical weights (the trainers get our engine's peft model itself), within 1e-4.

LoRA's B matrices start at zero (then policy = reference and half the gradients vanish), so the
tests first set them to fixed random values: both sides then see a policy that differs from the
reference. TRL's ORPO counts the prompt's tokens in its NLL, ours only the answer's: with a
one-token prompt the two are the same, so the ORPO batch uses one.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from backends.config import config_from_dict
from backends.data import load_tokenizer, make_kto_batches, make_preference_batches
from backends.data.types import KTOExample, PreferenceExample
from backends.torch_backend import preference_methods

trl = pytest.importorskip("trl")

ANSWERS = [
    ("The capital of France is Paris.", "France has no capital city."),
    ("Two plus two is four.", "Two plus two is five, probably."),
    ("Water boils at 100 degrees Celsius at sea level.", "Water never boils."),
]


def engine_for(model_dir, method: str, **section):
    from backends import torch_backend

    raw = {
        "model": str(model_dir),
        "method": method,
        "lora": {"rank": 4, "alpha": 8, "dropout": 0.0},
        method: section,
        "training": {"precision": "fp32", "batch_size": 3, "max_seq_length": 64, "seed": 5},
    }
    config = config_from_dict(raw)
    engine = torch_backend.create_engine(config, "cpu")
    engine.setup(config, model_dir)
    generator = torch.Generator().manual_seed(11)
    with torch.no_grad():
        for name, p in engine.model.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=generator) * 0.05)
    return engine


def lora_grads(model) -> dict[str, torch.Tensor]:
    return {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.requires_grad}


def assert_same_grads(ours: dict[str, torch.Tensor], theirs: dict[str, torch.Tensor]) -> None:
    assert ours.keys() == theirs.keys() and len(ours) > 0
    worst = max(float((ours[k] - theirs[k]).abs().max()) for k in ours)
    scale = max(float(v.abs().max()) for v in theirs.values())
    assert scale > 1e-4  # the gradients are not all zero
    assert worst < 1e-4, f"largest gradient difference {worst:.3g} (largest gradient {scale:.3g})"


def test_orpo_first_step_equals_trl(tiny_model_dir, tmp_path):
    from datasets import Dataset
    from trl.experimental.orpo import ORPOConfig, ORPOTrainer

    tokenizer = load_tokenizer(tiny_model_dir)
    engine = engine_for(tiny_model_dir, "orpo", beta=0.2)
    eos = [tokenizer.eos_token_id]
    examples = [
        PreferenceExample(
            [tokenizer.bos_token_id or 1],
            tokenizer(c, add_special_tokens=False)["input_ids"] + eos,
            tokenizer(r, add_special_tokens=False)["input_ids"] + eos,
            i + 1,
        )
        for i, (c, r) in enumerate(ANSWERS)
    ]
    (batch,) = make_preference_batches(examples, batch_size=3, pad_token_id=0, seed=0, epoch=0)
    engine.optimizer.zero_grad(set_to_none=True)
    ours = preference_methods.backward(engine, [batch])
    our_grads = lora_grads(engine.model)

    args = ORPOConfig(
        output_dir=str(tmp_path / "trl"), beta=0.2, report_to=[], use_cpu=True, gradient_checkpointing=False
    )
    rows = [{"prompt": "Q", "chosen": c, "rejected": r} for c, r in ANSWERS]
    trainer = ORPOTrainer(
        model=engine.model, args=args, train_dataset=Dataset.from_list(rows), processing_class=tokenizer
    )
    n = batch.num_pairs
    t = {k: torch.as_tensor(getattr(batch, k)) for k in ("input_ids", "attention_mask", "labels")}
    trl_batch = {
        f"{side}_{k}": v[sl]
        for side, sl in (("chosen", slice(0, n)), ("rejected", slice(n, None)))
        for k, v in t.items()
    }
    engine.model.train()
    engine.optimizer.zero_grad(set_to_none=True)
    loss, metrics = trainer.get_batch_loss_metrics(engine.model, trl_batch)
    loss.backward()
    assert abs(ours["loss"] - float(loss.detach())) < 1e-4
    assert abs(ours["nll_loss"] - metrics["nll_loss"]) < 1e-4
    assert abs(ours["log_odds_ratio"] - metrics["log_odds_ratio"]) < 1e-4
    assert abs(ours["log_odds_chosen"] - metrics["log_odds_chosen"]) < 1e-4
    assert abs(ours["reward_margin"] - metrics["rewards/margins"]) < 1e-4
    assert abs(ours["log_odds_chosen"]) > 1e-3  # the two answers differ under the policy
    assert_same_grads(our_grads, lora_grads(engine.model))
