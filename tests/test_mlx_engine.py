"""The MLX engine (backends.mlx_backend) on the tiny Llama: LoRA scale, loss and gradients against
an independent transformers+peft computation, gradient accumulation, packing, state round trip,
NaN and OOM handling, adapters mlx-lm loads, and the error when MLX is missing."""

from __future__ import annotations

import builtins
import math

import numpy as np
import pytest

pytest.importorskip("mlx.core")

import mlx.core as mx  # noqa: E402

from backends.config import config_from_dict  # noqa: E402
from backends.errors import RunFailed, UserInputError  # noqa: E402
from tests.synthetic_batches import make_batch, make_packed, random_rows  # noqa: E402


def _config(**training):
    lora = training.pop("lora", {})
    return config_from_dict(
        {
            "lora": {"rank": 4, "alpha": 8, "dropout": 0.0, **lora},
            "training": {"precision": "fp32", "learning_rate": 1e-2, "seed": 7, **training},
        }
    )


def _engine(tiny_model_dir, **training):
    from backends.mlx_backend import create_engine

    config = _config(**training)
    engine = create_engine(config)
    info = engine.setup(config, tiny_model_dir)
    return engine, info


def _randomize_b(engine, seed=1, std=0.05):
    """Give every LoRA B a random value so that the adapter changes the output."""
    rng = np.random.default_rng(seed)
    weights = {k: np.array(v) for k, v in engine.adapter_weights().items()}
    for k in weights:
        if k.endswith("lora_b"):
            weights[k] = rng.normal(0, std, weights[k].shape).astype(np.float32)
    engine.load_adapter_weights(weights)
    return weights


def test_lora_scale_is_alpha_over_rank(tiny_model_dir):
    from mlx_lm.tuner.lora import LoRALinear

    engine, info = _engine(tiny_model_dir, lora={"rank": 4, "alpha": 12})
    layers = [m for _, m in engine.model.named_modules() if isinstance(m, LoRALinear)]
    # all-linear on 2 Llama blocks: q, k, v, o, gate, up, down per block.
    assert len(layers) == 14
    assert {m.scale for m in layers} == {3.0}
    # The output is W x + (alpha / r) * x A B, computed independently in numpy.
    _randomize_b(engine)
    q = engine.model.model.layers[0].self_attn.q_proj
    x = np.random.default_rng(0).normal(size=(3, 64)).astype(np.float32)
    expected = x @ np.array(q.linear.weight).T + 3.0 * (x @ np.array(q.lora_a) @ np.array(q.lora_b))
    np.testing.assert_allclose(np.array(q(mx.array(x))), expected, rtol=1e-5, atol=1e-5)
    # Trainable parameters: r * (in + out) per adapted layer.
    shapes = {
        "q": (64, 64),
        "k": (64, 32),
        "v": (64, 32),
        "o": (64, 64),
        "g": (64, 128),
        "u": (64, 128),
        "d": (128, 64),
    }
    assert info["params_trainable"] == 2 * sum(4 * (i + o) for i, o in shapes.values())


def test_target_modules_attention_and_errors(tiny_model_dir):
    from mlx_lm.tuner.lora import LoRALinear

    engine, _ = _engine(tiny_model_dir, lora={"target_modules": "attention"})
    names = sorted(
        {p.rsplit(".", 1)[-1] for p, m in engine.model.named_modules() if isinstance(m, LoRALinear)}
    )
    assert names == ["k_proj", "o_proj", "q_proj", "v_proj"]
    with pytest.raises(UserInputError) as err:
        _engine(tiny_model_dir, lora={"target_modules": ["q_proj", "qproj"]})
    assert err.value.field == "lora.target_modules"
    assert "'qproj'" in str(err.value) and "gate_proj" in str(err.value)


