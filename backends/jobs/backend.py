"""Which backend runs a job: ``backend: auto|torch|mlx`` -> (backend, device) -> an engine.

One rule for training and chat: ``auto`` follows ``backends.hardware.detect()`` (MLX on Apple
silicon with MLX installed, else PyTorch on CUDA, MPS or the CPU, as ``tunedesk hardware``
reports); ``mlx`` checks that MLX imports (``backends.mlx_backend.require_mlx``); ``torch`` leaves
the device to ``backends.torch_backend.device.pick_device``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from backends.errors import UserInputError

if TYPE_CHECKING:
    from backends.config import RunConfig
    from backends.training.engine import Engine


def select_backend(requested: str) -> tuple[str, str | None]:
    """(backend, torch device or None) for ``requested`` ("auto", "torch" or "mlx").

    The device is None when the backend picks it itself (MLX; PyTorch asked for explicitly).
    Raises UserInputError (field ``backend``) when MLX is asked for and does not import here.
    """
    if requested == "mlx":
        try:
            from backends import mlx_backend

            mlx_backend.require_mlx()
        except ImportError as exc:  # the package itself failed to import
            raise UserInputError(
                f"backend 'mlx' is not available here: {exc}",
                field="backend",
                hint="install mlx and mlx-lm (Apple silicon), or set backend: torch",
            ) from None
        return "mlx", None
    if requested == "torch":
        return "torch", None
    if requested != "auto":
        raise UserInputError(f"unknown backend {requested!r}", field="backend", hint="auto, torch or mlx")
    from backends import hardware

    info = hardware.detect(probe_frameworks=True)
    return info["backend"], (info["device"] if info["backend"] == "torch" else None)


def make_engine(config: RunConfig) -> Engine:
    """The training engine for ``config.backend`` (see ``select_backend``), ready for ``setup``.
    Raises UserInputError when MLX is asked for but missing."""
    backend, device = select_backend(config.backend)
    if backend == "mlx":
        from backends import mlx_backend

        if config.backend != "auto" or config.method in mlx_backend.MLX_METHODS:
            return mlx_backend.create_engine(config)
        device = None  # auto picked MLX, but this method runs on PyTorch only (GRPO)
    from backends import torch_backend

    return torch_backend.create_engine(config, device)
