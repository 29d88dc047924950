"""One process's share of a micro-batch when a run trains on several processes (``--nproc``).

The batcher builds each epoch's micro-batches at the GLOBAL batch size (per-process
``training.batch_size`` x processes), with the same seeded order as one process would; each
process then takes its rows of every global micro-batch (``shard_batch``). So N processes with
batch b see exactly the examples of one process with batch N x b, step by step, and a resumed run
rebuilds the same global list (the data position is in global micro-batches).

The rows are split as ``numpy.array_split`` does (contiguous, sizes differing by at most one), and
the trailing columns that are padding in every kept row are cut off. A process whose share is
empty (the last, short batch of an epoch) gets one row with no label and no token
(``num_tokens == num_label_tokens == 0``), so it still runs the forward and backward pass the
gradient synchronisation waits for, and adds nothing to the loss.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from backends.data.types import IGNORE_INDEX, Batch

ROW_ARRAYS = ("input_ids", "attention_mask", "labels", "position_ids", "segment_ids")


def shard_rows(num_rows: int, rank: int, world_size: int) -> np.ndarray:
    """Indices of the rows of a ``num_rows``-row batch that process ``rank`` of ``world_size``
    trains on (``numpy.array_split`` of ``range(num_rows)``). Raises ValueError for a rank
    outside ``0 .. world_size - 1``."""
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} is not one of {world_size} processes")
    return np.array_split(np.arange(num_rows), world_size)[rank]


def shard_batch(batch: Batch, rank: int, world_size: int) -> Batch:
    """Process ``rank``'s rows of the global micro-batch ``batch`` (arrays [B, T] -> [b, t], t the
    longest kept row), with its token counts and source rows; see the module docstring for an empty
    share. ``world_size == 1`` returns ``batch`` itself."""
    if world_size == 1:
        return batch
    keep = shard_rows(batch.input_ids.shape[0], rank, world_size)
    if len(keep) == 0:
        return _no_label_row(batch)
    width = max(1, int(batch.attention_mask[keep].sum(axis=1).max()))
    arrays = {
        name: (getattr(batch, name)[keep, :width] if getattr(batch, name) is not None else None)
        for name in ROW_ARRAYS
    }
    labels = arrays["labels"]
    return dataclasses.replace(
        batch,
        **arrays,
        num_tokens=int(arrays["attention_mask"].sum()),
        num_label_tokens=int((labels[:, 1:] != IGNORE_INDEX).sum()),
        rows=_rows_of(batch, keep),
    )


def _rows_of(batch: Batch, keep: np.ndarray) -> list[int]:
    """The source rows in sequences ``keep``: one per sequence, or for packed batches the rows
    packed into each (listed sequence by sequence; ``segment_ids`` number them 1..k)."""
    if batch.segment_ids is None:
        return [batch.rows[i] for i in keep]
    counts = batch.segment_ids.max(axis=1)
    starts = np.concatenate([[0], np.cumsum(counts)])
    return [r for i in keep for r in batch.rows[starts[i] : starts[i + 1]]]


def _no_label_row(batch: Batch) -> Batch:
    """One row of ``batch``'s first token, carrying no label and counted as no token."""
    arrays = {
        name: (getattr(batch, name)[:1, :1].copy() if getattr(batch, name) is not None else None)
        for name in ROW_ARRAYS
    }
    arrays["labels"][:] = IGNORE_INDEX
    return dataclasses.replace(batch, **arrays, num_tokens=0, num_label_tokens=0, rows=[])
