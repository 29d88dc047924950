"""What ``tunedesk export RUN_DIR --format ...`` starts from, and every check made before writing.

A run's ``adapter/`` (or a stopped run's last checkpoint) names its base model in ``tunedesk.json``
and holds the chat template it trained with (``backends.chat.adapters.read_adapter``); the run's
``config.yaml`` gives ``data.system_prompt``. ``resolve_source`` gathers these and fails, as a
``UserInputError`` naming the path, for a run with no adapter yet or a base model that is missing.
``plan_export`` then sizes the output (from safetensors headers only) and checks the free disk
space and the output folder before anything is written.

This module imports no ML library: the desktop app calls ``plan_export`` for its size estimate.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from backends import paths
from backends.chat.adapters import AdapterInfo, read_adapter
from backends.errors import UserInputError
from backends.model_store_info import folder_size, safetensors_param_count

FORMATS = ("merged", "gguf", "ollama", "mlx")
GGUF_QUANTS = ("f16", "bf16", "q8_0", "q4_k_m", "q5_k_m", "q6_k")
FLOAT_DTYPES = ("bf16", "f16", "f32")
# Bits per weight of each GGUF type as llama.cpp stores them (block scales included), for sizes.
BITS_PER_WEIGHT = {"f32": 32.0, "f16": 16.0, "bf16": 16.0, "q8_0": 8.5, "q6_k": 6.56, "q5_k_m": 5.7}
BITS_PER_WEIGHT["q4_k_m"] = 4.85
K_QUANT_BLOCK = 256  # llama.cpp's QK_K: a K-quant row must be a multiple of this many weights


@dataclass(frozen=True)
class ExportSource:
    """A run's adapter and everything an export needs beside it.

    ``base_dir``: the base model's HF folder; ``chat_template``: the template the run trained
    with (Jinja text); ``system_prompt``: the run's ``data.system_prompt`` or None; ``name``: a
    short name for output files (the run folder's name).
    """

    adapter: AdapterInfo
    base_dir: Path
    base_config: dict[str, Any]
    chat_template: str | None
    system_prompt: str | None
    name: str

    @property
    def params(self) -> int:
        """Parameters of the base model (= of the merged model), from its safetensors headers."""
        return safetensors_param_count(self.base_dir)

    @property
    def architecture(self) -> str | None:
        """The base model's ``architectures[0]`` (``LlamaForCausalLM``), None when not given."""
        archs = self.base_config.get("architectures") or []
        return archs[0] if archs else None


def _run_config(run_dir: Path | None) -> dict[str, Any]:
    if run_dir is None or not (run_dir / "config.yaml").is_file():
        return {}
    try:
        return yaml.safe_load((run_dir / "config.yaml").read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise UserInputError(f"cannot read the run's config: {exc}", file=run_dir / "config.yaml") from None


FindModel = Callable[[str], Path]


def store_model(name: str) -> Path:
    """The model store's folder called ``name`` (files only: no import, no ML library); the
    export command passes ``backends.models.resolve_model`` instead, which also imports the
    default model on first use. UserInputError when the store has none."""
    stored = paths.models_dir() / name
    if (stored / "config.json").is_file():
        return stored
    raise UserInputError(f"unknown model {name!r}", field="model")


def _base_model_dir(info: AdapterInfo, find_model: FindModel | None = None) -> Path:
    """The base model's folder: the one recorded at training time if it is still there, else the
    model of that name (``find_model``, default ``store_model``). UserInputError when neither exists."""
    base = info.base_model or {}
    path = base.get("path")
    if path and (Path(path) / "config.json").is_file():
        return Path(path)
    name = base.get("name") or path
    if not name:
        raise UserInputError(
            "the adapter does not name its base model (no tunedesk.json, no base_model_name_or_path)",
            file=info.path,
            field="base_model",
        )
    try:
        return Path((find_model or store_model)(str(name)))
    except UserInputError:
        raise UserInputError(
            f"the adapter's base model {name!r} is missing"
            + (f" (it was at {path}, now gone)" if path else "")
            + " and is not in the model store",
            file=info.path,
            field="base_model",
            hint=f"import it again with `tunedesk models import PATH --name {Path(str(name)).name}`",
        ) from None


def resolve_source(run_dir: str | Path, find_model: FindModel | None = None) -> ExportSource:
    """The adapter of ``run_dir`` (a run folder or an adapter folder), its base model (found with
    ``find_model`` when its recorded folder is gone), chat template and system prompt. Raises
    UserInputError for a run with no adapter yet, an unreadable adapter, or a missing base model."""
    info = read_adapter(run_dir)
    base_dir = _base_model_dir(info, find_model)
    try:
        base_config = json.loads((base_dir / "config.json").read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise UserInputError(
            f"cannot read the base model's config: {exc}", file=base_dir / "config.json"
        ) from None
    run_cfg = _run_config(info.run_dir)
    template = info.chat_template
    if template is None and info.meta.get("template_choice") == "chatml":
        from backends.data.chatml import CHATML_TEMPLATE

        template = CHATML_TEMPLATE
    system = (run_cfg.get("data") or {}).get("system_prompt") or None
    return ExportSource(
        adapter=info,
        base_dir=base_dir,
        base_config=base_config,
        chat_template=template,
        system_prompt=system,
        name=(info.run_dir or info.path).name,
    )


def base_dtype(source: ExportSource) -> str:
    """``bf16``/``f16``/``f32``: the precision of the base model's weights as stored (the first
    floating tensor's safetensors dtype), else its config's ``dtype``/``torch_dtype``, else bf16."""
    import struct

    names = {"BF16": "bf16", "F16": "f16", "F32": "f32"}
    for file in sorted(source.base_dir.glob("*.safetensors")):
        with open(file, "rb") as fh:
            (length,) = struct.unpack("<Q", fh.read(8))
            header = json.loads(fh.read(length))
        for key, meta in header.items():
            if key != "__metadata__" and meta.get("dtype") in names:
                return names[meta["dtype"]]
    cfg = source.base_config
    stated = str(cfg.get("dtype") or cfg.get("torch_dtype") or "bfloat16")
    return {"float32": "f32", "float16": "f16"}.get(stated, "bf16")


def kquant_ready(config: dict[str, Any]) -> bool:
    """True when every layer width K-quants quantise row by row (``hidden_size``,
    ``intermediate_size``) is a multiple of 256 (llama.cpp's ``QK_K``). Where it is not (SmolLM2's
    576), llama.cpp falls back to other types for those tensors and Q4_K_M answers badly."""
    widths = [config.get("hidden_size"), config.get("intermediate_size")]
    widths = [int(w) for w in widths if isinstance(w, int)]
    return bool(widths) and all(w % K_QUANT_BLOCK == 0 for w in widths)


def resolve_quant(fmt: str, quant: str | None, source: ExportSource) -> str:
    """The quantisation (gguf/ollama) or precision (merged/mlx) to write; the choices are explained in ``tunedesk export --help``.
    UserInputError for a value the format does not take."""
    if fmt in ("gguf", "ollama"):
        if quant is None:
            return "q4_k_m" if kquant_ready(source.base_config) else "q8_0"
        q = quant.lower()
        if q not in GGUF_QUANTS:
            raise UserInputError(
                f"unknown GGUF type {quant!r}; choose one of {', '.join(GGUF_QUANTS)}", field="--quant"
            )
        return q
    if quant is None:
        return base_dtype(source)
    q = {"bfloat16": "bf16", "float16": "f16", "fp16": "f16", "float32": "f32", "fp32": "f32"}.get(
        quant.lower(), quant.lower()
    )
    if q not in FLOAT_DTYPES:
        raise UserInputError(
            f"{fmt} takes a precision, not {quant!r}; choose bf16, f16 or f32", field="--quant"
        )
    return q


def estimate_bytes(fmt: str, quant: str, params: int, extra: int = 0) -> tuple[int, int]:
    """(final output bytes, bytes needed on disk while writing) for ``params`` parameters and
    ``extra`` bytes of tokenizer and config files.

    gguf/ollama write a 16-bit merged model and a 16-bit GGUF before quantising (both removed at
    the end); merged/mlx write the model once."""
    final = int(params * BITS_PER_WEIGHT[quant] / 8) + extra
    if fmt in ("merged", "mlx"):
        return final, final
    temporary = 2 * params * 2 if quant not in ("f16", "bf16") else params * 2
    return final, final + temporary + extra


def side_files_bytes(model_dir: Path) -> int:
    """Bytes of a model folder's files other than weights (tokenizer, config, template)."""
    weights = (".safetensors", ".bin", ".pt", ".pth", ".gguf", ".npz")
    return sum(p.stat().st_size for p in model_dir.iterdir() if p.is_file() and not p.name.endswith(weights))


def default_out(source: ExportSource, fmt: str, quant: str) -> Path:
    """``RUN_DIR/exports/<format>-<quant>`` (beside the adapter folder when there is no run)."""
    base = source.adapter.run_dir or source.adapter.path.parent
    return base / "exports" / f"{fmt}-{quant}"


@dataclass(frozen=True)
class ExportPlan:
    """What an export will write: ``out`` folder, ``quant``, ``bytes`` (the output's estimated size)
    and ``bytes_needed`` (disk space while writing, temporary files included)."""

    source: ExportSource
    format: str
    quant: str
    out: Path
    bytes: int
    bytes_needed: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": self.format,
            "quant": self.quant,
            "path": str(self.out),
            "bytes": self.bytes,
            "bytes_needed": self.bytes_needed,
            "base_model": str(self.source.base_dir),
            "architecture": self.source.architecture,
        }


def plan_export(
    run_dir: str | Path,
    fmt: str,
    quant: str | None = None,
    out: str | Path | None = None,
    find_model: FindModel | None = None,
) -> ExportPlan:
    """Check an export before writing anything: the format, the run's adapter and base model, the
    quantisation, the output folder (must not exist) and the free disk space (at least
    ``bytes_needed``, stated in the message). Raises UserInputError for each problem."""
    if fmt not in FORMATS:
        raise UserInputError(
            f"unknown export format {fmt!r}; choose one of {', '.join(FORMATS)}", field="--format"
        )
    source = resolve_source(run_dir, find_model)
    q = resolve_quant(fmt, quant, source)
    target = Path(out).expanduser() if out is not None else default_out(source, fmt, q)
    if target.exists():
        raise UserInputError(
            "the output folder already exists; nothing was written",
            file=target,
            field="--out",
            hint="remove it or pass another --out",
        )
    size, needed = estimate_bytes(fmt, q, source.params, side_files_bytes(source.base_dir))
    needed += folder_size(source.adapter.path)
    check_disk(target, needed)
    return ExportPlan(source=source, format=fmt, quant=q, out=target, bytes=size, bytes_needed=needed)


def check_disk(target: Path, needed: int) -> None:
    """UserInputError when the disk that will hold ``target`` has less than ``needed`` bytes free."""
    probe = target.parent
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    free = shutil.disk_usage(probe).free
    if free < needed:
        raise UserInputError(
            f"not enough disk space: the export needs about {needed / 1e9:.2f} GB "
            f"({needed} bytes) and {probe} has {free / 1e9:.2f} GB free",
            file=target,
            field="--out",
            hint="free some space or pass --out on another disk",
        )