def _peft_reference(engine, tiny_model_dir, tmp_path):
    """The engine's adapter loaded with plain peft on the transformers model (via the PEFT export)."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from backends.export import export_adapter

    engine.save_adapter(tmp_path / "mlx")
    out = export_adapter(tmp_path / "mlx", "peft", tmp_path / "peft")
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    model = PeftModel.from_pretrained(base, out, is_trainable=True)
    model.train()
    return model


def _torch_loss_sum(model, batch):
    import torch

    ids = torch.tensor(batch.input_ids)
    logits = model(input_ids=ids, attention_mask=torch.tensor(batch.attention_mask)).logits.float()
    labels = torch.tensor(batch.labels)[:, 1:]
    return torch.nn.functional.cross_entropy(
        logits[:, :-1].reshape(-1, logits.shape[-1]), labels.reshape(-1), ignore_index=-100, reduction="sum"
    )


def test_loss_grad_and_adamw_step_match_peft(tiny_model_dir, tmp_path):
    """First-step loss within 1e-4 of transformers+peft on the same weights and batches; gradient
    norm and the AdamW update (torch.optim.AdamW + clip_grad_norm_) agree too."""
    import torch

    engine, _ = _engine(tiny_model_dir, learning_rate=5e-3, weight_decay=0.1, max_grad_norm=0.2)
    _randomize_b(engine)
    batches = [make_batch(random_rows(1, 3)), make_batch(random_rows(2, 2))]
    ref = _peft_reference(engine, tiny_model_dir, tmp_path)

    n = sum(b.num_label_tokens for b in batches)
    ref_loss = sum(_torch_loss_sum(ref, b) for b in batches) / n
    ref_loss.backward()
    params = [p for p in ref.parameters() if p.requires_grad]
    ref_norm = torch.nn.utils.clip_grad_norm_(params, 0.2).item()
    torch.optim.AdamW(params, lr=5e-3, weight_decay=0.1).step()

    assert engine.eval_loss(batches) == pytest.approx(ref_loss.item(), abs=1e-4)
    out = engine.train_step(batches, 5e-3)
    assert out["loss"] == pytest.approx(ref_loss.item(), abs=1e-4)
    assert out["grad_norm"] == pytest.approx(ref_norm, rel=1e-3)
    assert ref_norm > 0.2  # clipping was active
    got = engine.adapter_weights()
    named = dict(ref.named_parameters())
    for key, value in got.items():
        path, leaf = key.rsplit(".", 1)
        tname = f"base_model.model.{path}.{'lora_A' if leaf == 'lora_a' else 'lora_B'}.default.weight"
        np.testing.assert_allclose(np.array(value).T, named[tname].detach().numpy(), atol=2e-5)


def test_grad_accumulation_normalises_by_label_tokens(tiny_model_dir):
    """4 rows of different label counts as one micro-batch or as 4 micro-batches: same update."""
    rows = random_rows(3, 4, min_len=5, max_len=24)
    one, _ = _engine(tiny_model_dir)
    four, _ = _engine(tiny_model_dir)
    a = one.train_step([make_batch(rows)], 1e-2)
    b = four.train_step([make_batch([r]) for r in rows], 1e-2)
    assert a["loss"] == pytest.approx(b["loss"], abs=1e-5)
    assert a["grad_norm"] == pytest.approx(b["grad_norm"], rel=1e-4)
    wa, wb = one.adapter_weights(), four.adapter_weights()
    for k in wa:
        np.testing.assert_allclose(np.array(wa[k]), np.array(wb[k]), atol=1e-6)


def test_packed_batch_gives_the_loss_of_its_rows(tiny_model_dir):
    engine, _ = _engine(tiny_model_dir)
    _randomize_b(engine)
    rows = random_rows(4, 3)
    packed, plain = make_packed(rows), make_batch(rows)
    assert packed.num_label_tokens == plain.num_label_tokens
    assert engine.eval_loss([packed]) == pytest.approx(engine.eval_loss([plain]), abs=1e-5)


def test_state_round_trip_continues_the_same_losses(tiny_model_dir, tmp_path):
    """save_state after 2 steps, then a fresh engine with load_state: the next 3 losses equal those of
    the uninterrupted engine (dropout on, so MLX's random key must be restored too)."""
    batches = [[make_batch(random_rows(10 + i, 2))] for i in range(5)]
    first, _ = _engine(tiny_model_dir, lora={"dropout": 0.1})
    for b in batches[:2]:
        first.train_step(b, 1e-2)
    first.save_state(tmp_path / "ckpt")
    expected = [first.train_step(b, 1e-2)["loss"] for b in batches[2:]]

    mx.random.seed(999)  # a different process state: load_state must restore it
    second, _ = _engine(tiny_model_dir, lora={"dropout": 0.1})
    second.load_state(tmp_path / "ckpt")
    got = [second.train_step(b, 1e-2)["loss"] for b in batches[2:]]
    np.testing.assert_allclose(got, expected, atol=1e-6)
    assert len(set(np.round(expected, 6))) == 3


def test_non_finite_loss_leaves_weights_untouched(tiny_model_dir):
    engine, _ = _engine(tiny_model_dir)
    weights = {k: np.array(v) for k, v in engine.adapter_weights().items()}
    key = next(k for k in weights if k.endswith("lora_b"))
    weights[key][0, 0] = np.inf
    engine.load_adapter_weights(weights)
    out = engine.train_step([make_batch(random_rows(5, 2))], 1e-2)
    assert not math.isfinite(out["loss"])
    after = engine.adapter_weights()
    for k, v in weights.items():
        np.testing.assert_array_equal(np.array(after[k]), v)


def test_going_over_the_memory_limit_is_an_oom_failure(tiny_model_dir):
    from backends.mlx_backend.engine import is_oom_error

    engine, _ = _engine(tiny_model_dir)
    engine.memory_limit = 1024  # what setup sets from the GPU's working set on Apple silicon
    with pytest.raises(RunFailed) as err:
        engine.train_step([make_batch(random_rows(6, 2))], 1e-2)
    assert err.value.kind == "oom" and "batch_size" in err.value.hint
    assert is_oom_error(
        RuntimeError("[metal::malloc] Attempting to allocate 9 bytes which is greater than 8")
    )
    assert is_oom_error(MemoryError())
    assert not is_oom_error(RuntimeError("shapes do not broadcast"))


def test_gradient_checkpointing_same_numbers_and_no_global_patch(tiny_model_dir):
    from mlx_lm.models.llama import TransformerBlock

    original = TransformerBlock.__call__
    batch = [make_batch(random_rows(7, 2))]
    plain, _ = _engine(tiny_model_dir)
    ckpt, _ = _engine(tiny_model_dir, gradient_checkpointing=True)
    block = type(ckpt.model.model.layers[0])
    assert block.__name__ == "CheckpointedTransformerBlock" and block.__call__ is not original
    assert TransformerBlock.__call__ is original and type(plain.model.model.layers[0]) is TransformerBlock
    a, b = plain.train_step(batch, 1e-2), ckpt.train_step(batch, 1e-2)
    assert a["loss"] == pytest.approx(b["loss"], abs=1e-6)
    assert a["grad_norm"] == pytest.approx(b["grad_norm"], rel=1e-5)


def test_adapter_loads_with_mlx_lm(tiny_model_dir, tmp_path):
    from mlx_lm import load

    engine, _ = _engine(tiny_model_dir)
    _randomize_b(engine)
    engine.save_adapter(tmp_path / "adapter")
    model, _ = load(str(tiny_model_dir), adapter_path=str(tmp_path / "adapter"))
    ids = mx.array([[1, 520, 33, 4000, 12, 9]])
    engine.model.eval()
    np.testing.assert_allclose(np.array(model(ids)), np.array(engine.model(ids)), atol=1e-5)
    base, _ = load(str(tiny_model_dir))
    assert np.abs(np.array(base(ids)) - np.array(model(ids))).max() > 1e-3  # the adapter acts


def test_dora_trains_and_reloads(tiny_model_dir, tmp_path):
    from mlx_lm import load
    from mlx_lm.tuner.dora import DoRALinear

    engine, _ = _engine(tiny_model_dir, lora={"use_dora": True})
    assert all(isinstance(m, DoRALinear) for p, m in engine.model.named_modules() if p.endswith("q_proj"))
    assert any(k.endswith(".m") for k in engine.adapter_weights())
    batch = [make_batch(random_rows(8, 2))]
    losses = [engine.train_step(batch, 1e-2)["loss"] for _ in range(4)]
    assert losses[-1] < losses[0]
    engine.save_adapter(tmp_path / "dora")
    model, _ = load(str(tiny_model_dir), adapter_path=str(tmp_path / "dora"))
    ids = mx.array([[1, 520, 33, 4000]])
    engine.model.eval()
    np.testing.assert_allclose(np.array(model(ids)), np.array(engine.model(ids)), atol=1e-5)


def test_memory_reports_mlx_bytes(tiny_model_dir):
    engine, _ = _engine(tiny_model_dir)
    engine.train_step([make_batch(random_rows(9, 2))], 1e-2)
    mem = engine.memory()
    assert mem["device_peak"] >= mem["device_allocated"] > 3_000_000 * 4  # the fp32 weights at least


def test_missing_mlx_is_a_clear_user_error(monkeypatch):
    from backends.mlx_backend import create_engine

    real_import = builtins.__import__

    def no_mlx(name, *args, **kwargs):
        if name == "mlx" or name.startswith(("mlx.", "mlx_lm")):
            raise ImportError(f"No module named {name!r}")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_mlx)
    with pytest.raises(UserInputError) as err:
        create_engine(_config())
    assert err.value.field == "backend"
    assert "mlx" in str(err.value) and "backend: torch" in str(err.value)


