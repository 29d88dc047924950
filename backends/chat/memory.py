"""Will chat fit next to a training run that is going on? A warning before the model loads.

The estimate is from parameter counts (safetensors headers, nothing loaded): weights at the
precision chat loads them in (PyTorch: 4 bytes fp32 on the CPU, 2 bytes fp16/bf16 on a GPU; MLX:
the stored dtype, i.e. the safetensors files' size) plus 20% for the KV cache, activations and
allocator slack (a common rule of thumb for inference). Free memory is what the
system reports now (psutil's available RAM; free VRAM from NVML for CUDA), so a training run that
already holds its memory is counted. A run that has started but not yet reported a step may not
have loaded its model yet: its model's weights are then reserved too (fp32, 4 bytes/parameter).
The desktop app calls this, so it imports no ML library.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import psutil

from backends.hardware import GB
from backends.model_store_info import safetensors_param_count
from backends.runs import RunDir, list_runs, run_status

OVERHEAD = 1.2


def bytes_per_param(device: str) -> int:
    """Bytes per weight chat loads with on ``device``: fp32 on the CPU, 16-bit on a GPU."""
    return 4 if device == "cpu" else 2


def chat_bytes(model_dir: str | Path, device: str, backend: str = "torch") -> int:
    """Estimated bytes chat needs for the model in ``model_dir`` on ``device`` with ``backend``."""
    if backend == "mlx":
        weights = sum(f.stat().st_size for f in Path(model_dir).glob("*.safetensors"))
        return int(weights * OVERHEAD)
    return int(safetensors_param_count(model_dir) * bytes_per_param(device) * OVERHEAD)


def active_runs(runs_dir: str | Path | None = None) -> list[RunDir]:
    """Run folders whose training process is alive now (``run_status == 'running'``)."""
    return [r for r in list_runs(runs_dir) if run_status(r) == "running"]


def _pending_training_bytes(run: RunDir) -> int:
    """Weights a running run has yet to load: none once it reported a step."""
    events = run.events()
    if any(e["event"] == "step" for e in events):
        return 0
    started = next((e for e in events if e["event"] == "run_started"), None)
    if started and started.get("params_total"):
        return int(started["params_total"]) * 4
    return 0


def free_memory(device: str, gpus: list[dict[str, Any]] | None = None) -> int:
    """Bytes free for ``device`` now: NVML's free VRAM of the first GPU for CUDA, else available RAM
    (the CPU, and Apple silicon's unified memory)."""
    if device.startswith("cuda") and gpus:
        return int(gpus[0]["memory_free"])
    return int(psutil.virtual_memory().available)


def memory_warning(
    model_dir: str | Path,
    device: str,
    runs_dir: str | Path | None = None,
    *,
    backend: str = "torch",
    free: int | None = None,
) -> str | None:
    """A warning in words when a training run is active and chat would not fit beside it; else None.

    ``device``: where chat will run (``cpu``, ``cuda``, ``mps``, ``gpu`` for MLX); ``backend``:
    ``torch`` or ``mlx``; ``free``: free bytes (default: measured now, see ``free_memory``).
    """
    running = active_runs(runs_dir)
    if not running:
        return None
    if free is None:
        gpus = None
        if device.startswith("cuda"):
            from backends.hardware import nvidia_gpus

            gpus = nvidia_gpus()
        free = free_memory(device, gpus)
    need = chat_bytes(model_dir, device, backend)
    reserve = sum(_pending_training_bytes(r) for r in running)
    if need + reserve <= free:
        return None
    names = ", ".join(r.path.name for r in running)
    return (
        f"A training run is active ({names}). Chat needs about {need / GB:.1f} GB for "
        f"{Path(model_dir).name} on {device}"
        + (f" and the training still has to load about {reserve / GB:.1f} GB" if reserve else "")
        + f", but only {free / GB:.1f} GB are free: the two may not fit together. Chatting now can "
        "slow the training down or make either run out of memory; stop the training first, or wait "
        "for it to finish."
    )
