"""Batching: determinism for resume, length grouping, right padding without labels, packing."""

from __future__ import annotations

import numpy as np
import pytest

from backends.data import IGNORE_INDEX, Example, PreferenceExample, make_batches, make_preference_batches

PAD = 0


def make_examples(n=120, seed=0, max_len=60):
    rng = np.random.default_rng(seed)
    out = []
    for row in range(1, n + 1):
        length = int(rng.integers(3, max_len))
        ids = [int(x) for x in rng.integers(5, 1000, size=length)]
        prompt = int(rng.integers(1, length))
        labels = [IGNORE_INDEX] * prompt + ids[prompt:]
        out.append(Example(ids, labels, row))
    return out


def targets(examples):
    """Label positions that enter the loss after the causal shift (never position 0)."""
    return sum(sum(1 for x in e.labels[1:] if x != IGNORE_INDEX) for e in examples)


def test_same_seed_and_epoch_give_the_same_batches_and_another_epoch_another_order():
    ex = make_examples()
    a = make_batches(ex, batch_size=8, pad_token_id=PAD, seed=5, epoch=2)
    b = make_batches(ex, batch_size=8, pad_token_id=PAD, seed=5, epoch=2)
    assert len(a) == len(b) == 15
    for x, y in zip(a, b, strict=True):
        assert (
            x.rows == y.rows
            and np.array_equal(x.input_ids, y.input_ids)
            and np.array_equal(x.labels, y.labels)
        )
    c = make_batches(ex, batch_size=8, pad_token_id=PAD, seed=5, epoch=3)
    assert [x.rows for x in a] != [x.rows for x in c]
    for batches in (a, c):
        assert sorted(r for x in batches for r in x.rows) == list(range(1, 121))


def test_padding_is_right_masked_by_position_and_never_labelled():
    ex = make_examples()
    by_row = {e.row: e for e in ex}
    batches = make_batches(ex, batch_size=8, pad_token_id=PAD, seed=1, epoch=0)
    for batch in batches:
        assert batch.input_ids.dtype == np.int64 and batch.input_ids.shape == batch.labels.shape
        assert batch.segment_ids is None
        for i, row in enumerate(batch.rows):
            e = by_row[row]
            n = len(e.input_ids)
            assert batch.input_ids[i, :n].tolist() == e.input_ids
            assert batch.labels[i, :n].tolist() == [IGNORE_INDEX] + e.labels[1:]
            assert batch.attention_mask[i].tolist() == [1] * n + [0] * (batch.input_ids.shape[1] - n)
            assert batch.position_ids[i, :n].tolist() == list(range(n))
            assert (batch.labels[i, n:] == IGNORE_INDEX).all() and (batch.input_ids[i, n:] == PAD).all()
        # T is the longest row in the batch: no wasted columns
        assert batch.input_ids.shape[1] == max(len(by_row[r].input_ids) for r in batch.rows)
        assert batch.num_tokens == sum(len(by_row[r].input_ids) for r in batch.rows)
        assert batch.num_label_tokens == targets([by_row[r] for r in batch.rows])
    assert sum(b.num_label_tokens for b in batches) == targets(ex)


def test_length_grouping_pads_far_less_than_random_batches_and_puts_the_longest_first():
    ex = make_examples(n=400, seed=2, max_len=200)
    lengths = np.array([len(e.input_ids) for e in ex])
    grouped = make_batches(ex, batch_size=8, pad_token_id=PAD, seed=0, epoch=0)
    padded = sum(b.input_ids.size - b.num_tokens for b in grouped)
    order = np.random.default_rng(0).permutation(len(ex))
    random_padded = sum(int(lengths[c].max() * len(c) - lengths[c].sum()) for c in np.array_split(order, 50))
    assert padded < random_padded / 4, (padded, random_padded)
    assert grouped[0].input_ids.shape[1] == lengths.max()


def test_packing_keeps_rows_whole_resets_positions_and_masks_segment_starts():
    ex = make_examples(n=100, seed=3, max_len=40)
    by_row = {e.row: e for e in ex}
    batches = make_batches(
        ex, batch_size=2, pad_token_id=PAD, seed=0, epoch=0, packing=True, max_seq_length=64
    )
    seen = []
    for batch in batches:
        assert batch.input_ids.shape[1] <= 64
        it = iter(batch.rows)
        for i in range(batch.input_ids.shape[0]):
            seg = batch.segment_ids[i]
            n = int(batch.attention_mask[i].sum())
            assert (seg[n:] == 0).all() and (batch.labels[i, n:] == IGNORE_INDEX).all()
            for k in range(1, int(seg.max()) + 1):
                cols = np.flatnonzero(seg == k)
                e = by_row[next(it)]
                seen.append(e.row)
                assert cols.tolist() == list(range(cols[0], cols[0] + len(e.input_ids)))
                assert batch.input_ids[i, cols].tolist() == e.input_ids
                assert batch.position_ids[i, cols].tolist() == list(range(len(e.input_ids)))
                assert batch.labels[i, cols].tolist() == [IGNORE_INDEX] + e.labels[1:]
        assert batch.num_tokens == sum(len(by_row[r].input_ids) for r in batch.rows)
        assert batch.num_label_tokens == targets([by_row[r] for r in batch.rows])
    assert sorted(seen) == list(range(1, 101))
    # packing fills sequences: far fewer sequences than rows
    assert sum(b.input_ids.shape[0] for b in batches) < 100 * 0.6


def test_packing_needs_a_length_that_fits_every_row():
    ex = make_examples(n=10, max_len=50)
    with pytest.raises(ValueError, match="max_seq_length"):
        make_batches(ex, batch_size=2, pad_token_id=PAD, seed=0, epoch=0, packing=True)
    with pytest.raises(ValueError, match="more than max_seq_length"):
        make_batches(ex, batch_size=2, pad_token_id=PAD, seed=0, epoch=0, packing=True, max_seq_length=10)
    with pytest.raises(ValueError):
        make_batches([], batch_size=2, pad_token_id=PAD, seed=0, epoch=0)


def test_preference_batches_put_chosen_then_rejected_and_label_answers_only():
    pairs = [
        PreferenceExample([1, 2, 3], [7, 8], [9], row=1),
        PreferenceExample([1, 4], [5, 6, 7, 8], [5], row=2),
    ]
    (batch,) = make_preference_batches(pairs, batch_size=2, pad_token_id=PAD, seed=0, epoch=0)
    assert batch.num_pairs == 2 and batch.input_ids.shape == (4, 6)
    first, second = batch.rows[:2]
    p = {1: pairs[0], 2: pairs[1]}
    for i, row in enumerate(batch.rows):
        e = p[row]
        answer = e.chosen_ids if i < 2 else e.rejected_ids
        n = len(e.prompt_ids) + len(answer)
        assert batch.input_ids[i, :n].tolist() == e.prompt_ids + answer
        assert batch.labels[i].tolist() == [IGNORE_INDEX] * len(e.prompt_ids) + answer + [IGNORE_INDEX] * (
            6 - n
        )
    assert batch.rows[2:] == [first, second]
    assert batch.num_label_tokens == 2 + 4 + 1 + 1
