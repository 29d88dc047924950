"""Odds Ratio Preference Optimization (ORPO): the framework-neutral parts shared by both engines.

The loss (Hong, Lee and Thorne 2024, "ORPO: Monolithic Preference Optimization without Reference
Model", eqs. 2-7), for a prompt x with a chosen answer y_w and a rejected answer y_l:

    P(y|x)   = exp(mean over the answer's tokens of log p(token | context))   (length-normalised)
    odds(y)  = P / (1 - P)
    log_odds = log odds(y_w) - log odds(y_l)
             = (lp_w - lp_l) - (log(1 - exp(lp_w)) - log(1 - exp(lp_l)))   with lp = log P
    L_OR     = -log sigmoid(log_odds)
    loss     = L_SFT + lambda * mean over pairs of L_OR

``L_SFT`` is the negative log-likelihood of the chosen answers: the summed cross-entropy of their
tokens divided by the number of those tokens in the step (one mean per token, as a causal-LM loss).
Only the answer's tokens count, as in SFT with ``train_on: completion`` (TRL's ORPOTrainer also
counts the prompt's tokens in its NLL; with a one-token prompt both are the same, which is how the
parity test compares them). ``lambda`` is ``orpo.beta`` (TRL's name, default 0.1). No reference
model: the policy alone enters the loss, so nothing is computed with the adapter disabled.

Reported with every step (means over the step's pairs; names as TRL's ORPOTrainer metrics):
``nll_loss`` (L_SFT), ``log_odds_ratio`` = mean log sigmoid(log_odds), ``log_odds_chosen`` = mean
log_odds, and the DPO-style reward fields with ``rewards_chosen`` = beta * lp_w, ``rewards_rejected``
= beta * lp_l, ``reward_margin`` and ``reward_accuracy`` (share of pairs with lp_w > lp_l).
``log(1 - exp(x))`` is computed stably (``log1mexp``: Maechler 2012, branch at -ln 2).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np

from backends.events import ORPO_STEP_FIELDS

STEP_FIELDS = ORPO_STEP_FIELDS
EVAL_FIELDS = ("reward_accuracy", "reward_margin", "log_odds_chosen")

T = TypeVar("T")
_LN2 = 0.6931471805599453


def log1mexp(x: T, xp: Any) -> T:
    """log(1 - exp(x)) for x < 0, stable at both ends (Maechler 2012): log(-expm1(x)) for
    x > -ln 2, log1p(-exp(x)) below. ``xp`` is the array namespace (``torch``, ``mlx.core``,
    ``numpy``): it must provide where, log, expm1, log1p and exp."""
    return xp.where(x < -_LN2, xp.log1p(-xp.exp(x)), xp.log(-xp.expm1(x)))


def odds_ratio_loss(
    chosen_mean_logps: T,
    rejected_mean_logps: T,
    *,
    beta: float,
    xp: Any,
    log_sigmoid: Callable[[T], T],
) -> tuple[T, T]:
    """Per-pair odds-ratio losses ``beta * L_OR`` [B] and ``log_odds`` [B] (formula in the module
    docstring). Inputs: the mean per-token answer log-probabilities (natural log, < 0) of the
    chosen and rejected answers, shape [B], in any framework whose namespace ``xp`` has where,
    log, expm1, log1p and exp; ``log_sigmoid`` is the framework's."""
    log_odds = (chosen_mean_logps - rejected_mean_logps) - (
        log1mexp(chosen_mean_logps, xp) - log1mexp(rejected_mean_logps, xp)
    )
    return -beta * log_sigmoid(log_odds), log_odds


def answer_token_counts(labels: np.ndarray) -> np.ndarray:
    """Number of labelled targets of each row of a batch ([R] int64), from unshifted labels [R, T]
    (position 0 is never a target)."""
    return (np.asarray(labels)[:, 1:] != -100).sum(axis=1).astype(np.int64)


@dataclass
class ORPOStats:
    """Sums over the pairs of one step (or evaluation), turned into means by ``metrics``."""

    beta: float
    pairs: int = 0
    chosen_tokens: int = 0
    nll_sum: float = 0.0
    or_sum: float = 0.0
    log_sigmoid_sum: float = 0.0
    log_odds_sum: float = 0.0
    chosen: float = 0.0
    rejected: float = 0.0
    correct: int = 0

    def add(
        self,
        chosen_sum_logps: Any,
        chosen_tokens: Any,
        rejected_mean_logps: Any,
        or_losses: Any,
        log_odds: Any,
    ) -> None:
        """One micro-batch: the chosen answers' summed log-probs [B] and token counts [B], the
        rejected mean log-probs [B], the odds-ratio losses (beta * L_OR) [B] and log_odds [B]."""

        def f64(a: Any) -> np.ndarray:
            return np.asarray(a, dtype=np.float64).reshape(-1)

        chosen_sum, counts = f64(chosen_sum_logps), f64(chosen_tokens)
        chosen_mean = chosen_sum / np.maximum(counts, 1)
        rejected_mean, losses, odds = f64(rejected_mean_logps), f64(or_losses), f64(log_odds)
        self.pairs += int(losses.size)
        self.chosen_tokens += int(counts.sum())
        self.nll_sum += float(-chosen_sum.sum())
        self.or_sum += float(losses.sum())
        self.log_sigmoid_sum += float(-np.logaddexp(0.0, -odds).sum())
        self.log_odds_sum += float(odds.sum())
        self.chosen += float(self.beta * chosen_mean.sum())
        self.rejected += float(self.beta * rejected_mean.sum())
        self.correct += int((chosen_mean > rejected_mean).sum())

    def metrics(self) -> dict[str, float]:
        """{"loss": NLL per chosen token + mean beta * L_OR, plus ``STEP_FIELDS``}; NaN when empty."""
        if self.pairs == 0 or self.chosen_tokens == 0:
            nan = float("nan")
            return {"loss": nan, **dict.fromkeys(STEP_FIELDS, nan)}
        n = self.pairs
        nll = self.nll_sum / self.chosen_tokens
        return {
            "loss": nll + self.or_sum / n,
            "nll_loss": nll,
            "log_odds_ratio": self.log_sigmoid_sum / n,
            "log_odds_chosen": self.log_odds_sum / n,
            "rewards_chosen": self.chosen / n,
            "rewards_rejected": self.rejected / n,
            "reward_margin": (self.chosen - self.rejected) / n,
            "reward_accuracy": self.correct / n,
        }

    def eval_metrics(self) -> dict[str, float]:
        """{"val_loss": the ORPO loss, plus ``EVAL_FIELDS``}."""
        m = self.metrics()
        return {"val_loss": m["loss"], **{k: m[k] for k in EVAL_FIELDS}}
