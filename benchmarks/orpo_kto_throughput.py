"""ORPO and KTO throughput of TuneDesk's own steps (the shared loop + PyTorch engine) against TRL's
``ORPOTrainer`` (``trl.experimental.orpo``) and ``KTOTrainer`` with PEFT, in one run.

As ``dpo_throughput.py`` (same model, LoRA with the same dropout (TRL's ``disable_dropout`` off),
AdamW, learning rate, batch size, precision, steps, each side in a fresh process, no evaluation or
checkpoints), with ``--method``:

- ``orpo``: pairs of ``../shared/data/llamafactory/dpo_en_demo.json``; beta (lambda) 0.1; tokens =
  the real tokens of the chosen and rejected rows on both sides.
- ``kto``: the same pairs unpaired into LLaMA-Factory's KTO shape (chosen rated true, rejected
  false: a pair gives two rows); beta 0.1, weights 1; the reference is the base model with the
  adapter disabled, computed every step on both sides; tokens = the real tokens of the rated rows
  (not of the mismatched KL rows) on both sides.

Same rows, uncut, on both sides: only pairs whose prompt + chosen and prompt + rejected fit
``--max-seq-length`` (rendered with the model's chat template, with a margin of ``MARGIN`` tokens
for the two sides' small tokenisation differences) are used, the first ``steps x batch`` rows of
them, so each side trains every row once and neither truncates (TRL's ORPOTrainer keeps a prompt
that alone fills ``max_length`` and our pipeline drops it, which made an earlier version of this
comparison count different tokens). ``--rows`` is then ignored. The table's "tokens of all steps"
line shows that both sides trained the same tokens.

    python benchmarks/orpo_kto_throughput.py --method orpo --steps 6 --skip-steps 1 --max-seq-length 96
    python benchmarks/orpo_kto_throughput.py --method kto --steps 6 --skip-steps 1 --max-seq-length 96
"""

from __future__ import annotations

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
from dpo_throughput import PAIRS, _trl_rows  # noqa: E402

BETA = 0.1
MARGIN = 8  # tokens kept free below --max-seq-length when choosing the rows that fit
LEARNING_RATE = 5e-5
ROLES = {"human": "user", "gpt": "assistant", "system": "system"}


def _unpaired(rows: list[dict]) -> list[dict]:
    """LLaMA-Factory's KTO shape: per pair, the chosen answer rated true and the rejected false."""
    out = []
    for row in rows:
        prompt = [{"role": ROLES[m["from"]], "content": m["value"]} for m in row["conversations"]]
        for key, label in (("chosen", True), ("rejected", False)):
            out.append(
                {"messages": [*prompt, {"role": "assistant", "content": row[key]["value"]}], "label": label}
            )
    return out


def fitting_pairs(rows: list[dict], tokenizer, max_length: int, needed: int) -> list[dict]:
    """The first ``needed`` pairs whose prompt + chosen and prompt + rejected, rendered with the
    chat template, are at most ``max_length - MARGIN`` tokens. Exits when fewer fit."""
    kept = []
    for row in rows:
        prompt = [{"role": ROLES[m["from"]], "content": m["value"]} for m in row["conversations"]]
        texts = [
            tokenizer.apply_chat_template(
                [*prompt, {"role": "assistant", "content": row[k]["value"]}], tokenize=False
            )
            for k in ("chosen", "rejected")
        ]
        lengths = [len(tokenizer(t, add_special_tokens=False)["input_ids"]) for t in texts]
        if max(lengths) <= max_length - MARGIN:
            kept.append(row)
        if len(kept) == needed:
            return kept
    sys.exit(
        f"only {len(kept)} pairs fit {max_length - MARGIN} tokens, {needed} needed: raise --max-seq-length"
    )


