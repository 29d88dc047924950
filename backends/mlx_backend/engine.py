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
loss formula is the shared ``backends.training.dpo.sigmoid_dpo_loss``.
"""

from __future__ import annotations

import contextlib
import functools
import json
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import mlx.core as mx
import mlx.nn as nn
import mlx.optimizers as optim
import numpy as np
from mlx.utils import tree_flatten, tree_map, tree_unflatten
from mlx_lm.tuner.trainer import grad_checkpoint
from mlx_lm.tuner.utils import linear_to_lora_layers
from mlx_lm.utils import get_total_parameters, load_model

from backends.config import RunConfig
from backends.data.types import IGNORE_INDEX, Batch, PreferenceBatch
from backends.errors import RunFailed, UserInputError
from backends.export import CONFIG_FILE, MLX_WEIGHTS, lora_scale, mlx_adapter_config
from backends.lora_targets import select_targets
from backends.training.dpo import PreferenceStats, sigmoid_dpo_loss
from backends.training.oom import oom_hint

# Share of the recommended GPU working set MLX may use on Apple silicon (the rest stays for macOS).
MEMORY_LIMIT_FRACTION = 0.85
# With compilation, sequence lengths are padded up to 1 + a multiple of this, as mlx-lm's own
# trainer does, so that the compiled step is traced for few distinct shapes.
PAD_MULTIPLE = 32
# mx.compile the forward/backward: on the GPU (as mlx-lm's trainer does); not on the CPU, where
# MLX builds each fused kernel with the C++ compiler, about 15 s per new batch shape, which costs
# more than it saves on short runs. None: decide by device.
COMPILE: bool | None = None
# Group size of the base's quantisation with ``lora.quantize`` (mlx-lm's default).
QUANT_GROUP_SIZE = 64
# Files this engine adds to a checkpoint folder (next to the adapter files).
OPTIMIZER_FILE = "mlx_optimizer.safetensors"
RNG_FILE = "mlx_rng.json"
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


def batch_rows(batch: Batch, pad_multiple: int = PAD_MULTIPLE) -> tuple[np.ndarray, np.ndarray]:
    """``(input_ids, labels)`` int32 arrays [R, T] for the MLX forward.

    Right padding is kept (padded positions have label ``IGNORE_INDEX``); a packed batch is split
    into one row per segment (R = number of segments); T is padded to ``1 + k * pad_multiple``.
    Raises ValueError when the batch is not right-padded (the data contract of ``Batch``).
    """
    ids, labels, mask = batch.input_ids, batch.labels, batch.attention_mask
    if batch.segment_ids is None:
        if np.any(np.diff(mask.astype(np.int8), axis=1) > 0):
            raise ValueError("batch is not right-padded: attention_mask has a 1 after a 0")
        rows = [(ids[i, mask[i] > 0], labels[i, mask[i] > 0]) for i in range(ids.shape[0])]
    else:
        rows = []
        for i in range(ids.shape[0]):
            seg = batch.segment_ids[i]
            for s in np.unique(seg[seg > 0]):
                pos = np.flatnonzero(seg == s)
                if pos[-1] - pos[0] + 1 != len(pos):
                    raise ValueError(f"segment {s} of packed row {i} is not contiguous")
                # Position 0 of the new row is never a target, like the first position of a segment.
                rows.append((ids[i, pos], labels[i, pos]))
    longest = max(len(r[0]) for r in rows)
    width = 1 + pad_multiple * max(1, math.ceil((longest - 1) / pad_multiple))
    out_ids = np.zeros((len(rows), width), np.int32)
    out_labels = np.full((len(rows), width), IGNORE_INDEX, np.int32)
    for i, (r_ids, r_labels) in enumerate(rows):
        out_ids[i, : len(r_ids)] = r_ids
        out_labels[i, : len(r_labels)] = r_labels
    return out_ids, out_labels


def loss_sum(model: nn.Module, inputs: mx.array, targets: mx.array) -> mx.array:
    """Summed token cross-entropy (fp32) of ``model(inputs)`` against ``targets``.

    ``inputs`` = ``input_ids[:, :-1]``, ``targets`` = ``labels[:, 1:]`` (shapes [R, T-1]); positions
    with target ``IGNORE_INDEX`` add nothing. Dividing by the label-token count is the caller's
    job, so gradient accumulation can normalise by the tokens of the whole step.
    """
    logits = model(inputs).astype(mx.float32)
    keep = targets != IGNORE_INDEX
    ce = nn.losses.cross_entropy(logits, mx.where(keep, targets, 0))
    return (ce * keep).sum()


def sequence_log_probs(model: nn.Module, inputs: mx.array, targets: mx.array) -> mx.array:
    """Each row's summed log-probability (fp32, shape [R]) of its targets (``inputs``/``targets``
    as for ``loss_sum``); for a preference batch, log p(answer | prompt) of each row."""
    logits = model(inputs).astype(mx.float32)
    keep = targets != IGNORE_INDEX
    ce = nn.losses.cross_entropy(logits, mx.where(keep, targets, 0))
    return -(ce * keep).sum(axis=1)


def dpo_loss(
    model: nn.Module,
    inputs: mx.array,
    targets: mx.array,
    reference: mx.array,
    *,
    beta: float,
    label_smoothing: float,
) -> tuple[mx.array, mx.array, mx.array, mx.array]:
    """(summed DPO loss, per-pair losses [B], chosen rewards [B], rejected rewards [B]) of one
    preference batch: rows [0, B) chosen, [B, 2B) rejected; ``reference`` [2B] the reference
    log-probabilities in the same order (``backends.training.dpo.sigmoid_dpo_loss``). The first
    output is the one ``nn.value_and_grad`` differentiates."""
    logps = sequence_log_probs(model, inputs, targets)
    n = logps.shape[0] // 2
    losses, chosen, rejected = sigmoid_dpo_loss(
        logps[:n],
        logps[n:],
        reference[:n],
        reference[n:],
        beta=beta,
        label_smoothing=label_smoothing,
        log_sigmoid=nn.log_sigmoid,
    )
    return losses.sum(), losses, chosen, rejected


def _adapter_base(module: nn.Module) -> nn.Module | None:
    """The base layer an mlx-lm adapter layer wraps (LoRALinear/DoRALinear/LoRASwitchLinear:
    ``linear``; LoRAEmbedding: ``embedding``), or None for any other module."""
    if "lora_a" not in module:
        return None
    for name in ("linear", "embedding"):
        if isinstance(module.get(name), nn.Module):
            return module[name]
    raise TypeError(f"adapter layer {type(module).__name__} wraps no base layer this engine knows")


@contextlib.contextmanager
def adapters_bypassed(model: nn.Module) -> Iterator[nn.Module]:
    """While active, ``model`` is the base model: each LoRA/DoRA layer is replaced by the base layer
    it wraps (the same arrays, no copy), so its forward equals the model without the adapter
    (DoRA's magnitude vector is bypassed too, which a LoRA scale of 0 would not do). The adapter
    layers are put back on exit."""
    swaps = []
    for path, module in model.named_modules():
        base = _adapter_base(module)
        if base is not None and path:
            *parents, key = path.split(".")
            holder: Any = model
            for part in parents:
                holder = holder[int(part)] if isinstance(holder, list) else holder[part]
            swaps.append((holder, int(key) if isinstance(holder, list) else key, module, base))
    for holder, key, _, base in swaps:
        holder[key] = base
    try:
        yield model
    finally:
        for holder, key, adapter, _ in swaps:
            holder[key] = adapter


class MLXEngine:
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

        dpo = functools.partial(dpo_loss, beta=config.dpo.beta, label_smoothing=config.dpo.label_smoothing)
        dpo_value_and_grad = nn.value_and_grad(model, dpo)

        def dpo_step(inputs: mx.array, targets: mx.array, reference: mx.array) -> tuple[tuple, dict]:
            return dpo_value_and_grad(model, inputs, targets, reference)

        def dpo_eval(inputs: mx.array, targets: mx.array, reference: mx.array) -> tuple:
            return dpo(model, inputs, targets, reference)

        self.compiled = self.device == "gpu" if COMPILE is None else COMPILE
        if self.compiled:
            state = [model.state, mx.random.state]
            micro_step = mx.compile(micro_step, inputs=state, outputs=state)
            eval_step = mx.compile(eval_step, inputs=state)
            dpo_step = mx.compile(dpo_step, inputs=state, outputs=state)
            dpo_eval = mx.compile(dpo_eval, inputs=state)
        self._micro_step, self._eval_step = micro_step, eval_step
        self._dpo_step, self._dpo_eval = dpo_step, dpo_eval
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

        DPO (``method: dpo``): the sigmoid DPO loss summed over the step's pairs / their number;
        the result adds the reward means of ``backends.training.dpo.STEP_FIELDS``.
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
        clipping) and the extra metrics (DPO: ``STEP_FIELDS``; SFT: none). SFT: the summed token
        cross-entropy / the label tokens of all micro-batches; DPO: the summed pair losses / the
        pairs of all micro-batches."""
        assert self.model is not None and self.config is not None, "setup() first"
        grads = None
        if self.config.method == "dpo":
            stats = PreferenceStats()
            for batch in micro_batches:
                inputs, targets = self._inputs(batch)
                reference = mx.array(self._reference(batch), dtype=mx.float32)
                (_, losses, chosen, rejected), g = self._dpo_step(inputs, targets, reference)
                grads = g if grads is None else tree_map(mx.add, grads, g)
                mx.eval(grads, losses, chosen, rejected)
                stats.add(np.array(losses), np.array(chosen), np.array(rejected))
            extra = stats.metrics()
            divisor = sum(b.num_pairs for b in micro_batches)
            return extra.pop("loss"), tree_map(lambda g: g / divisor, grads), extra
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
        no label token (as the PyTorch engine). DPO: the mean DPO loss per pair."""
        return self.eval_metrics(batches)["val_loss"]

    def eval_metrics(self, batches: list[Batch]) -> dict[str, float]:
        """{"val_loss": see ``eval_loss``}; DPO adds ``reward_accuracy`` and ``reward_margin``."""
        assert self.model is not None and self.config is not None, "setup() first"
        dpo = self.config.method == "dpo"
        n_tokens = sum(b.num_label_tokens for b in batches)
        if n_tokens == 0 and not dpo:
            return {"val_loss": float("nan")}
        stats = PreferenceStats()
        total = 0.0
        self.model.eval()
        try:
            for batch in batches:
                inputs, targets = self._inputs(batch)
                if dpo:
                    reference = mx.array(self._reference(batch), dtype=mx.float32)
                    _, losses, chosen, rejected = self._dpo_eval(inputs, targets, reference)
                    stats.add(np.array(losses), np.array(chosen), np.array(rejected))
                else:
                    total += self._eval_step(inputs, targets).item()
        except (RuntimeError, MemoryError) as exc:
            if is_oom_error(exc):
                raise self._oom(str(exc)) from exc
            raise
        finally:
            self.model.train()
        if dpo:
            return stats.eval_metrics()
        return {"val_loss": total / n_tokens}

    # --- state -------------------------------------------------------------------------------
    def adapter_weights(self) -> dict[str, mx.array]:
        """The trainable adapter arrays by module path (``...q_proj.lora_a`` [in, r], ``lora_b`` [r, out],
        DoRA ``m`` [out])."""
        assert self.model is not None, "setup() first"
        return dict(tree_flatten(self.model.trainable_parameters()))

    def load_adapter_weights(self, weights: dict[str, Any]) -> None:
        """Set the adapter arrays (numpy or MLX) by name; every trainable array must be given, with
        its shape. Raises ValueError listing what does not match."""
        assert self.model is not None, "setup() first"
        own = self.adapter_weights()
        problems = [f"missing {k}" for k in own if k not in weights]
        problems += [f"unexpected {k}" for k in weights if k not in own]
        problems += [
            f"{k}: shape {tuple(np.shape(v))} != {tuple(own[k].shape)}"
            for k, v in weights.items()
            if k in own and tuple(np.shape(v)) != tuple(own[k].shape)
        ]
        if problems:
            raise ValueError("adapter weights do not fit this model: " + "; ".join(problems[:10]))
        arrays = [(k, mx.array(np.asarray(v)).astype(own[k].dtype)) for k, v in weights.items()]
        self.model.load_weights(arrays, strict=False)
        mx.eval(self.model.parameters())

    def save_adapter(self, folder: Path) -> None:
        """``adapters.safetensors`` + ``adapter_config.json`` in mlx-lm's format (loads with
        ``mlx_lm.load(model, adapter_path=folder)`` and ``mlx_lm.generate --adapter-path``)."""
        assert self.config is not None, "setup() first"
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        mx.save_safetensors(str(folder / MLX_WEIGHTS), self.adapter_weights())
        cfg = mlx_adapter_config(
            rank=self.lora_parameters["rank"],
            scale=self.lora_parameters["scale"],
            dropout=self.lora_parameters["dropout"],
            keys=self.lora_parameters["keys"],
            use_dora=self.config.lora.use_dora,
            num_layers=self.num_layers,
            alpha=self.config.lora.alpha,
        )
        (folder / CONFIG_FILE).write_text(json.dumps(cfg, indent=2) + "\n", encoding="utf-8")

    def save_state(self, folder: Path) -> None:
        """The adapter (as ``save_adapter``), AdamW's state and MLX's random key into ``folder``."""
        assert self.optimizer is not None, "setup() first"
        folder = Path(folder)
        self.save_adapter(folder)
        mx.save_safetensors(str(folder / OPTIMIZER_FILE), dict(tree_flatten(self.optimizer.state)))
        key = np.array(mx.random.state[0]).astype(np.uint64).tolist()
        (folder / RNG_FILE).write_text(json.dumps({"mlx_random_key": key}) + "\n", encoding="utf-8")

    def load_state(self, folder: Path) -> None:
        """Restore what ``save_state`` wrote (after ``setup`` with the same config).

        Raises UserInputError when the checkpoint does not fit this model and LoRA config."""
        assert self.optimizer is not None, "setup() first"
        folder = Path(folder)
        try:
            self.load_adapter_weights(mx.load(str(folder / MLX_WEIGHTS)))
        except ValueError as exc:
            raise UserInputError(
                f"checkpoint does not fit this model/LoRA config: {exc}", file=folder
            ) from None
        self.optimizer.state = tree_unflatten(list(mx.load(str(folder / OPTIMIZER_FILE)).items()))
        mx.eval(self.optimizer.state)
        k0, k1 = json.loads((folder / RNG_FILE).read_text(encoding="utf-8"))["mlx_random_key"]
        # mx.random.seed(s) sets the key to [s >> 32, s & 0xffffffff]: this restores it exactly.
        mx.random.seed((int(k0) << 32) | int(k1))

    def reset_peak_memory(self) -> None:
        """Start a new peak window (``mx.reset_peak_memory``): the loop calls it once the model is
        loaded, so ``memory_peak`` is the training phase's peak."""
        mx.reset_peak_memory()

    def memory(self) -> dict[str, int | None]:
        """MLX's active and peak memory in bytes (unified memory on Apple silicon)."""
        return {"device_allocated": int(mx.get_active_memory()), "device_peak": int(mx.get_peak_memory())}
