"""A safetensors file checked before any framework reads it: a truncated or random-bytes file
becomes one line naming the file and what is wrong (exit 1), not a SafetensorError traceback."""

from __future__ import annotations

from pathlib import Path

from backends.errors import UserInputError


def check_safetensors(path: str | Path, what: str = "weights file", field: str | None = None) -> list[str]:
    """Open ``path`` as safetensors (header and size only, no tensor is read) and return its tensor
    names. Raises UserInputError naming the file when it is missing, unreadable, or not a complete
    safetensors file (random bytes, cut off, empty)."""
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    try:
        with safe_open(str(path), framework="numpy") as fh:
            return list(fh.keys())
    except FileNotFoundError:
        raise UserInputError(f"{what} not found", file=path, field=field) from None
    except (SafetensorError, OSError, ValueError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise UserInputError(
            f"{what} is not a valid safetensors file ({reason}); the file is damaged or incomplete",
            file=path,
            field=field,
        ) from None
