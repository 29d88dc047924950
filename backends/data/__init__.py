"""The one data pipeline shared by both backends, the CLI and the GUI (no torch, no mlx).

Readers (JSONL, JSON, CSV, Parquet) -> format detection -> per-row validation -> tokenisation
with the model's chat template and completion-only labels -> split -> batches of numpy arrays.
"""

from backends.data.batching import make_batches, make_preference_batches
from backends.data.check import check_file
from backends.data.feedback import make_kto_batches
from backends.data.pipeline import analyze_file, prepare_data, read_rows, sample_data_path
from backends.data.prompts import make_prompt_batches
from backends.data.templates import CHATML_TEMPLATE, load_tokenizer, resolve_chat_template
from backends.data.types import (
    IGNORE_INDEX,
    Batch,
    DataReport,
    Example,
    KTOBatch,
    KTOExample,
    PreferenceBatch,
    PreferenceExample,
    PreparedData,
    Problem,
)

__all__ = [
    "CHATML_TEMPLATE",
    "IGNORE_INDEX",
    "Batch",
    "DataReport",
    "Example",
    "KTOBatch",
    "KTOExample",
    "PreferenceBatch",
    "PreferenceExample",
    "PreparedData",
    "Problem",
    "analyze_file",
    "check_file",
    "load_tokenizer",
    "batcher_for",
    "make_batches",
    "make_kto_batches",
    "make_preference_batches",
    "make_prompt_batches",
    "prepare_data",
    "read_rows",
    "resolve_chat_template",
    "sample_data_path",
]


def batcher_for(method: str):  # noqa: ANN201 (a batcher: make_batches' signature)
    """The batcher of a training method: ``make_preference_batches`` for preference pairs (dpo,
    orpo), ``make_kto_batches`` for unpaired feedback (kto), ``make_prompt_batches`` for prompts
    (grpo), ``make_batches`` otherwise."""
    if method in ("dpo", "orpo"):
        return make_preference_batches
    if method == "kto":
        return make_kto_batches
    if method == "grpo":
        return make_prompt_batches
    return make_batches
