"""FSDP for a run on several processes whose model one GPU cannot hold (``training.distributed:
fsdp``): torch.distributed.fsdp's ``fully_shard`` (FSDP2) over the decoder layers and the module the
loss runs through (``LabelledForward``), so each process keeps 1/N of every weight, the frozen base
included, and gathers a layer's weights only while it runs. ``training.fsdp_cpu_offload`` keeps the
shards in CPU memory between uses (``CPUOffloadPolicy``; CUDA only).

The adapter and AdamW state of a checkpoint are gathered from the shards by every process
(``gather``: a collective, called by the loop on all ranks before rank 0 writes) and written in the
same files as with DDP (peft's adapter files; ``optimizer.pt`` holds torch's full optimizer state
dict keyed by parameter name); ``load`` gives every process its shard of them back.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from backends.errors import UserInputError


def shard(forward: nn.Module, decoder_layers: list[nn.Module], world: Any, cpu_offload: bool) -> None:
    """Shard ``forward`` (the loss module, holding the peft model) over ``world``'s processes: each
    decoder layer, then the rest (embeddings, final norm, head). Raises UserInputError for CPU
    offload without CUDA."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import CPUOffloadPolicy, fully_shard

    options: dict[str, Any] = {"mesh": init_device_mesh(world.device, (world.size,))}
    if cpu_offload:
        if world.device != "cuda":
            raise UserInputError(
                "training.fsdp_cpu_offload needs CUDA GPUs (on the CPU the weights are in CPU memory already)",
                field="training.fsdp_cpu_offload",
            )
        options["offload_policy"] = CPUOffloadPolicy()
    for layer in decoder_layers:
        fully_shard(layer, **options)
    fully_shard(forward, **options)


def full_tensor(t: torch.Tensor) -> torch.Tensor:
    """The whole tensor of a shard (a collective for a DTensor), on the CPU."""
    return (t.full_tensor() if hasattr(t, "full_tensor") else t).detach().cpu()


def gather(forward: nn.Module, model: nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """Every process: the adapter weights (peft model parameter names -> whole tensors) and the
    full optimizer state dict, for rank 0 to write."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict

    weights = {name: full_tensor(p) for name, p in model.named_parameters() if p.requires_grad}
    options = StateDictOptions(full_state_dict=True, cpu_offload=True)
    return {"weights": weights, "optimizer": get_optimizer_state_dict(forward, optimizer, options=options)}


def load(forward: nn.Module, optimizer: torch.optim.Optimizer, weights: dict[str, Any], optim: Any) -> None:
    """Every process: take its shards of whole adapter ``weights`` (keys as ``forward``'s
    ``state_dict``) and of the full optimizer state ``optim``."""
    from torch.distributed.checkpoint.state_dict import (
        StateDictOptions,
        set_model_state_dict,
        set_optimizer_state_dict,
    )

    options = StateDictOptions(full_state_dict=True, strict=False)
    set_model_state_dict(forward, weights, options=options)
    set_optimizer_state_dict(forward, optimizer, optim, options=StateDictOptions(full_state_dict=True))
