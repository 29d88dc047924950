"""The PyTorch engine on the tiny Llama: loss, gradient accumulation, packing, targets, state."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from backends.config import config_from_dict
from backends.data import IGNORE_INDEX, Example, make_batches
from backends.errors import UserInputError
from backends.torch_backend import TorchEngine, resolve_precision


def random_examples(n: int, seed: int = 0, vocab: int = 49000) -> list[Example]:
    """Rows of 12-40 random tokens whose second part carries labels (a prompt, then an answer)."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        length = int(rng.integers(12, 40))
        ids = rng.integers(1, vocab, length).tolist()
        prompt = int(rng.integers(3, length - 3))
        out.append(Example(ids, [IGNORE_INDEX] * prompt + ids[prompt:], i + 1))
    return out


def engine_for(model_dir, **training) -> TorchEngine:
    lora = training.pop("lora", {})
    config = config_from_dict(
        {
            "model": str(model_dir),
            "lora": {"rank": 4, "alpha": 8, "dropout": 0.0, **lora},
            "training": {"precision": "fp32", "learning_rate": 1e-3, **training},
        }
    )
    engine = TorchEngine("cpu")
    engine.setup(config, model_dir)
    return engine


def trainable(engine: TorchEngine) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in engine.model.named_parameters() if p.requires_grad}


def grads(engine: TorchEngine) -> torch.Tensor:
    return torch.cat([p.grad.flatten() for p in engine.model.parameters() if p.requires_grad])


def test_gradient_accumulation_is_invariant(tiny_model_dir):
    """Batch 8 x accumulation 1 and batch 2 x accumulation 4 over the same rows give the same
    loss, gradient and update: the loss is normalised by label tokens across all micro-batches
    (a per-micro-batch mean would weight the short batches differently and fail this)."""
    examples = random_examples(8)
    big = make_batches(examples, batch_size=8, pad_token_id=0, seed=1, epoch=0)
    small = make_batches(examples, batch_size=2, pad_token_id=0, seed=1, epoch=0)
    assert len(big) == 1 and len(small) == 4
    # the micro-batches really differ in label tokens, so the normalisation matters
    assert len({b.num_label_tokens for b in small}) > 1

    a = engine_for(tiny_model_dir)
    b = engine_for(tiny_model_dir)
    before = trainable(a)
    assert all(torch.equal(before[k], v) for k, v in trainable(b).items())  # same seed, same init
    ra = a.train_step(big, 1e-3)
    rb = b.train_step(small, 1e-3)
    assert ra["loss"] == pytest.approx(rb["loss"], rel=1e-6, abs=1e-6)
    assert ra["grad_norm"] == pytest.approx(rb["grad_norm"], rel=1e-5)
    torch.testing.assert_close(grads(a), grads(b), rtol=1e-5, atol=1e-7)
    wa, wb = trainable(a), trainable(b)
    # LoRA B starts at zero, so the first update moves every B (A's gradient is zero until then)
    assert all(not torch.equal(wa[k], before[k]) for k in wa if "lora_B" in k)
    for k in wa:
        torch.testing.assert_close(wa[k], wb[k], rtol=1e-5, atol=1e-7)

    # A per-micro-batch mean (the usual mistake) would give a different gradient.
    total = sum(x.num_label_tokens for x in small)
    wrong = [x.num_label_tokens / total for x in small]
    assert max(wrong) - min(wrong) > 0.05


def test_loss_is_transformers_shifted_cross_entropy(tiny_model_dir):
    """The engine's loss (head applied at labelled positions only) equals transformers' own
    causal-LM loss on the same batch, and the full-forward path gives the same value."""
    engine = engine_for(tiny_model_dir)
    batch = make_batches(random_examples(4, seed=3), batch_size=4, pad_token_id=0, seed=0, epoch=0)[0]
    hf = engine.model.get_base_model()
    with torch.no_grad():
        ours = float(engine.loss_sum(batch)) / batch.num_label_tokens
        reference = hf(
            input_ids=torch.as_tensor(batch.input_ids),
            attention_mask=torch.as_tensor(batch.attention_mask),
            labels=torch.as_tensor(batch.labels),
        ).loss.item()
        engine._fast_loss = False
        full = float(engine.loss_sum(batch)) / batch.num_label_tokens
    assert ours == pytest.approx(reference, rel=1e-5)
    assert full == pytest.approx(reference, rel=1e-5)


def test_packed_batch_loss_equals_rows_alone(tiny_model_dir):
    """A packed sequence (block-diagonal attention, restarting positions) gives the same summed
    loss as its rows trained one by one: no row sees another."""
    engine = engine_for(tiny_model_dir)
    examples = random_examples(6, seed=5)
    packed = make_batches(
        examples, batch_size=2, pad_token_id=0, seed=0, epoch=0, packing=True, max_seq_length=128
    )
    assert any(b.segment_ids is not None and b.segment_ids.max() > 1 for b in packed)
    with torch.no_grad():
        packed_sum = sum(float(engine.loss_sum(b)) for b in packed)
        alone = sum(
            float(engine.loss_sum(make_batches([e], batch_size=1, pad_token_id=0, seed=0, epoch=0)[0]))
            for e in examples
        )
    assert packed_sum == pytest.approx(alone, rel=1e-5)


