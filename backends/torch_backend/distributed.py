"""The PyTorch engine as one of several processes (``tunedesk train --nproc N``): torch.distributed.

A process started by torchrun (``backends.jobs.launch``) finds ``RANK``, ``WORLD_SIZE``,
``LOCAL_RANK`` and the rendezvous address in its environment (``is_distributed``); ``join`` then
joins the process group (NCCL on CUDA, one GPU per process, ``LOCAL_RANK`` picks it; gloo on the
CPU) with a timeout (``TIMEOUT``), so a collective whose peer is alive but stuck fails instead of
hanging. ``TorchWorld`` is the framework-neutral loop's ``World``
(``backends.training.distributed``) over that group; ``wrap`` puts the module that computes the
loss into ``DistributedDataParallel`` (DDP: gradients averaged over processes during backward).
"""

from __future__ import annotations

import atexit
import contextlib
import os
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from backends.errors import UserInputError

# How long a collective may wait for a live process (a checkpoint write or the rank-0-only
# forgetting check keeps the others waiting). A process that DIES is noticed by torchrun's
# monitor at once, whatever this is.
TIMEOUT = timedelta(seconds=int(os.environ.get("TUNEDESK_DIST_TIMEOUT", "600")))


def is_distributed() -> bool:
    """This process is one of several started by torchrun (``WORLD_SIZE`` > 1 in the environment)."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


class TorchWorld:
    """The run's processes over torch.distributed (see ``backends.training.distributed.World``).
    ``device``: where tensors of collectives live ("cuda" with NCCL, "cpu" with gloo)."""

    def __init__(self, rank: int, size: int, local_rank: int, device: str) -> None:
        self.rank, self.size, self.local_rank, self.device = rank, size, local_rank, device

    def _tensor(self, values: list[float]) -> torch.Tensor:
        return torch.tensor(values, dtype=torch.float64, device=self.device)

    def any(self, flag: bool) -> bool:
        t = self._tensor([1.0 if flag else 0.0])
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return bool(t.item() > 0)

    def totals(self, values: list[float]) -> list[float]:
        """Element-wise sums over the processes of ``values`` (float64; one all-reduce)."""
        t = self._tensor(values)
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
        return [float(v) for v in t.tolist()]

    def sum(self, values: dict[str, float]) -> dict[str, float]:
        gathered: list[Any] = [None] * self.size
        dist.all_gather_object(gathered, dict(values))
        out: dict[str, float] = {}
        for part in gathered:
            for key, value in part.items():
                out[key] = out.get(key, 0.0) + float(value)
        return out

    def gather(self, obj: Any) -> list[Any] | None:
        out: list[Any] | None = [None] * self.size if self.rank == 0 else None
        dist.gather_object(obj, out, dst=0)
        return out

    def broadcast(self, obj: Any) -> Any:
        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def barrier(self) -> None:
        dist.barrier()


def join(device: str) -> TorchWorld:
    """Join the process group of this torchrun-started process on ``device`` ("cuda": the GPU
    numbered ``LOCAL_RANK``, NCCL; "cpu": gloo). Raises UserInputError on MPS (no multi-process
    training there) and when there are fewer GPUs than processes on this machine."""
    rank, size = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device == "cuda":
        count = torch.cuda.device_count()
        if local_rank >= count:
            raise UserInputError(
                f"process {local_rank} of this machine needs GPU {local_rank}, and {count} GPU(s) are visible",
                field="--nproc",
                hint=f"use at most --nproc {count} here (one process per GPU)",
            )
        torch.cuda.set_device(local_rank)
        backend = "nccl"
    elif device == "cpu":
        backend = "gloo"
    else:
        raise UserInputError(
            f"training on several processes needs CUDA GPUs or the CPU, not {device}",
            field="--nproc",
            hint="drop --nproc (Apple silicon: see README, 'Several GPUs or machines')",
        )
    if not dist.is_initialized():
        dist.init_process_group(backend, timeout=TIMEOUT)
        atexit.register(_leave)
    return TorchWorld(rank, size, local_rank, device)


def _leave() -> None:
    with contextlib.suppress(Exception):
        if dist.is_initialized():
            dist.destroy_process_group()


def wrap(module: nn.Module, world: TorchWorld) -> nn.Module:
    """``module`` in DDP for ``world``: rank 0's weights are sent to all at construction, and the
    trainable parameters' gradients are averaged over the processes in backward (all of them take
    part in every step; buffers are not broadcast: rotary tables and the like are equal everywhere)."""
    import inspect

    from torch.nn.parallel import DistributedDataParallel

    # torch 2.13 renamed broadcast_buffers; either way buffers are not re-sent at every forward.
    params = inspect.signature(DistributedDataParallel).parameters
    no_sync = (
        {"forward_sync_buffers": False} if "forward_sync_buffers" in params else {"broadcast_buffers": False}
    )
    return DistributedDataParallel(
        module, device_ids=[world.local_rank] if world.device == "cuda" else None, **no_sync
    )
