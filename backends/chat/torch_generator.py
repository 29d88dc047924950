"""Chat on the PyTorch backend: a transformers model with peft LoRA adapters loaded beside the
base weights (never merged), and a token loop that can switch adapters between steps.

The loop is transformers' own pieces (KV cache, logits processors ``RepetitionPenaltyLogitsProcessor``,
``TemperatureLogitsWarper``, ``TopPLogitsWarper``) driven one token at a time, so the session can
stop between tokens and advance a base-model reply and a tuned one in turn from a single copy of
the base weights (``disable_adapter_layers`` / ``set_adapter`` between steps).
"""

from __future__ import annotations

import inspect
import re
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from transformers import (
    LogitsProcessorList,
    RepetitionPenaltyLogitsProcessor,
    TemperatureLogitsWarper,
    TopPLogitsWarper,
)

from backends.chat.adapters import AdapterInfo, tensor_mismatch_error
from backends.chat.session import Sampling
from backends.data.templates import load_tokenizer
from backends.errors import RunFailed, UserInputError
from backends.torch_backend.device import pick_device
from backends.torch_backend.loading import load_causal_lm
from backends.weights_check import check_safetensors

# peft's saved key of a LoRA weight: <prefix>.<module path>.lora_A|lora_B[.<adapter>].weight
_LORA_KEY = re.compile(r"^(?:base_model\.model\.)?(?P<module>.+)\.lora_(?P<ab>[AB])(?:\.[^.]+)?\.weight$")


def pick_dtype(device: str) -> torch.dtype:
    """bf16 on a CUDA GPU that supports it, fp16 on other GPUs (CUDA, MPS), fp32 on the CPU
    (CPU half-precision matmuls are slow and inexact)."""
    if device.startswith("cuda"):
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if device == "mps":
        return torch.float16
    return torch.float32


def _eos_ids(model: Any, tokenizer: Any) -> set[int]:
    ids: set[int] = set()
    gen = getattr(model, "generation_config", None)
    for value in (getattr(gen, "eos_token_id", None), tokenizer.eos_token_id):
        if isinstance(value, int):
            ids.add(value)
        elif isinstance(value, list | tuple):
            ids.update(int(v) for v in value)
    return ids


