"""Training throughput of TuneDesk's PyTorch backend against TRL's ``SFTTrainer`` with PEFT, in one run.

Both sides train the same model (SmolLM2-135M-Instruct, imported from its GGUF on first use) on
the same tokens: the first ``--rows`` rows of ``../shared/data/llamafactory/alpaca_en_demo.json``
tokenised once by our data pipeline (the model's chat template, completion-only labels, cut at
``--max-seq-length``); TRL gets them as a pre-tokenised dataset with ``input_ids`` and ``labels``
(it then skips its own tokenisation and keeps our labels). Same LoRA (rank, alpha, dropout, every
linear layer), AdamW, learning rate, batch size, no gradient accumulation, fp32 on the CPU (the
model's precision elsewhere follows each side's default), no gradient checkpointing, no
evaluation or checkpoints, the same number of optimizer steps: by default one epoch over the rows
(``--steps N`` for fewer). Each side runs in its own fresh process, so its peak RSS is its own.

- ours: ``backends.training.run_training`` (the pipeline's length-grouped batches, loss head
  applied at labelled positions only), timed from its ``step`` events;
- TRL: ``trl.SFTTrainer(model, args=SFTConfig(...), peft_config=LoraConfig(...))`` with its
  defaults otherwise (``--trl-order random``: random batches padded to the longest row; its
  per-step token-accuracy and entropy metrics), timed by a ``TrainerCallback``; its real
  (non-padding) tokens are counted from each batch's attention mask. Over one epoch both sides
  see every row once, so both train on the same tokens, batched each its own way.
  ``--trl-order ours`` instead puts the dataset in the order of our batches and has TRL sample it
  sequentially (transformers' ``train_sampling_strategy="sequential"``): then both train on the
  same rows in every step, which compares the training step alone.

Printed per side: tokens/s (non-padding tokens over the wall time of the steps after the first
``--skip-steps``), seconds per step, peak RSS; then the ratios ours / TRL. With ``--repeats N``
the sides run alternately N times each and the median run of each side is shown (peak RSS: the
highest), which evens out other load on a shared machine. Goal: tokens/s ratio >= 1.5 at no more
memory.

    python benchmarks/train_throughput.py                        # one epoch of 200 rows, batch 4
    python benchmarks/train_throughput.py --trl-order ours --steps 10 --repeats 3
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
ALPACA = ROOT.parent / "shared" / "data" / "llamafactory" / "alpaca_en_demo.json"
RESULT = "TRAIN-THROUGHPUT-RESULT "


def _home() -> Path:
    home = os.environ.get("TUNEDESK_HOME") or str(Path.home() / ".cache" / "tunedesk-bench")
    os.environ["TUNEDESK_HOME"] = home
    return Path(home)


def _config(args: argparse.Namespace, data_file: Path, runs_dir: Path):
    from backends.config import config_from_dict

    return config_from_dict(
        {
            "model": args.model,
            "backend": "torch",
            "data": {"train_file": str(data_file), "validation_fraction": 0.0},
            "lora": {
                "rank": args.rank,
                "alpha": 2 * args.rank,
                "dropout": 0.05,
                "target_modules": "all-linear",
            },
            "training": {
                "learning_rate": 2e-4,
                "lr_scheduler": "linear",
                "warmup_ratio": 0.0,
                "max_steps": args.steps or None,
                "epochs": 1,
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


def torch_threads() -> int:
    """The number of threads torch uses for its CPU kernels (OMP_NUM_THREADS or the core count)."""
    import torch

    return torch.get_num_threads()


def _peak_rss() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB


def run_ours(args: argparse.Namespace, data_file: Path, workdir: Path) -> dict:
    from backends.training import run_training

    run = run_training(_config(args, data_file, workdir / "runs"), console=False)
    steps = [e for e in run.events() if e["event"] == "step"]
    first, last = steps[args.skip_steps - 1] if args.skip_steps else None, steps[-1]
    seconds = last["elapsed"] - (first["elapsed"] if first else 0.0)
    tokens = last["tokens"] - (first["tokens"] if first else 0)
    loss = sum(e["loss"] for e in steps) / len(steps)
    return {"tokens": tokens, "seconds": seconds, "steps": len(steps) - args.skip_steps, "loss": loss}


def run_trl(args: argparse.Namespace, data_file: Path, workdir: Path) -> dict:
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, TrainerCallback
    from trl import SFTConfig, SFTTrainer

    from backends import models
    from backends.data import load_tokenizer, make_batches, prepare_data
    from backends.torch_backend import pick_device, resolve_precision

    config = _config(args, data_file, workdir / "runs")
    model_dir = models.resolve_model(config.model)
    tokenizer = load_tokenizer(model_dir)
    data = prepare_data(config, tokenizer)
    examples = data.train
    if args.trl_order == "ours":
        batches = make_batches(
            data.train,
            batch_size=args.batch_size,
            pad_token_id=data.pad_token_id or 0,
            seed=config.training.seed,
            epoch=0,
            max_seq_length=args.max_seq_length,
        )
        by_row = {e.row: e for e in data.train}
        examples = [by_row[r] for b in batches for r in b.rows]
    dataset = Dataset.from_list([{"input_ids": e.input_ids, "labels": e.labels} for e in examples])
    precision, _ = resolve_precision("auto", pick_device())
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=dtype, use_safetensors=True)

    step_times: list[float] = []
    step_tokens: list[int] = []

    class Timer(TrainerCallback):
        def on_step_end(self, *a, **k):
            step_times.append(time.perf_counter())

    class CountingTrainer(SFTTrainer):
        def compute_loss(self, model, inputs, *a, **k):
            if model.training:
                step_tokens.append(int(inputs["attention_mask"].sum()))
            return super().compute_loss(model, inputs, *a, **k)

    sft = SFTConfig(
        output_dir=str(workdir / "trl"),
        max_steps=args.steps or -1,
        num_train_epochs=1,
        per_device_train_batch_size=args.batch_size,
        gradient_accumulation_steps=1,
        learning_rate=2e-4,
        lr_scheduler_type="linear",
        warmup_steps=0,
        gradient_checkpointing=False,
        bf16=precision == "bf16",
        fp16=precision == "fp16",
        max_length=args.max_seq_length,
        logging_steps=10,
        save_strategy="no",
        report_to="none",
        seed=0,
        dataloader_num_workers=0,
        train_sampling_strategy="sequential" if args.trl_order == "ours" else "random",
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
        args=sft,
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
    data_file = workdir / "alpaca_first_rows.json"
    result = (run_ours if args.peer == "ours" else run_trl)(args, data_file, workdir)
    result["peak_rss"] = _peak_rss()
    print(RESULT + json.dumps(result), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="SmolLM2-135M-Instruct")
    parser.add_argument("--rows", type=int, default=200)
    parser.add_argument("--steps", type=int, default=0, help="optimizer steps (0: one epoch over the rows)")
    parser.add_argument("--skip-steps", type=int, default=2, help="warm-up steps left out of the timing")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--max-seq-length", type=int, default=256)
    parser.add_argument("--rank", type=int, default=16)
    parser.add_argument(
        "--repeats", type=int, default=1, help="runs per side (alternating); the median is shown"
    )
    parser.add_argument(
        "--trl-order",
        choices=["ours", "random"],
        default="random",
        help="TRL's rows per step: ours, or its random sampler",
    )
    parser.add_argument("--peer", choices=["ours", "trl"], help=argparse.SUPPRESS)
    parser.add_argument("--workdir", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.peer:
        child(args)
        return

    _home()
    from backends import models

    models.resolve_model(args.model)  # import once, outside the timed children
    with tempfile.TemporaryDirectory(prefix="train-bench-") as tmp:
        workdir = Path(tmp)
        rows = json.loads(ALPACA.read_text(encoding="utf-8"))[: args.rows]
        (workdir / "alpaca_first_rows.json").write_text(json.dumps(rows), encoding="utf-8")
        runs: dict[str, list[dict]] = {"ours": [], "trl": []}
        for repeat in range(args.repeats):
            for peer in ("ours", "trl"):  # alternating, so a busy spell on the machine hits both
                cmd = [sys.executable, __file__, "--peer", peer, "--workdir", str(workdir)]
                for key in (
                    "model",
                    "rows",
                    "steps",
                    "skip_steps",
                    "batch_size",
                    "max_seq_length",
                    "rank",
                    "trl_order",
                ):
                    cmd += [f"--{key.replace('_', '-')}", str(getattr(args, key))]
                print(f"running {peer} ({repeat + 1}/{args.repeats})...", file=sys.stderr, flush=True)
                out = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
                line = next((x for x in out.stdout.splitlines() if x.startswith(RESULT)), None)
                if out.returncode != 0 or line is None:
                    sys.exit(f"{peer} failed (exit {out.returncode}):\n{out.stderr[-4000:]}")
                runs[peer].append(json.loads(line[len(RESULT) :]))
                print(f"  {peer}: {json.dumps(runs[peer][-1])}", file=sys.stderr, flush=True)
        # the run with the median tokens/s of each side; peak RSS is the highest seen
        results = {}
        for peer, rs in runs.items():
            ranked = sorted(rs, key=lambda r: r["tokens"] / r["seconds"])
            results[peer] = {**ranked[len(ranked) // 2], "peak_rss": max(r["peak_rss"] for r in rs)}

    print(
        f"SmolLM2 LoRA r{args.rank} all-linear, first {args.rows} Alpaca rows, batch {args.batch_size}, "
        f"max {args.max_seq_length} tokens, {results['ours']['steps'] + args.skip_steps} steps "
        f"(first {args.skip_steps} not timed), "
        f"TRL rows per step: {args.trl_order}, {torch_threads()} torch threads, "
        f"median of {args.repeats} run(s) per side"
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
