"""The memory plan: a run's predicted peak memory, from the model's ``config.json`` alone.

Pure arithmetic (no torch, no MLX, no weights loaded), so the desktop app computes it in its own
process. ``plan_memory(config, model_config, target)`` returns a ``MemoryPlan``: ``peak`` (bytes),
``breakdown`` (bytes by part), ``available`` (bytes), ``verdict`` and ``suggestions``.

Targets, and the quantity ``peak`` predicts (the one ``run_finished.memory_peak`` measures,
``backends.training.measure``): ``torch-cpu`` the process's peak resident set size while training;
``torch-cuda`` ``torch.cuda.max_memory_allocated()``; ``mlx`` ``mx.get_peak_memory()``. Memory that
is needed but not in that figure (the CUDA context; the Python process beside MLX's arrays) is
``reserve``, added before the verdict.

The formula (sources: the LoRA paper, Hu et al. 2021, for adapter sizes; the QLoRA paper, Dettmers
et al. 2023, for NF4 with double quantisation, 4 + 8/64 + 32/(64*256) bits per weight; Korthikanti et
al. 2022, "Reducing Activation Recomputation", for activations per token and layer), by part:
- ``weights``: the base's parameters (counted from the shapes, Llama-style blocks) times bytes per
  weight of the precision; quantised bases keep embeddings and norms in the compute precision
  (bitsandbytes) or quantise them too (MLX, groups of 64 with a scale and bias each).
- ``lora``: r * (in + out) per adapted linear layer (+ out for DoRA's magnitude), fp32.
- ``gradients``: one fp32 value per LoRA parameter; ``optimizer``: AdamW's two fp32 moments
  (8-bit AdamW: two bytes).
- ``activations``: tokens (batch x sequence) x layers x (a*hidden + b*intermediate + c*LoRA
  inputs) x bytes per activation, calibrated against measured runs (``benchmarks/memory_plan.py``);
  with gradient checkpointing only each layer's input is kept plus one layer's activations.
- ``logits``: the output head's values over the vocabulary for every position (fp32, with the
  cross-entropy's softmax and gradient beside them), the largest single part for small models.
- ``overhead``: the framework's own memory in the measured figure (torch on the CPU: the imported
  libraries, tokenizer and data; CUDA/MLX allocator slack).
``kv_cache_chat`` (not part of the training peak): the key/value cache of one chat of
``max_seq_length`` tokens, 2 x layers x kv-heads x head-dim x tokens x bytes; ``chat_peak`` adds it to
the unquantised weights the chat loads.

The plan assumes every row is ``max_seq_length`` tokens long and every position carries a label
(the worst batch; shorter rows need less), and memory-efficient attention (no tokens^2 matrix).
"""

from __future__ import annotations

import dataclasses
import importlib.util
import itertools
import platform
from typing import Any

import psutil

from backends.config import RunConfig
from backends.hardware import GB  # the display unit (decimal GB); JSON stays in bytes
from backends.model_shape import ModelShape

TARGETS = ("torch-cpu", "torch-cuda", "mlx")
# Verdict: fits when peak + reserve is at most this share of the available memory; tight up to 100%.
FITS_SHARE = 0.80
# Calibrated on this project's measurements (benchmarks/memory_plan.py; the README lists the rows).
# Activation elements kept per token and layer: a * hidden + b * intermediate + c * LoRA inputs
# (LoRA's dropout keeps a copy of each adapted layer's input).
ACT_HIDDEN = {"torch": 19.0, "mlx": 11.0}
ACT_INTER = {"torch": 7.0, "mlx": 5.0}
ACT_LORA = {"torch": 1.0, "mlx": 1.0}
# Bytes per activation element: fp32 4; bf16/fp16 2 plus the norms' and softmax's fp32 copies
# (autocast keeps those in fp32), measured 2.4 on torch.
ACT_BYTES = {"fp32": 4.0, "bf16": 2.4, "fp16": 2.4}
# Bytes per position and vocabulary entry at the loss's peak: fp32 logits, log-softmax, their
# gradients (torch: 3 fp32 copies; bf16 adds the head's bf16 output; MLX: 4 fp32 copies).
LOGIT_BYTES = {
    "torch": {"fp32": 12.4, "bf16": 14.5, "fp16": 14.5},
    "mlx": {"fp32": 16.0, "bf16": 14.0, "fp16": 14.0},
}
# Gradient checkpointing keeps each layer's input and recomputes one layer at a time. On the CPU
# the process keeps more: glibc holds on to the freed memory of the recomputed layers (measured
# 5.2x the kept tensors in fp32, 1.9x in bf16 for SmolLM2; fitted on those two rows, the 1B-shape
# checkpointed row checks it). CUDA's caching allocator and MLX reuse the freed blocks: 1.0.
CKPT_SLACK = {
    "torch-cpu": {"fp32": 5.2, "bf16": 1.9, "fp16": 1.9},
    "torch-cuda": {"fp32": 1.0, "bf16": 1.0, "fp16": 1.0},
    "mlx": {"fp32": 1.0, "bf16": 1.0, "fp16": 1.0},
}
# Framework overhead inside the measured peak (torch on the CPU: imported libraries, tokenizer,
# data: 455 MB measured here).
OVERHEAD = {"torch-cpu": 455 * 2**20, "torch-cuda": 64 * 2**20, "mlx": 16 * 2**20}
# Needed but outside the measured peak: CUDA context and kernels; the Python process beside MLX.
RESERVE = {"torch-cpu": 0, "torch-cuda": 600 * 2**20, "mlx": 400 * 2**20}
TRAIN_PARTS = ("weights", "lora", "gradients", "optimizer", "activations", "logits", "overhead")
BYTES = {"fp32": 4, "bf16": 2, "fp16": 2}


