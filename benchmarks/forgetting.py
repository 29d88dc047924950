"""The forgetting check on SmolLM2-135M-Instruct: a gentle run, an aggressive one, and the same
aggressive run with replay, on the same data, plus what the check costs beside a run.

Data: a seeded sample of ``--rows`` rows of the built-in sample data
(``resources/demo/support_train.jsonl``: customer-support answers in one house style, which a
narrow tuning spreads to every answer). Runs (LoRA rank 8, alpha 16, every linear layer, batch 4,
cosine schedule, 10% warmup, precision auto, no validation):

- gentle: learning rate 2e-4, 1 epoch;
- moderate: learning rate 1e-3, 2 epochs (between the two, for the verdict's thresholds);
- aggressive: learning rate 2e-3 for ``--epochs`` epochs (default 6);
- aggressive + replay: the same with ``data.replay`` (default 0.2; TuneDesk's general examples).

Each run ends with the quick check (``forgetting.at_end: true``: its time against the run's training
time is the cost figure), then ``tunedesk forgetting`` with ``--probes`` probes (default 36: six per
category) and ``--max-new-tokens`` (default 24) scores it. Printed: one row per run (KL, both
perplexities, answers changed, answers in the sample's house style, score, verdict; quick-check
score and its cost as % of training).

    python benchmarks/forgetting.py
    python benchmarks/forgetting.py --rows 32 --epochs 6 --replay 0.2 --json out.json
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from backends.config import config_from_dict  # noqa: E402
from backends.forgetting.job import check_run  # noqa: E402
from backends.jobs import run_training  # noqa: E402

SAMPLE = ROOT / "resources" / "demo" / "support_train.jsonl"


def sample_rows(out: Path, rows: int, seed: int = 0) -> Path:
    lines = SAMPLE.read_text(encoding="utf-8").splitlines()
    random.Random(seed).shuffle(lines)
    out.write_text("\n".join(lines[:rows]) + "\n", encoding="utf-8")
    return out


def run_config(data: Path, runs: Path, name: str, lr: float, epochs: float, replay: float) -> dict:
    return {
        "model": "SmolLM2-135M-Instruct",
        "data": {"train_file": str(data), "validation_fraction": 0.0, "replay": replay},
        "lora": {"rank": 8, "alpha": 16, "dropout": 0.0, "target_modules": "all-linear"},
        "training": {
            "learning_rate": lr,
            "epochs": epochs,
            "batch_size": 4,
            "max_seq_length": 256,
            "warmup_ratio": 0.1,
            "eval_every": 0,
            "save_every": 0,
        },
        "forgetting": {"at_end": True},
        "output": {"runs_dir": str(runs), "run_name": name},
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=32)
    parser.add_argument("--epochs", type=float, default=6)
    parser.add_argument("--replay", type=float, default=0.2)
    parser.add_argument("--probes", type=int, default=36)
    parser.add_argument("--max-new-tokens", type=int, default=24)
    parser.add_argument("--only", default=None, help="comma-separated run names to run")
    parser.add_argument("--json", default=None, help="also write the rows to this file")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="tunedesk-forgetting-"))
    data = sample_rows(work / "train.jsonl", args.rows)
    plans = [
        ("gentle", 2e-4, 1.0, 0.0),
        ("moderate", 1e-3, 2.0, 0.0),
        ("aggressive", 2e-3, args.epochs, 0.0),
        ("aggressive+replay", 2e-3, args.epochs, args.replay),
    ]
    if args.only:
        plans = [p for p in plans if p[0] in args.only.split(",")]
    rows = []
    for name, lr, epochs, replay in plans:
        config = config_from_dict(run_config(data, work / "runs", name.replace("+", "-"), lr, epochs, replay))
        run = run_training(config, console=False)
        events = run.events()
        finished = next(e for e in events if e["event"] == "run_finished")
        quick = next(e for e in events if e["event"] == "forgetting")
        result, _ = check_run(run.path, probes=args.probes, max_new_tokens=args.max_new_tokens)
        row = {
            "run": name,
            "lr": lr,
            "epochs": epochs,
            "replay": replay,
            "steps": finished["step"],
            "train_seconds": finished["elapsed"],
            "train_loss": finished["train_loss"],
            "quick_score": quick["score"],
            "quick_seconds": quick["elapsed"],
            "quick_cost_pct": 100 * quick["elapsed"] / finished["elapsed"],
            # Probe answers that took the sample data's greeting or sign-off ("... Lumen Lane ...").
            "house_style": sum("Lumen" in a["tuned"] for a in result.answers),
            **result.fields(with_answers=False),
        }
        rows.append(row)
        print(json.dumps(row), flush=True)
    print()
    print(
        f"{'run':18s} {'steps':>5} {'KL':>7} {'ppl base':>8} {'ppl tuned':>9} {'changed':>8} "
        f"{'house':>6} {'score':>6} {'verdict':10s} {'quick':>6} {'quick cost':>10}"
    )
    for r in rows:
        print(
            f"{r['run']:18s} {r['steps']:>5} {r['kl_mean']:7.3f} {r['ppl_base']:8.2f} {r['ppl_tuned']:9.2f} "
            f"{r['answers_changed']:>4}/{r['probes']:<3} {r['house_style']:>6} {r['score']:6.3f} {r['verdict']:10s} "
            f"{r['quick_score']:6.3f} {r['quick_cost_pct']:9.1f}%"
        )
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1) + "\n")


if __name__ == "__main__":
    main()
