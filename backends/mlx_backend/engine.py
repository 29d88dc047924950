"""The MLX ``Engine``: LoRA/DoRA training on mlx-lm's tuner pieces, driven by the shared loop.

What is mlx-lm's and what is ours:
- mlx-lm: model loading (``mlx_lm.utils.load_model``), LoRA/DoRA layers
  (``mlx_lm.tuner.utils.linear_to_lora_layers``), gradient checkpointing
  (``mlx_lm.tuner.trainer.grad_checkpoint``), the adapter file format.
- ours: batches come from the shared data pipeline (``backends.data``; never mlx-lm's dataset
  classes), so masking and EOS are identical to the PyTorch backend; the loss is summed over
  label tokens and divided by the label tokens of the whole accumulated step (mlx-lm's own trainer
  averages per micro-batch instead); AdamW with the same hyper-parameters as
  ``torch.optim.AdamW`` (bias correction on); clipping as ``torch.nn.utils.clip_grad_norm_``.
- the shared loop owns the schedule (it passes the learning rate of each step), events, the run
  folder, checkpoints rotation, stop/resume and NaN handling.

LoRA scale: mlx-lm's layers take ``scale`` where peft takes ``lora_alpha``; the update is
``scale * x @ A @ B`` in both with ``scale = alpha / rank`` (Hu et al. 2021; peft's ``scaling``),
see ``backends.export.lora_scale``.

Packed batches (``Batch.segment_ids``): mlx-lm's models take neither position ids nor custom
masks, so each packed row is split back into one row per segment before the forward pass. The
loss and gradients equal those of the block-diagonal packed forward (attention within a segment,
positions restarting at 0); only the speed benefit of packing is lost on MLX.

Memory: on Apple silicon the engine sets MLX's memory limit to ``MEMORY_LIMIT_FRACTION`` of the
GPU's recommended working set, and fails the run with ``RunFailed(kind="oom")`` when an allocation
fails or a step's peak memory went over that limit (the point where macOS starts to page GPU
memory and the machine freezes), so the user gets a hint instead of a frozen Mac.

DPO (``method: dpo``; mlx-lm has none): our loss on mlx-lm's pieces. The chosen and rejected rows
of a ``PreferenceBatch`` go through one forward; each row's answer log-probability is the sum over
its labelled tokens (``sequence_log_probs``); the reference is the same model with every LoRA/DoRA
layer bypassed (``adapters_bypassed``: the wrapped base layers stand in for them during the
reference forward, so no second copy of the weights exists), unless the loop precomputed it. The
loss formula is the shared ``backends.training.dpo.sigmoid_dpo_loss``. ORPO and KTO the same way
(``backends.mlx_backend.preference_methods``, formulas in ``backends.training.orpo`` and ``kto``).
GRPO is not on MLX: ``backends.mlx_backend.GRPO_ON_MLX`` says why.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import mlx.core as mx
import mlx.nn as nn
import mlx.optimizers as optim
import numpy as np
from mlx.utils import tree_flatten, tree_map
from mlx_lm.tuner.trainer import grad_checkpoint
from mlx_lm.tuner.utils import linear_to_lora_layers
from mlx_lm.utils import get_total_parameters, load_model

from backends.config import RunConfig
from backends.data.types import Batch, PreferenceBatch
from backends.errors import RunFailed, UserInputError
from backends.export import lora_scale
from backends.lora_targets import select_targets
from backends.mlx_backend.losses import (
    PAD_MULTIPLE,
    adapters_bypassed,
    batch_rows,
    loss_sum,
    sequence_log_probs,
)
from backends.mlx_backend.preference_methods import METHODS, PreferenceSteps
from backends.mlx_backend.state_files import OPTIMIZER_FILE as OPTIMIZER_FILE  # re-exported
from backends.mlx_backend.state_files import RNG_FILE as RNG_FILE  # re-exported
from backends.mlx_backend.state_files import StateFiles
from backends.training.oom import oom_hint

# Share of the recommended GPU working set MLX may use on Apple silicon (the rest stays for macOS).
MEMORY_LIMIT_FRACTION = 0.85
# mx.compile the forward/backward: on the GPU (as mlx-lm's trainer does); not on the CPU, where
# MLX builds each fused kernel with the C++ compiler, about 15 s per new batch shape, which costs
# more than it saves on short runs. None: decide by device.
COMPILE: bool | None = None
# Group size of the base's quantisation with ``lora.quantize`` (mlx-lm's default).
QUANT_GROUP_SIZE = 64
DTYPES = {"fp32": mx.float32, "bf16": mx.bfloat16, "fp16": mx.float16}
_OOM_WORDS = (
    "out of memory",
    "outofmemory",
    "unable to allocate",
    "attempting to allocate",
    "insufficient memory",
)


def mlx_device() -> str:
    """``"gpu"`` when MLX runs on Metal or CUDA, else ``"cpu"``."""
    return "gpu" if mx.default_device() == mx.gpu else "cpu"


def recommended_working_set() -> int | None:
    """The GPU's recommended working set in bytes (Metal only; None elsewhere)."""
    try:
        if not mx.metal.is_available():
            return None
    except AttributeError:
        return None
    size = mx.device_info().get("max_recommended_working_set_size")
    return int(size) if size else None


