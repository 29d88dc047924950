"""Training throughput of TuneDesk's PyTorch backend against TRL's ``SFTTrainer`` with PEFT, in one run.

Both sides train the same model (SmolLM2-135M-Instruct, imported from its GGUF on first use) on
the same tokens: the first ``--rows`` rows of ``../shared/data/llamafactory/alpaca_en_demo.json``
tokenised once by our data pipeline (the model's chat template, completion-only labels, cut at
``--max-seq-length``); TRL gets them as a pre-tokenised dataset with ``input_ids`` and ``labels``
(it then skips its own tokenisation and keeps our labels). Same LoRA (rank, alpha, dropout, every
linear layer), AdamW, learning rate, batch size, no gradient accumulation, the same precision
(``--precision``; auto: what our engine picks here, bf16 on a CPU with AVX512-BF16 or AMX, else
fp32 on the CPU; TRL then gets ``bf16=True``), no gradient checkpointing, no
evaluation or checkpoints, the same number of optimizer steps: by default one epoch over the rows
(``--steps N`` for fewer). Each side runs in its own fresh process, so its peak RSS is its own.

- ours: ``backends.jobs.run_training`` (the pipeline's length-grouped batches, loss head
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
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
for path in (ROOT, Path(__file__).resolve().parent):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

import peers  # noqa: E402  (benchmarks/peers.py: what the ours-against-TRL benchmarks share)

# The bf16 matmul peak issue 22 quotes for "these 2 cores" (a Xeon with AMX); print_utilisation
# also divides by the peak measured in the same run, which is what this machine can reach now.
NOMINAL_BF16_GFLOPS = 2000.0
ALPACA = ROOT.parent / "shared" / "data" / "llamafactory" / "alpaca_en_demo.json"


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
                "target_modules": args.targets,
            },
            "training": {
                "learning_rate": 2e-4,
                "lr_scheduler": "linear",
                "warmup_ratio": 0.0,
                "max_steps": args.steps or None,
                "epochs": 1,
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


def torch_threads() -> int:
    """The number of threads torch uses for its CPU kernels (OMP_NUM_THREADS or the core count)."""
    import torch

    return torch.get_num_threads()


def run_ours(args: argparse.Namespace, data_file: Path, workdir: Path) -> dict:
    from backends.jobs import run_training

    run = run_training(_config(args, data_file, workdir / "runs"), console=False)
    return peers.ours_result(run, args.skip_steps)


def run_trl(args: argparse.Namespace, data_file: Path, workdir: Path) -> dict:
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    from backends import models
    from backends.data import load_tokenizer, make_batches, prepare_data

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
    model, lora, precision_args = peers.trl_model(model_dir, args.rank, args.precision, args.targets)
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
        **precision_args,
        max_length=args.max_seq_length,
        logging_steps=10,
        save_strategy="no",
        report_to="none",
        seed=0,
        dataloader_num_workers=0,
        train_sampling_strategy="sequential" if args.trl_order == "ours" else "random",
    )
    return peers.trl_timed_train(
        SFTTrainer,
        args.skip_steps,
        model=model,
        args=sft,
        train_dataset=dataset,
        processing_class=tokenizer,
        peft_config=lora,
    )


def main() -> None:
    parser = peers.parser(
        __doc__.split("\n\n")[0],
        rows=200,
        steps=0,
        batch_size=4,
        steps_help="optimizer steps (0: one epoch over the rows)",
        batch_help="rows per step",
    )
    parser.add_argument(
        "--repeats", type=int, default=1, help="runs per side (alternating); the median is shown"
    )
    parser.add_argument(
        "--targets", choices=["all-linear", "attention"], default="all-linear", help="LoRA target modules"
    )
    parser.add_argument(
        "--fp32-beside", action="store_true", help="then the same comparison in fp32, printed beside"
    )
    parser.add_argument(
        "--trl-order",
        choices=["ours", "random"],
        default="random",
        help="TRL's rows per step: ours, or its random sampler",
    )
    args = parser.parse_args()
    if args.peer:
        peers.child(args, "alpaca_first_rows.json", run_ours, run_trl)
        return

    peers.home()
    from backends import models

    models.resolve_model(args.model)  # import once, outside the timed children
    keys = (
        "model",
        "rows",
        "steps",
        "skip_steps",
        "batch_size",
        "max_seq_length",
        "rank",
        "trl_order",
        "precision",
        "targets",
    )
    precisions = [args.precision] + (["fp32"] if args.fp32_beside and args.precision != "fp32" else [])
    load_before = os.getloadavg()
    tables = []
    with tempfile.TemporaryDirectory(prefix="train-bench-") as tmp:
        workdir = Path(tmp)
        rows = json.loads(ALPACA.read_text(encoding="utf-8"))[: args.rows]
        (workdir / "alpaca_first_rows.json").write_text(json.dumps(rows), encoding="utf-8")
        for precision in precisions:
            args.precision = precision
            tables.append((precision, peers.run_sides(__file__, args, keys, workdir, args.repeats)))
    params = model_params(args.model)
    peaks = measured_peaks()
    for precision, results in tables:
        peers.print_comparison(
            f"SmolLM2 LoRA r{args.rank} {args.targets}, first {args.rows} Alpaca rows, batch {args.batch_size}, "
            f"max {args.max_seq_length} tokens, {results['ours']['steps'] + args.skip_steps} steps "
            f"(first {args.skip_steps} not timed), "
            f"TRL rows per step: {args.trl_order}, precision {precision}, {torch_threads()} torch threads, "
            f"median of {args.repeats} run(s) per side",
            results,
        )
        print_utilisation(results, params, peaks, precision)
        print()
    load_after = os.getloadavg()
    print(
        f"load average (1 min) before/after: {load_before[0]:.1f} / {load_after[0]:.1f} on {os.cpu_count()} cores"
    )


def model_params(model: str) -> int:
    """Parameters of the model (embeddings included, a tied head counted once), from config.json."""
    from backends import model_shape

    folder = model_shape.find_model_dir(model)
    assert folder is not None, model
    return sum(model_shape.ModelShape.from_config(model_shape.read_model_config(folder)).params().values())


def measured_peaks(size: int = 2048, repeats: int = 5) -> dict[str, float]:
    """Best GFLOP/s of a [size x size] matmul per dtype on this machine now (torch threads as the
    runs): the attainable matmul peak under the same load as the runs just measured."""
    import time

    import torch

    peaks = {}
    for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        a, b = torch.randn(size, size, dtype=dtype), torch.randn(size, size, dtype=dtype)
        a @ b
        best = 0.0
        for _ in range(repeats):
            start = time.perf_counter()
            a @ b
            best = max(best, 2 * size**3 / (time.perf_counter() - start) / 1e9)
        peaks[name] = best
    return peaks


def print_utilisation(results: dict, params: int, peaks: dict[str, float], precision: str) -> None:
    """Model FLOP utilisation of each side: 4 x parameters FLOP per token (LoRA: forward 2P, and
    backward to the activations 2P; the frozen weights get no gradient), as a share of the
    nominal bf16 peak of this 2-core machine (NOMINAL_BF16_GFLOPS) and of the matmul peak
    measured just now."""
    from backends.torch_backend import resolve_precision

    resolved = resolve_precision(precision, "cpu")[0]
    peak = peaks.get(resolved, peaks["fp32"])
    print(
        f"matmul peak measured now: bf16 {peaks['bf16']:.0f}, fp32 {peaks['fp32']:.0f} GFLOP/s; "
        f"nominal bf16 peak {NOMINAL_BF16_GFLOPS:.0f} GFLOP/s; FLOP per token 4 x {params / 1e6:.1f}M"
    )
    for side, r in results.items():
        gflops = 4 * params * r["tokens"] / r["seconds"] / 1e9
        print(
            f"  {side:5s} {gflops:6.1f} GFLOP/s = MFU {gflops / NOMINAL_BF16_GFLOPS:6.1%} of the nominal bf16 peak, "
            f"{gflops / peak:6.1%} of the measured {resolved} peak"
        )


if __name__ == "__main__":
    main()
