"""ORPO and KTO on the torch engine against TRL's own trainers (``trl.experimental.orpo.ORPOTrainer``,
``trl.KTOTrainer``): the first step's loss and the gradient of every LoRA weight, on the tiny Llama
with identical weights (the trainers get our engine's peft model itself), within 1e-4.

LoRA's B matrices start at zero (then policy = reference and half the gradients vanish), so the
policy is first moved: ORPO sets B to fixed random values; KTO (whose TRL trainer copies a given
adapter as its reference, so it gets the adapter while B is zero) takes one step of our own first,
which also makes its KL estimate positive. TRL's ORPO counts the prompt's tokens in its NLL, ours only the answer's: with a
one-token prompt the two are the same, so the ORPO batch uses one.
"""

from __future__ import annotations

import copy

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
    return engine


def randomise_lora_b(model, scale: float = 0.05) -> None:
    """Fixed random values in the trained adapter's B matrices (zero at initialisation)."""
    generator = torch.Generator().manual_seed(11)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B.default" in name:
                p.copy_(torch.randn(p.shape, generator=generator) * scale)


def lora_grads(model) -> dict[str, torch.Tensor]:
    return {n: p.grad.detach().clone() for n, p in model.named_parameters() if ".default." in n}


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
    randomise_lora_b(engine.model)
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


def test_kto_first_step_equals_trl(tiny_model_dir, tmp_path):
    from datasets import Dataset
    from trl import KTOConfig, KTOTrainer

    tokenizer = load_tokenizer(tiny_model_dir)
    engine = engine_for(tiny_model_dir, "kto", beta=0.3, desirable_weight=1.0, undesirable_weight=1.5)
    eos = [tokenizer.eos_token_id]
    rated = [(ANSWERS[0][0], True), (ANSWERS[1][1], False), (ANSWERS[2][0], True)]
    prompts = ["Tell me about France.", "What is two plus two?", "When does water boil?"]
    examples = [
        KTOExample(
            tokenizer(p, add_special_tokens=False)["input_ids"],
            tokenizer(a, add_special_tokens=False)["input_ids"] + eos,
            label,
            i + 1,
        )
        for i, (p, (a, label)) in enumerate(zip(prompts, rated, strict=True))
    ]
    (batch,) = make_kto_batches(examples, batch_size=3, pad_token_id=0, seed=0, epoch=0)

    args = KTOConfig(
        output_dir=str(tmp_path / "trl"),
        beta=0.3,
        desirable_weight=1.0,
        undesirable_weight=1.5,
        per_device_train_batch_size=3,
        train_sampling_strategy="sequential",
        report_to=[],
        use_cpu=True,
    )
    rows = [
        {"prompt": p, "completion": a, "label": label} for p, (a, label) in zip(prompts, rated, strict=True)
    ]
    # TRL keeps a copy of a given adapter as its reference ("ref" adapter): hand it the adapter while
    # B is still zero, so its reference is the base model as ours.
    trainer = KTOTrainer(
        model=engine.model, args=args, train_dataset=Dataset.from_list(rows), processing_class=tokenizer
    )
    # Move the policy with one step on the batch rated all desirable: its answers (also those of
    # the mismatched rows) become likelier, so the KL estimate z0 is positive (random B gives z0 < 0,
    # clamped to 0, which would leave the KL shift untested).
    liked = copy.deepcopy(batch)
    liked.desirable = np.ones_like(batch.desirable)
    engine.train_step([liked], 3e-2)
    engine.model.train()
    engine.optimizer.zero_grad(set_to_none=True)
    ours = preference_methods.backward(engine, [batch])
    our_grads = lora_grads(engine.model)
    n = batch.num_pairs
    completion = torch.as_tensor(batch.labels != -100).long()
    t = {
        "input_ids": torch.as_tensor(batch.input_ids),
        "attention_mask": torch.as_tensor(batch.attention_mask),
    }
    inputs = {
        **{k: v[:n] for k, v in t.items()},
        "completion_mask": completion[:n],
        **{f"KL_{k}": v[n:] for k, v in t.items()},
        "KL_completion_mask": completion[n:],
        "label": torch.as_tensor(batch.desirable),
    }
    trainer.model.train()
    engine.optimizer.zero_grad(set_to_none=True)
    loss = trainer.compute_loss(trainer.model, inputs)
    loss.backward()
    logged = {k: v[-1] for k, v in trainer._metrics["train"].items()}
    assert abs(ours["loss"] - float(loss.detach())) < 1e-4
    assert abs(ours["kl"] - logged["kl"]) < 1e-4
    assert abs(ours["rewards_desirable"] - logged["rewards/chosen"]) < 1e-4
    assert abs(ours["rewards_undesirable"] - logged["rewards/rejected"]) < 1e-4
    assert ours["kl"] > 0.1 and abs(ours["loss"] - 0.5 * (1 + 1.5 + 1) / 3) > 1e-3
    assert_same_grads(our_grads, lora_grads(engine.model))


