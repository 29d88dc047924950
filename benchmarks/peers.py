"""What the "ours against TRL" benchmarks share (``train_throughput.py``, ``dpo_throughput.py``):
the benchmark home, each side in its own child process (so that its peak RSS is its own), the
timing of both sides, and the result table.

A child prints one line ``RESULT {json}`` with ``tokens`` (non-padding tokens of the timed steps),
``tokens_all`` (those of every step, warm-up included: equal on both sides when they trained the
same rows uncut), ``seconds`` (their wall time), ``steps`` (timed steps), ``loss`` (mean training
loss) and ``peak_rss`` (bytes); the parent runs the sides alternately ``repeats`` times and keeps, per side,
the run with the median tokens/s (peak RSS: the highest seen).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULT = "PEER-RESULT "
SIDES = ("ours", "trl")


def home() -> Path:
    """``TUNEDESK_HOME`` for the benchmarks (default ``~/.cache/tunedesk-bench``), set in the
    environment so children and the model store agree."""
    path = os.environ.get("TUNEDESK_HOME") or str(Path.home() / ".cache" / "tunedesk-bench")
    os.environ["TUNEDESK_HOME"] = path
    return Path(path)


def peak_rss() -> int:
    """Peak resident set size of this process in bytes."""
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(rss if sys.platform == "darwin" else rss * 1024)  # macOS: bytes, Linux: KiB


def ours_result(run: Any, skip_steps: int) -> dict[str, Any]:
    """Timing of a finished TuneDesk run (a ``RunDir``) from its ``step`` events, leaving out the
    first ``skip_steps`` steps."""
    steps = [e for e in run.events() if e["event"] == "step"]
    first, last = steps[skip_steps - 1] if skip_steps else None, steps[-1]
    return {
        "tokens": last["tokens"] - (first["tokens"] if first else 0),
        "tokens_all": last["tokens"],
        "seconds": last["elapsed"] - (first["elapsed"] if first else 0.0),
        "steps": len(steps) - skip_steps,
        "loss": sum(e["loss"] for e in steps) / len(steps),
    }


def trl_model(
    model_dir: Path, rank: int, precision: str = "auto", targets: str = "all-linear"
) -> tuple[Any, Any, dict[str, Any]]:
    """(the base model in ``precision`` as our engine resolves it on this device (``auto``: what
    ours picks), the LoRA config both sides use: rank, alpha 2 x rank, dropout 0.05, ``targets``
    (every linear layer, or ``attention``: the q/k/v/o projections); the TrainingArguments for that precision: ``bf16``, ``fp16``, and ``use_cpu`` on the
    CPU, which transformers requires for bf16 there)."""
    import torch
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM

    from backends.torch_backend import pick_device, resolve_precision

    device = pick_device()
    resolved, _ = resolve_precision(precision, device)
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[resolved]
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=dtype, use_safetensors=True)
    lora = LoraConfig(
        r=rank,
        lora_alpha=2 * rank,
        lora_dropout=0.05,
        target_modules=["q_proj", "k_proj", "v_proj", "o_proj"] if targets == "attention" else targets,
        task_type="CAUSAL_LM",
    )
    args = {"bf16": resolved == "bf16", "fp16": resolved == "fp16", "use_cpu": device == "cpu"}
    return model, lora, args


def trl_timed_train(
    trainer_class: type, skip_steps: int, count_tokens: Any = None, **trainer_kwargs: Any
) -> dict[str, Any]:
    """Train with a TRL trainer class, timing each optimizer step with a ``TrainerCallback`` and
    counting the real (non-padding) tokens of each training batch from its attention mask
    (``count_tokens(inputs) -> int`` for trainers whose batches name their masks otherwise)."""
    count = count_tokens or (lambda inputs: int(inputs["attention_mask"].sum()))
    from transformers import TrainerCallback

    step_times: list[float] = []
    step_tokens: list[int] = []

    class Timer(TrainerCallback):
        def on_step_end(self, *a: Any, **k: Any) -> None:
            step_times.append(time.perf_counter())

    class CountingTrainer(trainer_class):  # type: ignore[misc, valid-type]
        def compute_loss(self, model: Any, inputs: Any, *a: Any, **k: Any) -> Any:
            if model.training:
                step_tokens.append(count(inputs))
            return super().compute_loss(model, inputs, *a, **k)

    trainer = CountingTrainer(callbacks=[Timer()], **trainer_kwargs)
    start = time.perf_counter()
    result = trainer.train()
    times = [start, *step_times]
    return {
        "tokens": sum(step_tokens[skip_steps:]),
        "tokens_all": sum(step_tokens),
        "seconds": times[-1] - times[skip_steps],
        "steps": len(step_times) - skip_steps,
        "loss": result.training_loss,
    }


def parser(
    description: str, *, rows: int, steps: int, batch_size: int, steps_help: str, batch_help: str
) -> argparse.ArgumentParser:
    """The options both benchmarks take (and the hidden ``--peer``/``--workdir`` of a child)."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--model", default="SmolLM2-135M-Instruct")
    p.add_argument("--rows", type=int, default=rows)
    p.add_argument("--steps", type=int, default=steps, help=steps_help)
    p.add_argument("--skip-steps", type=int, default=2, help="warm-up steps left out of the timing")
    p.add_argument("--batch-size", type=int, default=batch_size, help=batch_help)
    p.add_argument("--max-seq-length", type=int, default=256)
    p.add_argument("--rank", type=int, default=16)
    p.add_argument(
        "--precision",
        choices=["auto", "fp32", "bf16"],
        default="auto",
        help="both sides (auto: what ours picks here, e.g. bf16 on a CPU with AVX512-BF16)",
    )
    p.add_argument("--peer", choices=SIDES, help=argparse.SUPPRESS)
    p.add_argument("--workdir", help=argparse.SUPPRESS)
    return p


