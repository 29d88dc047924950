"""The MLX backend inside the shared training loop: parity with the PyTorch engine from identical
LoRA weights on the same batches, `tunedesk train --set backend=mlx` end to end with resume after
SIGKILL, and the clear error when MLX is missing."""

from __future__ import annotations

import builtins
import json
import os
import signal
import subprocess
import sys

import numpy as np
import pytest
import yaml

pytest.importorskip("mlx.core")

from backends.cli import main  # noqa: E402
from backends.config import config_from_dict  # noqa: E402
from backends.events import read_events  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.slow
def test_parity_with_torch_engine(tiny_model_dir, shared_data, tmp_path):
    """Tiny Llama, fp32, identical initial LoRA A/B (the torch engine's, converted to MLX), the same
    batches from the shared pipeline (batch 1 x accumulation 2) and learning rates from the shared
    schedule: first-step loss within 1e-4, 20-step loss curves within 2%."""
    import mlx.core as mx

    from backends import mlx_backend, torch_backend
    from backends.data import load_tokenizer, make_batches, prepare_data
    from backends.export import export_adapter
    from backends.training.schedule import learning_rate

    config = config_from_dict(
        {
            "model": str(tiny_model_dir),
            "data": {
                "train_file": str(shared_data / "wikisql" / "train.jsonl"),
                "validation_fraction": 0,
                "pack_text": False,  # one row a sequence, as mlx_lm.lora feeds it
            },
            "lora": {"rank": 8, "alpha": 16, "dropout": 0.0},
            "training": {
                "precision": "fp32",
                "learning_rate": 2e-2,
                "batch_size": 1,
                "gradient_accumulation_steps": 2,
                "max_seq_length": 32,
                "seed": 3,
                "weight_decay": 0.01,
            },
        }
    )
    tokenizer = load_tokenizer(tiny_model_dir)
    data = prepare_data(config, tokenizer)
    batches = make_batches(data.train, batch_size=1, pad_token_id=data.pad_token_id or 0, seed=3, epoch=0)
    steps = 20

    torch_engine = torch_backend.create_engine(config)
    torch_engine.setup(config, tiny_model_dir)
    torch_engine.save_adapter(tmp_path / "init")
    export_adapter(tmp_path / "init", "mlx", tmp_path / "init-mlx")
    mlx_engine = mlx_backend.create_engine(config)
    mlx_engine.setup(config, tiny_model_dir)
    mlx_engine.load_adapter_weights(mx.load(str(tmp_path / "init-mlx" / "adapters.safetensors")))

    torch_losses, mlx_losses = [], []
    for step in range(steps):
        lr = learning_rate(step, peak=2e-2, total_steps=steps, warmup=1, kind="cosine")
        micro = batches[2 * step : 2 * step + 2]
        torch_losses.append(torch_engine.train_step(micro, lr)["loss"])
        mlx_losses.append(mlx_engine.train_step(micro, lr)["loss"])
    torch_losses, mlx_losses = np.array(torch_losses), np.array(mlx_losses)
    assert abs(mlx_losses[0] - torch_losses[0]) < 1e-4
    np.testing.assert_allclose(mlx_losses, torch_losses, rtol=0.02)
    # The curve moved (training happened), so agreement is not just the base model's loss.
    assert torch_losses[-5:].mean() < torch_losses[:5].mean() - 0.15


def _write_config(tmp_path, tiny_model_dir, shared_data, **training) -> str:
    cfg = {
        "model": str(tiny_model_dir),
        "data": {
            "train_file": str(shared_data / "wikisql" / "train.jsonl"),
            "validation_fraction": 0,
            "pack_text": False,  # one row a sequence, as mlx_lm.lora feeds it
        },
        "lora": {"rank": 4, "alpha": 8, "dropout": 0.1},
        "training": {
            "precision": "fp32",
            "learning_rate": 1e-2,
            "batch_size": 2,
            "max_seq_length": 48,
            "max_steps": 8,
            "save_every": 2,
            "seed": 5,
            **training,
        },
        "output": {"runs_dir": str(tmp_path / "runs")},
    }
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return str(path)


def _step_losses(run_dir) -> dict[int, float]:
    """The loss of each step (the last record of a step wins: a resumed run repeats steps)."""
    return {e["step"]: e["loss"] for e in read_events(run_dir / "events.jsonl") if e["event"] == "step"}