@dataclasses.dataclass
class MemoryPlan:
    """A plan's result; ``to_json()`` is what ``tunedesk plan --json`` prints and ``run_started``
    carries as ``memory_plan``. Bytes throughout."""

    target: str
    peak: int
    reserve: int
    available: int | None
    verdict: str  # fits | tight | does_not_fit
    breakdown: dict[str, int]
    chat_peak: int
    settings: dict[str, Any]
    suggestions: list[dict[str, Any]] = dataclasses.field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def cpu_has_bf16_flags() -> bool:
    """True when /proc/cpuinfo lists AVX512-BF16 or AMX-BF16 (what ``precision: auto`` picks bf16 on)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("flags"):
                    flags = line.split(":", 1)[1].split()
                    return "avx512_bf16" in flags or "amx_bf16" in flags
    except OSError:
        pass
    return False


def default_target(config: RunConfig) -> str:
    """The target a run of ``config`` would train on here, found without importing torch or MLX."""
    from backends import hardware

    if config.backend == "mlx":
        return "mlx"
    if config.backend == "auto" and hardware.is_apple_silicon() and importlib.util.find_spec("mlx"):
        return "mlx"
    return "torch-cuda" if hardware.nvidia_gpus() else "torch-cpu"


def available_memory(target: str) -> int:
    """Free memory for ``target`` in bytes: the first NVIDIA GPU's free memory (NVML) for
    torch-cuda (0 when none is found); otherwise available RAM (on Apple silicon capped at MLX's
    limit, 0.85 of the GPU's recommended working set, about 0.75 of RAM)."""
    from backends import hardware

    if target == "torch-cuda":
        gpus = hardware.nvidia_gpus()
        return int(gpus[0]["memory_free"]) if gpus else 0
    vm = psutil.virtual_memory()
    if target == "mlx" and platform.system() == "Darwin":
        return int(min(vm.available, 0.85 * 0.75 * vm.total))
    return int(vm.available)


def resolve_precision(config: RunConfig, target: str) -> str:
    """The precision a run will use (the engines' ``auto`` rules, without importing them)."""
    choice = config.training.precision
    if choice != "auto":
        return choice
    if target == "torch-cuda":
        return "bf16"  # Ampere and newer; older cards use fp16, the same size
    if target == "mlx":
        return "bf16" if platform.system() == "Darwin" else "fp32"
    return "bf16" if cpu_has_bf16_flags() else "fp32"


def _targets(shape: ModelShape, targets: Any) -> dict[str, tuple[int, int]]:
    layers = shape.linear_layers()
    if targets == "attention":
        return {k: v for k, v in layers.items() if k in ("q_proj", "k_proj", "v_proj", "o_proj")}
    if isinstance(targets, list):
        picked = {k: v for k, v in layers.items() if any(t.split(".")[-1] == k for t in targets)}
        return picked or layers  # names this plan does not know: assume every layer (an upper bound)
    return layers


def breakdown(config: RunConfig, shape: ModelShape, target: str) -> dict[str, int]:
    """Bytes by part (see the module docstring) for ``config`` on ``target``; ``TRAIN_PARTS`` sum
    to the training peak, ``kv_cache_chat`` is the chat's."""
    t, lora = config.training, config.lora
    fw = "mlx" if target == "mlx" else "torch"
    precision = resolve_precision(config, target)
    s = BYTES[precision]
    p = shape.params()
    rest = p["embedding"] + p["head"] + p["norms"]
    if lora.quantize and fw == "torch":
        per = 0.5 + 1 / 64 + 4 / (64 * 256) if lora.quantize == 4 else 1.0 + 4 / shape.hidden
        weights = p["linear"] * per + rest * s
    elif lora.quantize:
        per = lora.quantize / 8 + 2 * s / 64  # affine: a scale and a bias per group of 64
        weights = (p["linear"] + p["embedding"] + p["head"]) * per + p["norms"] * s
    else:
        weights = (p["linear"] + rest) * s
    adapted = _targets(shape, lora.target_modules)
    lora_params = shape.layers * sum(
        lora.rank * (a + b) + (b if lora.use_dora else 0) for a, b in adapted.values()
    )
    lora_in = sum(a for a, _ in adapted.values())
    tokens = t.batch_size * t.max_seq_length
    if config.method == "dpo":
        tokens *= 2  # chosen and rejected rows go through one forward
    act_bytes = ACT_BYTES[precision]
    per_layer = ACT_HIDDEN[fw] * shape.hidden + ACT_INTER[fw] * shape.intermediate
    per_layer += ACT_LORA[fw] * lora_in * (1 if lora.dropout > 0 else 0)
    per_layer *= act_bytes
    if t.gradient_checkpointing:
        kept = shape.layers * shape.hidden * act_bytes + per_layer
        activations = tokens * min(kept * CKPT_SLACK[target][precision], shape.layers * per_layer)
    else:
        activations = tokens * shape.layers * per_layer
    logits = tokens * shape.vocab * LOGIT_BYTES[fw][precision]
    optimizer_bytes = 2 if t.optimizer != "adamw" else 8
    parts = {
        "weights": int(weights),
        "lora": int(lora_params * 4),
        "gradients": int(lora_params * 4),
        "optimizer": int(lora_params * optimizer_bytes),
        "activations": int(activations),
        "logits": int(logits),
        "overhead": OVERHEAD[target],
    }
    parts["kv_cache_chat"] = int(2 * shape.layers * shape.kv_heads * shape.head_dim * t.max_seq_length * s)
    parts["weights_chat"] = int((p["linear"] + rest) * s)
    return parts


def verdict(peak: int, available: int | None) -> str:
    """``fits`` (at most ``FITS_SHARE`` of available), ``tight`` (up to all of it), ``does_not_fit``."""
    if available is None or available <= 0:
        return "does_not_fit"
    if peak <= FITS_SHARE * available:
        return "fits"
    return "tight" if peak <= available else "does_not_fit"


def _variant(config: RunConfig, changes: dict[str, Any]) -> RunConfig:
    training = config.training.model_copy(
        update={k.split(".")[1]: v for k, v in changes.items() if k.startswith("training.")}
    )
    lora = config.lora.model_copy(
        update={k.split(".")[1]: v for k, v in changes.items() if k.startswith("lora.")}
    )
    return config.model_copy(update={"training": training, "lora": lora})


def _peak(config: RunConfig, shape: ModelShape, target: str) -> tuple[int, dict[str, int]]:
    parts = breakdown(config, shape, target)
    return sum(parts[k] for k in TRAIN_PARTS), parts


def suggestions(
    config: RunConfig, shape: ModelShape, target: str, available: int, *, limit: int = 3
) -> list[dict[str, Any]]:
    """The nearest settings that fit: every combination of gradient checkpointing on, 4-bit base,
    halved batch sizes (gradient accumulation raised to keep the effective batch) and halved
    sequence lengths (not below 128) that ``fits``, fewest and mildest changes first. Each:
    ``{"changes": {config key: value}, "peak": bytes, "verdict": ..., "label": words}``."""
    t = config.training
    batches = [t.batch_size >> k for k in range(8) if t.batch_size >> k >= 1]
    seqs = [t.max_seq_length >> k for k in range(8) if t.max_seq_length >> k >= min(128, t.max_seq_length)]
    found = []
    for ckpt, quant, batch, seq in itertools.product(
        (bool(t.gradient_checkpointing), True), (config.lora.quantize, 4), batches, seqs
    ):
        changes: dict[str, Any] = {}
        cost = 0.0
        if ckpt and not t.gradient_checkpointing:
            changes["training.gradient_checkpointing"] = True
            cost += 1
        if quant != config.lora.quantize:
            changes["lora.quantize"] = quant
            cost += 2
        if batch != t.batch_size:
            changes["training.batch_size"] = batch
            changes["training.gradient_accumulation_steps"] = t.gradient_accumulation_steps * (
                t.batch_size // batch
            )
            cost += 1.5 * batches.index(batch)
        if seq != t.max_seq_length:
            changes["training.max_seq_length"] = seq
            cost += 2.5 * seqs.index(seq)  # shorter rows lose data: the last resort
        if not changes:
            continue
        peak, _ = _peak(_variant(config, changes), shape, target)
        if verdict(peak + RESERVE[target], available) == "fits":
            found.append((cost, len(changes), peak, changes))
    found.sort(key=lambda f: (f[0], f[1], f[2]))
    out: list[dict[str, Any]] = []
    for _, _, peak, changes in found:
        if any(set(changes.items()) >= set(o["changes"].items()) for o in out):
            continue  # a superset of a better suggestion adds nothing
        out.append({"changes": changes, "peak": peak, "verdict": "fits", "label": describe_changes(changes)})
        if len(out) == limit:
            break
    return out


def describe_changes(changes: dict[str, Any]) -> str:
    """Everyday words for a suggestion, e.g. 'batch size 2 (accumulation 2), 4-bit base'."""
    words = []
    for key, value in changes.items():
        if key == "training.gradient_checkpointing":
            words.append("gradient checkpointing on")
        elif key == "lora.quantize":
            words.append(f"{value}-bit base (QLoRA)")
        elif key == "training.batch_size":
            words.append(
                f"batch size {value} (accumulation {changes['training.gradient_accumulation_steps']})"
            )
        elif key == "training.max_seq_length":
            words.append(f"max length {value} tokens")
    return ", ".join(words)


def plan_memory(
    config: RunConfig, model_config: dict[str, Any], target: str | None = None, available: int | None = None
) -> MemoryPlan:
    """The memory plan of ``config`` for a model with ``model_config`` (its config.json) on
    ``target`` (default: ``default_target``) against ``available`` bytes (default: measured here).
    Raises ValueError for an unknown target or a config.json without the needed fields."""
    target = target or default_target(config)
    if target not in TARGETS:
        raise ValueError(f"unknown target {target!r}; choose one of {', '.join(TARGETS)}")
    shape = ModelShape.from_config(model_config)
    if available is None:
        available = available_memory(target)
    reserve = RESERVE[target]
    if config.training.gradient_checkpointing is None:
        # auto: off when the plan without it fits, else on (``checkpointing_for``)
        config = _variant(config, {"training.gradient_checkpointing": False})
        if verdict(_peak(config, shape, target)[0] + reserve, available) != "fits":
            config = _variant(config, {"training.gradient_checkpointing": True})
    peak, parts = _peak(config, shape, target)
    result = verdict(peak + reserve, available)
    return MemoryPlan(
        target=target,
        peak=peak,
        reserve=reserve,
        available=available,
        verdict=result,
        breakdown=parts,
        chat_peak=parts["weights_chat"] + parts["kv_cache_chat"] + OVERHEAD[target],
        settings={
            "precision": resolve_precision(config, target),
            "batch_size": config.training.batch_size,
            "max_seq_length": config.training.max_seq_length,
            "gradient_checkpointing": bool(config.training.gradient_checkpointing),
            "quantize": config.lora.quantize,
            "params": sum(shape.params().values()),
        },
        suggestions=[] if result == "fits" else suggestions(config, shape, target, available),
    )


def checkpointing_for(plan: MemoryPlan) -> str:
    """The log line that says how ``training.gradient_checkpointing: null`` (auto) was resolved
    by ``plan_memory``: on when the plan without it is not ``fits``."""
    need = (plan.peak + plan.reserve) / GB
    free = (plan.available or 0) / GB
    state = "on" if plan.settings["gradient_checkpointing"] else "off"
    return f"gradient checkpointing {state} (auto: the plan needs {need:.2f} GB of {free:.1f} GB free)"


def target_for(backend: str, device: str) -> str:
    """The plan target of an engine (``Engine.name``, ``Engine.device``); MPS counts as torch-cpu."""
    if backend == "mlx":
        return "mlx"
    return "torch-cuda" if device == "cuda" else "torch-cpu"
