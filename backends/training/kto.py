"""Kahneman-Tversky Optimization (KTO): the framework-neutral parts shared by both engines.

The loss (Ethayarajh et al. 2024, "KTO: Model Alignment as Prospect Theoretic Optimization",
eq. 7; as TRL's ``KTOTrainer`` with ``loss_type="kto"``), for unpaired feedback: each row is a
prompt x with one answer y marked desirable (thumbs up, ``label: true``) or undesirable
(``label: false``):

    r(x, y) = log pi(y|x) - log ref(y|x)                (summed answer log-probabilities)
    z0      = max(0, mean over the batch of r(x_i, y'_i))   (no gradient)
    loss    = w_D * (1 - sigmoid(beta * (r - z0)))       for a desirable row
            = w_U * (1 - sigmoid(beta * (z0 - r)))       for an undesirable row

averaged over the rows (of the whole optimizer step). ``z0`` is the KL estimate: y'_i is another
row's answer, so (x_i, y'_i) is a mismatched pair; as TRL, the answers of a batch are rotated by
one (x_1, y_n), (x_2, y_1), ..., (x_n, y_{n-1}), and each micro-batch estimates its own z0 (TRL:
each device batch). ``ref`` is the base model with the adapter disabled (no second copy of the
weights). Defaults as TRL: beta 0.1, w_D = w_U = 1. At initialisation policy = reference, so every
row's loss is 1 - sigmoid(0) = 0.5 times its weight.

Reported with every step: ``rewards_desirable`` / ``rewards_undesirable`` = mean beta * r over
the desirable / undesirable rows (TRL's ``rewards/chosen`` and ``rewards/rejected``), ``kl`` = the
mean z0 of the step's micro-batches, ``desirable_share`` = share of desirable rows; a step without
rows of one kind leaves that reward out.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np

from backends.events import KTO_EVAL_FIELDS, KTO_STEP_FIELDS

STEP_FIELDS = KTO_STEP_FIELDS
EVAL_FIELDS = KTO_EVAL_FIELDS

T = TypeVar("T")


def kl_estimate(policy_mismatched: Any, reference_mismatched: Any) -> float:
    """z0 = max(0, mean(policy - reference)) over the mismatched rows' summed answer log-probs
    (anything ``np.asarray`` takes, shape [B]); a plain float, so it carries no gradient."""
    diff = np.asarray(policy_mismatched, dtype=np.float64) - np.asarray(
        reference_mismatched, dtype=np.float64
    )
    return max(0.0, float(diff.mean())) if diff.size else 0.0


def kto_loss(
    policy_logps: T,
    reference_logps: T,
    desirable: T,
    kl: float,
    *,
    beta: float,
    desirable_weight: float,
    undesirable_weight: float,
    xp: Any,
    sigmoid: Callable[[T], T],
) -> tuple[T, T]:
    """Per-row KTO losses [B] (weights applied) and rewards beta * r [B] (formula in the module
    docstring). ``policy_logps``/``reference_logps``: summed answer log-probabilities [B];
    ``desirable``: boolean [B] in the same framework; ``kl``: z0 from ``kl_estimate``; ``xp``: the
    array namespace (needs ``where``); ``sigmoid``: the framework's."""
    ratio = policy_logps - reference_logps
    good = desirable_weight * (1.0 - sigmoid(beta * (ratio - kl)))
    bad = undesirable_weight * (1.0 - sigmoid(beta * (kl - ratio)))
    return xp.where(desirable, good, bad), beta * ratio


@dataclass
class KTOStats:
    """Sums over the rows of one step (or evaluation), turned into means by ``metrics``."""

    rows: int = 0
    loss: float = 0.0
    desirable: int = 0
    desirable_rewards: float = 0.0
    undesirable_rewards: float = 0.0
    kl_sum: float = 0.0
    batches: int = 0

    def add(self, losses: Any, rewards: Any, desirable: Any, kl: float) -> None:
        """One micro-batch: per-row losses [B], rewards [B], desirable flags [B] and its z0."""
        losses = np.asarray(losses, dtype=np.float64).reshape(-1)
        rewards = np.asarray(rewards, dtype=np.float64).reshape(-1)
        good = np.asarray(desirable, dtype=bool).reshape(-1)
        self.rows += int(losses.size)
        self.loss += float(losses.sum())
        self.desirable += int(good.sum())
        self.desirable_rewards += float(rewards[good].sum())
        self.undesirable_rewards += float(rewards[~good].sum())
        self.kl_sum += float(kl)
        self.batches += 1

    def metrics(self) -> dict[str, float]:
        """{"loss": mean KTO loss per row, "kl", "desirable_share", and the reward means of the kinds
        present}; loss NaN when empty."""
        if self.rows == 0:
            return {"loss": float("nan")}
        out = {
            "loss": self.loss / self.rows,
            "kl": self.kl_sum / self.batches,
            "desirable_share": self.desirable / self.rows,
        }
        if self.desirable:
            out["rewards_desirable"] = self.desirable_rewards / self.desirable
        if self.rows - self.desirable:
            out["rewards_undesirable"] = self.undesirable_rewards / (self.rows - self.desirable)
        return out

    def eval_metrics(self) -> dict[str, float]:
        """{"val_loss": the mean KTO loss per row, plus those of ``EVAL_FIELDS`` present}."""
        m = self.metrics()
        return {"val_loss": m["loss"], **{k: m[k] for k in EVAL_FIELDS if k in m}}