def run_ours(args, data_file: Path, workdir: Path) -> dict:
    from backends.config import config_from_dict
    from backends.jobs import run_training

    config = config_from_dict(
        {
            "model": args.model,
            "backend": "torch",
            "method": args.method,
            "data": {"train_file": str(data_file), "validation_fraction": 0.0},
            "lora": {
                "rank": args.rank,
                "alpha": 2 * args.rank,
                "dropout": 0.05,
                "target_modules": "all-linear",
            },
            args.method: {"beta": BETA},
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
            "output": {"runs_dir": str(workdir / "runs"), "run_name": "bench"},
        }
    )
    return peers.ours_result(run_training(config, console=False), args.skip_steps)


def run_trl(args, data_file: Path, workdir: Path) -> dict:
    from datasets import Dataset

    from backends import models
    from backends.data import load_tokenizer

    model_dir = models.resolve_model(args.model)
    tokenizer = load_tokenizer(model_dir)
    rows = json.loads(data_file.read_text(encoding="utf-8"))
    model, lora, precision_args = peers.trl_model(model_dir, args.rank, args.precision)
    common = dict(
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
        disable_dropout=False,
        logging_steps=10,
        save_strategy="no",
        report_to="none",
        seed=0,
        dataloader_num_workers=0,
    )
    if args.method == "orpo":
        from trl.experimental.orpo import ORPOConfig, ORPOTrainer

        trainer, config = ORPOTrainer, ORPOConfig(**common)
        dataset = Dataset.from_list(_trl_rows(rows))

        def count(inputs: dict) -> int:
            return int(inputs["chosen_attention_mask"].sum() + inputs["rejected_attention_mask"].sum())

    else:
        from trl import KTOConfig, KTOTrainer

        trainer, config = KTOTrainer, KTOConfig(**common, train_sampling_strategy="sequential")
        dataset = Dataset.from_list(
            [
                {"prompt": r["messages"][:-1], "completion": r["messages"][-1:], "label": r["label"]}
                for r in rows
            ]
        )
        count = None
    return peers.trl_timed_train(
        trainer,
        args.skip_steps,
        count,
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
        batch_help="pairs (orpo) or rated rows (kto) per step",
    )
    parser.add_argument("--method", choices=["orpo", "kto"], default="orpo")
    args = parser.parse_args()
    if args.peer:
        peers.child(args, "rows.json", run_ours, run_trl)
        return
    peers.home()
    from backends import models
    from backends.data import load_tokenizer

    tokenizer = load_tokenizer(models.resolve_model(args.model))
    if args.method == "kto" and args.batch_size % 2:
        sys.exit("--batch-size must be even for kto (each pair gives two rated rows)")
    needed = args.steps * args.batch_size // (2 if args.method == "kto" else 1)
    keys = (
        "model",
        "rows",
        "steps",
        "skip_steps",
        "batch_size",
        "max_seq_length",
        "rank",
        "precision",
        "method",
    )
    with tempfile.TemporaryDirectory(prefix=f"{args.method}-bench-") as tmp:
        workdir = Path(tmp)
        all_pairs = json.loads(PAIRS.read_text(encoding="utf-8"))
        rows = fitting_pairs(all_pairs, tokenizer, args.max_seq_length, needed)
        args.rows = len(rows)
        data = rows if args.method == "orpo" else _unpaired(rows)
        (workdir / "rows.json").write_text(json.dumps(data), encoding="utf-8")
        results = peers.run_sides(__file__, args, keys, workdir)
    peers.print_comparison(
        f"{args.method.upper()}, {Path(args.model).name} LoRA r{args.rank} all-linear, the first {args.rows} "
        f"pairs of dpo_en_demo that fit uncut, {args.batch_size} {'pairs' if args.method == 'orpo' else 'rated rows'} a step, max {args.max_seq_length} tokens, {args.steps} steps "
        f"(first {args.skip_steps} not timed), {os.cpu_count()} CPU threads",
        results,
    )


if __name__ == "__main__":
    main()
