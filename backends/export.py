"""Adapter formats and ``tunedesk export adapter RUN_DIR --to peft|mlx [--out DIR]``.

Two native adapter formats hold the same LoRA/DoRA update ``W x + scale * B A x``:

| | PEFT (``adapter_model.safetensors``) | MLX / mlx-lm (``adapters.safetensors``) |
| --- | --- | --- |
| key | ``base_model.model.<path>.lora_A.weight`` | ``<path>.lora_a`` |
| A | ``lora_A.weight`` [r, in] | ``lora_a`` [in, r] (= A transposed) |
| B | ``lora_B.weight`` [out, r] | ``lora_b`` [r, out] (= B transposed) |
| DoRA magnitude | ``lora_magnitude_vector`` [out] | ``m`` [out] |
| scale | ``lora_alpha`` / ``r`` (``/ sqrt(r)`` with ``use_rslora``) | ``lora_parameters.scale`` |

``<path>`` is the module path inside the causal LM (``model.layers.0.self_attn.q_proj``), the
same in transformers and mlx-lm for the Llama-family models both support. The configs:
PEFT's ``adapter_config.json`` (``peft_type: LORA``, ``r``, ``lora_alpha``, ``target_modules``,
``use_dora``...) and mlx-lm's (``fine_tune_type: lora|dora``, ``num_layers``,
``lora_parameters: {rank, scale, dropout, keys}``), read by ``mlx_lm.tuner.utils.load_adapters``.

The conversion is exact (a transpose and a rename, in the tensors' own dtype); it needs only
safetensors and torch, no MLX. Not supported (a clear error instead): per-module ranks or alphas
(``rank_pattern``/``alpha_pattern``), LoRA on embeddings, ``fan_in_fan_out``, LoRA bias and
``modules_to_save`` (mlx-lm's adapter format has no place for them).
"""

from __future__ import annotations

import argparse
import json
import math
import re
import shutil
from pathlib import Path
from typing import Any

from backends.errors import EXIT_OK, UserInputError
from backends.weights_check import check_safetensors

CONFIG_FILE = "adapter_config.json"
PEFT_WEIGHTS = "adapter_model.safetensors"
MLX_WEIGHTS = "adapters.safetensors"
# Framework-neutral files the training loop puts next to an adapter; copied by the conversion.
SIDE_FILES = ("chat_template.jinja", "tunedesk.json")
PEFT_PREFIX = "base_model.model."

_PEFT_AB = re.compile(r"^(?:base_model\.model\.)?(?P<path>.+)\.(?P<kind>lora_A|lora_B)(?:\.[^.]+)?\.weight$")
_PEFT_M = re.compile(
    r"^(?:base_model\.model\.)?(?P<path>.+)\.lora_magnitude_vector(?:\.[^.]+)?(?:\.weight)?$"
)
_MLX_KEY = re.compile(r"^(?P<path>.+)\.(?P<kind>lora_a|lora_b|m)$")
_LAYER_INDEX = re.compile(r"\.layers\.(\d+)\.")
_BLOCK_PATH = re.compile(r"^(?P<prefix>(?:.*\.)?layers)\.(?P<index>\d+)\.(?P<rel>.+)$")


def lora_scale(alpha: float, rank: int, use_rslora: bool = False) -> float:
    """The factor of the LoRA update: ``alpha / rank`` (Hu et al. 2021, peft's ``scaling``), or
    ``alpha / sqrt(rank)`` for rank-stabilised LoRA (Kalajdzievski 2023, peft's ``use_rslora``).
    mlx-lm takes this number directly as ``scale``."""
    return alpha / math.sqrt(rank) if use_rslora else alpha / rank


