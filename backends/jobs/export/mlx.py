"""``--format mlx``: a fused MLX model folder that ``mlx_lm.load`` / ``mlx_lm.generate`` open.

mlx-lm's own fuse does the work: the base model is loaded with the run's adapter in mlx-lm's
format (a PyTorch run's PEFT adapter converted exactly by ``backends.export.peft_to_mlx``), every
LoRA/DoRA layer is replaced by its ``fuse()`` (the same formulas as ``backends.jobs.export.merged``),
and ``mlx_lm.utils.save`` writes weights, config and tokenizer. The folder then gets the run's
chat template and a ``generation_config.json`` with every end-of-turn token, as the merged export.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Callable
from pathlib import Path

from backends.errors import UserInputError
from backends.jobs.export.source import ExportSource

Progress = Callable[[str, int, int], None]
MLX_DTYPES = {"bf16": "bfloat16", "f16": "float16", "f32": "float32"}


def check_ready() -> None:
    """UserInputError when mlx-lm cannot be imported here (it runs on Apple silicon, and with
    ``mlx[cpu]`` on Linux)."""
    try:
        import mlx.core  # noqa: F401
        import mlx_lm  # noqa: F401
    except ImportError:
        raise UserInputError(
            "MLX export needs mlx-lm, which is not installed here (it runs on Apple silicon Macs)",
            hint="export --format merged: mlx_lm.load opens that folder too",
        ) from None


def write_mlx(source: ExportSource, out: Path, dtype: str, progress: Progress | None = None) -> Path:
    """Fuse the run's adapter into the base model with mlx-lm and save it (``dtype``: bf16, f16 or
    f32) into the folder ``out``; returns ``out``."""
    import mlx.core as mx
    from mlx.utils import tree_flatten, tree_unflatten
    from mlx_lm.utils import load, save

    from backends.export import peft_to_mlx
    from backends.jobs.export.merged import write_model_files

    with tempfile.TemporaryDirectory(prefix="tunedesk-mlx-") as scratch:
        adapter = source.adapter.path
        if source.adapter.format == "peft":
            adapter = Path(scratch) / "adapter-mlx"
            adapter.mkdir()
            peft_to_mlx(source.adapter.path, adapter)
        if progress is not None:
            progress("load", 0, 1)
        model, tokenizer, config = load(
            str(source.base_dir), adapter_path=str(adapter), return_config=True, trust_remote_code=False
        )
        fused = [(n, m.fuse()) for n, m in model.named_modules() if hasattr(m, "fuse")]
        if not fused:
            raise UserInputError("mlx-lm found no adapter layers to fuse", file=source.adapter.path)
        model.update_modules(tree_unflatten(fused))
        target = getattr(mx, MLX_DTYPES[dtype])
        model.update(tree_unflatten([(k, v.astype(target)) for k, v in tree_flatten(model.parameters())]))
        if progress is not None:
            progress("fuse", len(fused), len(fused))
        save(out, str(source.base_dir), model, tokenizer, config, donate_model=False)
    # The run's chat template and end-of-turn tokens, as in the merged export (config.json keeps
    # mlx-lm's own fields, with the new dtype).
    saved = json.loads((out / "config.json").read_text(encoding="utf-8"))
    write_model_files(source, out, dtype)
    fresh = json.loads((out / "config.json").read_text(encoding="utf-8"))
    saved["dtype"] = fresh["dtype"]
    saved.pop("torch_dtype", None)
    (out / "config.json").write_text(json.dumps(saved, indent=2) + "\n", encoding="utf-8")
    return out
