"""Several GPUs against one, in one run: the same LoRA run through ``tunedesk train`` on 1 and on 2
processes (``--nproc 2``: DDP through torchrun, NCCL on CUDA, gloo on the CPU).

Three runs of the same config, data and seed, each a fresh ``tunedesk train`` process tree:
- ``one-global``: 1 process, batch 2b (the reference of the equivalence check);
- ``two``: 2 processes, batch b each (global 2b): per-step losses and the final adapter must equal
  ``one-global``'s (printed: max loss difference, max adapter difference);
- ``one``: 1 process, batch b: the per-GPU work of ``two`` on one GPU.
Throughput is tokens/s (non-padding tokens over the wall time of the steps after the first
``--skip-steps``, from the ``step`` events). Printed: weak scaling = tokens/s of ``two`` / ``one``
(ideal 2.0: twice the work per step in the same time) and ``two`` / ``one-global`` (the same
global batch on two GPUs instead of one; ideal 2.0 where one GPU is saturated).

    python benchmarks/multi_gpu.py                      # CUDA, SmolLM2-135M-Instruct, bf16
    python benchmarks/multi_gpu.py --model NAME --batch 8 --steps 40
    python benchmarks/multi_gpu.py --smoke              # CPU, gloo, a tiny random Llama, fp32

``--smoke`` (or ``--cpu``) runs the same three runs on the CPU with gloo (a 2-layer random Llama
with the SmolLM2 tokenizer; OMP threads split between processes): it checks the script and the
equivalence, not speed. On a CUDA machine with fewer than 2 GPUs it stops with a message.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from statistics import median

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

DATA = ROOT / "resources" / "demo" / "support_train.jsonl"


def tiny_model(out: Path) -> Path:
    """A 2-layer random Llama with the SmolLM2 tokenizer (``tests.tiny_model``)."""
    from backends import models
    from tests.tiny_model import make_tiny_llama

    return make_tiny_llama(out, models.resolve_model("SmolLM2-135M-Instruct"))


def run_config(args: argparse.Namespace, model: str, batch: int, name: str, runs: Path) -> dict:
    """The run config (dict) of one of the three runs."""
    return {
        "model": model,
        "backend": "torch",
        "data": {"train_file": str(args.data), "validation_fraction": 0.0},
        "lora": {"rank": 8, "alpha": 16, "dropout": 0.0},
        "training": {
            "batch_size": batch,
            "max_seq_length": args.max_seq_length,
            "max_steps": args.steps,
            "learning_rate": 1e-4,
            "precision": args.precision,
            "eval_every": 0,
            "save_every": 0,
            "warmup_ratio": 0.0,
        },
        "output": {"runs_dir": str(runs), "run_name": name},
    }


def train(config: dict, nproc: int, work: Path, threads: int) -> list[dict]:
    """One ``tunedesk train --json`` (``--nproc`` when above 1); returns its events."""
    import yaml

    path = work / f"{config['output']['run_name']}.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "TQDM_DISABLE": "1"}
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    cmd = [sys.executable, "-m", "desktop", "train", "--config", str(path), "--json"]
    if nproc > 1:
        cmd += ["--nproc", str(nproc)]
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed (exit {done.returncode}):\n{done.stderr[-3000:]}")
    return [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]


def tokens_per_second(events: list[dict], skip: int) -> float:
    """Non-padding tokens over wall time of the steps after the first ``skip`` (step events)."""
    steps = [e for e in events if e["event"] == "step"]
    if len(steps) <= skip + 1:
        raise ValueError(f"need more than {skip + 1} steps to time")
    first, last = steps[skip], steps[-1]
    return (last["tokens"] - first["tokens"]) / max(last["elapsed"] - first["elapsed"], 1e-9)


def loss_difference(a: list[dict], b: list[dict]) -> float:
    """The largest per-step loss difference between two runs' step events (same steps)."""
    la = {e["step"]: e["loss"] for e in a if e["event"] == "step"}
    lb = {e["step"]: e["loss"] for e in b if e["event"] == "step"}
    if la.keys() != lb.keys() or not la:
        raise ValueError(f"the runs have different steps: {sorted(la)} vs {sorted(lb)}")
    return max(abs(la[s] - lb[s]) for s in la)


def adapter_difference(a: Path, b: Path) -> float:
    """The largest element difference between two runs' final adapters."""
    from safetensors.numpy import load_file

    wa, wb = (load_file(Path(p) / "adapter" / "adapter_model.safetensors") for p in (a, b))
    if wa.keys() != wb.keys():
        raise ValueError("the adapters have different tensors")
    return max(float(abs(wa[k].astype("float64") - wb[k].astype("float64")).max()) for k in wa)


def report(results: dict[str, list[float]], loss_diff: float, adapter_diff: float) -> str:
    """The printed table: tokens/s per run (median of repeats), scaling, equivalence figures."""
    tps = {name: median(values) for name, values in results.items()}
    lines = [f"{'run':12s} {'tokens/s':>10}"]
    lines += [f"{name:12s} {value:10.1f}" for name, value in tps.items()]
    lines.append(f"weak scaling (two / one, ideal 2.0): {tps['two'] / tps['one']:.2f}")
    lines.append(f"same global batch (two / one-global): {tps['two'] / tps['one-global']:.2f}")
    lines.append(f"max per-step loss difference two vs one-global: {loss_diff:.2e}")
    lines.append(f"max adapter difference two vs one-global: {adapter_diff:.2e}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", "--cpu", dest="smoke", action="store_true", help="CPU, gloo, tiny model")
    parser.add_argument("--model", default=None, help="model (default SmolLM2-135M-Instruct; --smoke: tiny)")
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--batch", type=int, default=None, help="per-process batch b (default 8; smoke 2)")
    parser.add_argument("--steps", type=int, default=None, help="optimizer steps (default 30; smoke 6)")
    parser.add_argument("--skip-steps", type=int, default=2)
    parser.add_argument("--max-seq-length", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=1)
    args = parser.parse_args(argv)
    args.batch = args.batch or (2 if args.smoke else 8)
    args.steps = args.steps or (6 if args.smoke else 30)
    args.precision = "fp32" if args.smoke else "bf16"
    if not args.smoke:
        import torch

        if torch.cuda.device_count() < 2:
            print(f"needs 2 CUDA GPUs, found {torch.cuda.device_count()} (try --smoke)", file=sys.stderr)
            return 2
    with tempfile.TemporaryDirectory(prefix="tunedesk-multi-gpu-") as tmp:
        work = Path(tmp)
        model = args.model or (str(tiny_model(work / "tiny")) if args.smoke else "SmolLM2-135M-Instruct")
        threads = max(1, (os.cpu_count() or 2) // 2) if args.smoke else 4
        results: dict[str, list[float]] = {"one-global": [], "two": [], "one": []}
        runs = work / "runs"
        for repeat in range(args.repeats):
            plan = [("one-global", 1, 2 * args.batch), ("two", 2, args.batch), ("one", 1, args.batch)]
            events = {}
            for name, nproc, batch in plan:
                config = run_config(args, model, batch, f"{name}-{repeat}", runs)
                events[name] = train(config, nproc, work, threads if nproc > 1 else 2 * threads)
                results[name].append(tokens_per_second(events[name], args.skip_steps))
        loss_diff = loss_difference(events["one-global"], events["two"])
        last = args.repeats - 1
        adapter_diff = adapter_difference(runs / f"one-global-{last}", runs / f"two-{last}")
        print(report(results, loss_diff, adapter_diff))
    return 0


if __name__ == "__main__":
    sys.exit(main())
