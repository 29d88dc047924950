"""The PyTorch training backend (CUDA, Apple MPS or CPU): transformers + peft LoRA/DoRA.

Only what is specific to PyTorch lives here; the loop, schedule, events, checkpoints and run
folder are shared (``backends.training``). Entry point: ``create_engine(config)``.
"""

from __future__ import annotations

from backends.torch_backend.device import pick_device, resolve_precision
from backends.torch_backend.engine import TorchEngine, create_engine

__all__ = ["TorchEngine", "create_engine", "pick_device", "resolve_precision"]
