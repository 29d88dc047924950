"""Model sizes in words a person reads: parameter counts (134.5M), bytes (98.2 MB) and what a GGUF
import stores (``size_note``), for the Model page."""

from __future__ import annotations

from pathlib import Path

from backends.model_store_info import gguf_import_estimate


def format_params(n: int | None) -> str:
    """``134515008`` -> ``134.5M``."""
    if not n:
        return "-"
    if n >= 1e9:
        return f"{n / 1e9:.2f}B"
    if n >= 1e6:
        return f"{n / 1e6:.1f}M"
    return f"{n / 1e3:.1f}K"


def format_bytes(n: int | None) -> str:
    """``1500`` -> ``1.5 KB``: decimal units (powers of 1000), as ``backends.hardware.GB``."""
    if n is None:
        return "-"
    size = float(n)
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1000 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    return f"{size:.1f} TB"


def size_note(path: str | Path, dtype: str) -> str:
    """For a GGUF file: the sizes before and after the import, said before it starts, e.g.
    "The 98.2 MB file is stored unquantised in bf16 for training: about 256.6 MB on disk."
    Empty for a model folder (copied or linked as it is) or an unreadable file."""
    if Path(path).suffix.lower() != ".gguf":
        return ""
    estimate = gguf_import_estimate(path, dtype)
    if estimate is None:
        return ""
    return (
        f"The {format_bytes(estimate['file_bytes'])} file is compressed (quantised); training needs it "
        f"unpacked, so it is stored unquantised in {dtype}: about {format_bytes(estimate['stored_bytes'])} "
        "on disk."
    )
