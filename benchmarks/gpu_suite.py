"""GPU training suite: tokens/s and peak VRAM of LoRA bf16 and QLoRA 4-bit training at sequence
2048 with packing, TuneDesk's PyTorch engine against TRL's ``SFTTrainer`` + PEFT (and Unsloth
where it installs), on random-weight models of Llama-3.2-1B and Llama-3.1-8B shape, in one table.

Nothing is downloaded: the models are built locally from their published shapes
(``backends.model_shape.LLAMA_SHAPES``, random bf16 weights, written once under ``--workdir``),
and the data are random token rows (lengths uniform in [128, 1024], the first quarter of each row
untrained as a prompt), the same pre-tokenised rows for every side. Every side trains the same
LoRA (rank 16, alpha 32, dropout 0, every linear layer of every block), AdamW at 2e-4, one packed
sequence of at most ``--seq`` tokens per step, no gradient checkpointing, in bf16; QLoRA loads the
base as NF4 with double quantisation (bitsandbytes). Ours: ``TorchEngine`` fed by our packing
batcher (padding-free: one flattened row per step, attention kept within each example; the LM head
and loss at trained positions only, Liger-Kernel's fused linear cross-entropy when installed).
TRL: ``SFTConfig(packing=True)`` (best-fit-decreasing packing, padding-free) with flash-attention 2
when ``flash_attn`` imports, else sdpa, on both sides. Unsloth: ``FastLanguageModel`` with the same
LoRA, trained by the same ``SFTTrainer``; "not installed" when it does not import.

Each (model, mode, side) runs in its own process, so its peak VRAM (``torch.cuda
.max_memory_allocated``, weights included) is its own; tokens/s counts the real tokens of the steps
after ``--warmup`` untimed ones. On one H200 the default run (2 models x 2 modes x 2-3 sides, 10
timed steps each) takes about 6-8 minutes, most of it loading the 8B model.

How to run, on Linux with an NVIDIA GPU and CUDA wheels of torch (``packaging/install.sh`` picks
them where ``nvidia-smi`` works):

    bash packaging/install.sh bench && .venv/bin/pip install -e '.[cuda]'   # trl, bitsandbytes, liger
    .venv/bin/pip install flash-attn --no-build-isolation                   # optional: varlen attention
    .venv/bin/pip install unsloth                                           # optional: third column
    .venv/bin/python benchmarks/gpu_suite.py                                # everything, one table
    .venv/bin/python benchmarks/gpu_suite.py --models llama-3.2-1b --modes lora --steps 20

``--smoke`` runs the same code on the CPU with a tiny Llama (hidden 64, 2 layers), sequence 128,
three steps, ours and TRL in this process: the test suite runs it (tests/test_gpu_suite.py).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from backends.model_shape import LLAMA_SHAPES  # noqa: E402

RESULT = "GPU-SUITE-RESULT "
SIDES = ("ours", "trl", "unsloth")
MODES = ("lora", "qlora")
TINY = {
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "head_dim": 16,
    "vocab_size": 512,
    "max_position_embeddings": 2048,
    "tie_word_embeddings": True,
    "rms_norm_eps": 1e-5,
    "rope_theta": 10000.0,
}
RANK, ALPHA, LR = 16, 32, 2e-4


def shapes(smoke: bool) -> dict[str, dict[str, Any]]:
    return {"tiny": TINY} if smoke else LLAMA_SHAPES


def build_model(work: Path, name: str, shape: dict[str, Any], device: str) -> Path:
    """The random model folder ``work/name`` (built once) with a minimal word-level tokenizer
    (pad, eos, and filler tokens: the rows are token ids already, TRL only needs the specials)."""
    from benchmarks.random_llama import random_llama

    out = work / name
    if (out / "config.json").is_file():
        return out
    tmp = work / f"{name}.partial"
    random_llama(shape, device=device).save_pretrained(tmp, safe_serialization=True)
    _write_tokenizer(tmp)
    tmp.rename(out)
    return out


def _write_tokenizer(folder: Path) -> None:
    from tokenizers import Tokenizer, models
    from transformers import PreTrainedTokenizerFast

    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2, **{f"t{i}": i for i in range(3, 64)}}
    tok = PreTrainedTokenizerFast(
        tokenizer_object=Tokenizer(models.WordLevel(vocab, unk_token="<unk>")),
        bos_token="<s>",
        eos_token="</s>",
        pad_token="</s>",
        unk_token="<unk>",
    )
    tok.save_pretrained(folder)


def rows(n: int, vocab: int, low: int, high: int, seed: int = 0) -> list[tuple[list[int], int]]:
    """``n`` random rows: (token ids, prompt length); lengths uniform in [low, high]."""
    import numpy as np

    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        length = int(rng.integers(low, high + 1))
        out.append(([int(x) for x in rng.integers(3, vocab, length)], length // 4))
    return out


def _sync(device: str) -> None:
    import torch

    if device == "cuda":
        torch.cuda.synchronize()


def attn_implementation(device: str) -> str:
    """flash_attention_2 on CUDA when ``flash_attn`` imports, else sdpa."""
    import importlib.util

    return "flash_attention_2" if device == "cuda" and importlib.util.find_spec("flash_attn") else "sdpa"


def run_ours(args: argparse.Namespace, model_dir: Path, mode: str, data: list, device: str) -> dict:
    from backends.config import config_from_dict
    from backends.data import make_batches
    from backends.data.types import IGNORE_INDEX, Example
    from backends.torch_backend.engine import TorchEngine

    config = config_from_dict(
        {
            "model": str(model_dir),
            "lora": {
                "rank": RANK,
                "alpha": ALPHA,
                "dropout": 0.0,
                "target_modules": "all-linear",
                "quantize": 4 if mode == "qlora" else None,
            },
            "training": {
                "batch_size": 1,
                "max_seq_length": args.seq,
                "precision": args.precision,
                "learning_rate": LR,
                "padding_free": True,
            },
            "data": {"packing": True},
        }
    )
    engine = TorchEngine(device)
    engine.setup(config, model_dir)
    examples = [
        Example(ids, [IGNORE_INDEX] * prompt + ids[prompt:], row=i + 1)
        for i, (ids, prompt) in enumerate(data)
    ]
    batches = make_batches(
        examples, batch_size=1, pad_token_id=2, seed=0, epoch=0, packing=True, max_seq_length=args.seq
    )
    steps = args.warmup + args.steps
    if len(batches) < steps:
        raise SystemExit(f"only {len(batches)} packed sequences for {steps} steps: raise --rows")
    tokens, losses = 0, []
    for i, batch in enumerate(batches[:steps]):
        if i == args.warmup:
            _sync(device)
            start = time.perf_counter()
        result = engine.train_step([batch], LR)
        losses.append(result["loss"])
        if i >= args.warmup:
            tokens += batch.num_tokens
    _sync(device)
    return {"tokens": tokens, "seconds": time.perf_counter() - start, "loss": sum(losses) / len(losses)}


def _trl_dataset(data: list) -> Any:
    from datasets import Dataset

    return Dataset.from_list(
        [{"input_ids": ids, "completion_mask": [0] * p + [1] * (len(ids) - p)} for ids, p in data]
    )


def _peft_config() -> Any:
    from peft import LoraConfig

    return LoraConfig(
        r=RANK, lora_alpha=ALPHA, lora_dropout=0.0, target_modules="all-linear", task_type="CAUSAL_LM"
    )


def _trl_train(
    args: argparse.Namespace, model: Any, tokenizer: Any, data: list, peft: Any, device: str
) -> dict:
    from trl import SFTConfig, SFTTrainer

    from benchmarks import peers

    sft = SFTConfig(
        output_dir=str(Path(args.workdir) / "trl-out"),
        max_steps=args.warmup + args.steps,
        per_device_train_batch_size=1,
        gradient_accumulation_steps=1,
        learning_rate=LR,
        lr_scheduler_type="constant",
        warmup_steps=0,
        gradient_checkpointing=False,
        bf16=args.precision == "bf16",
        use_cpu=device == "cpu",
        max_length=args.seq,
        packing=True,
        completion_only_loss=True,
        logging_steps=1000,
        save_strategy="no",
        report_to="none",
        seed=0,
        dataloader_num_workers=0,
    )

    def count(inputs: dict) -> int:
        mask = inputs.get("attention_mask")
        return int(mask.sum()) if mask is not None else int(inputs["input_ids"].numel())

    result = peers.trl_timed_train(
        SFTTrainer,
        args.warmup,
        count_tokens=count,
        model=model,
        args=sft,
        train_dataset=_trl_dataset(data),
        processing_class=tokenizer,
        peft_config=peft,
    )
    return {"tokens": result["tokens"], "seconds": result["seconds"], "loss": result["loss"]}


def run_trl(args: argparse.Namespace, model_dir: Path, mode: str, data: list, device: str) -> dict:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from backends.torch_backend import quantize

    dtype = torch.bfloat16 if args.precision == "bf16" else torch.float32
    kwargs: dict[str, Any] = {"dtype": dtype, "attn_implementation": attn_implementation(device)}
    if mode == "qlora":
        kwargs["quantization_config"] = quantize.quantization_config(4, dtype)
        kwargs["device_map"] = device
    model = AutoModelForCausalLM.from_pretrained(model_dir, **kwargs)
    if mode != "qlora":
        model.to(device)
    return _trl_train(args, model, AutoTokenizer.from_pretrained(model_dir), data, _peft_config(), device)


def run_unsloth(args: argparse.Namespace, model_dir: Path, mode: str, data: list, device: str) -> dict:
    import torch
    import unsloth  # noqa: F401  (first: it patches transformers and TRL on import)
    from unsloth import FastLanguageModel

    model, tokenizer = FastLanguageModel.from_pretrained(
        model_name=str(model_dir),
        max_seq_length=args.seq,
        dtype=torch.bfloat16,
        load_in_4bit=mode == "qlora",
        local_files_only=True,
    )
    targets = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    model = FastLanguageModel.get_peft_model(
        model, r=RANK, lora_alpha=ALPHA, lora_dropout=0.0, target_modules=targets,
        use_gradient_checkpointing=False, random_state=0,
    )  # fmt: skip
    return _trl_train(args, model, tokenizer, data, None, device)


RUNNERS = {"ours": run_ours, "trl": run_trl, "unsloth": run_unsloth}


def run_case(args: argparse.Namespace, model: str, mode: str, side: str) -> dict:
    """Train one (model, mode, side) and return tokens, seconds, loss and peak memory."""
    import torch

    device = "cpu" if args.smoke else "cuda"
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    shape = shapes(args.smoke)[model]
    model_dir = build_model(Path(args.workdir), model, shape, device)
    data = rows(args.rows, shape["vocab_size"], *((16, 64) if args.smoke else (128, 1024)))
    result = RUNNERS[side](args, model_dir, mode, data, device)
    if device == "cuda":
        result["peak_memory"] = int(torch.cuda.max_memory_allocated())
    else:
        from benchmarks.peers import peak_rss

        result["peak_memory"] = peak_rss()
    return result


def _child(args: argparse.Namespace, model: str, mode: str, side: str) -> dict:
    cmd = [sys.executable, __file__, "--case", f"{model}:{mode}:{side}", "--workdir", args.workdir]
    for key in ("seq", "steps", "warmup", "rows", "precision"):
        cmd += [f"--{key}", str(getattr(args, key))]
    start = time.perf_counter()
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    line = next((x for x in out.stdout.splitlines() if x.startswith(RESULT)), None)
    if line is None:
        err = out.stderr.strip().splitlines()
        missing = any("No module named 'unsloth'" in x for x in err)
        return {"error": "not installed" if missing else (err[-1][:120] if err else f"exit {out.returncode}")}
    return {**json.loads(line[len(RESULT) :]), "wall": time.perf_counter() - start}


def print_table(results: list[tuple[str, str, str, dict]], memory_name: str) -> None:
    """One row per (model, mode, side): tokens/s, ratio to TRL, peak memory, mean loss."""
    print(
        f"{'model':14s} {'mode':6s} {'side':8s} {'tokens/s':>10s} {'vs TRL':>7s} {memory_name:>10s} {'loss':>7s}"
    )
    trl = {(m, k): r for m, k, s, r in results if s == "trl" and "tokens" in r}
    for model, mode, side, r in results:
        if "tokens" not in r:
            print(f"{model:14s} {mode:6s} {side:8s} {r['error']}")
            continue
        tps = r["tokens"] / r["seconds"]
        ref = trl.get((model, mode))
        ratio = f"{tps / (ref['tokens'] / ref['seconds']):6.2f}x" if ref else "      -"
        print(
            f"{model:14s} {mode:6s} {side:8s} {tps:10.0f} {ratio} "
            f"{r['peak_memory'] / 2**30:7.2f} GB {r['loss']:7.3f}"
        )


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--smoke", action="store_true", help="CPU, tiny model, 3 steps, in this process")
    p.add_argument("--models", nargs="+", help="default: llama-3.2-1b llama-3.1-8b (smoke: tiny)")
    p.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES))
    p.add_argument("--sides", nargs="+", choices=SIDES, help="default: all (smoke: ours trl)")
    p.add_argument("--seq", type=int, default=2048, help="packed sequence length")
    p.add_argument("--steps", type=int, default=10, help="timed optimizer steps")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps first")
    p.add_argument("--rows", type=int, default=160, help="random rows to pack")
    p.add_argument("--precision", choices=["bf16", "fp32"], default="bf16")
    p.add_argument("--workdir", default=str(Path.home() / ".cache" / "tunedesk-gpu-suite"))
    p.add_argument("--case", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.smoke:
        args.seq, args.steps, args.warmup, args.rows = min(args.seq, 128), min(args.steps, 3), 1, 40
    Path(args.workdir).mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if args.case:
        model, mode, side = args.case.split(":")
        print(RESULT + json.dumps(run_case(args, model, mode, side)), flush=True)
        return
    models = args.models or list(shapes(args.smoke))
    sides = args.sides or (["ours", "trl"] if args.smoke else list(SIDES))
    start = time.perf_counter()
    results = []
    for model in models:
        for mode in args.modes:
            for side in sides:
                print(f"{model} {mode} {side}...", file=sys.stderr, flush=True)
                r = run_case(args, model, mode, side) if args.smoke else _child(args, model, mode, side)
                print(f"  {json.dumps(r)}", file=sys.stderr, flush=True)
                results.append((model, mode, side, r))
    where = "CPU (smoke)" if args.smoke else "CUDA"
    print(
        f"LoRA r{RANK} all-linear, {args.precision}, packed sequences of {args.seq} tokens, "
        f"{args.steps} timed steps after {args.warmup}, {where}, {time.perf_counter() - start:.0f} s in all"
    )
    print_table(results, "peak RSS" if args.smoke else "peak VRAM")


if __name__ == "__main__":
    main()
