"""The one rule for which torch device a job runs on (training and chat alike)."""

from __future__ import annotations

import torch


def pick_device(device: str | None = None) -> str:
    """``device`` when given, else ``cuda`` when available, then ``mps``, else ``cpu`` (the same
    order as ``backends.hardware.choose_backend``)."""
    if device:
        return device
    if torch.cuda.is_available():
        return "cuda"
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        return "mps"
    return "cpu"
