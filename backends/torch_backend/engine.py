"""The PyTorch ``Engine`` (protocol: ``backends.training.engine``): transformers causal LM loaded
from safetensors, peft LoRA or DoRA adapters, AdamW, gradient accumulation with the loss
normalised by label tokens across the whole accumulated batch, optional gradient checkpointing,
bf16/fp16 autocast, and exact save/restore of adapter, optimizer and torch RNG state.

The loss is the token-level causal-LM cross-entropy: position t predicts ``labels[t + 1]``
(labels arrive unshifted, see ``backends.data.types``). For architectures whose logits are just
``lm_head(hidden)`` (``FAST_LOSS_MODEL_TYPES``) the head is applied only at positions that carry a
label, in chunks (``head_loss``: no [tokens x vocabulary] logits tensor), which skips most of the
vocabulary projection for completion-only data; other models go through their own ``forward``
(same loss, more work). For those architectures a micro-batch also runs padding-free
(``training.padding_free``, ``padding_free``): its examples back to back in one row, attention
kept within each.

DPO (``method: dpo``): the chosen and rejected rows of a ``PreferenceBatch`` go through one
forward; each row's answer log-probability is the sum of its labelled tokens' log-probabilities
(``sequence_log_probs``); the reference is the same model inside peft's ``disable_adapter()``
context (no second copy of the weights), unless the loop precomputed it. The loss formula is the
shared ``backends.training.dpo.sigmoid_dpo_loss``. ORPO and KTO (``method: orpo | kto``) run
through ``backends.torch_backend.preference_methods`` (formulas in ``backends.training.orpo`` and
``backends.training.kto``); GRPO (``method: grpo``) through ``backends.torch_backend.grpo_step``.
"""

from __future__ import annotations

import contextlib
import importlib.util
import math
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from backends.config import RunConfig
from backends.data.types import IGNORE_INDEX, Batch, PreferenceBatch
from backends.errors import RunFailed, UserInputError
from backends.lora_targets import peft_target_modules
from backends.torch_backend import head_loss, padding_free, preference_methods, quantize
from backends.torch_backend.device import _DTYPES, pick_device, resolve_precision
from backends.torch_backend.device import cpu_has_fast_bf16 as cpu_has_fast_bf16  # re-exported
from backends.torch_backend.forward import LabelledForward
from backends.torch_backend.loading import load_causal_lm
from backends.torch_backend.state_files import StateFiles
from backends.training import measure
from backends.training.dpo import PreferenceStats, sigmoid_dpo_loss
from backends.training.oom import is_out_of_memory, oom_hint

# Model types whose causal-LM head is exactly ``lm_head(last_hidden_state)`` (no logit scaling or
# soft-capping, no auxiliary loss), so the loss may apply the head only at labelled positions.
FAST_LOSS_MODEL_TYPES = frozenset(
    {"llama", "mistral", "qwen2", "qwen3", "phi3", "smollm3", "olmo", "olmo2", "starcoder2", "gemma"}
)


def linear_layer_paths(model: nn.Module) -> list[str]:
    """Full module paths of the model's linear layers (what LoRA can adapt), in model order;
    transformers' ``Conv1D`` (GPT-2: a linear layer with transposed weights) counts, as in peft."""
    return [
        name
        for name, module in model.named_modules()
        if isinstance(module, nn.Linear) or type(module).__name__ == "Conv1D"
    ]


# torch.OutOfMemoryError exists from torch 2.5; torch.cuda.OutOfMemoryError before that.
_OOM_TYPES: tuple[type[BaseException], ...] = (MemoryError,) + tuple(
    t for t in (getattr(torch, "OutOfMemoryError", None), getattr(torch.cuda, "OutOfMemoryError", None)) if t
)


def _is_oom(exc: BaseException) -> bool:
    return isinstance(exc, _OOM_TYPES) or is_out_of_memory(exc)


