"""The MLX engine's files: the adapter in mlx-lm's format (``adapters.safetensors`` +
``adapter_config.json``) and a checkpoint's optimizer and random state, written and read back
exactly. A mixin of ``backends.mlx_backend.engine.MLXEngine``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import mlx.core as mx
import numpy as np
from mlx.utils import tree_flatten, tree_unflatten

from backends.errors import UserInputError
from backends.export import CONFIG_FILE, MLX_WEIGHTS, mlx_adapter_config

OPTIMIZER_FILE = "mlx_optimizer.safetensors"
RNG_FILE = "mlx_rng.json"


class StateFiles:
    """Adapter and checkpoint files of ``MLXEngine``."""

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
