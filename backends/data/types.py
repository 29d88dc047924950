"""Plain data types the data pipeline hands to the training backends (no torch, no mlx).

Conventions shared by both backends:
- ``labels`` are aligned with ``input_ids`` and NOT shifted: ``labels[t]`` is the token id at
  position t when position t carries loss, else ``IGNORE_INDEX``. A causal-LM backend predicts
  ``labels[t]`` from positions ``< t`` (it shifts by one, as transformers' loss does).
- Padding is on the right and is masked by position (``attention_mask == 0``), never by token id;
  padded positions always have ``labels == IGNORE_INDEX``.
- Token counts exclude padding.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

IGNORE_INDEX = -100


@dataclass
class Example:
    """One tokenised SFT row.

    ``input_ids``/``labels``: equal-length lists of ints (labels ``IGNORE_INDEX`` where no loss).
    ``row``: the source row number (1-based; the line number for JSONL) for messages.
    """

    input_ids: list[int]
    labels: list[int]
    row: int

    @property
    def num_label_tokens(self) -> int:
        """Positions that carry loss."""
        return sum(1 for x in self.labels if x != IGNORE_INDEX)


@dataclass
class PreferenceExample:
    """One tokenised preference pair for DPO.

    ``prompt_ids``: the rendered prompt up to and including the assistant header (tokenised once,
    shared by both answers). ``chosen_ids``/``rejected_ids``: the answer tokens only, each ending
    with the template's end-of-turn token. Log-probabilities are summed over the answer tokens.
    """

    prompt_ids: list[int]
    chosen_ids: list[int]
    rejected_ids: list[int]
    row: int


@dataclass
class KTOExample:
    """One tokenised unpaired-feedback row for KTO: the rendered prompt (up to and including the
    assistant header), the answer tokens (ending with the end-of-turn token) and whether the answer
    is desirable (``label: true``) or undesirable (``label: false``)."""

    prompt_ids: list[int]
    completion_ids: list[int]
    desirable: bool
    row: int


@dataclass
class PromptExample:
    """One tokenised GRPO prompt: the rendered prompt (up to and including the assistant header)
    and the reference answer's tokens (the row's last assistant turn; rewards compare with it)."""

    prompt_ids: list[int]
    answer_ids: list[int]
    row: int


@dataclass
class Batch:
    """A padded micro-batch, as numpy int64 arrays of shape [B, T].

    ``segment_ids``: for packed batches, 1..k numbering the rows packed into each sequence (0 on
    padding); attention must stay within a segment (block-diagonal causal mask) and
    ``position_ids`` restart at 0 for each segment. None for unpacked batches.
    ``num_tokens``: real (non-pad) tokens. ``num_label_tokens``: positions t >= 1 with
    ``labels[t] != IGNORE_INDEX`` (i.e. the targets that enter the loss after the shift; the first
    position of a segment is never a target).
    ``rows``: source row numbers of the examples in the batch.
    """

    input_ids: np.ndarray
    attention_mask: np.ndarray
    labels: np.ndarray
    position_ids: np.ndarray
    num_tokens: int
    num_label_tokens: int
    rows: list[int] = field(default_factory=list)
    segment_ids: np.ndarray | None = None


@dataclass
class Problem:
    """One invalid or dropped row: where and why (shown in ``data check`` and the GUI table).

    ``row``: 1-based; for JSONL it is the line number (``where == "line"``), for JSON arrays, CSV
    and Parquet the 1-based row (``where == "row"``). ``field``: the path of the offending field,
    e.g. ``messages[2].role``, ``output``, or ``(row)`` for the row as a whole.
    """

    file: str
    row: int
    field: str
    reason: str
    where: str = "row"

    def __str__(self) -> str:
        if self.where == "line":
            return f"{self.file}:{self.row}: {self.field}: {self.reason}"
        return f"{self.file}: row {self.row}: {self.field}: {self.reason}"

    def to_dict(self) -> dict:
        """JSON form used by ``data check --json``: {row, field, reason, where}."""
        return {"row": self.row, "field": self.field, "reason": self.reason, "where": self.where}


@dataclass
class DataReport:
    """What the pipeline did with a file: format, counts, problems, token-length statistics.

    ``problems``: every dropped row (invalid rows and rows whose trained tokens were all cut by
    ``max_seq_length``), in file order. ``lengths``: token length of every row that passed
    validation, before truncation (for DPO: prompt plus the longer answer). ``columns``: the column
    mapping applied, ``{role: source column}``; ``preview``: the first rows as read,
    ``{"columns": [...], "rows": [[cell, ...], ...]}`` (``backends.data.columns.preview``).
    ``packed_text``: the examples are whole plain-text documents, left uncut for
    ``pack.pack_examples``; ``packed_tokens``: then the kept documents' tokens (BOS/EOS included).
    """

    file: str
    format: str
    rows_read: int = 0
    rows_kept: int = 0
    problems: list[Problem] = field(default_factory=list)
    notices: list[str] = field(default_factory=list)
    lengths: list[int] = field(default_factory=list)
    literal_specials: list[tuple[int, list[str]]] = field(default_factory=list)  # (row, strings)
    columns: dict[str, str] = field(default_factory=dict)
    preview: dict[str, Any] = field(default_factory=lambda: {"columns": [], "rows": []})
    packed_text: bool = False
    packed_tokens: int = 0

    @property
    def rows_dropped(self) -> int:
        return self.rows_read - self.rows_kept


@dataclass
class PreparedData:
    """Tokenised training (and optional validation) data plus the chat template used.

    ``train``/``validation``: lists of ``Example`` (SFT) or ``PreferenceExample`` (DPO);
    ``validation`` is None when validation is off (a notice in ``report.notices`` says so).
    ``chat_template``: the exact Jinja template used, stored next to the adapter for chat.
    ``render_spec``: everything the prompt renderer used (``backends.data.render.RenderSpec``),
    recorded in the run folder so chat renders prompts the same way.
    """

    train: list
    validation: list | None
    report: DataReport
    chat_template: str | None
    eos_token_id: int | None = None
    pad_token_id: int | None = None
    bos_token_id: int | None = None
    validation_report: DataReport | None = None
    method: str = "sft"
    render_spec: Any = None


@dataclass
class PreferenceBatch(Batch):
    """A DPO micro-batch: ``2 * num_pairs`` rows of shape [2B, T]; rows ``[0, B)`` are prompt +
    chosen answer, rows ``[B, 2B)`` the same prompts + rejected answer (concatenated forward, as
    TRL does). ``labels`` are IGNORE_INDEX on the prompt and padding, so summing the per-token
    log-probabilities of the labelled targets gives log p(answer | prompt).

    ``reference_log_probs``: float64 [2B], the reference model's summed answer log-probabilities
    of each row (same order), when precomputed (``dpo.precompute_ref_log_probs``; set by the
    training loop); None: the engine computes them with the adapter disabled."""

    num_pairs: int = 0
    reference_log_probs: np.ndarray | None = None


@dataclass
class KTOBatch(PreferenceBatch):
    """A KTO micro-batch of ``2 * num_pairs`` rows: rows ``[0, B)`` are each example's prompt +
    its answer, rows ``[B, 2B)`` the same prompts with the answers rotated by one (row B + i holds
    prompt i with the answer of example i - 1), the mismatched pairs of KTO's KL estimate.
    ``desirable``: bool [B], the label of each example. ``num_tokens`` counts the first B rows
    only (the mismatched rows run without gradient)."""

    desirable: np.ndarray | None = None


@dataclass
class PromptBatch(Batch):
    """A GRPO micro-batch of prompts: ``prompts``/``answers`` are each prompt's token ids and its
    reference answer's. The arrays hold the prompts right-padded (no labels: the completions are
    sampled by the engine, which then sets ``num_tokens`` to the prompt and completion tokens it
    trained on, so the loop's token counts include them). ``num_label_tokens`` is the number of
    prompts (the loop weights a validation batch's figures by it)."""

    prompts: list[list[int]] = field(default_factory=list)
    answers: list[list[int]] = field(default_factory=list)
