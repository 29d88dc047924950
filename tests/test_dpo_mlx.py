"""DPO on the MLX engine (tiny Llama only: MLX on this CPU is far slower than torch): ln 2 at
step 0, first-step loss and gradients equal to the PyTorch engine's from identical LoRA weights,
the reference is the base model (adapter layers bypassed, DoRA too), and a run through the shared
loop with precomputed reference log-probs that stops and resumes exactly."""

from __future__ import annotations

import math
import re
import threading
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("mlx.core")

from backends.config import config_from_dict  # noqa: E402
from backends.errors import RunStopped  # noqa: E402
from backends.events import read_events  # noqa: E402
from backends.jobs import run_training  # noqa: E402
from backends.runs import RunDir, run_status  # noqa: E402
from backends.training.dpo import REFERENCE_FILE, STEP_FIELDS  # noqa: E402
from tests.test_dpo_torch import LN2, dpo_config  # noqa: E402

# peft parameter name -> mlx-lm adapter name (A and B are stored transposed in mlx-lm)
_PEFT_PARAM = re.compile(r"^base_model\.model\.(?P<path>.+)\.lora_(?P<ab>[AB])\.default\.weight$")


def torch_lora_grads(engine) -> dict[str, np.ndarray]:
    out = {}
    for name, param in engine.model.named_parameters():
        if param.requires_grad:
            m = _PEFT_PARAM.match(name)
            assert m, name
            out[f"{m['path']}.lora_{m['ab'].lower()}"] = param.grad.detach().double().numpy().T
    return out


def test_first_step_matches_torch_and_is_ln2(tiny_model_dir, shared_data, tmp_path):
    """Identical initial LoRA A/B (torch's, converted), two micro-batches: both engines give
    loss ln 2 within 1e-5, the same loss and the same gradient of every LoRA matrix within 1e-4,
    and the same reference log-probabilities."""
    import mlx.core as mx
    from mlx.utils import tree_flatten

    from backends import mlx_backend, torch_backend
    from backends.data import load_tokenizer, make_preference_batches, prepare_data
    from backends.export import export_adapter

    raw = dpo_config(tiny_model_dir, shared_data, dpo={"label_smoothing": 0.1}, max_grad_norm=0.0)
    config = config_from_dict(raw)
    data = prepare_data(config, load_tokenizer(tiny_model_dir))
    micro = make_preference_batches(
        data.train, batch_size=2, pad_token_id=data.pad_token_id, seed=3, epoch=0
    )[:2]

    torch_engine = torch_backend.create_engine(config)
    torch_engine.setup(config, tiny_model_dir)
    torch_engine.save_adapter(tmp_path / "init")
    export_adapter(tmp_path / "init", "mlx", tmp_path / "init-mlx")
    mlx_engine = mlx_backend.create_engine(config)
    mlx_engine.setup(config, tiny_model_dir)
    mlx_engine.load_adapter_weights(mx.load(str(tmp_path / "init-mlx" / "adapters.safetensors")))

    for batch in micro:
        np.testing.assert_allclose(
            mlx_engine.reference_log_probs(batch),
            torch_engine.reference_log_probs(batch),
            atol=1e-3,  # sums over ~50-200 tokens; MLX and torch kernels differ in rounding
            rtol=0,
        )
    mlx_loss, mlx_grads, mlx_extra = mlx_engine.loss_and_gradients(micro)
    torch_result = torch_engine.train_step(micro, 0.0)  # lr 0, no clipping: the gradients stay in .grad
    assert abs(mlx_loss - LN2) < 1e-5 and abs(torch_result["loss"] - LN2) < 1e-5
    assert abs(mlx_loss - torch_result["loss"]) < 1e-4
    assert mlx_extra["reward_accuracy"] == torch_result["reward_accuracy"] == 0.0

    mlx_grads = {k: np.array(v).astype(np.float64) for k, v in tree_flatten(mlx_grads)}
    torch_grads = torch_lora_grads(torch_engine)
    assert set(mlx_grads) == set(torch_grads) and len(mlx_grads) == 2 * 7 * 2  # 7 linear layers x 2 blocks
    biggest = 0.0
    for name, grad in torch_grads.items():
        assert mlx_grads[name].shape == grad.shape, name
        np.testing.assert_allclose(mlx_grads[name], grad, atol=1e-4, err_msg=name)
        biggest = max(biggest, float(np.abs(grad).max()))
    assert biggest > 1e-3  # the comparison is not between zeros (LoRA B gets a real gradient)
    norm = math.sqrt(sum(float((g**2).sum()) for g in mlx_grads.values()))
    assert norm == pytest.approx(torch_result["grad_norm"], rel=1e-4)


