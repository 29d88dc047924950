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
model with the adapter disabled (computed every step on both sides), the same precision
(``--precision``, as in train_throughput.py; the README's figures were taken with fp32), no gradient
checkpointing, no evaluation or checkpoints, the same number of optimizer steps. Each side runs
in its own fresh process, so its peak RSS is its own.

- ours: ``backends.jobs.run_training`` with ``method: dpo`` (one forward of the 2B rows, the
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
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
for path in (ROOT, Path(__file__).resolve().parent):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

import peers  # noqa: E402  (benchmarks/peers.py: what the ours-against-TRL benchmarks share)

PAIRS = ROOT.parent / "shared" / "data" / "llamafactory" / "dpo_en_demo.json"
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
                "precision": args.precision,
                "eval_every": 0,
                "save_every": 0,
                "seed": 0,
            },
            "output": {"runs_dir": str(runs_dir), "run_name": "bench"},
        }
    )


def run_ours(args: argparse.Namespace, data_file: Path, workdir: Path) -> dict:
    from backends.jobs import run_training

    run = run_training(_config(args, data_file, workdir / "runs"), console=False)
    return peers.ours_result(run, args.skip_steps)


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
    from datasets import Dataset
    from trl import DPOConfig, DPOTrainer

    from backends import models
    from backends.data import load_tokenizer

    model_dir = models.resolve_model(args.model)
    tokenizer = load_tokenizer(model_dir)
    dataset = Dataset.from_list(_trl_rows(json.loads(data_file.read_text(encoding="utf-8"))))
    model, lora, precision_args = peers.trl_model(model_dir, args.rank, args.precision)
    config = DPOConfig(
        output_dir=str(workdir / "trl"),
        max_steps=args.steps,
        per_device_train_batch_size=args.batch_size,
        gradient_accumulation_steps=1,
        learning_rate=LEARNING_RATE,
        lr_scheduler_type="linear",
        warmup_steps=0,
        gradient_checkpointing=False,
        **precision_args,
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
    return peers.trl_timed_train(
        DPOTrainer,
        args.skip_steps,
        model=model,
        args=config,
        train_dataset=dataset,
        processing_class=tokenizer,
        peft_config=lora,
    )


def main() -> None:
    parser = peers.parser(
        __doc__.split("\n\n")[0],
        rows=64,
        steps=10,
        batch_size=2,
        steps_help="optimizer steps",
        batch_help="pairs per step",
    )
    args = parser.parse_args()
    if args.peer:
        peers.child(args, "dpo_first_rows.json", run_ours, run_trl)
        return

    peers.home()
    from backends import models

    models.resolve_model(args.model)  # import once, outside the timed children
    keys = ("model", "rows", "steps", "skip_steps", "batch_size", "max_seq_length", "rank", "precision")
    with tempfile.TemporaryDirectory(prefix="dpo-bench-") as tmp:
        workdir = Path(tmp)
        rows = json.loads(PAIRS.read_text(encoding="utf-8"))[: args.rows]
        (workdir / "dpo_first_rows.json").write_text(json.dumps(rows), encoding="utf-8")
        results = peers.run_sides(__file__, args, keys, workdir)
    peers.print_comparison(
        f"DPO, {Path(args.model).name} LoRA r{args.rank} all-linear, first {args.rows} pairs of dpo_en_demo, "
        f"{args.batch_size} pairs a step, max {args.max_seq_length} tokens, {args.steps} steps "
        f"(first {args.skip_steps} not timed), {os.cpu_count()} CPU threads",
        results,
    )


if __name__ == "__main__":
    main()