@pytest.mark.slow
def test_train_cli_mlx_resume_after_sigkill(tiny_model_dir, shared_data, tmp_path):
    cfg = _write_config(tmp_path, tiny_model_dir, shared_data)
    assert main(["train", "--config", cfg, "--set", "backend=mlx", "--set", "output.run_name=whole"]) == 0
    whole = tmp_path / "runs" / "whole"
    expected = _step_losses(whole)
    assert sorted(expected) == list(range(1, 9))

    env = {**os.environ, "PYTHONPATH": ROOT}
    proc = subprocess.Popen(
        [sys.executable, "-m", "desktop", "train", "--config", cfg, "--set", "backend=mlx"]
        + ["--set", "output.run_name=killed", "--json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        cwd=ROOT,
        env=env,
    )
    killed_at = None
    for line in proc.stdout:
        event = json.loads(line)
        if event["event"] == "checkpoint" and event["step"] >= 4:
            os.kill(proc.pid, signal.SIGKILL)
            killed_at = event["step"]
            break
    proc.wait(timeout=60)
    assert killed_at is not None and proc.returncode == -signal.SIGKILL
    killed = tmp_path / "runs" / "killed"
    assert not (killed / "adapter").exists()

    assert main(["train", "--resume", str(killed)]) == 0
    events = read_events(killed / "events.jsonl")
    resumed = [e for e in events if e["event"] == "run_started"][-1]
    assert resumed["backend"] == "mlx" and resumed["resumed_from"] >= killed_at
    got = _step_losses(killed)
    assert sorted(got) == list(range(1, 9))
    after = range(resumed["resumed_from"] + 1, 9)
    np.testing.assert_allclose([got[s] for s in after], [expected[s] for s in after], atol=1e-5)
    assert events[-1]["event"] == "run_finished"
    adapter = killed / "adapter"
    assert {"adapters.safetensors", "adapter_config.json", "tunedesk.json", "chat_template.jinja"} <= {
        p.name for p in adapter.iterdir()
    }
    meta = json.loads((adapter / "tunedesk.json").read_text())
    assert meta["backend"] == "mlx" and meta["base_model"]["path"] == str(tiny_model_dir)
    step = next(e for e in events if e["event"] == "step")
    assert step["memory"]["device_peak"] > 0 and step["memory"]["rss"] > 0


def test_backend_mlx_without_mlx_is_exit_1(tiny_model_dir, shared_data, tmp_path, monkeypatch, capsys):
    cfg = _write_config(tmp_path, tiny_model_dir, shared_data)
    real_import = builtins.__import__

    def no_mlx(name, *args, **kwargs):
        if name == "mlx" or name.startswith(("mlx.", "mlx_lm")):
            raise ImportError(f"No module named {name!r}")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_mlx)
    assert main(["train", "--config", cfg, "--set", "backend=mlx"]) == 1
    err = capsys.readouterr().err
    assert "backend" in err and "mlx" in err and "pip install" in err
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


def test_nan_through_the_loop_is_exit_3_with_the_last_good_checkpoint(tiny_model_dir, shared_data, tmp_path):
    """fp16 with a huge learning rate overflows on MLX too: run_failed kind nan, exit 3, no adapter,
    the checkpoints before it kept with finite weights."""
    from safetensors.numpy import load_file

    cfg = _write_config(
        tmp_path,
        tiny_model_dir,
        shared_data,
        precision="fp16",
        learning_rate=1000.0,
        save_every=1,
        warmup_ratio=0,
    )
    assert main(["train", "--config", cfg, "--set", "backend=mlx", "--set", "output.run_name=nan"]) == 3
    run = tmp_path / "runs" / "nan"
    events = read_events(run / "events.jsonl")
    failed = events[-1]
    assert failed["event"] == "run_failed" and failed["kind"] == "nan" and "learning_rate" in failed["hint"]
    assert failed["step"] == max(_step_losses(run)) < 8
    assert not (run / "adapter").exists()
    checkpoints = sorted((run / "checkpoints").glob("step-*"), key=lambda p: int(p.name.split("-")[1]))
    assert checkpoints[-1].name == f"step-{failed['step']}"
    weights = load_file(checkpoints[-1] / "adapters.safetensors")
    assert weights and all(np.isfinite(w).all() for w in weights.values())
