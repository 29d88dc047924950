"""ORPO and KTO learning check on SmolLM2-135M-Instruct with real data: prints each step's loss and
the method's figures, and their means over the first and last 10 steps.

- ``orpo``: the first 64 pairs of ``../shared/data/llamafactory/dpo_en_demo.json`` (those that fit
  ``--max-seq-length``): the reward margin and accuracy should rise.
- ``kto``: the same 64 pairs unpaired into LLaMA-Factory's KTO shape (``messages`` + ``label``: the
  chosen answer true, the rejected one false): the desirable rows' reward should rise above the
  undesirable rows'.

    python benchmarks/orpo_kto_learning.py orpo --steps 24 --batch-size 2 --max-seq-length 128 --lr 1e-3
    python benchmarks/orpo_kto_learning.py kto --steps 16 --batch-size 4 --max-seq-length 96 --lr 2e-4
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
PAIRS = ROOT.parent / "shared" / "data" / "llamafactory" / "dpo_en_demo.json"
FIGURES = {
    "orpo": ("loss", "nll_loss", "reward_margin", "reward_accuracy"),
    "kto": ("loss", "rewards_desirable", "rewards_undesirable", "kl"),
}


def main() -> None:
    from backends.config import config_from_dict
    from backends.jobs import run_training
    from benchmarks.orpo_kto_throughput import _unpaired

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("method", choices=["orpo", "kto"])
    p.add_argument("--model", default="SmolLM2-135M-Instruct")
    p.add_argument("--steps", type=int, default=24)
    p.add_argument("--batch-size", type=int, default=2)
    p.add_argument("--max-seq-length", type=int, default=128)
    p.add_argument("--lr", type=float, default=1e-3)
    args = p.parse_args()
    work = Path(tempfile.mkdtemp(prefix=f"{args.method}-learning-"))
    rows = json.loads(PAIRS.read_text(encoding="utf-8"))[:64]
    data = work / "rows.json"
    data.write_text(json.dumps(rows if args.method == "orpo" else _unpaired(rows)), encoding="utf-8")
    raw = {
        "model": args.model,
        "method": args.method,
        "data": {"train_file": str(data), "validation_fraction": 0.0},
        "lora": {"rank": 16, "alpha": 32, "dropout": 0.0},
        "training": {
            "precision": "fp32",
            "batch_size": args.batch_size,
            "max_seq_length": args.max_seq_length,
            "learning_rate": args.lr,
            "lr_scheduler": "constant",
            "warmup_ratio": 0.0,
            "max_steps": args.steps,
            "save_every": 0,
            "eval_every": 0,
            "seed": 3,
        },
        "output": {"runs_dir": str(work / "runs"), "run_name": args.method},
    }
    start = time.monotonic()
    run = run_training(config_from_dict(raw), console=False)
    steps = [e for e in run.events() if e["event"] == "step"]
    print(f"{args.method}: {len(steps)} steps in {time.monotonic() - start:.0f} s")
    for key in FIGURES[args.method]:
        values = np.array([e.get(key, np.nan) for e in steps], dtype=float)
        print(f"{key} by step:", np.round(values, 4).tolist())
        print(
            f"{key}: first 10 steps {np.nanmean(values[:10]):.4f}, last 10 steps {np.nanmean(values[-10:]):.4f}"
        )


if __name__ == "__main__":
    main()
