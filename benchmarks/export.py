"""Time and peak memory of ``tunedesk export`` (merged bf16, gguf q8_0) against peft's own way of
merging (``PeftModel.merge_and_unload`` + ``save_pretrained``), measured in the same run.

The model: random weights in Llama-3.2-1B's shape (16 layers, hidden 2048, MLP 8192, 32 heads,
8 KV heads, vocabulary 128256, tied embeddings; 1.24 B parameters, 2.5 GB in bf16), built
locally once (no download) with SmolLM2's tokenizer files (the converter pads the vocabulary),
and a rank-16 LoRA adapter on every linear layer with random non-zero weights, in a run folder
as training leaves it. Each side runs in its own child process, so its peak RSS
(``VmHWM`` on Linux) is its own; the table gives seconds, peak RSS, peak RSS / model size (the goal
for the streamed merge: at most about 1.5x) and the ratio to peft.

Usage:
    python benchmarks/export.py [--work DIR] [--sides merged,gguf,peft] [--keep]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.peers import peak_rss as rusage_peak  # noqa: E402


def peak_rss() -> int:
    """This process's peak RSS in bytes: Linux's ``VmHWM`` (reset by exec, so a child does not
    inherit its parent's peak as ``ru_maxrss`` does), else ``ru_maxrss``."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return rusage_peak()


RESULT = "EXPORT-RESULT "


def build(work: Path) -> Path:
    """The random base model and a run folder with its LoRA adapter under ``work`` (once)."""
    import torch
    from peft import LoraConfig, get_peft_model

    from backends import models
    from backends.model_shape import LLAMA_SHAPES
    from benchmarks.random_llama import build_random_llama

    base, run = work / "llama-3.2-1b-shape", work / "run"
    if (run / "adapter" / "tunedesk.json").is_file():
        return run
    shutil.rmtree(work, ignore_errors=True)
    tok_src = models.resolve_model("SmolLM2-135M-Instruct")
    model = build_random_llama(base, LLAMA_SHAPES["llama-3.2-1b"], tok_src)
    lora = LoraConfig(
        r=16, lora_alpha=32, lora_dropout=0.0, target_modules="all-linear", task_type="CAUSAL_LM"
    )
    peft_model = get_peft_model(model, lora)
    with torch.no_grad():
        for name, p in peft_model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.01)
    (run / "adapter").mkdir(parents=True)
    peft_model.save_pretrained(run / "adapter")
    shutil.copy2(tok_src / "chat_template.jinja", run / "adapter" / "chat_template.jinja")
    meta = {"base_model": {"name": base.name, "path": str(base)}, "backend": "torch", "method": "sft"}
    (run / "adapter" / "tunedesk.json").write_text(json.dumps(meta))
    (run / "config.yaml").write_text(f"model: {base}\n")
    return run


def side(name: str, run: Path, out: Path) -> dict[str, Any]:
    """One side, in this (child) process: returns seconds and the output's size."""
    start = time.perf_counter()
    if name == "peft":
        import torch
        from peft import PeftModel
        from transformers import AutoModelForCausalLM

        base = json.loads((run / "adapter" / "tunedesk.json").read_text())["base_model"]["path"]
        model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.bfloat16)
        merged = PeftModel.from_pretrained(model, run / "adapter").merge_and_unload()
        merged.save_pretrained(out)
    else:
        from backends.jobs.export.run import export_model

        export_model(run, name, "bf16" if name == "merged" else "q8_0", out)
    seconds = time.perf_counter() - start
    size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    return {"seconds": seconds, "peak_rss": peak_rss(), "bytes": size}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", default=str(Path.home() / ".cache" / "tunedesk-bench" / "export"))
    parser.add_argument("--sides", default="merged,gguf,peft")
    parser.add_argument("--keep", action="store_true", help="keep the outputs")
    parser.add_argument("--child", nargs=2, metavar=("SIDE", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    work = Path(args.work)
    if args.child:
        print(RESULT + json.dumps(side(args.child[0], work / "run", Path(args.child[1]))), flush=True)
        return
    t0 = time.perf_counter()
    run = build(work)
    print(f"model ready in {time.perf_counter() - t0:.0f} s: {run}", file=sys.stderr)
    from backends.model_store_info import folder_size

    base = Path(json.loads((run / "adapter" / "tunedesk.json").read_text())["base_model"]["path"])
    model_bytes = folder_size(base)
    results: dict[str, dict[str, Any]] = {}
    for name in args.sides.split(","):
        out = work / f"out-{name}"
        shutil.rmtree(out, ignore_errors=True)
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        proc = subprocess.run(
            [sys.executable, __file__, "--work", str(work), "--child", name, str(out)],
            env=env,
            capture_output=True,
            text=True,
        )
        line = next((x for x in proc.stdout.splitlines() if x.startswith(RESULT)), None)
        if proc.returncode != 0 or line is None:
            print(f"{name} failed:\n{proc.stderr[-3000:]}", file=sys.stderr)
            continue
        results[name] = json.loads(line[len(RESULT) :])
        if not args.keep:
            shutil.rmtree(out, ignore_errors=True)
    peer = results.get("peft")
    print(f"\nbase model: {model_bytes / 1e9:.2f} GB (bf16, Llama-3.2-1B shape, random weights)")
    print(
        f"{'side':28s} {'seconds':>8} {'peak RSS GB':>12} {'RSS/model':>10} {'output GB':>10} {'time vs peft':>13}"
    )
    labels = {"merged": "ours: merged bf16", "gguf": "ours: gguf q8_0", "peft": "peft merge_and_unload+save"}
    for name, r in results.items():
        ratio = f"{r['seconds'] / peer['seconds']:.2f}x" if peer else "-"
        print(
            f"{labels[name]:28s} {r['seconds']:8.1f} {r['peak_rss'] / 1e9:12.2f} "
            f"{r['peak_rss'] / model_bytes:10.2f} {r['bytes'] / 1e9:10.2f} {ratio:>13}"
        )


if __name__ == "__main__":
    main()
