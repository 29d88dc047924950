"""Hand-built ``Batch`` objects (random token ids, known masks) for engine tests that need exact
control over padding, label masks and packing, independent of the data pipeline."""

from __future__ import annotations

import numpy as np

from backends.data.types import IGNORE_INDEX, Batch

PAD_ID = 2


def make_batch(rows: list[tuple[list[int], list[int]]]) -> Batch:
    """Right-padded batch from ``(input_ids, labels)`` rows (labels unshifted, -100 = no loss)."""
    width = max(len(ids) for ids, _ in rows)
    ids = np.full((len(rows), width), PAD_ID, np.int64)
    labels = np.full((len(rows), width), IGNORE_INDEX, np.int64)
    mask = np.zeros((len(rows), width), np.int64)
    for i, (r_ids, r_labels) in enumerate(rows):
        ids[i, : len(r_ids)] = r_ids
        labels[i, : len(r_labels)] = r_labels
        mask[i, : len(r_ids)] = 1
    pos = np.where(mask > 0, np.arange(width)[None, :], 0)
    return Batch(
        input_ids=ids,
        attention_mask=mask,
        labels=labels,
        position_ids=pos,
        num_tokens=int(mask.sum()),
        num_label_tokens=int((labels[:, 1:] != IGNORE_INDEX).sum()),
        rows=list(range(1, len(rows) + 1)),
    )


def make_packed(rows: list[tuple[list[int], list[int]]]) -> Batch:
    """One packed sequence holding ``rows`` back to back (segment ids 1..k, positions restart)."""
    ids = np.concatenate([r[0] for r in rows])[None, :].astype(np.int64)
    labels = np.concatenate([[IGNORE_INDEX, *r[1][1:]] for r in rows])[None, :].astype(np.int64)
    seg = np.concatenate([[k + 1] * len(r[0]) for k, r in enumerate(rows)])[None, :].astype(np.int64)
    pos = np.concatenate([np.arange(len(r[0])) for r in rows])[None, :].astype(np.int64)
    return Batch(
        input_ids=ids,
        attention_mask=np.ones_like(ids),
        labels=labels,
        position_ids=pos,
        num_tokens=ids.size,
        num_label_tokens=int((labels[:, 1:] != IGNORE_INDEX).sum()),
        rows=list(range(1, len(rows) + 1)),
        segment_ids=seg,
    )


def random_rows(
    seed: int, n: int, *, vocab: int = 49152, min_len: int = 6, max_len: int = 20, prompt: int = 3
):
    """``n`` random rows whose first ``prompt`` tokens carry no loss (completion-only style)."""
    rng = np.random.default_rng(seed)
    rows = []
    for _ in range(n):
        length = int(rng.integers(min_len, max_len + 1))
        ids = rng.integers(3, vocab, size=length).tolist()
        labels = [IGNORE_INDEX] * prompt + ids[prompt:]
        rows.append((ids, labels))
    return rows
