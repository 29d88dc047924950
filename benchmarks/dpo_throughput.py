"""DPO throughput of TuneDesk's own DPO step (the shared loop + PyTorch engine) against TRL's
``DPOTrainer`` with PEFT, in one run: decides which one the PyTorch backend uses.

Both sides train the same model (SmolLM2-135M-Instruct, imported from its GGUF on first use) on
the same preference pairs: the first ``--rows`` rows of
``../shared/data/llamafactory/dpo_en_demo.json`` (read in place), rendered with the model's chat
template and cut at ``--max-seq-length`` tokens (prompt + answer; pairs whose prompt alone does
not fit are dropped by both). Ours reads the file through our data pipeline; TRL gets the rows
in its conversational preference format (``prompt``/``chosen``/``rejected`` message lists) and
tokenises them itself. Same LoRA (rank, alpha, dropout, every linear layer), AdamW, learning
rate, beta 0.1, sigmoid loss, batch size (pairs), no gradient accumulation, reference = the base
model with the adapter disabled (computed every step on both sides), fp32 on the CPU, no gradient
checkpointing, no evaluation or checkpoints, the same number of optimizer steps. Each side runs
in its own fresh process, so its peak RSS is its own.

- ours: ``backends.training.run_training`` with ``method: dpo`` (one forward of the 2B rows, the
  LM head applied at answer positions only), timed from its ``step`` events;
- TRL: ``trl.DPOTrainer(model, args=DPOConfig(...), peft_config=LoraConfig(...))`` with its
  defaults otherwise, timed by a ``TrainerCallback``; its real (non-padding) tokens are counted
  from each batch's attention mask (both answers' rows, as ours).

Printed per side: tokens/s (non-padding tokens of chosen and rejected rows over the wall time of
the steps after the first ``--skip-steps``), seconds per step, peak RSS, mean DPO loss; then the
ratios ours / TRL.

    python benchmarks/dpo_throughput.py                      # 10 steps, 2 pairs a step, 256 tokens
    python benchmarks/dpo_throughput.py --steps 20 --batch-size 4 --max-seq-length 384
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

ROOT = Path(__file__).resolve().parent.parent
for path in (ROOT, Path(__file__).resolve().parent):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

from train_throughput import _home, _peak_rss  # noqa: E402  (the SFT benchmark's helpers)

PAIRS = ROOT.parent / "shared" / "data" / "llamafactory" / "dpo_en_demo.json"
RESULT = "DPO-THROUGHPUT-RESULT "
BETA = 0.1
LEARNING_RATE = 5e-5


def _config(args: argparse.Namespace, data_file: Path, runs_dir: Path):
    from backends.config import config_from_dict

    return config_from_dict(
        {
            "model": args.model,
            "backend": "torch",
            "method": "dpo",
            "data": {"train_file": str(data_file), "validation_fraction": 0.0},
            "lora": {
                "rank": args.rank,
                "alpha": 2 * args.rank,
                "dropout": 0.05,
                "target_modules": "all-linear",
            },
            "dpo": {"beta": BETA, "label_smoothing": 0.0, "precompute_ref_log_probs": False},
            "training": {
                "learning_rate": LEARNING_RATE,
                "lr_scheduler": "linear",
                "warmup_ratio": 0.0,
                "max_steps": args.steps,
                "batch_size": args.batch_size,
                "max_seq_length": args.max_seq_length,
                "precision": "auto",
                "eval_every": 0,
                "save_every": 0,
                "seed": 0,
            },
            "output": {"runs_dir": str(runs_dir), "run_name": "bench"},
        }
    )


def run_ours(args: argparse.Namespace, data_file: Path, workdir: Path) -> dict:
    from backends.training import run_training

    run = run_training(_config(args, data_file, workdir / "runs"), console=False)
    steps = [e for e in run.events() if e["event"] == "step"]
    first, last = steps[args.skip_steps - 1] if args.skip_steps else None, steps[-1]
    return {
        "tokens": last["tokens"] - (first["tokens"] if first else 0),
        "seconds": last["elapsed"] - (first["elapsed"] if first else 0.0),
        "steps": len(steps) - args.skip_steps,
        "loss": sum(e["loss"] for e in steps) / len(steps),
    }


def _trl_rows(rows: list[dict]) -> list[dict]:
    """LLaMA-Factory's ShareGPT preference rows as TRL's conversational preference format."""
    roles = {"human": "user", "gpt": "assistant", "system": "system"}
    out = []
    for row in rows:
        prompt = [{"role": roles[m["from"]], "content": m["value"]} for m in row["conversations"]]
        out.append(
            {
                "prompt": prompt,
                "chosen": [{"role": "assistant", "content": row["chosen"]["value"]}],
                "rejected": [{"role": "assistant", "content": row["rejected"]["value"]}],
            }
        )
    return out


def run_trl(args: argparse.Namespace, data_file: Path, workdir: Path) -> dict:
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, TrainerCallback
    from trl import DPOConfig, DPOTrainer

    from backends import models
    from backends.data import load_tokenizer
    from backends.torch_backend import pick_device, resolve_precision

    model_dir = models.resolve_model(args.model)
    tokenizer = load_tokenizer(model_dir)
    dataset = Dataset.from_list(_trl_rows(json.loads(data_file.read_text(encoding="utf-8"))))
    precision, _ = resolve_precision("auto", pick_device())
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=dtype, use_safetensors=True)

    step_times: list[float] = []
    step_tokens: list[int] = []

    class Timer(TrainerCallback):
        def on_step_end(self, *a, **k):
            step_times.append(time.perf_counter())

    class CountingTrainer(DPOTrainer):
        def compute_loss(self, model, inputs, *a, **k):
            if model.training:
                step_tokens.append(int(inputs["attention_mask"].sum()))
            return super().compute_loss(model, inputs, *a, **k)

    config = DPOConfig(
        output_dir=str(workdir / "trl"),
        max_steps=args.steps,
        per_device_train_batch_size=args.batch_size,
        gradient_accumulation_steps=1,
        learning_rate=LEARNING_RATE,
        lr_scheduler_type="linear",
        warmup_steps=0,
        gradient_checkpointing=False,
        bf16=precision == "bf16",
        fp16=precision == "fp16",
        max_length=args.max_seq_length,
        beta=BETA,
        loss_type=["sigmoid"],
        precompute_ref_log_probs=False,
        logging_steps=10,
        save_strategy="no",
        report_to="none",
        seed=0,
        dataloader_num_workers=0,
    )
    lora = LoraConfig(
        r=args.rank,
        lora_alpha=2 * args.rank,
        lora_dropout=0.05,
        target_modules="all-linear",
        task_type="CAUSAL_LM",
    )
    trainer = CountingTrainer(
        model=model,
        args=config,
        train_dataset=dataset,
        processing_class=tokenizer,
        peft_config=lora,
        callbacks=[Timer()],
    )
    start = time.perf_counter()
    result = trainer.train()
    times = [start, *step_times]
    skip = args.skip_steps
    return {
        "tokens": sum(step_tokens[skip:]),
        "seconds": times[-1] - times[skip],
        "steps": len(step_times) - skip,
        "loss": result.training_loss,
    }


def child(args: argparse.Namespace) -> None:
    _home()
    workdir = Path(args.workdir)
    data_file = workdir / "dpo_first_rows.json"
    result = (run_ours if args.peer == "ours" else run_trl)(args, data_file, workdir)
    result["peak_rss"] = _peak_rss()
    print(RESULT + json.dumps(result), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="SmolLM2-135M-Instruct")
    parser.add_argument("--rows", type=int, default=64)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--skip-steps", type=int, default=2, help="warm-up steps left out of the timing")
    parser.add_argument("--batch-size", type=int, default=2, help="pairs per step")
    parser.add_argument("--max-seq-length", type=int, default=256)
    parser.add_argument("--rank", type=int, default=16)
    parser.add_argument("--peer", choices=["ours", "trl"], help=argparse.SUPPRESS)
    parser.add_argument("--workdir", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.peer:
        child(args)
        return

    _home()
    from backends import models

    models.resolve_model(args.model)  # import once, outside the timed children
    with tempfile.TemporaryDirectory(prefix="dpo-bench-") as tmp:
        workdir = Path(tmp)
        rows = json.loads(PAIRS.read_text(encoding="utf-8"))[: args.rows]
        (workdir / "dpo_first_rows.json").write_text(json.dumps(rows), encoding="utf-8")
        results = {}
        for peer in ("ours", "trl"):
            cmd = [sys.executable, __file__, "--peer", peer, "--workdir", str(workdir)]
            for key in ("model", "rows", "steps", "skip_steps", "batch_size", "max_seq_length", "rank"):
                cmd += [f"--{key.replace('_', '-')}", str(getattr(args, key))]
            print(f"running {peer}...", file=sys.stderr, flush=True)
            out = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
            line = next((x for x in out.stdout.splitlines() if x.startswith(RESULT)), None)
            if out.returncode != 0 or line is None:
                sys.exit(f"{peer} failed (exit {out.returncode}):\n{out.stderr[-4000:]}")
            results[peer] = json.loads(line[len(RESULT) :])

    print(
        f"DPO, {Path(args.model).name} LoRA r{args.rank} all-linear, first {args.rows} pairs of dpo_en_demo, "
        f"{args.batch_size} pairs a step, max {args.max_seq_length} tokens, {args.steps} steps "
        f"(first {args.skip_steps} not timed), {os.cpu_count()} CPU threads"
    )
    print(f"{'':6s} {'tokens/s':>10s} {'s/step':>8s} {'peak RSS':>10s} {'tokens':>8s} {'mean loss':>9s}")
    for peer, r in results.items():
        tps = r["tokens"] / r["seconds"]
        print(
            f"{peer:6s} {tps:10.1f} {r['seconds'] / r['steps']:8.2f} {r['peak_rss'] / 2**20:8.0f} MB "
            f"{r['tokens']:8d} {r['loss']:9.4f}"
        )
    ours, trl = results["ours"], results["trl"]
    speed = (ours["tokens"] / ours["seconds"]) / (trl["tokens"] / trl["seconds"])
    memory = ours["peak_rss"] / trl["peak_rss"]
    print(f"ratio ours/TRL: tokens/s {speed:.2f}x, peak RSS {memory:.2f}x")


if __name__ == "__main__":
    main()
