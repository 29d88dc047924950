"""The LM head and cross-entropy at the trained positions only, in chunks: the [tokens x vocabulary]
logits tensor of a whole batch is never held in memory.

``token_losses(hidden, head, targets)`` takes the decoder's hidden states already gathered at the
N positions that carry a target and returns each position's cross-entropy ``logsumexp(z) - z[y]``
with ``z = head(h)`` in fp32 (the same value as ``F.cross_entropy(head(hidden).float(), targets,
reduction="none")``). Three ways, picked by what the head is:

- a plain frozen ``nn.Linear`` (the LoRA case: peft leaves the head alone): ``_ChunkedHeadCE``, a
  custom autograd function that computes each chunk's logits, its loss and, when a gradient is
  needed, at once the gradient of that loss with respect to the chunk's hidden states,
  ``(softmax(z) - onehot(y)) @ W`` (the derivative of cross-entropy; Liger-Kernel's fused linear
  cross-entropy does the same on GPUs), then drops the logits. Memory: one chunk's logits plus
  an [N, d] gradient; no recomputation.
- on CUDA with ``liger-kernel`` installed and a summed loss wanted: its fused Triton kernel
  (``summed_loss``); optional, never needed on the CPU.
- any other head (a trainable or adapted one): each chunk under activation checkpointing, so its
  logits are recomputed in the backward pass instead of kept.
"""

from __future__ import annotations

import importlib.util
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

# Logits held at once, in bytes (fp32): 128 MiB is ~680 tokens for a 49k vocabulary, ~260 for 128k.
CHUNK_BYTES = 128 * 2**20
MIN_CHUNK = 64


def chunk_size(vocab: int, chunk_bytes: int = CHUNK_BYTES) -> int:
    """Positions per chunk so that one chunk's fp32 logits take at most ``chunk_bytes`` (but at
    least ``MIN_CHUNK`` positions)."""
    return max(MIN_CHUNK, chunk_bytes // (4 * vocab))


def _compute_dtype(weight: torch.Tensor) -> torch.dtype:
    """The dtype the head's matmul runs in: autocast's when it is on, else the weight's."""
    device = weight.device.type
    if torch.is_autocast_enabled(device):
        return torch.get_autocast_dtype(device)
    return weight.dtype


class _ChunkedHeadCE(torch.autograd.Function):
    """Per-position cross-entropy of ``hidden @ weight.T (+ bias)``, chunk by chunk; the gradient
    with respect to ``hidden`` is computed in the forward pass (see the module docstring)."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any,
        hidden: torch.Tensor,
        weight: torch.Tensor,
        bias: torch.Tensor | None,
        targets: torch.Tensor,
        chunk: int,
    ) -> torch.Tensor:
        needs_grad = ctx.needs_input_grad[0]
        losses = torch.empty(hidden.shape[0], dtype=torch.float32, device=hidden.device)
        grad = torch.empty_like(hidden) if needs_grad else None
        for start in range(0, hidden.shape[0], chunk):
            end = min(start + chunk, hidden.shape[0])
            logits = F.linear(hidden[start:end], weight, bias).float()
            target = targets[start:end]
            lse = torch.logsumexp(logits, dim=-1)
            losses[start:end] = lse - logits.gather(1, target[:, None]).squeeze(1)
            if grad is not None:
                probs = logits.sub_(lse[:, None]).exp_()  # softmax, in place of the logits
                probs[torch.arange(end - start, device=probs.device), target] -= 1.0
                grad[start:end] = probs.to(weight.dtype) @ weight
        ctx.save_for_backward(grad)
        return losses

    @staticmethod
    def backward(ctx: Any, grad_losses: torch.Tensor) -> tuple:  # type: ignore[override]
        (grad,) = ctx.saved_tensors
        grad_hidden = grad * grad_losses[:, None].to(grad.dtype)
        return grad_hidden, None, None, None, None


def _plain_frozen_linear(head: nn.Module) -> bool:
    return (
        type(head) is nn.Linear
        and not head.weight.requires_grad
        and (head.bias is None or not head.bias.requires_grad)
    )


def token_losses(
    hidden: torch.Tensor, head: nn.Module, targets: torch.Tensor, chunk: int | None = None
) -> torch.Tensor:
    """Cross-entropy of each of the N positions: ``hidden`` [N, d] (the decoder output at the
    positions that carry a target), ``targets`` [N] token ids (no ignore index), ``head`` the
    model's output embedding (``get_output_embeddings()``). Returns fp32 [N], differentiable with
    respect to ``hidden`` (and the head's parameters when they train). ``chunk``: positions per
    chunk (default ``chunk_size(vocab)``)."""
    weight = head.weight
    chunk = chunk or chunk_size(weight.shape[0])
    if _plain_frozen_linear(head):
        dtype = _compute_dtype(weight)
        bias = None if head.bias is None else head.bias.to(dtype)
        with torch.autocast(weight.device.type, enabled=False):
            return _ChunkedHeadCE.apply(hidden.to(dtype), weight.to(dtype), bias, targets, chunk)
    parts = []
    for start in range(0, hidden.shape[0], chunk):
        h, t = hidden[start : start + chunk], targets[start : start + chunk]
        if torch.is_grad_enabled() and hidden.requires_grad:
            parts.append(checkpoint(_head_ce, head, h, t, use_reentrant=False))
        else:
            parts.append(_head_ce(head, h, t))
    return torch.cat(parts) if parts else hidden.new_zeros(0, dtype=torch.float32)


def _head_ce(head: nn.Module, hidden: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(head(hidden).float(), targets, reduction="none")


def liger_available(device: str) -> bool:
    """True on CUDA when ``liger-kernel`` (Triton kernels; the ``cuda`` extra) is importable."""
    return device == "cuda" and importlib.util.find_spec("liger_kernel") is not None


def summed_loss(hidden: torch.Tensor, head: nn.Module, targets: torch.Tensor) -> torch.Tensor:
    """The summed cross-entropy of the N positions (fp32 scalar): Liger-Kernel's fused linear
    cross-entropy on CUDA when it is installed and the head is a plain frozen linear layer, else
    ``token_losses(...).sum()``."""
    if liger_available(hidden.device.type) and _plain_frozen_linear(head):
        from liger_kernel.transformers import LigerFusedLinearCrossEntropyLoss

        dtype = _compute_dtype(head.weight)
        result = LigerFusedLinearCrossEntropyLoss(reduction="sum")(
            head.weight.to(dtype),
            hidden.to(dtype),
            targets,
            None if head.bias is None else head.bias.to(dtype),
        )
        result = result[0] if isinstance(result, tuple) else getattr(result, "loss", result)
        return result.float()
    return token_losses(hidden, head, targets).sum()
