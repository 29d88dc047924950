"""GRPO throughput of TuneDesk's own step (the shared loop + PyTorch engine) against TRL's
``GRPOTrainer`` with PEFT, in one run.

Both sides train the same model on the same prompts: the "short answers" task of
``grpo_learning.py`` (40 one-line questions, rendered with the model's chat template), with the same
built-in reward (1 when the answer has 2 to 30 characters: ours ``length`` with ``min: 2, max: 30``,
TRL a Python function computing the same), ``--batch-size`` prompts a step and ``--num-generations``
completions per prompt of at most ``--max-completion-length`` tokens, sampled at temperature 0.8
with no top-k/top-p (transformers' ``generate`` on both sides), one optimisation pass per
generation batch, the paper's loss (``loss_type: grpo``), beta 0.04 (KL to the base model with the
adapter disabled), epsilon 0.2, the same LoRA (rank, alpha 2 x rank, dropout 0.05, every linear
layer; TRL's ``disable_dropout`` off), AdamW, learning rate, precision, steps; no evaluation or
checkpoints; each side in a fresh process (``peers.py``).

Tokens = the real tokens of each completion row, its prompt included (ours: the padded batch's
real tokens; TRL: ``prompt_mask`` + ``completion_mask`` of the batch its loss sees). Sampled
completions differ between the sides (different random streams), so their lengths differ: compare
seconds per step beside tokens/s. The time includes sampling, which dominates a GRPO step.

    python benchmarks/grpo_throughput.py --steps 6 --skip-steps 1
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
from grpo_learning import task_rows  # noqa: E402

LEARNING_RATE = 5e-4
BETA, EPSILON, TEMPERATURE = 0.04, 0.2, 0.8
MIN_CHARS, MAX_CHARS = 2, 30


def length_reward(completions: list, **_: object) -> list[float]:
    """TRL's side of our built-in ``length`` reward: 1.0 when the answer (stripped) has
    ``MIN_CHARS`` to ``MAX_CHARS`` characters, else 0.0."""
    texts = [c[-1]["content"] if isinstance(c, list) else c for c in completions]
    return [1.0 if MIN_CHARS <= len(t.strip()) <= MAX_CHARS else 0.0 for t in texts]


def run_ours(args, data_file: Path, workdir: Path) -> dict:
    from backends.config import config_from_dict
    from backends.jobs import run_training

    config = config_from_dict(
        {
            "model": args.model,
            "backend": "torch",
            "method": "grpo",
            "data": {"train_file": str(data_file), "validation_fraction": 0.0},
            "lora": {
                "rank": args.rank,
                "alpha": 2 * args.rank,
                "dropout": 0.05,
                "target_modules": "all-linear",
            },
            "grpo": {
                "num_generations": args.num_generations,
                "max_completion_length": args.max_completion_length,
                "temperature": TEMPERATURE,
                "beta": BETA,
                "epsilon": EPSILON,
                "loss_type": "grpo",
                "rewards": [{"type": "length", "min": MIN_CHARS, "max": MAX_CHARS}],
            },
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
    from trl import GRPOConfig, GRPOTrainer

    from backends import models
    from backends.data import load_tokenizer

    model_dir = models.resolve_model(args.model)
    tokenizer = load_tokenizer(model_dir)
    rows = [json.loads(line) for line in data_file.read_text(encoding="utf-8").splitlines() if line]
    model, lora, precision_args = peers.trl_model(model_dir, args.rank, args.precision)
    config = GRPOConfig(
        output_dir=str(workdir / "trl"),
        max_steps=args.steps,
        per_device_train_batch_size=args.batch_size * args.num_generations,
        gradient_accumulation_steps=1,
        num_generations=args.num_generations,
        max_completion_length=args.max_completion_length,
        temperature=TEMPERATURE,
        top_p=1.0,
        top_k=0,
        beta=BETA,
        epsilon=EPSILON,
        loss_type="grpo",
        disable_dropout=False,
        learning_rate=LEARNING_RATE,
        lr_scheduler_type="linear",
        warmup_steps=0,
        gradient_checkpointing=False,
        **precision_args,
        logging_steps=10,
        save_strategy="no",
        report_to="none",
        seed=0,
        dataloader_num_workers=0,
    )
    dataset = Dataset.from_list([{"prompt": [{"role": "user", "content": r["prompt"]}]} for r in rows])

    def count(inputs: dict) -> int:
        return int(inputs["prompt_mask"].sum() + inputs["completion_mask"].sum())

    return peers.trl_timed_train(
        GRPOTrainer,
        args.skip_steps,
        count,
        model=model,
        reward_funcs=[length_reward],
        args=config,
        train_dataset=dataset,
        processing_class=tokenizer,
        peft_config=lora,
    )


def main() -> None:
    parser = peers.parser(
        __doc__.split("\n\n")[0],
        rows=40,
        steps=6,
        batch_size=1,
        steps_help="optimizer steps",
        batch_help="prompts per step",
    )
    parser.add_argument("--num-generations", type=int, default=4)
    parser.add_argument("--max-completion-length", type=int, default=16)
    parser.set_defaults(max_seq_length=128, skip_steps=1)
    args = parser.parse_args()
    if args.peer:
        peers.child(args, "prompts.jsonl", run_ours, run_trl)
        return
    peers.home()
    from backends import models

    models.resolve_model(args.model)
    keys = (
        "model",
        "steps",
        "skip_steps",
        "batch_size",
        "max_seq_length",
        "rank",
        "precision",
        "num_generations",
        "max_completion_length",
    )
    with tempfile.TemporaryDirectory(prefix="grpo-bench-") as tmp:
        workdir = Path(tmp)
        lines = [json.dumps(r) for r in task_rows()[: args.rows]]
        (workdir / "prompts.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
        results = peers.run_sides(__file__, args, keys, workdir)
    peers.print_comparison(
        f"GRPO, {Path(args.model).name} LoRA r{args.rank} all-linear, short-answers prompts, "
        f"{args.batch_size} prompt(s) x {args.num_generations} completions of at most "
        f"{args.max_completion_length} tokens a step, {args.steps} steps (first {args.skip_steps} not timed), "
        f"{os.cpu_count()} CPU threads, OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}",
        results,
    )


if __name__ == "__main__":
    main()
