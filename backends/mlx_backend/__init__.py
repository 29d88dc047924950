"""The MLX training backend (Apple silicon; ``mlx[cpu]`` on Linux for tests), on mlx-lm's tuner.

The shared loop (``backends.training``) drives it through the ``Engine`` protocol
(``backends/training/engine.py``); this package holds only what differs from the PyTorch backend.
Importing this package is cheap: MLX itself is imported by ``create_engine``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from backends.errors import UserInputError

if TYPE_CHECKING:
    from backends.config import RunConfig
    from backends.mlx_backend.engine import MLXEngine

INSTALL_HINT = (
    "on Apple silicon: pip install mlx mlx-lm; on Linux (slow, for tests): pip install 'mlx[cpu]' mlx-lm; "
    "or set backend: torch"
)


def require_mlx() -> None:
    """Check that ``mlx`` and ``mlx-lm`` import.

    Raises UserInputError (field ``backend``) naming what is missing and how to install it, so
    ``backend: mlx`` on a machine without MLX is a clear message (exit 1), not a traceback.
    """
    missing = []
    for module, package in (("mlx.core", "mlx"), ("mlx_lm", "mlx-lm")):
        try:
            __import__(module)
        except ImportError as exc:
            missing.append(f"{package} ({exc})")
    if missing:
        raise UserInputError(
            "backend 'mlx' needs MLX, which is not installed or does not import here: " + "; ".join(missing),
            field="backend",
            hint=INSTALL_HINT,
        )


MLX_METHODS = ("sft", "dpo", "orpo", "kto")
# Why GRPO is refused on MLX (shown to the user; the README says the same).
GRPO_ON_MLX = (
    "method 'grpo' runs on the PyTorch backend only: its steps sample completions from the model being "
    "trained, and TuneDesk keeps one sampling path (PyTorch's, whose random state checkpoints and "
    "resume exactly) rather than a second one on mlx-lm's generator"
)


def create_engine(config: RunConfig) -> MLXEngine:
    """The Engine factory the shared loop calls for ``backend: mlx`` (see the Engine protocol).

    Raises UserInputError when MLX is missing (see ``require_mlx``), or for a method MLX does not
    run (GRPO: ``GRPO_ON_MLX`` says why).
    """
    if config.method == "grpo":
        raise UserInputError(
            GRPO_ON_MLX, field="backend", hint="set backend: torch (or auto, which picks PyTorch for GRPO)"
        )
    require_mlx()
    from backends.mlx_backend.engine import MLXEngine

    return MLXEngine()