def test_batch_rows_pads_and_checks(tiny_model_dir):
    from backends.mlx_backend.engine import batch_rows

    rows = random_rows(11, 2, min_len=34, max_len=40)
    ids, labels = batch_rows(make_batch(rows))
    longest = max(len(r[0]) for r in rows)
    assert ids.shape == (2, 65) and ids.dtype == np.int32
    assert (labels[:, longest:] == -100).all() and (labels[:, 3:longest].max(axis=1) > 0).all()
    packed_ids, _ = batch_rows(make_packed(random_rows(13, 3, max_len=10)))
    assert packed_ids.shape == (3, 33)  # one row per segment
    bad = make_batch(random_rows(12, 1))
    bad.attention_mask[0, 1] = 0
    with pytest.raises(ValueError, match="right-padded"):
        batch_rows(bad)


@pytest.mark.slow
def test_compiled_step_matches_eager(tiny_model_dir, monkeypatch):
    """The GPU path (mx.compile, lengths padded to 1 + 32k) gives the eager CPU path's numbers."""
    from backends.mlx_backend import engine as engine_module

    batches = [[make_batch(random_rows(20 + i, 2))] for i in range(3)]
    eager, _ = _engine(tiny_model_dir)
    monkeypatch.setattr(engine_module, "COMPILE", True)
    compiled, _ = _engine(tiny_model_dir)
    assert compiled.compiled and not eager.compiled
    for b in batches:
        a = eager.train_step(b, 1e-2)
        c = compiled.train_step(b, 1e-2)
        assert c["loss"] == pytest.approx(a["loss"], abs=1e-5)
        assert c["grad_norm"] == pytest.approx(a["grad_norm"], rel=1e-4)
    assert compiled.eval_loss(batches[0]) == pytest.approx(eager.eval_loss(batches[0]), abs=1e-5)
