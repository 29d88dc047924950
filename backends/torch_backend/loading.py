"""Load a causal LM from a local model folder, the one way every PyTorch path does it (training,
chat, export): safetensors weights only (no pickle), local files only (no network), and never the
folder's own Python code (``trust_remote_code=False``: a model folder or an adapter naming one as
its base can hold a ``configuration_*.py`` / ``modeling_*.py``, and transformers would otherwise
ask on the terminal whether to run it).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from transformers import AutoModelForCausalLM

from backends.errors import UserInputError
from backends.training.oom import is_out_of_memory
from backends.weights_check import check_safetensors

# The keyword arguments that make a from_pretrained call safe for a user's folder.
SAFE_LOAD = {"local_files_only": True, "trust_remote_code": False}


def load_causal_lm(model_dir: str | Path, dtype: torch.dtype | None = None, **extra: Any) -> Any:
    """``AutoModelForCausalLM`` from ``model_dir`` in ``dtype`` (None: the checkpoint's own);
    ``extra``: more ``from_pretrained`` arguments (e.g. ``quantization_config``, ``device_map``).

    Raises UserInputError naming the folder when it has no safetensors weights, needs custom code,
    or cannot be read (a corrupt config.json, a truncated weights file).
    """
    from safetensors import SafetensorError

    model_dir = Path(model_dir)
    if not any(model_dir.glob("*.safetensors")):
        raise UserInputError(
            "no safetensors weights in this model folder (pickle weights are not loaded)",
            file=model_dir,
            field="model",
            hint="import the model with `tunedesk models import PATH`",
        )
    try:
        return AutoModelForCausalLM.from_pretrained(
            model_dir, dtype=dtype, use_safetensors=True, **SAFE_LOAD, **extra
        )
    except (OSError, ValueError, KeyError, SafetensorError) as exc:
        if is_out_of_memory(exc):  # a memory limit hit while mapping the weights: not a bad folder
            raise
        if isinstance(exc, SafetensorError):  # name the damaged file, in plain words
            for weights in sorted(model_dir.glob("*.safetensors")):
                check_safetensors(weights, "model weights file", field="model")
        message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        if "trust_remote_code" in str(exc):
            message = "this model needs its own Python code (trust_remote_code), which TuneDesk never runs"
        raise UserInputError(f"cannot load this model: {message}", file=model_dir, field="model") from None
