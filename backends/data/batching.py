"""Micro-batches of numpy arrays for training: length-grouped, or packed.

Order is a pure function of (examples, seed, epoch), so a resumed run rebuilds the same list and
skips to batch k. Length grouping follows transformers' ``LengthGroupedSampler``: shuffle, cut
the order into mega-chunks of ``batch_size * 50`` rows (fewer for small data), sort each chunk by
length (longest first) and cut it into batches; batches are then shuffled, and the one holding
the longest row goes first so an out-of-memory shows at step 1. Padding is on the right and
masked by position; padded positions never carry a label.

Packing puts several rows into one sequence of at most ``max_seq_length`` tokens (first-fit
decreasing within each mega-chunk); ``segment_ids`` number the rows in a sequence (0 on padding)
and ``position_ids`` restart at 0 for each, so a backend with a block-diagonal causal mask keeps
attention within a row. The first token of every segment carries no label (it would be predicted
from the previous row).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from backends.data.types import IGNORE_INDEX, Batch, Example, PreferenceBatch, PreferenceExample

MEGA_CHUNK_BATCHES = 50  # transformers' LengthGroupedSampler default (megabatch_mult)


def _rng(seed: int, epoch: int) -> np.random.Generator:
    return np.random.default_rng([seed, epoch])


def _mega_chunks(order: np.ndarray, batch_size: int) -> list[np.ndarray]:
    mult = max(1, min(len(order) // (batch_size * 4), MEGA_CHUNK_BATCHES))
    size = batch_size * mult
    return [order[i : i + size] for i in range(0, len(order), size)]


def check_batch_request(
    examples: Sequence[Any], batch_size: int, packing: bool = False, unpacked: tuple[str, str] | None = None
) -> None:
    """The checks every batcher makes first. ``unpacked``: (what, method) for a batcher whose rows
    are never packed, e.g. ("preference pairs", "DPO"). Raises ValueError for ``packing`` there,
    an empty list, or a batch size below 1."""
    if packing and unpacked is not None:
        raise ValueError(f"{unpacked[0]} are not packed (set data.packing: false for {unpacked[1]})")
    if not examples:
        raise ValueError("no examples to batch")
    if batch_size < 1:
        raise ValueError("batch_size must be at least 1")


def length_groups(
    lengths: np.ndarray, order: np.ndarray, rng: np.random.Generator, batch_size: int
) -> list[np.ndarray]:
    """Indices of rows grouped into micro-batches of similar length, as transformers'
    LengthGroupedSampler: ``order`` cut into mega-chunks, each sorted longest first and split into
    batches of ``batch_size``; the batches then shuffled by ``rng``."""
    groups: list[np.ndarray] = []
    for chunk in _mega_chunks(order, batch_size):
        chunk = chunk[np.argsort(-lengths[chunk], kind="stable")]
        groups += [chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size)]
    return [groups[i] for i in rng.permutation(len(groups))]


def _pad_rows(
    rows: Sequence[tuple[list[int], list[int], list[int], list[int] | None]],
    pad_token_id: int,
    source_rows: list[int],
) -> Batch:
    """Stack (ids, labels, position_ids, segment_ids|None) rows into a right-padded Batch."""
    b = len(rows)
    t = max(len(r[0]) for r in rows)
    input_ids = np.full((b, t), pad_token_id, dtype=np.int64)
    labels = np.full((b, t), IGNORE_INDEX, dtype=np.int64)
    attention = np.zeros((b, t), dtype=np.int64)
    positions = np.zeros((b, t), dtype=np.int64)
    packed = rows[0][3] is not None
    segments = np.zeros((b, t), dtype=np.int64) if packed else None
    for i, (ids, lab, pos, seg) in enumerate(rows):
        n = len(ids)
        input_ids[i, :n] = ids
        labels[i, :n] = lab
        attention[i, :n] = 1
        positions[i, :n] = pos
        if segments is not None:
            segments[i, :n] = seg
    labels[:, 0] = IGNORE_INDEX
    return Batch(
        input_ids=input_ids,
        attention_mask=attention,
        labels=labels,
        position_ids=positions,
        num_tokens=int(attention.sum()),
        num_label_tokens=int((labels[:, 1:] != IGNORE_INDEX).sum()),
        rows=source_rows,
        segment_ids=segments,
    )


def make_batches(
    examples: list[Example],
    *,
    batch_size: int,
    pad_token_id: int,
    seed: int,
    epoch: int,
    packing: bool = False,
    max_seq_length: int | None = None,
) -> list[Batch]:
    """One epoch of micro-batches, deterministic for (examples, seed, epoch).

    Unpacked: each batch holds up to ``batch_size`` rows of similar length, padded to the longest
    (arrays [B, T], T = the longest row in the batch). Packed (``packing``, needs
    ``max_seq_length``): each batch holds up to ``batch_size`` sequences of at most
    ``max_seq_length`` tokens, each made of whole rows. ``num_tokens`` excludes padding;
    ``num_label_tokens`` counts targets after the causal shift. Raises ValueError for an empty
    list, a batch size below 1, packing without ``max_seq_length``, or a row longer than it.
    """
    check_batch_request(examples, batch_size)
    rng = _rng(seed, epoch)
    lengths = np.array([len(e.input_ids) for e in examples])
    order = rng.permutation(len(examples))
    if packing:
        return _packed_batches(examples, lengths, order, rng, batch_size, pad_token_id, max_seq_length)
    groups = length_groups(lengths, order, rng, batch_size)
    longest = max(range(len(groups)), key=lambda g: lengths[groups[g]].max())
    groups.insert(0, groups.pop(longest))
    batches = []
    for group in groups:
        rows = [(examples[i].input_ids, examples[i].labels, list(range(lengths[i])), None) for i in group]
        batches.append(_pad_rows(rows, pad_token_id, [examples[i].row for i in group]))
    return batches


def _packed_batches(
    examples: list[Example],
    lengths: np.ndarray,
    order: np.ndarray,
    rng: np.random.Generator,
    batch_size: int,
    pad_token_id: int,
    max_seq_length: int | None,
) -> list[Batch]:
    if max_seq_length is None:
        raise ValueError("packing needs max_seq_length")
    if lengths.max() > max_seq_length:
        raise ValueError(f"a row has {lengths.max()} tokens, more than max_seq_length {max_seq_length}")
    bins: list[list[int]] = []
    for chunk in _mega_chunks(order, batch_size):
        chunk_bins: list[list[int]] = []
        room: list[int] = []
        for i in chunk[np.argsort(-lengths[chunk], kind="stable")]:
            target = next((b for b, r in enumerate(room) if r >= lengths[i]), None)
            if target is None:
                chunk_bins.append([int(i)])
                room.append(max_seq_length - int(lengths[i]))
            else:
                chunk_bins[target].append(int(i))
                room[target] -= int(lengths[i])
        bins += chunk_bins
    bins = [bins[i] for i in rng.permutation(len(bins))]
    batches = []
    for start in range(0, len(bins), batch_size):
        rows = []
        sources: list[int] = []
        for members in bins[start : start + batch_size]:
            ids: list[int] = []
            labels: list[int] = []
            pos: list[int] = []
            seg: list[int] = []
            for k, i in enumerate(members, start=1):
                e = examples[i]
                ids += e.input_ids
                labels += [IGNORE_INDEX, *e.labels[1:]]
                pos += range(len(e.input_ids))
                seg += [k] * len(e.input_ids)
                sources.append(e.row)
            rows.append((ids, labels, pos, seg))
        batches.append(_pad_rows(rows, pad_token_id, sources))
    return batches


def make_preference_batches(
    examples: list[PreferenceExample],
    *,
    batch_size: int,
    pad_token_id: int,
    seed: int,
    epoch: int,
    packing: bool = False,
    max_seq_length: int | None = None,
) -> list[PreferenceBatch]:
    """One epoch of DPO micro-batches, deterministic for (examples, seed, epoch), length-grouped
    like ``make_batches``. Each holds up to ``batch_size`` pairs as ``2 * B`` rows (chosen rows
    first, then the rejected rows in the same order); labels are the answer tokens only.
    ``packing``/``max_seq_length``: the keywords of ``make_batches`` (so the training loop calls
    either the same way); pairs are never packed and are already cut to ``max_seq_length``.
    Raises ValueError for an empty list, a batch size below 1, or ``packing``."""
    check_batch_request(examples, batch_size, packing, unpacked=("preference pairs", "DPO"))
    rng = _rng(seed, epoch)
    lengths = np.array([len(e.prompt_ids) + max(len(e.chosen_ids), len(e.rejected_ids)) for e in examples])
    order = rng.permutation(len(examples))
    groups = length_groups(lengths, order, rng, batch_size)
    out = []
    for group in groups:
        rows = []
        for key in ("chosen_ids", "rejected_ids"):
            for i in group:
                e = examples[i]
                answer = getattr(e, key)
                ids = e.prompt_ids + answer
                rows.append((ids, [IGNORE_INDEX] * len(e.prompt_ids) + answer, list(range(len(ids))), None))
        b = _pad_rows(rows, pad_token_id, [examples[i].row for i in group] * 2)
        out.append(PreferenceBatch(**vars(b), num_pairs=len(group)))
    return out
