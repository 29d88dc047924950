"""ORPO and KTO on the MLX engine (tiny Llama only: MLX on this CPU is far slower than torch): the
first step's loss, method figures and every LoRA gradient equal the PyTorch engine's from identical
LoRA weights (B randomised, so the policy differs from the reference and KTO's KL estimate is not
0), and a run through the shared loop with its method figures in the step events that stops and
resumes exactly."""

from __future__ import annotations

import math
import threading
import time

import numpy as np
import pytest

pytest.importorskip("mlx.core")

from backends.config import config_from_dict  # noqa: E402
from backends.errors import RunStopped  # noqa: E402
from backends.events import KTO_STEP_FIELDS, ORPO_STEP_FIELDS, read_events  # noqa: E402
from backends.jobs import run_training  # noqa: E402
from backends.runs import RunDir, run_status  # noqa: E402
from tests.test_dpo_mlx import torch_lora_grads  # noqa: E402
from tests.test_orpo_kto import write_feedback  # noqa: E402
from tests.test_trl_parity import randomise_lora_b  # noqa: E402


def method_config(model_dir, data, method: str, runs=None, name: str = "run", **training) -> dict:
    return {
        "model": str(model_dir),
        "method": method,
        "backend": "mlx",
        "data": {"train_file": str(data), "validation_fraction": 0.0},
        "lora": {"rank": 4, "alpha": 8, "dropout": 0.0},
        method: {"beta": 0.3} if method == "orpo" else {"beta": 0.3, "undesirable_weight": 1.5},
        "training": {
            "precision": "fp32",
            "batch_size": 3,
            "max_seq_length": 48,
            "learning_rate": 1e-2,
            "seed": 3,
            "max_grad_norm": 0.0,
            "save_every": 0,
            **training,
        },
        "output": {"runs_dir": str(runs or "runs"), "run_name": name},
    }


def data_file(method: str, shared_data, tmp_path):
    if method == "orpo":
        return shared_data / "llamafactory" / "dpo_en_demo.json"
    return write_feedback(shared_data, tmp_path / "kto.json", pairs=8)


@pytest.mark.parametrize("method", ["orpo", "kto"])
def test_first_step_equals_torch(method, tiny_model_dir, shared_data, tmp_path):
    """Two micro-batches of 3 pairs (ORPO) or rated rows (KTO), identical LoRA weights on both
    engines (torch's, B randomised, converted to mlx-lm's layout): the same loss within 1e-4, the
    same method figures, the same gradient of every LoRA matrix within 1e-4."""
    import mlx.core as mx
    from mlx.utils import tree_flatten

    from backends import mlx_backend, torch_backend
    from backends.data import load_tokenizer, make_kto_batches, make_preference_batches, prepare_data
    from backends.export import export_adapter

    config = config_from_dict(method_config(tiny_model_dir, data_file(method, shared_data, tmp_path), method))
    data = prepare_data(config, load_tokenizer(tiny_model_dir))
    make = make_preference_batches if method == "orpo" else make_kto_batches
    micro = make(data.train, batch_size=3, pad_token_id=data.pad_token_id, seed=3, epoch=0)[:2]
    assert len(micro) == 2
    if method == "kto":
        kinds = np.concatenate([b.desirable for b in micro])
        assert kinds.any() and not kinds.all()  # both weights are exercised

    torch_engine = torch_backend.create_engine(config, "cpu")
    torch_engine.setup(config, tiny_model_dir)
    randomise_lora_b(torch_engine.model)
    torch_engine.save_adapter(tmp_path / "init")
    export_adapter(tmp_path / "init", "mlx", tmp_path / "init-mlx")
    mlx_engine = mlx_backend.create_engine(config)
    mlx_engine.setup(config, tiny_model_dir)
    mlx_engine.load_adapter_weights(mx.load(str(tmp_path / "init-mlx" / "adapters.safetensors")))

    mlx_loss, mlx_grads, mlx_extra = mlx_engine.loss_and_gradients(micro)
    torch_result = torch_engine.train_step(micro, 0.0)  # lr 0, no clipping: the gradients stay in .grad
    assert math.isfinite(mlx_loss) and abs(mlx_loss - torch_result["loss"]) < 1e-4
    fields = ORPO_STEP_FIELDS if method == "orpo" else KTO_STEP_FIELDS
    assert set(mlx_extra) == set(fields) and set(fields) <= set(torch_result)
    for key in fields:
        assert mlx_extra[key] == pytest.approx(torch_result[key], abs=1e-4), key
    if method == "kto":
        assert mlx_extra["kl"] > 1e-4  # the randomised adapter moved the policy from the reference

    mlx_grads = {k: np.array(v).astype(np.float64) for k, v in tree_flatten(mlx_grads)}
    torch_grads = torch_lora_grads(torch_engine)
    assert set(mlx_grads) == set(torch_grads) and len(mlx_grads) == 2 * 7 * 2  # 7 linear layers x 2 blocks
    biggest = 0.0
    for name, grad in torch_grads.items():
        np.testing.assert_allclose(mlx_grads[name], grad, atol=1e-4, err_msg=name)
        biggest = max(biggest, float(np.abs(grad).max()))
    assert biggest > 1e-3  # the comparison is not between zeros

    # evaluation: the same loss and figures, without gradients
    torch_eval, mlx_eval = torch_engine.eval_metrics(micro), mlx_engine.eval_metrics(micro)
    assert set(mlx_eval) == set(torch_eval)
    for key, value in torch_eval.items():
        assert mlx_eval[key] == pytest.approx(value, abs=1e-4), key


