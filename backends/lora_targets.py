"""Which linear layers get LoRA: the config's ``lora.target_modules`` resolved against a model's
linear-layer paths, without any ML framework (both backends list their layers and call this).

Rules (peft's, so a config means the same thing on every backend):
- ``"all-linear"``: every linear layer except the output head (``lm_head``), as peft's
  ``all-linear``;
- ``"attention"``: the first group of ``ATTENTION_PRESETS`` whose names all exist in the model;
- a list of names: a layer matches a name when its path equals it or ends with ``"." + name``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

from backends.errors import UserInputError

# The 'attention' preset: the usual names of the query/key/value/output projections, in the
# order tried. The first group that exists in the model is used.
ATTENTION_PRESETS: tuple[tuple[str, ...], ...] = (
    ("q_proj", "k_proj", "v_proj", "o_proj"),  # Llama, Mistral, Qwen, Gemma, SmolLM
    ("qkv_proj", "o_proj"),  # Phi-3
    ("query_key_value", "dense"),  # Falcon, GPT-NeoX
    ("c_attn", "c_proj"),  # GPT-2
    ("Wqkv", "out_proj"),  # Phi-1/2, MPT
)
OUTPUT_HEAD = "lm_head"


def linear_name_counts(paths: Sequence[str]) -> dict[str, int]:
    """Leaf names of linear-layer ``paths`` with their counts (``{"q_proj": 30, ...}``), without the
    output head."""
    return dict(Counter(p.rsplit(".", 1)[-1] for p in paths if p.rsplit(".", 1)[-1] != OUTPUT_HEAD))


def _listing(paths: Sequence[str]) -> str:
    return ", ".join(f"{n} (x{c})" for n, c in sorted(linear_name_counts(paths).items())) or "none"


def _matches(path: str, name: str) -> bool:
    return path == name or path.endswith("." + name)


def select_targets(paths: Sequence[str], targets: str | Sequence[str]) -> list[str]:
    """The linear-layer paths (in model order) that ``targets`` selects (rules in the module doc).

    ``paths``: full module paths of the model's linear layers (e.g.
    ``model.layers.0.self_attn.q_proj``). Raises UserInputError (field ``lora.target_modules``)
    when the model has no such layers or a listed name matches none, listing the model's linear
    layer names.
    """
    if targets == "all-linear":
        chosen = [p for p in paths if p.rsplit(".", 1)[-1] != OUTPUT_HEAD]
        if not chosen:
            raise UserInputError(
                "this model has no linear layers LoRA can adapt", field="lora.target_modules"
            )
        return chosen
    if targets == "attention":
        names = linear_name_counts(paths)
        for group in ATTENTION_PRESETS:
            if all(n in names for n in group):
                return [p for p in paths if any(_matches(p, n) for n in group)]
        raise UserInputError(
            "the 'attention' preset found no attention projections in this model; its linear layers are: "
            + _listing(paths),
            field="lora.target_modules",
            hint="list the module names to adapt, or use all-linear",
        )
    for name in targets:
        if not any(_matches(p, name) for p in paths):
            raise UserInputError(
                f"target module {name!r} matches no linear layer of this model; its linear layers are: "
                + _listing(paths),
                field="lora.target_modules",
            )
    return [p for p in paths if any(_matches(p, n) for n in targets)]


def peft_target_modules(paths: Sequence[str], targets: str | Sequence[str]) -> str | list[str]:
    """What peft's ``LoraConfig(target_modules=...)`` takes for ``targets``, checked against the
    model's linear-layer ``paths`` by ``select_targets`` (same errors): ``"all-linear"`` stays peft's
    own shorthand (the same rule); ``"attention"`` becomes the leaf names of the preset group found;
    a list of names is passed on as given (peft matches a name as this module does)."""
    chosen = select_targets(paths, targets)
    if targets == "all-linear":
        return "all-linear"
    if targets == "attention":
        return sorted({p.rsplit(".", 1)[-1] for p in chosen})
    return list(targets)