@pytest.mark.parametrize(("loss_type", "bias_correction"), [("grpo", False), ("dapo", True)])
def test_grpo_loss_on_fixed_completions_equals_trl(tiny_model_dir, tmp_path, loss_type, bias_correction):
    """GRPO's advantages (TRL's own ``nanstd``), loss and LoRA gradients on a fixed batch of prompts,
    completions and rewards against ``GRPOTrainer._compute_loss`` (beta 0.04: with the KL term).
    With TRL's KL bias correction off (the paper's loss, our default) and on. The prompts have the same length (TRL left-pads prompts, and the model numbers positions from
    the padded start; ours from the first real token)."""
    from datasets import Dataset
    from trl import GRPOConfig, GRPOTrainer
    from trl.trainer.utils import nanstd

    from backends.torch_backend.grpo_step import GRPORunner, Scored
    from backends.training.grpo import group_advantages

    tokenizer = load_tokenizer(tiny_model_dir)
    engine = engine_for(
        tiny_model_dir,
        "grpo",
        beta=0.04,
        num_generations=3,
        loss_type=loss_type,
        kl_bias_correction=bias_correction,
    )
    args = GRPOConfig(
        output_dir=str(tmp_path / "trl"),
        beta=0.04,
        loss_type=loss_type,
        use_bias_correction_kl=bias_correction,
        bf16=False,  # TRL's GRPO defaults to bf16 autocast; this compares fp32 with fp32
        num_generations=3,
        per_device_train_batch_size=6,
        max_completion_length=16,
        report_to=[],
        use_cpu=True,
    )
    trainer = GRPOTrainer(
        model=engine.model,
        reward_funcs=lambda completions, **kw: [0.0] * len(completions),
        args=args,
        train_dataset=Dataset.from_list([{"prompt": "Say something."}] * 6),
        processing_class=tokenizer,
    )
    trainer.current_gradient_accumulation_steps = 1
    randomise_lora_b(engine.model, 0.2)

    def ids(text: str) -> list[int]:
        return tokenizer(text, add_special_tokens=False)["input_ids"]

    prompts = [ids("What is the capital of France?"), ids("What is two plus two?")]
    prompts = [p[: min(map(len, prompts))] for p in prompts]  # the same length: see the docstring
    eos = [tokenizer.eos_token_id]
    completions = [
        ids("Paris.") + eos,
        ids("It is Paris, of course.") + eos,
        ids("Lyon"),
        ids("Four.") + eos,
        ids("5") + eos,
        ids("Two plus two is four, which is even.") + eos,
    ]
    rewards = np.array([1.0, 0.5, 0.0, 1.0, 0.0, 0.7])
    theirs_adv = rewards - torch.tensor(rewards).view(-1, 3).mean(1).repeat_interleave(3).numpy()
    theirs_adv = theirs_adv / (
        nanstd(torch.tensor(rewards).view(-1, 3), dim=1).repeat_interleave(3).numpy() + 1e-4
    )
    advantages = group_advantages(rewards, 3)
    np.testing.assert_allclose(advantages, theirs_adv, atol=1e-9)

    runner = GRPORunner(engine)
    engine.model.train()
    engine.optimizer.zero_grad(set_to_none=True)
    metrics, _ = runner.learn([Scored(prompts, completions, rewards[:, None], advantages)])
    our_grads = lora_grads(engine.model)

    width = max(len(c) for c in completions)
    completion_ids = torch.tensor([c + [0] * (width - len(c)) for c in completions])
    completion_mask = torch.tensor([[1] * len(c) + [0] * (width - len(c)) for c in completions])
    prompt_ids = torch.tensor([prompts[i // 3] for i in range(6)])
    with torch.no_grad(), engine.model.disable_adapter():
        ref = trainer._get_per_token_logps_and_entropies(
            engine.model,
            torch.cat([prompt_ids, completion_ids], 1),
            torch.cat([torch.ones_like(prompt_ids), completion_mask], 1),
            width,
        )[0]
    inputs = {
        "prompt_ids": prompt_ids,
        "prompt_mask": torch.ones_like(prompt_ids),
        "completion_ids": completion_ids,
        "completion_mask": completion_mask,
        "advantages": torch.tensor(advantages, dtype=torch.float32),
        "ref_per_token_logps": ref,
        "num_items_in_batch": completion_mask.sum(),
    }
    engine.optimizer.zero_grad(set_to_none=True)
    loss = trainer._compute_loss(engine.model, inputs)
    loss.backward()
    assert abs(metrics["loss"] - float(loss.detach())) < 1e-6  # the loss is small (~1e-3): tighter
    assert abs(metrics["kl"] - trainer._metrics["train"]["kl"][-1]) < 1e-6
    assert metrics["kl"] > 1e-4 and metrics["clip_fraction"] == 0
    assert metrics["reward_mean"] == pytest.approx(rewards.mean())
    assert_same_grads(our_grads, lora_grads(engine.model))
