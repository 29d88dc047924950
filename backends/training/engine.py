"""The contract between the shared training loop and a framework backend.

The loop (``backends.training.loop``) owns everything both frameworks share: step counting and
epochs, the learning-rate schedule, data order and resume position, Python/NumPy RNG state,
events, ETA, checkpoint rotation, stop signals, NaN detection, eval cadence, the run folder, and
the framework-neutral files next to the adapter (``chat_template.jinja``, ``tunedesk.json``). An
``Engine`` holds only what differs between frameworks: loading the model with LoRA, one optimizer
step, eval loss, saving/restoring framework state (weights, optimizer, framework RNG), the final
adapter's native files, device memory.

How a backend plugs in: its package (``backends.torch_backend``, ``backends.mlx_backend``) exposes

    def create_engine(config: RunConfig) -> Engine

which picks the device (without loading anything heavy) and returns an engine ready for
``setup``. ``backends.jobs.make_engine(config)`` imports the package lazily and calls it.

The loop calls, in order: ``setup`` once; then ``load_state`` once when resuming; then
``train_step`` per optimizer step, ``eval_loss`` at the eval cadence, ``save_state`` into a
temporary checkpoint folder (the loop adds its own ``trainer_state.json`` and the ``COMPLETE``
marker and renames it), ``memory`` per step; finally ``save_adapter`` into a temporary adapter
folder. Engines must not install signal handlers, print to stdout, or hold global state (the loop
must stay launchable once per process by ``accelerate launch`` and testable in-process).

Changes to this protocol (compatible additions only):
- ``setup`` may return an optional ``"notes"`` list of strings (e.g. which precision ``auto``
  picked and why); the loop logs them.
- ``create_engine(config)`` module-level factory, documented above.
- DPO (``config.method == "dpo"``, math in ``backends.training.dpo``): the micro-batches are
  ``PreferenceBatch`` (2B rows, chosen first). ``train_step`` then minimises the sigmoid DPO loss
  summed over pairs and divided by the pairs of the whole step, against the reference log-probs
  on the batch (``PreferenceBatch.reference_log_probs``) or, when None, computed with the adapter
  disabled; it returns the mean loss per pair and also ``dpo.STEP_FIELDS`` (rewards_chosen,
  rewards_rejected, reward_margin, reward_accuracy). ``eval_loss`` is the mean DPO loss per pair.
- ``reference_log_probs`` and ``eval_metrics`` (declared below) for DPO's reference and its
  evaluation fields.
- optional ``forgetting_check(prompts, text_ids, **options) -> ForgettingResult``: the forgetting
  check on the model being trained (``backends.forgetting``); the loop's forgetting hook calls it at
  eval steps and after the last step when the config asks. Engines without it skip the check.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

import numpy as np

from backends.config import RunConfig
from backends.data.types import Batch, PreferenceBatch


class Engine(Protocol):
    """A framework backend (PyTorch: ``backends.torch_backend``; MLX: ``backends.mlx_backend``)."""

    name: str  # "torch" | "mlx"
    device: str  # e.g. "cpu", "cuda", "mps", "gpu"
    precision: str  # the precision actually used: "fp32" | "bf16" | "fp16"

    def setup(self, config: RunConfig, model_dir: Path) -> dict[str, Any]:
        """Load the base model from ``model_dir`` (safetensors only), add LoRA as configured,
        build the optimizer. Returns {"params_total": int, "params_trainable": int} and optionally
        "notes": list[str] (logged by the loop). LoRA initial weights must depend only on
        ``config.training.seed``.
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

    def eval_metrics(self, batches: list[Batch]) -> dict[str, float]:
        """{"val_loss": what ``eval_loss`` returns, plus, for DPO, ``dpo.EVAL_FIELDS``
        (rewards and reward accuracy/margin means)}; the loop's evaluation calls this."""
        ...

    def reference_log_probs(self, batch: PreferenceBatch) -> np.ndarray:
        """DPO: the base model's (adapter disabled) log-probability of each row's answer, summed
        over its tokens: float64 [2B], chosen rows first. The loop precomputes it once per split
        (``dpo.ReferenceCache``)."""
        ...

    def save_state(self, folder: Path) -> None:
        """Write adapter weights, optimizer state and framework RNG state into ``folder``."""
        ...

    def load_state(self, folder: Path) -> None:
        """Restore what ``save_state`` wrote (after ``setup``)."""
        ...

    def save_adapter(self, folder: Path) -> None:
        """Write the final adapter in the backend's native format (with ``adapter_config.json``).
        The loop adds ``chat_template.jinja`` and ``tunedesk.json`` to the same folder."""
        ...

    def memory(self) -> dict[str, int | None]:
        """{"device_allocated": bytes or None, "device_peak": bytes or None}."""
        ...