def is_oom_error(exc: BaseException) -> bool:
    """True for MLX's allocation failures (``MemoryError`` or a RuntimeError from its allocator)."""
    if isinstance(exc, MemoryError):
        return True
    text = str(exc).lower()
    return isinstance(exc, RuntimeError) and any(w in text for w in _OOM_WORDS)


def resolve_targets(model: nn.Module, target_modules: str | list[str]) -> list[str]:
    """Full module paths (e.g. ``model.layers.0.self_attn.q_proj``) of the linear layers to adapt,
    by the rules of ``backends.lora_targets.select_targets`` (peft's). Raises UserInputError (field
    ``lora.target_modules``) when a target matches nothing, listing the model's linear layers."""
    paths = [p for p, m in model.named_modules() if isinstance(m, (nn.Linear, nn.QuantizedLinear))]
    # mlx-lm lists modules in reverse definition order; sort by path for a stable, readable order.
    return sorted(select_targets(paths, target_modules))


def _checkpoint_blocks(model: nn.Module) -> None:
    """Gradient checkpointing of every transformer block with mlx-lm's ``grad_checkpoint``.

    mlx-lm's helper patches ``__call__`` of the block's class for the whole process; each block is
    moved to a private subclass first, so other models in the process (a reference model, a later
    run in the same test process) stay untouched.
    """
    subclasses: dict[type, type] = {}
    for layer in model.layers:
        base = type(layer)
        if base not in subclasses:
            subclasses[base] = type(f"Checkpointed{base.__name__}", (base,), {})
            layer.__class__ = subclasses[base]
            grad_checkpoint(layer)
        else:
            layer.__class__ = subclasses[base]