def mlx_adapter_config(
    *,
    rank: int,
    scale: float,
    dropout: float,
    keys: list[str],
    use_dora: bool,
    num_layers: int,
    alpha: float | None = None,
    base_model: str | None = None,
) -> dict[str, Any]:
    """mlx-lm's ``adapter_config.json`` for a LoRA/DoRA adapter on the modules ``keys`` (full paths).

    ``linear_to_lora_layers`` matches full paths against ``model.named_modules()``, so only those
    modules get adapters whatever ``num_layers`` says. ``lora_alpha`` is kept for the way back to
    PEFT; mlx-lm itself reads only ``scale``.
    """
    cfg: dict[str, Any] = {
        "fine_tune_type": "dora" if use_dora else "lora",
        "num_layers": num_layers,
        "lora_parameters": {"rank": rank, "scale": scale, "dropout": dropout, "keys": list(keys)},
    }
    if alpha is not None:
        cfg["lora_alpha"] = alpha
    if base_model is not None:
        cfg["model"] = base_model
    return cfg


def adapter_format(folder: Path) -> str:
    """``"peft"`` or ``"mlx"`` by the weight file in ``folder``; UserInputError when neither."""
    folder = Path(folder)
    if not (folder / CONFIG_FILE).is_file():
        raise UserInputError(f"no {CONFIG_FILE} here: not an adapter folder", file=folder)
    if (folder / PEFT_WEIGHTS).is_file():
        return "peft"
    if (folder / MLX_WEIGHTS).is_file():
        return "mlx"
    raise UserInputError(f"neither {PEFT_WEIGHTS} (PEFT) nor {MLX_WEIGHTS} (MLX) found", file=folder)


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise UserInputError(f"cannot read: {exc}", file=path) from None
    if not isinstance(data, dict):
        raise UserInputError("expected a JSON object", file=path)
    return data


def _load(path: Path) -> dict[str, Any]:
    from safetensors.torch import load_file

    return load_file(str(path))


def _save(tensors: dict[str, Any], path: Path) -> None:
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in tensors.items()}, str(path))


def _num_layers(paths: list[str]) -> int:
    indices = [int(m.group(1)) for p in paths if (m := _LAYER_INDEX.search("." + p + "."))]
    return max(indices) + 1 if indices else 0


def peft_to_mlx(src: Path, dst: Path) -> None:
    """Write the PEFT adapter in ``src`` as an mlx-lm adapter into ``dst`` (an existing folder).

    Raises UserInputError for a PEFT config or tensor this format cannot carry.
    """
    src, dst = Path(src), Path(dst)
    cfg_file = src / CONFIG_FILE
    cfg = _read_json(cfg_file)
    if cfg.get("peft_type", "LORA") != "LORA":
        raise UserInputError(
            f"only LoRA adapters convert, not {cfg.get('peft_type')}", file=cfg_file, field="peft_type"
        )
    for field, empty in (("rank_pattern", {}), ("alpha_pattern", {}), ("modules_to_save", None)):
        if cfg.get(field) not in (empty, None, {}, []):
            raise UserInputError("not supported by mlx-lm's adapter format", file=cfg_file, field=field)
    for field, ok in (("bias", "none"), ("fan_in_fan_out", False), ("lora_bias", False)):
        if cfg.get(field, ok) != ok:
            raise UserInputError(f"only {ok!r} converts to MLX", file=cfg_file, field=field)
    rank, alpha = int(cfg["r"]), float(cfg["lora_alpha"])
    use_dora = bool(cfg.get("use_dora", False))
    tensors = _load(src / PEFT_WEIGHTS)
    out: dict[str, Any] = {}
    for key, value in tensors.items():
        if m := _PEFT_AB.match(key):
            name = "lora_a" if m["kind"] == "lora_A" else "lora_b"
            out[f"{m['path']}.{name}"] = value.T
        elif m := _PEFT_M.match(key):
            out[f"{m['path']}.m"] = value
        else:
            raise UserInputError(
                f"tensor {key!r} has no MLX equivalent (only LoRA A/B and DoRA magnitudes of linear layers convert)",
                file=src / PEFT_WEIGHTS,
            )
    paths = sorted({k.rsplit(".", 1)[0] for k in out})
    for p in paths:
        a, b = out.get(f"{p}.lora_a"), out.get(f"{p}.lora_b")
        if a is None or b is None or a.shape[1] != rank or b.shape[0] != rank:
            raise UserInputError(f"{p}: LoRA A/B missing or not of rank {rank}", file=src / PEFT_WEIGHTS)
    _save(out, dst / MLX_WEIGHTS)
    mlx_cfg = mlx_adapter_config(
        rank=rank,
        scale=lora_scale(alpha, rank, bool(cfg.get("use_rslora", False))),
        dropout=float(cfg.get("lora_dropout", 0.0)),
        keys=paths,
        use_dora=use_dora,
        num_layers=_num_layers(paths),
        alpha=None if cfg.get("use_rslora") else alpha,
        base_model=cfg.get("base_model_name_or_path"),
    )
    (dst / CONFIG_FILE).write_text(json.dumps(mlx_cfg, indent=2) + "\n", encoding="utf-8")