class TorchChatEngine:
    """The base model on one device plus any number of LoRA adapters, none merged.

    ``model_dir``: an HF folder (safetensors weights only). ``device``: None picks CUDA, MPS or CPU.
    Raises UserInputError when the folder cannot be loaded.
    """

    name = "torch"

    def __init__(self, model_dir: str | Path, device: str | None = None) -> None:
        self.model_dir = Path(model_dir)
        self.device = pick_device(device)
        self.dtype = pick_dtype(self.device)
        # The one tokenizer loader and the one model loader: local files, no remote code, safetensors.
        self.tokenizer = load_tokenizer(self.model_dir)
        base = load_causal_lm(self.model_dir, self.dtype)
        self.base = base.to(self.device).eval()
        self.model: Any = self.base  # becomes a PeftModel once an adapter is loaded
        self.eos_token_ids = _eos_ids(self.base, self.tokenizer)
        self.params = sum(p.numel() for p in self.base.parameters())
        self._names: dict[str, str] = {}  # adapter key -> peft adapter name
        self._counter = 0
        self._active: str | None = None  # the peft adapter name now active (None: base)
        params = inspect.signature(self.base.forward).parameters
        self._keep_arg = "logits_to_keep" in params
        # Newer transformers name the KV-cache argument ``cache``, older ones ``past_key_values``.
        self._cache_arg = "cache" if "cache" in params else "past_key_values"

    # --- adapters ---
    def _check_shapes(self, info: AdapterInfo) -> None:
        """Every LoRA weight must sit on a linear layer of this model with matching sizes."""
        from safetensors import safe_open

        if info.weights_file.suffix != ".safetensors":
            raise UserInputError(
                "adapter weights are a pickle file (adapter_model.bin); refused",
                file=info.weights_file,
                hint="re-save the adapter as safetensors",
            )
        check_safetensors(info.weights_file, "adapter weights file", field="adapter")
        modules = dict(self.base.named_modules())
        with safe_open(str(info.weights_file), framework="pt") as fh:
            for key in fh.keys():
                m = _LORA_KEY.match(key)
                if not m:
                    continue
                shape = tuple(fh.get_slice(key).get_shape())
                module = modules.get(m["module"])
                if module is None:
                    raise UserInputError(
                        f"the adapter has weights for layer {m['module']!r}, which this model does not have: "
                        "it was trained on a different base model",
                        file=info.path,
                        field="base_model",
                    )
                w = getattr(module, "weight", None)
                if w is None or w.dim() != 2:
                    continue
                out_f, in_f = int(w.shape[0]), int(w.shape[1])
                if isinstance(module, torch.nn.Embedding):
                    in_f, out_f = out_f, in_f
                ok = shape[1] == in_f if m["ab"] == "A" else shape[0] == out_f
                if not ok:
                    raise UserInputError(
                        f"adapter weight {key} has shape {list(shape)}, which does not fit layer "
                        f"{m['module']!r} ({in_f} -> {out_f}) of this model: it was trained on a different base model",
                        file=info.path,
                        field="base_model",
                    )

    def _tensor_mismatch(self, info: AdapterInfo, name: str) -> UserInputError | None:
        """Compare the file's tensors with the adapter weights peft created for ``name``."""
        from peft.utils import get_peft_model_state_dict
        from safetensors import safe_open

        expected = set(get_peft_model_state_dict(self.model, adapter_name=name))
        with safe_open(str(info.weights_file), framework="pt") as fh:
            found = set(fh.keys())
        return tensor_mismatch_error(info, sorted(expected - found), sorted(found - expected))

    def add_adapter(self, key: str, info: AdapterInfo) -> None:
        """Load a PEFT adapter under ``key`` without merging it. Raises UserInputError naming the
        adapter path for an MLX-format adapter, one that does not fit this model, or one whose
        tensors do not all load (``adapters.tensor_mismatch_error``: never a silent base model)."""
        from peft import PeftModel

        if info.format != "peft":
            raise UserInputError(
                "this adapter is in MLX format; the PyTorch backend loads PEFT adapters",
                file=info.path,
                field="adapter",
                hint="convert it with `tunedesk export adapter RUN_DIR --to peft`, or chat with --backend mlx",
            )
        self._check_shapes(info)
        name = f"adapter{self._counter}"
        self._counter += 1
        first = self.model is self.base
        try:
            with warnings.catch_warnings():
                # peft reads transformers' deprecated `is_gradient_checkpointing`: not ours to act on;
                # missing or unexpected adapter keys are checked below, as an error, not a warning.
                warnings.filterwarnings(
                    "ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning
                )
                warnings.filterwarnings("ignore", message=".*(missing|unexpected) adapter keys.*")
                if first:
                    self.model = PeftModel.from_pretrained(
                        self.base, str(info.path), adapter_name=name, is_trainable=False
                    )
                else:
                    self.model.load_adapter(str(info.path), adapter_name=name, is_trainable=False)
        except (ValueError, RuntimeError, KeyError) as exc:
            raise UserInputError(f"cannot load this adapter into the model: {exc}", file=info.path) from None
        error = self._tensor_mismatch(info, name)
        if error is not None:
            if first:
                self.model = self.base = self.model.unload()
            else:
                self.model.delete_adapter(name)
            raise error
        self.model.to(self.device).eval()
        self._names[key] = name
        self._active = "?"  # unknown after a load: the next step sets it

    def remove_adapter(self, key: str) -> None:
        """Unload the adapter ``key``; the last one unloaded gives back the plain base model."""
        name = self._names.pop(key, None)
        if name is None:
            return
        if not self._names:
            self.model = self.model.unload()  # removes the LoRA layers, no merge
            self.base = self.model
        else:
            if name in self.model.active_adapters:  # peft wants another active one first
                self.model.set_adapter(next(iter(self._names.values())))
            self.model.delete_adapter(name)
        self._active = "?"

    def _activate(self, key: str | None) -> None:
        name = self._names[key] if key is not None else None
        if name == self._active or self.model is self.base:
            return
        if name is None:
            self.model.base_model.disable_adapter_layers()
        else:
            self.model.base_model.enable_adapter_layers()
            self.model.set_adapter(name)
        self._active = name

    # --- generation ---
    def tokens(self, prompt_ids: list[int], sampling: Sampling, adapter: str | None) -> Iterator[int]:
        """Yield new token ids for ``prompt_ids`` (at most ``sampling.max_new_tokens``), with the
        adapter ``adapter`` active (None: the base model). Raises RunFailed(kind="oom") when the
        device runs out of memory."""
        processors = LogitsProcessorList()
        if sampling.repetition_penalty != 1.0:
            processors.append(RepetitionPenaltyLogitsProcessor(sampling.repetition_penalty))
        if not sampling.greedy:
            processors.append(TemperatureLogitsWarper(sampling.temperature))
            if sampling.top_p < 1.0:
                processors.append(TopPLogitsWarper(sampling.top_p))
        gen = torch.Generator(device=self.device).manual_seed(sampling.seed)
        seen = torch.tensor([prompt_ids], dtype=torch.long, device=self.device)
        step_input = seen
        cache = None
        extra: dict[str, Any] = {"logits_to_keep": 1} if self._keep_arg else {}
        for _ in range(sampling.max_new_tokens):
            self._activate(adapter)
            try:
                with torch.inference_mode():
                    out = self.model(
                        input_ids=step_input, use_cache=True, **{self._cache_arg: cache}, **extra
                    )
                    cache = out[self._cache_arg] if self._cache_arg == "cache" else out.past_key_values
                    scores = out.logits[:, -1, :].float()
                    if processors:
                        scores = processors(seen, scores)
                    if sampling.greedy:
                        nxt = scores.argmax(dim=-1, keepdim=True)
                    else:
                        nxt = torch.multinomial(torch.softmax(scores, dim=-1), 1, generator=gen)
            except torch.OutOfMemoryError:
                raise RunFailed(
                    "oom",
                    f"out of {self.device} memory while generating",
                    "shorten the conversation or max new tokens, or stop the training run that shares the device",
                ) from None
            if sampling.repetition_penalty != 1.0:
                seen = torch.cat([seen, nxt], dim=-1)
            step_input = nxt
            yield int(nxt.item())