class MLXEngine(StateFiles):
    """The MLX implementation of ``backends.training.engine.Engine`` (see that protocol)."""

    name = "mlx"

    def __init__(self) -> None:
        self.device = mlx_device()
        self.precision = "fp32"
        self.model: nn.Module | None = None
        self.optimizer: optim.AdamW | None = None
        self.config: RunConfig | None = None
        self.lora_parameters: dict[str, Any] = {}
        self.memory_limit: int | None = None
        self.num_layers = 0
        self.compiled = False

    # --- setup -------------------------------------------------------------------------------
    def _pick_precision(self, requested: str) -> tuple[str, str]:
        if requested != "auto":
            return requested, f"precision {requested} (as configured)"
        if self.device == "gpu":
            return "bf16", "precision auto: bf16 (MLX on the GPU)"
        return "fp32", "precision auto: fp32 (MLX on the CPU has no fast bf16)"

    def setup(self, config: RunConfig, model_dir: Path) -> dict[str, Any]:
        """Load the model with mlx-lm, add LoRA/DoRA, build AdamW; see the Engine protocol.

        Raises UserInputError when MLX cannot load the model (unsupported architecture, no
        safetensors) or a target module matches nothing.
        """
        self.config = config
        t, lora = config.training, config.lora
        try:
            model, _ = load_model(Path(model_dir), trust_remote_code=False)
        except (FileNotFoundError, ValueError, KeyError) as exc:
            raise UserInputError(
                f"MLX cannot load this model: {exc}",
                file=model_dir,
                field="model",
                hint="use backend: torch for this model",
            ) from None
        params_base = get_total_parameters(model)
        self.precision, precision_note = self._pick_precision(t.precision)
        notes = [f"device {self.device}", precision_note]
        model.set_dtype(DTYPES[self.precision])
        if lora.quantize:
            # As mlx-lm's QLoRA: the frozen base is quantised (affine, groups of QUANT_GROUP_SIZE;
            # every layer whose input width the group size divides), the LoRA layers wrap it.
            nn.quantize(model, group_size=QUANT_GROUP_SIZE, bits=lora.quantize)
            notes.append(
                f"base quantised to {lora.quantize} bits (mlx affine, group size {QUANT_GROUP_SIZE})"
            )
        model.freeze()
        targets = resolve_targets(model, lora.target_modules)
        self.num_layers = len(model.layers)
        self.lora_parameters = {
            "rank": lora.rank,
            "scale": lora_scale(lora.alpha, lora.rank),
            "dropout": lora.dropout,
            "keys": targets,
        }
        # LoRA A is drawn from MLX's global generator: seed it right before, so the initial adapter
        # depends only on the seed (and the model).
        mx.random.seed(t.seed)
        linear_to_lora_layers(model, self.num_layers, self.lora_parameters, use_dora=lora.use_dora)
        if t.gradient_checkpointing:
            _checkpoint_blocks(model)
            notes.append("gradient checkpointing on")
        model.train()
        self.model = model
        # torch.optim.AdamW's defaults and update rule (bias-corrected, decoupled weight decay).
        if t.optimizer != "adamw":
            raise UserInputError(
                f"training.optimizer {t.optimizer} is bitsandbytes' (PyTorch on NVIDIA GPUs); MLX has none",
                field="training.optimizer",
                hint="set training.optimizer: adamw",
            )
        self.optimizer = optim.AdamW(
            learning_rate=t.learning_rate,
            betas=[0.9, 0.999],
            eps=1e-8,
            weight_decay=t.weight_decay,
            bias_correction=True,
        )
        self.optimizer.init(model.trainable_parameters())
        value_and_grad = nn.value_and_grad(model, loss_sum)

        def micro_step(inputs: mx.array, targets: mx.array) -> tuple[mx.array, dict]:
            return value_and_grad(model, inputs, targets)

        def eval_step(inputs: mx.array, targets: mx.array) -> mx.array:
            return loss_sum(model, inputs, targets)

        self.compiled = self.device == "gpu" if COMPILE is None else COMPILE
        if self.compiled:
            state = [model.state, mx.random.state]
            micro_step = mx.compile(micro_step, inputs=state, outputs=state)
            eval_step = mx.compile(eval_step, inputs=state)
        self._micro_step, self._eval_step = micro_step, eval_step
        self._methods = PreferenceSteps(model, config, self._inputs, self._reference, self.compiled)
        notes.insert(
            1,
            f"{'DoRA' if lora.use_dora else 'LoRA'} rank {lora.rank} alpha {lora.alpha:g} (mlx-lm scale "
            f"{self.lora_parameters['scale']:g}) on {len(targets)} linear layers",
        )
        notes.append(self._set_memory_limit())
        trainable = sum(v.size for _, v in tree_flatten(model.trainable_parameters()))
        return {
            "params_total": int(params_base + trainable),
            "params_trainable": int(trainable),
            "notes": notes,
        }

    def _set_memory_limit(self) -> str:
        working_set = recommended_working_set()
        if working_set is None:
            self.memory_limit = None
            return "MLX memory limit: none (no Metal GPU)"
        self.memory_limit = int(MEMORY_LIMIT_FRACTION * working_set)
        mx.set_memory_limit(self.memory_limit)
        # As mlx-lm's trainer: keep the model's buffers wired up to the recommended working set.
        mx.set_wired_limit(working_set)
        return f"MLX memory limit: {self.memory_limit / 2**30:.1f} GiB ({MEMORY_LIMIT_FRACTION}x the GPU working set)"

    # --- steps -------------------------------------------------------------------------------
    def _oom(self, detail: str) -> RunFailed:
        return RunFailed("oom", f"out of memory on MLX ({self.device}): {detail}", oom_hint(self.config))

    def _check_peak(self) -> None:
        if self.memory_limit is not None and mx.get_peak_memory() > self.memory_limit:
            raise self._oom(
                f"the step needed {mx.get_peak_memory() / 2**30:.1f} GiB, over the limit of "
                f"{self.memory_limit / 2**30:.1f} GiB"
            )

    def train_step(self, micro_batches: list[Batch], learning_rate: float) -> dict[str, float]:
        """One AdamW step over ``micro_batches``; see the Engine protocol.

        The loss is sum(token CE) / sum(label tokens) over all micro-batches; gradients likewise.
        Raises RunFailed("oom") on MLX allocation failures or when the step went over the memory
        limit, RunFailed("data") when the micro-batches hold no label token.

        DPO, ORPO, KTO (``preference_methods.METHODS``): the method's loss as its module in
        ``backends.training`` defines it; the result adds the method's ``STEP_FIELDS``.
        """
        assert self.model is not None and self.optimizer is not None, "setup() first"
        n_tokens = sum(b.num_label_tokens for b in micro_batches)
        if n_tokens == 0:
            rows = sorted({r for b in micro_batches for r in b.rows})
            raise RunFailed(
                "data", f"a training step has no label tokens (rows {rows[:10]})", "check the data"
            )
        try:
            loss_value, grads, extra = self.loss_and_gradients(micro_batches)
            norm = mx.sqrt(sum(mx.sum(mx.square(g.astype(mx.float32))) for _, g in tree_flatten(grads)))
            norm_value = norm.item()
            if not (math.isfinite(loss_value) and math.isfinite(norm_value)):
                return {"loss": loss_value, "grad_norm": norm_value}
            max_norm = self.config.training.max_grad_norm
            if max_norm > 0:
                # torch.nn.utils.clip_grad_norm_: scale by max_norm / (norm + 1e-6) when above max_norm.
                coef = min(max_norm / (norm_value + 1e-6), 1.0)
                if coef < 1.0:
                    grads = tree_map(lambda g: g * coef, grads)
            self.optimizer.learning_rate = learning_rate
            self.optimizer.update(self.model, grads)
            mx.eval(self.model.parameters(), self.optimizer.state)
        except (RuntimeError, MemoryError) as exc:
            if is_oom_error(exc):
                raise self._oom(str(exc)) from exc
            raise
        self._check_peak()
        return {"loss": loss_value, "grad_norm": norm_value, **extra}

    def _inputs(self, batch: Batch) -> tuple[mx.array, mx.array]:
        ids, labels = batch_rows(batch, PAD_MULTIPLE if self.compiled else 1)
        return mx.array(ids[:, :-1]), mx.array(labels[:, 1:])

    def loss_and_gradients(self, micro_batches: list[Batch]) -> tuple[float, dict, dict[str, float]]:
        """The step's mean loss, its gradients (a tree like the trainable parameters, before
        clipping) and the extra metrics (DPO, ORPO, KTO: the method's ``STEP_FIELDS``, from
        ``preference_methods.PreferenceSteps``; SFT: none). SFT: the summed token cross-entropy /
        the label tokens of all micro-batches."""
        assert self.model is not None and self.config is not None, "setup() first"
        if self.config.method in METHODS:
            return self._methods.loss_and_gradients(micro_batches)
        grads = None
        total = mx.array(0.0)
        for batch in micro_batches:
            loss, g = self._micro_step(*self._inputs(batch))
            total = total + loss
            grads = g if grads is None else tree_map(mx.add, grads, g)
            mx.eval(total, grads)
        n_tokens = sum(b.num_label_tokens for b in micro_batches)
        return (total / n_tokens).item(), tree_map(lambda g: g / n_tokens, grads), {}

    def reference_log_probs(self, batch: PreferenceBatch) -> np.ndarray:
        """The reference model's summed answer log-probability of each row (float64 [2B]): this
        model with its adapter layers bypassed (``adapters_bypassed``), no gradient."""
        assert self.model is not None, "setup() first"
        inputs, targets = self._inputs(batch)
        try:
            with adapters_bypassed(self.model):
                logps = sequence_log_probs(self.model, inputs, targets)
                mx.eval(logps)
        except (RuntimeError, MemoryError) as exc:
            if is_oom_error(exc):
                raise self._oom(str(exc)) from exc
            raise
        return np.array(logps).astype(np.float64)

    def _reference(self, batch: PreferenceBatch) -> np.ndarray:
        if batch.reference_log_probs is not None:
            return batch.reference_log_probs
        return self.reference_log_probs(batch)

    def eval_loss(self, batches: list[Batch]) -> float:
        """Mean token cross-entropy over ``batches`` without dropout or gradients; NaN when they hold
        no label token (as the PyTorch engine). DPO, ORPO, KTO: the method's loss."""
        return self.eval_metrics(batches)["val_loss"]

    def eval_metrics(self, batches: list[Batch]) -> dict[str, float]:
        """{"val_loss": see ``eval_loss``}; DPO, ORPO and KTO add their ``EVAL_FIELDS``."""
        assert self.model is not None and self.config is not None, "setup() first"
        preference = self.config.method in METHODS
        n_tokens = sum(b.num_label_tokens for b in batches)
        if n_tokens == 0 and not preference:
            return {"val_loss": float("nan")}
        total = 0.0
        self.model.eval()
        try:
            if preference:
                return self._methods.eval_metrics(batches)
            for batch in batches:
                total += self._eval_step(*self._inputs(batch)).item()
        except (RuntimeError, MemoryError) as exc:
            if is_oom_error(exc):
                raise self._oom(str(exc)) from exc
            raise
        finally:
            self.model.train()
        return {"val_loss": total / n_tokens}

    def reset_peak_memory(self) -> None:
        """Start a new peak window (``mx.reset_peak_memory``): the loop calls it once the model is
        loaded, so ``memory_peak`` is the training phase's peak."""
        mx.reset_peak_memory()

    def memory(self) -> dict[str, int | None]:
        """MLX's active and peak memory in bytes (unified memory on Apple silicon)."""
        return {"device_allocated": int(mx.get_active_memory()), "device_peak": int(mx.get_peak_memory())}
