"""Find and check a trained adapter for chat, from its files alone (no ML library imported).

A run folder's ``adapter/`` (layout: ``../shared/design.md``) holds the adapter in its backend's
native format, the chat template it was trained with (``chat_template.jinja``) and
``tunedesk.json`` (``{"base_model": {"name", "path"}, "backend", "method"}``):

- PEFT format (PyTorch backend): ``adapter_config.json`` (with ``peft_type``) and
  ``adapter_model.safetensors``;
- MLX format (mlx-lm): ``adapter_config.json`` (with ``lora_parameters``) and
  ``adapters.safetensors``.

Every problem is a ``UserInputError`` naming the path and what is wrong; chat never falls back to
the base model silently. The weight shapes are checked against the model by the backend that loads
it (``torch_generator``/``mlx_generator``). The desktop app imports this module, so it must stay
free of torch, transformers, peft and mlx (import-linter checks it).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from backends.errors import UserInputError
from backends.runs import RunDir, run_status

TEMPLATE_FILE = "chat_template.jinja"
META_FILE = "tunedesk.json"
CONFIG_FILE = "adapter_config.json"
PEFT_WEIGHTS = ("adapter_model.safetensors", "adapter_model.bin")
MLX_WEIGHTS = "adapters.safetensors"


@dataclass(frozen=True)
class AdapterInfo:
    """What chat needs to know about one adapter folder.

    ``format``: ``"peft"`` or ``"mlx"``; ``base_model``: ``{"name": str|None, "path": str|None}``
    from ``tunedesk.json`` (or peft's ``base_model_name_or_path``), None when neither names it;
    ``chat_template``: the exact training-time template text, None when the folder has none;
    ``run_dir``: the run folder when the adapter is one's ``adapter/`` or (a stopped run) one of its
    checkpoints, whose template is then given by ``meta["template_choice"]``.
    """

    path: Path
    format: str
    config: dict[str, Any]
    base_model: dict[str, str | None] | None
    chat_template: str | None
    meta: dict[str, Any] = field(default_factory=dict)
    run_dir: Path | None = None

    @property
    def name(self) -> str:
        """A short display name: the run folder's name (with the checkpoint), else the folder's."""
        if self.run_dir is not None and self.meta.get("checkpoint"):
            return f"{self.run_dir.name} ({self.path.name})"
        return (self.run_dir or self.path).name

    @property
    def backend(self) -> str:
        """The backend whose native format this is: ``torch`` for PEFT, ``mlx`` for mlx-lm."""
        return "torch" if self.format == "peft" else "mlx"

    @property
    def weights_file(self) -> Path:
        """The adapter's weights file."""
        if self.format == "mlx":
            return self.path / MLX_WEIGHTS
        return next(
            (self.path / n for n in PEFT_WEIGHTS if (self.path / n).is_file()), self.path / PEFT_WEIGHTS[0]
        )


def _read_json(path: Path, what: str) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise UserInputError(f"{what} is not valid JSON: {exc.msg}", file=path, line=exc.lineno) from None
    except OSError as exc:
        raise UserInputError(f"cannot read {what}: {exc.strerror}", file=path) from None
    if not isinstance(data, dict):
        raise UserInputError(f"{what} must be a JSON object", file=path)
    return data


def adapter_folder(path: str | Path) -> tuple[Path, Path | None]:
    """The adapter folder for a run folder or an adapter folder: ``(adapter_dir, run_dir or None)``.

    A file inside an adapter folder (``adapter_model.safetensors``, ``adapters.safetensors``...)
    stands for its folder. Raises UserInputError naming the path when it does not exist, or when
    it is a run folder without an ``adapter/`` (the message says the run's status, e.g. still running or failed).
    """
    p = Path(path).expanduser()
    if not p.exists():
        raise UserInputError("adapter folder not found (no such file or folder)", file=p, field="adapter")
    if p.is_file() and (p.parent / CONFIG_FILE).is_file():
        p = p.parent  # a file of an adapter folder (its weights, its config): the folder
    if not p.is_dir():
        raise UserInputError(
            "expected a run folder or an adapter folder, got a file", file=p, field="adapter"
        )
    if (p / CONFIG_FILE).is_file():
        run = p.parent if p.name == "adapter" and (p.parent / "config.yaml").is_file() else None
        return p, run
    if (p / "config.yaml").is_file():
        if (p / "adapter").is_dir():
            return p / "adapter", p
        run = RunDir(p)
        status = run_status(run)
        checkpoint = run.latest_checkpoint()
        if status == "stopped" and checkpoint is not None and (checkpoint / CONFIG_FILE).is_file():
            return checkpoint, p
        raise UserInputError(
            f"this run has no adapter (status: {status}); a finished run has adapter/, a stopped one "
            "its last checkpoint",
            file=p,
            field="adapter",
            hint="resume the run to finish it, or pass one of its checkpoints/step-N folders",
        )
    return p, None


def _run_meta(run: Path) -> dict[str, Any]:
    """What a checkpoint of ``run`` lacks beside its weights, from the run's ``config.yaml``: the
    base model (the config's model) and which chat template training used (``template_choice``:
    ``model`` or ``chatml``, as ``data.chat_template``)."""
    try:
        raw = yaml.safe_load((run / "config.yaml").read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise UserInputError(f"cannot read the run's config: {exc}", file=run / "config.yaml") from None
    return {
        "base_model": {"name": raw.get("model"), "path": None},
        "template_choice": (raw.get("data") or {}).get("chat_template") or "model",
        "checkpoint": True,
    }


def normalize_mlx_config(config: dict[str, Any], path: Path) -> dict[str, Any]:
    """An mlx-lm ``adapter_config.json`` in today's keys: older mlx-lm wrote ``lora_layers`` where
    it now reads ``num_layers`` (same meaning: how many of the last blocks get adapters), which is
    read as such. Raises UserInputError naming the key when ``lora_parameters`` lacks ``rank`` or
    ``scale`` or no layer count is given."""
    config = dict(config)
    if "num_layers" not in config and "lora_layers" in config:
        config["num_layers"] = config["lora_layers"]
    if config.get("fine_tune_type", "lora") == "full":
        return config
    params = config.get("lora_parameters")
    if not isinstance(params, dict):
        raise UserInputError(
            "mlx-lm adapter config without lora_parameters", file=path, field="lora_parameters"
        )
    for key in ("rank", "scale"):
        if not isinstance(params.get(key), int | float) or isinstance(params.get(key), bool):
            raise UserInputError(
                f"mlx-lm adapter config: lora_parameters.{key} is missing or not a number",
                file=path,
                field=f"lora_parameters.{key}",
            )
    if not isinstance(config.get("num_layers"), int):
        raise UserInputError(
            "mlx-lm adapter config without num_layers (older mlx-lm: lora_layers)",
            file=path,
            field="num_layers",
        )
    return config


def read_adapter(path: str | Path) -> AdapterInfo:
    """Read and check an adapter (a run folder or its ``adapter/`` folder).

    A weights-file path resolves to its folder; a legacy mlx-lm config (``lora_layers``) is read
    (``normalize_mlx_config``). Raises UserInputError naming the path for: a missing folder; a run
    without an adapter; a folder without ``adapter_config.json``; a config that is neither PEFT nor mlx-lm LoRA; missing
    weights; an unreadable ``tunedesk.json``.
    """
    folder, run = adapter_folder(path)
    cfg_path = folder / CONFIG_FILE
    if not cfg_path.is_file():
        raise UserInputError(
            f"not an adapter folder: no {CONFIG_FILE}",
            file=folder,
            field="adapter",
            hint="pass a run folder or its adapter/ folder",
        )
    config = _read_json(cfg_path, CONFIG_FILE)
    if "peft_type" in config:
        fmt = "peft"
        if str(config["peft_type"]).upper() != "LORA":
            raise UserInputError(
                f"unsupported adapter type {config['peft_type']!r} (chat loads LoRA/DoRA adapters)",
                file=cfg_path,
                field="peft_type",
            )
        if not any((folder / n).is_file() for n in PEFT_WEIGHTS):
            raise UserInputError(f"adapter weights missing ({PEFT_WEIGHTS[0]})", file=folder, field="adapter")
    elif "lora_parameters" in config or "fine_tune_type" in config:
        fmt = "mlx"
        if config.get("fine_tune_type", "lora") not in {"lora", "dora"}:
            raise UserInputError(
                f"unsupported fine_tune_type {config['fine_tune_type']!r} (chat loads LoRA/DoRA adapters)",
                file=cfg_path,
                field="fine_tune_type",
            )
        if not (folder / MLX_WEIGHTS).is_file():
            raise UserInputError(f"adapter weights missing ({MLX_WEIGHTS})", file=folder, field="adapter")
        config = normalize_mlx_config(config, cfg_path)
    else:
        raise UserInputError(
            "neither a PEFT adapter config (peft_type) nor an mlx-lm one (lora_parameters)",
            file=cfg_path,
        )
    if (folder / META_FILE).is_file():
        meta = _read_json(folder / META_FILE, META_FILE)
    elif run is not None and folder.parent.name == "checkpoints":
        meta = _run_meta(run)
    else:
        meta = {}
    base = meta.get("base_model") if isinstance(meta.get("base_model"), dict) else None
    if base is None and config.get("base_model_name_or_path"):
        ref = str(config["base_model_name_or_path"])
        base = {"name": Path(ref).name, "path": ref}
    template_path = folder / TEMPLATE_FILE
    template = template_path.read_text(encoding="utf-8") if template_path.is_file() else None
    return AdapterInfo(
        path=folder,
        format=fmt,
        config=config,
        base_model=base,
        chat_template=template,
        meta=meta,
        run_dir=run,
    )


def tensor_mismatch_error(
    info: AdapterInfo, missing: list[str], unexpected: list[str], wrong_shape: list[str] | None = None
) -> UserInputError | None:
    """The error for an adapter whose tensors do not all load into the model, naming the first few
    keys of each kind, or None when every tensor loads and every adapter weight has a tensor.

    ``missing``: adapter weights the model expects that the file lacks (they would stay at their
    initial values: the reply would be the base model's); ``unexpected``: tensors of the file
    that no adapter weight of the model takes; ``wrong_shape``: tensors whose shape differs."""
    parts = []
    for keys, what in (
        (unexpected, "tensor(s) in the file that no layer of this model takes"),
        (missing, "adapter weight(s) of the model missing from the file"),
        (wrong_shape or [], "tensor(s) whose shape does not fit the model"),
    ):
        if keys:
            keys = sorted(keys)
            more = f", ... ({len(keys) - 5} more)" if len(keys) > 5 else ""
            parts.append(f"{len(keys)} {what}: {', '.join(keys[:5])}{more}")
    if not parts:
        return None
    return UserInputError(
        "the adapter's tensors do not all load into this model: " + "; ".join(parts),
        file=info.weights_file,
        field="adapter",
        hint="the adapter was trained on a different base model, or its weights file was renamed or "
        "edited; chat refuses it rather than answer as the base model",
    )


def _same_path(a: str | Path | None, b: Path) -> bool:
    if not a:
        return False
    try:
        return Path(a).expanduser().resolve() == b.resolve()
    except OSError:
        return False


def check_base_model(info: AdapterInfo, model_dir: str | Path, model_name: str | None = None) -> None:
    """Raise UserInputError when the adapter names a base model other than the chat model.

    The chat model matches when its folder is the adapter's base-model path, or its name (the
    store name ``model_name`` or the folder's name) equals the adapter's base-model name. An
    adapter that names no base model passes here; the loader still checks every weight's shape.
    """
    base = info.base_model
    if not base:
        return
    model_dir = Path(model_dir)
    names = {n for n in (model_name, model_dir.name) if n}
    if _same_path(base.get("path"), model_dir) or (base.get("name") and base.get("name") in names):
        return
    trained_on = base.get("name") or base.get("path")
    raise UserInputError(
        f"this adapter was trained on base model {trained_on!r}"
        + (f" ({base.get('path')})" if base.get("path") and base.get("path") != trained_on else "")
        + f", not on {model_name or model_dir.name!r} ({model_dir})",
        file=info.path,
        field="base_model",
        hint=f"chat with --model {trained_on}, or leave --model out to use the adapter's base model",
    )


def chat_runs(runs_dir: str | Path | None = None) -> list[dict[str, Any]]:
    """Runs whose adapter chat can load: finished runs (``adapter/``) and stopped runs (their last
    checkpoint).

    Each item is ``backends.runs.summarize_run``'s dict plus ``adapter`` (the adapter folder),
    ``base_model`` (its name from ``tunedesk.json``, or the run config's model) and
    ``base_model_path`` (the folder recorded at training time, or None). Newest first.
    """
    from backends.runs import list_runs, summarize_run

    out = []
    for run in list_runs(runs_dir):
        info = summarize_run(run)
        if info["status"] not in {"finished", "stopped"}:
            continue
        try:
            folder, _ = adapter_folder(run.path)
        except UserInputError:
            continue
        if not (folder / CONFIG_FILE).is_file():
            continue
        base: dict[str, Any] = {}
        try:
            meta = json.loads((folder / META_FILE).read_text(encoding="utf-8"))
            base = meta.get("base_model") or {}
        except (OSError, json.JSONDecodeError, AttributeError):
            pass
        info["adapter"] = str(folder)
        info["base_model"] = base.get("name") or info.get("model")
        info["base_model_path"] = base.get("path")
        out.append(info)
    return out
