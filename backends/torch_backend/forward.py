"""The module the PyTorch engine's forward pass runs through (``LabelledForward``): one place for
the forward at labelled positions, which DDP wraps (or FSDP shards) when a run trains on several
processes: they synchronise what runs through a module's ``forward``."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn


class LabelledForward(nn.Module):
    """The peft model's forward pass at the positions ``selected`` (bool, the shape of the
    inputs' tokens) that carry a target. ``mode``: "hidden" returns the decoder's hidden states
    there [N, d] (the engine applies the head in chunks, ``head_loss``); "logits" returns the
    model's logits there [N, V] (the model's own forward, head included).
    ``inputs``: the keyword arguments of the decoder / model (input ids, position ids, mask...).
    """

    def __init__(self, model: nn.Module, mode: str) -> None:
        super().__init__()
        self.model = model
        self.mode = mode

    def forward(self, selected: torch.Tensor, **inputs: Any) -> torch.Tensor:
        hf_model = self.model.get_base_model()
        if self.mode == "hidden":
            return hf_model.get_decoder()(**inputs, use_cache=False).last_hidden_state[selected]
        return hf_model(**inputs, use_cache=False).logits[selected]
