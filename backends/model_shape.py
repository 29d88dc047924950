"""A model's shape from its ``config.json`` (transformers' field names), for the memory plan.

Nothing is imported but the standard library: the desktop app reads shapes in its own process.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

# Architectures whose MLP has no gate projection (two linear layers, not three).
_NON_GATED = {"gpt2", "gpt_neox", "gptj", "phi", "falcon", "opt", "bloom", "starcoder2", "mpt"}


# Published shapes (the ``config.json`` fields of meta-llama/Llama-3.2-1B and Llama-3.1-8B) for the
# benchmarks and tests that build random-weight models of these sizes: one copy, imported by all.
LLAMA_SHAPES: dict[str, dict[str, Any]] = {
    "llama-3.2-1b": {
        "model_type": "llama",
        "hidden_size": 2048,
        "intermediate_size": 8192,
        "num_hidden_layers": 16,
        "num_attention_heads": 32,
        "num_key_value_heads": 8,
        "head_dim": 64,
        "vocab_size": 128256,
        "max_position_embeddings": 131072,
        "tie_word_embeddings": True,
        "rms_norm_eps": 1e-5,
        "rope_theta": 500000.0,
    },
    "llama-3.1-8b": {
        "model_type": "llama",
        "hidden_size": 4096,
        "intermediate_size": 14336,
        "num_hidden_layers": 32,
        "num_attention_heads": 32,
        "num_key_value_heads": 8,
        "head_dim": 128,
        "vocab_size": 128256,
        "max_position_embeddings": 131072,
        "tie_word_embeddings": False,
        "rms_norm_eps": 1e-5,
        "rope_theta": 500000.0,
    },
}


@dataclasses.dataclass(frozen=True)
class ModelShape:
    """What the plan needs from ``config.json`` (transformers' field names)."""

    model_type: str
    hidden: int
    layers: int
    intermediate: int
    heads: int
    kv_heads: int
    head_dim: int
    vocab: int
    tied: bool
    gated: bool
    context: int

    @classmethod
    def from_config(cls, cfg: dict[str, Any]) -> ModelShape:
        """Read a transformers ``config.json`` dict (a nested ``text_config`` is used when present).
        Raises ValueError naming a missing field."""
        text = {**cfg, **cfg.get("text_config", {})} if isinstance(cfg.get("text_config"), dict) else cfg

        def get(*names: str, default: Any = None) -> Any:
            for n in names:
                if text.get(n) is not None:
                    return text[n]
            if default is None:
                raise ValueError(f"config.json has no {names[0]}")
            return default

        hidden = int(get("hidden_size", "n_embd", "d_model"))
        heads = int(get("num_attention_heads", "n_head"))
        model_type = str(text.get("model_type", ""))
        return cls(
            model_type=model_type,
            hidden=hidden,
            layers=int(get("num_hidden_layers", "n_layer")),
            intermediate=int(get("intermediate_size", "n_inner", "ffn_dim", default=4 * hidden)),
            heads=heads,
            kv_heads=int(get("num_key_value_heads", default=heads)),
            head_dim=int(get("head_dim", default=hidden // heads)),
            vocab=int(get("vocab_size")),
            tied=bool(text.get("tie_word_embeddings", cfg.get("tie_word_embeddings", True))),
            gated=model_type not in _NON_GATED,
            context=int(get("max_position_embeddings", "n_positions", default=2048)),
        )

    def linear_layers(self) -> dict[str, tuple[int, int]]:
        """(in, out) features of each linear layer of one block, by Llama's names."""
        h, q, kv, i = (
            self.hidden,
            self.heads * self.head_dim,
            self.kv_heads * self.head_dim,
            self.intermediate,
        )
        out = {"q_proj": (h, q), "k_proj": (h, kv), "v_proj": (h, kv), "o_proj": (q, h)}
        if self.gated:
            out["gate_proj"] = (h, i)
        out.update(up_proj=(h, i), down_proj=(i, h))
        return out

    def params(self) -> dict[str, int]:
        """Parameter counts: ``linear`` (all blocks), ``embedding``, ``head`` (0 when tied), ``norms``."""
        per_block = sum(a * b for a, b in self.linear_layers().values())
        return {
            "linear": self.layers * per_block,
            "embedding": self.vocab * self.hidden,
            "head": 0 if self.tied else self.vocab * self.hidden,
            "norms": (2 * self.layers + 1) * self.hidden,
        }


def read_model_config(model_dir: str | Path) -> dict[str, Any]:
    """The ``config.json`` of a model folder as a dict. Raises ValueError when missing or invalid."""
    path = Path(model_dir) / "config.json"
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ValueError(f"cannot read {path}: {exc}") from None


def find_model_dir(name_or_path: str) -> Path | None:
    """The folder of an imported model (the model store) or an HF folder path, by its config.json;
    None when it is neither (yet). Imports nothing heavy."""
    from backends import paths

    path = Path(name_or_path).expanduser()
    if (path / "config.json").is_file():
        return path
    stored = paths.models_dir() / name_or_path  # the store's folder is the model's name
    return stored if (stored / "config.json").is_file() else None