def child(args: argparse.Namespace, data_name: str, run_ours: Any, run_trl: Any) -> None:
    """In a child (``--peer``): run that side on ``WORKDIR/data_name`` and print its result line
    with its peak RSS."""
    home()
    workdir = Path(args.workdir)
    result = (run_ours if args.peer == "ours" else run_trl)(args, workdir / data_name, workdir)
    print(RESULT + json.dumps({**result, "peak_rss": peak_rss()}), flush=True)


def run_sides(
    script: str, args: argparse.Namespace, keys: Sequence[str], workdir: Path, repeats: int = 1
) -> dict[str, dict[str, Any]]:
    """Run ``script --peer SIDE --workdir WORKDIR`` plus the options ``keys`` of ``args`` for both
    sides, alternately ``repeats`` times (so a busy spell on the machine hits both); returns the
    median run of each side. Exits with the child's stderr when a side fails."""
    runs: dict[str, list[dict[str, Any]]] = {side: [] for side in SIDES}
    for repeat in range(repeats):
        for side in SIDES:
            cmd = [sys.executable, script, "--peer", side, "--workdir", str(workdir)]
            for key in keys:
                cmd += [f"--{key.replace('_', '-')}", str(getattr(args, key))]
            print(f"running {side} ({repeat + 1}/{repeats})...", file=sys.stderr, flush=True)
            out = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
            line = next((x for x in out.stdout.splitlines() if x.startswith(RESULT)), None)
            if out.returncode != 0 or line is None:
                sys.exit(f"{side} failed (exit {out.returncode}):\n{out.stderr[-4000:]}")
            runs[side].append(json.loads(line[len(RESULT) :]))
            print(f"  {side}: {json.dumps(runs[side][-1])}", file=sys.stderr, flush=True)
    results = {}
    for side, rs in runs.items():
        ranked = sorted(rs, key=lambda r: r["tokens"] / r["seconds"])
        results[side] = {**ranked[len(ranked) // 2], "peak_rss": max(r["peak_rss"] for r in rs)}
    return results


def print_comparison(title: str, results: dict[str, dict[str, Any]]) -> None:
    """The table (tokens/s, s/step, peak RSS, tokens, mean loss per side) and the ratios ours/TRL."""
    print(title)
    print(f"{'':6s} {'tokens/s':>10s} {'s/step':>8s} {'peak RSS':>10s} {'tokens':>8s} {'mean loss':>9s}")
    for side, r in results.items():
        tps = r["tokens"] / r["seconds"]
        print(
            f"{side:6s} {tps:10.1f} {r['seconds'] / r['steps']:8.2f} {r['peak_rss'] / 2**20:8.0f} MB "
            f"{r['tokens']:8d} {r['loss']:9.4f}"
        )
    ours, trl = results["ours"], results["trl"]
    if "tokens_all" in ours and "tokens_all" in trl:
        print(f"tokens of all steps (warm-up included): ours {ours['tokens_all']}, TRL {trl['tokens_all']}")
    speed = (ours["tokens"] / ours["seconds"]) / (trl["tokens"] / trl["seconds"])
    memory = ours["peak_rss"] / trl["peak_rss"]
    print(f"ratio ours/TRL: tokens/s {speed:.2f}x, peak RSS {memory:.2f}x")
