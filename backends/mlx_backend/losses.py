"""The MLX engine's batches and losses on MLX arrays: rows padded for the compiled step, the
token-level causal-LM loss summed over labelled targets, each row's answer log-probability, the
DPO loss (formula shared with PyTorch: ``backends.training.dpo.sigmoid_dpo_loss``), and the model
with its LoRA layers bypassed (the DPO reference, no second copy of the weights)."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from typing import Any

import mlx.core as mx
import mlx.nn as nn
import numpy as np

from backends.data.types import IGNORE_INDEX, Batch
from backends.training.dpo import sigmoid_dpo_loss

# With compilation, sequence lengths are padded up to 1 + a multiple of this, as mlx-lm's own
# trainer does, so that the compiled step is traced for few distinct shapes.
PAD_MULTIPLE = 32


def batch_rows(batch: Batch, pad_multiple: int = PAD_MULTIPLE) -> tuple[np.ndarray, np.ndarray]:
    """``(input_ids, labels)`` int32 arrays [R, T] for the MLX forward.

    Right padding is kept (padded positions have label ``IGNORE_INDEX``); a packed batch is split
    into one row per segment (R = number of segments); T is padded to ``1 + k * pad_multiple``.
    Raises ValueError when the batch is not right-padded (the data contract of ``Batch``).
    """
    ids, labels, mask = batch.input_ids, batch.labels, batch.attention_mask
    if batch.segment_ids is None:
        if np.any(np.diff(mask.astype(np.int8), axis=1) > 0):
            raise ValueError("batch is not right-padded: attention_mask has a 1 after a 0")
        rows = [(ids[i, mask[i] > 0], labels[i, mask[i] > 0]) for i in range(ids.shape[0])]
    else:
        rows = []
        for i in range(ids.shape[0]):
            seg = batch.segment_ids[i]
            for s in np.unique(seg[seg > 0]):
                pos = np.flatnonzero(seg == s)
                if pos[-1] - pos[0] + 1 != len(pos):
                    raise ValueError(f"segment {s} of packed row {i} is not contiguous")
                # Position 0 of the new row is never a target, like the first position of a segment.
                rows.append((ids[i, pos], labels[i, pos]))
    longest = max(len(r[0]) for r in rows)
    width = 1 + pad_multiple * max(1, math.ceil((longest - 1) / pad_multiple))
    out_ids = np.zeros((len(rows), width), np.int32)
    out_labels = np.full((len(rows), width), IGNORE_INDEX, np.int32)
    for i, (r_ids, r_labels) in enumerate(rows):
        out_ids[i, : len(r_ids)] = r_ids
        out_labels[i, : len(r_labels)] = r_labels
    return out_ids, out_labels


def loss_sum(model: nn.Module, inputs: mx.array, targets: mx.array) -> mx.array:
    """Summed token cross-entropy (fp32) of ``model(inputs)`` against ``targets``.

    ``inputs`` = ``input_ids[:, :-1]``, ``targets`` = ``labels[:, 1:]`` (shapes [R, T-1]); positions
    with target ``IGNORE_INDEX`` add nothing. Dividing by the label-token count is the caller's
    job, so gradient accumulation can normalise by the tokens of the whole step.
    """
    logits = model(inputs).astype(mx.float32)
    keep = targets != IGNORE_INDEX
    ce = nn.losses.cross_entropy(logits, mx.where(keep, targets, 0))
    return (ce * keep).sum()


def sequence_log_probs(model: nn.Module, inputs: mx.array, targets: mx.array) -> mx.array:
    """Each row's summed log-probability (fp32, shape [R]) of its targets (``inputs``/``targets``
    as for ``loss_sum``); for a preference batch, log p(answer | prompt) of each row."""
    logits = model(inputs).astype(mx.float32)
    keep = targets != IGNORE_INDEX
    ce = nn.losses.cross_entropy(logits, mx.where(keep, targets, 0))
    return -(ce * keep).sum(axis=1)


def dpo_loss(
    model: nn.Module,
    inputs: mx.array,
    targets: mx.array,
    reference: mx.array,
    *,
    beta: float,
    label_smoothing: float,
) -> tuple[mx.array, mx.array, mx.array, mx.array]:
    """(summed DPO loss, per-pair losses [B], chosen rewards [B], rejected rewards [B]) of one
    preference batch: rows [0, B) chosen, [B, 2B) rejected; ``reference`` [2B] the reference
    log-probabilities in the same order (``backends.training.dpo.sigmoid_dpo_loss``). The first
    output is the one ``nn.value_and_grad`` differentiates."""
    logps = sequence_log_probs(model, inputs, targets)
    n = logps.shape[0] // 2
    losses, chosen, rejected = sigmoid_dpo_loss(
        logps[:n],
        logps[n:],
        reference[:n],
        reference[n:],
        beta=beta,
        label_smoothing=label_smoothing,
        log_sigmoid=nn.log_sigmoid,
    )
    return losses.sum(), losses, chosen, rejected


def _adapter_base(module: nn.Module) -> nn.Module | None:
    """The base layer an mlx-lm adapter layer wraps (LoRALinear/DoRALinear/LoRASwitchLinear:
    ``linear``; LoRAEmbedding: ``embedding``), or None for any other module."""
    if "lora_a" not in module:
        return None
    for name in ("linear", "embedding"):
        if isinstance(module.get(name), nn.Module):
            return module[name]
    raise TypeError(f"adapter layer {type(module).__name__} wraps no base layer this engine knows")


@contextlib.contextmanager
def adapters_bypassed(model: nn.Module) -> Iterator[nn.Module]:
    """While active, ``model`` is the base model: each LoRA/DoRA layer is replaced by the base layer
    it wraps (the same arrays, no copy), so its forward equals the model without the adapter
    (DoRA's magnitude vector is bypassed too, which a LoRA scale of 0 would not do). The adapter
    layers are put back on exit."""
    swaps = []
    for path, module in model.named_modules():
        base = _adapter_base(module)
        if base is not None and path:
            *parents, key = path.split(".")
            holder: Any = model
            for part in parents:
                holder = holder[int(part)] if isinstance(holder, list) else holder[part]
            swaps.append((holder, int(key) if isinstance(holder, list) else key, module, base))
    for holder, key, _, base in swaps:
        holder[key] = base
    try:
        yield model
    finally:
        for holder, key, adapter, _ in swaps:
            holder[key] = adapter
