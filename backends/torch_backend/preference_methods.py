"""ORPO and KTO on the PyTorch engine: the per-batch forward passes around the framework-neutral
formulas of ``backends.training.orpo`` and ``backends.training.kto``.

The engine calls ``backward(engine, micro_batches)`` from ``train_step`` (gradient accumulation:
each micro-batch's loss is scaled so that the step's gradient equals that of one big batch) and
``eval_metrics(engine, batches)`` from ``eval_metrics``. Log-probabilities come from the engine's
``sequence_log_probs`` (summed over each row's answer tokens, fp32).

- ORPO: one forward over the chosen and rejected rows; step loss = the chosen answers' summed NLL
  / their tokens in the step + sum of beta * L_OR / pairs in the step.
- KTO: the matched rows with gradient; the mismatched rows (KL estimate) without; the reference
  (both) with the adapter disabled (peft ``disable_adapter()``). Step loss = sum of the rows'
  losses / rows in the step; each micro-batch has its own z0.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from backends.data.types import Batch, KTOBatch, PreferenceBatch
from backends.training.kto import KTOStats, kl_estimate, kto_loss
from backends.training.orpo import ORPOStats, answer_token_counts, odds_ratio_loss

METHODS = ("orpo", "kto")


def _rows(batch: Batch, start: int, stop: int) -> Batch:
    """Rows [start, stop) of an unpacked batch as a plain ``Batch``."""
    ids = batch.input_ids[start:stop]
    mask = batch.attention_mask[start:stop]
    labels = batch.labels[start:stop]
    return Batch(
        input_ids=ids,
        attention_mask=mask,
        labels=labels,
        position_ids=batch.position_ids[start:stop],
        num_tokens=int(mask.sum()),
        num_label_tokens=int((labels[:, 1:] != -100).sum()),
        rows=list(batch.rows[start:stop]),
    )


def orpo_terms(engine: Any, batch: PreferenceBatch) -> tuple[torch.Tensor, ...]:
    """(chosen summed log-probs [B], chosen token counts [B], rejected mean log-probs [B],
    beta * L_OR [B], log_odds [B]) of one preference batch; the first and fourth carry gradients."""
    n = batch.num_pairs
    summed = engine.sequence_log_probs(batch)
    counts = torch.as_tensor(answer_token_counts(batch.labels), dtype=torch.float32, device=summed.device)
    mean = summed / counts.clamp(min=1)
    or_losses, log_odds = odds_ratio_loss(
        mean[:n], mean[n:], beta=engine.config.orpo.beta, xp=torch, log_sigmoid=F.logsigmoid
    )
    return summed[:n], counts[:n], mean[n:], or_losses, log_odds


def kto_terms(engine: Any, batch: KTOBatch) -> tuple[torch.Tensor, torch.Tensor, np.ndarray, float]:
    """(per-row KTO losses [B] with gradients, rewards [B], desirable [B], z0) of one KTO batch."""
    n = batch.num_pairs
    matched, mismatched = _rows(batch, 0, n), _rows(batch, n, 2 * n)
    policy = engine.sequence_log_probs(matched)
    with torch.no_grad():
        policy_kl = engine.sequence_log_probs(mismatched)
        with engine.model.disable_adapter():
            reference = engine.sequence_log_probs(matched)
            reference_kl = engine.sequence_log_probs(mismatched)
    kl = kl_estimate(policy_kl.double().cpu().numpy(), reference_kl.double().cpu().numpy())
    desirable = np.asarray(batch.desirable, dtype=bool)
    cfg = engine.config.kto
    losses, rewards = kto_loss(
        policy,
        reference,
        torch.as_tensor(desirable, device=policy.device),
        kl,
        beta=cfg.beta,
        desirable_weight=cfg.desirable_weight,
        undesirable_weight=cfg.undesirable_weight,
        xp=torch,
        sigmoid=torch.sigmoid,
    )
    return losses, rewards, desirable, kl


def _numpy(*tensors: torch.Tensor) -> list[np.ndarray]:
    return [t.detach().double().cpu().numpy() for t in tensors]


def backward(engine: Any, micro_batches: list[Batch]) -> dict[str, float]:
    """Backward of the step's ORPO or KTO loss (see module docstring); returns the step's metrics
    ({"loss", ...the method's STEP_FIELDS})."""
    method = engine.config.method
    if method == "orpo":
        pairs = sum(int(b.num_pairs) for b in micro_batches)
        tokens = int(sum(answer_token_counts(b.labels)[: b.num_pairs].sum() for b in micro_batches))
        stats = ORPOStats(beta=engine.config.orpo.beta)
        for batch in micro_batches:
            chosen_sum, counts, rejected_mean, or_losses, log_odds = orpo_terms(engine, batch)
            engine._backward(-chosen_sum.sum() / max(tokens, 1) + or_losses.sum() / pairs)
            stats.add(*_numpy(chosen_sum, counts, rejected_mean, or_losses, log_odds))
        return stats.metrics()
    rows = sum(int(b.num_pairs) for b in micro_batches)
    kstats = KTOStats()
    for batch in micro_batches:
        losses, rewards, desirable, kl = kto_terms(engine, batch)
        engine._backward(losses.sum() / rows)
        loss_np, rewards_np = _numpy(losses, rewards)
        kstats.add(loss_np, rewards_np, desirable, kl)
    return kstats.metrics()


def eval_metrics(engine: Any, batches: list[Batch]) -> dict[str, float]:
    """{"val_loss", ...the method's EVAL_FIELDS} over ``batches`` (no gradient; the engine sets
    eval mode around it)."""
    with torch.no_grad():
        if engine.config.method == "orpo":
            stats = ORPOStats(beta=engine.config.orpo.beta)
            for batch in batches:
                stats.add(*_numpy(*orpo_terms(engine, batch)))
            return stats.eval_metrics()
        kstats = KTOStats()
        for batch in batches:
            losses, rewards, desirable, kl = kto_terms(engine, batch)
            kstats.add(*_numpy(losses, rewards), desirable, kl)
        return kstats.eval_metrics()
