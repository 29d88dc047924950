"""Learning-rate schedules with linear warmup, as pure functions of the step.

The formulas are those of transformers' ``get_linear_schedule_with_warmup``,
``get_cosine_schedule_with_warmup`` (half a cosine wave) and
``get_constant_schedule_with_warmup``, so a run here uses the same learning rates as the same
config in transformers' Trainer or TRL. Being a function of the step only, the schedule needs no
saved state: resuming at step N gives the same rates as an uninterrupted run.
"""

from __future__ import annotations

import math


def warmup_steps(total_steps: int, warmup_ratio: float) -> int:
    """Steps of linear warmup: ``ceil(warmup_ratio * total_steps)`` (transformers'
    ``TrainingArguments.get_warmup_steps``)."""
    return math.ceil(warmup_ratio * total_steps) if warmup_ratio > 0 else 0


def learning_rate(step: int, *, peak: float, total_steps: int, warmup: int, kind: str) -> float:
    """The learning rate for optimizer step ``step`` (0-based: the first update uses step 0).

    During warmup it rises linearly from 0: ``peak * step / warmup``. Afterwards, with
    ``progress = (step - warmup) / (total_steps - warmup)``: ``cosine`` gives
    ``peak * 0.5 * (1 + cos(pi * progress))``, ``linear`` gives ``peak * (1 - progress)``,
    ``constant`` gives ``peak``. Never negative. Raises ValueError for an unknown ``kind``.
    """
    if kind not in ("cosine", "linear", "constant"):
        raise ValueError(f"unknown learning-rate schedule {kind!r}")
    if step < warmup:
        return peak * step / max(1, warmup)
    if kind == "constant":
        return peak
    progress = (step - warmup) / max(1, total_steps - warmup)
    if kind == "linear":
        return peak * max(0.0, 1.0 - progress)
    return peak * max(0.0, 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress))))
