"""Group Relative Policy Optimization (GRPO): the framework-neutral parts.

GRPO (Shao et al. 2024, "DeepSeekMath", section 4.1, eqs. 3-4; as TRL's ``GRPOTrainer`` with one
iteration per batch): for every prompt the policy samples a group of G completions o_1..o_G; each
gets a reward r_i (the weighted sum of the run's reward functions, ``backends.training.rewards``);
the advantage of every token of o_i is the group-normalised reward

    A_i = (r_i - mean(r_1..r_G)) / (std(r_1..r_G) + 1e-4)        (std with Bessel's correction)

and the per-token objective, with ratio = pi(o_t) / pi_old(o_t) and the per-token KL estimate to
the reference (Schulman's k3, always >= 0)

    KL_t   = exp(ref_t - logp_t) - (ref_t - logp_t) - 1
    loss_t = -min(ratio * A, clip(ratio, 1 - eps, 1 + eps) * A) + beta * KL_t

is averaged over each completion's tokens, then over the completions of the step (``loss_type:
grpo``, the paper's 1/G sum_i 1/|o_i| sum_t), or over all completion tokens of the step at once
(``dapo``, TRL's default). pi_old is the policy that sampled the completions: with one
optimisation pass per batch (as here) ratio = 1 in value, so clipping never bites and the
clip fraction is 0; the gradient is that of the advantage-weighted log-likelihood. The reference
is the base model with the adapter disabled (no second copy of the weights).

Reported with every step: ``reward_mean`` and ``reward_std`` (total reward over all completions),
``reward_mean/<name>`` and ``reward_std/<name>`` per reward function, ``completion_length`` (mean
tokens), ``kl`` (mean KL_t over completion tokens) and ``clip_fraction`` (share of completion
tokens whose ratio was clipped against the sign of the advantage).
"""

from __future__ import annotations

from typing import Any, TypeVar

import numpy as np

T = TypeVar("T")
STD_EPS = 1e-4  # TRL's and the paper's small constant in the advantage's denominator


def group_advantages(rewards: Any, group_size: int) -> np.ndarray:
    """Group-normalised advantages [N] of the total rewards [N] (N = prompts * group_size,
    completions of a prompt contiguous): (r - group mean) / (group std + 1e-4), std with Bessel's
    correction; a group of identical rewards gets advantage 0. Raises ValueError when N is not a
    multiple of ``group_size``."""
    r = np.asarray(rewards, dtype=np.float64).reshape(-1)
    if group_size < 1 or r.size % group_size:
        raise ValueError(f"{r.size} rewards do not split into groups of {group_size}")
    groups = r.reshape(-1, group_size)
    mean = groups.mean(axis=1, keepdims=True)
    std = groups.std(axis=1, ddof=1, keepdims=True) if group_size > 1 else np.zeros_like(mean)
    return ((groups - mean) / (std + STD_EPS)).reshape(-1)


def per_token_loss(
    logps: T,
    old_logps: T,
    ref_logps: T | None,
    advantages: T,
    *,
    beta: float,
    epsilon: float,
    xp: Any,
    kl_bias_correction: bool = False,
) -> tuple[T, T | None, T]:
    """The per-token GRPO loss (formula in the module docstring) over completion tokens, any shape
    (e.g. flat [N_tokens]); ``advantages`` holds each token's completion advantage (same shape).
    ``ref_logps`` None (or ``beta`` 0) leaves the KL term out. ``xp``: the array namespace (exp,
    clip, minimum). ``kl_bias_correction`` multiplies KL_t by the ratio (value 1, but its gradient
    makes the KL gradient the unbiased reverse-KL one: DeepSeek-V3.2, TRL's ``use_bias_correction_kl``,
    its default since TRL 1.x; off here, as in the GRPO paper). Returns (loss_t, KL_t or None,
    clipped_t as 0/1 floats)."""
    ratio = xp.exp(logps - old_logps)
    clipped_ratio = xp.clip(ratio, 1.0 - epsilon, 1.0 + epsilon)
    loss = -xp.minimum(ratio * advantages, clipped_ratio * advantages)
    kl = None
    if ref_logps is not None and beta:
        delta = ref_logps - logps
        kl = xp.exp(delta) - delta - 1.0
        loss = loss + beta * (kl * ratio if kl_bias_correction else kl)
    low = (ratio < 1.0 - epsilon) * (advantages < 0)
    high = (ratio > 1.0 + epsilon) * (advantages > 0)
    return loss, kl, (low + high) * 1.0


def token_weights(
    token_rows: np.ndarray, lengths: np.ndarray, *, loss_type: str, step_completions: int, step_tokens: int
) -> np.ndarray:
    """Weights [N_tokens] whose dot product with the per-token losses of a micro-batch gives its
    share of the step's loss: ``grpo`` 1 / (|o_i| * completions in the step), ``dapo`` 1 / (completion
    tokens in the step). ``token_rows``: each token's completion index; ``lengths``: tokens per
    completion of the micro-batch."""
    token_rows = np.asarray(token_rows)
    if loss_type == "dapo":
        return np.full(token_rows.shape, 1.0 / max(step_tokens, 1))
    if loss_type != "grpo":
        raise ValueError(f"unknown GRPO loss_type {loss_type!r}")
    lengths = np.maximum(np.asarray(lengths, dtype=np.float64), 1.0)
    return 1.0 / (lengths[token_rows] * max(step_completions, 1))


class GRPOStats:
    """Sums over the completions of one step, turned into the reported means by ``metrics``."""

    def __init__(self, reward_names: list[str]) -> None:
        self.names = reward_names
        self.rewards: list[np.ndarray] = []  # [n, F] per micro-batch
        self.lengths: list[np.ndarray] = []
        self.loss = 0.0
        self.kl_sum = 0.0
        self.clipped = 0.0
        self.tokens = 0

    def add(
        self, rewards: np.ndarray, lengths: np.ndarray, loss: float, kl_sum: float, clipped: float
    ) -> None:
        """One micro-batch: rewards [n, F] per function (unweighted), completion lengths [n], its
        share of the step loss, the summed KL_t and clipped-token count over its completion tokens."""
        self.rewards.append(np.asarray(rewards, dtype=np.float64).reshape(-1, len(self.names)))
        self.lengths.append(np.asarray(lengths, dtype=np.float64).reshape(-1))
        self.loss += float(loss)
        self.kl_sum += float(kl_sum)
        self.clipped += float(clipped)
        self.tokens += int(np.sum(lengths))

    def metrics(self, weights: list[float]) -> dict[str, float]:
        """{"loss", "reward_mean", "reward_std", "reward_mean/<f>", "reward_std/<f>",
        "completion_length", "kl", "clip_fraction"}; ``weights`` of the reward functions."""
        per_function = np.concatenate(self.rewards, axis=0)
        total = per_function @ np.asarray(weights, dtype=np.float64)
        out = {
            "loss": self.loss,
            "reward_mean": float(total.mean()),
            "reward_std": float(total.std(ddof=1)) if total.size > 1 else 0.0,
            "completion_length": float(np.concatenate(self.lengths).mean()),
            "kl": self.kl_sum / max(self.tokens, 1),
            "clip_fraction": self.clipped / max(self.tokens, 1),
        }
        for i, name in enumerate(self.names):
            column = per_function[:, i]
            out[f"reward_mean/{name}"] = float(column.mean())
            out[f"reward_std/{name}"] = float(column.std(ddof=1)) if column.size > 1 else 0.0
        return out
