"""``--format merged``: base model + adapter as one ordinary Hugging Face model folder.

For each adapted linear layer (weight W [out, in], LoRA A [r, in], B [out, r], scale s):

- LoRA / rsLoRA (Hu et al. 2021; Kalajdzievski 2023): ``W' = W + s * B @ A`` with
  ``s = alpha / r`` (``alpha / sqrt(r)`` for rsLoRA), as peft's ``merge``;
- DoRA (Liu et al. 2024): ``V = W + s * B @ A``, ``W' = (m / ||V||_row) * V`` where ``||V||_row``
  is the L2 norm of each output row and ``m`` [out] the learned magnitude, as peft's
  ``DoraLinearLayer`` and mlx-lm's ``DoRALinear.fuse``.

The arithmetic is fp32; the result is cast to the output precision (the base's own by default).
MLX adapters are first converted to PEFT's layout with ``backends.export.mlx_to_peft`` (an exact
transpose and rename). Tensors stream one at a time from the base's safetensors into shards of at
most ``max_shard_bytes``, so peak memory is about one shard plus one tensor, not the model.

The folder also gets the tokenizer with the chat template the run trained with, ``config.json``
with the new ``dtype``, and ``generation_config.json`` whose ``eos_token_id`` lists every
end-of-turn token (``backends.jobs.export.template.end_of_turn_ids``). It loads in transformers with
no TuneDesk code.
"""

from __future__ import annotations

import json
import shutil
import struct
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from backends.errors import UserInputError
from backends.export import _PEFT_AB, _PEFT_M, CONFIG_FILE, PEFT_WEIGHTS, lora_scale, mlx_to_peft
from backends.jobs.export.source import ExportSource
from backends.jobs.export.template import end_of_turn_ids

Progress = Callable[[str, int, int], None]  # (stage, done, total)
DTYPE_NAMES = {"bf16": "bfloat16", "f16": "float16", "f32": "float32"}
MAX_SHARD_BYTES = 2 * 2**30
_SAFETENSORS_BYTES = {
    "F64": 8,
    "F32": 4,
    "F16": 2,
    "BF16": 2,
    "I64": 8,
    "I32": 4,
    "I16": 2,
    "I8": 1,
    "U8": 1,
    "BOOL": 1,
}
_FLOATS = ("F64", "F32", "F16", "BF16")


def _header(file: Path) -> dict[str, Any]:
    with open(file, "rb") as fh:
        (length,) = struct.unpack("<Q", fh.read(8))
        header = json.loads(fh.read(length))
    header.pop("__metadata__", None)
    return header


def read_lora(adapter_dir: Path) -> tuple[dict[str, dict[str, Any]], dict[str, Any]]:
    """The LoRA tensors of a PEFT adapter folder by module path (``{"A", "B", "m"?}`` in fp32) and
    its config. Raises UserInputError for what a merge cannot apply (per-module ranks, LoRA bias,
    ``fan_in_fan_out``, tensors other than LoRA/DoRA of linear layers)."""
    import torch
    from safetensors.torch import load_file

    cfg_file = adapter_dir / CONFIG_FILE
    cfg = json.loads(cfg_file.read_text(encoding="utf-8"))
    for field in ("rank_pattern", "alpha_pattern", "modules_to_save"):
        if cfg.get(field):
            raise UserInputError("per-module settings cannot be merged here", file=cfg_file, field=field)
    for field, ok in (("bias", "none"), ("fan_in_fan_out", False), ("lora_bias", False)):
        if cfg.get(field, ok) != ok:
            raise UserInputError(f"only {ok!r} merges", file=cfg_file, field=field)
    lora: dict[str, dict[str, Any]] = {}
    for key, value in load_file(str(adapter_dir / PEFT_WEIGHTS)).items():
        if m := _PEFT_AB.match(key):
            lora.setdefault(m["path"], {})[m["kind"][-1]] = value.to(torch.float32)
        elif m := _PEFT_M.match(key):
            lora.setdefault(m["path"], {})["m"] = value.to(torch.float32).reshape(-1)
        else:
            raise UserInputError(f"tensor {key!r} is not a LoRA/DoRA weight", file=adapter_dir / PEFT_WEIGHTS)
    for path, t in lora.items():
        if "A" not in t or "B" not in t:
            raise UserInputError(f"{path}: LoRA A or B missing", file=adapter_dir / PEFT_WEIGHTS)
    return lora, cfg


def merge_weight(weight: Any, a: Any, b: Any, scale: float, magnitude: Any = None) -> Any:
    """The merged fp32 weight [out, in] of one layer (formulas in the module docstring)."""
    import torch

    merged = weight.to(torch.float32) + scale * (b @ a)
    if magnitude is not None:
        merged = (magnitude / torch.linalg.norm(merged, dim=1)).unsqueeze(1) * merged
    return merged


def _peft_adapter(source: ExportSource, scratch: Path) -> Path:
    if source.adapter.format == "peft":
        return source.adapter.path
    out = scratch / "adapter-peft"
    out.mkdir()
    mlx_to_peft(source.adapter.path, out)
    return out


def _plan_shards(
    files: list[Path], out_bytes: Callable[[dict[str, Any]], int], limit: int
) -> list[list[tuple[Path, str]]]:
    shards: list[list[tuple[Path, str]]] = [[]]
    size = 0
    for file in files:
        for key, meta in _header(file).items():
            n = out_bytes(meta)
            if shards[-1] and size + n > limit:
                shards.append([])
                size = 0
            shards[-1].append((file, key))
            size += n
    return shards