@pytest.mark.slow
@pytest.mark.parametrize("method", ["orpo", "kto"])
def test_mlx_run_stops_and_resumes_exactly(method, tiny_model_dir, shared_data, tmp_path):
    """`backend: mlx` through the shared loop: the method's figures on every step, a stop after
    step 2 and a resume that repeats the steps of an uninterrupted run (LoRA dropout on)."""
    data, runs = data_file(method, shared_data, tmp_path), tmp_path / "runs"

    def config(name):
        raw = method_config(tiny_model_dir, data, method, runs, name, batch_size=2, max_steps=4)
        raw["lora"]["dropout"] = 0.1
        raw["data"]["validation_fraction"] = 0.2
        raw["training"]["eval_every"] = 2
        return config_from_dict(raw)

    fields = ORPO_STEP_FIELDS if method == "orpo" else ("kl", "desirable_share")
    whole = run_training(config("whole"), console=False)
    events = whole.events()
    started = next(e for e in events if e["event"] == "run_started")
    assert started["backend"] == "mlx" and started["method"] == method
    steps = {e["step"]: e for e in events if e["event"] == "step"}
    assert sorted(steps) == [1, 2, 3, 4]
    assert all(isinstance(e[k], float) for e in steps.values() for k in fields)
    evals = [e for e in events if e["event"] == "eval"]
    assert [e["step"] for e in evals] == [2, 4] and all(math.isfinite(e["val_loss"]) for e in evals)
    if method == "kto":
        assert steps[1]["loss"] != pytest.approx(steps[4]["loss"], abs=1e-6)  # it trains

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
    assert stopped["event"] == "stopped" and 2 <= stopped["step"] < 4
    run_training(None, resume_dir=run.path, console=False)
    events = run.events()
    resumed = [e for e in events if e["event"] == "run_started"][-1]
    after = [e for e in events[events.index(resumed) :] if e["event"] == "step"]
    assert [e["step"] for e in after] == list(range(stopped["step"] + 1, 5))
    for e in after:
        for key in ("loss", "grad_norm", *fields):
            assert e[key] == pytest.approx(steps[e["step"]][key], abs=1e-5), (e["step"], key)
    assert run_status(run) == "finished"
