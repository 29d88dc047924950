"""benchmarks/multi_gpu.py's arithmetic on made-up step events (its ``--smoke`` mode runs the real
thing on gloo; on a GPU machine it runs on CUDA)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))

import multi_gpu  # noqa: E402


def steps(losses: list[float], tokens_per_step: int, seconds_per_step: float) -> list[dict]:
    return [
        {
            "event": "step",
            "step": i + 1,
            "loss": loss,
            "tokens": tokens_per_step * (i + 1),
            "elapsed": seconds_per_step * (i + 1),
        }
        for i, loss in enumerate(losses)
    ]


def test_tokens_per_second_skips_the_first_steps():
    events = [{"event": "log"}, *steps([1.0] * 5, 100, 0.5)]
    assert multi_gpu.tokens_per_second(events, skip=2) == pytest.approx(200.0)
    with pytest.raises(ValueError):
        multi_gpu.tokens_per_second(events, skip=4)


def test_loss_difference_and_the_report():
    a, b = steps([2.0, 1.5, 1.25], 10, 1.0), steps([2.0, 1.5 + 3e-6, 1.25], 10, 1.0)
    assert multi_gpu.loss_difference(a, b) == pytest.approx(3e-6)
    with pytest.raises(ValueError):
        multi_gpu.loss_difference(a, b[:2])
    text = multi_gpu.report({"one-global": [100.0], "two": [180.0, 190.0], "one": [95.0]}, 3e-6, 2e-8)
    assert "weak scaling (two / one, ideal 2.0): 1.95" in text
    assert "same global batch (two / one-global): 1.85" in text
    assert "3.00e-06" in text and "2.00e-08" in text
