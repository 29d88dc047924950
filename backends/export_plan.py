"""What an export of a run will be, before it runs, from files alone (no ML library imported, so
the desktop app can use it): the formats and GGUF quantisations on offer, the default quantisation
for a model, the size on disk to expect, and the commands that run the result in other tools.

Sizes: parameters from the base model's safetensors headers times the bytes per weight of the
output. GGUF bits per weight are llama.cpp's own figures (``tools/quantize/README.md``, measured
on Llama-2-7B: Q4_K_M 4.84, Q5_K_M 5.68, Q6_K 6.56) and the block layouts (Q8_0: 32 int8 weights
plus one f16 scale = 8.5 bits); a model whose layer widths are not multiples of 256 (K-quants'
super-block) gets other types for some tensors, so its K-quant files come out larger.
"""

from __future__ import annotations

import json
import re
import shlex
from dataclasses import dataclass
from pathlib import Path

from backends import paths
from backends.chat.adapters import read_adapter
from backends.errors import UserInputError
from backends.model_store_info import folder_size, safetensors_param_count

FORMATS: dict[str, str] = {
    "gguf": "GGUF: one file for llama.cpp and LM Studio",
    "ollama": "Ollama: a GGUF plus a Modelfile (chat template, stop words)",
    "merged": "Merged model: Hugging Face safetensors, for transformers and vLLM",
    "mlx": "MLX: a fused model folder for mlx-lm on Apple silicon",
}
GGUF_FORMATS = ("gguf", "ollama")
# quant -> (bits per weight, everyday words)
QUANTS: dict[str, tuple[float, str]] = {
    "q4_k_m": (4.84, "smallest that stays good; the usual choice"),
    "q5_k_m": (5.68, "a little larger, a little closer to the original"),
    "q6_k": (6.56, "larger, very close to the original"),
    "q8_0": (8.5, "about half the original; almost no loss"),
    "f16": (16.0, "no quantisation (16-bit floats), largest"),
    "bf16": (16.0, "no quantisation (bfloat16), largest"),
}
K_BLOCK = 256  # weights per K-quant super-block (llama.cpp's QK_K)
DTYPE_BYTES = {"float32": 4, "float16": 2, "bfloat16": 2}


def _config(model_dir: Path) -> dict:
    try:
        return json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def k_quants_fit(model_dir: str | Path) -> bool:
    """True when the model's hidden and feed-forward widths are multiples of 256, so K-quants
    apply to every layer (SmolLM2-135M's 576 is not: its Q4_K_M answers badly)."""
    config = _config(Path(model_dir))
    widths = [config.get("hidden_size"), config.get("intermediate_size")]
    return all(isinstance(w, int) and w % K_BLOCK == 0 for w in widths)


def default_quant(model_dir: str | Path) -> str:
    """``q4_k_m`` where K-quants suit the model's layer widths, else ``q8_0``."""
    return "q4_k_m" if k_quants_fit(model_dir) else "q8_0"


def base_model_dir(run_dir: str | Path) -> Path:
    """The base model folder of a run (its recorded path, else its name in the model store).
    Raises UserInputError naming the run when it has no adapter or the base model is missing."""
    info = read_adapter(run_dir)
    base = info.base_model or {}
    for candidate in (base.get("path"), base.get("name") and str(paths.models_dir() / str(base["name"]))):
        if candidate and (Path(candidate) / "config.json").is_file():
            return Path(candidate)
    raise UserInputError(
        f"the base model {base.get('name') or base.get('path') or '(unnamed)'} is not on this machine",
        file=run_dir,
        field="base_model",
        hint="import it with `tunedesk models import`",
    )


@dataclass(frozen=True)
class Estimate:
    """The expected output: ``bytes`` on disk, from ``params`` weights at ``bits_per_weight``."""

    bytes: int
    params: int
    bits_per_weight: float
    base_bytes: int


def estimate(model_dir: str | Path, fmt: str, quant: str | None = None) -> Estimate:
    """Expected size of exporting the model in ``model_dir`` as ``fmt`` (``quant`` for GGUF and
    Ollama; None: the default for the model). Merged and MLX models keep the base's precision
    (``torch_dtype`` in config.json, bf16 where it names none). Raises UserInputError for an
    unknown format or quantisation."""
    model_dir = Path(model_dir)
    if fmt not in FORMATS:
        raise UserInputError(f"unknown format {fmt!r} (one of {', '.join(FORMATS)})", field="format")
    params = safetensors_param_count(model_dir)
    base = folder_size(model_dir)
    if fmt in GGUF_FORMATS:
        quant = quant or default_quant(model_dir)
        if quant not in QUANTS:
            raise UserInputError(
                f"unknown quantisation {quant!r} (one of {', '.join(QUANTS)})", field="quant"
            )
        bits = QUANTS[quant][0]
    else:
        config = _config(model_dir)
        dtype = str(config.get("torch_dtype") or config.get("dtype") or "bfloat16")
        bits = 8.0 * DTYPE_BYTES.get(dtype, 2)
    # Tokenizer and config files travel with every format.
    extras = sum(p.stat().st_size for p in model_dir.glob("*.json") if p.is_file())
    return Estimate(int(params * bits / 8) + extras, params, bits, base)


def human_bytes(n: float) -> str:
    """``123456789`` -> ``123 MB`` (decimal units, as file managers show)."""
    for unit in ("B", "KB", "MB", "GB"):
        if abs(n) < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit in ("B", "KB") or n >= 100 else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} GB"


def ollama_name(run_name: str) -> str:
    """A model name Ollama accepts (lower case letters, digits, ``.``, ``_``, ``-``)."""
    return re.sub(r"[^a-z0-9._-]+", "-", run_name.lower()).strip("-._") or "tuned"


def gguf_file(path: str | Path) -> Path:
    """The GGUF file of an export: ``path`` itself, or the first ``*.gguf`` inside it."""
    path = Path(path)
    if path.is_dir():
        found = sorted(path.glob("*.gguf"))
        return found[0] if found else path / "model.gguf"
    return path


def how_to_run(fmt: str, path: str | Path, name: str) -> list[tuple[str, str]]:
    """(tool, commands) pairs a user copies to run an export at ``path`` (``name``: the run's)."""
    q = shlex.quote
    if fmt in GGUF_FORMATS:
        gguf = gguf_file(path)
        tag = ollama_name(name)
        cd = f"cd {q(str(gguf.parent))}\n"
        steps = []
        if fmt == "ollama":
            steps.append(("Ollama", f"{cd}ollama create {tag} -f Modelfile\nollama run {tag}"))
        steps += [
            (
                "LM Studio",
                f"lms import {q(str(gguf))}\n# or copy the file into ~/.lmstudio/models/tunedesk/{tag}/",
            ),
            (
                "llama.cpp",
                f"{cd}llama-cli -m {q(gguf.name)} -cnv\nllama-server -m {q(gguf.name)} --port 8080",
            ),
        ]
        return steps
    if fmt == "mlx":
        return [
            (
                "mlx-lm",
                f"mlx_lm.chat --model {q(str(path))}\nmlx_lm.generate --model {q(str(path))} --prompt 'Hello'",
            )
        ]
    code = (
        "from transformers import pipeline\n"
        f"chat = pipeline('text-generation', model={str(path)!r})\n"
        "print(chat([{'role': 'user', 'content': 'Hello'}], max_new_tokens=64)[0]['generated_text'][-1])"
    )
    return [("transformers (Python)", code), ("TuneDesk", f"tunedesk serve --model {q(str(path))}")]