class TorchEngine(StateFiles):
    """LoRA/DoRA fine-tuning of a transformers causal LM with PyTorch (see module docstring).

    ``device``: "cuda", "mps" or "cpu" (default: ``pick_device()``). ``world``: the run's
    processes when this is one of several (``backends.torch_backend.distributed``), else None.
    """

    name = "torch"

    def __init__(self, device: str | None = None, world: Any = None) -> None:
        self.device = device or pick_device()
        self.world = world
        self._forward: nn.Module | None = None
        self._ddp: nn.Module | None = None
        self._fsdp = False  # training.distributed: fsdp on several processes
        self._gathered: dict[str, Any] | None = None  # FSDP: whole adapter/optimizer for rank 0
        self._hidden_out = False  # the forward returns hidden states (the head runs in head_loss)
        self.precision = "fp32"
        self.config: RunConfig | None = None
        self.model: Any = None  # peft.PeftModel
        self.optimizer: torch.optim.Optimizer | None = None
        self.scaler: torch.amp.GradScaler | None = None
        self._params: list[nn.Parameter] = []
        self._fast_loss = False
        self._padding_free = False
        self._mps_peak = 0
        self.model_dir: Path | None = None
        self._grpo_runner: Any = None

    # --- setup -----------------------------------------------------------------------------
    def setup(self, config: RunConfig, model_dir: Path) -> dict[str, Any]:
        """Load the base model (safetensors only, no remote code), add LoRA/DoRA, build AdamW.

        Returns {"params_total", "params_trainable", "notes"}. Raises UserInputError for a folder
        without safetensors weights, a model transformers cannot load, or a target module that
        matches nothing.
        """
        from peft import LoraConfig, get_peft_model

        model_dir = Path(model_dir)
        self.model_dir = model_dir
        self.config = config
        t = config.training
        self.precision, precision_note = resolve_precision(t.precision, self.device)
        notes = [f"device {self.device}", precision_note]
        load_kwargs: dict[str, Any] = {}
        bits = config.lora.quantize
        if bits:
            notes += quantize.check_quantization(bits, self.device)
            load_kwargs["quantization_config"] = quantize.quantization_config(bits, _DTYPES[self.precision])
            # One GPU per process: the current one (torch.cuda.set_device), not always the first.
            load_kwargs["device_map"] = {"": torch.cuda.current_device()} if self.world else self.device
            notes.append(
                f"base quantised to {bits} bits ({'nf4, double quantisation' if bits == 4 else 'LLM.int8()'})"
            )
        attention = self._attention_for(config, model_dir)
        if attention:
            load_kwargs["attn_implementation"] = attention
        base = load_causal_lm(model_dir, _DTYPES[self.precision], **load_kwargs)
        base.config.use_cache = False
        self._fsdp = self.world is not None and t.distributed == "fsdp"
        if bits:  # a quantised model is placed by device_map and cannot be moved
            quantize.detach_from_file(base)
        elif not self._fsdp:  # FSDP moves each process's shards to the device itself
            base.to(self.device)
        targets = peft_target_modules(linear_layer_paths(base), config.lora.target_modules)
        if t.gradient_checkpointing:
            kwargs = {"use_reentrant": False}
            if hasattr(base, "activation_checkpointing_enable"):  # transformers >= 5.x name
                base.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
            else:
                base.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
            notes.append("gradient checkpointing on")
        lora = LoraConfig(
            r=config.lora.rank,
            lora_alpha=config.lora.alpha,
            lora_dropout=config.lora.dropout,
            target_modules=targets,
            use_dora=config.lora.use_dora,
            bias="none",
            task_type="CAUSAL_LM",
        )
        # LoRA's A matrices are initialised from torch's RNG: seed it so the adapter depends on the seed only.
        torch.manual_seed(t.seed)
        with warnings.catch_warnings():
            # peft reads transformers' deprecated `is_gradient_checkpointing`: not ours to act on.
            warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
            self.model = get_peft_model(base, lora)  # adapters in fp32 (peft's autocast_adapter_dtype)
        self.model.train()
        model_type = getattr(base.config, "model_type", "")
        self._fast_loss = model_type in FAST_LOSS_MODEL_TYPES
        # FSDP: the head runs inside the sharded module (its weights exist whole only there).
        self._hidden_out = self._fast_loss and not self._fsdp
        self._forward = LabelledForward(self.model, "hidden" if self._hidden_out else "logits")
        notes += self._distribute(base, t)
        self._params = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer = quantize.make_optimizer(
            t.optimizer, self._params, self.device, lr=t.learning_rate, weight_decay=t.weight_decay
        )
        self.scaler = torch.amp.GradScaler(self.device) if self.precision == "fp16" else None
        self._padding_free = attention is not None
        if attention:
            notes.append(f"padding-free batches ({attention} attention)")
        total = sum(p.numel() for p in self.model.parameters())
        trainable = sum(p.numel() for p in self._params)
        method = "DoRA" if config.lora.use_dora else "LoRA"
        target_text = targets if isinstance(targets, str) else ",".join(targets)
        notes.append(f"{method} rank {config.lora.rank} alpha {config.lora.alpha} on {target_text}")
        return {"params_total": total, "params_trainable": trainable, "notes": notes}

    def _distribute(self, base: nn.Module, t: Any) -> list[str]:
        """On several processes: DDP around the loss module, or FSDP shards of it
        (``training.distributed``); each process then draws its own dropout masks. Returns notes."""
        if self.world is None:
            return []
        if self._fsdp:
            from backends.torch_backend import fsdp

            layers = list(getattr(base.get_decoder(), "layers", []))
            fsdp.shard(self._forward, layers, self.world, t.fsdp_cpu_offload)
            note = f"FSDP over {self.world.size} processes ({len(layers)} layers sharded)"
        else:
            from backends.torch_backend import distributed

            self._ddp = distributed.wrap(self._forward, self.world)
            note = f"DDP over {self.world.size} processes ({'NCCL' if self.device == 'cuda' else 'gloo'})"
        # Every process drew the same LoRA init (DDP sends rank 0's to all anyway); from here each
        # draws its own dropout masks, kept per rank in the checkpoints.
        torch.manual_seed(t.seed + self.world.rank)
        return [note]

    def _attention_for(self, config: RunConfig, model_dir: Path) -> str | None:
        """The attention implementation for padding-free batches (``backends.torch_backend
        .padding_free``), or None when they are off: ``training.padding_free`` is false, or the
        architecture is not one of ``FAST_LOSS_MODEL_TYPES`` (llama-like: position ids honoured)."""
        from backends.model_shape import read_model_config

        if not config.training.padding_free:
            return None
        if read_model_config(model_dir).get("model_type") not in FAST_LOSS_MODEL_TYPES:
            return None
        if (
            self.device == "cuda"
            and self.precision in ("bf16", "fp16")
            and importlib.util.find_spec("flash_attn") is not None
        ):
            return "flash_attention_2"
        padding_free.register()
        return padding_free.VARLEN

    # --- loss ------------------------------------------------------------------------------
    def _autocast(self) -> contextlib.AbstractContextManager:
        if self.precision == "fp32":
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device, dtype=_DTYPES[self.precision])

    def _tensor(self, array: Any) -> torch.Tensor:
        return torch.as_tensor(array, device=self.device)

    def loss_sum(self, batch: Batch) -> torch.Tensor:
        """Summed cross-entropy (fp32 scalar) over the batch's label positions (see
        ``labelled_losses``); on CUDA with liger-kernel, its fused linear cross-entropy."""
        out, targets, _ = self._labelled_outputs(batch)
        with self._autocast():
            if self._hidden_out:
                return head_loss.summed_loss(out, self._head(), targets)
            return F.cross_entropy(out.float(), targets, reduction="sum")

    def sequence_log_probs(self, batch: Batch) -> torch.Tensor:
        """Each row's summed log-probability of its labelled tokens (fp32, shape [R] for R rows):
        for a ``PreferenceBatch``, log p(answer | prompt) of each row (DPO's log pi(y|x))."""
        losses, rows = self.labelled_losses(batch)
        out = torch.zeros(batch.input_ids.shape[0], dtype=torch.float32, device=losses.device)
        return out.index_add(0, rows, -losses)

    def labelled_losses(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        """The cross-entropy of each of the N positions that carry a target (fp32 [N], with
        gradients) and the batch row of each (int64 [N]). Position t predicts ``labels[:, t + 1]``
        (``padding_free.shifted_targets``). The LM head runs at those positions only, in chunks
        (``head_loss.token_losses``), so no [tokens x vocabulary] tensor is made."""
        out, targets, rows = self._labelled_outputs(batch)
        with self._autocast():
            if self._hidden_out:
                return head_loss.token_losses(out, self._head(), targets), rows
            return F.cross_entropy(out.float(), targets, reduction="none"), rows

    def _head(self) -> nn.Module:
        return self.model.get_base_model().get_output_embeddings()

    def _labelled_outputs(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The forward pass at the N positions that carry a target: (the decoder's hidden states
        [N, d] for ``FAST_LOSS_MODEL_TYPES``, else the model's logits [N, V]; targets [N]; row
        index [N]).

        Padding-free (``training.padding_free``, llama-like models): the batch runs as one row of
        its real tokens (``padding_free.flatten``). Otherwise rows are padded, and packed rows
        (``segment_ids``) get a block-diagonal causal mask so examples never attend to each other.
        """
        hf_model = self.model.get_base_model()
        if self._padding_free:
            flat = padding_free.flatten(batch)
            inputs: dict[str, Any] = {
                "input_ids": self._tensor(flat.input_ids),
                "position_ids": self._tensor(flat.position_ids),
                "attention_mask": None,
            }
            if hf_model.config._attn_implementation == padding_free.VARLEN:
                inputs[padding_free.SEGMENTS_KW] = flat.segments
            targets, rows = self._tensor(flat.targets), self._tensor(flat.rows)[None]
        else:
            inputs = {
                "input_ids": self._tensor(batch.input_ids),
                "position_ids": self._tensor(batch.position_ids),
                "attention_mask": self._attention_mask(batch),
            }
            targets = self._tensor(padding_free.shifted_targets(batch))
            rows = torch.arange(targets.shape[0], device=targets.device)[:, None].expand_as(targets)
        selected = targets != IGNORE_INDEX
        assert self._forward is not None
        # Training steps go through DDP (gradient synchronisation); evaluation and the reference
        # pass (no gradient) run locally. FSDP's module is the sharded one itself.
        forward = self._ddp if self._ddp is not None and torch.is_grad_enabled() else self._forward
        with self._autocast():
            out = forward(selected, **inputs)
        return out, targets[selected], rows[selected]

    def _attention_mask(self, batch: Batch) -> torch.Tensor:
        """[B, T] padding mask, or for packed rows a block-diagonal causal [B, 1, T, T] bool mask."""
        if batch.segment_ids is None:
            return self._tensor(batch.attention_mask)
        seg = self._tensor(batch.segment_ids)
        t_len = seg.shape[1]
        causal = torch.ones(t_len, t_len, dtype=torch.bool, device=seg.device).tril()
        same = seg[:, :, None] == seg[:, None, :]
        mask = (same & causal & (seg[:, None, :] > 0))[:, None]
        # A padding query row (segment 0) attends to nothing; let it see itself to avoid NaN.
        return mask | torch.eye(t_len, dtype=torch.bool, device=seg.device)

    # --- DPO -------------------------------------------------------------------------------
    def reference_log_probs(self, batch: PreferenceBatch) -> np.ndarray:
        """The reference model's summed answer log-probability of each row (float64 [2B]): this
        model with the adapter disabled (peft ``disable_adapter()``), no gradient."""
        assert self.model is not None
        try:
            return self._reference(batch).double().cpu().numpy()
        except Exception as exc:
            self._raise_if_oom(exc)
            raise

    def _reference(self, batch: PreferenceBatch) -> torch.Tensor:
        if batch.reference_log_probs is not None:
            return torch.as_tensor(batch.reference_log_probs, dtype=torch.float32, device=self.device)
        with torch.no_grad(), self.model.disable_adapter():
            return self.sequence_log_probs(batch)

    def dpo_loss(self, batch: PreferenceBatch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Per-pair sigmoid DPO losses [B] and the chosen/rejected rewards [B] of one preference
        batch (``backends.training.dpo.sigmoid_dpo_loss`` with the run's beta and label smoothing);
        the policy part carries gradients."""
        assert self.config is not None
        reference = self._reference(batch)
        policy = self.sequence_log_probs(batch)
        n = batch.num_pairs
        dpo = self.config.dpo
        return sigmoid_dpo_loss(
            policy[:n],
            policy[n:],
            reference[:n],
            reference[n:],
            beta=dpo.beta,
            label_smoothing=dpo.label_smoothing,
            log_sigmoid=F.logsigmoid,
        )

    # --- steps -----------------------------------------------------------------------------
    def train_step(self, micro_batches: list[Batch], learning_rate: float) -> dict[str, float]:
        """One AdamW step over ``micro_batches``: each micro-batch's summed loss is divided by the
        label tokens of all of them before backward, so the gradient equals that of one big batch.
        Gradients are clipped to ``max_grad_norm`` (0: off). Returns {"loss", "grad_norm"}; a
        non-finite loss or gradient norm skips the update and is returned as is (with fp16 loss
        scaling an overflowing step is skipped normally and marked {"skipped": 1.0}). Raises
        RunFailed(kind="oom") when the device runs out of memory, RunFailed(kind="data") for
        micro-batches without a label token.

        DPO (``method: dpo``, ``PreferenceBatch`` micro-batches): the loss is the sigmoid DPO loss
        summed over the step's pairs and divided by their number; the result adds the reward
        means of ``backends.training.dpo.STEP_FIELDS``.
        """
        assert self.model is not None and self.optimizer is not None and self.config is not None
        total_labels = sum(int(b.num_label_tokens) for b in micro_batches)
        if self.world is not None:  # the loss is per label token of the GLOBAL batch
            total_labels = int(self.world.totals([float(total_labels)])[0])
        if total_labels <= 0:
            rows = sorted({r for b in micro_batches for r in b.rows})
            raise RunFailed(
                "data", f"a training step has no label tokens (rows {rows[:10]})", "check the data"
            )
        for group in self.optimizer.param_groups:
            group["lr"] = learning_rate
        self.model.train()
        self.optimizer.zero_grad(set_to_none=True)
        extra: dict[str, float] = {}
        try:
            if self.config.method == "dpo":
                extra = self._dpo_backward(micro_batches)
                mean_loss = extra.pop("loss")
            elif self.config.method in preference_methods.METHODS:
                extra = preference_methods.backward(self, micro_batches)
                mean_loss = extra.pop("loss")
            elif self.config.method == "grpo":
                extra = self._grpo().backward(micro_batches)
                mean_loss = extra.pop("loss")
            else:
                loss_total = 0.0
                # DDP and FSDP average the processes' gradients: scale by their number so the sum
                # of the global batch's token losses / its label tokens is what is differentiated.
                scale = self.world.size if self.world is not None else 1
                for i, batch in enumerate(micro_batches):
                    with self._no_sync(last=i == len(micro_batches) - 1):
                        loss = self.loss_sum(batch)
                        self._backward(loss * scale / total_labels)
                    loss_total += float(loss.detach())
                if self.world is not None:
                    loss_total = self.world.totals([loss_total])[0]
                mean_loss = loss_total / total_labels
        except Exception as exc:
            self._raise_if_oom(exc)
            raise
        result = self._update(mean_loss)
        return {**result, **extra}

    def _no_sync(self, last: bool) -> contextlib.AbstractContextManager:
        """No gradient synchronisation for every micro-batch but the step's last (gradient
        accumulation: the gradients are averaged once, in the last backward)."""
        if self._fsdp:
            self._forward.set_requires_gradient_sync(last)  # type: ignore[union-attr]
        if self._ddp is None or last:
            return contextlib.nullcontext()
        return self._ddp.no_sync()

    def _grpo(self) -> Any:
        """The run's GRPO state (``grpo_step.GRPORunner``), made on first use."""
        if self._grpo_runner is None:
            from backends.torch_backend.grpo_step import GRPORunner

            self._grpo_runner = GRPORunner(self)
        return self._grpo_runner

    def _backward(self, loss: torch.Tensor) -> None:
        (self.scaler.scale(loss) if self.scaler is not None else loss).backward()

    def _dpo_backward(self, micro_batches: list[Batch]) -> dict[str, float]:
        """Backward of the DPO loss summed over the step's pairs / their number; returns the
        step's ``PreferenceStats.metrics()``."""
        pairs = sum(int(b.num_pairs) for b in micro_batches)
        stats = PreferenceStats()
        for batch in micro_batches:
            losses, chosen, rejected = self.dpo_loss(batch)
            self._backward(losses.sum() / pairs)
            stats.add(*(t.detach().double().cpu().numpy() for t in (losses, chosen, rejected)))
        return stats.metrics()

    def _update(self, mean_loss: float) -> dict[str, float]:
        """Clip and apply the accumulated gradients (see ``train_step``)."""
        assert self.optimizer is not None and self.config is not None
        if not math.isfinite(mean_loss):
            self.optimizer.zero_grad(set_to_none=True)
            return {"loss": mean_loss, "grad_norm": float("nan")}
        if self.scaler is not None:
            self.scaler.unscale_(self.optimizer)
        max_norm = self.config.training.max_grad_norm or float("inf")
        norm = torch.nn.utils.clip_grad_norm_(self._params, max_norm)
        grad_norm = float(norm.full_tensor() if hasattr(norm, "full_tensor") else norm)  # FSDP: a DTensor
        if self.scaler is not None:
            # With loss scaling an overflow is normal early on: the scaler skips that update itself
            # and lowers the scale; report it as skipped, not as a failure.
            self.scaler.step(self.optimizer)
            self.scaler.update()
            return {"loss": mean_loss, "grad_norm": grad_norm, "skipped": float(not math.isfinite(grad_norm))}
        if not math.isfinite(grad_norm):
            self.optimizer.zero_grad(set_to_none=True)
            return {"loss": mean_loss, "grad_norm": grad_norm}
        self.optimizer.step()
        return {"loss": mean_loss, "grad_norm": grad_norm}

    def eval_loss(self, batches: list[Batch]) -> float:
        """Mean loss per label token over ``batches`` (dropout off, no gradient); NaN when they
        hold no label token. DPO: the mean DPO loss per pair."""
        return self.eval_metrics(batches)["val_loss"]

    def eval_metrics(self, batches: list[Batch]) -> dict[str, float]:
        """{"val_loss": see ``eval_loss``}; DPO adds ``reward_accuracy`` and ``reward_margin``."""
        assert self.model is not None and self.config is not None
        if self.config.method == "dpo":
            stats = PreferenceStats()
            self.model.eval()
            try:
                with torch.no_grad():
                    for batch in batches:
                        stats.add(*(t.double().cpu().numpy() for t in self.dpo_loss(batch)))
            except Exception as exc:
                self._raise_if_oom(exc)
                raise
            finally:
                self.model.train()
            return stats.eval_metrics()
        if self.config.method == "grpo":
            try:
                return self._grpo().eval_metrics(batches)
            except Exception as exc:
                self._raise_if_oom(exc)
                raise
        if self.config.method in preference_methods.METHODS:
            self.model.eval()
            try:
                return preference_methods.eval_metrics(self, batches)
            except Exception as exc:
                self._raise_if_oom(exc)
                raise
            finally:
                self.model.train()
        return {"val_loss": self._sft_eval_loss(batches)}

    def _sft_eval_loss(self, batches: list[Batch]) -> float:
        assert self.model is not None
        total = sum(int(b.num_label_tokens) for b in batches)
        if total == 0:
            return float("nan")
        self.model.eval()
        loss_total = 0.0
        try:
            with torch.no_grad():
                for batch in batches:
                    loss_total += float(self.loss_sum(batch))
        except Exception as exc:
            self._raise_if_oom(exc)
            raise
        finally:
            self.model.train()
        return loss_total / total

    def _raise_if_oom(self, exc: BaseException) -> None:
        if not _is_oom(exc):
            return
        assert self.optimizer is not None and self.config is not None
        self.optimizer.zero_grad(set_to_none=True)
        if self.device == "cuda":
            torch.cuda.empty_cache()
        elif self.device == "mps":
            torch.mps.empty_cache()
        raise RunFailed(
            "oom", f"out of memory on {self.device}: {str(exc).splitlines()[0][:300]}", oom_hint(self.config)
        ) from exc

    # --- forgetting check --------------------------------------------------------------------
    def forgetting_check(self, prompts: list[list[int]], text_ids: list[int], **options: Any) -> Any:
        """The forgetting check on the model being trained, adapter off and on, in the run's
        precision (``backends.forgetting.torch_check.run_check``; ``options`` are its keywords)."""
        from backends.forgetting.torch_check import run_check

        assert self.model is not None
        options.setdefault("batch", len(prompts))
        return run_check(
            self.model, prompts, text_ids, device=self.device, autocast=self._autocast, **options
        )

    def reset_peak_memory(self) -> None:
        """Start a new peak window (CUDA: ``torch.cuda.reset_peak_memory_stats``; CPU: hand freed
        loader memory back and reset the peak RSS, ``backends.training.measure``): the loop calls
        it once the model is loaded, so ``memory_peak`` is the training phase's peak."""
        measure.release_freed_memory()
        if self.device == "cuda":
            torch.cuda.reset_peak_memory_stats()
        elif self.device == "mps":
            self._mps_peak = 0
        else:
            measure.reset_peak_rss()

    def memory(self) -> dict[str, int | None]:
        """Device memory in bytes: CUDA allocated and peak allocated; MPS allocated and the peak
        seen at these calls; None on the CPU (process RSS covers it)."""
        if self.device == "cuda":
            return {
                "device_allocated": int(torch.cuda.memory_allocated()),
                "device_peak": int(torch.cuda.max_memory_allocated()),
            }
        if self.device == "mps":
            allocated = int(torch.mps.current_allocated_memory())
            self._mps_peak = max(self._mps_peak, allocated)
            return {"device_allocated": allocated, "device_peak": self._mps_peak}
        return {"device_allocated": None, "device_peak": None}


def create_engine(config: RunConfig, device: str | None = None) -> TorchEngine:
    """The backend factory ``backends.jobs.make_engine`` calls: a TorchEngine on ``device``, else
    the best available one (``pick_device``); nothing is loaded until ``setup``. In a process
    started by torchrun (``distributed.is_distributed``) it joins the process group first.
    Raises UserInputError for a method other than SFT on several processes."""
    from backends.torch_backend import distributed

    device = pick_device(device)
    if not distributed.is_distributed():
        return TorchEngine(device)
    if config.method != "sft":
        raise UserInputError(
            f"method {config.method} trains on one process only; several processes (--nproc) run SFT",
            field="method",
            hint="drop --nproc, or use method: sft",
        )
    return TorchEngine(device, distributed.join(device))