def _peft_targets(paths: list[str]) -> list[str]:
    """peft ``target_modules`` for the adapted modules ``paths``: the short names (``q_proj``) when
    every layer ``0..N-1`` of one ``layers`` list has the same adapted modules with distinct short
    names, else the full paths (peft matches a name by equality or by a ``"." + name`` suffix).

    Short names can also select modules the adapter has no tensors for (e.g. more layers); peft then
    gives those a zero B, which leaves the model's output unchanged."""
    by_layer: dict[tuple[str, int], set[str]] = {}
    for p in paths:
        m = _BLOCK_PATH.match(p)
        if not m:
            return sorted(paths)
        by_layer.setdefault((m["prefix"], int(m["index"])), set()).add(m["rel"])
    rels = list(by_layer.values())
    if (
        len({prefix for prefix, _ in by_layer}) == 1
        and sorted(i for _, i in by_layer) == list(range(len(by_layer)))
        and all(r == rels[0] for r in rels)
        and len({r.rsplit(".", 1)[-1] for r in rels[0]}) == len(rels[0])
    ):
        return sorted({r.rsplit(".", 1)[-1] for r in rels[0]})
    return sorted(paths)


def mlx_to_peft(src: Path, dst: Path) -> None:
    """Write the mlx-lm adapter in ``src`` as a PEFT adapter into ``dst`` (an existing folder).

    ``lora_alpha`` = ``scale * rank``. Raises UserInputError for a full fine-tune or tensors that are
    not LoRA/DoRA arrays.
    """
    src, dst = Path(src), Path(dst)
    cfg_file = src / CONFIG_FILE
    cfg = _read_json(cfg_file)
    kind = cfg.get("fine_tune_type", "lora")
    if kind not in ("lora", "dora"):
        raise UserInputError(f"a {kind!r} fine-tune is not an adapter", file=cfg_file, field="fine_tune_type")
    params = cfg.get("lora_parameters") or {}
    try:
        rank, scale = int(params["rank"]), float(params["scale"])
    except (KeyError, TypeError, ValueError):
        raise UserInputError("needs rank and scale", file=cfg_file, field="lora_parameters") from None
    tensors = _load(src / MLX_WEIGHTS)
    out: dict[str, Any] = {}
    for key, value in tensors.items():
        m = _MLX_KEY.match(key)
        if not m:
            raise UserInputError(f"tensor {key!r} is not a LoRA/DoRA array", file=src / MLX_WEIGHTS)
        base = PEFT_PREFIX + m["path"]
        if m["kind"] == "lora_a":
            if value.shape[1] != rank:
                raise UserInputError(
                    f"{key}: shape {tuple(value.shape)} is not of rank {rank}", file=src / MLX_WEIGHTS
                )
            out[f"{base}.lora_A.weight"] = value.T
        elif m["kind"] == "lora_b":
            out[f"{base}.lora_B.weight"] = value.T
        else:
            out[f"{base}.lora_magnitude_vector"] = value
    paths = sorted({k.rsplit(".", 1)[0] for k in tensors})
    alpha = scale * rank
    peft_cfg = {
        "peft_type": "LORA",
        "task_type": "CAUSAL_LM",
        "base_model_name_or_path": cfg.get("model"),
        "r": rank,
        "lora_alpha": int(alpha) if float(alpha).is_integer() else alpha,
        "lora_dropout": float(params.get("dropout", 0.0)),
        "target_modules": _peft_targets(paths),
        "use_dora": kind == "dora",
        "use_rslora": False,
        "bias": "none",
        "fan_in_fan_out": False,
        "init_lora_weights": True,
        "inference_mode": True,
        "modules_to_save": None,
        "rank_pattern": {},
        "alpha_pattern": {},
    }
    _save(out, dst / PEFT_WEIGHTS)
    (dst / CONFIG_FILE).write_text(json.dumps(peft_cfg, indent=2) + "\n", encoding="utf-8")


