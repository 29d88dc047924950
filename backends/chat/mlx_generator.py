"""Chat on the MLX backend: a model loaded by ``mlx_lm.load``, LoRA adapters applied with mlx-lm's
own pieces (``linear_to_lora_layers`` and ``load_weights``, as its ``load_adapters`` does, plus a
check that every adapter weight has a tensor) and never fused, and tokens
from mlx-lm's ``generate_step`` (what ``mlx_lm.stream_generate`` drives) with its samplers.

Switching adapters never reloads the base: each adapter keeps its own LoRA layers wrapping the
same base linear layers, and activating one swaps those modules in (``update_modules``); the base
model is the original linear layers swapped back. Swapping happens before every token, so a base
reply and a tuned one can stream in turn, each computed exactly as it would be alone.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import mlx.core as mx
import mlx_lm
from mlx.utils import tree_flatten, tree_unflatten
from mlx_lm.generate import generate_step
from mlx_lm.sample_utils import make_logits_processors, make_sampler
from mlx_lm.tuner.utils import linear_to_lora_layers, remove_lora_layers

from backends.chat.adapters import AdapterInfo, tensor_mismatch_error
from backends.chat.session import Sampling
from backends.data.templates import load_tokenizer
from backends.errors import UserInputError
from backends.weights_check import check_safetensors

ADAPTER_LEAVES = ("lora_a", "lora_b", "m")  # mlx-lm's LoRA/DoRA parameter names


def _adapter_modules(model: Any) -> list[tuple[str, Any, Any]]:
    """(name, LoRA module, wrapped base module) for every LoRA/DoRA layer now in ``model``."""
    out = []
    for name, module in model.named_modules():
        if "lora_a" not in module:  # an mlx Module is a dict of its parameters and children
            continue
        base = module.get("linear")
        if base is None:
            base = module.get("embedding")
        if base is not None:
            out.append((name, module, base))
    return out


class MlxChatEngine:
    """The base model (mlx-lm) plus LoRA adapters kept as swappable module sets, none fused.

    ``model_dir``: an HF folder mlx-lm can load. Raises UserInputError when it cannot.
    """

    name = "mlx"

    def __init__(self, model_dir: str | Path) -> None:
        self.model_dir = Path(model_dir)
        try:
            # trust_remote_code=False: never run a model folder's own Python code (mlx-lm's
            # default today; said here so that a change of default cannot open it).
            self.model, self.wrapper = mlx_lm.load(str(self.model_dir), trust_remote_code=False)
        except (OSError, ValueError, KeyError) as exc:
            raise UserInputError(
                f"MLX cannot load this model: {exc}", file=self.model_dir, field="model"
            ) from None
        # The one tokenizer loader (as training and the PyTorch chat): prompts render identically.
        self.tokenizer = load_tokenizer(self.model_dir)
        self.eos_token_ids = set(int(i) for i in self.wrapper.eos_token_ids)
        self.device = str(mx.default_device())
        self.params = sum(v.size for _, v in tree_flatten(self.model.parameters()))
        self._sets: dict[str, tuple[list[tuple[str, Any]], list[tuple[str, Any]]]] = {}
        self._active: str | None = None

    def _swap(self, key: str | None) -> None:
        if key == self._active:
            return
        if self._active is not None:
            self.model.update_modules(tree_unflatten(self._sets[self._active][1]))
        if key is not None:
            self.model.update_modules(tree_unflatten(self._sets[key][0]))
        self._active = key

    def add_adapter(self, key: str, info: AdapterInfo) -> None:
        """Apply an mlx-lm adapter under ``key`` (LoRA layers around the shared base layers).
        Raises UserInputError naming the path for a PEFT-format adapter or one whose weights do
        not fit this model (mlx-lm's own shape check)."""
        if info.format != "mlx":
            raise UserInputError(
                "this adapter is in PEFT format; the MLX backend loads mlx-lm adapters",
                file=info.path,
                field="adapter",
                hint="convert it with `tunedesk export adapter RUN_DIR --to mlx`, or chat with --backend torch",
            )
        check_safetensors(info.weights_file, "adapter weights file", field="adapter")
        self._swap(None)
        cfg = info.config  # read_adapter's normalized config (older mlx-lm's lora_layers read)
        try:
            # mlx-lm's load_adapters, step by step, so that missing tensors are an error too
            # (load_adapters loads with strict=False and leaves them at their initial values).
            linear_to_lora_layers(
                self.model,
                cfg["num_layers"],
                cfg["lora_parameters"],
                use_dora=cfg.get("fine_tune_type") == "dora",
            )
            weights = mx.load(str(info.weights_file))
        except (ValueError, KeyError, FileNotFoundError, TypeError) as exc:
            remove_lora_layers(self.model)
            raise UserInputError(
                f"cannot load this adapter into the model (trained on a different base model?): {exc}",
                file=info.path,
                field="base_model",
            ) from None
        params = {
            n: v for n, v in tree_flatten(self.model.parameters()) if n.rsplit(".", 1)[-1] in ADAPTER_LEAVES
        }
        error = tensor_mismatch_error(
            info,
            missing=[n for n in params if n not in weights],
            unexpected=[n for n in weights if n not in params],
            wrong_shape=[n for n, w in weights.items() if n in params and w.shape != params[n].shape],
        )
        if error is not None:
            remove_lora_layers(self.model)
            raise error
        self.model.load_weights(list(weights.items()), strict=False)
        self.model.eval()
        mods = _adapter_modules(self.model)
        lora = [(n, m) for n, m, _ in mods]
        base = [(n, b) for n, _, b in mods]
        self._sets[key] = (lora, base)
        self._active = key

    def remove_adapter(self, key: str) -> None:
        """Drop the adapter ``key`` (its LoRA layers are freed once swapped out)."""
        if key not in self._sets:
            return
        if self._active == key:
            self._swap(None)
        del self._sets[key]

    def tokens(self, prompt_ids: list[int], sampling: Sampling, adapter: str | None) -> Iterator[int]:
        """Yield new token ids for ``prompt_ids`` from ``mlx_lm.generate_step`` (at most
        ``sampling.max_new_tokens``), with ``adapter`` swapped in before every step.

        The repetition penalty looks at the whole prompt and reply (mlx-lm's context size set to
        their length), as transformers' does, so both backends sample alike."""
        sampler = make_sampler(temp=sampling.temperature, top_p=sampling.top_p if sampling.top_p < 1 else 0.0)
        processors = None
        if sampling.repetition_penalty != 1.0:
            processors = make_logits_processors(
                repetition_penalty=sampling.repetition_penalty,
                repetition_context_size=len(prompt_ids) + sampling.max_new_tokens,
            )
        if not sampling.greedy:
            mx.random.seed(sampling.seed)
        steps = generate_step(
            mx.array(prompt_ids),
            self.model,
            max_tokens=sampling.max_new_tokens,
            sampler=sampler,
            logits_processors=processors,
        )
        try:
            while True:
                self._swap(adapter)
                try:
                    token, _ = next(steps)
                except StopIteration:
                    return
                yield int(token)
        finally:
            steps.close()