@pytest.mark.parametrize("use_dora", [False, True])
def test_reference_bypasses_the_adapter_layers(tiny_model_dir, shared_data, use_dora):
    """After training steps the policy moved but the reference log-probs are those of the model
    before training (for DoRA the magnitude vector is bypassed too); the adapter layers are back
    in place after each reference forward."""
    from mlx.utils import tree_flatten

    from backends import mlx_backend
    from backends.data import load_tokenizer, make_preference_batches, prepare_data
    from backends.mlx_backend.engine import sequence_log_probs

    raw = dpo_config(tiny_model_dir, shared_data)
    raw["lora"]["use_dora"] = use_dora
    config = config_from_dict(raw)
    data = prepare_data(config, load_tokenizer(tiny_model_dir))
    batches = make_preference_batches(
        data.train, batch_size=2, pad_token_id=data.pad_token_id, seed=3, epoch=0
    )
    engine = mlx_backend.create_engine(config)
    engine.setup(config, tiny_model_dir)
    before = engine.reference_log_probs(batches[0])
    first = engine.train_step(batches[1:2], 1e-2)
    assert abs(first["loss"] - LN2) < 1e-5
    engine.train_step(batches[2:3], 1e-2)
    trainable = len(tree_flatten(engine.model.trainable_parameters()))
    np.testing.assert_allclose(engine.reference_log_probs(batches[0]), before, atol=1e-5)
    assert len(tree_flatten(engine.model.trainable_parameters())) == trainable  # adapters restored
    inputs, targets = engine._inputs(batches[0])
    policy = np.array(sequence_log_probs(engine.model, inputs, targets)).astype(np.float64)
    assert np.abs(policy - before).max() > 1e-3


@pytest.mark.slow
def test_mlx_dpo_run_stops_and_resumes_exactly(tiny_model_dir, shared_data, tmp_path):
    """`backend: mlx` through the shared loop with precomputed reference log-probs and validation:
    DPO fields on every step and eval; a stop after step 2 and a resume replay the steps of an
    uninterrupted run (LoRA dropout on)."""
    runs = tmp_path / "runs"

    def config(name):
        raw = dpo_config(
            tiny_model_dir,
            shared_data,
            runs,
            name,
            dpo={"precompute_ref_log_probs": True},
            data={"validation_fraction": 0.1},
            max_steps=5,
            eval_every=2,
            save_every=0,
        )
        raw["backend"] = "mlx"
        raw["lora"]["dropout"] = 0.1
        return config_from_dict(raw)

    whole = run_training(config("whole"), console=False)
    events = whole.events()
    assert next(e for e in events if e["event"] == "run_started")["backend"] == "mlx"
    steps = {e["step"]: e for e in events if e["event"] == "step"}
    assert sorted(steps) == [1, 2, 3, 4, 5] and abs(steps[1]["loss"] - LN2) < 1e-5
    assert all(all(k in e for k in STEP_FIELDS) for e in steps.values())
    evals = [e for e in events if e["event"] == "eval"]
    assert [e["step"] for e in evals] == [2, 4, 5] and all("reward_accuracy" in e for e in evals)

    stop = threading.Event()
    events_path = runs / "stopped" / "events.jsonl"

    def stop_after_step_2() -> None:
        while not any(e["event"] == "step" and e["step"] >= 2 for e in read_events(events_path)):
            time.sleep(0.01)
        stop.set()

    threading.Thread(target=stop_after_step_2, daemon=True).start()
    with pytest.raises(RunStopped):
        run_training(config("stopped"), console=False, stop=stop)
    run = RunDir(runs / "stopped")
    stopped = run.events()[-1]
    assert stopped["event"] == "stopped" and 2 <= stopped["step"] < 5
    assert (Path(stopped["checkpoint"]) / REFERENCE_FILE).is_file()
    run_training(None, resume_dir=run.path, console=False)
    resumed = [e for e in run.events() if e["event"] == "run_started"][-1]
    after = [e for e in run.events()[run.events().index(resumed) :] if e["event"] == "step"]
    assert [e["step"] for e in after] == list(range(stopped["step"] + 1, 6))
    for e in after:
        for key in ("loss", "grad_norm", *STEP_FIELDS):
            assert e[key] == pytest.approx(steps[e["step"]][key], abs=1e-5), (e["step"], key)
    assert run_status(run) == "finished"