def test_unknown_target_module_lists_the_linear_layers(tiny_model_dir):
    with pytest.raises(UserInputError) as info:
        engine_for(tiny_model_dir, lora={"target_modules": ["q_proj", "query"]})
    message = str(info.value)
    assert "'query'" in message and "lora.target_modules" in message
    for name in ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"):
        assert name in message
    assert "lm_head" not in message


def test_target_presets(tiny_model_dir):
    attention = engine_for(tiny_model_dir, lora={"target_modules": "attention"})
    adapted = {n.split(".")[-4] for n, p in attention.model.named_parameters() if "lora_A" in n}
    assert adapted == {"q_proj", "k_proj", "v_proj", "o_proj"}
    every = engine_for(tiny_model_dir, lora={"target_modules": "all-linear"})
    adapted = {n.split(".")[-4] for n, p in every.model.named_parameters() if "lora_A" in n}
    assert adapted == {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}


def test_dora_and_gradient_checkpointing_train(tiny_model_dir):
    engine = engine_for(tiny_model_dir, lora={"use_dora": True}, gradient_checkpointing=True)
    assert any("lora_magnitude_vector" in n for n, _ in engine.model.named_parameters())
    batches = make_batches(random_examples(4), batch_size=4, pad_token_id=0, seed=0, epoch=0)
    first = engine.train_step(batches, 1e-2)["loss"]
    for _ in range(5):
        last = engine.train_step(batches, 1e-2)["loss"]
    assert last < first


def test_state_round_trip_continues_exactly(tiny_model_dir, tmp_path):
    """save_state/load_state restore adapter, AdamW moments and torch RNG (LoRA dropout on): the
    next steps of a restored engine equal those of the one that kept going, bit for bit."""
    batches = make_batches(random_examples(12), batch_size=4, pad_token_id=0, seed=0, epoch=0)
    a = engine_for(tiny_model_dir, lora={"dropout": 0.2})
    for b in batches[:2]:
        a.train_step([b], 1e-3)
    a.save_state(tmp_path)
    results_a = [a.train_step([batch], 1e-3) for batch in batches[2:]]
    weights_a = trainable(a)
    b = engine_for(tiny_model_dir, lora={"dropout": 0.2})
    torch.manual_seed(1234)  # whatever happened to the RNG in between must not matter
    b.load_state(tmp_path)
    results_b = [b.train_step([batch], 1e-3) for batch in batches[2:]]
    assert results_a == results_b
    assert all(torch.equal(x, y) for x, y in zip(weights_a.values(), trainable(b).values(), strict=True))


def test_non_finite_loss_does_not_update(tiny_model_dir):
    """fp16 with a huge learning rate overflows; the step reports it and leaves weights alone."""
    engine = engine_for(tiny_model_dir, precision="fp16")
    batches = make_batches(random_examples(8), batch_size=4, pad_token_id=0, seed=0, epoch=0)
    result = None
    for i in range(6):
        before = trainable(engine)
        result = engine.train_step([batches[i % 2]], 1000.0)
        if not np.isfinite(result["loss"]):
            break
    assert result is not None and not np.isfinite(result["loss"])
    after = trainable(engine)
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_precision_and_memory_on_cpu(tiny_model_dir, monkeypatch):
    # auto: bf16 only where the CPU has native bfloat16 (AVX512-BF16 or AMX), else fp32
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False, raising=False)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False, raising=False)
    assert resolve_precision("auto", "cpu")[0] == "fp32"
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: True, raising=False)
    precision, reason = resolve_precision("auto", "cpu")
    assert precision == "bf16" and "native bfloat16" in reason
    assert resolve_precision("auto", "mps")[0] == "fp32"
    assert resolve_precision("fp32", "cpu")[0] == "fp32"
    assert resolve_precision("bf16", "cpu")[0] == "bf16"
    monkeypatch.undo()
    engine = engine_for(tiny_model_dir)
    assert engine.memory() == {"device_allocated": None, "device_peak": None}
    bf16 = engine_for(tiny_model_dir, precision="bf16")
    assert bf16.precision == "bf16"
    assert next(p for n, p in bf16.model.named_parameters() if "lora_A" in n).dtype == torch.float32
    assert (
        bf16.model.get_base_model().get_decoder().layers[0].mlp.up_proj.base_layer.weight.dtype
        == torch.bfloat16
    )
    batches = make_batches(random_examples(4), batch_size=4, pad_token_id=0, seed=0, epoch=0)
    assert np.isfinite(bf16.train_step(batches, 1e-3)["loss"])
