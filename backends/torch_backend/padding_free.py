"""Padding-free batches: the rows of a micro-batch (or the sequences of a packed one) concatenated
into one row without padding, ``position_ids`` restarting at 0 for every example, attention kept
within each example.

``flatten(batch)`` does the data side (numpy, no copy of the model inputs beyond the kept tokens).
The attention side depends on the device:

- CUDA with ``flash_attn`` installed and a bf16/fp16 run: transformers' ``flash_attention_2``,
  which reads the example boundaries from the restarting ``position_ids`` (varlen kernel, as TRL's
  padding-free collator relies on).
- elsewhere (the CPU): ``VARLEN``, an attention function registered with transformers'
  ``AttentionInterface`` that runs ``scaled_dot_product_attention(is_causal=True)`` on each
  example's span of the row (``SEGMENTS_KW``: the (start, end) spans, passed through the model's
  forward keywords). Each example costs its own length squared, not the row's, and the causal
  sdpa kernel needs no mask. Called without spans (chat, the forgetting check, a padded batch) it is
  transformers' sdpa with the usual mask, so the model behaves as with ``sdpa`` everywhere else.

The loss is unchanged: each position's target is the next token of its own example (``targets``);
the last position of an example has none.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from backends.data.types import IGNORE_INDEX, Batch

VARLEN = "tunedesk_varlen"
SEGMENTS_KW = "tunedesk_segments"


def shifted_targets(batch: Batch) -> np.ndarray:
    """int64 [B, T]: the target of each position, ``labels[:, t + 1]``, with ``IGNORE_INDEX`` at the
    last column and, in packed batches, at the last position of every segment (its next token
    belongs to another example)."""
    targets = np.full_like(batch.labels, IGNORE_INDEX)
    targets[:, :-1] = batch.labels[:, 1:]
    if batch.segment_ids is not None:
        boundary = batch.segment_ids[:, 1:] != batch.segment_ids[:, :-1]
        targets[:, :-1][boundary] = IGNORE_INDEX
    return targets


@dataclasses.dataclass
class FlatBatch:
    """One row of L real tokens: ``input_ids``, ``position_ids``, ``targets`` (int64 [1, L]),
    ``rows`` (int64 [L]: the batch row each token came from, for per-row sums) and ``segments``
    (the (start, end) span of each example in the row, in order)."""

    input_ids: np.ndarray
    position_ids: np.ndarray
    targets: np.ndarray
    rows: np.ndarray
    segments: tuple[tuple[int, int], ...]


def flatten(batch: Batch) -> FlatBatch:
    """The batch's real tokens (``attention_mask == 1``) in row order as one row. Every example
    starts at position 0 (rows always do; packed segments restart), so the spans are read from
    ``position_ids``."""
    keep = batch.attention_mask.astype(bool)
    positions = batch.position_ids[keep]
    starts = np.flatnonzero(positions == 0)
    ends = np.append(starts[1:], positions.size)
    return FlatBatch(
        input_ids=batch.input_ids[keep][None],
        position_ids=positions[None],
        targets=shifted_targets(batch)[keep][None],
        rows=np.nonzero(keep)[0],
        segments=tuple(zip(starts.tolist(), ends.tolist(), strict=True)),
    )


def varlen_attention(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    dropout: float = 0.0,
    scaling: float | None = None,
    **kwargs: Any,
) -> tuple[torch.Tensor, None]:
    """transformers attention function (query [1, H, L, D], key/value [1, Hkv, L, D]; returns
    [1, L, H, D]): causal attention within each span of ``kwargs[SEGMENTS_KW]``; without spans,
    transformers' ``sdpa_attention_forward``."""
    segments = kwargs.pop(SEGMENTS_KW, None)
    if segments is None:
        from transformers.integrations.sdpa_attention import sdpa_attention_forward

        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout, scaling, **kwargs)
    gqa = key.shape[1] != query.shape[1]
    p = dropout if module.training else 0.0
    parts = [
        F.scaled_dot_product_attention(
            query[:, :, s:e],
            key[:, :, s:e],
            value[:, :, s:e],
            dropout_p=p,
            is_causal=True,
            scale=scaling,
            enable_gqa=gqa,
        )
        for s, e in segments
    ]
    out = parts[0] if len(parts) == 1 else torch.cat(parts, dim=2)
    return out.transpose(1, 2).contiguous(), None


def register() -> None:
    """Register ``VARLEN`` with transformers (attention function, and sdpa's mask function for
    calls without spans); idempotent."""
    from transformers import AttentionInterface
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, sdpa_mask

    AttentionInterface.register(VARLEN, varlen_attention)
    ALL_MASK_ATTENTION_FUNCTIONS.register(VARLEN, sdpa_mask)
