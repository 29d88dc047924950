"""The module the PyTorch engine's training loss runs through (``LabelledForward``): one place for
the forward pass at labelled positions, which DDP wraps when a run trains on several processes."""

from __future__ import annotations

import torch
from torch import nn


class LabelledForward(nn.Module):
    """The model's forward pass at the labelled positions only: logits [N, V] for the N True
    entries of ``selected`` [B, T-1] (position t predicting token t + 1). For models in
    ``FAST_LOSS_MODEL_TYPES`` (``fast``) the output head is applied at those positions only. This
    is the module DDP wraps on several processes (DDP synchronises what runs through its forward)."""

    def __init__(self, model: nn.Module, fast: bool) -> None:
        super().__init__()
        self.model = model
        self.fast = fast

    def forward(
        self, input_ids: torch.Tensor, mask: torch.Tensor, position_ids: torch.Tensor, selected: torch.Tensor
    ) -> torch.Tensor:
        hf_model = self.model.get_base_model()
        if self.fast:
            hidden = hf_model.get_decoder()(
                input_ids=input_ids, attention_mask=mask, position_ids=position_ids, use_cache=False
            ).last_hidden_state
            return hf_model.get_output_embeddings()(hidden[:, :-1][selected])
        return hf_model(
            input_ids=input_ids, attention_mask=mask, position_ids=position_ids, use_cache=False
        ).logits[:, :-1][selected]
