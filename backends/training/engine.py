"""The contract between the shared training loop and a framework backend.

The loop (``backends.training.loop``) owns everything both frameworks share: step counting and
epochs, the learning-rate schedule, data order and resume position, events, ETA, checkpoint
rotation, stop signals, NaN detection, eval cadence and the run folder. An ``Engine`` holds only
what differs between frameworks: loading the model with LoRA, one optimizer step, eval loss,
saving/restoring framework state, the final adapter, device memory.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

from backends.config import RunConfig
from backends.data.types import Batch


class Engine(Protocol):
    """A framework backend (PyTorch: ``backends.torch_backend``; MLX: ``backends.mlx_backend``)."""

    name: str  # "torch" | "mlx"
    device: str  # e.g. "cpu", "cuda", "mps", "gpu"
    precision: str  # the precision actually used: "fp32" | "bf16" | "fp16"

    def setup(self, config: RunConfig, model_dir: Path) -> dict[str, Any]:
        """Load the base model from ``model_dir`` (safetensors only), add LoRA as configured,
        build the optimizer. Returns {"params_total": int, "params_trainable": int}.
        Raises UserInputError when a target module matches nothing (listing the model's linear
        layer names)."""
        ...

    def train_step(self, micro_batches: list[Batch], learning_rate: float) -> dict[str, float]:
        """One optimizer step over the micro-batches (gradient accumulation), with the loss
        normalised by the total number of label tokens across all of them; clip gradients to
        ``max_grad_norm``; returns {"loss": mean loss per label token, "grad_norm": norm before
        clipping}. Must not update weights when the loss or gradients are not finite (the loop
        then fails the run with kind "nan"). Raises MemoryError-like backend OOM as
        ``backends.errors.RunFailed(kind="oom")``."""
        ...

    def eval_loss(self, batches: list[Batch]) -> float:
        """Mean loss per label token over the batches, no gradient."""
        ...

    def save_state(self, folder: Path) -> None:
        """Write adapter weights, optimizer state and framework RNG state into ``folder``."""
        ...

    def load_state(self, folder: Path) -> None:
        """Restore what ``save_state`` wrote (after ``setup``)."""
        ...

    def save_adapter(self, folder: Path) -> None:
        """Write the final adapter in the backend's native format (with ``adapter_config.json``)."""
        ...

    def memory(self) -> dict[str, int | None]:
        """{"device_allocated": bytes or None, "device_peak": bytes or None}."""
        ...
