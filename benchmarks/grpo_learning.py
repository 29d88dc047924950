"""GRPO learning check on SmolLM2-135M-Instruct: a small task with a built-in reward, and a stop and
resume that continue the same curve.

The task ("short answers"): 40 questions with a one-word or one-number answer (capitals and small
sums, written here); the reward is the built-in ``length`` reward with ``min: 2, max: 30`` characters (1
when the answer has 2 to 30 characters, else 0, so an empty answer earns nothing; SmolLM2 often answers with a longer sentence), so the
model learns to answer briefly. One prompt and 4 completions of at most 16 tokens a step. The built-in
``matches_answer`` reward rides along with weight 0: it is charted, but does not steer.

Prints the mean reward of the first and last 10 steps of a full run, then runs the same config
again, stops it after ``--stop-at`` steps (the stop file, as the app's Stop button) and resumes it,
and prints the largest difference between the resumed run's per-step figures (reward, loss, KL,
completion length, gradient norm) and the full run's.

    python benchmarks/grpo_learning.py --steps 20 --stop-at 8
"""

from __future__ import annotations

import argparse
import json
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

CAPITALS = {
    "France": "Paris", "Germany": "Berlin", "Italy": "Rome", "Spain": "Madrid", "Japan": "Tokyo",
    "Egypt": "Cairo", "Canada": "Ottawa", "Kenya": "Nairobi", "Peru": "Lima", "Norway": "Oslo",
    "Poland": "Warsaw", "Greece": "Athens", "Cuba": "Havana", "Chile": "Santiago", "Ireland": "Dublin",
    "Austria": "Vienna", "Portugal": "Lisbon", "Russia": "Moscow", "China": "Beijing", "India": "New Delhi",
}  # fmt: skip


def task_rows() -> list[dict]:
    rows = [{"prompt": f"What is the capital of {c}?", "completion": a} for c, a in CAPITALS.items()]
    rows += [
        {"prompt": f"What is {a} plus {b}?", "completion": str(a + b)}
        for a, b in zip(range(2, 22), range(7, 27), strict=True)
    ]
    return rows


def config(model: str, data: Path, runs: Path, name: str, steps: int) -> dict:
    return {
        "model": model,
        "method": "grpo",
        "data": {"train_file": str(data), "validation_fraction": 0.0},
        "lora": {"rank": 16, "alpha": 32, "dropout": 0.0},
        "grpo": {
            "num_generations": 4,
            "max_completion_length": 16,
            "beta": 0.04,
            "temperature": 0.8,
            "rewards": [{"type": "length", "min": 2, "max": 30}, {"type": "matches_answer", "weight": 0.0}],
        },
        "training": {
            "precision": "fp32",
            "batch_size": 1,
            "max_seq_length": 128,
            "learning_rate": 5e-4,
            "lr_scheduler": "constant",
            "warmup_ratio": 0.0,
            "max_steps": steps,
            "save_every": 0,
            "eval_every": 0,
            "seed": 1,
        },
        "output": {"runs_dir": str(runs), "run_name": name},
    }


# The per-step figures a resumed run must repeat exactly.
COMPARED = ("reward_mean", "loss", "kl", "completion_length", "grad_norm")


def step_events(run_dir: Path) -> dict[int, dict]:
    from backends.events import read_events

    return {e["step"]: e for e in read_events(run_dir / "events.jsonl") if e["event"] == "step"}


def rewards(run_dir: Path) -> dict[int, float]:
    return {s: e["reward_mean"] for s, e in step_events(run_dir).items()}


def main() -> None:
    from backends.config import config_from_dict
    from backends.errors import RunStopped
    from backends.jobs import run_training
    from backends.training.loop import STOP_FILE

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="SmolLM2-135M-Instruct")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--stop-at", type=int, default=12)
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args()
    work = args.workdir or Path(tempfile.mkdtemp(prefix="grpo-learning-"))
    work.mkdir(parents=True, exist_ok=True)
    data = work / "short_answers.jsonl"
    data.write_text("\n".join(json.dumps(r) for r in task_rows()) + "\n", encoding="utf-8")
    runs = work / "runs"
    start = time.monotonic()
    run_training(config_from_dict(config(args.model, data, runs, "full", args.steps)), console=False)
    full = rewards(runs / "full")
    curve = [full[s] for s in sorted(full)]
    print(f"full run: {len(curve)} steps in {time.monotonic() - start:.0f} s")
    print("reward_mean by step:", np.round(curve, 3).tolist())
    print(
        f"mean reward, first 10 steps: {np.mean(curve[:10]):.3f}; last 10 steps: {np.mean(curve[-10:]):.3f}"
    )

    stopped_dir = runs / "stopped"

    def stop_later() -> None:
        while len(rewards(stopped_dir)) < args.stop_at if (stopped_dir / "events.jsonl").exists() else True:
            time.sleep(0.2)
        (stopped_dir / STOP_FILE).touch()

    threading.Thread(target=stop_later, daemon=True).start()
    try:
        run_training(config_from_dict(config(args.model, data, runs, "stopped", args.steps)), console=False)
    except RunStopped:
        pass
    stopped_at = max(rewards(stopped_dir))
    run_training(None, resume_dir=stopped_dir, console=False)
    whole, resumed = step_events(runs / "full"), step_events(stopped_dir)
    print(f"stopped at step {stopped_at}, resumed to step {max(resumed)}")
    for key in COMPARED:
        diff = max(abs(resumed[s][key] - whole[s][key]) for s in whole)
        print(f"  largest {key} difference to the full run over steps 1-{max(whole)}: {diff:.2e}")


if __name__ == "__main__":
    main()