def write_merged(
    source: ExportSource,
    out: Path,
    dtype: str,
    progress: Progress | None = None,
    *,
    max_shard_bytes: int = MAX_SHARD_BYTES,
) -> int:
    """Write the merged model of ``source`` into the existing, empty folder ``out`` in ``dtype``
    (``bf16``/``f16``/``f32``). Returns the number of merged layers. Raises UserInputError when an
    adapted layer is not in the base model or its shapes differ."""
    import torch
    from safetensors import safe_open
    from safetensors.torch import save_file

    target = {"bf16": torch.bfloat16, "f16": torch.float16, "f32": torch.float32}[dtype]
    files = sorted(source.base_dir.glob("*.safetensors"))
    if not files:
        raise UserInputError("the base model has no .safetensors weights", file=source.base_dir)
    with tempfile.TemporaryDirectory(prefix="tunedesk-merge-") as scratch:
        peft_dir = _peft_adapter(source, Path(scratch))
        lora, cfg = read_lora(peft_dir)
    scale = lora_scale(float(cfg["lora_alpha"]), int(cfg["r"]), bool(cfg.get("use_rslora", False)))

    def out_bytes(meta: dict[str, Any]) -> int:
        n = 1
        for d in meta["shape"]:
            n *= int(d)
        return n * (target.itemsize if meta["dtype"] in _FLOATS else _SAFETENSORS_BYTES.get(meta["dtype"], 4))

    shards = _plan_shards(files, out_bytes, max_shard_bytes)
    total = sum(len(s) for s in shards)
    names = (
        ["model.safetensors"]
        if len(shards) == 1
        else [f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors" for i in range(len(shards))]
    )
    weight_map: dict[str, str] = {}
    pending = dict(lora)
    done = 0
    for name, shard in zip(names, shards, strict=True):
        tensors: dict[str, Any] = {}
        for file, key in shard:
            with safe_open(str(file), framework="pt") as fh:  # opened per tensor: mmap pages go with it
                tensor = fh.get_tensor(key)
            module = key[: -len(".weight")] if key.endswith(".weight") else None
            if module in pending:
                t = pending.pop(module)
                if tuple(tensor.shape) != (t["B"].shape[0], t["A"].shape[1]):
                    raise UserInputError(
                        f"{module}: the adapter's shape {(t['B'].shape[0], t['A'].shape[1])} does not match "
                        f"the base model's {tuple(tensor.shape)} (another base model?)",
                        file=source.adapter.path,
                    )
                tensor = merge_weight(tensor, t["A"], t["B"], scale, t.get("m"))
            if tensor.is_floating_point():
                tensor = tensor.to(target)
            tensors[key] = tensor.contiguous()
            weight_map[key] = name
            done += 1
            if progress is not None and (done % 16 == 0 or done == total):
                progress("merge", done, total)
        save_file(tensors, str(out / name), metadata={"format": "pt"})
        del tensors
    if pending:
        first = sorted(pending)[0]
        raise UserInputError(
            f"the adapter changes {len(pending)} layer(s) the base model does not have (e.g. {first})",
            file=source.adapter.path,
            hint="was it trained on another base model?",
        )
    if len(names) > 1:
        index = {
            "metadata": {"total_size": sum((out / n).stat().st_size for n in names)},
            "weight_map": weight_map,
        }
        (out / "model.safetensors.index.json").write_text(
            json.dumps(index, indent=2) + "\n", encoding="utf-8"
        )
    write_model_files(source, out, dtype)
    return len(lora)


def write_model_files(source: ExportSource, out: Path, dtype: str) -> None:
    """``config.json`` (with ``dtype``), the tokenizer with the run's chat template, and
    ``generation_config.json`` whose ``eos_token_id`` holds every end-of-turn token."""
    from transformers import GenerationConfig

    from backends.data.templates import load_tokenizer

    config = dict(source.base_config)
    config.pop("torch_dtype", None)
    config.pop("auto_map", None)  # no model code travels with an export
    config["dtype"] = DTYPE_NAMES[dtype]
    (out / "config.json").write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    tokenizer = load_tokenizer(source.base_dir)
    template = source.chat_template or getattr(tokenizer, "chat_template", None)
    if source.chat_template:
        tokenizer.chat_template = source.chat_template
    tokenizer.save_pretrained(out)
    tok_cfg_file = out / "tokenizer_config.json"
    if tok_cfg_file.is_file():
        tok_cfg = json.loads(tok_cfg_file.read_text(encoding="utf-8"))
        if tok_cfg.pop("auto_map", None) is not None:
            tok_cfg_file.write_text(json.dumps(tok_cfg, indent=2) + "\n", encoding="utf-8")
    if (source.base_dir / "generation_config.json").is_file():
        gen = GenerationConfig.from_pretrained(source.base_dir)
    else:
        cfg = source.base_config
        gen = GenerationConfig(**{k: cfg.get(k) for k in ("bos_token_id", "eos_token_id", "pad_token_id")})
    eos = gen.eos_token_id
    ids = [eos] if isinstance(eos, int) else list(eos or [])
    for i in end_of_turn_ids(tokenizer, template if isinstance(template, str) else None):
        if i not in ids:
            ids.append(i)
    gen.eos_token_id = ids[0] if len(ids) == 1 else ids
    gen.save_pretrained(out)
    for extra in ("LICENSE", "LICENSE.txt", "NOTICE"):
        if (source.base_dir / extra).is_file():
            shutil.copy2(source.base_dir / extra, out / extra)
