"""The drift score of the forgetting check and its verdict in words (no ML library imported).

``score = kl_mean + max(0, ln(ppl_tuned / ppl_base))``, in nats per token: the mean per-token
KL divergence KL(base || tuned) on the base model's own greedy answers to the probes (how far the
tuned model's next-token distribution moved where the base model was confident of its answer),
plus how much the cross-entropy of the general text rose (``ln`` of the perplexity ratio is the
difference of the mean negative log-likelihoods, Jelinek et al. 1977). Both parts are 0 for an
adapter that changes nothing. ``answers_changed`` is reported beside it but left out of the score:
one changed token changes a greedy answer, so it saturates early; it shows the user *which*
answers moved.

The verdict thresholds were calibrated on SmolLM2-135M-Instruct runs measured by
``benchmarks/forgetting.py`` (figures in the README, "Forgetting check"): gentle runs (learning
rate 2e-4, one epoch) scored below ``LITTLE_BELOW``, the aggressive ones (2e-3 and above for many
epochs) above ``LARGE_FROM``.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

LITTLE_BELOW = 0.05  # nats/token: below this the verdict is "little"
LARGE_FROM = 0.25  # nats/token: from this on the verdict is "large"
VERDICTS = ("little", "noticeable", "large")


def drift_score(kl_mean: float, ppl_base: float, ppl_tuned: float) -> float:
    """The drift score (see the module docstring), nats per token, >= 0. Raises ValueError for a
    non-finite or non-positive perplexity (a silent NaN would read as "little")."""
    for name, value in (("kl_mean", kl_mean), ("ppl_base", ppl_base), ("ppl_tuned", ppl_tuned)):
        if not math.isfinite(value):
            raise ValueError(f"{name} is not finite ({value})")
    if ppl_base <= 0 or ppl_tuned <= 0:
        raise ValueError("perplexities must be positive")
    return max(0.0, kl_mean) + max(0.0, math.log(ppl_tuned / ppl_base))


def verdict(score: float) -> str:
    """``little`` below ``LITTLE_BELOW``, ``large`` from ``LARGE_FROM``, else ``noticeable``."""
    if score < LITTLE_BELOW:
        return "little"
    if score < LARGE_FROM:
        return "noticeable"
    return "large"


def advice(verdict_text: str, config: Any | None = None) -> list[str]:
    """What to try when the drift is large (empty otherwise): mix in general examples
    (``data.replay``), a lower learning rate, fewer epochs. ``config``: the run's RunConfig, to
    quote its values."""
    if verdict_text != "large":
        return []
    lr = epochs = replay = None
    if config is not None:
        lr, epochs = config.training.learning_rate, config.training.epochs
        replay = config.data.replay
    tips = []
    if not replay:
        tips.append("mix general examples into training: data.replay: 0.1")
    else:
        tips.append(f"more general examples: data.replay: {min(0.5, replay * 2):g}")
    tips.append(
        f"a lower learning rate: training.learning_rate: {lr / 4:.1e}" if lr else "a lower learning rate"
    )
    if epochs and epochs > 1:
        tips.append(f"fewer epochs: training.epochs: {max(1, int(epochs // 2))}")
    else:
        tips.append("fewer steps or epochs")
    return tips


@dataclass
class ForgettingResult:
    """The figures of one check (the ``forgetting`` event's fields and ``forgetting.json``).

    ``kl_mean``: nats per answer token; ``ppl_base``/``ppl_tuned``: perplexity of the general text;
    ``answers_changed``: probes whose tuned greedy answer differs from the base one, of ``probes``;
    ``tokens``: answer tokens the KL is averaged over; ``size``: ``quick`` or ``full``;
    ``elapsed``: seconds; ``step``: the training step (None after training); ``answers``: per probe
    {id, category, prompt, base, tuned} (texts).
    """

    kl_mean: float
    ppl_base: float
    ppl_tuned: float
    answers_changed: int
    probes: int
    tokens: int
    size: str
    elapsed: float
    step: int | None = None
    answers: list[dict[str, Any]] = field(default_factory=list)

    @property
    def score(self) -> float:
        return drift_score(self.kl_mean, self.ppl_base, self.ppl_tuned)

    @property
    def verdict(self) -> str:
        return verdict(self.score)

    def fields(self, *, with_answers: bool = True) -> dict[str, Any]:
        """Every figure plus ``score`` and ``verdict``; ``answers`` only when asked."""
        out = asdict(self)
        if not with_answers:
            out.pop("answers")
        out["score"] = self.score
        out["verdict"] = self.verdict
        return out
