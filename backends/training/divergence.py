"""Divergence: a run whose loss says the model was destroyed ends as ``run_failed`` kind
``diverged`` instead of finishing with a broken adapter.

The reference level is the uniform guess, ``ln(V)`` nats per token for a vocabulary of V tokens:
the cross-entropy of a model that gives every token the same probability (10.80 for SmolLM2's
49,152 tokens). A pretrained model starts far below it (about 1-3 on ordinary text). Three rules,
each over ``PATIENCE`` consecutive steps so a single bad batch never ends a run:

1. Collapse to the uniform guess: the loss had been clearly below ``ln(V)`` (by ``CLEAR_MARGIN``
   = max(1 nat, 15 % of ln V)), then every step of the window is within ``NEAR_FRACTION`` (5 %)
   of ln V or above it. A model back at the level of random guessing after having learned has
   had its weights wrecked (a learning rate far too high does exactly this).
2. Blow-up: every step of the window is above max(2 x start, start + 3 nats), where ``start``
   is the mean loss of the run's first ``START_STEPS`` steps. Ordinary training noise (a harder
   batch) stays well within 2x; staying above it for ``PATIENCE`` steps is not noise.
3. Dead at the uniform guess: the loss equals ln V within ``DEAD_TOLERANCE`` and the gradient norm
   is 0 for the whole window: the outputs have saturated to a constant and nothing can be
   learned any more. This catches rule 1's failure in a model that started near ln V (a random
   model) and so was never clearly below it.

``PATIENCE`` = 10 steps: long enough to ride out a few outliers, short enough to stop a doomed
run early. The monitor's state is saved in every checkpoint (``LoopState.divergence``) so a
resumed run judges the same history. ``suspicious`` is true while a window is filling: the loop
then keeps the checkpoint from before it (no rotation), and on divergence removes the
checkpoints taken inside the window, so the newest checkpoint is the last good one.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

PATIENCE = 10
START_STEPS = 3
NEAR_FRACTION = 0.05
DEAD_TOLERANCE = 1e-3
BLOWUP_FACTOR = 2.0
BLOWUP_NATS = 3.0

HINT = (
    "lower training.learning_rate (e.g. by 10x) and start a new run; keep training.max_grad_norm at 1.0 "
    "and some warmup (training.warmup_ratio)"
)


def clear_margin(uniform: float) -> float:
    """How far below ln(V) the loss must have been to count as 'clearly below' (nats)."""
    return max(1.0, 0.15 * uniform)


@dataclass
class DivergenceMonitor:
    """Watches step losses (see module docstring). ``vocab_size``: the model's vocabulary size
    (None or < 2 disables rules 1 and 3). ``observe`` returns a message when the run diverged."""

    vocab_size: int | None = None
    start_losses: list[float] = field(default_factory=list)
    lowest: float = math.inf
    window: list[list[float]] = field(default_factory=list)  # [loss, grad_norm] of recent steps
    window_start_step: int | None = None

    @property
    def uniform(self) -> float | None:
        """ln(V) in nats, or None without a vocabulary size."""
        return math.log(self.vocab_size) if self.vocab_size and self.vocab_size > 1 else None

    @property
    def start(self) -> float | None:
        return sum(self.start_losses) / len(self.start_losses) if self.start_losses else None

    @property
    def suspicious(self) -> bool:
        """True while the recent steps match one of the rules but the window is not full yet."""
        return self.window_start_step is not None

    def _rules(self, loss: float, grad_norm: float) -> set[str]:
        matched = set()
        u = self.uniform
        if u is not None:
            if self.lowest < u - clear_margin(u) and loss >= u * (1 - NEAR_FRACTION):
                matched.add("uniform")
            if abs(loss - u) <= DEAD_TOLERANCE and grad_norm == 0.0:
                matched.add("dead")
        start = self.start
        if start is not None and len(self.start_losses) >= START_STEPS:
            if loss > max(BLOWUP_FACTOR * start, start + BLOWUP_NATS):
                matched.add("blowup")
        return matched

    def observe(self, step: int, loss: float, grad_norm: float) -> str | None:
        """Record step ``step``'s loss and gradient norm; a message (what happened, in words) once
        a rule held for ``PATIENCE`` consecutive steps, else None."""
        if not (math.isfinite(loss) and math.isfinite(grad_norm)):
            return None  # NaN/inf is the loop's own failure (kind nan)
        matched = self._rules(loss, grad_norm)
        if len(self.start_losses) < START_STEPS:
            self.start_losses.append(loss)
        self.lowest = min(self.lowest, loss)
        if not matched:
            self.window = []
            self.window_start_step = None
            return None
        if self.window_start_step is None:
            self.window_start_step = step
        self.window.append([loss, grad_norm])
        if len(self.window) < PATIENCE:
            return None
        recent = [w[0] for w in self.window[-PATIENCE:]]
        u = self.uniform
        if "blowup" in matched and self.start is not None:
            return (
                f"the loss diverged: above {max(BLOWUP_FACTOR * self.start, self.start + BLOWUP_NATS):.2f} "
                f"(the run started at {self.start:.2f}) for {PATIENCE} steps, last {recent[-1]:.4f}"
            )
        assert u is not None
        if "uniform" in matched:
            return (
                f"the loss diverged: it had come down to {self.lowest:.4f}, then went back to the level "
                f"of random guessing, ln(vocabulary {self.vocab_size}) = {u:.4f}, for {PATIENCE} steps "
                f"(last {recent[-1]:.4f}): the model's weights were wrecked"
            )
        return (
            f"the loss diverged: stuck at ln(vocabulary {self.vocab_size}) = {u:.4f}, the level of random "
            f"guessing, with a gradient norm of 0 for {PATIENCE} steps: the model's outputs collapsed"
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready state for a checkpoint (``lowest`` inf is written as None)."""
        d = asdict(self)
        d["lowest"] = None if math.isinf(self.lowest) else self.lowest
        return d

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None, vocab_size: int | None) -> DivergenceMonitor:
        """A monitor restored from ``to_dict`` output (a fresh one for None or an older checkpoint)."""
        if not data:
            return cls(vocab_size=vocab_size)
        lowest = data.get("lowest")
        return cls(
            vocab_size=vocab_size,
            start_losses=list(data.get("start_losses") or []),
            lowest=math.inf if lowest is None else float(lowest),
            window=[list(w) for w in data.get("window") or []],
            window_start_step=data.get("window_start_step"),
        )