def find_adapter(path: Path) -> Path:
    """The adapter folder of a run folder (``RUN_DIR/adapter``) or ``path`` itself when it is one.

    Raises UserInputError when neither holds an adapter (e.g. a run that has not finished)."""
    path = Path(path)
    if not path.exists():
        raise UserInputError("no such folder", file=path)
    if (path / CONFIG_FILE).is_file():
        return path
    if (path / "adapter" / CONFIG_FILE).is_file():
        return path / "adapter"
    raise UserInputError(
        "no adapter here: expected a run folder with adapter/ (a finished run) or an adapter folder",
        file=path,
    )


def export_adapter(source: Path, to: str, out: Path | None = None) -> Path:
    """Convert the adapter of ``source`` (run or adapter folder) to ``to`` (``"peft"``/``"mlx"``).

    ``out`` defaults to ``<adapter folder>-<to>`` beside the adapter (``RUN_DIR/adapter-peft``).
    The chat template and ``tunedesk.json`` are copied (``tunedesk.json`` gets ``"format"``). The
    folder is written atomically and replaces an older export. Returns the output folder.
    Raises UserInputError for a missing adapter, an unknown format or an unconvertible adapter.
    """
    from backends.runs import atomic_dir

    if to not in ("peft", "mlx"):
        raise UserInputError(f"unknown adapter format {to!r}; choose peft or mlx", field="--to")
    adapter = find_adapter(source)
    src_format = adapter_format(adapter)
    check_safetensors(
        adapter / (PEFT_WEIGHTS if src_format == "peft" else MLX_WEIGHTS), "adapter weights file"
    )
    out = Path(out) if out is not None else adapter.with_name(f"{adapter.name}-{to}")
    if out.resolve() == adapter.resolve():
        raise UserInputError("the output folder is the adapter folder itself", file=out, field="--out")
    with atomic_dir(out) as tmp:
        if src_format == to:
            for f in (CONFIG_FILE, PEFT_WEIGHTS if to == "peft" else MLX_WEIGHTS):
                shutil.copy2(adapter / f, tmp / f)
        elif to == "mlx":
            peft_to_mlx(adapter, tmp)
        else:
            mlx_to_peft(adapter, tmp)
        for name in SIDE_FILES:
            if (adapter / name).is_file():
                shutil.copy2(adapter / name, tmp / name)
        if (tmp / "tunedesk.json").is_file():
            meta = _read_json(tmp / "tunedesk.json")
            meta["format"] = to
            if src_format != to:
                meta["converted_from"] = src_format
            (tmp / "tunedesk.json").write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    return out


def cli_export(args: argparse.Namespace) -> int:
    """``tunedesk export adapter RUN_DIR --to peft|mlx [--out DIR]``: prints the output folder."""
    out = export_adapter(Path(args.run_dir), args.to, Path(args.out) if args.out else None)
    print(out)
    return EXIT_OK
