"""Quantised base models (QLoRA, Dettmers et al. 2023) and 8-bit optimizers through bitsandbytes.

``lora.quantize: 4`` loads every linear layer of the frozen base as NF4 with double quantisation
(bitsandbytes ``Linear4bit``) and computes in the run's precision (bf16 where the device has it);
``8`` loads them as LLM.int8() (``Linear8bitLt``). Embeddings, norms and the output head stay in
the compute precision (transformers' bitsandbytes integration skips the output head). The LoRA
adapter on top stays fp32 and is saved in peft's format with the base's unquantised module names,
so it loads, chats and exports against the unquantised base like any other adapter.

Where it runs: bitsandbytes >= 0.48 runs both on NVIDIA GPUs and on x86-64 CPUs (measured here with
0.50.2: SmolLM2-135M takes 105 MB as nf4, 155 MB as int8, 257 MB in bf16, and LoRA trains at about
bf16's speed); ``check_quantization`` tries a tiny quantise first and turns a failure into a
UserInputError. On x86 CPUs with AVX512-BF16 bitsandbytes also looks for a fused 4-bit matmul in
the ``kernels`` package (a Hugging Face Hub download) and logs a warning when it is missing; without
it 4-bit layers dequantise to bf16 before each matmul, which is what training does anyway, so the
warning is replaced by a note.

``training.optimizer``: ``adamw_8bit`` and ``paged_adamw_8bit`` are bitsandbytes' AdamW with 8-bit
state (paged: the state can spill to CPU memory under pressure). Only on CUDA: on the CPU, MPS or
MLX the run is refused with a UserInputError (torch's AdamW there; its state is small for LoRA).
"""

from __future__ import annotations

import logging
from typing import Any

import torch

from backends.errors import UserInputError

# The logger bitsandbytes' CPU backend warns on when its optional fused kernel is missing.
_BNB_CPU_LOGGER = "bitsandbytes.backends.cpu.ops"
KERNELS_NOTE = (
    "bitsandbytes' fused CPU 4-bit matmul (package `kernels`, a hub download) is not installed: "
    "4-bit layers dequantise to bf16 per matmul (works, about bf16 speed)"
)
INSTALL_HINT = "pip install 'tunedesk[quant]' (bitsandbytes), or set lora.quantize: null"


class _DropKernelsWarning(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "kernels" not in record.getMessage()


# Installed on import, before peft (which imports bitsandbytes when it is installed) is imported.
logging.getLogger(_BNB_CPU_LOGGER).addFilter(_DropKernelsWarning())


def import_bitsandbytes() -> Any:
    """Import bitsandbytes (its missing-``kernels`` warning is filtered, see module docstring).

    Raises UserInputError (field ``lora.quantize``) when it is not installed or fails to import."""
    try:
        import bitsandbytes
    except Exception as exc:  # ImportError, or a RuntimeError from a library without its binary
        raise UserInputError(
            f"quantised training needs bitsandbytes, which does not import here: {exc}",
            field="lora.quantize",
            hint=INSTALL_HINT,
        ) from None
    return bitsandbytes


def check_quantization(bits: int, device: str) -> list[str]:
    """Check that the installed bitsandbytes can quantise on ``device`` (a tiny tensor is quantised
    and dequantised); returns notes for the run log. Raises UserInputError naming what failed."""
    bnb = import_bitsandbytes()
    probe = torch.linspace(-1, 1, 256, dtype=torch.bfloat16, device=device).reshape(4, 64)
    try:
        if bits == 4:
            packed, state = bnb.functional.quantize_4bit(probe, quant_type="nf4", compress_statistics=True)
            back = bnb.functional.dequantize_4bit(packed, state)
        else:
            back = bnb.functional.int8_vectorwise_dequant(*bnb.functional.int8_vectorwise_quant(probe)[:2])
        if not torch.isfinite(back.float()).all():
            raise RuntimeError("dequantised values are not finite")
    except Exception as exc:
        raise UserInputError(
            f"bitsandbytes {bnb.__version__} cannot quantise to {bits} bits on {device}: "
            f"{str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__}",
            field="lora.quantize",
            hint="4-bit and 8-bit bases run on NVIDIA GPUs and x86-64 CPUs with bitsandbytes >= 0.48; "
            "set lora.quantize: null here",
        ) from None
    notes = [f"bitsandbytes {bnb.__version__}"]
    if device == "cpu" and bits == 4:
        notes.append(KERNELS_NOTE)
    return notes


def quantization_config(bits: int, compute_dtype: torch.dtype) -> Any:
    """transformers' ``BitsAndBytesConfig`` for ``bits`` (4: nf4 + double quantisation with
    ``compute_dtype``; 8: LLM.int8())."""
    from transformers import BitsAndBytesConfig

    if bits == 4:
        return BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=compute_dtype,
        )
    return BitsAndBytesConfig(load_in_8bit=True)


def make_optimizer(
    name: str, params: list[torch.nn.Parameter], device: str, *, lr: float, weight_decay: float
) -> torch.optim.Optimizer:
    """AdamW (betas 0.9/0.999, eps 1e-8) for ``training.optimizer``: torch's, or bitsandbytes'
    8-bit / paged 8-bit on CUDA. Raises UserInputError for an 8-bit optimizer off CUDA."""
    kwargs = {"lr": lr, "weight_decay": weight_decay, "betas": (0.9, 0.999), "eps": 1e-8}
    if name == "adamw":
        return torch.optim.AdamW(params, **kwargs)
    if device != "cuda":
        raise UserInputError(
            f"training.optimizer {name} needs an NVIDIA GPU (bitsandbytes' 8-bit optimizers); "
            f"this run is on {device}",
            field="training.optimizer",
            hint="set training.optimizer: adamw (a LoRA adapter's optimizer state is small)",
        )
    bnb = import_bitsandbytes()
    cls = bnb.optim.PagedAdamW8bit if name == "paged_adamw_8bit" else bnb.optim.AdamW8bit
    return cls(params, **kwargs)


def detach_from_file(model: torch.nn.Module) -> int:
    """Copy the unquantised CPU tensors of a quantised model (embeddings, norms) out of the
    safetensors file they were loaded from without a copy, so that the file's memory map is
    released: otherwise every page of the full-precision file stays resident beside the quantised
    weights (measured: 2.0 GB of file pages kept for a 1.2B model). Returns the bytes copied."""
    copied = 0
    for tensors in (model.parameters(), model.buffers()):
        for t in tensors:
            if t.device.type == "cpu" and t.dtype.is_floating_point:
                t.data = t.data.clone()
                copied += t.numel() * t.element_size()
    return copied
